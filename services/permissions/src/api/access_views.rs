//! MyAccess and AccessAudit (spec "End-user access"): what the caller can reach in a namespace,
//! and who has access to one object and why. Both answer from one snapshot with one evaluator,
//! and AccessAudit's paths come from [`crate::explain`], so they never disagree with Check
//! (rule 21).

use std::collections::{BTreeMap, BTreeSet};

use tonic::{Request, Response, Status};
use trellis_kit::RequestContext;
use trellis_kit::error::Error;
use trellis_kit::paging::{self, PageTokens};
use trellis_proto::trellis::permissions::v1 as proto;

use super::{MAX_LOOKUP, PermissionsApi, end_user, eval_error, relationship, subject_ref, token};
use crate::eval::{DEFAULT_MAX_DEPTH, Evaluator, ObjectRef, SubjectRef};
use crate::explain;
use crate::schema::{Definition, ORG_DEFINITION};
use crate::store::{self, Filter, PgReader};

/// Most relationships AccessAudit lists in `direct`.
pub const MAX_DIRECT: usize = 1000;
/// The principal types AccessAudit lists.
const AUDITED_TYPES: [&str; 2] = ["user", "api_key"];

/// Declared (not generated) relations and permissions of `def`, in source order.
fn declared(def: &Definition, relations: bool) -> impl Iterator<Item = &String> {
    def.order.iter().filter(move |n| {
        !def.generated.contains(*n)
            && if relations { def.relations.contains_key(*n) } else { def.permissions.contains_key(*n) }
    })
}

fn unknown_namespace(ns: &str) -> Error {
    Error::invalid_argument("UNKNOWN_TYPE", format!("Unknown namespace `{ns}`")).with_field("namespace", "unknown type")
}

impl PermissionsApi {
    /// MyAccess: the objects of `namespace` the caller holds a relation or permission on.
    pub(super) async fn my_access(
        &self,
        ctx: &RequestContext,
        req: proto::MyAccessRequest,
    ) -> Result<proto::MyAccessResponse, Error> {
        let me = end_user(ctx).ok_or_else(|| {
            Error::permission_denied("USER_TOKEN_REQUIRED", "MyAccess answers for users and API keys")
        })?;
        let org = ctx.org_id()?;
        let size = paging::page_size(req.page_size)? as usize;
        let order = req.order_by.trim();
        if !order.is_empty() && order != "object_id" {
            return Err(Error::validation("order_by", "only `object_id` is supported"));
        }
        let schema = self.schema().await?;
        let def = schema.definition(&req.namespace).ok_or_else(|| unknown_namespace(&req.namespace))?;
        if !req.permission.is_empty() && (!def.has(&req.permission) || def.generated.contains(&req.permission)) {
            return Err(Error::invalid_argument(
                "UNKNOWN_PERMISSION",
                format!("`{}` has no permission `{}`", req.namespace, req.permission),
            )
            .with_field("permission", "not a permission of this namespace"));
        }
        let query = PageTokens::query_hash(&[&org.to_string(), &me.to_string(), &req.namespace, &req.permission]);
        let after: Option<String> = self.pages.decode(&query, &req.page_token)?;
        let names: Vec<String> = if req.permission.is_empty() {
            declared(def, true).chain(declared(def, false)).cloned().collect()
        } else {
            vec![req.permission.clone()]
        };
        let mut tx = store::snapshot(&self.db, org).await.map_err(Error::internal)?;
        let mut ev = Evaluator::new(&schema, PgReader::new(&mut tx, org), DEFAULT_MAX_DEPTH);
        let mut ids: BTreeSet<String> = BTreeSet::new();
        for n in &names {
            let (found, _) = ev.lookup_resources(&req.namespace, n, &me, None, MAX_LOOKUP).await.map_err(eval_error)?;
            ids.extend(found);
        }
        let total_size = ids.len() as i32;
        let mut page: Vec<String> =
            ids.into_iter().filter(|id| after.as_ref().is_none_or(|a| id > a)).take(size + 1).collect();
        let more = page.len() > size;
        page.truncate(size);
        let mut objects = Vec::with_capacity(page.len());
        for id in &page {
            let obj = ObjectRef::new(&req.namespace, id);
            let mut relations = Vec::new();
            for r in declared(def, true) {
                if ev.check(&obj, r, &me).await.map_err(eval_error)? {
                    relations.push(r.clone());
                }
            }
            let mut permissions = Vec::new();
            for p in declared(def, false) {
                if ev.check(&obj, p, &me).await.map_err(eval_error)? {
                    permissions.push(p.clone());
                }
            }
            objects.push(proto::AccessibleObject { object_id: id.clone(), relations, permissions });
        }
        drop(ev);
        tx.commit().await.map_err(Error::internal)?;
        let next_page_token = match page.last() {
            Some(last) if more => self.pages.encode(&query, last),
            _ => String::new(),
        };
        Ok(proto::MyAccessResponse { objects, next_page_token, total_size })
    }

    /// AccessAudit: the object's relationships, and every user and API key with a permission on
    /// it, each permission with the path that grants it.
    pub(super) async fn access_audit(
        &self,
        ctx: &RequestContext,
        req: proto::AccessAuditRequest,
    ) -> Result<proto::AccessAuditResponse, Error> {
        let org = ctx.org_id()?;
        let size = paging::page_size(req.page_size)? as usize;
        let schema = self.schema().await?;
        let def = schema.definition(&req.namespace).ok_or_else(|| unknown_namespace(&req.namespace))?;
        if !store::valid_object_id(&req.object_id) {
            return Err(Error::validation("object_id", "must match ^[A-Za-z0-9/_|\\-=+@.:]{1,128}$"));
        }
        let obj = ObjectRef::new(&req.namespace, &req.object_id);
        let query = PageTokens::query_hash(&[&org.to_string(), &req.namespace, &req.object_id]);
        let after: Option<(String, String)> = self.pages.decode(&query, &req.page_token)?;
        let mut tx = store::snapshot(&self.db, org).await.map_err(Error::internal)?;
        let revision = store::revision(&mut tx, org).await.map_err(Error::internal)?;
        let mut ev = Evaluator::new(&schema, PgReader::new(&mut tx, org), DEFAULT_MAX_DEPTH);
        // Who may audit: `share` on the object, or organization#administer.
        if let Some(me) = end_user(ctx) {
            let sharer =
                def.permissions.contains_key("share") && ev.check(&obj, "share", &me).await.map_err(eval_error)?;
            let admin = sharer
                || ev
                    .check(&ObjectRef::new(ORG_DEFINITION, org.to_string()), "administer", &me)
                    .await
                    .map_err(eval_error)?;
            if !admin {
                return Err(Error::permission_denied(
                    "PERMISSION_DENIED",
                    format!("Auditing {obj} needs `share` on it or organization#administer"),
                ));
            }
        } else {
            super::service_name(ctx)?;
        }
        let permissions: Vec<String> = declared(def, false).cloned().collect();
        // Every principal with a permission, and which permissions; `*` (everyone of a type)
        // carries the ids its exclusions remove.
        let mut holders: BTreeMap<(String, String), (Vec<String>, Vec<String>)> = BTreeMap::new();
        for ty in AUDITED_TYPES {
            for p in &permissions {
                for f in ev.lookup_subjects(&obj, p, ty, "").await.map_err(eval_error)? {
                    let entry = holders.entry((ty.to_owned(), f.id)).or_default();
                    entry.0.push(p.clone());
                    for x in f.excluded {
                        if !entry.1.contains(&x) {
                            entry.1.push(x);
                        }
                    }
                }
            }
        }
        let total_size = holders.len() as i32;
        let mut page: Vec<_> =
            holders.into_iter().filter(|(k, _)| after.as_ref().is_none_or(|a| k > a)).take(size + 1).collect();
        let more = page.len() > size;
        page.truncate(size);
        let mut subjects = Vec::with_capacity(page.len());
        for ((ty, id), (perms, excluded)) in &page {
            let s = SubjectRef::new(ty, id);
            let mut grants = Vec::with_capacity(perms.len());
            for p in perms {
                let explained = explain::explain(&mut ev, &schema, &obj, p, &s).await.map_err(eval_error)?;
                grants.push(proto::AccessGrant { permission: p.clone(), path: explain::grant_path(&explained.tree) });
            }
            subjects.push(proto::AuditedSubject {
                subject: Some(subject_ref(&s)),
                permissions: perms.clone(),
                grants,
                excluded_subject_ids: excluded.clone(),
            });
        }
        drop(ev);
        let filter = Filter {
            resource_type: req.namespace.clone(),
            resource_id: Some(req.object_id.clone()),
            ..Default::default()
        };
        let direct = store::read_page(&mut tx, org, &filter, None, MAX_DIRECT).await.map_err(Error::internal)?;
        tx.commit().await.map_err(Error::internal)?;
        let next_page_token = match page.last() {
            Some((k, _)) if more => self.pages.encode(&query, k),
            _ => String::new(),
        };
        Ok(proto::AccessAuditResponse {
            direct: direct.iter().map(relationship).collect(),
            subjects,
            next_page_token,
            total_size,
            audited_at: token(org, revision),
        })
    }
}

/// The tonic entry points (called from the AccessService impl).
pub(super) async fn my_access(
    api: &PermissionsApi,
    request: Request<proto::MyAccessRequest>,
) -> Result<Response<proto::MyAccessResponse>, Status> {
    let ctx = RequestContext::from_request(&request)?.clone();
    Ok(Response::new(api.my_access(&ctx, request.into_inner()).await?))
}

pub(super) async fn access_audit(
    api: &PermissionsApi,
    request: Request<proto::AccessAuditRequest>,
) -> Result<Response<proto::AccessAuditResponse>, Status> {
    let ctx = RequestContext::from_request(&request)?.clone();
    Ok(Response::new(api.access_audit(&ctx, request.into_inner()).await?))
}
