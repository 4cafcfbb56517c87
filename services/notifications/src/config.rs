//! The notifications service's own settings, on top of kit's shared
//! [`trellis_kit::config::Config`] (whose `PUBLIC_BASE_URL` starts every link in mail).

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

/// Settings of the notifications service: where mail goes and how it is retried.
#[derive(Clone, Args)]
pub struct NotificationsConfig {
    /// SMTP server that sends mail: `smtp://[user:password@]host[:port]` (plain SMTP, port 25 by
    /// default; use a local relay for TLS). Without it, every message is written as an `.eml` file
    /// under `MAIL_DIR` instead (development).
    #[arg(long = "smtp-url", env = "SMTP_URL", hide_env_values = true)]
    pub smtp_url: Option<String>,

    /// Directory of the development mail sink (used when `SMTP_URL` is not set): one `.eml` file
    /// per message, named `<UTC time>-<email log id>.eml` so that they sort by time.
    #[arg(long = "mail-dir", env = "MAIL_DIR", default_value = ".trellis/mail")]
    pub mail_dir: PathBuf,

    /// The From address of every email (`Name <address>` or a bare address). The display name is
    /// replaced by the organization's name on mail that belongs to one.
    #[arg(long = "email-from", env = "EMAIL_FROM", default_value = "Trellis <no-reply@trellis.localhost>")]
    pub email_from: String,

    /// Domain of the `Message-ID` of every email (`<email log id>@<domain>`); defaults to the
    /// domain of `EMAIL_FROM`.
    #[arg(long = "email-domain", env = "EMAIL_DOMAIN")]
    pub email_domain: Option<String>,

    /// Delays before each retry of an email whose SMTP server answered 4xx or could not be
    /// reached (comma-separated; tests shorten it). After the last one the email is `failed`.
    #[arg(long = "email-retry-schedule", env = "EMAIL_RETRY_SCHEDULE", default_value = "1m,5m,30m", value_parser = parse_schedule)]
    pub email_retry_schedule: Schedule,

    /// How often the sender looks for queued email that is due.
    #[arg(long = "email-poll-interval", env = "EMAIL_POLL_INTERVAL", default_value = "500ms", value_parser = trellis_kit::config::parse_duration)]
    pub email_poll_interval: Duration,

    /// Emails sent at once by one replica (SMTP connections).
    #[arg(long = "email-concurrency", env = "EMAIL_CONCURRENCY", default_value_t = 8)]
    pub email_concurrency: usize,

    /// Time allowed for one SMTP conversation (connect, send, quit).
    #[arg(long = "smtp-timeout", env = "SMTP_TIMEOUT", default_value = "30s", value_parser = trellis_kit::config::parse_duration)]
    pub smtp_timeout: Duration,
}

/// The retry delays of transient mail failures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule(pub Vec<Duration>);

/// Parses `1m,5m,30m`.
pub fn parse_schedule(s: &str) -> Result<Schedule, String> {
    let delays = s
        .split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .map(trellis_kit::config::parse_duration)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Schedule(delays))
}

impl std::fmt::Debug for NotificationsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotificationsConfig")
            .field("smtp_url", &self.smtp_url.as_ref().map(|url| redact_url(url)))
            .field("mail_dir", &self.mail_dir)
            .field("email_from", &self.email_from)
            .field("email_domain", &self.email_domain)
            .field("email_retry_schedule", &self.email_retry_schedule)
            .field("email_poll_interval", &self.email_poll_interval)
            .field("email_concurrency", &self.email_concurrency)
            .field("smtp_timeout", &self.smtp_timeout)
            .finish()
    }
}

/// A URL with its password replaced, for logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

impl NotificationsConfig {
    /// The settings from the environment alone (defaults for the rest), for tests and callers
    /// that do not parse a command line.
    pub fn from_env() -> anyhow::Result<Self> {
        #[derive(clap::Parser)]
        struct Wrapper {
            #[command(flatten)]
            config: NotificationsConfig,
        }
        let config = <Wrapper as clap::Parser>::try_parse_from(["notifications"])
            .map_err(|e| anyhow::anyhow!("notifications settings: {e}"))?
            .config;
        Ok(config)
    }

    /// The `Message-ID` domain: `EMAIL_DOMAIN`, else the domain of `EMAIL_FROM`.
    pub fn message_id_domain(&self) -> String {
        if let Some(domain) = self.email_domain.as_deref().filter(|d| !d.trim().is_empty()) {
            return domain.trim().to_string();
        }
        let address = self.email_from.rsplit('<').next().unwrap_or_default().trim_end_matches('>');
        address.rsplit_once('@').map_or_else(|| "trellis.localhost".to_string(), |(_, d)| d.trim().to_string())
    }

    /// Checks what clap cannot.
    pub fn validate(&self) -> anyhow::Result<()> {
        self.email_from
            .parse::<lettre::message::Mailbox>()
            .map_err(|e| anyhow::anyhow!("EMAIL_FROM is not an address ({e}): {:?}", self.email_from))?;
        anyhow::ensure!(self.email_concurrency >= 1, "EMAIL_CONCURRENCY must be at least 1");
        anyhow::ensure!(!self.email_poll_interval.is_zero(), "EMAIL_POLL_INTERVAL must be positive");
        if let Some(url) = &self.smtp_url {
            crate::mail::smtp::SmtpTarget::parse(url)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_write_mail_to_files() {
        let config = NotificationsConfig { smtp_url: None, ..NotificationsConfig::from_env().expect("defaults") };
        config.validate().expect("valid");
        assert_eq!(config.email_retry_schedule, parse_schedule("1m,5m,30m").expect("schedule"));
        assert_eq!(config.message_id_domain(), "trellis.localhost");
    }

    #[test]
    fn schedules_and_domains_parse() {
        assert_eq!(
            parse_schedule("100ms, 2s").expect("schedule").0,
            [Duration::from_millis(100), Duration::from_secs(2)]
        );
        assert!(parse_schedule("soon").is_err());
        let config = NotificationsConfig {
            email_from: "mail@acme.example".into(),
            email_domain: None,
            ..NotificationsConfig::from_env().expect("defaults")
        };
        assert_eq!(config.message_id_domain(), "acme.example");
    }

    #[test]
    fn passwords_in_smtp_urls_are_redacted() {
        assert_eq!(redact_url("smtp://ada:s3cret@mail.example:587"), "smtp://ada:***@mail.example:587");
        assert_eq!(redact_url("smtp://127.0.0.1:1025"), "smtp://127.0.0.1:1025");
        let config = NotificationsConfig {
            smtp_url: Some("smtp://ada:s3cret@mail.example".into()),
            ..NotificationsConfig::from_env().expect("defaults")
        };
        assert!(!format!("{config:?}").contains("s3cret"));
    }
}
