//! `cargo xtask dev`: the whole platform on this machine, with a demo organization.
//!
//! Postgres, Redis and RabbitMQ keep their data under `.trellis/` (or `$TRELLIS_DEV_DIR`) on fixed
//! loopback ports; `trellis migrate` then `trellis serve all` run against them; the demo data is
//! seeded through the public REST API. Mail goes to `.trellis/mail/` (one `.eml` file per
//! message) unless `SMTP_URL` is set. Ctrl-C, or `trellis` exiting, stops everything.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rustix::process::Signal;
use serde_json::json;

use crate::infra::{self, Binaries, Infra, Ports, Profile};
use crate::proc::{self, Supervised};
use crate::{cargo, http, repo_root};

/// The public gateway.
const GATEWAY: &str = "http://127.0.0.1:8080";
/// The gateway's admin port.
const GATEWAY_ADMIN: &str = "http://127.0.0.1:9060";
/// Services in port order: gRPC 50061.., admin HTTP 9061.. (ARCHITECTURE §9).
const SERVICES: [&str; 7] = ["identity", "permissions", "tasks", "crm", "documents", "finance", "notifications"];
/// Password of every demo user.
pub const DEMO_PASSWORD: &str = "demo-Garden-2025";
/// The demo organization's owner.
pub const DEMO_OWNER: &str = "alice@demo.trellis.dev";
/// The second demo user.
pub const DEMO_TEAMMATE: &str = "bob@demo.trellis.dev";
/// Password of the per-service Postgres roles in dev.
const SERVICE_DB_PASSWORD: &str = "trellis-dev";

/// Options of `cargo xtask dev`.
#[derive(Debug, clap::Args)]
pub struct DevArgs {
    /// Start without seeding the demo organization.
    #[arg(long)]
    no_seed: bool,
}

/// Runs the platform until Ctrl-C.
pub fn run(args: DevArgs) -> Result<ExitCode> {
    let root = repo_root();
    let dir = std::env::var_os("TRELLIS_DEV_DIR").map_or_else(|| root.join(".trellis"), PathBuf::from);
    let bins = Binaries::ensure()?;
    let ports = Ports::DEV;
    let mut wanted = ports.named();
    wanted.push(("gateway".into(), 8080));
    wanted.push(("gateway admin".into(), 9060));
    for (i, service) in SERVICES.iter().enumerate() {
        wanted.push((format!("{service} gRPC"), 50061 + i as u16));
        wanted.push((format!("{service} admin"), 9061 + i as u16));
    }
    infra::ensure_ports_free(&wanted)?;
    proc::install_signal_handlers()?;

    // The servers boot while cargo builds.
    let mut infra = Infra::launch(bins, Profile::Dev, &dir, ports)?;
    let Some(trellis_bin) = build_trellis(&root)? else { return Ok(ExitCode::SUCCESS) };
    match infra.wait_ready() {
        Err(_) if proc::stop_requested() => return Ok(ExitCode::SUCCESS),
        result => result?,
    }
    infra.ensure_database("trellis")?;

    let env = dev_env(&infra);
    eprintln!("xtask: migrating");
    let status = proc::run_foreground(Command::new(&trellis_bin).arg("migrate").envs(env.clone()))?;
    if proc::stop_requested() {
        return Ok(ExitCode::SUCCESS);
    }
    if !status.success() {
        bail!("`trellis migrate` failed ({status})");
    }

    eprintln!("xtask: starting trellis serve all");
    let mut serve = Command::new(&trellis_bin);
    serve.args(["serve", "all"]).envs(env);
    // `trellis` drains for up to SHUTDOWN_GRACE (20 s) after SIGINT.
    let mut trellis = Supervised::spawn("trellis", &mut serve, None, Signal::INT, Duration::from_secs(30))?;

    let outcome = supervise(&mut infra, &mut trellis, args.no_seed);
    if trellis.exited().is_none() {
        eprintln!("xtask: stopping trellis");
    }
    trellis.stop();
    infra.stop();
    outcome
}

/// Waits for the gateway, seeds, prints the banner, then waits for Ctrl-C or a failure.
fn supervise(infra: &mut Infra, trellis: &mut Supervised, no_seed: bool) -> Result<ExitCode> {
    let gateway_up = wait_for_gateway(infra, trellis)?;
    let Some(gateway_up) = gateway_up else { return Ok(ExitCode::SUCCESS) };
    let seeded = match (gateway_up, no_seed) {
        (_, true) => "not seeded (--no-seed)".to_string(),
        (false, _) => format!("not seeded: the gateway does not answer {GATEWAY}/healthz"),
        (true, false) => match seed(GATEWAY, infra) {
            Ok(report) => report,
            Err(e) => format!("seeding failed: {e:#}"),
        },
    };
    print_banner(infra, &seeded);

    loop {
        if proc::stop_requested() {
            eprintln!("\nxtask: stopping");
            return Ok(ExitCode::SUCCESS);
        }
        if let Some(status) = trellis.exited() {
            eprintln!("xtask: trellis exited ({status}); stopping the servers");
            return Ok(ExitCode::FAILURE);
        }
        if let Some(failure) = infra.failed() {
            eprintln!("xtask: {failure}");
            return Ok(ExitCode::FAILURE);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// `Some(true)` once the gateway answers `/healthz` (and `/readyz`, where served); `Some(false)`
/// when every service is healthy but the gateway still does not answer; `None` on Ctrl-C.
fn wait_for_gateway(infra: &mut Infra, trellis: &mut Supervised) -> Result<Option<bool>> {
    let start = Instant::now();
    let mut services_healthy_since: Option<Instant> = None;
    loop {
        if proc::stop_requested() {
            return Ok(None);
        }
        if let Some(status) = trellis.exited() {
            bail!("trellis exited during start-up ({status}); its output is above");
        }
        if let Some(failure) = infra.failed() {
            bail!("{failure}");
        }
        if healthy(&format!("{GATEWAY}/healthz")) {
            // Register needs the route table, which `/readyz` reports; a gateway without
            // `/readyz` (404) is taken as ready.
            let ready_deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < ready_deadline && !proc::stop_requested() {
                match http::get(&format!("{GATEWAY}/readyz"), Duration::from_secs(2)) {
                    Ok(r) if r.status == 200 || r.status == 404 => break,
                    _ => std::thread::sleep(Duration::from_millis(500)),
                }
            }
            eprintln!("xtask: gateway up ({:.1} s)", start.elapsed().as_secs_f32());
            return Ok(Some(true));
        }
        let all_services = SERVICES.iter().enumerate().all(|(i, _)| healthy(&admin_url(i, "healthz")));
        match (all_services, services_healthy_since) {
            (true, None) => services_healthy_since = Some(Instant::now()),
            (true, Some(since)) if since.elapsed() > Duration::from_secs(15) => {
                eprintln!("xtask: every service answers /healthz but the gateway does not; continuing without it");
                return Ok(Some(false));
            }
            (false, _) => services_healthy_since = None,
            _ => {}
        }
        if start.elapsed() > Duration::from_secs(120) {
            bail!("the services did not become healthy within 120 s");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn healthy(url: &str) -> bool {
    http::get(url, Duration::from_secs(2)).is_ok_and(|r| r.status == 200)
}

fn admin_url(index: usize, path: &str) -> String {
    format!("http://127.0.0.1:{}/{path}", 9061 + index)
}

/// Builds the `trellis` binary and returns its path (`None` when interrupted).
fn build_trellis(root: &Path) -> Result<Option<PathBuf>> {
    eprintln!("xtask: building trellis");
    let status = proc::run_foreground(cargo().current_dir(root).args(["build", "-p", "trellis"]))?;
    if proc::stop_requested() {
        return Ok(None);
    }
    if !status.success() {
        bail!("`cargo build -p trellis` failed ({status})");
    }
    Ok(Some(target_dir(root)?.join("debug").join("trellis")))
}

/// The workspace's target directory, as cargo resolves it (CARGO_TARGET_DIR, config files).
fn target_dir(root: &Path) -> Result<PathBuf> {
    let out = cargo()
        .current_dir(root)
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .output()
        .context("running cargo metadata")?;
    if !out.status.success() {
        bail!("cargo metadata failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    meta["target_directory"].as_str().map(PathBuf::from).context("cargo metadata has no target_directory")
}

/// The environment `trellis migrate` and `trellis serve` read.
fn dev_env(infra: &Infra) -> Vec<(String, String)> {
    [
        ("DATABASE_URL", infra.postgres_url("trellis")),
        ("SERVICE_DB_PASSWORD", SERVICE_DB_PASSWORD.to_string()),
        ("REDIS_URL", infra.redis_url()),
        ("AMQP_URL", infra.amqp_url()),
        ("LOG_FORMAT", "text".to_string()),
        ("GATEWAY_LISTEN", "127.0.0.1:8080".to_string()),
        ("GATEWAY_ADMIN_LISTEN", "127.0.0.1:9060".to_string()),
        ("BIND_HOST", "127.0.0.1".to_string()),
        ("MAIL_DIR", mail_dir(infra).display().to_string()),
    ]
    .map(|(k, v)| (k.to_string(), v))
    .into()
}

/// Where the notifications service writes mail in dev (when `SMTP_URL` is not set).
fn mail_dir(infra: &Infra) -> PathBuf {
    infra.dir().join("mail")
}

/// Whether mail goes to an SMTP server the developer configured instead of the mail directory.
fn smtp_configured() -> bool {
    std::env::var("SMTP_URL").is_ok_and(|url| !url.trim().is_empty())
}

/// Seeds the demo organization through the public REST API, the way a user would sign up.
/// Re-running is harmless: a 409 means the user is already there. Returns a summary.
pub fn seed(gateway: &str, infra: &Infra) -> Result<String> {
    let mut owner = seed_owner(gateway)?;
    if owner.starts_with("created") && !smtp_configured() {
        // Alice confirms her address from the verification email, as she would from her inbox
        // (inviting teammates needs a verified email).
        let verified = token_from_mail(&mail_dir(infra), DEMO_OWNER, "verify-email?token=", Duration::from_secs(20))
            .and_then(|token| {
                http::post_json(
                    &format!("{gateway}/api/v1/auth/verify-email"),
                    &json!({"token": token}),
                    Duration::from_secs(10),
                )
            });
        match verified {
            Ok(answer) if answer.status == 200 => owner.push_str(", email verified from the mail"),
            Ok(answer) => owner.push_str(&format!(", email not verified ({})", answer.status)),
            Err(e) => owner.push_str(&format!(", email not verified ({e:#})")),
        }
    }
    let teammate = seed_teammate(gateway, infra)?;
    Ok(format!("{owner}; {teammate}"))
}

/// Alice registers; registration creates the organization "Demo" with her as its owner.
fn seed_owner(gateway: &str) -> Result<String> {
    let created = register(
        gateway,
        json!({
            "email": DEMO_OWNER,
            "password": DEMO_PASSWORD,
            "first_name": "Alice",
            "last_name": "Demo",
            "organization_name": "Demo",
        }),
    )?;
    Ok(if created { "created Alice and the Demo organization" } else { "Alice already seeded" }.to_string())
}

/// Bob joins Demo the way a teammate does: Alice invites him, and he registers with the token of
/// the link in his invitation email, read from the mail directory like a user opening the mail.
/// When `SMTP_URL` sends mail elsewhere, the link is read from identity's outbox instead (the
/// `identity.invitation.sent` event that the mail was rendered from).
fn seed_teammate(gateway: &str, infra: &Infra) -> Result<String> {
    let login = http::post_json(
        &format!("{gateway}/api/v1/auth/login"),
        &json!({"email": DEMO_OWNER, "password": DEMO_PASSWORD}),
        Duration::from_secs(10),
    )?;
    if login.status != 200 {
        bail!("logging in as {DEMO_OWNER} answered {}: {}", login.status, login.body);
    }
    let token = serde_json::from_str::<serde_json::Value>(&login.body)?["access_token"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| anyhow::anyhow!("the login response has no access_token"))?;
    let invited = http::post_json_authorized(
        &format!("{gateway}/api/v1/invitations"),
        &token,
        &json!({"email": DEMO_TEAMMATE, "role": "member"}),
        Duration::from_secs(10),
    )?;
    match invited.status {
        200 | 201 => {}
        // ALREADY_MEMBER: seeded on an earlier run. INVITATION_PENDING: the link is in the outbox.
        409 if invited.body.contains("ALREADY_MEMBER") => return Ok("Bob already seeded".to_string()),
        409 => {}
        status => bail!("inviting {DEMO_TEAMMATE} answered {status}: {}", invited.body),
    }
    let invitation_token = if smtp_configured() {
        let envelope = infra.query(
            "trellis",
            "select encode(envelope, 'escape') from identity.outbox \
             where event_type = 'identity.invitation.sent' order by created_at desc limit 1",
        )?;
        invitation_token(&envelope).ok_or_else(|| anyhow::anyhow!("no invitation link found in identity's outbox"))?
    } else {
        invitation_from_mail(&mail_dir(infra), DEMO_TEAMMATE, Duration::from_secs(20))?
    };
    let created = register(
        gateway,
        json!({
            "email": DEMO_TEAMMATE,
            "password": DEMO_PASSWORD,
            "first_name": "Bob",
            "last_name": "Demo",
            "invitation_token": invitation_token,
        }),
    )?;
    Ok(if created { "Bob joined Demo through an invitation" } else { "Bob already seeded" }.to_string())
}

/// Waits for the newest invitation email to `to` in `dir` and returns its token.
fn invitation_from_mail(dir: &Path, to: &str, timeout: Duration) -> Result<String> {
    token_from_mail(dir, to, "accept?token=", timeout)
}

/// Waits for the newest email to `to` in `dir` with a link containing `marker` and returns the
/// link's token.
fn token_from_mail(dir: &Path, to: &str, marker: &str, timeout: Duration) -> Result<String> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(token) = newest_token(dir, to, marker) {
            return Ok(token);
        }
        if Instant::now() >= deadline {
            bail!("no email to {to} with a {marker} link appeared in {} within {timeout:?}", dir.display());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The token of the newest invitation email to `to` in `dir`.
#[cfg(test)]
fn newest_invitation(dir: &Path, to: &str) -> Option<String> {
    newest_token(dir, to, "accept?token=")
}

/// The token after `marker` in the newest email to `to` among the `.eml` files of `dir` that
/// has one (their names start with the UTC time, so the newest sorts last).
fn newest_token(dir: &Path, to: &str, marker: &str) -> Option<String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "eml"))
        .collect();
    files.sort();
    files.iter().rev().find_map(|path| {
        let message = std::fs::read_to_string(path).ok()?;
        let addressed = message
            .lines()
            .take_while(|line| !line.is_empty())
            .any(|line| line.to_ascii_lowercase().starts_with("to:") && line.to_ascii_lowercase().contains(to));
        if !addressed {
            return None;
        }
        link_token(&decode_quoted_printable(&message), marker)
    })
}

/// Quoted-printable soft line breaks and `=XX` escapes decoded (what mail bodies use).
fn decode_quoted_printable(text: &str) -> String {
    let text = text.replace("=\r\n", "").replace("=\n", "");
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'=')
            .then(|| text.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Length of an invitation token: 32 random bytes in unpadded base64url.
const INVITATION_TOKEN_LEN: usize = 43;

/// The token of the first invitation link (`…/invitations/accept?token=<base64url>`) in `text`.
/// The link is followed by other protobuf fields whose tag bytes may be printable, so exactly the
/// token's length is taken.
fn invitation_token(text: &str) -> Option<String> {
    link_token(text, "accept?token=")
}

/// The token after the first `marker` (`verify-email?token=`) in `text`.
fn link_token(text: &str, marker: &str) -> Option<String> {
    let start = text.find(marker)? + marker.len();
    let token: String = text[start..]
        .chars()
        .take(INVITATION_TOKEN_LEN)
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect();
    (token.len() == INVITATION_TOKEN_LEN).then_some(token)
}

/// `POST /api/v1/auth/register`: `true` when created, `false` when the user already exists (409).
/// Retries while the gateway reports 502/503 (backends still starting).
fn register(gateway: &str, body: serde_json::Value) -> Result<bool> {
    let url = format!("{gateway}/api/v1/auth/register");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let response = http::post_json(&url, &body, Duration::from_secs(10))?;
        match response.status {
            200 | 201 => return Ok(true),
            409 => return Ok(false),
            502 | 503 if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(500)),
            status => bail!("POST {url} answered {status}: {}", response.body),
        }
    }
}

fn print_banner(infra: &Infra, seeded: &str) {
    let ports = |base: usize| -> String {
        SERVICES.iter().enumerate().map(|(i, name)| format!("{name} {}", base + i)).collect::<Vec<_>>().join(", ")
    };
    let ports_in_use = infra.ports;
    println!(
        r#"
Trellis is running. Press Ctrl-C to stop everything.

  Gateway     {GATEWAY}   (admin {GATEWAY_ADMIN}: /healthz /readyz /metrics)
  REST        curl -s {GATEWAY}/api/v1/auth/login -H 'content-type: application/json' \
                -d '{{"email":"{DEMO_OWNER}","password":"{DEMO_PASSWORD}"}}'
              curl -s {GATEWAY}/api/v1/tasks -H "authorization: Bearer $ACCESS_TOKEN"
  gRPC        127.0.0.1: {grpc}
  Admin HTTP  127.0.0.1: {admin} (/healthz /readyz /metrics)
  Postgres    {pg}   (psql {pg})
  Redis       {redis}   (redis-cli -p {redis_port})
  RabbitMQ    {amqp}
  Demo users  {DEMO_OWNER} (owner of "Demo") and {DEMO_TEAMMATE} (member), password {DEMO_PASSWORD}
              ({seeded})
  Mail        {mail}
  Data, logs  {dir} (servers' logs in logs/; delete the directory to start over)
"#,
        grpc = ports(50061),
        admin = ports(9061),
        pg = infra.postgres_url("trellis"),
        redis = infra.redis_url(),
        redis_port = ports_in_use.redis,
        amqp = infra.amqp_url(),
        dir = infra.dir().display(),
        mail = if smtp_configured() {
            "sent to SMTP_URL".to_string()
        } else {
            format!(
                "{}/*.eml (one file per message, newest last; open one to follow its link)",
                mail_dir(infra).display()
            )
        },
    );
}

#[cfg(test)]
mod tests {
    use super::{decode_quoted_printable, invitation_token, newest_invitation};

    #[test]
    fn the_invitation_token_is_read_from_the_escaped_envelope() {
        let token = "Ab-9_xZ".repeat(6) + "q";
        let escaped = format!(r"\022\001\000http://localhost:8080/invitations/accept?token={token}2B\032\010rest");
        assert_eq!(invitation_token(&escaped), Some(token));
        assert_eq!(invitation_token("accept?token=short\\000"), None);
        assert_eq!(invitation_token("no link here"), None);
        assert_eq!(invitation_token("accept?token=\\000"), None);
    }

    #[test]
    fn the_newest_invitation_mail_to_the_teammate_gives_the_token() {
        let dir = std::env::temp_dir().join(format!("xtask-mail-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let (old, new) = ("A".repeat(43), "b".repeat(20) + "-" + &"C".repeat(22));
        let mail = |to: &str, token: &str| {
            format!(
                "To: {to}\r\nSubject: Alice invited you\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n\
                 Accept: http://localhost:8080/invitations/accept?token=3D{}=\r\n{}\r\n",
                &token[..10],
                &token[10..]
            )
        };
        std::fs::write(dir.join("20261122T030000.000Z-1.eml"), mail("bob@demo.trellis.dev", &old)).expect("write");
        std::fs::write(dir.join("20261122T040000.000Z-2.eml"), mail("bob@demo.trellis.dev", &new)).expect("write");
        std::fs::write(dir.join("20261122T050000.000Z-3.eml"), mail("carol@demo.trellis.dev", &old)).expect("write");
        assert_eq!(newest_invitation(&dir, "bob@demo.trellis.dev"), Some(new));
        assert_eq!(newest_invitation(&dir, "dan@demo.trellis.dev"), None);
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(decode_quoted_printable("a=3Db=\r\nc =C3=A9"), "a=bc é");
    }
}
