//! The platform under test and an HTTP client that speaks to it the way an app does.

use std::time::{Duration, Instant};

use prost::Message;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use trellis_gateway::{Builder, GatewayConfig, Spawned};
use trellis_kit::module::SERVICES;
use trellis_kit::testing::{CapturedMail, SmtpCapture, TestCell};
use trellis_proto::trellis::events::v1::Envelope;
use trellis_proto::trellis::identity::v1::InvitationSent;

/// Every module of the cell, served in-process, behind a gateway on an ephemeral port.
#[derive(Debug)]
pub struct Platform {
    /// The modules.
    pub cell: TestCell,
    /// The gateway.
    pub gateway: Spawned,
    /// `http://127.0.0.1:<port>`.
    pub base_url: String,
    /// The SMTP server the notifications service sends to: every mail the cell sends.
    pub mail: SmtpCapture,
    http: reqwest::Client,
}

impl Drop for Platform {
    fn drop(&mut self) {
        self.gateway.shutdown.cancel();
    }
}

/// An HTTP answer: status, `Location` and the JSON body (`Null` when empty).
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: StatusCode,
    pub location: Option<String>,
    pub body: Value,
}

impl Answer {
    /// The envelope's `error.code` of an error answer.
    pub fn error_code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or_default()
    }
}

/// A signed-in user as the tests know them.
#[derive(Debug, Clone)]
pub struct User {
    pub id: String,
    pub token: String,
}

pub const PASSWORD: &str = "correct horse battery staple 42";

impl Platform {
    /// Migrates and starts the seven modules and the gateway, with mail going to a local SMTP
    /// capture server.
    pub async fn start() -> Platform {
        Self::start_with_identity(None).await
    }

    /// Like [`Platform::start`], with identity's settings given (shortened schedules).
    pub async fn start_with_identity(identity: Option<trellis_identity::IdentityConfig>) -> Platform {
        let mail = SmtpCapture::start().await;
        let mail_settings = trellis_notifications::NotificationsConfig {
            smtp_url: Some(mail.url()),
            email_poll_interval: Duration::from_millis(50),
            ..trellis_notifications::NotificationsConfig::from_env()
                .unwrap_or_else(|e| panic!("notifications settings: {e:#}"))
        };
        let modules = SERVICES
            .iter()
            .map(|name| match (*name, &identity) {
                ("identity", Some(settings)) => trellis_identity::module_with(Some(settings.clone())),
                ("notifications", _) => trellis_notifications::module_with(Some(mail_settings.clone())),
                (name, _) => trellis::module(name).unwrap_or_else(|| panic!("module {name} is not registered")),
            })
            .collect();
        let cell = TestCell::start(modules).await;
        let gateway = Builder::new(cell.config.clone(), GatewayConfig::from_env().without_practical_rate_limits())
            .authenticator(cell.auth.clone())
            .spawn()
            .await
            .unwrap_or_else(|e| panic!("starting the gateway: {e:#}"));
        let base_url = format!("http://{}", gateway.addr);
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap_or_else(|e| panic!("http client: {e}"));
        Platform { cell, gateway, base_url, mail, http }
    }

    /// Sends a request with an optional bearer token and JSON body.
    pub async fn call(&self, method: Method, path: &str, token: Option<&str>, body: Option<Value>) -> Answer {
        let mut request = self.http.request(method.clone(), format!("{}{path}", self.base_url));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = response.status();
        let location = response.headers().get("location").and_then(|v| v.to_str().ok()).map(str::to_string);
        let text = response.text().await.unwrap_or_else(|e| panic!("{method} {path}: reading the body: {e}"));
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method} {path}: body is not JSON ({e}): {text}"))
        };
        Answer { status, location, body }
    }

    /// One response header of an unauthenticated GET.
    pub async fn http_head(&self, path: &str, header: &str) -> Option<String> {
        let response = self
            .http
            .get(format!("{}{path}", self.base_url))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        response.headers().get(header).and_then(|v| v.to_str().ok()).map(str::to_string)
    }

    pub async fn get(&self, path: &str, token: &str) -> Answer {
        self.call(Method::GET, path, Some(token), None).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> Answer {
        self.call(Method::POST, path, token, Some(body)).await
    }

    /// POST /api/v1/auth/register; `invitation_token` joins the inviting organization.
    pub async fn register(&self, first_name: &str, email: &str, invitation_token: Option<&str>) -> User {
        let mut body = json!({"email": email, "password": PASSWORD, "first_name": first_name});
        if let Some(token) = invitation_token {
            body["invitation_token"] = json!(token);
        }
        let answer = self.post("/api/v1/auth/register", None, body).await;
        assert!(answer.status.is_success(), "register {email}: {answer:?}");
        user_of(email, &answer)
    }

    /// POST /api/v1/auth/login.
    pub async fn login(&self, email: &str) -> User {
        let answer = self.post("/api/v1/auth/login", None, json!({"email": email, "password": PASSWORD})).await;
        assert_eq!(answer.status, StatusCode::OK, "login {email}: {answer:?}");
        user_of(email, &answer)
    }

    /// The token of the newest invitation link sent to `email`, read from identity's outbox as
    /// the notifications service would receive it.
    pub async fn invitation_token(&self, email: &str) -> String {
        let pool = self.cell.owner_pool().await;
        let rows: Vec<Vec<u8>> = sqlx::query_scalar(
            "select envelope from identity.outbox where event_type = 'identity.invitation.sent' \
             order by created_at desc, id desc",
        )
        .fetch_all(&pool)
        .await
        .unwrap_or_else(|e| panic!("reading identity's outbox: {e}"));
        rows.iter()
            .filter_map(|bytes| Envelope::decode(bytes.as_slice()).ok())
            .filter_map(|envelope| envelope.payload.and_then(|p| p.to_msg::<InvitationSent>().ok()))
            .find(|sent| sent.email == email)
            .and_then(|sent| sent.link_url.split_once("token=").map(|(_, token)| token.to_string()))
            .unwrap_or_else(|| panic!("no invitation link for {email} in identity's outbox"))
    }

    /// The first mail to `address` with `subject`, waiting up to 15 s for it, as the user's
    /// mailbox shows it.
    pub async fn mail_to(&self, address: &str, subject: &str) -> CapturedMail {
        loop {
            let received = self.mail.messages_to(address);
            if let Some(found) = received.iter().find(|m| m.subject() == subject) {
                return found.clone();
            }
            let seen: Vec<String> = received.iter().map(CapturedMail::subject).collect();
            let next = tokio::time::timeout(
                Duration::from_secs(15),
                self.mail.wait_for_nth(address, received.len() + 1, Duration::from_secs(15)),
            )
            .await;
            assert!(next.is_ok(), "no mail {subject:?} to {address}; the mailbox has {seen:?}");
        }
    }

    /// The `token` query parameter of the first link in `mail` whose path contains `path`
    /// (`/reset-password`): what the web app reads when the user clicks the link.
    pub fn token_in(mail: &CapturedMail, path: &str) -> String {
        let link = mail
            .link_containing(&format!("{path}?token="))
            .unwrap_or_else(|| panic!("no {path} link in the mail {:?}: {}", mail.subject(), mail.body()));
        link.split_once("token=").map(|(_, token)| token.to_string()).unwrap_or_default()
    }

    /// Polls `path` as `token` until `done` holds for the answer or `timeout` passes; returns
    /// the last answer.
    pub async fn poll(&self, path: &str, token: &str, timeout: Duration, done: impl Fn(&Answer) -> bool) -> Answer {
        let deadline = Instant::now() + timeout;
        loop {
            let answer = self.get(path, token).await;
            if done(&answer) || Instant::now() >= deadline {
                return answer;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn user_of(email: &str, answer: &Answer) -> User {
    let id = answer.body["user"]["id"].as_str().unwrap_or_else(|| panic!("{email}: no user id in {answer:?}"));
    let token =
        answer.body["access_token"].as_str().unwrap_or_else(|| panic!("{email}: no access token in {answer:?}"));
    User { id: id.to_string(), token: token.to_string() }
}
