//! Email: templates, the `Mailer` that hands messages to SMTP (or to files in development), the
//! transactional mail rendered from identity's events, and the sender that retries.
//!
//! # Layout
//! - [`templates`]: the system templates (`templates/{slug}.{locale}.{subject,html,txt}.j2`,
//!   embedded in the binary) in a sandboxed minijinja environment.
//! - [`transactional`]: which event mails whom with which template (pure), and the consumer
//!   (`notifications.mail`) that renders each message into `email_log` + `email_queue`.
//! - [`sender`]: the worker that takes due rows of `email_queue`, hands them to the [`Mailer`],
//!   and records the outcome (retry with backoff on 4xx or connection errors, `failed` on 5xx).
//! - [`smtp`] and [`file`]: the two [`Mailer`]s (lettre over SMTP; `.eml` files for development).
//!
//! An email flows: identity stages `identity.user.password_reset_requested` → kit's consumer
//! calls [`transactional::Mail`] in its inbox transaction → the message is rendered (Message-ID
//! `<email log id@EMAIL_DOMAIN>`) and stored with its `email_log` row (`queued`) → commit →
//! [`sender`] sends it → `email_log` becomes `sent` and the queue row, the only place the link
//! was ever stored, is deleted.

pub mod file;
pub mod sender;
pub mod smtp;
pub mod templates;
pub mod transactional;

use std::fmt;
use std::sync::Arc;

use futures::future::BoxFuture;
use lettre::message::{Mailbox, MultiPart, SinglePart, header};
use uuid::Uuid;

use crate::config::NotificationsConfig;

/// Who a message goes to, and from whom (the SMTP envelope).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// `MAIL FROM`.
    pub from: String,
    /// `RCPT TO`.
    pub to: String,
}

/// A message accepted by the mail system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// What the provider answered (the SMTP reply, or the file written).
    pub detail: String,
}

/// Why a message was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Worth retrying later: a 4xx reply, a connection failure, a timeout.
    #[error("transient: {0}")]
    Transient(String),
    /// Never going to work: a 5xx reply, an invalid address.
    #[error("permanent: {0}")]
    Permanent(String),
}

/// Hands rendered messages to a mail system. Implementations: [`smtp::SmtpMailer`] and
/// [`file::FileMailer`]; tests use kit's `SmtpCapture` behind the SMTP one.
pub trait Mailer: Send + Sync + fmt::Debug + 'static {
    /// `smtp` or `file`, as `email_log.provider` records it.
    fn provider(&self) -> &'static str;

    /// Sends one formatted RFC 5322 message (`id` is its email log id).
    fn send<'a>(
        &'a self,
        id: Uuid,
        envelope: &'a Envelope,
        message: &'a [u8],
    ) -> BoxFuture<'a, Result<Accepted, SendError>>;
}

/// The mailer the settings ask for: SMTP when `SMTP_URL` is set, else the file sink.
pub fn mailer(config: &NotificationsConfig) -> anyhow::Result<Arc<dyn Mailer>> {
    Ok(match &config.smtp_url {
        Some(url) => {
            let mailer = smtp::SmtpMailer::new(url, config.smtp_timeout)?;
            tracing::info!(smtp = %crate::config::redact_url(url), "email goes to SMTP");
            Arc::new(mailer)
        }
        None => {
            tracing::info!(dir = %config.mail_dir.display(), "SMTP_URL is not set; email is written to files");
            Arc::new(file::FileMailer::new(config.mail_dir.clone()))
        }
    })
}

/// A rendered email before it is formatted.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// Subject line.
    pub subject: String,
    /// HTML body.
    pub html: String,
    /// Plain-text body.
    pub text: String,
}

/// Formats a message: `From` (the display name replaced by `from_name` when given), `To`,
/// `Subject`, `Message-ID: <{id}@{domain}>`, `Date`, and a multipart/alternative body.
pub fn format_message(
    config: &NotificationsConfig,
    id: Uuid,
    from_name: Option<&str>,
    to: &str,
    rendered: &Rendered,
) -> Result<(Envelope, Vec<u8>), String> {
    let mut from: Mailbox = config.email_from.parse().map_err(|e| format!("EMAIL_FROM: {e}"))?;
    if let Some(name) = from_name.map(str::trim).filter(|n| !n.is_empty()) {
        from.name = Some(name.to_string());
    }
    let to_box: Mailbox = to.parse().map_err(|e| format!("recipient address {to:?}: {e}"))?;
    let envelope = Envelope { from: from.email.to_string(), to: to_box.email.to_string() };
    let message = lettre::Message::builder()
        .from(from)
        .to(to_box)
        .subject(rendered.subject.clone())
        .message_id(Some(message_id(config, id)))
        .header(header::MIME_VERSION_1_0)
        .multipart(
            MultiPart::alternative()
                .singlepart(part(header::ContentType::TEXT_PLAIN, &rendered.text))
                .singlepart(part(header::ContentType::TEXT_HTML, &rendered.html)),
        )
        .map_err(|e| format!("building the message: {e}"))?;
    Ok((envelope, message.formatted()))
}

/// A UTF-8 body part, always quoted-printable: readable in a `.eml` file, safe on any SMTP
/// server (no 8BITMIME needed, lines within limits).
fn part(content_type: header::ContentType, body: &str) -> SinglePart {
    SinglePart::builder()
        .header(content_type)
        .header(header::ContentTransferEncoding::QuotedPrintable)
        .body(body.to_string())
}

/// `<{id}@{EMAIL_DOMAIN}>`: the `Message-ID`, also recorded as `email_log.provider_message_id`.
pub fn message_id(config: &NotificationsConfig, id: Uuid) -> String {
    format!("<{id}@{}>", config.message_id_domain())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> NotificationsConfig {
        NotificationsConfig { smtp_url: None, ..NotificationsConfig::from_env().expect("defaults") }
    }

    #[test]
    fn a_message_names_its_log_id_and_carries_text_and_html() {
        let id = Uuid::now_v7();
        let rendered = Rendered {
            subject: "Reset your password".into(),
            html: "<p>Hello &amp; welcome</p>".into(),
            text: "Hello & welcome".into(),
        };
        let (envelope, bytes) =
            format_message(&config(), id, Some("Acme Inc"), "Bob@Example.com", &rendered).expect("formatted");
        assert_eq!(envelope.to, "Bob@Example.com");
        assert_eq!(envelope.from, "no-reply@trellis.localhost");
        let text = String::from_utf8(bytes).expect("utf-8");
        assert!(text.contains(&format!("Message-ID: <{id}@trellis.localhost>")), "{text}");
        assert!(text.contains("From: \"Acme Inc\" <no-reply@trellis.localhost>"), "{text}");
        assert!(text.contains("Subject: Reset your password"), "{text}");
        assert!(text.contains("multipart/alternative") && text.contains("text/plain") && text.contains("text/html"));
        assert_eq!(text.matches("Content-Transfer-Encoding: quoted-printable").count(), 2, "{text}");
    }

    #[test]
    fn an_invalid_recipient_is_refused() {
        let rendered = Rendered { subject: "s".into(), html: "h".into(), text: "t".into() };
        assert!(format_message(&config(), Uuid::now_v7(), None, "not an address", &rendered).is_err());
    }
}
