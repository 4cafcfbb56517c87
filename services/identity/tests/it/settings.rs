//! SettingsService (spec rule 28, flow 16) against identity and permissions: who may write which
//! scope, resolution user → org → default with its source, schema and size validation with the
//! JSON pointer of the offending part, and module registration of definitions.

use serde_json::json;
use tonic::Code;
use tonic::transport::Channel;
use trellis_kit::auth::Claims;
use trellis_kit::json::{to_proto, to_struct};
use trellis_proto::trellis::identity::v1 as pb;
use trellis_proto::trellis::identity::v1::settings_service_client::SettingsServiceClient;
use uuid::Uuid;

use crate::common::{bearer, failure, violated_fields};
use crate::organizations::{Orgs, Signed};

async fn client(t: &Orgs) -> SettingsServiceClient<Channel> {
    SettingsServiceClient::new(t.cell.channel("identity").await)
}

fn set(scope: pb::SettingScope, namespace: &str, key: &str, value: serde_json::Value) -> pb::SetSettingRequest {
    pb::SetSettingRequest {
        scope: scope.into(),
        namespace: namespace.into(),
        key: key.into(),
        value: Some(to_proto(&value)),
    }
}

async fn effective(c: &SettingsServiceClient<Channel>, who: &Signed, namespace: &str) -> Vec<pb::EffectiveSetting> {
    let request = pb::GetEffectiveSettingsRequest { namespace: namespace.into() };
    c.clone().get_effective_settings(bearer(request, &who.token)).await.expect("effective").into_inner().settings
}

fn find<'a>(settings: &'a [pb::EffectiveSetting], key: &str) -> Option<&'a pb::EffectiveSetting> {
    settings.iter().find(|s| s.key == key)
}

pub fn service_token(t: &Orgs, name: &str) -> String {
    let now = chrono::Utc::now().timestamp();
    t.cell.keys.sign(&Claims {
        iss: t.cell.config.jwt_issuer.clone(),
        sub: format!("service:{name}"),
        aud: t.cell.config.jwt_audience.clone(),
        exp: now + 300,
        nbf: Some(now),
        iat: now,
        jti: Uuid::now_v7().to_string(),
        org: None,
        sid: None,
        roles: vec![],
        scopes: vec![],
        plan: None,
    })
}

#[tokio::test]
async fn admins_set_org_values_users_override_theirs_and_deleting_falls_back() {
    let t = Orgs::start().await;
    let c = client(&t).await;
    let owner = t.register("owner@example.com", "Olive").await;
    let mia = t.join(&owner, "mia@example.com", "Mia", pb::OrgRole::Member).await;

    let color = set(pb::SettingScope::Org, "branding", "primary_color", json!("#112233"));
    let stored = c.clone().set_setting(bearer(color.clone(), &owner.token)).await.expect("owner sets").into_inner();
    assert_eq!(stored.setting.expect("setting").scope_id, owner.org.to_string());
    let denied = c.clone().set_setting(bearer(color, &mia.token)).await;
    assert_eq!(failure(denied).0, Code::PermissionDenied);
    // Users cannot override an admin-managed key in their own scope either.
    let own_color = set(pb::SettingScope::User, "branding", "primary_color", json!("#000000"));
    assert_eq!(failure(c.clone().set_setting(bearer(own_color, &mia.token)).await).0, Code::InvalidArgument);

    // Before anyone sets it, week_start is the registered default.
    let before = effective(&c, &mia, "general").await;
    let week = find(&before, "week_start").expect("week_start");
    assert_eq!((week.source(), week.value.clone()), (pb::SettingSource::Default, Some(to_proto(&json!("monday")))));

    let org_week = set(pb::SettingScope::Org, "general", "week_start", json!("sunday"));
    c.clone().set_setting(bearer(org_week, &owner.token)).await.expect("org week");
    let user_week = set(pb::SettingScope::User, "general", "week_start", json!("saturday"));
    c.clone().set_setting(bearer(user_week, &mia.token)).await.expect("mia's own week");

    let mine = effective(&c, &mia, "general").await;
    let week = find(&mine, "week_start").expect("week_start");
    assert_eq!((week.source(), week.value.clone()), (pb::SettingSource::User, Some(to_proto(&json!("saturday")))));
    let owners = effective(&c, &owner, "general").await;
    assert_eq!(find(&owners, "week_start").expect("week").source(), pb::SettingSource::Org);
    let branding = effective(&c, &mia, "branding").await;
    let color = find(&branding, "primary_color").expect("color");
    assert_eq!((color.source(), color.value.clone()), (pb::SettingSource::Org, Some(to_proto(&json!("#112233")))));

    let listed = pb::ListSettingsRequest { scope: pb::SettingScope::User.into(), namespace: String::new() };
    let listed = c.clone().list_settings(bearer(listed, &mia.token)).await.expect("list").into_inner().settings;
    assert_eq!(listed.iter().map(|s| s.key.as_str()).collect::<Vec<_>>(), vec!["week_start"]);
    assert_eq!(listed[0].scope_id, mia.user.to_string());

    let delete = pb::DeleteSettingRequest {
        scope: pb::SettingScope::User.into(),
        namespace: "general".into(),
        key: "week_start".into(),
    };
    c.clone().delete_setting(bearer(delete.clone(), &mia.token)).await.expect("delete");
    c.clone().delete_setting(bearer(delete, &mia.token)).await.expect("deleting again is idempotent");
    let after = effective(&c, &mia, "general").await;
    let week = find(&after, "week_start").expect("week_start");
    assert_eq!((week.source(), week.value.clone()), (pb::SettingSource::Org, Some(to_proto(&json!("sunday")))));

    // One event per stored change (two sets by the owner, one by Mia, one delete).
    let events: Vec<pb::SettingChanged> = t.payloads("identity.setting.changed").await;
    assert_eq!(events.len(), 4, "{events:?}");
    assert!(events[3].deleted && events[3].scope == "user" && events[3].scope_id == mia.user.to_string());

    // Another organization sees none of it.
    let other = t.register("other@example.com", "Otto").await;
    let theirs = effective(&c, &other, "general").await;
    assert_eq!(find(&theirs, "week_start").expect("week").source(), pb::SettingSource::Default);
    let org_list = pb::ListSettingsRequest { scope: pb::SettingScope::Org.into(), namespace: String::new() };
    let org_list = c.clone().list_settings(bearer(org_list, &other.token)).await.expect("list").into_inner();
    assert!(org_list.settings.is_empty());
}

#[tokio::test]
async fn values_are_validated_against_schema_size_registration_and_scope() {
    let t = Orgs::start().await;
    let c = client(&t).await;
    let owner = t.register("owner@example.com", "Olive").await;

    let bad_color = set(pb::SettingScope::Org, "branding", "primary_color", json!("red"));
    let refused = c.clone().set_setting(bearer(bad_color, &owner.token)).await.expect_err("schema");
    assert_eq!((refused.code(), violated_fields(&refused)), (Code::InvalidArgument, vec!["value".to_string()]));

    let big = set(pb::SettingScope::User, "custom", "notes", json!("x".repeat(17 * 1024)));
    let refused = c.clone().set_setting(bearer(big, &owner.token)).await.expect_err("too big");
    assert_eq!(violated_fields(&refused), vec!["value".to_string()]);

    let unknown = set(pb::SettingScope::Org, "general", "nope", json!(1));
    assert_eq!(
        failure(c.clone().set_setting(bearer(unknown, &owner.token)).await),
        (Code::InvalidArgument, "SETTING_UNKNOWN".into())
    );
    let wrong_scope = set(pb::SettingScope::Org, "appearance", "theme", json!("dark"));
    let refused = c.clone().set_setting(bearer(wrong_scope, &owner.token)).await.expect_err("user-only key");
    assert_eq!(violated_fields(&refused), vec!["scope".to_string()]);
    let bad_names = set(pb::SettingScope::Unspecified, "Bad", "1x", json!(1));
    let refused = c.clone().set_setting(bearer(bad_names, &owner.token)).await.expect_err("names");
    let mut fields = violated_fields(&refused);
    fields.sort();
    assert_eq!(fields, vec!["key", "namespace", "scope"]);

    // Custom keys take any JSON; nothing was stored by the refused requests.
    let custom = set(pb::SettingScope::User, "custom", "layout", json!({"columns": [1, 2], "dense": true}));
    c.clone().set_setting(bearer(custom, &owner.token)).await.expect("custom");
    let stored: i64 = sqlx::query_scalar("select count(*) from identity.settings")
        .fetch_one(&t.cell.owner_pool().await)
        .await
        .expect("count");
    assert_eq!(stored, 1);
}

#[tokio::test]
async fn modules_register_schemas_in_their_own_namespaces() {
    let t = Orgs::start().await;
    let c = client(&t).await;
    let owner = t.register("owner@example.com", "Olive").await;
    let schema = json!({
        "type": "object",
        "properties": {"columns": {"type": "array", "items": {"type": "string", "maxLength": 20}}},
        "required": ["columns"],
        "additionalProperties": false
    });
    let definition = pb::SettingDefinition {
        namespace: "tasks".into(),
        key: "board.default_view".into(),
        scopes: vec![pb::SettingScope::Org.into(), pb::SettingScope::User.into()],
        default_value: Some(to_proto(&json!({"columns": ["todo", "done"]}))),
        json_schema: schema.as_object().map(to_struct),
        writable_by: pb::SettingWriter::Self_.into(),
    };
    let request = pb::RegisterSettingDefinitionsRequest { definitions: vec![definition.clone()] };
    let user_call = c.clone().register_setting_definitions(bearer(request.clone(), &owner.token)).await;
    assert_eq!(failure(user_call), (Code::PermissionDenied, "SERVICE_PRINCIPAL_REQUIRED".into()));
    let tasks = service_token(&t, "tasks");
    let first = c.clone().register_setting_definitions(bearer(request.clone(), &tasks)).await.expect("register");
    assert_eq!(first.into_inner().changed, 1);
    let again = c.clone().register_setting_definitions(bearer(request.clone(), &tasks)).await.expect("again");
    assert_eq!(again.into_inner().changed, 0, "registration is idempotent");
    let crm = service_token(&t, "crm");
    let taken = c.clone().register_setting_definitions(bearer(request, &crm)).await;
    assert_eq!(failure(taken), (Code::FailedPrecondition, "SETTING_NAMESPACE_OWNED".into()));
    let unsupported = pb::SettingDefinition {
        key: "other".into(),
        json_schema: json!({"oneOf": []}).as_object().map(to_struct),
        default_value: None,
        ..definition
    };
    let unsupported = pb::RegisterSettingDefinitionsRequest { definitions: vec![unsupported] };
    let refused = c.clone().register_setting_definitions(bearer(unsupported, &tasks)).await.expect_err("oneOf");
    assert_eq!(violated_fields(&refused), vec!["definitions[0].json_schema".to_string()]);

    // The registered schema applies, with the JSON pointer of the offending part.
    let value = json!({"columns": ["todo", "a column name far too long"], "extra": 1});
    let bad = set(pb::SettingScope::User, "tasks", "board.default_view", value);
    let refused = c.clone().set_setting(bearer(bad, &owner.token)).await.expect_err("schema");
    let mut fields = violated_fields(&refused);
    fields.sort();
    assert_eq!(fields, vec!["value/columns/1", "value/extra"]);
    let view = effective(&c, &owner, "tasks").await;
    assert_eq!(find(&view, "board.default_view").expect("default").source(), pb::SettingSource::Default);
}
