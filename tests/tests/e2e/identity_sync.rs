//! Identity's facts in the permissions service (permissions spec, flows 7 and 12): memberships,
//! roles, teams, nested teams and API keys become relationships through identity's direct writes
//! and its events; an old event delivered again changes nothing; and a second permissions
//! replica stops answering from its warm cache once a team membership is removed.

use std::time::Duration;

use prost::Message;
use reqwest::{Method, StatusCode};
use serde_json::json;
use trellis_kit::testing::{TestCell, wait_until};
use trellis_proto::trellis::events::v1::Envelope;
use trellis_proto::trellis::identity::v1::MemberAdded;
use trellis_proto::trellis::permissions::v1 as pb;
use trellis_proto::trellis::permissions::v1::check_service_client::CheckServiceClient;
use trellis_proto::trellis::permissions::v1::relationship_service_client::RelationshipServiceClient;
use uuid::Uuid;

use crate::common::Platform;
use crate::roles::{authed, documents, join, org_of, service_token, write_documents};

fn object(ty: &str, id: &str) -> Option<pb::ObjectReference> {
    Some(pb::ObjectReference { object_type: ty.into(), object_id: id.into() })
}

fn consistency(requirement: pb::consistency::Requirement) -> Option<pb::Consistency> {
    Some(pb::Consistency { requirement: Some(requirement) })
}

fn fully_consistent() -> Option<pb::Consistency> {
    consistency(pb::consistency::Requirement::FullyConsistent(true))
}

/// Check(`ty:id`, `permission`, `subject_ty:subject`) on one replica as a service.
async fn check(
    channel: &tonic::transport::Channel,
    token: &str,
    (ty, id): (&str, &str),
    permission: &str,
    (subject_ty, subject): (&str, &str),
    consistency: Option<pb::Consistency>,
) -> bool {
    let req = pb::CheckRequest {
        resource: object(ty, id),
        permission: permission.into(),
        subject: Some(pb::SubjectReference { object: object(subject_ty, subject), optional_relation: String::new() }),
        consistency,
        ..Default::default()
    };
    let answer = CheckServiceClient::new(channel.clone()).check(authed(req, token)).await.expect("check").into_inner();
    answer.permissionship == pb::Permissionship::HasPermission as i32
}

/// Every stored relationship of `resource_type` whose subject is `subject_ty:subject`, as text.
async fn tuples_of(p: &Platform, org: &str, resource_type: &str, (subject_ty, subject): (&str, &str)) -> Vec<String> {
    let req = pb::ReadRelationshipsRequest {
        filter: Some(pb::RelationshipFilter {
            resource_type: resource_type.into(),
            optional_subject_type: subject_ty.into(),
            optional_subject_id: subject.into(),
            ..Default::default()
        }),
        consistency: fully_consistent(),
        page_size: 100,
        page_token: String::new(),
    };
    let mut rels = RelationshipServiceClient::new(p.cell.channel("permissions").await);
    let answer = rels.read_relationships(authed(req, &service_token(p, "identity", org))).await.expect("read");
    answer
        .into_inner()
        .relationships
        .iter()
        .map(|r| {
            let res = r.resource.as_ref().expect("resource");
            let sub = r.subject.as_ref().expect("subject");
            let so = sub.object.as_ref().expect("subject object");
            let rel =
                if sub.optional_relation.is_empty() { String::new() } else { format!("#{}", sub.optional_relation) };
            format!("{}:{}#{}@{}:{}{rel}", res.object_type, res.object_id, r.relation, so.object_type, so.object_id)
        })
        .collect()
}

/// Polls `condition` for up to 2 s (identity's writes and events arrive after its response).
async fn within_two_seconds<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while !condition().await {
        assert!(tokio::time::Instant::now() < deadline, "{what} did not happen within 2 s");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Marks the user's email verified (as following the emailed link would); API keys need it.
async fn verified(p: &Platform, user_id: &str) {
    sqlx::query("update identity.users set email_verified_at = now() where id = $1::uuid")
        .bind(user_id)
        .execute(&p.cell.owner_pool().await)
        .await
        .expect("verify email");
}

/// Publishes identity's `member.added` of `user` again, under a new event id (so that the
/// consumer's de-duplication does not hide it), and waits until the permissions service has
/// consumed it.
async fn redeliver_member_added(p: &Platform, user: &str) {
    let pool = p.cell.owner_pool().await;
    let rows: Vec<Vec<u8>> = sqlx::query_scalar(
        "select envelope from identity.outbox where event_type = 'identity.member.added' order by created_at, id",
    )
    .fetch_all(&pool)
    .await
    .expect("identity's outbox");
    let mut envelope = rows
        .iter()
        .filter_map(|bytes| Envelope::decode(bytes.as_slice()).ok())
        .find(|e| e.payload.as_ref().and_then(|a| a.to_msg::<MemberAdded>().ok()).is_some_and(|m| m.user_id == user))
        .expect("the member.added of the user");
    let id = Uuid::now_v7();
    envelope.id = id.to_string();
    sqlx::query("insert into identity.outbox (id, event_type, envelope) values ($1, 'identity.member.added', $2)")
        .bind(id)
        .bind(envelope.encode_to_vec())
        .execute(&pool)
        .await
        .expect("stage the old event again");
    wait_until(Duration::from_secs(10), || {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>("select count(*) from permissions.inbox where event_id = $1")
                .bind(id)
                .fetch_one(&pool)
                .await
                .is_ok_and(|n| n == 1)
        }
    })
    .await;
}

#[tokio::test]
async fn memberships_roles_teams_and_api_keys_reach_the_relationships_and_old_events_change_nothing() {
    let p = Platform::start().await;
    let ada = p.register("Ada", "ada.sync@example.com", None).await;
    verified(&p, &ada.id).await;
    let org = org_of(&ada.token);
    let channel = p.cell.channel("permissions").await;
    let token = service_token(&p, "identity", &org);

    // Invite and register bob as a member of team eng: he can contribute and is in eng.
    let eng = p.post("/api/v1/teams", Some(&ada.token), json!({"name": "eng"})).await;
    assert_eq!(eng.status, StatusCode::CREATED, "{eng:?}");
    let eng = eng.body["team"]["id"].as_str().expect("id").to_string();
    let invited = p
        .post(
            "/api/v1/invitations",
            Some(&ada.token),
            json!({"email": "bob.sync@example.com", "role": "member",
               "team_ids": [eng]}),
        )
        .await;
    assert_eq!(invited.status, StatusCode::CREATED, "{invited:?}");
    let invitation = p.invitation_token("bob.sync@example.com").await;
    let bob = p.register("Bob", "bob.sync@example.com", Some(&invitation)).await;
    let bob_ref = ("user", bob.id.as_str());
    within_two_seconds("bob's membership and team", || async {
        check(&channel, &token, ("organization", &org), "contribute", bob_ref, fully_consistent()).await
            && check(&channel, &token, ("team", &eng), "member", bob_ref, fully_consistent()).await
    })
    .await;

    // Viewer: no longer contributes, still views.
    let member = format!("/api/v1/organizations/{org}/members/{}", bob.id);
    let changed = p.call(Method::PATCH, &member, Some(&ada.token), Some(json!({"role": "viewer"}))).await;
    assert_eq!(changed.status, StatusCode::OK, "{changed:?}");
    within_two_seconds("the role change", || async {
        !check(&channel, &token, ("organization", &org), "contribute", bob_ref, fully_consistent()).await
    })
    .await;
    assert!(check(&channel, &token, ("organization", &org), "view", bob_ref, fully_consistent()).await);

    // Removed: no relationship in the org names him any more.
    let removed = p.call(Method::DELETE, &member, Some(&ada.token), None).await;
    assert!(removed.status.is_success(), "{removed:?}");
    within_two_seconds("the removal", || async {
        tuples_of(&p, &org, "organization", bob_ref).await.is_empty()
            && tuples_of(&p, &org, "team", bob_ref).await.is_empty()
    })
    .await;

    // The old member.added again: the source-version guard skips it.
    redeliver_member_added(&p, &bob.id).await;
    assert_eq!(tuples_of(&p, &org, "organization", bob_ref).await, Vec::<String>::new());
    assert!(!check(&channel, &token, ("organization", &org), "view", bob_ref, fully_consistent()).await);

    // A nested team: platform under eng makes platform's members eng's members.
    let platform = p.post("/api/v1/teams", Some(&ada.token), json!({"name": "platform", "parent_team_id": eng})).await;
    assert_eq!(platform.status, StatusCode::CREATED, "{platform:?}");
    let platform = platform.body["team"]["id"].as_str().expect("id").to_string();
    let nested = format!("team:{eng}#member@team:{platform}#member");
    within_two_seconds("the nested team's tuple", || async {
        tuples_of(&p, &org, "team", ("team", &platform)).await.contains(&nested)
    })
    .await;

    // An API key holds its role in the org until it is revoked.
    let created = p
        .post("/api/v1/api-keys", Some(&ada.token), json!({"name": "CI", "scopes": ["tasks:read"], "role": "viewer"}))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{created:?}");
    let key = created.body["api_key"]["id"].as_str().expect("id").to_string();
    let key_ref = ("api_key", key.as_str());
    within_two_seconds("the key's role", || async {
        tuples_of(&p, &org, "organization", key_ref).await == vec![format!("organization:{org}#viewer@api_key:{key}")]
    })
    .await;
    assert!(check(&channel, &token, ("organization", &org), "view", key_ref, fully_consistent()).await);
    let revoked = p.call(Method::DELETE, &format!("/api/v1/api-keys/{key}"), Some(&ada.token), None).await;
    assert!(revoked.status.is_success(), "{revoked:?}");
    within_two_seconds("the revoked key's tuples to go", || async {
        tuples_of(&p, &org, "organization", key_ref).await.is_empty()
    })
    .await;
    assert!(!check(&channel, &token, ("organization", &org), "view", key_ref, fully_consistent()).await);
}

#[tokio::test]
async fn a_removal_through_identity_voids_the_warm_caches_of_both_replicas() {
    let p = Platform::start().await;
    let ada = p.register("Ada", "ada.replicas@example.com", None).await;
    verified(&p, &ada.id).await;
    let org = org_of(&ada.token);
    documents(&p, &org).await;
    let eng = p.post("/api/v1/teams", Some(&ada.token), json!({"name": "eng"})).await;
    assert_eq!(eng.status, StatusCode::CREATED, "{eng:?}");
    let eng = eng.body["team"]["id"].as_str().expect("id").to_string();
    write_documents(&p, &org, &[&format!("test_document:spec#viewer@team:{eng}#member")]).await;
    let bob = join(&p, &ada, "bob.replicas@example.com", "Bob", "member").await;
    let added = p.post(&format!("/api/v1/teams/{eng}/members"), Some(&ada.token), json!({"user_ids": [bob.id]})).await;
    assert_eq!(added.status, StatusCode::OK, "{added:?}");

    // A second replica of the permissions service: same database, same Redis.
    let second = TestCell::start_with(p.cell.config.as_ref().clone(), vec![trellis_permissions::module()]).await;
    let replicas = [
        (p.cell.channel("permissions").await, service_token(&p, "acceptance", &org)),
        (
            second.channel("permissions").await,
            second.keys.service_token(&second.config, "acceptance", Some(org.parse().expect("org id"))),
        ),
    ];
    let spec = ("test_document", "spec");
    let bob_ref = ("user", bob.id.as_str());
    // Warm both caches with `has` (minimize_latency answers come from the cache once warm).
    for (channel, token) in &replicas {
        within_two_seconds("bob's view through eng", || async {
            check(channel, token, spec, "view", bob_ref, fully_consistent()).await
        })
        .await;
        for _ in 0..2 {
            assert!(check(channel, token, spec, "view", bob_ref, None).await);
        }
    }

    // Remove bob from eng through identity.
    let removed =
        p.call(Method::DELETE, &format!("/api/v1/teams/{eng}/members/{}", bob.id), Some(&ada.token), None).await;
    assert!(removed.status.is_success(), "{removed:?}");
    within_two_seconds("the team membership's removal", || async {
        tuples_of(&p, &org, "team", bob_ref).await.is_empty()
    })
    .await;
    // A token at least as fresh as the removal answers `no` at once on either replica.
    let read = RelationshipServiceClient::new(p.cell.channel("permissions").await)
        .read_relationships(authed(
            pb::ReadRelationshipsRequest {
                filter: Some(pb::RelationshipFilter { resource_type: "team".into(), ..Default::default() }),
                consistency: fully_consistent(),
                page_size: 1,
                page_token: String::new(),
            },
            &service_token(&p, "identity", &org),
        ))
        .await
        .expect("read")
        .into_inner();
    let after_removal = read.read_at.expect("a consistency token");
    for (channel, token) in &replicas {
        let fresh = consistency(pb::consistency::Requirement::AtLeastAsFresh(after_removal.clone()));
        assert!(!check(channel, token, spec, "view", bob_ref, fresh).await);
    }
    // And minimize_latency stops serving the warm `has` on both (invalidation over Redis; the spec
    // asks for 100 ms, measured in the benchmarks rather than asserted here).
    for (channel, token) in &replicas {
        within_two_seconds("the cache invalidation", || async {
            !check(channel, token, spec, "view", bob_ref, None).await
        })
        .await;
    }
}
