//! Transactional mail: emails that go to an address an event names, whoever holds it (spec,
//! Events section). They ignore preferences and digests, are deduplicated per (event, template,
//! address), and use the recipient's locale, else `en`.
//!
//! | event | template | to |
//! |---|---|---|
//! | `identity.user.registered` | `welcome` | `email` |
//! | `identity.user.email_verification_requested` | `email_verification` (`link_url`†) | `email` (the new address for `change_email`) |
//! | `identity.user.password_reset_requested` | `password_reset` (`link_url`†) | `email` |
//! | `identity.invitation.sent` | `invitation` (`link_url`†) | `email` |
//! | `identity.user.email_changed` | `email_changed` | `previous_email`† |
//! | `identity.user.password_changed`, `.locked`, `.mfa_enabled`, `.mfa_disabled`, `.backup_codes_regenerated`; `identity.session.revoked` (`reuse_detected`) | `security_alert` | the user |
//!
//! † Sensitive payload fields are read only to render the message. The rendered message is
//! stored in `email_queue` until it is sent, never in `email_log`, and never logged.
//!
//! The same consumer keeps the `recipients` projection (address, name) from `registered`,
//! `email_verified` and `email_changed`, so that alerts, whose events carry only a user id, can
//! be addressed.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use serde_json::{Map, Value, json};
use trellis_kit::Result;
use trellis_kit::db::Tx;
use trellis_kit::events::{Consumer, Event, Handler, stage};
use trellis_proto::trellis::identity::v1 as identity;
use trellis_proto::trellis::notifications::v1::EmailFailed;
use uuid::Uuid;

use super::templates::Templates;
use super::{Mailer, format_message};
use crate::config::NotificationsConfig;
use crate::store::{self, NewEmail};

/// The queue of the transactional mail consumer (without the cell's prefix).
pub const MAIL_QUEUE: &str = "notifications.mail";

/// `notifications.email.failed`
pub const EMAIL_FAILED: &str = "notifications.email.failed";

/// The event types it consumes.
pub const MAILED: &[&str] = &[
    "identity.user.registered",
    "identity.user.email_verification_requested",
    "identity.user.email_verified",
    "identity.user.password_reset_requested",
    "identity.user.email_changed",
    "identity.user.password_changed",
    "identity.user.locked",
    "identity.user.mfa_enabled",
    "identity.user.mfa_disabled",
    "identity.user.backup_codes_regenerated",
    "identity.session.revoked",
    "identity.invitation.sent",
];

/// Longest error kept in `email_log.error`.
pub const ERROR_MAX: usize = 2_000;

/// Who gets an email.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum To {
    /// An address the event names.
    Address(String),
    /// The user's current address, from the `recipients` projection.
    User,
}

/// An email an event asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct MailRequest {
    /// The template.
    pub slug: &'static str,
    /// The user the email concerns, when the event names one.
    pub user_id: Option<Uuid>,
    /// Where it goes.
    pub to: To,
    /// The template's own variables.
    pub vars: Map<String, Value>,
    /// Display name of the sender (the inviting organization), else `EMAIL_FROM`'s.
    pub from_name: Option<String>,
    /// `org_name` for the templates, when the event names the organization.
    pub org_name: Option<String>,
    /// The recipient's name, when the event carries it.
    pub recipient_name: Option<String>,
}

/// A change to the `recipients` projection an event implies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecipientUpdate {
    /// A new user.
    Registered {
        /// The user.
        user_id: Uuid,
        /// Their address.
        email: String,
        /// Their name.
        display_name: String,
    },
    /// A verified (possibly new) address.
    Email {
        /// The user.
        user_id: Uuid,
        /// The address.
        email: String,
    },
}

/// `user_id = 1`, the first field of every per-user identity event (used for the MFA events,
/// whose payload messages carry nothing else this service needs).
#[derive(Clone, PartialEq, prost::Message)]
struct UserOnly {
    #[prost(string, tag = "1")]
    user_id: String,
}

fn uuid(s: &str) -> Option<Uuid> {
    s.parse().ok()
}

fn when(t: Option<&prost_types::Timestamp>) -> String {
    t.and_then(|t| DateTime::<Utc>::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0)))
        .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_default()
}

fn vars(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

fn alert(user_id: &str, alert: &str, extra: Value) -> Option<MailRequest> {
    let mut v = vars(json!({"alert": alert, "via": "", "locked_until": "", "failed_count": ""}));
    v.extend(vars(extra));
    Some(MailRequest {
        slug: "security_alert",
        user_id: Some(uuid(user_id)?),
        to: To::User,
        vars: v,
        from_name: None,
        org_name: None,
        recipient_name: None,
    })
}

/// The email `event` asks for, and the projection update it implies (pure: no I/O).
pub fn mail_for(event: &Event) -> Result<(Option<MailRequest>, Option<RecipientUpdate>)> {
    let request = |slug, user_id: &str, to: &str, v: Value| MailRequest {
        slug,
        user_id: uuid(user_id),
        to: To::Address(to.to_string()),
        vars: vars(v),
        from_name: None,
        org_name: None,
        recipient_name: None,
    };
    Ok(match event.envelope.r#type.as_str() {
        "identity.user.registered" => {
            let p: identity::UserRegistered = event.payload()?;
            let name =
                if p.last_name.is_empty() { p.first_name.clone() } else { format!("{} {}", p.first_name, p.last_name) };
            let update = uuid(&p.user_id).map(|user_id| RecipientUpdate::Registered {
                user_id,
                email: p.email.clone(),
                display_name: name,
            });
            let mut mail = request("welcome", &p.user_id, &p.email, json!({"email": p.email}));
            mail.recipient_name = Some(p.first_name.clone());
            (Some(mail), update)
        }
        "identity.user.email_verification_requested" => {
            let p: identity::EmailVerificationRequested = event.payload()?;
            let purpose = match identity::EmailTokenPurpose::try_from(p.purpose) {
                Ok(identity::EmailTokenPurpose::ChangeEmail) => "change_email",
                _ => "verify_email",
            };
            let v = json!({"email": p.email, "purpose": purpose, "link_url": p.link_url,
                           "expires_at": when(p.expires_at.as_ref())});
            (Some(request("email_verification", &p.user_id, &p.email, v)), None)
        }
        "identity.user.email_verified" => {
            let p: identity::EmailVerified = event.payload()?;
            (None, uuid(&p.user_id).map(|user_id| RecipientUpdate::Email { user_id, email: p.email }))
        }
        "identity.user.password_reset_requested" => {
            let p: identity::PasswordResetRequested = event.payload()?;
            let v = json!({"email": p.email, "link_url": p.link_url, "expires_at": when(p.expires_at.as_ref())});
            (Some(request("password_reset", &p.user_id, &p.email, v)), None)
        }
        "identity.invitation.sent" => {
            let p: identity::InvitationSent = event.payload()?;
            let role = identity::OrgRole::try_from(p.role)
                .map(|r| r.as_str_name().trim_start_matches("ORG_ROLE_").to_lowercase())
                .unwrap_or_else(|_| "member".to_string());
            let v = json!({"email": p.email, "inviter_name": p.inviter_name, "role": role, "message": p.message,
                           "link_url": p.link_url, "expires_at": when(p.expires_at.as_ref())});
            let mut mail = request("invitation", "", &p.email, v);
            mail.from_name = Some(p.org_name.clone()).filter(|n| !n.is_empty());
            mail.org_name = mail.from_name.clone();
            (Some(mail), None)
        }
        "identity.user.email_changed" => {
            let p: identity::EmailChanged = event.payload()?;
            let update = uuid(&p.user_id).map(|user_id| RecipientUpdate::Email { user_id, email: p.email.clone() });
            let v = json!({"email": p.email, "previous_email": p.previous_email});
            let mail =
                (!p.previous_email.is_empty()).then(|| request("email_changed", &p.user_id, &p.previous_email, v));
            (mail, update)
        }
        "identity.user.password_changed" => {
            let p: identity::PasswordChanged = event.payload()?;
            let via = match identity::PasswordChangeMethod::try_from(p.via) {
                Ok(identity::PasswordChangeMethod::Reset) => "reset",
                _ => "change",
            };
            (alert(&p.user_id, "password_changed", json!({"via": via})), None)
        }
        "identity.user.locked" => {
            let p: identity::UserLocked = event.payload()?;
            let extra = json!({"locked_until": when(p.locked_until.as_ref()), "failed_count": p.failed_count});
            (alert(&p.user_id, "locked", extra), None)
        }
        kind @ ("identity.user.mfa_enabled"
        | "identity.user.mfa_disabled"
        | "identity.user.backup_codes_regenerated") => {
            let bytes = event.envelope.payload.as_ref().map(|any| any.value.as_slice()).unwrap_or_default();
            let p = <UserOnly as prost::Message>::decode(bytes).unwrap_or_default();
            (alert(&p.user_id, kind.trim_start_matches("identity.user."), json!({})), None)
        }
        "identity.session.revoked" => {
            let p: identity::SessionRevoked = event.payload()?;
            let reuse = p.reason == i32::from(identity::SessionRevokeReason::ReuseDetected);
            (if reuse { alert(&p.user_id, "session_reuse", json!({})) } else { None }, None)
        }
        _ => (None, None),
    })
}

/// The transactional mail consumer's handler.
#[derive(Debug, Clone)]
pub struct Mail {
    templates: Arc<Templates>,
    config: Arc<NotificationsConfig>,
    provider: &'static str,
    app_url: String,
}

impl Mail {
    /// Renders with `templates`, records mail for `mailer`'s provider, and links to `app_url`
    /// (kit's `PUBLIC_BASE_URL`).
    pub fn new(
        templates: Arc<Templates>,
        config: Arc<NotificationsConfig>,
        mailer: &dyn Mailer,
        app_url: &str,
    ) -> Self {
        Self { templates, config, provider: mailer.provider(), app_url: app_url.trim_end_matches('/').to_string() }
    }

    /// The consumer on [`MAIL_QUEUE`].
    pub fn consumer(self) -> Consumer {
        Consumer::new(MAIL_QUEUE, MAILED, self)
    }

    /// The product name: the display name of `EMAIL_FROM`.
    fn product_name(&self) -> String {
        self.config
            .email_from
            .parse::<lettre::message::Mailbox>()
            .ok()
            .and_then(|m| m.name)
            .unwrap_or_else(|| "Trellis".to_string())
    }
}

impl Handler for Mail {
    fn handle<'a>(&'a self, event: &'a Event, tx: &'a mut Tx) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.handle_event(event, tx))
    }
}

impl Mail {
    async fn handle_event(&self, event: &Event, tx: &mut Tx) -> Result<()> {
        let (mail, update) = mail_for(event)?;
        match update {
            Some(RecipientUpdate::Registered { user_id, email, display_name }) => {
                store::insert_recipient(tx, user_id, &email, &display_name).await?;
            }
            Some(RecipientUpdate::Email { user_id, email }) => store::set_recipient_email(tx, user_id, &email).await?,
            None => {}
        }
        let Some(mail) = mail else { return Ok(()) };
        let known = match mail.user_id {
            Some(user_id) => store::recipient(tx, user_id).await?,
            None => None,
        };
        let to = match (&mail.to, &known) {
            (To::Address(address), _) => address.clone(),
            (To::User, Some(recipient)) => recipient.email.clone(),
            (To::User, None) => {
                // Not an error: a user this service never heard of (created before it ran).
                tracing::warn!(event_id = %event.id, event_type = %event.envelope.r#type, slug = mail.slug,
                    "no address known for the user of a transactional email; nothing sent");
                return Ok(());
            }
        };
        let locale = known.as_ref().map_or("en", |r| r.locale.as_str());
        let recipient_name =
            mail.recipient_name.clone().or_else(|| known.as_ref().map(|r| r.display_name.clone())).unwrap_or_default();
        let mut vars = mail.vars.clone();
        vars.entry("email").or_insert_with(|| json!(to));
        vars.insert("org_name".into(), json!(mail.org_name.clone().unwrap_or_else(|| self.product_name())));
        vars.insert("recipient_name".into(), json!(recipient_name));
        vars.insert("app_url".into(), json!(self.app_url));
        vars.insert("preferences_url".into(), json!(format!("{}/settings/notifications", self.app_url)));

        let id = Uuid::now_v7();
        let rendered =
            self.templates.render(mail.slug, locale, &Value::Object(vars)).map_err(|e| e.to_string()).and_then(
                |(locale, rendered)| {
                    format_message(&self.config, id, mail.from_name.as_deref(), &to, &rendered)
                        .map(|(_, message)| (locale, rendered.subject, message))
                },
            );
        let (locale, subject, message, error) = match rendered {
            Ok((locale, subject, message)) => (locale, subject, Some(message), None),
            Err(error) => (locale.to_string(), String::new(), None, Some(truncate(&error))),
        };
        let stored = store::insert_email_log(
            tx,
            &NewEmail {
                id,
                org_id: event.org_id,
                user_id: mail.user_id,
                to_address: &to,
                template_slug: mail.slug,
                locale: &locale,
                subject: &truncate_to(&subject, 500),
                status: if message.is_some() { "queued" } else { "failed" },
                provider: self.provider,
                error: error.as_deref(),
                event_id: Some(event.id),
            },
        )
        .await?;
        if !stored {
            tracing::debug!(event_id = %event.id, slug = mail.slug, "transactional email already recorded");
            return Ok(());
        }
        match message {
            Some(message) => store::enqueue_email(tx, id, event.org_id, &message).await?,
            None => {
                let error = error.unwrap_or_default();
                tracing::error!(email_log_id = %id, event_id = %event.id, slug = mail.slug, %error,
                    "a transactional email could not be rendered");
                let failed = EmailFailed {
                    email_log_id: id.to_string(),
                    user_id: mail.user_id.map(|u| u.to_string()).unwrap_or_default(),
                    template_slug: mail.slug.to_string(),
                    error,
                };
                stage(tx, &event.ctx, EMAIL_FAILED, &failed).await?;
            }
        }
        tracing::info!(email_log_id = %id, event_id = %event.id, slug = mail.slug, "transactional email queued");
        Ok(())
    }
}

/// `text` cut to [`ERROR_MAX`] characters.
pub fn truncate(text: &str) -> String {
    truncate_to(text, ERROR_MAX)
}

fn truncate_to(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

#[cfg(test)]
mod tests {
    use trellis_kit::RequestContext;
    use trellis_kit::events::envelope;

    use super::*;

    fn event<M: prost::Name>(event_type: &str, payload: &M) -> Event {
        let org = Uuid::nil();
        let envelope = envelope(&RequestContext::system(org, "c".to_string()), org, event_type, payload);
        let id = envelope.id.parse().expect("id");
        Event { id, org_id: org, ctx: RequestContext::system(org, "c".to_string()), envelope }
    }

    #[test]
    fn a_reset_request_mails_the_link_to_the_account_address() {
        let user = Uuid::now_v7();
        let p = identity::PasswordResetRequested {
            user_id: user.to_string(),
            email: "bob@example.com".into(),
            link_url: "http://app/reset-password?token=t".into(),
            expires_at: Some(prost_types::Timestamp { seconds: 1_795_000_000, nanos: 0 }),
        };
        let (mail, update) = mail_for(&event("identity.user.password_reset_requested", &p)).expect("mapped");
        let mail = mail.expect("a mail");
        assert_eq!(update, None);
        assert_eq!(
            (mail.slug, mail.user_id, mail.to),
            ("password_reset", Some(user), To::Address("bob@example.com".into()))
        );
        assert_eq!(mail.vars["link_url"], "http://app/reset-password?token=t");
        assert_eq!(mail.vars["expires_at"], "2026-11-18 11:06 UTC");
    }

    #[test]
    fn a_changed_email_is_confirmed_to_the_previous_address_and_updates_the_projection() {
        let user = Uuid::now_v7();
        let p = identity::EmailChanged {
            user_id: user.to_string(),
            email: "new@example.com".into(),
            previous_email: "old@example.com".into(),
        };
        let (mail, update) = mail_for(&event("identity.user.email_changed", &p)).expect("mapped");
        assert_eq!(mail.expect("a mail").to, To::Address("old@example.com".into()));
        assert_eq!(update, Some(RecipientUpdate::Email { user_id: user, email: "new@example.com".into() }));
    }

    #[test]
    fn change_email_verification_goes_to_the_new_address_with_its_purpose() {
        let p = identity::EmailVerificationRequested {
            user_id: Uuid::now_v7().to_string(),
            email: "new@example.com".into(),
            purpose: identity::EmailTokenPurpose::ChangeEmail.into(),
            link_url: "l".into(),
            expires_at: None,
        };
        let mail = mail_for(&event("identity.user.email_verification_requested", &p)).expect("mapped").0.expect("mail");
        assert_eq!(mail.to, To::Address("new@example.com".into()));
        assert_eq!(mail.vars["purpose"], "change_email");
    }

    #[test]
    fn security_events_alert_the_user_and_other_revocations_do_not() {
        let user = Uuid::now_v7();
        let changed =
            identity::PasswordChanged { user_id: user.to_string(), via: identity::PasswordChangeMethod::Reset.into() };
        let mail = mail_for(&event("identity.user.password_changed", &changed)).expect("mapped").0.expect("mail");
        assert_eq!((mail.slug, mail.to, mail.user_id), ("security_alert", To::User, Some(user)));
        assert_eq!((mail.vars["alert"].as_str(), mail.vars["via"].as_str()), (Some("password_changed"), Some("reset")));

        let revoked = |reason: identity::SessionRevokeReason| identity::SessionRevoked {
            session_id: Uuid::now_v7().to_string(),
            user_id: user.to_string(),
            reason: reason.into(),
        };
        let reuse = revoked(identity::SessionRevokeReason::ReuseDetected);
        let mail = mail_for(&event("identity.session.revoked", &reuse)).expect("mapped").0.expect("mail");
        assert_eq!(mail.vars["alert"], "session_reuse");
        let logout = revoked(identity::SessionRevokeReason::Logout);
        assert_eq!(mail_for(&event("identity.session.revoked", &logout)).expect("mapped"), (None, None));
    }

    #[test]
    fn registration_welcomes_and_records_the_recipient() {
        let user = Uuid::now_v7();
        let p = identity::UserRegistered {
            user_id: user.to_string(),
            email: "ada@example.com".into(),
            first_name: "Ada".into(),
            last_name: "Lovelace".into(),
            via: 1,
        };
        let (mail, update) = mail_for(&event("identity.user.registered", &p)).expect("mapped");
        let mail = mail.expect("mail");
        assert_eq!((mail.slug, mail.recipient_name.as_deref()), ("welcome", Some("Ada")));
        assert_eq!(
            update,
            Some(RecipientUpdate::Registered {
                user_id: user,
                email: "ada@example.com".into(),
                display_name: "Ada Lovelace".into()
            })
        );
    }

    #[test]
    fn invitations_come_from_the_inviting_organization() {
        let p = identity::InvitationSent {
            email: "x@example.com".into(),
            role: identity::OrgRole::Admin.into(),
            inviter_name: "Alice".into(),
            org_name: "Acme".into(),
            link_url: "l".into(),
            ..Default::default()
        };
        let mail = mail_for(&event("identity.invitation.sent", &p)).expect("mapped").0.expect("mail");
        assert_eq!((mail.from_name.as_deref(), mail.org_name.as_deref()), (Some("Acme"), Some("Acme")));
        assert_eq!(mail.vars["role"], "admin");
        assert_eq!(mail.user_id, None);
    }
}
