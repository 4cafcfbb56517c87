//! Identity's own settings, on top of kit's shared [`trellis_kit::config::Config`] (which already
//! holds the token issuer and audience, `JWT_ISSUER` and `JWT_AUDIENCE`).

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use clap::Args;

/// The development encryption key: base64 of `trellis-dev-identity-encryption!` (32 bytes).
/// Fine on a laptop; a cell must set its own `IDENTITY_ENCRYPTION_KEY`.
pub const DEV_ENCRYPTION_KEY: &str = "dHJlbGxpcy1kZXYtaWRlbnRpdHktZW5jcnlwdGlvbiE=";

/// Settings of the identity service.
#[derive(Clone, Args)]
pub struct IdentityConfig {
    /// AES-256-GCM key (32 bytes, base64) that encrypts identity's secrets at rest (private
    /// signing keys). Each encrypted row records which key sealed it.
    #[arg(
        long = "identity-encryption-key",
        env = "IDENTITY_ENCRYPTION_KEY",
        default_value = DEV_ENCRYPTION_KEY,
        hide_default_value = true,
        hide_env_values = true
    )]
    pub encryption_key: String,

    /// Public URL of the cell (kit's `PUBLIC_BASE_URL`), set when the module starts; links in
    /// emails (invitations) start with it.
    #[arg(skip)]
    pub public_base_url: String,

    /// Lifetime of access tokens (`15m`, `900s`, ...).
    #[arg(long = "access-token-ttl", env = "ACCESS_TOKEN_TTL", default_value = "15m", value_parser = parse_ttl)]
    pub access_token_ttl: Duration,

    /// Lifetime of each refresh token (`30d`, `12h`, ...); every refresh issues a new one.
    #[arg(long = "refresh-token-ttl", env = "REFRESH_TOKEN_TTL", default_value = "30d", value_parser = parse_ttl)]
    pub refresh_token_ttl: Duration,

    /// Consecutive failed sign-ins (or MFA codes) that lock an account.
    #[arg(long = "identity-lockout-threshold", env = "IDENTITY_LOCKOUT_THRESHOLD", default_value_t = 5)]
    pub lockout_threshold: u32,

    /// How long a locked account refuses sign-in (`15m`; tests shorten it).
    #[arg(long = "identity-lockout-duration", env = "IDENTITY_LOCKOUT_DURATION", default_value = "15m", value_parser = parse_ttl)]
    pub lockout_duration: Duration,

    /// Sign-in attempts allowed per email and, separately, per client IP in each window.
    #[arg(long = "identity-login-rate-limit", env = "IDENTITY_LOGIN_RATE_LIMIT", default_value_t = 10)]
    pub login_rate_limit: u32,

    /// The window of the sign-in rate limits.
    #[arg(long = "identity-login-rate-window", env = "IDENTITY_LOGIN_RATE_WINDOW", default_value = "15m", value_parser = parse_ttl)]
    pub login_rate_window: Duration,

    /// How long a signing key is active before it is rotated (`30d`).
    #[arg(long = "identity-signing-key-rotation", env = "IDENTITY_SIGNING_KEY_ROTATION", default_value = "30d", value_parser = parse_ttl)]
    pub signing_key_rotation: Duration,

    /// How long the next signing key is published in the JWKS before it signs (`10m`); longer
    /// than verifiers cache the JWKS (5 min).
    #[arg(long = "identity-signing-key-publish-lead", env = "IDENTITY_SIGNING_KEY_PUBLISH_LEAD", default_value = "10m", value_parser = parse_ttl)]
    pub signing_key_publish_lead: Duration,

    /// How long a replaced signing key stays published as `retiring` (`24h`); at least the
    /// access-token lifetime, so no token outlives its key.
    #[arg(long = "identity-signing-key-retiring", env = "IDENTITY_SIGNING_KEY_RETIRING", default_value = "24h", value_parser = parse_ttl)]
    pub signing_key_retiring: Duration,

    /// How often each replica runs the rotation schedule (`1m`; tests shorten it).
    #[arg(long = "identity-signing-key-check-interval", env = "IDENTITY_SIGNING_KEY_CHECK_INTERVAL", default_value = "1m", value_parser = parse_ttl)]
    pub signing_key_check_interval: Duration,

    /// How often each replica looks for deleted organizations past their window to purge, and
    /// for deactivated accounts past theirs to erase (`1h`; tests shorten it).
    #[arg(long = "identity-org-purge-interval", env = "IDENTITY_ORG_PURGE_INTERVAL", default_value = "1h", value_parser = parse_ttl)]
    pub org_purge_interval: Duration,

    /// The modules enabled in the cell, as GetMyFeatures reports them (the gateway reads the same
    /// variable); empty means all of them.
    #[arg(long = "identity-cell-modules", env = "TRELLIS_MODULES", value_delimiter = ',')]
    pub cell_modules: Vec<String>,
}

impl std::fmt::Debug for IdentityConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityConfig")
            .field("encryption_key", &"<redacted>")
            .field("public_base_url", &self.public_base_url)
            .field("access_token_ttl", &self.access_token_ttl)
            .field("refresh_token_ttl", &self.refresh_token_ttl)
            .field("lockout_threshold", &self.lockout_threshold)
            .field("lockout_duration", &self.lockout_duration)
            .field("login_rate_limit", &self.login_rate_limit)
            .field("login_rate_window", &self.login_rate_window)
            .field("signing_key_rotation", &self.signing_key_rotation)
            .field("signing_key_publish_lead", &self.signing_key_publish_lead)
            .field("signing_key_retiring", &self.signing_key_retiring)
            .field("signing_key_check_interval", &self.signing_key_check_interval)
            .field("org_purge_interval", &self.org_purge_interval)
            .field("cell_modules", &self.cell_modules)
            .finish()
    }
}

impl IdentityConfig {
    /// The modules enabled in the cell: [`IdentityConfig::cell_modules`], or every module.
    pub fn cell_modules(&self) -> Vec<String> {
        let listed: Vec<String> = self
            .cell_modules
            .iter()
            .map(|m| m.trim().to_ascii_lowercase())
            .filter(|m| !m.is_empty() && m != "all")
            .collect();
        if listed.is_empty() {
            return trellis_kit::module::SERVICES.iter().map(|s| s.to_string()).collect();
        }
        // identity, permissions and notifications are always on.
        let mut modules: Vec<String> = trellis_kit::module::SERVICES
            .iter()
            .filter(|s| ["identity", "permissions", "notifications"].contains(s) || listed.iter().any(|m| m == *s))
            .map(|s| s.to_string())
            .collect();
        modules.dedup();
        modules
    }

    /// The settings from the environment alone (defaults for the rest), for tests and callers
    /// that do not parse a command line. [`IdentityConfig::validate`] runs when the module starts.
    pub fn from_env() -> anyhow::Result<Self> {
        #[derive(clap::Parser)]
        struct Wrapper {
            #[command(flatten)]
            config: IdentityConfig,
        }
        let config = <Wrapper as clap::Parser>::try_parse_from(["identity"])
            .map_err(|e| anyhow::anyhow!("identity settings: {e}"))?
            .config;
        Ok(config)
    }

    /// Checks what clap cannot: the key's length, the URL's shape, TTL bounds.
    pub fn validate(&self) -> anyhow::Result<()> {
        let key = STANDARD
            .decode(self.encryption_key.trim())
            .map_err(|e| anyhow::anyhow!("IDENTITY_ENCRYPTION_KEY is not base64: {e}"))?;
        anyhow::ensure!(key.len() == 32, "IDENTITY_ENCRYPTION_KEY must be 32 bytes, got {}", key.len());
        anyhow::ensure!(
            self.public_base_url.starts_with("http://") || self.public_base_url.starts_with("https://"),
            "PUBLIC_BASE_URL must be an http(s) URL, got {:?}",
            self.public_base_url
        );
        anyhow::ensure!(
            self.access_token_ttl >= Duration::from_secs(1) && self.access_token_ttl <= Duration::from_secs(86_400),
            "ACCESS_TOKEN_TTL must be between 1s and 24h"
        );
        anyhow::ensure!(self.refresh_token_ttl >= Duration::from_secs(1), "REFRESH_TOKEN_TTL must be at least 1s");
        anyhow::ensure!(self.lockout_threshold >= 1, "IDENTITY_LOCKOUT_THRESHOLD must be at least 1");
        anyhow::ensure!(self.login_rate_limit >= 1, "IDENTITY_LOGIN_RATE_LIMIT must be at least 1");
        anyhow::ensure!(
            self.signing_key_retiring >= self.access_token_ttl,
            "IDENTITY_SIGNING_KEY_RETIRING must be at least ACCESS_TOKEN_TTL, or tokens would outlive their key"
        );
        anyhow::ensure!(
            self.signing_key_rotation > self.signing_key_publish_lead,
            "IDENTITY_SIGNING_KEY_ROTATION must be longer than IDENTITY_SIGNING_KEY_PUBLISH_LEAD"
        );
        Ok(())
    }

    /// The signing-key rotation schedule these settings describe.
    pub fn rotation_policy(&self) -> crate::keys::RotationPolicy {
        crate::keys::RotationPolicy {
            period: self.signing_key_rotation,
            publish_lead: self.signing_key_publish_lead,
            retiring: self.signing_key_retiring,
        }
    }

    /// Whether the development key is in use.
    pub fn uses_dev_key(&self) -> bool {
        self.encryption_key.trim() == DEV_ENCRYPTION_KEY
    }
}

/// Parses a duration: kit's units (`ms`, `s`, `m`, `h`) plus whole days (`30d`).
pub fn parse_ttl(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let duration = match s.strip_suffix('d') {
        Some(days) => {
            let days: u64 = days.trim().parse().map_err(|_| format!("invalid duration {s:?}"))?;
            Duration::from_secs(days.checked_mul(86_400).ok_or_else(|| format!("duration {s:?} is too long"))?)
        }
        None => trellis_kit::config::parse_duration(s)?,
    };
    if duration.is_zero() {
        return Err(format!("duration {s:?} must be positive"));
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_accept_days_and_kit_units() {
        assert_eq!(parse_ttl("30d"), Ok(Duration::from_secs(30 * 86_400)));
        assert_eq!(parse_ttl("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_ttl("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_ttl("0s").is_err());
        assert!(parse_ttl("xd").is_err());
    }

    #[test]
    fn defaults_are_valid_and_use_the_dev_key() {
        let config = IdentityConfig {
            encryption_key: DEV_ENCRYPTION_KEY.into(),
            public_base_url: "http://localhost:8080".into(),
            access_token_ttl: Duration::from_secs(900),
            refresh_token_ttl: Duration::from_secs(30 * 86_400),
            ..IdentityConfig::from_env().expect("defaults")
        };
        config.validate().expect("defaults are valid");
        assert!(config.uses_dev_key());
        assert!(!format!("{config:?}").contains(DEV_ENCRYPTION_KEY));
    }

    #[test]
    fn a_short_key_is_rejected() {
        let config = IdentityConfig {
            encryption_key: STANDARD.encode([0u8; 16]),
            public_base_url: "http://localhost:8080".into(),
            access_token_ttl: Duration::from_secs(900),
            refresh_token_ttl: Duration::from_secs(60),
            ..IdentityConfig::from_env().expect("defaults")
        };
        assert!(config.validate().is_err());
    }
}
