//! The purge of deleted organizations (spec rule 27, ADR 0018), with a shortened schedule and a
//! test clock (purge_after moved into the past): everything identity holds for the org goes, the
//! event is published once, other orgs are untouched, and a row locked by another purger is
//! skipped rather than purged twice.

use std::time::Duration;

use tonic::Code;
use trellis_kit::json::to_proto;
use trellis_kit::testing::wait_until;
use trellis_proto::trellis::identity::v1 as pb;
use trellis_proto::trellis::identity::v1::settings_service_client::SettingsServiceClient;
use trellis_proto::trellis::identity::v1::team_service_client::TeamServiceClient;
use uuid::Uuid;

use crate::common::{PASSWORD, bearer, failure};
use crate::organizations::Orgs;

async fn rows(t: &Orgs, table: &str, org: Uuid) -> i64 {
    sqlx::query_scalar(&format!(
        "select count(*) from {table} where {} = $1",
        if table == "identity.organizations" { "id" } else { "org_id" }
    ))
    .bind(org)
    .fetch_one(&t.cell.owner_pool().await)
    .await
    .expect("count")
}

#[tokio::test]
async fn a_deleted_organization_is_purged_once_after_its_window() {
    let t = Orgs::start_with(|s| s.org_purge_interval = Duration::from_millis(200)).await;
    let ada = t.register("ada@example.com", "Ada").await;
    let b = t.create(&ada, "Doomed", "doomed-org").await.expect("create");
    let b_id: Uuid = b.id.parse().expect("id");
    let in_b = t.switch(&ada, &b.id).await;

    // Some data in B: a team, a setting, an invitation.
    let teams = TeamServiceClient::new(t.cell.channel("identity").await);
    teams
        .clone()
        .create_team(bearer(pb::CreateTeamRequest { name: "Eng".into(), ..Default::default() }, &in_b.token))
        .await
        .expect("team");
    let settings = SettingsServiceClient::new(t.cell.channel("identity").await);
    let color = pb::SetSettingRequest {
        scope: pb::SettingScope::Org.into(),
        namespace: "branding".into(),
        key: "primary_color".into(),
        value: Some(to_proto(&serde_json::json!("#123456"))),
    };
    settings.clone().set_setting(bearer(color, &in_b.token)).await.expect("setting");
    let delete = pb::DeleteOrganizationRequest {
        org_id: b.id.clone(),
        confirmation: "doomed-org".into(),
        password: PASSWORD.into(),
    };
    t.orgs.clone().delete_organization(bearer(delete, &in_b.token)).await.expect("delete");

    // Within the window nothing happens.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(rows(&t, "identity.organizations", b_id).await, 1);

    // Past the window, while another purger holds the row, this one skips it.
    let owner = t.cell.owner_pool().await;
    sqlx::query("update identity.organizations set purge_after = now() - interval '1 minute' where id = $1")
        .bind(b_id)
        .execute(&owner)
        .await
        .expect("test clock");
    let mut other_purger = owner.begin().await.expect("tx");
    sqlx::query("select id from identity.organizations where id = $1 for update")
        .bind(b_id)
        .execute(&mut *other_purger)
        .await
        .expect("lock");
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(rows(&t, "identity.organizations", b_id).await, 1, "a locked org is skipped");
    other_purger.rollback().await.expect("release");

    wait_until(Duration::from_secs(10), || async { rows(&t, "identity.organizations", b_id).await == 0 }).await;
    for table in
        ["identity.org_members", "identity.teams", "identity.team_members", "identity.settings", "identity.invitations"]
    {
        assert_eq!(rows(&t, table, b_id).await, 0, "{table}");
    }
    let purged: Vec<pb::OrganizationDeleted> = t.payloads("identity.organization.purged").await;
    assert_eq!(purged.len(), 1);
    assert_eq!((purged[0].org_id.as_str(), purged[0].slug.as_str()), (b.id.as_str(), "doomed-org"));
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(t.payloads::<pb::OrganizationDeleted>("identity.organization.purged").await.len(), 1, "purged once");

    // Ada's personal org is untouched; B cannot be restored any more; its slug is free again.
    assert_eq!(rows(&t, "identity.org_members", ada.org).await, 1);
    let restore = t
        .orgs
        .clone()
        .restore_organization(bearer(pb::RestoreOrganizationRequest { org_id: b.id.clone() }, &ada.token))
        .await;
    assert_eq!(failure(restore).0, Code::NotFound);
    t.create(&ada, "Reborn", "doomed-org").await.expect("the slug is free");
}
