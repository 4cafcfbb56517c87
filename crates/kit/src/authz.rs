//! `kit::authz`: the thin client every service uses to ask the permissions service
//! (`trellis.permissions.v1`), and the schema registration of a module at start-up.
//!
//! The permissions gRPC API accepts service principals only, acting in an org. The client
//! therefore takes a [`Credentials`] source that returns a `service:<name>` token for an org
//! (identity's IssueServiceToken in a cell; a test key in tests) and sends it with every call.
//! Consistency: pass the newest `written_at` you hold as `at_least_as_fresh` to read your writes.
//!
//! Every module's [`crate::Runtime`] carries a ready client ([`crate::Runtime::authz`]) whose
//! credentials are [`ServiceTokens`] (identity's IssueServiceToken with the module's derived
//! secret; in `TestCell`, tokens signed by the test key). At start-up, `grpc::launch` registers
//! the module's `schema.zed` in the background (see `register_schema`); readiness does not wait
//! for it, since identity and permissions need each other to register. [`register_scope_resources`]
//! does the same for a module's API-key scope resources with identity.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tonic::transport::Channel;
use tonic::{Code, Request};
use tonic_types::StatusExt;
use trellis_proto::trellis::permissions::v1 as pb;
use trellis_proto::trellis::permissions::v1::check_service_client::CheckServiceClient;
use trellis_proto::trellis::permissions::v1::relationship_service_client::RelationshipServiceClient;
use trellis_proto::trellis::permissions::v1::schema_service_client::SchemaServiceClient;
use uuid::Uuid;

/// A boxed future returned by [`Credentials::token`].
pub type TokenFuture<'a> = Pin<Box<dyn Future<Output = anyhow::Result<String>> + Send + 'a>>;

/// Where the client gets a service token acting in `org` (`None`: no org, for WriteSchema).
pub trait Credentials: Send + Sync + std::fmt::Debug {
    fn token(&self, org: Option<Uuid>) -> TokenFuture<'_>;
}

/// Service tokens from identity's `TokenService.IssueServiceToken`, one per org, each cached
/// until [`TOKEN_REFRESH_MARGIN`] before it expires. The client secret is derived from the cell
/// secret ([`crate::auth::service_client_secret`]).
#[derive(Debug)]
pub struct ServiceTokens {
    client_name: String,
    client_secret: String,
    channel: Channel,
    cache: tokio::sync::Mutex<HashMap<Option<Uuid>, (String, Instant)>>,
}

/// How long before expiry a cached service token is replaced.
pub const TOKEN_REFRESH_MARGIN: Duration = Duration::from_secs(30);

impl ServiceTokens {
    /// Tokens for service `name` from the identity at `config.urls.identity` (lazy connection).
    pub fn new(config: &crate::config::Config, name: &str) -> anyhow::Result<Self> {
        let channel = tonic::transport::Endpoint::from_shared(config.urls.identity.clone())?
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(5))
            .connect_lazy();
        Ok(Self {
            client_name: name.to_owned(),
            client_secret: crate::auth::service_client_secret(&config.cell_secret, name),
            channel,
            cache: tokio::sync::Mutex::new(HashMap::new()),
        })
    }

    async fn issue(&self, org: Option<Uuid>) -> anyhow::Result<String> {
        use trellis_proto::trellis::identity::v1::IssueServiceTokenRequest;
        use trellis_proto::trellis::identity::v1::token_service_client::TokenServiceClient;
        // One lock: concurrent callers for the same org wait for one issue instead of many.
        let mut cache = self.cache.lock().await;
        if let Some((token, expires)) = cache.get(&org)
            && Instant::now() + TOKEN_REFRESH_MARGIN < *expires
        {
            return Ok(token.clone());
        }
        let request = IssueServiceTokenRequest {
            client_name: self.client_name.clone(),
            client_secret: self.client_secret.clone(),
            org_id: org.map(|o| o.to_string()).unwrap_or_default(),
        };
        let issued = TokenServiceClient::new(self.channel.clone()).issue_service_token(request).await?.into_inner();
        let lifetime = Duration::from_secs(u64::try_from(issued.expires_in).unwrap_or(0));
        cache.insert(org, (issued.access_token.clone(), Instant::now() + lifetime));
        Ok(issued.access_token)
    }
}

impl Credentials for ServiceTokens {
    fn token(&self, org: Option<Uuid>) -> TokenFuture<'_> {
        Box::pin(self.issue(org))
    }
}

/// `type:id`, `type:id#relation` as the client speaks them.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Ref {
    pub ty: String,
    pub id: String,
    /// Empty for a plain object or subject.
    pub relation: String,
}

impl Ref {
    pub fn new(ty: impl Into<String>, id: impl Into<String>) -> Self {
        Self { ty: ty.into(), id: id.into(), relation: String::new() }
    }
    pub fn set(ty: impl Into<String>, id: impl Into<String>, relation: impl Into<String>) -> Self {
        Self { ty: ty.into(), id: id.into(), relation: relation.into() }
    }
    fn object(&self) -> pb::ObjectReference {
        pb::ObjectReference { object_type: self.ty.clone(), object_id: self.id.clone() }
    }
    fn subject(&self) -> pb::SubjectReference {
        pb::SubjectReference { object: Some(self.object()), optional_relation: self.relation.clone() }
    }
}

/// The permissions client of one service.
#[derive(Clone, Debug)]
pub struct Authz {
    channel: Channel,
    credentials: Arc<dyn Credentials>,
}

fn authed<T>(message: T, token: &str) -> anyhow::Result<Request<T>> {
    let mut r = Request::new(message);
    r.metadata_mut().insert("authorization", format!("Bearer {token}").parse()?);
    Ok(r)
}

fn consistency(at_least_as_fresh: Option<&str>) -> Option<pb::Consistency> {
    at_least_as_fresh.map(|t| pb::Consistency {
        requirement: Some(pb::consistency::Requirement::AtLeastAsFresh(pb::ZedToken { token: t.to_owned() })),
    })
}

impl Authz {
    /// A client of the permissions service at `url` (lazy: connects on first use).
    pub fn new(url: &str, credentials: Arc<dyn Credentials>) -> anyhow::Result<Self> {
        Ok(Self { channel: Channel::from_shared(url.to_owned())?.connect_lazy(), credentials })
    }

    /// Whether `subject` holds `permission` on `resource` in `org`. Errors (including
    /// UNAVAILABLE) are returned, never turned into `false`; callers treat an error as deny.
    pub async fn check(
        &self,
        org: Uuid,
        resource: &Ref,
        permission: &str,
        subject: &Ref,
        at_least_as_fresh: Option<&str>,
    ) -> Result<bool, tonic::Status> {
        let token = self.token(Some(org)).await?;
        let req = pb::CheckRequest {
            resource: Some(resource.object()),
            permission: permission.to_owned(),
            subject: Some(subject.subject()),
            consistency: consistency(at_least_as_fresh),
            max_depth: 0,
            with_trace: false,
        };
        let r = CheckServiceClient::new(self.channel.clone()).check(request(req, &token)?).await?.into_inner();
        Ok(r.permissionship == pb::Permissionship::HasPermission as i32)
    }

    /// Many checks at one snapshot; each item is its own result.
    pub async fn check_bulk(
        &self,
        org: Uuid,
        items: &[(Ref, String, Ref)],
        at_least_as_fresh: Option<&str>,
    ) -> Result<Vec<Result<bool, String>>, tonic::Status> {
        let token = self.token(Some(org)).await?;
        let req = pb::CheckBulkRequest {
            items: items
                .iter()
                .map(|(r, p, s)| pb::CheckBulkItem {
                    resource: Some(r.object()),
                    permission: p.clone(),
                    subject: Some(s.subject()),
                })
                .collect(),
            consistency: consistency(at_least_as_fresh),
        };
        let r = CheckServiceClient::new(self.channel.clone()).check_bulk(request(req, &token)?).await?.into_inner();
        Ok(r.results
            .into_iter()
            .map(|x| {
                if x.error_reason.is_empty() {
                    Ok(x.permissionship == pb::Permissionship::HasPermission as i32)
                } else {
                    Err(x.error_reason)
                }
            })
            .collect())
    }

    /// Every id of `resource_type` on which `subject` holds `permission`, following the cursor
    /// until the end (pages of `page` ids, at most 10,000).
    pub async fn lookup_resources(
        &self,
        org: Uuid,
        resource_type: &str,
        permission: &str,
        subject: &Ref,
        page: u32,
        at_least_as_fresh: Option<&str>,
    ) -> Result<Vec<String>, tonic::Status> {
        let token = self.token(Some(org)).await?;
        let mut client = CheckServiceClient::new(self.channel.clone());
        let page = page.clamp(1, 10_000);
        let mut out = Vec::new();
        let mut cursor = String::new();
        loop {
            let req = pb::LookupResourcesRequest {
                resource_type: resource_type.to_owned(),
                permission: permission.to_owned(),
                subject: Some(subject.subject()),
                consistency: consistency(at_least_as_fresh),
                limit: page,
                cursor: cursor.clone(),
                allow_org_wide: false,
            };
            let mut stream = client.lookup_resources(request(req, &token)?).await?.into_inner();
            let mut n = 0;
            while let Some(m) = stream.message().await? {
                n += 1;
                cursor = m.after_cursor;
                out.push(m.resource_id);
            }
            if n < page {
                return Ok(out);
            }
        }
    }

    /// TOUCHes (upserts) relationships `resource#relation@subject` in `org`; returns `written_at`.
    pub async fn touch(&self, org: Uuid, relationships: &[(Ref, String, Ref)]) -> Result<String, tonic::Status> {
        self.write(org, pb::Operation::Touch, relationships).await
    }

    /// DELETEs relationships in `org`; returns `written_at`.
    pub async fn delete(&self, org: Uuid, relationships: &[(Ref, String, Ref)]) -> Result<String, tonic::Status> {
        self.write(org, pb::Operation::Delete, relationships).await
    }

    async fn write(&self, org: Uuid, op: pb::Operation, rels: &[(Ref, String, Ref)]) -> Result<String, tonic::Status> {
        let token = self.token(Some(org)).await?;
        let req = pb::WriteRelationshipsRequest {
            updates: rels
                .iter()
                .map(|(r, rel, s)| pb::RelationshipUpdate {
                    operation: op as i32,
                    relationship: Some(pb::Relationship {
                        resource: Some(r.object()),
                        relation: rel.clone(),
                        subject: Some(s.subject()),
                    }),
                })
                .collect(),
            preconditions: Vec::new(),
            source_version: None,
        };
        let r = RelationshipServiceClient::new(self.channel.clone()).write_relationships(request(req, &token)?).await?;
        Ok(r.into_inner().written_at.map(|t| t.token).unwrap_or_default())
    }

    /// Applies one [`Change`](crate::org_relationships::Change) in `org` as a single write with
    /// its source-version guard. Its `clears` are not expressible here and are left to the
    /// permissions service's consumer of the same fact. Returns `(written_at, skipped)`; a change
    /// without updates is not sent.
    pub async fn write_change(
        &self,
        org: Uuid,
        change: &crate::org_relationships::Change,
    ) -> Result<(String, bool), tonic::Status> {
        if change.updates.is_empty() {
            return Ok((String::new(), true));
        }
        self.write_request(org, change_request(change)).await
    }

    /// Sends a prepared WriteRelationships request in `org` (a staged [`change_request`]).
    /// Returns `(written_at, skipped)`.
    pub async fn write_request(
        &self,
        org: Uuid,
        req: pb::WriteRelationshipsRequest,
    ) -> Result<(String, bool), tonic::Status> {
        let token = self.token(Some(org)).await?;
        let r = RelationshipServiceClient::new(self.channel.clone())
            .write_relationships(request(req, &token)?)
            .await?
            .into_inner();
        Ok((r.written_at.map(|t| t.token).unwrap_or_default(), r.skipped))
    }

    /// The relationships of `resource` (every relation when `relation` is empty), all pages.
    pub async fn read_relationships(
        &self,
        org: Uuid,
        resource: &Ref,
        relation: &str,
        at_least_as_fresh: Option<&str>,
    ) -> Result<Vec<(Ref, String, Ref)>, tonic::Status> {
        let token = self.token(Some(org)).await?;
        let mut client = RelationshipServiceClient::new(self.channel.clone());
        let mut out = Vec::new();
        let mut page_token = String::new();
        loop {
            let req = pb::ReadRelationshipsRequest {
                filter: Some(pb::RelationshipFilter {
                    resource_type: resource.ty.clone(),
                    optional_resource_id: resource.id.clone(),
                    optional_relation: relation.to_owned(),
                    ..Default::default()
                }),
                consistency: consistency(at_least_as_fresh),
                page_size: 1000,
                page_token: page_token.clone(),
            };
            let r = client.read_relationships(request(req, &token)?).await?.into_inner();
            for rel in r.relationships {
                let object =
                    |o: Option<pb::ObjectReference>| o.map(|o| (o.object_type, o.object_id)).unwrap_or_default();
                let (rt, rid) = object(rel.resource);
                let (subject, subject_relation) =
                    rel.subject.map(|s| (object(s.object), s.optional_relation)).unwrap_or_default();
                out.push((Ref::new(rt, rid), rel.relation, Ref::set(subject.0, subject.1, subject_relation)));
            }
            if r.next_page_token.is_empty() {
                return Ok(out);
            }
            page_token = r.next_page_token;
        }
    }

    /// Registers `module`'s schema once (WriteSchema). Returns whether it changed.
    pub async fn write_schema(&self, module: &str, schema: &str) -> Result<bool, tonic::Status> {
        let token = self.token(None).await?;
        let req = pb::WriteSchemaRequest { module: module.to_owned(), schema: schema.to_owned(), dry_run: false };
        Ok(SchemaServiceClient::new(self.channel.clone())
            .write_schema(request(req, &token)?)
            .await?
            .into_inner()
            .changed)
    }

    /// Registers `module`'s schema, retrying with backoff (up to `max_wait` between attempts)
    /// while the permissions service is unavailable or a dependency (identity) is not registered
    /// yet. Any other error (an invalid schema) is returned at once.
    pub async fn register_schema(&self, module: &str, schema: &str, max_wait: Duration) -> Result<bool, tonic::Status> {
        let mut wait = Duration::from_millis(100);
        loop {
            match self.write_schema(module, schema).await {
                Ok(changed) => return Ok(changed),
                Err(e) if retryable(&e) => {
                    tracing::info!(module, code = ?e.code(), reason = %reason(&e), "schema registration retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(max_wait);
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn token(&self, org: Option<Uuid>) -> Result<String, tonic::Status> {
        self.credentials.token(org).await.map_err(|e| tonic::Status::unavailable(format!("no service token: {e}")))
    }
}

fn request<T>(message: T, token: &str) -> Result<Request<T>, tonic::Status> {
    authed(message, token).map_err(|e| tonic::Status::internal(e.to_string()))
}

/// The WriteRelationships request of one change: its updates and its source-version guard (the
/// `clears` are not expressible here).
pub fn change_request(change: &crate::org_relationships::Change) -> pb::WriteRelationshipsRequest {
    use crate::org_relationships::Op;
    pb::WriteRelationshipsRequest {
        updates: change
            .updates
            .iter()
            .map(|u| pb::RelationshipUpdate {
                operation: match u.op {
                    Op::Touch => pb::Operation::Touch,
                    Op::Delete => pb::Operation::Delete,
                } as i32,
                relationship: Some(pb::Relationship {
                    resource: Some(u.resource.object()),
                    relation: u.relation.clone(),
                    subject: Some(u.subject.subject()),
                }),
            })
            .collect(),
        preconditions: Vec::new(),
        source_version: change
            .source
            .as_ref()
            .map(|(key, version)| pb::SourceVersion { key: key.clone(), version: *version }),
    }
}

/// The routing key under which `module` stages its relationship writes
/// (`tasks.relationships.changed`); only the module's own [`relationship_writes`] consumer binds it.
pub fn relationships_event_type(module: &str) -> String {
    format!("{module}.relationships.changed")
}

/// Stages `change` in the outbox of the transaction (the durable path of a relationship write
/// that accompanies a business change, ARCHITECTURE §5). After commit the handler also applies
/// it directly ([`Authz::write_change`]); the source-version guard makes whichever path arrives
/// second a no-op, and a late delivery never undoes a newer state.
pub async fn stage_change(
    tx: &mut crate::db::Tx,
    ctx: &crate::RequestContext,
    module: &str,
    change: &crate::org_relationships::Change,
) -> crate::Result<()> {
    if change.updates.is_empty() {
        return Ok(());
    }
    crate::events::stage(tx, ctx, &relationships_event_type(module), &change_request(change)).await?;
    Ok(())
}

/// The consumer (`<module>.relationships`) that applies the relationship writes `module` staged
/// with [`stage_change`]. A failed write (permissions unavailable) is retried by the consumer and
/// finally dead-lettered, where an operator can replay it.
pub fn relationship_writes(module: &str, authz: Authz) -> crate::events::Consumer {
    crate::events::Consumer::new(
        format!("{module}.relationships"),
        &[relationships_event_type(module).as_str()],
        RelationshipWrites { authz },
    )
}

#[derive(Debug)]
struct RelationshipWrites {
    authz: Authz,
}

impl crate::events::Handler for RelationshipWrites {
    fn handle<'a>(
        &'a self,
        event: &'a crate::events::Event,
        _tx: &'a mut crate::db::Tx,
    ) -> futures::future::BoxFuture<'a, crate::Result<()>> {
        Box::pin(async move {
            let req: pb::WriteRelationshipsRequest = event.payload()?;
            self.authz.write_request(event.org_id, req).await.map_err(|e| {
                crate::Error::unavailable("PERMISSIONS_UNAVAILABLE", format!("relationship write failed: {e}"))
            })?;
            Ok(())
        })
    }
}

fn reason(e: &tonic::Status) -> String {
    e.get_error_details().error_info().map(|i| i.reason.clone()).unwrap_or_default()
}

/// Registers a module's API-key scope resources with identity (`ApiKeyService.
/// RegisterScopeResources`, an idempotent upsert), as `service:<module>` through `credentials`,
/// retrying with backoff (up to `max_wait`) while identity is unavailable. Returns how many
/// resources were new or changed.
pub async fn register_scope_resources(
    identity_url: &str,
    credentials: &dyn Credentials,
    resources: &[(&str, &str)],
    max_wait: Duration,
) -> Result<i32, tonic::Status> {
    use trellis_proto::trellis::identity::v1::api_key_service_client::ApiKeyServiceClient;
    use trellis_proto::trellis::identity::v1::{RegisterScopeResourcesRequest, ScopeResource};
    let channel = Channel::from_shared(identity_url.to_owned())
        .map_err(|e| tonic::Status::invalid_argument(format!("identity URL: {e}")))?
        .connect_lazy();
    let message = RegisterScopeResourcesRequest {
        resources: resources
            .iter()
            .map(|(resource, description)| ScopeResource {
                resource: (*resource).to_owned(),
                description: (*description).to_owned(),
            })
            .collect(),
    };
    let mut wait = Duration::from_millis(100);
    loop {
        let attempt = async {
            let token = credentials
                .token(None)
                .await
                .map_err(|e| tonic::Status::unavailable(format!("no service token: {e}")))?;
            let r = ApiKeyServiceClient::new(channel.clone())
                .register_scope_resources(request(message.clone(), &token)?)
                .await?;
            Ok::<_, tonic::Status>(r.into_inner().changed)
        };
        match attempt.await {
            Ok(changed) => return Ok(changed),
            Err(e) if retryable(&e) => {
                tracing::info!(code = ?e.code(), "scope-resource registration retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(max_wait);
            }
            Err(e) => return Err(e),
        }
    }
}

/// Errors worth retrying during start-up registration.
pub fn retryable(e: &tonic::Status) -> bool {
    matches!(e.code(), Code::Unavailable | Code::DeadlineExceeded | Code::Unknown)
        || (e.code() == Code::FailedPrecondition && reason(e) == "MISSING_DEPENDENCY")
}
