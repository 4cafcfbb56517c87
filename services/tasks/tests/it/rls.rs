//! Row-Level Security holds even for a query that forgets its tenant.

use trellis_kit::db::Db;

use crate::common::{Caller, cell};

#[tokio::test]
async fn an_unfiltered_select_sees_only_the_tenant_of_its_transaction() {
    let cell = cell().await;
    let mut a = Caller::new(&cell).await;
    let mut b = Caller::new(&cell).await;
    for i in 0..2 {
        a.create(&format!("a{i}")).await;
    }
    for i in 0..3 {
        b.create(&format!("b{i}")).await;
    }

    // Connected as the service role, exactly as the service is.
    let db = Db::connect("tasks", &cell.config.db()).await.expect("service pool");
    let count = "select count(*) from tasks.tasks";

    let mut tx = db.tenant_tx_for(a.org, Some(a.user)).await.expect("tenant tx");
    let seen: i64 = sqlx::query_scalar(count).fetch_one(&mut *tx).await.expect("count");
    assert_eq!(seen, 2, "org A sees only its own tasks");
    let boards: i64 =
        sqlx::query_scalar("select count(*) from tasks.boards").fetch_one(&mut *tx).await.expect("boards");
    assert_eq!(boards, 1);
    tx.rollback().await.expect("rollback");

    let mut tx = db.tenant_tx_for(b.org, None).await.expect("tenant tx");
    let seen: i64 = sqlx::query_scalar(count).fetch_one(&mut *tx).await.expect("count");
    assert_eq!(seen, 3, "org B sees only its own tasks");
    tx.rollback().await.expect("rollback");

    // Outside any tenant transaction: nothing, on a fresh transaction and on the bare pool
    // (whose connections have carried tenant settings before).
    let mut tx = db.tx().await.expect("tx");
    let seen: i64 = sqlx::query_scalar(count).fetch_one(&mut *tx).await.expect("count");
    assert_eq!(seen, 0);
    tx.rollback().await.expect("rollback");
    for _ in 0..3 {
        let seen: i64 = sqlx::query_scalar(count).fetch_one(db.pool()).await.expect("count");
        assert_eq!(seen, 0);
    }

    // Writing into another tenant is refused by the policy's WITH CHECK.
    let mut tx = db.tenant_tx_for(a.org, Some(a.user)).await.expect("tenant tx");
    let moved = sqlx::query("update tasks.tasks set org_id = $1").bind(b.org).execute(&mut *tx).await;
    let refused = moved.expect_err("a row cannot be moved into another organization").to_string();
    assert!(refused.contains("row-level security"), "{refused}");
    tx.rollback().await.expect("rollback");

    // The owner (no RLS for a superuser) sees all five: the rows exist.
    let total: i64 = sqlx::query_scalar(count).fetch_one(&cell.owner_pool().await).await.expect("count");
    assert_eq!(total, 5);
}
