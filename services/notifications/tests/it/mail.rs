//! Transactional mail against a local SMTP capture server (and the file sink): rendering,
//! deduplication, retries of transient failures, permanent failures, and what is kept.

use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use trellis_kit::RequestContext;
use trellis_kit::events::{Event, Handler};
use trellis_kit::testing::{FaultProxy, SmtpCapture, TestCell, wait_until};
use trellis_notifications::NotificationsConfig;
use trellis_notifications::config::parse_schedule;
use trellis_notifications::mail::templates::Templates;
use trellis_notifications::mail::transactional::Mail;
use trellis_proto::trellis::events::v1::Envelope;
use trellis_proto::trellis::identity::v1::PasswordResetRequested;
use trellis_proto::trellis::notifications::v1::EmailFailed;
use uuid::Uuid;

use crate::common::{event, service_db};

const LINK: &str = "http://localhost:8080/reset-password?token=s3cr3t-t0ken-value";

fn settings(smtp_url: Option<String>, schedule: &str) -> NotificationsConfig {
    NotificationsConfig {
        smtp_url,
        mail_dir: std::env::temp_dir().join(format!("trellis-mail-{}", Uuid::now_v7())),
        email_retry_schedule: parse_schedule(schedule).expect("schedule"),
        email_poll_interval: Duration::from_millis(50),
        ..NotificationsConfig::from_env().expect("defaults")
    }
}

async fn cell(settings: &NotificationsConfig) -> TestCell {
    TestCell::start(vec![trellis_notifications::module_with(Some(settings.clone()))]).await
}

/// `identity.user.password_reset_requested` for `email`, under the platform org.
fn reset_requested(email: &str) -> Event {
    let payload = PasswordResetRequested {
        user_id: Uuid::now_v7().to_string(),
        email: email.to_string(),
        link_url: LINK.to_string(),
        expires_at: Some(prost_types::Timestamp { seconds: chrono::Utc::now().timestamp() + 3600, nanos: 0 }),
    };
    event(
        Uuid::nil(),
        &RequestContext::system(Uuid::nil(), "test".to_string()),
        "identity.user.password_reset_requested",
        &payload,
    )
}

/// Runs the mail consumer's handler on `event` as kit's consumer does.
async fn deliver(cell: &TestCell, settings: &NotificationsConfig, event: &Event) {
    let db = service_db(cell).await;
    let mailer = trellis_notifications::mail::mailer(settings).expect("mailer");
    let handler = Mail::new(
        Arc::new(Templates::system()),
        Arc::new(settings.clone()),
        mailer.as_ref(),
        &cell.config.public_base_url,
    );
    let mut tx = db.tenant_tx_for(event.org_id, None).await.expect("tx");
    handler.handle(event, &mut tx).await.expect("handled");
    tx.commit().await.expect("commit");
}

#[derive(Debug, sqlx::FromRow)]
struct LogRow {
    id: Uuid,
    status: String,
    attempts: i32,
    provider_message_id: Option<String>,
    error: Option<String>,
    subject: String,
    template_slug: String,
}

async fn log(cell: &TestCell, to: &str) -> Vec<LogRow> {
    sqlx::query_as(
        "select id, status, attempts, provider_message_id, error, subject, template_slug \
         from notifications.email_log where to_address = $1 order by created_at",
    )
    .bind(to)
    .fetch_all(&cell.owner_pool().await)
    .await
    .expect("email log")
}

async fn queued(cell: &TestCell) -> i64 {
    sqlx::query_scalar("select count(*) from notifications.email_queue")
        .fetch_one(&cell.owner_pool().await)
        .await
        .expect("queue")
}

async fn failures_published(cell: &TestCell) -> Vec<EmailFailed> {
    let rows: Vec<Vec<u8>> =
        sqlx::query_scalar("select envelope from notifications.outbox where event_type = 'notifications.email.failed'")
            .fetch_all(&cell.owner_pool().await)
            .await
            .expect("outbox");
    rows.iter()
        .filter_map(|b| Envelope::decode(b.as_slice()).ok())
        .filter_map(|e| e.payload.and_then(|p| p.to_msg::<EmailFailed>().ok()))
        .collect()
}

async fn wait_for_status(cell: &TestCell, to: &str, status: &str) -> LogRow {
    wait_until(Duration::from_secs(15), || async { log(cell, to).await.first().is_some_and(|r| r.status == status) })
        .await;
    log(cell, to).await.remove(0)
}

#[tokio::test]
async fn a_reset_link_is_mailed_once_and_kept_nowhere_after_sending() {
    let smtp = SmtpCapture::start().await;
    let settings = settings(Some(smtp.url()), "1m");
    let cell = cell(&settings).await;
    let e = reset_requested("bob@example.com");
    deliver(&cell, &settings, &e).await;
    // A redelivered event (after the inbox was purged) sends nothing more.
    deliver(&cell, &settings, &e).await;

    let mail = smtp.wait_for("bob@example.com", Duration::from_secs(15)).await;
    assert_eq!(mail.subject(), "Reset your password");
    assert_eq!(mail.link_containing("/reset-password?token=").as_deref(), Some(LINK));
    assert_eq!(mail.from, "no-reply@trellis.localhost");
    let row = wait_for_status(&cell, "bob@example.com", "sent").await;
    assert_eq!(mail.header("message-id"), Some(format!("<{}@trellis.localhost>", row.id)));
    assert_eq!(row.provider_message_id, Some(format!("<{}@trellis.localhost>", row.id)));
    assert_eq!(
        (row.attempts, row.template_slug.as_str(), row.subject.as_str()),
        (1, "password_reset", "Reset your password")
    );

    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(smtp.messages().len(), 1, "one message");
    assert_eq!(log(&cell, "bob@example.com").await.len(), 1, "one log row");
    assert_eq!(queued(&cell).await, 0, "the rendered message is gone once sent");
    // The token is in no table of the service.
    let dump: String =
        sqlx::query_scalar("select coalesce(string_agg(l::text, ' '), '') from notifications.email_log l")
            .fetch_one(&cell.owner_pool().await)
            .await
            .expect("dump");
    assert!(!dump.contains("s3cr3t-t0ken-value"), "{dump}");
}

#[tokio::test]
async fn mail_is_retried_while_the_smtp_server_is_down_and_delivered_once_it_is_back() {
    let smtp = SmtpCapture::start().await;
    let proxy = FaultProxy::in_front_of(&smtp.url()).await;
    proxy.cut();
    let settings = settings(Some(proxy.url()), "300ms,300ms,300ms,300ms,300ms,300ms");
    let cell = cell(&settings).await;
    deliver(&cell, &settings, &reset_requested("carol@example.com")).await;

    wait_until(Duration::from_secs(15), || async {
        log(&cell, "carol@example.com").await.first().is_some_and(|r| r.attempts >= 1)
    })
    .await;
    let row = log(&cell, "carol@example.com").await.remove(0);
    assert_eq!(row.status, "queued", "a connection failure is transient");
    assert!(row.error.is_some_and(|e| !e.contains("s3cr3t")), "the error is recorded without the message");
    assert!(smtp.messages().is_empty());

    proxy.restore();
    let mail = smtp.wait_for("carol@example.com", Duration::from_secs(15)).await;
    assert_eq!(mail.link_containing("token=").as_deref(), Some(LINK));
    let row = wait_for_status(&cell, "carol@example.com", "sent").await;
    assert!(row.attempts >= 2, "{row:?}");
    assert_eq!(row.error, None);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(smtp.messages_to("carol@example.com").len(), 1, "delivered exactly once");
    assert_eq!(queued(&cell).await, 0);
}

#[tokio::test]
async fn temporary_refusals_are_retried_on_schedule_then_the_email_fails() {
    let smtp = SmtpCapture::start().await;
    smtp.reject_with(Some(451));
    let settings = settings(Some(smtp.url()), "100ms,100ms");
    let cell = cell(&settings).await;
    deliver(&cell, &settings, &reset_requested("dan@example.com")).await;

    let row = wait_for_status(&cell, "dan@example.com", "failed").await;
    assert_eq!(row.attempts, 3, "the first attempt and two retries");
    assert!(row.error.as_deref().is_some_and(|e| e.contains("451")), "{row:?}");
    assert_eq!(queued(&cell).await, 0);
    let failures = failures_published(&cell).await;
    assert_eq!(failures.len(), 1);
    assert_eq!(
        (failures[0].email_log_id.clone(), failures[0].template_slug.as_str()),
        (row.id.to_string(), "password_reset")
    );
}

#[tokio::test]
async fn a_permanent_refusal_fails_the_email_at_once() {
    let smtp = SmtpCapture::start().await;
    smtp.reject_with(Some(550));
    let settings = settings(Some(smtp.url()), "100ms,100ms,100ms");
    let cell = cell(&settings).await;
    deliver(&cell, &settings, &reset_requested("erin@example.com")).await;

    let row = wait_for_status(&cell, "erin@example.com", "failed").await;
    assert_eq!(row.attempts, 1);
    assert!(row.error.as_deref().is_some_and(|e| e.contains("550")), "{row:?}");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(smtp.sessions(), 1, "no retry after a 5xx");
    assert_eq!(failures_published(&cell).await.len(), 1);
}

#[tokio::test]
async fn without_an_smtp_server_mail_is_written_to_files_that_sort_by_time() {
    let settings = settings(None, "1m");
    let cell = cell(&settings).await;
    deliver(&cell, &settings, &reset_requested("fay@example.com")).await;
    deliver(&cell, &settings, &reset_requested("gus@example.com")).await;

    let row = wait_for_status(&cell, "gus@example.com", "sent").await;
    wait_for_status(&cell, "fay@example.com", "sent").await;
    let mut files: Vec<_> = std::fs::read_dir(&settings.mail_dir)
        .expect("mail dir")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "eml"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 2, "{files:?}");
    let last = std::fs::read_to_string(&files[1]).expect("read");
    assert!(files[1].display().to_string().ends_with(&format!("-{}.eml", row.id)), "{files:?}");
    assert!(last.contains("To: gus@example.com"), "{last}");
    assert!(last.contains("reset-password?token=3D") || last.contains("reset-password?token="), "{last}");
    let kept: String = sqlx::query_scalar("select provider from notifications.email_log where id = $1")
        .bind(row.id)
        .fetch_one(&cell.owner_pool().await)
        .await
        .expect("provider");
    assert_eq!(kept, "file");
    let _ = std::fs::remove_dir_all(&settings.mail_dir);
}

#[tokio::test]
async fn security_alerts_reach_the_address_identity_last_announced_for_the_user() {
    use trellis_proto::trellis::identity::v1::{EmailChanged, PasswordChangeMethod, PasswordChanged, UserRegistered};

    let smtp = SmtpCapture::start().await;
    let settings = settings(Some(smtp.url()), "1m");
    let cell = cell(&settings).await;
    let (org, user) = (Uuid::now_v7(), Uuid::now_v7());
    let ctx = RequestContext::system(Uuid::nil(), "test".to_string());
    let changed = PasswordChanged { user_id: user.to_string(), via: PasswordChangeMethod::Change.into() };

    // A user this service never heard of: nothing to address, nothing fails.
    deliver(&cell, &settings, &event(Uuid::nil(), &ctx, "identity.user.password_changed", &changed)).await;
    let registered = UserRegistered {
        user_id: user.to_string(),
        email: "hal@example.com".into(),
        first_name: "Hal".into(),
        ..Default::default()
    };
    deliver(&cell, &settings, &event(org, &ctx, "identity.user.registered", &registered)).await;
    smtp.wait_for("hal@example.com", Duration::from_secs(15)).await;
    deliver(&cell, &settings, &event(Uuid::nil(), &ctx, "identity.user.password_changed", &changed)).await;
    let alert = smtp.wait_for_nth("hal@example.com", 2, Duration::from_secs(15)).await;
    assert_eq!(alert.subject(), "Your password was changed");
    assert!(alert.body().contains("Hi Hal,") && alert.body().contains("hal@example.com"), "{}", alert.body());

    // After an email change, alerts go to the new address; the old one is told of the change.
    let moved = EmailChanged {
        user_id: user.to_string(),
        email: "hal@new.example".into(),
        previous_email: "hal@example.com".into(),
    };
    deliver(&cell, &settings, &event(Uuid::nil(), &ctx, "identity.user.email_changed", &moved)).await;
    let notice = smtp.wait_for_nth("hal@example.com", 3, Duration::from_secs(15)).await;
    assert_eq!(notice.subject(), "Your email address was changed");
    assert!(notice.body().contains("hal@new.example"));
    deliver(&cell, &settings, &event(Uuid::nil(), &ctx, "identity.user.password_changed", &changed)).await;
    let alert = smtp.wait_for("hal@new.example", Duration::from_secs(15)).await;
    assert_eq!(alert.subject(), "Your password was changed");
    assert!(failures_published(&cell).await.is_empty());
}
