//! TeamService against identity and permissions: nesting (depth, cycles, nested members),
//! visibility through permissions, maintainers, deletion moving children up, and the team
//! memberships a removed org member loses.

use tonic::Code;
use trellis_kit::authz::Ref;
use trellis_proto::trellis::identity::v1 as pb;
use trellis_proto::trellis::identity::v1::team_service_client::TeamServiceClient;
use uuid::Uuid;

use crate::common::{bearer, failure, violated_fields};
use crate::organizations::{Orgs, Signed};

async fn teams(t: &Orgs) -> TeamServiceClient<tonic::transport::Channel> {
    TeamServiceClient::new(t.cell.channel("identity").await)
}

async fn create(
    client: &TeamServiceClient<tonic::transport::Channel>,
    who: &Signed,
    name: &str,
    parent: &str,
    visibility: pb::TeamVisibility,
) -> Result<pb::Team, tonic::Status> {
    let request = pb::CreateTeamRequest {
        name: name.into(),
        description: String::new(),
        visibility: visibility.into(),
        parent_team_id: parent.into(),
    };
    client.clone().create_team(bearer(request, &who.token)).await.map(|r| r.into_inner().team.expect("team"))
}

async fn can_team(t: &Orgs, org: Uuid, team: &str, permission: &str, user: Uuid) -> bool {
    t.checks
        .check(org, &Ref::new("team", team), permission, &Ref::new("user", user.to_string()), None)
        .await
        .expect("check")
}

#[tokio::test]
async fn nested_teams_share_members_upwards_and_refuse_cycles_and_depth() {
    let t = Orgs::start().await;
    let client = teams(&t).await;
    let owner = t.register("owner@example.com", "Olive").await;
    let org = owner.org;
    let mia = t.join(&owner, "mia@example.com", "Mia", pb::OrgRole::Member).await;

    let eng = create(&client, &owner, "Eng", "", pb::TeamVisibility::Public).await.expect("eng");
    let platform = create(&client, &owner, "Platform", &eng.id, pb::TeamVisibility::Public).await.expect("platform");
    assert_eq!(platform.parent_team_id, eng.id);
    let dup = create(&client, &owner, "eng", "", pb::TeamVisibility::Public).await;
    assert_eq!(failure(dup), (Code::AlreadyExists, "TEAM_NAME_TAKEN".into()));
    let created: Vec<pb::TeamChanged> = t.payloads("identity.team.created").await;
    assert_eq!(created.len(), 2);
    assert_eq!(created[1].parent_team_id, eng.id);

    let add = pb::AddTeamMembersRequest {
        team_id: platform.id.clone(),
        user_ids: vec![mia.user.to_string()],
        role: pb::TeamRole::Member.into(),
    };
    let added = client.clone().add_team_members(bearer(add.clone(), &owner.token)).await.expect("add").into_inner();
    assert_eq!(added.members.len(), 1);
    // Idempotent: the same role again publishes nothing new.
    client.clone().add_team_members(bearer(add, &owner.token)).await.expect("again");
    let member_added: Vec<pb::TeamMemberChanged> = t.payloads("identity.team_member.added").await;
    assert_eq!(member_added.iter().filter(|e| e.user_id == mia.user.to_string()).count(), 1);
    let stranger =
        pb::AddTeamMembersRequest { team_id: platform.id.clone(), user_ids: vec![Uuid::now_v7().to_string()], role: 0 };
    let refused = client.clone().add_team_members(bearer(stranger, &owner.token)).await.expect_err("not a member");
    assert_eq!((refused.code(), violated_fields(&refused)), (Code::InvalidArgument, vec!["user_ids[0]".to_string()]));

    // Members of a child team are members of the parent, at once.
    assert!(can_team(&t, org, &eng.id, "view", mia.user).await);
    assert!(!can_team(&t, org, &eng.id, "manage", mia.user).await);
    let nested = pb::ListTeamMembersRequest { team_id: eng.id.clone(), include_nested: true };
    let nested = client.clone().list_team_members(bearer(nested, &owner.token)).await.expect("nested").into_inner();
    let via: Vec<(String, String)> = nested.members.iter().map(|m| (m.email.clone(), m.via_team_id.clone())).collect();
    assert!(via.contains(&("mia@example.com".into(), platform.id.clone())), "{via:?}");
    assert!(via.contains(&("owner@example.com".into(), String::new())), "the creator maintains Eng: {via:?}");
    let direct = pb::ListTeamMembersRequest { team_id: eng.id.clone(), include_nested: false };
    let direct = client.clone().list_team_members(bearer(direct, &owner.token)).await.expect("direct").into_inner();
    assert_eq!(direct.members.len(), 1);

    // Eng under Platform would be a cycle; a member may not update Eng.
    let cycle =
        pb::UpdateTeamRequest { team_id: eng.id.clone(), parent_team_id: platform.id.clone(), ..Default::default() };
    assert_eq!(
        failure(client.clone().update_team(bearer(cycle.clone(), &owner.token)).await),
        (Code::FailedPrecondition, "TEAM_CYCLE".into())
    );
    assert_eq!(failure(client.clone().update_team(bearer(cycle, &mia.token)).await).0, Code::PermissionDenied);

    // Five levels at most: Eng > Platform > L3 > L4 > L5, and no sixth.
    let l3 = create(&client, &owner, "L3", &platform.id, pb::TeamVisibility::Public).await.expect("l3");
    let l4 = create(&client, &owner, "L4", &l3.id, pb::TeamVisibility::Public).await.expect("l4");
    let l5 = create(&client, &owner, "L5", &l4.id, pb::TeamVisibility::Public).await.expect("l5");
    let l6 = create(&client, &owner, "L6", &l5.id, pb::TeamVisibility::Public).await;
    assert_eq!(failure(l6), (Code::FailedPrecondition, "TEAM_DEPTH_EXCEEDED".into()));
    let side = create(&client, &owner, "Side", "", pb::TeamVisibility::Public).await.expect("side");
    let too_deep =
        pb::UpdateTeamRequest { team_id: eng.id.clone(), parent_team_id: side.id.clone(), ..Default::default() };
    let too_deep = client.clone().update_team(bearer(too_deep, &owner.token)).await;
    assert_eq!(failure(too_deep), (Code::FailedPrecondition, "TEAM_DEPTH_EXCEEDED".into()));

    // Deleting Platform moves L3 up under Eng; Mia's membership of Platform no longer counts.
    client
        .clone()
        .delete_team(bearer(pb::DeleteTeamRequest { team_id: platform.id.clone() }, &owner.token))
        .await
        .expect("delete");
    let moved = client.clone().get_team(bearer(pb::GetTeamRequest { team_id: l3.id.clone() }, &owner.token)).await;
    assert_eq!(moved.expect("l3").into_inner().team.expect("team").parent_team_id, eng.id);
    let gone = client.clone().get_team(bearer(pb::GetTeamRequest { team_id: platform.id.clone() }, &owner.token)).await;
    assert_eq!(failure(gone), (Code::NotFound, "TEAM_NOT_FOUND".into()));
    trellis_kit::testing::wait_until(std::time::Duration::from_secs(5), || async {
        !can_team(&t, org, &eng.id, "member", mia.user).await
    })
    .await;
}

#[tokio::test]
async fn private_teams_are_invisible_to_outsiders_and_removal_leaves_teams() {
    let t = Orgs::start().await;
    let client = teams(&t).await;
    let owner = t.register("owner@example.com", "Olive").await;
    let org = owner.org;
    let mia = t.join(&owner, "mia@example.com", "Mia", pb::OrgRole::Member).await;
    let viv = t.join(&owner, "viv@example.com", "Viv", pb::OrgRole::Member).await;

    let open = create(&client, &owner, "Open", "", pb::TeamVisibility::Public).await.expect("open");
    let secret = create(&client, &owner, "Secret", "", pb::TeamVisibility::Private).await.expect("secret");
    let add = pb::AddTeamMembersRequest {
        team_id: secret.id.clone(),
        user_ids: vec![mia.user.to_string()],
        role: pb::TeamRole::Maintainer.into(),
    };
    client.clone().add_team_members(bearer(add, &owner.token)).await.expect("add");

    let listed = |who: Signed| {
        let client = client.clone();
        async move {
            let r = client.clone().list_teams(bearer(pb::ListTeamsRequest::default(), &who.token)).await;
            r.expect("list").into_inner().teams.into_iter().map(|t| t.name).collect::<Vec<_>>()
        }
    };
    assert_eq!(listed(viv.clone()).await, ["Open"]);
    assert_eq!(listed(mia.clone()).await, ["Open", "Secret"]);
    assert_eq!(listed(owner.clone()).await, ["Open", "Secret"], "the creator maintains both");
    let hidden = client.clone().get_team(bearer(pb::GetTeamRequest { team_id: secret.id.clone() }, &viv.token)).await;
    assert_eq!(failure(hidden), (Code::NotFound, "TEAM_NOT_FOUND".into()));
    let private_only = pb::ListTeamsRequest { filter: "visibility = private".into(), ..Default::default() };
    let private_only =
        client.clone().list_teams(bearer(private_only, &mia.token)).await.expect("filtered").into_inner();
    assert_eq!(private_only.total_size, 1);

    // A maintainer manages their team; making it public shows it to everyone.
    let public = pb::UpdateTeamRequest {
        team_id: secret.id.clone(),
        visibility: pb::TeamVisibility::Public.into(),
        ..Default::default()
    };
    client.clone().update_team(bearer(public, &mia.token)).await.expect("maintainer updates");
    assert_eq!(listed(viv.clone()).await, ["Open", "Secret"]);

    // Removing Mia from the org removes her teams, with an event each.
    t.remove(&owner, org, mia.user, "").await.expect("remove");
    let removed: Vec<pb::TeamMemberChanged> = t.payloads("identity.team_member.removed").await;
    assert_eq!(
        removed.iter().map(|e| (e.team_id.clone(), e.user_id.clone(), e.role.clone())).collect::<Vec<_>>(),
        vec![(secret.id.clone(), mia.user.to_string(), "maintainer".to_string())]
    );
    assert!(!can_team(&t, org, &secret.id, "manage", mia.user).await);
    let _ = open;
}
