//! Row-Level Security on identity's tenant tables, seen as the service role (not the owner):
//! queries without any tenant filter see only the transaction's tenant.

use trellis_kit::db::Db;
use trellis_proto::trellis::identity::v1 as pb;
use uuid::Uuid;

use crate::common::{Identity, registration};

struct Org {
    id: Uuid,
    owner: Uuid,
}

async fn org_of(id: &Identity, access_token: &str) -> Org {
    let claims = id.verify(access_token).await;
    Org { id: claims.org.expect("org").parse().expect("uuid"), owner: claims.sub.parse().expect("uuid") }
}

#[tokio::test]
async fn unfiltered_selects_see_only_the_transactions_tenant() {
    let id = Identity::start().await;
    let a_owner = id.register("a@example.com", "Anna").await;
    let b_owner = id.register("b@example.com", "Bert").await;
    let a = org_of(&id, &a_owner.access_token).await;
    let b = org_of(&id, &b_owner.access_token).await;

    // Carol joins A through an invitation; B has a pending invitation of its own.
    id.invite(&a_owner.access_token, "carol@example.com", pb::OrgRole::Member).await.expect("invite to A");
    let sent: Vec<pb::InvitationSent> = id.payloads("identity.invitation.sent").await;
    let token = sent[0].link_url.rsplit_once("token=").expect("token").1.to_string();
    let carol = id
        .try_register(pb::RegisterRequest { invitation_token: token, ..registration("carol@example.com", "Carol") })
        .await
        .expect("carol joins A");
    let carol_id: Uuid = id.verify(&carol.access_token).await.sub.parse().expect("uuid");
    id.invite(&b_owner.access_token, "dora@example.com", pb::OrgRole::Viewer).await.expect("invite to B");

    let db = Db::connect("identity", &id.cell.config.db()).await.expect("connect as identity_svc");

    // Tenant A, no user: A's rows only.
    let mut tx = db.tenant_tx_for(a.id, None).await.expect("tenant tx");
    let members: Vec<(Uuid, Uuid)> =
        sqlx::query_as("select org_id, user_id from identity.org_members").fetch_all(&mut *tx).await.expect("members");
    assert_eq!(members.len(), 2);
    assert!(members.iter().all(|(org, _)| *org == a.id), "{members:?}");
    let orgs: Vec<Uuid> =
        sqlx::query_scalar("select id from identity.organizations").fetch_all(&mut *tx).await.expect("orgs");
    assert_eq!(orgs, vec![a.id]);
    let invitations: Vec<Uuid> =
        sqlx::query_scalar("select org_id from identity.invitations").fetch_all(&mut *tx).await.expect("invitations");
    assert_eq!(invitations, vec![a.id]);
    tx.rollback().await.expect("rollback");

    // Tenant A acting as B's owner (the org switcher's view): A's rows plus Bert's own membership
    // and organization, and nothing else of B.
    let mut tx = db.tenant_tx_for(a.id, Some(b.owner)).await.expect("tenant tx");
    let mut members: Vec<(Uuid, Uuid)> =
        sqlx::query_as("select org_id, user_id from identity.org_members").fetch_all(&mut *tx).await.expect("members");
    members.sort();
    let mut expected = vec![(a.id, a.owner), (a.id, carol_id), (b.id, b.owner)];
    expected.sort();
    assert_eq!(members, expected);
    let mut orgs: Vec<Uuid> =
        sqlx::query_scalar("select id from identity.organizations").fetch_all(&mut *tx).await.expect("orgs");
    orgs.sort();
    let mut both = vec![a.id, b.id];
    both.sort();
    assert_eq!(orgs, both);
    let invitations: Vec<Uuid> =
        sqlx::query_scalar("select org_id from identity.invitations").fetch_all(&mut *tx).await.expect("invitations");
    assert_eq!(invitations, vec![a.id], "invitations never follow the user");
    tx.rollback().await.expect("rollback");

    // Writes into another tenant are refused by the policies' WITH CHECK.
    let mut tx = db.tenant_tx_for(a.id, Some(a.owner)).await.expect("tenant tx");
    let foreign = sqlx::query("insert into identity.org_members (org_id, user_id, role) values ($1, $2, 'member')")
        .bind(b.id)
        .bind(a.owner)
        .execute(&mut *tx)
        .await;
    assert!(foreign.is_err(), "a tenant transaction cannot write another tenant's rows");
    tx.rollback().await.expect("rollback");

    // No tenant at all: the tenant tables look empty; the global ones do not.
    let mut tx = db.tx().await.expect("tx");
    for table in ["organizations", "org_members", "invitations"] {
        let n: i64 = sqlx::query_scalar(&format!("select count(*) from identity.{table}"))
            .fetch_one(&mut *tx)
            .await
            .expect("count");
        assert_eq!(n, 0, "{table} without a tenant");
    }
    let users: i64 =
        sqlx::query_scalar("select count(*) from identity.users").fetch_one(&mut *tx).await.expect("count");
    assert_eq!(users, 3);
}

#[tokio::test]
async fn invitations_are_found_by_token_only_through_the_definer_function() {
    let id = Identity::start().await;
    let owner = id.register("f@example.com", "Fern").await;
    let org = org_of(&id, &owner.access_token).await;
    id.invite(&owner.access_token, "g@example.com", pb::OrgRole::Member).await.expect("invite");
    let sent: Vec<pb::InvitationSent> = id.payloads("identity.invitation.sent").await;
    let token = sent[0].link_url.rsplit_once("token=").expect("token").1.to_string();
    let hash = trellis_identity::tokens::hash_token(&token);

    let db = Db::connect("identity", &id.cell.config.db()).await.expect("connect as identity_svc");
    let direct: Option<Uuid> = sqlx::query_scalar("select id from identity.invitations where token_hash = $1")
        .bind(hash.as_slice())
        .fetch_optional(db.pool())
        .await
        .expect("query");
    assert_eq!(direct, None, "RLS hides the row before the tenant is known");
    let found = trellis_identity::store::find_invitation(db.pool(), &hash).await.expect("lookup");
    assert_eq!(found.map(|(_, org_id)| org_id), Some(org.id));
    let missing = trellis_identity::store::find_invitation(db.pool(), &[0u8; 32]).await.expect("lookup");
    assert_eq!(missing, None);
}
