//! The result cache across replicas (spec rules 4 and 6, flows 4 and 12): three replicas share one
//! database; `b` never hears invalidations (its Redis is unreachable), `c` hears them over Redis.

use std::time::Duration;

use trellis_kit::testing::{TestCell, test_config, wait_until};
use trellis_permissions::cache::CacheSettings;

use super::grpc::{Clients, authed, check_req, clients, fresh, has, service_token, updates};
use super::*;
use trellis_proto::trellis::permissions::v1 as pb;

fn full() -> Option<pb::Consistency> {
    Some(pb::Consistency { requirement: Some(pb::consistency::Requirement::FullyConsistent(true)) })
}

async fn register_and_load(cell: &TestCell, c: &mut Clients, org: Uuid) {
    let case = case();
    let req = |m: &str, s: &str| pb::WriteSchemaRequest { module: m.into(), schema: s.into(), dry_run: false };
    for (m, s) in [
        ("identity", IDENTITY),
        ("permissions", trellis_permissions::SCHEMA),
        ("acceptance", &case.modules["acceptance"]),
    ] {
        c.schema.write_schema(authed(req(m, s), &service_token(cell, m, org))).await.expect("schema");
    }
    let tuples: Vec<Tuple> = case.relationships.lines().filter(|l| !l.trim().is_empty()).map(tuple).collect();
    let (own, identity): (Vec<Tuple>, Vec<Tuple>) =
        tuples.into_iter().partition(|t| t.resource.ty.starts_with("test_"));
    let as_identity = service_token(cell, "identity", org);
    c.rels.write_relationships(authed(updates(pb::Operation::Touch, &identity), &as_identity)).await.expect("identity");
    let as_acceptance = service_token(cell, "acceptance", org);
    c.rels.write_relationships(authed(updates(pb::Operation::Touch, &own), &as_acceptance)).await.expect("own");
}

#[tokio::test]
async fn read_your_writes_with_tokens_even_with_a_warm_cache_on_another_replica() {
    let env = TestEnv::get();
    let config = test_config(&env).await;
    let long = CacheSettings { max_staleness: Duration::from_secs(30), ..Default::default() };
    let a = TestCell::start_with(config.clone(), vec![trellis_permissions::module_with(long.clone())]).await;
    let mut deaf = config.clone();
    deaf.redis_url = "redis://127.0.0.1:1".into();
    let b = TestCell::start_with(deaf, vec![trellis_permissions::module_with(long.clone())]).await;
    let c = TestCell::start_with(config, vec![trellis_permissions::module_with(long)]).await;
    let (mut ca, mut cb, mut cc) = (clients(&a).await, clients(&b).await, clients(&c).await);
    let acme = Uuid::now_v7();
    register_and_load(&a, &mut ca, acme).await;
    let (ta, tb, tc) = (
        service_token(&a, "acceptance", acme),
        service_token(&b, "acceptance", acme),
        service_token(&c, "acceptance", acme),
    );
    let vera = "test_document:spec#view@user:vera";
    // Warm every replica with `no`.
    for _ in 0..2 {
        assert!(!has(&mut ca, &ta, vera, None).await);
        assert!(!has(&mut cb, &tb, vera, None).await);
        assert!(!has(&mut cc, &tc, vera, None).await);
    }
    let grant = [tuple("test_document:spec#viewer@user:vera")];
    let t1 = ca
        .rels
        .write_relationships(authed(updates(pb::Operation::Touch, &grant), &ta))
        .await
        .expect("grant")
        .into_inner()
        .written_at
        .expect("token");
    // The writing replica voids its own entry at once.
    assert!(has(&mut ca, &ta, vera, None).await);
    // `b` heard nothing: minimize_latency may serve its cached `no` (within the staleness bound),
    // but the write's token, and fully_consistent, never see a stale entry.
    assert!(!has(&mut cb, &tb, vera, None).await, "b answers from its warm cache");
    assert!(has(&mut cb, &tb, vera, fresh(&t1)).await, "at_least_as_fresh(T) sees the write");
    assert!(has(&mut cb, &tb, vera, full()).await);
    // `c` hears the invalidation over Redis.
    wait_until(Duration::from_secs(2), || {
        let (mut cc, tc) = (clone_clients(&cc), tc.clone());
        async move { has(&mut cc, &tc, vera, None).await }
    })
    .await;
    // The revoke: `b` now has a cached `has` at T1, which T2 must not accept.
    assert!(has(&mut cb, &tb, vera, fresh(&t1)).await);
    let t2 = ca
        .rels
        .write_relationships(authed(updates(pb::Operation::Delete, &grant), &ta))
        .await
        .expect("revoke")
        .into_inner()
        .written_at
        .expect("token");
    assert!(has(&mut cb, &tb, vera, fresh(&t1)).await, "T1 is satisfied by the cached answer");
    assert!(!has(&mut cb, &tb, vera, fresh(&t2)).await, "T2 is not");
    assert!(!has(&mut cb, &tb, vera, full()).await);
    assert!(!has(&mut ca, &ta, vera, None).await);
    wait_until(Duration::from_secs(2), || {
        let (mut cc, tc) = (clone_clients(&cc), tc.clone());
        async move { !has(&mut cc, &tc, vera, None).await }
    })
    .await;
    // The checked_at of an answer is at least the token asked for.
    let r = cb.check.check(authed(check_req(vera, fresh(&t2)), &tb)).await.expect("check").into_inner();
    let at = Zookie::decode(&r.checked_at.expect("token").token, acme).expect("token");
    assert!(at.revision >= Zookie::decode(&t2.token, acme).expect("token").revision);
}

fn clone_clients(c: &Clients) -> Clients {
    Clients { schema: c.schema.clone(), rels: c.rels.clone(), check: c.check.clone() }
}
