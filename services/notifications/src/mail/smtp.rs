//! The SMTP [`Mailer`]: lettre's async client on tokio, one connection per message.
//!
//! `SMTP_URL` is `smtp://[user:password@]host[:port]`. The conversation is plain SMTP (with AUTH
//! when credentials are given); TLS is left to a local relay (docs/adr/0060). Replies map onto
//! the retry rules: 4xx, connection failures and timeouts are transient, 5xx permanent.

use std::time::Duration;

use futures::future::BoxFuture;
use lettre::address::{Address, Envelope as SmtpEnvelope};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use percent_encoding::percent_decode_str;
use uuid::Uuid;

use super::{Accepted, Envelope, Mailer, SendError};

/// Where `SMTP_URL` points.
#[derive(Clone, PartialEq, Eq)]
pub struct SmtpTarget {
    /// Host name or address.
    pub host: String,
    /// Port (25 by default).
    pub port: u16,
    /// User and password for AUTH.
    pub credentials: Option<(String, String)>,
}

impl std::fmt::Debug for SmtpTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpTarget")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.credentials.as_ref().map(|(user, _)| user))
            .finish()
    }
}

impl SmtpTarget {
    /// Parses `smtp://[user:password@]host[:port]`.
    pub fn parse(url: &str) -> anyhow::Result<SmtpTarget> {
        let rest = match url.split_once("://") {
            Some(("smtp", rest)) => rest,
            Some(("smtps", _)) => anyhow::bail!(
                "SMTP_URL: smtps:// is not supported; point SMTP_URL at a local relay (smtp://) that handles TLS"
            ),
            _ => anyhow::bail!("SMTP_URL must look like smtp://[user:password@]host[:port]"),
        };
        let rest = rest.split(['/', '?']).next().unwrap_or_default();
        let (userinfo, hostport) = match rest.rsplit_once('@') {
            Some((userinfo, hostport)) => (Some(userinfo), hostport),
            None => (None, rest),
        };
        let credentials = userinfo.map(|info| {
            let (user, password) = info.split_once(':').unwrap_or((info, ""));
            let decode = |s: &str| percent_decode_str(s).decode_utf8_lossy().into_owned();
            (decode(user), decode(password))
        });
        let (host, port) = match hostport.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(']') || host.starts_with('[') => {
                let port = port.parse::<u16>().map_err(|_| anyhow::anyhow!("SMTP_URL: invalid port {port:?}"))?;
                (host, port)
            }
            _ => (hostport, 25),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        anyhow::ensure!(!host.is_empty(), "SMTP_URL names no host");
        Ok(SmtpTarget { host: host.to_string(), port, credentials })
    }
}

/// Sends over SMTP.
#[derive(Clone)]
pub struct SmtpMailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    target: SmtpTarget,
}

impl std::fmt::Debug for SmtpMailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpMailer").field("target", &self.target).finish_non_exhaustive()
    }
}

impl SmtpMailer {
    /// A mailer for `SMTP_URL`, giving each conversation `timeout`.
    pub fn new(url: &str, timeout: Duration) -> anyhow::Result<SmtpMailer> {
        let target = SmtpTarget::parse(url)?;
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(target.host.clone())
            .port(target.port)
            .timeout(Some(timeout));
        if let Some((user, password)) = &target.credentials {
            builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
        }
        Ok(SmtpMailer { transport: builder.build(), target })
    }
}

impl Mailer for SmtpMailer {
    fn provider(&self) -> &'static str {
        "smtp"
    }

    fn send<'a>(
        &'a self,
        _id: Uuid,
        envelope: &'a Envelope,
        message: &'a [u8],
    ) -> BoxFuture<'a, Result<Accepted, SendError>> {
        Box::pin(async move {
            let address =
                |a: &str| a.parse::<Address>().map_err(|e| SendError::Permanent(format!("invalid address {a:?}: {e}")));
            let smtp_envelope = SmtpEnvelope::new(Some(address(&envelope.from)?), vec![address(&envelope.to)?])
                .map_err(|e| SendError::Permanent(format!("envelope: {e}")))?;
            match self.transport.send_raw(&smtp_envelope, message).await {
                Ok(response) => {
                    let detail = format!("{} {}", response.code(), response.message().collect::<Vec<_>>().join(" "));
                    Ok(Accepted { detail })
                }
                Err(e) if e.is_permanent() => Err(SendError::Permanent(describe(&e))),
                Err(e) => Err(SendError::Transient(describe(&e))),
            }
        })
    }
}

/// The error with its SMTP code, without the message body.
fn describe(e: &lettre::transport::smtp::Error) -> String {
    let text = e.to_string();
    match e.status() {
        Some(code) if !text.contains(&code.to_string()) => format!("{code} {text}"),
        _ => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smtp_urls_name_host_port_and_credentials() {
        let t = SmtpTarget::parse("smtp://127.0.0.1:1025").expect("parsed");
        assert_eq!((t.host.as_str(), t.port, t.credentials), ("127.0.0.1", 1025, None));
        let t = SmtpTarget::parse("smtp://ada:p%40ss@mail.example").expect("parsed");
        assert_eq!((t.host.as_str(), t.port), ("mail.example", 25));
        assert_eq!(t.credentials, Some(("ada".to_string(), "p@ss".to_string())));
        assert!(!format!("{t:?}").contains("p@ss"));
        let t = SmtpTarget::parse("smtp://[::1]:2525").expect("parsed");
        assert_eq!((t.host.as_str(), t.port), ("::1", 2525));
    }

    #[test]
    fn other_schemes_and_bad_ports_are_refused() {
        for bad in ["smtps://mail.example", "http://mail.example", "mail.example", "smtp://host:99999", "smtp://"] {
            assert!(SmtpTarget::parse(bad).is_err(), "{bad}");
        }
    }
}
