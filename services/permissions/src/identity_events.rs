//! The consumer of identity's events (queue `permissions.identity`): maintains the relationships
//! of memberships, ownership, teams and team memberships, so that they are right even when
//! identity's own write right after its commit did not arrive.
//!
//! Each event becomes the changes [`trellis_kit::org_relationships::changes_for_event`] gives
//! (the same mapping identity writes with), each applied as one write in the consumer's tenant
//! transaction, after the source-version guard. The guard admits the *same* version again here:
//! identity's direct write of a fact claims its version first, and the event of that same fact
//! must still apply what only this service can do (clearing everything a removed member or a
//! deleted team is named in). Re-applying one fact is harmless; an older fact is skipped.

use futures::future::BoxFuture;
use trellis_kit::db::Tx;
use trellis_kit::error::{Error, Result};
use trellis_kit::events::{Consumer, Event, Handler};
use trellis_kit::org_relationships::{self, Change, Clear, Op};

use crate::api::PermissionsApi;
use crate::eval::{ObjectRef, SubjectRef, Tuple};
use crate::store::{self, Operation, WriteError};

/// The consumer's queue, without the cell prefix.
pub const QUEUE: &str = "permissions.identity";

/// Applies identity's organization facts.
#[derive(Debug, Clone)]
pub struct IdentityEvents {
    api: PermissionsApi,
}

impl IdentityEvents {
    /// The consumer, bound to the events [`org_relationships::EVENT_TYPES`] and
    /// [`USER_ERASED`].
    pub fn consumer(api: PermissionsApi) -> Consumer {
        let mut bindings = org_relationships::EVENT_TYPES.to_vec();
        bindings.push(USER_ERASED);
        Consumer::new(QUEUE, &bindings, IdentityEvents { api })
    }
}

/// `identity.user.erased`: the user's relationships go in every organization.
pub const USER_ERASED: &str = "identity.user.erased";

/// Deletes every relationship naming the user as subject, org by org (each under its own tenant
/// scope), then returns the transaction to the event's org. How many orgs had some.
async fn erase_user(api: &PermissionsApi, tx: &mut Tx, event_org: uuid::Uuid, user_id: &str) -> Result<usize> {
    let orgs: Vec<uuid::Uuid> = sqlx::query_scalar("select * from permissions.orgs_with_subject('user', $1)")
        .bind(user_id)
        .fetch_all(&mut **tx)
        .await
        .map_err(|e| Error::internal(anyhow::anyhow!(e)))?;
    let change = Change {
        source: None,
        updates: Vec::new(),
        clears: vec![Clear::Subject(trellis_kit::authz::Ref::new("user", user_id))],
    };
    for org in &orgs {
        scope(tx, *org).await?;
        apply(api, tx, *org, &change).await?;
    }
    scope(tx, event_org).await?;
    Ok(orgs.len())
}

async fn scope(tx: &mut Tx, org: uuid::Uuid) -> Result<()> {
    sqlx::query("select set_config('app.org_id', $1, true)")
        .bind(org.to_string())
        .execute(&mut **tx)
        .await
        .map_err(|e| Error::internal(anyhow::anyhow!(e)))?;
    Ok(())
}

impl Handler for IdentityEvents {
    fn handle<'a>(&'a self, event: &'a Event, tx: &'a mut Tx) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let payload = event
                .envelope
                .payload
                .as_ref()
                .ok_or_else(|| Error::invalid_argument("EVENT_PAYLOAD_MISSING", "event has no payload"))?;
            if event.envelope.r#type == USER_ERASED {
                let erased: trellis_proto::trellis::identity::v1::UserErased =
                    payload.to_msg().map_err(|e| Error::invalid_argument("EVENT_PAYLOAD_INVALID", e.to_string()))?;
                let orgs = erase_user(&self.api, tx, event.org_id, &erased.user_id).await?;
                tracing::info!(event_id = %event.id, user_id = %erased.user_id, orgs, "erased user's relationships deleted");
                return Ok(());
            }
            let org = event.org_id.to_string();
            let changes = org_relationships::changes_for_event(&event.envelope.r#type, &org, payload)
                .map_err(|e| Error::invalid_argument("EVENT_PAYLOAD_INVALID", e))?;
            for change in &changes {
                let applied = apply(&self.api, tx, event.org_id, change).await?;
                tracing::debug!(event_id = %event.id, source = ?change.source, applied, "identity fact applied");
            }
            Ok(())
        })
    }
}

fn tuple(u: &org_relationships::Update) -> Tuple {
    Tuple {
        resource: ObjectRef::new(&u.resource.ty, &u.resource.id),
        relation: u.relation.clone(),
        subject: SubjectRef {
            ty: u.subject.ty.clone(),
            id: u.subject.id.clone(),
            relation: u.subject.relation.clone(),
        },
    }
}

/// Applies one change in the transaction; false when the guard skipped it.
async fn apply(api: &PermissionsApi, tx: &mut Tx, org: uuid::Uuid, change: &Change) -> Result<bool> {
    if let Some((key, version)) = &change.source
        && !store::claim_source_version(tx, org, key, *version, true).await?
    {
        return Ok(false);
    }
    let mut updates: Vec<(Operation, Tuple)> = Vec::new();
    for u in &change.updates {
        let t = tuple(u);
        let op = match u.op {
            Op::Touch => Operation::Touch,
            Op::Delete => Operation::Delete,
        };
        if !updates.iter().any(|(_, x)| *x == t) {
            updates.push((op, t));
        }
    }
    for clear in &change.clears {
        let (object, as_subject) = match clear {
            Clear::Subject(r) => (r, true),
            Clear::Resource(r) => (r, false),
        };
        for t in store::relationships_of_object(tx, org, &object.ty, &object.id, as_subject).await? {
            if !updates.iter().any(|(_, x)| *x == t) {
                updates.push((Operation::Delete, t));
            }
        }
    }
    if updates.is_empty() {
        return Ok(true);
    }
    let schema = api.schema().await?;
    match store::write(tx, org, &schema, &updates, &[], "service:identity").await {
        Ok(written) => {
            // Cached answers that read these relations go, here and on the other replicas.
            if written.changed {
                let keys = updates
                    .iter()
                    .map(|(_, t)| (t.resource.ty.clone(), t.resource.id.clone(), t.relation.clone()))
                    .collect();
                api.cache()
                    .written(crate::cache::Invalidation {
                        org_id: org,
                        revision: written.revision,
                        keys,
                        schema: false,
                    })
                    .await;
            }
            Ok(true)
        }
        Err(WriteError::Store(e)) => Err(Error::internal(anyhow::anyhow!(e))),
        // Not retryable: the schema does not admit the fact (identity's schema is not registered
        // yet is the usual cause, which a retry does fix; the delivery limit bounds it).
        Err(e) => Err(Error::unavailable("IDENTITY_FACT_REJECTED", format!("{e:?}"))),
    }
}
