//! FeatureFlagService (spec rule 29, flow 17): platform admins manage flags; users, orgs and a
//! stable percentage of subjects get them; services evaluate them; changes apply at once.

use std::collections::HashMap;

use tonic::Code;
use tonic::transport::Channel;
use trellis_proto::trellis::identity::v1 as pb;
use trellis_proto::trellis::identity::v1::feature_flag_service_client::FeatureFlagServiceClient;
use uuid::Uuid;

use crate::common::{bearer, failure, violated_fields};
use crate::organizations::{Orgs, Signed};
use crate::settings::service_token;

async fn client(t: &Orgs) -> FeatureFlagServiceClient<Channel> {
    FeatureFlagServiceClient::new(t.cell.channel("identity").await)
}

fn rule(kind: pb::FlagRuleType, ids: &[Uuid], value: i32) -> pb::FlagRule {
    pb::FlagRule { r#type: kind.into(), ids: ids.iter().map(Uuid::to_string).collect(), value, enabled: true }
}

async fn mine(c: &FeatureFlagServiceClient<Channel>, who: &Signed) -> HashMap<String, bool> {
    c.clone()
        .get_my_features(bearer(pb::GetMyFeaturesRequest {}, &who.token))
        .await
        .expect("features")
        .into_inner()
        .flags
}

#[tokio::test]
async fn flags_target_users_orgs_and_a_stable_percentage() {
    let t = Orgs::start().await;
    let c = client(&t).await;
    let admin = service_token(&t, "platform-admin");
    let u1 = t.register("u1@example.com", "Una").await;
    let o2_owner = t.register("o2@example.com", "Otto").await;
    let someone = t.register("someone@example.com", "Sam").await;

    let create = pb::CreateFlagRequest {
        key: "kanban_view".into(),
        description: "The kanban board view".into(),
        enabled: false,
        rules: vec![
            rule(pb::FlagRuleType::User, &[u1.user], 0),
            rule(pb::FlagRuleType::Org, &[o2_owner.org], 0),
            rule(pb::FlagRuleType::Percentage, &[], 25),
        ],
    };
    let by_user = c.clone().create_flag(bearer(create.clone(), &u1.token)).await;
    assert_eq!(failure(by_user).0, Code::PermissionDenied);
    let created = c.clone().create_flag(bearer(create.clone(), &admin)).await.expect("create").into_inner();
    assert_eq!(created.flag.expect("flag").rules.len(), 3);
    assert_eq!(
        failure(c.clone().create_flag(bearer(create, &admin)).await),
        (Code::AlreadyExists, "FLAG_EXISTS".into())
    );

    assert_eq!(mine(&c, &u1).await.get("kanban_view"), Some(&true));
    assert_eq!(mine(&c, &o2_owner).await.get("kanban_view"), Some(&true));

    // 1,000 synthetic users: about a quarter, and the same answer every time.
    let svc = service_token(&t, "tasks");
    let org = Uuid::now_v7().to_string();
    let mut on = 0;
    let mut first = Vec::new();
    for i in 0..1000u128 {
        let request = pb::EvaluateFlagsRequest {
            keys: vec!["kanban_view".into(), "never_created".into()],
            org_id: org.clone(),
            user_id: Uuid::from_u128(0x5eed_0000 + i).to_string(),
        };
        let flags = c.clone().evaluate_flags(bearer(request, &svc)).await.expect("evaluate").into_inner().flags;
        assert_eq!(flags.get("never_created"), Some(&false), "unknown keys are false");
        let answer = flags["kanban_view"];
        on += usize::from(answer);
        first.push(answer);
    }
    assert!((200..=300).contains(&on), "{on} of 1000");
    for (i, expected) in first.iter().enumerate().take(100) {
        let request = pb::EvaluateFlagsRequest {
            keys: vec!["kanban_view".into()],
            org_id: Uuid::now_v7().to_string(),
            user_id: Uuid::from_u128(0x5eed_0000 + i as u128).to_string(),
        };
        let again = c.clone().evaluate_flags(bearer(request, &svc)).await.expect("evaluate").into_inner().flags;
        assert_eq!(again["kanban_view"], *expected, "the bucket depends on the user only");
    }
    let from_user =
        pb::EvaluateFlagsRequest { keys: vec!["kanban_view".into()], org_id: org.clone(), user_id: String::new() };
    assert_eq!(failure(c.clone().evaluate_flags(bearer(from_user, &u1.token)).await).1, "SERVICE_PRINCIPAL_REQUIRED");

    // A change applies at once: switch the default on and drop the rules.
    let update = pb::UpdateFlagRequest {
        key: "kanban_view".into(),
        enabled: true,
        update_mask: Some(prost_types::FieldMask { paths: vec!["enabled".into(), "rules".into()] }),
        ..Default::default()
    };
    assert_eq!(failure(c.clone().update_flag(bearer(update.clone(), &someone.token)).await).0, Code::PermissionDenied);
    let updated = c.clone().update_flag(bearer(update, &admin)).await.expect("update").into_inner().flag.expect("flag");
    assert!(updated.enabled && updated.rules.is_empty() && updated.description == "The kanban board view");
    assert_eq!(mine(&c, &someone).await.get("kanban_view"), Some(&true));

    let listed =
        c.clone().list_flags(bearer(pb::ListFlagsRequest::default(), &admin)).await.expect("list").into_inner();
    assert_eq!((listed.total_size, listed.flags[0].key.as_str()), (1, "kanban_view"));

    c.clone().delete_flag(bearer(pb::DeleteFlagRequest { key: "kanban_view".into() }, &admin)).await.expect("delete");
    assert!(!mine(&c, &someone).await.contains_key("kanban_view"));
    let gone = c.clone().delete_flag(bearer(pb::DeleteFlagRequest { key: "kanban_view".into() }, &admin)).await;
    assert_eq!(failure(gone), (Code::NotFound, "FLAG_NOT_FOUND".into()));

    let events: Vec<pb::FeatureFlagChanged> = t.payloads("identity.feature_flag.changed").await;
    let summary: Vec<(bool, bool, usize)> = events.iter().map(|e| (e.enabled, e.deleted, e.rules.len())).collect();
    assert_eq!(summary, vec![(false, false, 3), (true, false, 0), (false, true, 0)]);
}

#[tokio::test]
async fn malformed_flags_are_refused_field_by_field() {
    let t = Orgs::start().await;
    let c = client(&t).await;
    let admin = service_token(&t, "platform-admin");
    let bad = pb::CreateFlagRequest {
        key: "Kanban".into(),
        description: String::new(),
        enabled: true,
        rules: vec![
            pb::FlagRule {
                r#type: pb::FlagRuleType::User.into(),
                ids: vec!["not-a-uuid".into()],
                value: 0,
                enabled: true,
            },
            rule(pb::FlagRuleType::Percentage, &[], 101),
            pb::FlagRule::default(),
        ],
    };
    let refused = c.clone().create_flag(bearer(bad, &admin)).await.expect_err("invalid");
    let mut fields = violated_fields(&refused);
    fields.sort();
    assert_eq!(fields, vec!["key", "rules[0].ids[0]", "rules[1].value", "rules[2].type"]);
    let listed =
        c.clone().list_flags(bearer(pb::ListFlagsRequest::default(), &admin)).await.expect("list").into_inner();
    assert_eq!(listed.total_size, 0);
}
