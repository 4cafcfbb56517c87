//! Who is calling, for which organization, under which correlation id.
//!
//! The gRPC server layer (`grpc`) builds a [`RequestContext`] from the verified access token and
//! the request metadata and puts it in the request extensions; handlers get it with
//! [`RequestContext::from_request`]. Event consumers get one built from the envelope.

use uuid::Uuid;

use crate::error::{Error, Result};

/// Metadata key of the correlation id (also the HTTP header `X-Correlation-Id`).
pub const CORRELATION_ID: &str = "x-correlation-id";

/// The authenticated principal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// No credential (public methods only).
    Anonymous,
    /// A signed-in user.
    User(Uuid),
    /// An API key acting in its organization.
    ApiKey(Uuid),
    /// A Trellis service acting on its own behalf (`service:<name>`).
    Service(String),
    /// The platform itself (schedulers, event reactions without a user).
    System,
}

/// Everything a handler knows about the caller.
#[derive(Debug, Clone)]
pub struct RequestContext {
    /// The principal.
    pub subject: Subject,
    /// The active organization (the token's `org` claim).
    pub org_id: Option<Uuid>,
    /// The session (`sid`), `key:<id>` for API keys.
    pub session_id: Option<String>,
    /// Org roles from the token.
    pub roles: Vec<String>,
    /// API-key scopes; empty for user tokens.
    pub scopes: Vec<String>,
    /// The org's plan (`free`, `pro`, `enterprise`).
    pub plan: Option<String>,
    /// Correlation id, generated when the caller sent none.
    pub correlation_id: String,
    /// The raw bearer token, forwarded on calls to other services.
    pub token: Option<String>,
}

impl RequestContext {
    /// A context with no credential.
    pub fn anonymous(correlation_id: impl Into<String>) -> Self {
        Self {
            subject: Subject::Anonymous,
            org_id: None,
            session_id: None,
            roles: Vec::new(),
            scopes: Vec::new(),
            plan: None,
            correlation_id: correlation_id.into(),
            token: None,
        }
    }

    /// A system context acting inside one organization (event reactions, schedulers).
    pub fn system(org_id: Uuid, correlation_id: impl Into<String>) -> Self {
        Self { subject: Subject::System, org_id: Some(org_id), ..Self::anonymous(correlation_id) }
    }

    /// A user context (tests and event reactions on behalf of a user).
    pub fn user(user_id: Uuid, org_id: Uuid) -> Self {
        Self { subject: Subject::User(user_id), org_id: Some(org_id), ..Self::anonymous(Uuid::now_v7().to_string()) }
    }

    /// The context the server layer attached to the request.
    pub fn from_request<T>(request: &tonic::Request<T>) -> Result<&RequestContext> {
        request
            .extensions()
            .get::<RequestContext>()
            .ok_or_else(|| Error::unauthenticated("UNAUTHENTICATED", "Authentication required"))
    }

    /// The user id, or UNAUTHENTICATED when the caller is not a user.
    pub fn user_id(&self) -> Result<Uuid> {
        match self.subject {
            Subject::User(id) => Ok(id),
            Subject::ApiKey(_) => {
                Err(Error::permission_denied("USER_TOKEN_REQUIRED", "This method needs a user token"))
            }
            _ => Err(Error::unauthenticated("UNAUTHENTICATED", "Authentication required")),
        }
    }

    /// The active organization, or UNAUTHENTICATED when the credential names none.
    pub fn org_id(&self) -> Result<Uuid> {
        self.org_id.ok_or_else(|| Error::unauthenticated("UNAUTHENTICATED", "The credential names no organization"))
    }

    /// The user id when the subject is a user (for `app.user_id`).
    pub fn user_id_opt(&self) -> Option<Uuid> {
        match self.subject {
            Subject::User(id) => Some(id),
            _ => None,
        }
    }

    /// The actor recorded on events: (`kind`, `id`).
    pub fn actor(&self) -> (&'static str, String) {
        match &self.subject {
            Subject::Anonymous => ("anonymous", String::new()),
            Subject::User(id) => ("user", id.to_string()),
            Subject::ApiKey(id) => ("api_key", id.to_string()),
            Subject::Service(name) => ("service", name.clone()),
            Subject::System => ("system", String::new()),
        }
    }

    /// Whether the caller holds `role` in the active organization.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}
