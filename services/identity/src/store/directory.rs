//! Queries of the user directory (BatchGetUsers): the global `users` table by id.

use sqlx::PgPool;
use uuid::Uuid;

use super::{USER_COLUMNS, User};

/// The users with these ids (any order; unknown ids are absent).
pub async fn users_by_ids(pool: &PgPool, ids: &[Uuid]) -> sqlx::Result<Vec<User>> {
    sqlx::query_as(&format!("select {USER_COLUMNS} from identity.users where id = any($1)"))
        .bind(ids)
        .fetch_all(pool)
        .await
}
