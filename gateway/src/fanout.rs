//! The fan-out endpoints: global search, entity resolve and counts over every enabled module.
//!
//! `trellis.gateway.v1.FanoutService` is served inside the gateway on an in-process channel that
//! [`Upstreams`] knows as the module `gateway`, so its routes go through the same admission,
//! transcoding, gRPC-web and passthrough as every other method. Each call fans out to
//! `trellis.common.v1.EntityService` on the modules that own the requested entity types (read
//! from `(trellis.common.v1.entity_type)` on resource messages), in parallel, with the caller's own
//! token, each bounded by `FANOUT_TIMEOUT`. A module that fails or times out is named in
//! `unavailable_modules`; when every module called failed, the answer is UNAVAILABLE. An API key
//! without a type's read scope (`<collection>:read`) never reaches that type's module.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use hyper_util::rt::TokioIo;
use prost_reflect::{DescriptorPool, Value};
use tokio::sync::mpsc;
use tokio_stream::StreamExt as _;
use tokio_util::sync::CancellationToken;
use tonic::metadata::MetadataMap;
use tonic::transport::{Channel, Endpoint, Server};
use tonic::{Request, Response, Status};
use trellis_kit::auth::{Authenticator, bearer, context_from_claims};
use trellis_kit::error::Violations;
use trellis_kit::{Error, Subject};
use trellis_proto::trellis::common::v1 as common;
use trellis_proto::trellis::common::v1::entity_service_client::EntityServiceClient;
use trellis_proto::trellis::gateway::v1 as pb;
use trellis_proto::trellis::gateway::v1::fanout_service_server::{FanoutService, FanoutServiceServer};

use crate::auth::scope_satisfied;
use crate::upstream::Upstreams;

/// The module name of the fan-out service (package `trellis.gateway.v1`).
pub const MODULE: &str = "gateway";
/// Most references per Resolve.
pub const MAX_REFS: usize = 100;
/// Search items per type when the caller names no limit, and the most allowed.
pub const DEFAULT_LIMIT: i32 = 10;
pub const MAX_LIMIT: i32 = 50;
/// Longest search text, in characters.
pub const MAX_QUERY_CHARS: usize = 200;

/// An entity type as a resource message declares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntityType {
    pub name: String,
    pub collection: String,
    pub module: String,
}

/// Every entity type of the contract, by name.
#[derive(Debug, Clone, Default)]
pub struct EntityTypes(BTreeMap<String, EntityType>);

impl EntityTypes {
    /// Reads `(trellis.common.v1.entity_type)` from every message of `pool`.
    pub fn from_pool(pool: &DescriptorPool) -> Self {
        let mut types = BTreeMap::new();
        let Some(ext) = pool.get_extension_by_name("trellis.common.v1.entity_type") else {
            return Self(types);
        };
        for message in pool.all_messages() {
            let options = message.options();
            if !options.has_extension(&ext) {
                continue;
            }
            let value = options.get_extension(&ext);
            let Value::Message(declared) = value.as_ref() else { continue };
            let text = |field: &str| {
                declared.get_field_by_name(field).and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
            };
            let ty = EntityType { name: text("type"), collection: text("collection"), module: text("module") };
            if !ty.name.is_empty() && !ty.module.is_empty() {
                types.insert(ty.name.clone(), ty);
            }
        }
        Self(types)
    }

    /// A set of types (tests).
    pub fn new(types: impl IntoIterator<Item = EntityType>) -> Self {
        Self(types.into_iter().map(|t| (t.name.clone(), t)).collect())
    }

    pub fn get(&self, name: &str) -> Option<&EntityType> {
        self.0.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &EntityType> {
        self.0.values()
    }
}

/// What the fan-out needs from the gateway.
#[derive(Debug, Clone)]
pub struct Fanout {
    types: Arc<EntityTypes>,
    upstreams: Upstreams,
    auth: Arc<Authenticator>,
    /// Enabled modules; `None` = all.
    modules: Option<Vec<String>>,
    timeout: Duration,
}

/// The caller as the fan-out sees it: the metadata to forward and, for API keys, their scopes.
struct Caller {
    metadata: MetadataMap,
    scopes: Option<Vec<String>>,
}

/// A call to one module failed; it is reported in `unavailable_modules`.
struct Unavailable;

/// Metadata forwarded to modules: the credential and the tracing/locale context, nothing else.
const FORWARDED: [&str; 6] =
    ["authorization", "x-correlation-id", "traceparent", "tracestate", "accept-language", "x-client-ip"];

impl Fanout {
    pub fn new(
        types: EntityTypes,
        upstreams: Upstreams,
        auth: Arc<Authenticator>,
        modules: Option<Vec<String>>,
        timeout: Duration,
    ) -> Self {
        Self { types: Arc::new(types), upstreams, auth, modules, timeout }
    }

    fn enabled(&self, module: &str) -> bool {
        self.upstreams.has(module) && self.modules.as_ref().is_none_or(|m| m.iter().any(|x| x == module))
    }

    async fn caller<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        let headers = request.metadata().clone().into_headers();
        let token = bearer(&headers).ok_or_else(|| Status::unauthenticated("Authentication required"))?;
        let claims = self.auth.verify(token).await?;
        let context = context_from_claims(claims, token, String::new())?;
        let mut metadata = MetadataMap::new();
        for name in FORWARDED {
            if let Some(value) = request.metadata().get(name) {
                metadata.insert(name, value.clone());
            }
        }
        let scopes = matches!(context.subject, Subject::ApiKey(_)).then_some(context.scopes);
        Ok(Caller { metadata, scopes })
    }

    /// Types the caller asked for (all when `requested` is empty), restricted to enabled modules
    /// and, for API keys, to the read scopes they hold. An unknown type is INVALID_ARGUMENT.
    fn selected_types(&self, field: &str, requested: &[String], caller: &Caller) -> Result<Vec<&EntityType>, Status> {
        let names: Vec<&str> =
            requested.iter().flat_map(|t| t.split(',')).map(str::trim).filter(|t| !t.is_empty()).collect();
        let mut selected = Vec::new();
        if names.is_empty() {
            selected.extend(self.types.iter().filter(|t| self.enabled(&t.module)));
        } else {
            for name in names {
                match self.types.get(name).filter(|t| self.enabled(&t.module)) {
                    Some(t) if !selected.contains(&t) => selected.push(t),
                    Some(_) => {}
                    None => return Err(unknown_type(field, name)),
                }
            }
        }
        if let Some(scopes) = &caller.scopes {
            selected.retain(|t| scope_satisfied(scopes, &format!("{}:read", t.collection)));
        }
        Ok(selected)
    }

    /// Calls `call` on every module of `types` in parallel, each bounded by the fan-out timeout.
    async fn each_module<'t, R, F, Fut>(
        &self,
        types: &[&'t EntityType],
        caller: &Caller,
        call: F,
    ) -> Vec<(String, Vec<&'t EntityType>, Result<R, Unavailable>)>
    where
        F: Fn(EntityServiceClient<Channel>, Request<()>, Vec<&'t EntityType>) -> Fut,
        Fut: std::future::Future<Output = Result<R, Status>>,
    {
        let mut by_module: BTreeMap<&str, Vec<&EntityType>> = BTreeMap::new();
        for t in types {
            by_module.entry(t.module.as_str()).or_default().push(t);
        }
        let calls = by_module.into_iter().map(|(module, types)| {
            let channel = self.upstreams.channel(module);
            let request = Request::from_parts(caller.metadata.clone(), tonic::Extensions::default(), ());
            let fut = channel.map(|c| call(EntityServiceClient::new(c), request, types.clone()));
            let timeout = self.timeout;
            async move {
                let outcome = match fut {
                    None => Err(Unavailable),
                    Some(fut) => match tokio::time::timeout(timeout, fut).await {
                        Ok(Ok(r)) => Ok(r),
                        Ok(Err(status)) => {
                            tracing::warn!(module, code = ?status.code(), message = status.message(), "fan-out call failed");
                            Err(Unavailable)
                        }
                        Err(_) => {
                            tracing::warn!(module, "fan-out call timed out");
                            Err(Unavailable)
                        }
                    },
                };
                if outcome.is_err() {
                    crate::metrics::GatewayMetrics::global().fanout_module_error(module);
                }
                (module.to_string(), types, outcome)
            }
        });
        join_all(calls).await
    }
}

fn unknown_type(field: &str, name: &str) -> Status {
    Error::invalid_argument("UNKNOWN_ENTITY_TYPE", format!("Unknown entity type `{name}`"))
        .with_field(field, format!("`{name}` is not an entity type of an enabled module"))
        .into()
}

/// Swaps the unit message of a prepared request for `message`, keeping the metadata.
fn with_message<T>(request: Request<()>, message: T) -> Request<T> {
    let (metadata, extensions, ()) = request.into_parts();
    Request::from_parts(metadata, extensions, message)
}

fn all_failed<R>(outcomes: &[(String, Vec<&EntityType>, Result<R, Unavailable>)]) -> bool {
    !outcomes.is_empty() && outcomes.iter().all(|(_, _, r)| r.is_err())
}

fn unavailable_modules<R>(outcomes: &[(String, Vec<&EntityType>, Result<R, Unavailable>)]) -> Vec<String> {
    outcomes.iter().filter(|(_, _, r)| r.is_err()).map(|(m, _, _)| m.clone()).collect()
}

fn every_module_failed() -> Status {
    Error::unavailable("MODULES_UNAVAILABLE", "No module answered; try again shortly").into()
}

#[tonic::async_trait]
impl FanoutService for Fanout {
    async fn search(&self, request: Request<pb::SearchRequest>) -> Result<Response<pb::SearchResponse>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        let q = req.q.trim().to_string();
        let mut v = Violations::default();
        v.check(!q.is_empty(), "q", "Required");
        v.check(q.chars().count() <= MAX_QUERY_CHARS, "q", "At most 200 characters");
        v.check(req.limit >= 0, "limit", "Must not be negative");
        v.finish()?;
        let limit = if req.limit == 0 { DEFAULT_LIMIT } else { req.limit.min(MAX_LIMIT) };
        let types = self.selected_types("type", &req.r#type, &caller)?;
        let filter = req.filter;
        let outcomes = self
            .each_module(&types, &caller, |mut client, prepared, types| {
                let message = common::SearchRequest {
                    query: q.clone(),
                    types: types.iter().map(|t| t.name.clone()).collect(),
                    limit,
                    filter: filter.clone(),
                };
                async move { client.search(with_message(prepared, message)).await.map(Response::into_inner) }
            })
            .await;
        if all_failed(&outcomes) {
            return Err(every_module_failed());
        }
        let unavailable_modules = unavailable_modules(&outcomes);
        let mut groups: Vec<(f64, usize, pb::SearchGroup)> = Vec::new();
        for (_, asked, outcome) in outcomes {
            let Ok(answer) = outcome else { continue };
            for group in answer.groups {
                // A module answers only for the types it was asked about.
                if group.items.is_empty() || !asked.iter().any(|t| t.name == group.r#type) {
                    continue;
                }
                let mut items = group.items;
                items.truncate(limit as usize);
                let best = items.iter().map(|i| i.rank).fold(f64::NEG_INFINITY, f64::max);
                let order = groups.len();
                groups.push((best, order, pb::SearchGroup { r#type: group.r#type, items }));
            }
        }
        // Best rank first; ties keep module order.
        groups.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        Ok(Response::new(pb::SearchResponse {
            groups: groups.into_iter().map(|(_, _, g)| g).collect(),
            unavailable_modules,
        }))
    }

    async fn resolve(&self, request: Request<pb::ResolveRequest>) -> Result<Response<pb::ResolveResponse>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        let refs = requested_refs(req)?;
        // Validate every type before calling anyone.
        let mut types = Vec::new();
        for (i, r) in refs.iter().enumerate() {
            let t = self.selected_types(&format!("refs[{i}].type"), std::slice::from_ref(&r.r#type), &caller)?;
            types.extend(t);
        }
        // Deduplicated, in request order.
        let mut seen = HashSet::new();
        let refs: Vec<common::EntityRef> =
            refs.into_iter().filter(|r| seen.insert((r.r#type.clone(), r.id.clone()))).collect();
        types.dedup_by(|a, b| a.name == b.name);
        let allowed: HashSet<&str> = types.iter().map(|t| t.name.as_str()).collect();
        let outcomes = self
            .each_module(&types, &caller, |mut client, prepared, types| {
                let mine: HashSet<&str> = types.iter().map(|t| t.name.as_str()).collect();
                let message = common::ResolveRequest {
                    refs: refs.iter().filter(|r| mine.contains(r.r#type.as_str())).cloned().collect(),
                };
                async move { client.resolve(with_message(prepared, message)).await.map(Response::into_inner) }
            })
            .await;
        if all_failed(&outcomes) {
            return Err(every_module_failed());
        }
        let unavailable_modules = unavailable_modules(&outcomes);
        let mut found: HashMap<(String, String), common::EntitySummary> = HashMap::new();
        for (_, asked, outcome) in outcomes {
            let Ok(answer) = outcome else { continue };
            for s in answer.summaries {
                if asked.iter().any(|t| t.name == s.r#type) {
                    found.insert((s.r#type.clone(), s.id.clone()), s);
                }
            }
        }
        let mut summaries = Vec::new();
        let mut missing = Vec::new();
        for r in refs {
            // A type the caller may not read (API-key scopes) is reported missing, like an unknown id.
            match allowed.contains(r.r#type.as_str()).then(|| found.remove(&(r.r#type.clone(), r.id.clone()))).flatten()
            {
                Some(s) => summaries.push(s),
                None => missing.push(r),
            }
        }
        Ok(Response::new(pb::ResolveResponse { summaries, missing, unavailable_modules }))
    }

    async fn counts(&self, request: Request<pb::CountsRequest>) -> Result<Response<pb::CountsResponse>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        let types = self.selected_types("types", &req.types, &caller)?;
        let outcomes = self
            .each_module(&types, &caller, |mut client, prepared, types| {
                let message = common::CountRequest { types: types.iter().map(|t| t.name.clone()).collect() };
                async move { client.count(with_message(prepared, message)).await.map(Response::into_inner) }
            })
            .await;
        if all_failed(&outcomes) {
            return Err(every_module_failed());
        }
        let unavailable_modules = unavailable_modules(&outcomes);
        let mut counts = HashMap::new();
        for (_, asked, outcome) in outcomes {
            let Ok(answer) = outcome else { continue };
            for (collection, n) in answer.counts {
                if asked.iter().any(|t| t.collection == collection) {
                    counts.insert(collection, n);
                }
            }
        }
        Ok(Response::new(pb::CountsResponse { counts, unavailable_modules }))
    }
}

/// `{refs}` or `{type, ids}`, 1–100 of them, each well formed.
fn requested_refs(req: pb::ResolveRequest) -> Result<Vec<common::EntityRef>, Status> {
    let mut v = Violations::default();
    let refs: Vec<common::EntityRef> = if !req.refs.is_empty() {
        v.check(req.r#type.is_empty() && req.ids.is_empty(), "type", "Give either `refs` or `type` with `ids`");
        req.refs
    } else {
        v.check(!req.r#type.trim().is_empty(), "type", "Required with `ids`");
        req.ids.into_iter().map(|id| common::EntityRef { r#type: req.r#type.trim().to_string(), id }).collect()
    };
    let field = if refs.is_empty() || !v.is_empty() { "refs" } else { "ids" };
    v.check(!refs.is_empty(), field, "Give 1 to 100 references");
    v.check(refs.len() <= MAX_REFS, field, "At most 100 references");
    for (i, r) in refs.iter().enumerate() {
        v.check(
            !r.id.trim().is_empty() && r.id.len() <= 64,
            &format!("refs[{i}].id"),
            "Required, at most 64 characters",
        );
    }
    v.finish()?;
    Ok(refs)
}

/// Serves `fanout` on an in-process channel: every connection the channel opens is a fresh
/// in-memory pipe handed to a tonic server that lives until `shutdown`.
pub fn in_process_channel(fanout: Fanout, max_message: usize, shutdown: CancellationToken) -> anyhow::Result<Channel> {
    let (pipes, incoming) = mpsc::channel::<tokio::io::DuplexStream>(16);
    let incoming = tokio_stream::wrappers::ReceiverStream::new(incoming).map(Ok::<_, std::io::Error>);
    let service = FanoutServiceServer::new(fanout).max_decoding_message_size(max_message);
    tokio::spawn(async move {
        let served = Server::builder()
            .add_service(service)
            .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "fan-out service stopped");
        }
    });
    let connector = tower::service_fn(move |_: http::Uri| {
        let pipes = pipes.clone();
        async move {
            let (client, server) = tokio::io::duplex(64 * 1024);
            pipes.send(server).await.map_err(|_| std::io::Error::other("the fan-out service has stopped"))?;
            Ok::<_, std::io::Error>(TokioIo::new(client))
        }
    });
    Ok(Endpoint::from_static("http://fanout.in-process").connect_with_connector_lazy(connector))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_contract_declares_entity_types_with_their_module() {
        let types = EntityTypes::from_pool(trellis_kit::descriptors::pool());
        for t in types.iter() {
            assert!(!t.collection.is_empty(), "{t:?}");
            assert!(trellis_kit::module::SERVICES.contains(&t.module.as_str()), "{t:?}");
        }
    }

    #[test]
    fn resolve_takes_refs_or_a_type_with_ids() {
        let r = |t: &str, id: &str| common::EntityRef { r#type: t.into(), id: id.into() };
        let refs = requested_refs(pb::ResolveRequest { refs: vec![r("task", "1")], ..Default::default() }).unwrap();
        assert_eq!(refs, vec![r("task", "1")]);
        let ids = requested_refs(pb::ResolveRequest {
            r#type: "task".into(),
            ids: vec!["1".into(), "2".into()],
            ..Default::default()
        })
        .unwrap();
        assert_eq!(ids, vec![r("task", "1"), r("task", "2")]);
        for bad in [
            pb::ResolveRequest::default(),
            pb::ResolveRequest { ids: vec!["1".into()], ..Default::default() },
            pb::ResolveRequest { refs: vec![r("task", "1")], r#type: "task".into(), ..Default::default() },
            pb::ResolveRequest { refs: (0..101).map(|i| r("task", &i.to_string())).collect(), ..Default::default() },
            pb::ResolveRequest { refs: vec![r("task", "")], ..Default::default() },
        ] {
            let status = requested_refs(bad.clone()).expect_err(&format!("{bad:?}"));
            assert_eq!(status.code(), tonic::Code::InvalidArgument, "{bad:?}");
        }
    }
}
