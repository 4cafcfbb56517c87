//! Check `with_trace` (spec flow 10): the answer with its explanation tree, computed on a fresh
//! snapshot without the result cache. Users and API keys need organization#administer and are
//! limited to [`TRACES_PER_MINUTE`].

use std::time::Duration;

use trellis_kit::RequestContext;
use trellis_kit::error::Error;
use trellis_proto::trellis::permissions::v1 as proto;

use super::{PermissionsApi, end_user, eval_error, object_ref, permissionship, relationship, token};
use crate::eval::{Evaluator, ObjectRef, SubjectRef};
use crate::explain::{self, Kind, Node};
use crate::store::{self, PgReader};

/// Traces per user (or API key) and minute.
pub const TRACES_PER_MINUTE: u32 = 10;

fn node(n: &Node) -> proto::TraceNode {
    use proto::trace_node::Kind as K;
    let kind = match n.kind {
        Kind::Permission => K::Permission,
        Kind::Relation => K::Relation,
        Kind::Arrow => K::Arrow,
        Kind::Union => K::Union,
        Kind::Intersection => K::Intersection,
        Kind::Exclusion => K::Exclusion,
        Kind::SubjectSet => K::SubjectSet,
        Kind::Wildcard => K::Wildcard,
        Kind::Direct => K::Direct,
    };
    proto::TraceNode {
        resource: Some(object_ref(&n.resource)),
        name: n.name.clone(),
        kind: kind as i32,
        result: n.result,
        cached: n.cached,
        duration_us: n.duration_us.min(u64::from(u32::MAX)) as u32,
        relationship: n.relationship.as_ref().map(relationship),
        children: n.children.iter().map(node).collect(),
    }
}

impl PermissionsApi {
    /// A traced Check: authorized, rate limited, evaluated on a fresh snapshot.
    pub(super) async fn traced_check(
        &self,
        ctx: &RequestContext,
        resource: &ObjectRef,
        permission: &str,
        subject: &SubjectRef,
        depth: u32,
    ) -> Result<proto::CheckResponse, Error> {
        let org = ctx.org_id()?;
        let schema = self.schema().await?;
        let mut tx = store::snapshot(&self.db, org).await.map_err(Error::internal)?;
        let revision = store::revision(&mut tx, org).await.map_err(Error::internal)?;
        let mut ev = Evaluator::new(&schema, PgReader::new(&mut tx, org), depth);
        if let Some(me) = end_user(ctx) {
            let org_object = ObjectRef::new("organization", org.to_string());
            if !ev.check(&org_object, "administer", &me).await.map_err(eval_error)? {
                return Err(Error::permission_denied("PERMISSION_DENIED", "A trace needs organization#administer"));
            }
            if let Some(limiter) = &self.trace_limiter {
                limiter
                    .hit(&format!(":permissions:trace:{org}:{me}"), TRACES_PER_MINUTE, Duration::from_secs(60))
                    .await?;
            }
        }
        let explained = explain::explain(&mut ev, &schema, resource, permission, subject).await.map_err(eval_error)?;
        drop(ev);
        tx.commit().await.map_err(Error::internal)?;
        Ok(proto::CheckResponse {
            permissionship: permissionship(explained.has),
            checked_at: token(org, revision),
            trace: Some(proto::CheckTrace { root: Some(node(&explained.tree)), explanation: explained.explanation }),
        })
    }
}
