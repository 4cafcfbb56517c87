//! Login, refresh and access-token verification, measured against an identity service on the
//! throwaway servers of `cargo xtask bench -p trellis-identity`:
//! - Login over gRPC at concurrency 2 next to raw Argon2id verifications with identity's own
//!   parameters (m=19 MiB, t=2, p=1) at concurrency 2 on the blocking pool, in the same run
//!   (goal: login throughput ≥ 0.9× the raw hash rate; spec: login p50 ≤ 1.25× a raw verify);
//! - Refresh over gRPC, each worker rotating its own session's token (goal ≥ 3,000/s; spec p99
//!   < 20 ms);
//! - access-token verification in kit (`Authenticator::verify`, cached JWKS) in µs per
//!   verification (goal < 50 µs; spec p99 < 100 µs).
//!
//! `TRELLIS_BENCH_QUICK=1` runs each workload briefly.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;
use tonic::transport::Channel;
use trellis_identity::password;
use trellis_kit::testing::bench::{self, Report};
use trellis_kit::testing::{TestCell, TestEnv, test_config};
use trellis_proto::trellis::identity::v1 as pb;
use trellis_proto::trellis::identity::v1::auth_service_client::AuthServiceClient;

const PASSWORD: &str = "violet-harbor-lantern-42";

async fn register(auth: &AuthServiceClient<Channel>, email: &str) -> pb::RegisterResponse {
    let request = pb::RegisterRequest {
        email: email.into(),
        password: PASSWORD.into(),
        first_name: "Bench".into(),
        last_name: "User".into(),
        ..Default::default()
    };
    auth.clone().register(request).await.expect("register").into_inner()
}

#[tokio::main]
async fn main() {
    let quick = std::env::var("TRELLIS_BENCH_QUICK").is_ok_and(|v| v == "1");
    let (warmup, duration) = if quick {
        (Duration::from_millis(300), Duration::from_secs(2))
    } else {
        (Duration::from_secs(2), Duration::from_secs(10))
    };
    let env = TestEnv::get();
    let config = test_config(&env).await;
    let mut settings = trellis_identity::IdentityConfig::from_env().expect("identity settings");
    // The login rate limit (10 per email per 15 min) would cap the benchmark, not measure it.
    settings.login_rate_limit = u32::MAX;
    let cell = TestCell::start_with(config, vec![trellis_identity::module_with(Some(settings))]).await;
    let auth = AuthServiceClient::new(cell.channel("identity").await);
    let mut report = Report::new("Identity: login, refresh and token verification");

    // Raw Argon2id with identity's parameters, the way identity runs it (blocking pool).
    let phc = Arc::new(password::hash(PASSWORD).expect("hash"));
    let raw = bench::run("raw Argon2id verify (m=19 MiB, t=2, p=1)", 2, warmup, duration, move |_, _| {
        let phc = Arc::clone(&phc);
        async move {
            match password::verify_blocking(Some(phc.to_string()), PASSWORD.into()).await {
                Ok(password::Verification::Match { .. }) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        }
    })
    .await;
    let raw = report.add(raw).clone();

    // Login over gRPC: two users so that per-user state (counters, sessions) is not shared.
    for i in 0..2 {
        register(&auth, &format!("login{i}@bench.example")).await;
    }
    let client = auth.clone();
    let login = bench::run("Login over gRPC", 2, warmup, duration, move |worker, _| {
        let mut client = client.clone();
        async move {
            let request = pb::LoginRequest { email: format!("login{worker}@bench.example"), password: PASSWORD.into() };
            client.login(request).await.map(drop)
        }
    })
    .await;
    let login = report.add(login).clone();
    report.throughput_ratio("login / raw Argon2id throughput at concurrency 2", &login, &raw, "goal ≥ 0.90");
    let p50_ratio = login.p50().as_secs_f64() / raw.p50().as_secs_f64().max(f64::MIN_POSITIVE);
    report.note(format!("login p50 / raw verify p50: {p50_ratio:.2} (spec ≤ 1.25)"));

    // Refresh over gRPC: each worker rotates its own session.
    let concurrency = 16;
    let mut chains = Vec::new();
    for i in 0..concurrency {
        let r = register(&auth, &format!("refresh{i}@bench.example")).await;
        chains.push(Mutex::new(r.refresh_token));
    }
    let chains = Arc::new(chains);
    let client = auth.clone();
    let refresh = bench::run("Refresh over gRPC", concurrency, warmup, duration, move |worker, _| {
        let mut client = client.clone();
        let chains = Arc::clone(&chains);
        async move {
            let mut current = chains[worker].lock().await;
            let request = pb::RefreshRequest { refresh_token: current.clone() };
            let answer = client.refresh(request).await?.into_inner();
            *current = answer.refresh_token;
            Ok::<(), tonic::Status>(())
        }
    })
    .await;
    let refresh = report.add(refresh).clone();
    report.note(format!(
        "refresh: {:.0}/s (goal ≥ 3,000/s), p99 {:.1} ms (spec < 20 ms)",
        refresh.throughput(),
        refresh.p99().as_secs_f64() * 1e3
    ));

    // Access-token verification in kit, JWKS cached after the first call.
    let token = register(&auth, "verify@bench.example").await.access_token;
    cell.auth.verify(&token).await.expect("verifies");
    let verifier = Arc::clone(&cell.auth);
    let token = Arc::new(token);
    let verify = bench::run("kit Authenticator::verify (cached JWKS)", 1, warmup, duration, move |_, _| {
        let verifier = Arc::clone(&verifier);
        let token = Arc::clone(&token);
        async move { verifier.verify(&token).await.map(drop) }
    })
    .await;
    let verify = report.add(verify).clone();
    report.note(format!(
        "token verification: {:.1} µs mean, p99 {:.1} µs (goal < 50 µs; spec p99 < 100 µs)",
        verify.mean().as_secs_f64() * 1e6,
        verify.p99().as_secs_f64() * 1e6
    ));

    report.print();
}
