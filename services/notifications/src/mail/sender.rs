//! The sender: takes due messages from `email_queue`, hands them to the [`Mailer`] and records
//! the outcome (spec Rule 23).
//!
//! - accepted → `sent`, `provider_message_id` = the Message-ID; the queue row is deleted;
//! - a 4xx reply, a connection failure or a timeout → the attempt is counted and the next one
//!   scheduled after `EMAIL_RETRY_SCHEDULE` (1, 5 and 30 min); after the last one → `failed`;
//! - a 5xx reply → `failed` at once.
//!
//! Every final failure deletes the queue row (the only copy of the rendered message) and
//! publishes `notifications.email.failed`. Each message is sent inside a tenant transaction that
//! locks its queue row (`FOR UPDATE SKIP LOCKED`), so replicas never send one message twice at
//! the same time; a crash after the server accepted it but before the commit sends it again on
//! restart (at-least-once, like SMTP itself).

use std::sync::Arc;

use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use trellis_kit::db::Db;
use trellis_kit::events::stage;
use trellis_kit::{RequestContext, Result};
use trellis_proto::trellis::notifications::v1::EmailFailed;
use uuid::Uuid;

use super::transactional::{EMAIL_FAILED, truncate};
use super::{Envelope, Mailer, SendError, message_id};
use crate::config::NotificationsConfig;
use crate::store;

/// Messages fetched per scan.
const BATCH: i32 = 64;

/// The sender's dependencies.
#[derive(Debug, Clone)]
pub struct Sender {
    db: Db,
    mailer: Arc<dyn Mailer>,
    config: Arc<NotificationsConfig>,
}

/// What became of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Accepted by the mail system.
    Sent,
    /// Failed for now; retried later.
    Retrying,
    /// Failed for good.
    Failed,
    /// Not due, already final, or being sent by another replica.
    Skipped,
}

impl Sender {
    /// A sender of `db`'s queue through `mailer`.
    pub fn new(db: Db, mailer: Arc<dyn Mailer>, config: Arc<NotificationsConfig>) -> Self {
        Self { db, mailer, config }
    }

    /// Scans for due mail every `EMAIL_POLL_INTERVAL` until shutdown.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        tracing::info!(provider = self.mailer.provider(), "email sender started");
        loop {
            if let Err(e) = self.send_due().await {
                tracing::warn!(error = %e, "email sender scan failed; retrying");
            }
            tokio::select! {
                _ = tokio::time::sleep(self.config.email_poll_interval) => {}
                _ = shutdown.cancelled() => break,
            }
        }
        tracing::info!("email sender stopped");
        Ok(())
    }

    /// Sends every message that is due now (up to `EMAIL_CONCURRENCY` at once); the outcomes.
    pub async fn send_due(&self) -> Result<Vec<Outcome>> {
        let mut outcomes = Vec::new();
        loop {
            let due = store::due_emails(self.db.pool(), BATCH).await?;
            let fetched = due.len();
            let batch: Vec<Outcome> = futures::stream::iter(due)
                .map(|(org_id, id)| async move {
                    self.send_one(org_id, id).await.unwrap_or_else(|e| {
                        tracing::warn!(email_log_id = %id, error = %e, "sending an email failed; it stays queued");
                        Outcome::Skipped
                    })
                })
                .buffer_unordered(self.config.email_concurrency.max(1))
                .collect()
                .await;
            let progressed = batch.iter().any(|o| *o != Outcome::Skipped);
            outcomes.extend(batch);
            if usize::try_from(BATCH).map_or(true, |b| fetched < b) || !progressed {
                return Ok(outcomes);
            }
        }
    }

    /// One attempt at one message, recorded in its org's transaction.
    pub async fn send_one(&self, org_id: Uuid, id: Uuid) -> Result<Outcome> {
        let mut tx = self.db.tenant_tx_for(org_id, None).await?;
        let Some(email) = store::claim_email(&mut tx, id).await? else {
            return Ok(Outcome::Skipped);
        };
        let from =
            self.config.email_from.parse::<lettre::message::Mailbox>().map(|m| m.email.to_string()).unwrap_or_default();
        let envelope = Envelope { from, to: email.to_address.clone() };
        let attempt = usize::try_from(email.attempts).unwrap_or(0) + 1;
        let outcome = match self.mailer.send(id, &envelope, &email.message).await {
            Ok(accepted) => {
                store::mark_email_sent(&mut tx, id, &message_id(&self.config, id)).await?;
                tracing::info!(email_log_id = %id, attempt, provider = self.mailer.provider(),
                    reply = %accepted.detail, "email sent");
                Outcome::Sent
            }
            Err(SendError::Transient(error)) if attempt <= self.config.email_retry_schedule.0.len() => {
                let delay = self.config.email_retry_schedule.0[attempt - 1];
                store::reschedule_email(&mut tx, id, &truncate(&error), delay).await?;
                tracing::warn!(email_log_id = %id, attempt, retry_in = ?delay, %error, "email not accepted; retrying");
                Outcome::Retrying
            }
            Err(e) => {
                let error = truncate(&e.to_string());
                store::mark_email_failed(&mut tx, id, &error).await?;
                tracing::error!(email_log_id = %id, attempt, %error, "email failed");
                let failed = EmailFailed {
                    email_log_id: id.to_string(),
                    user_id: email.user_id.map(|u| u.to_string()).unwrap_or_default(),
                    template_slug: email.template_slug.clone(),
                    error,
                };
                let ctx = RequestContext::system(org_id, Uuid::now_v7().to_string());
                stage(&mut tx, &ctx, EMAIL_FAILED, &failed).await?;
                Outcome::Failed
            }
        };
        tx.commit().await?;
        Ok(outcome)
    }
}
