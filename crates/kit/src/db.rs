//! Postgres: one pool per service, connected as the service's own role, and tenant transactions.
//!
//! Every service owns a schema named after it (`tasks`) and connects as role `<name>_svc`, which
//! is not the owner, so Row-Level Security applies to it. [`Db::tenant_tx`] opens a transaction
//! and runs `SET LOCAL app.org_id / app.user_id`; the policies read them through the
//! `<schema>.current_org_id()` function that [`migrate`] installs, so a query that forgets its
//! tenant filter sees nothing rather than another tenant's rows.
//!
//! [`migrate`] runs as the owner (the admin URL): it creates the role and schema, applies kit's
//! own tables (outbox, inbox, scheduled jobs) and then the service's embedded migrations, and grants the role
//! what it needs.

use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, Executor, PgConnection, PgPool, Postgres};
use uuid::Uuid;

use crate::context::RequestContext;
use crate::error::{Error, Result};

/// A transaction on a service's pool.
pub type Tx = sqlx::Transaction<'static, Postgres>;

/// The Postgres role a service connects as.
pub fn service_role(service: &str) -> String {
    format!("{service}_svc")
}

/// A service's database handle.
#[derive(Debug, Clone)]
pub struct Db {
    pool: PgPool,
    schema: String,
}

/// How a service reaches its database.
#[derive(Debug, Clone)]
pub struct DbSettings {
    /// Base URL (host, port, database); the user and password are replaced by the service role's.
    pub url: String,
    /// The password of the service roles (set by `trellis migrate`).
    pub service_password: String,
    /// Pool size.
    pub max_connections: u32,
}

impl Db {
    /// Connects as `<service>_svc` with `search_path` set to the service's schema.
    pub async fn connect(service: &str, settings: &DbSettings) -> anyhow::Result<Db> {
        let options: PgConnectOptions = settings.url.parse()?;
        let options = options
            .username(&service_role(service))
            .password(&settings.service_password)
            .application_name(&format!("trellis-{service}"))
            .options([("search_path", service)]);
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await?;
        Ok(Db { pool, schema: service.to_string() })
    }

    /// Wraps an existing pool (tests).
    pub fn from_pool(pool: PgPool, schema: impl Into<String>) -> Db {
        Db { pool, schema: schema.into() }
    }

    /// The pool, for work that is not tenant-scoped (global tables, the outbox relay).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The schema this service owns.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// A transaction scoped to the caller's organization (and user, when there is one).
    pub async fn tenant_tx(&self, ctx: &RequestContext) -> Result<Tx> {
        self.tenant_tx_for(ctx.org_id()?, ctx.user_id_opt()).await
    }

    /// A transaction scoped to `org_id`.
    ///
    /// `BEGIN` and the scope travel as one simple query, so opening a tenant transaction costs one
    /// round trip to Postgres, not two.
    pub async fn tenant_tx_for(&self, org_id: Uuid, user_id: Option<Uuid>) -> Result<Tx> {
        Ok(self.pool.begin_with(scoped_begin("begin", org_id, user_id)).await?)
    }

    /// A transaction with no tenant (global tables only; tenant tables show no rows).
    pub async fn tx(&self) -> Result<Tx> {
        Ok(self.pool.begin().await?)
    }

    /// Whether the database answers (readiness).
    pub async fn ping(&self) -> bool {
        sqlx::query("select 1").execute(&self.pool).await.is_ok()
    }
}

/// The name of the unique or check constraint a database error violated, if any.
///
/// Services turn constraint names into domain errors (`users_email_key` → `EMAIL_TAKEN`).
pub fn violated_constraint(e: &sqlx::Error) -> Option<&str> {
    match e {
        sqlx::Error::Database(db) => db.constraint(),
        _ => None,
    }
}

/// Maps a unique-constraint violation named `constraint` to `err`, anything else to INTERNAL.
pub fn on_constraint(e: sqlx::Error, constraint: &str, err: impl FnOnce() -> Error) -> Error {
    if violated_constraint(&e) == Some(constraint) { err() } else { e.into() }
}

/// Kit's own tables, installed in every service schema before the service's migrations.
/// Forward-only; each entry is applied once and recorded in `<schema>.kit_migrations`.
const KIT_MIGRATIONS: &[(i32, &str, &str, Part)] = &[
    (1, "tenant functions, outbox, inbox", include_str!("../migrations/0001_kit.sql"), Part::Core),
    (7, "scheduled jobs", include_str!("../migrations/0007_jobs.sql"), Part::Core),
    (101, "collab: comments, tags, links, activity", include_str!("../migrations/collab_0001.sql"), Part::Collab),
];

/// Which kit component a kit migration belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Core,
    Collab,
}

/// The optional kit components whose tables a module's schema holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KitParts {
    /// [`crate::collab`]: comments, tags, entity links, activity (`Module::with_collab`).
    pub collab: bool,
}

/// Migrates a module: [`migrate_with`] its name, migrations and kit components.
pub async fn migrate_module(admin_url: &str, module: &crate::Module, service_password: &str) -> anyhow::Result<()> {
    migrate_with(admin_url, module.name, service_password, Some(module.migrator), module.kit_parts).await
}

/// Creates the service role and schema, applies kit's tables and the service's migrations, and
/// grants the role DML on the schema. Safe to run concurrently (advisory lock) and repeatedly.
pub async fn migrate(
    admin_url: &str,
    service: &str,
    service_password: &str,
    migrator: Option<&Migrator>,
) -> anyhow::Result<()> {
    migrate_with(admin_url, service, service_password, migrator, KitParts::default()).await
}

/// [`migrate`] with kit's optional components: their tables are installed (once, before the
/// service's migrations) when `parts` asks for them.
pub async fn migrate_with(
    admin_url: &str,
    service: &str,
    service_password: &str,
    migrator: Option<&Migrator>,
    parts: KitParts,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        service.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
        "service names are lowercase identifiers, got {service:?}"
    );
    let mut conn = PgConnection::connect(admin_url).await?;
    // One migrator at a time per cluster: roles are cluster-wide.
    conn.execute("select pg_advisory_lock(7355608)").await?;
    let result = migrate_locked(&mut conn, service, service_password, migrator, parts).await;
    let _ = conn.execute("select pg_advisory_unlock(7355608)").await;
    result
}

async fn migrate_locked(
    conn: &mut PgConnection,
    service: &str,
    password: &str,
    migrator: Option<&Migrator>,
    parts: KitParts,
) -> anyhow::Result<()> {
    let role = service_role(service);
    // Identifiers cannot be bound; `service` is checked to be [a-z_]+ above. The password is a
    // literal quoted by Postgres itself.
    let quoted: String = sqlx::query_scalar("select quote_literal($1)").bind(password).fetch_one(&mut *conn).await?;
    // Roles are cluster-wide while the advisory lock is per database: migrations of different
    // databases (parallel test cells) may race on the same role, so retry the loser.
    let mut attempt = 0;
    loop {
        let result = conn
            .execute(
                format!(
                    "do $$ begin
                        if exists (select 1 from pg_roles where rolname = '{role}') then
                            alter role {role} with login password {quoted};
                        else
                            create role {role} with login password {quoted};
                        end if;
                    end $$"
                )
                .as_str(),
            )
            .await;
        match result {
            Ok(_) => break,
            Err(e) if attempt < 20 => {
                attempt += 1;
                tracing::debug!(error = %e, attempt, "role creation raced; retrying");
                tokio::time::sleep(Duration::from_millis(25 * attempt)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
    conn.execute(format!("create schema if not exists {service}").as_str()).await?;
    conn.execute(format!("set search_path to {service}").as_str()).await?;

    conn.execute(
        "create table if not exists kit_migrations (
            version int primary key, description text not null, applied_at timestamptz not null default now())",
    )
    .await?;
    for (version, description, sql, part) in KIT_MIGRATIONS {
        if *part == Part::Collab && !parts.collab {
            continue;
        }
        let done: bool = sqlx::query_scalar("select exists(select 1 from kit_migrations where version = $1)")
            .bind(version)
            .fetch_one(&mut *conn)
            .await?;
        if !done {
            let mut tx = conn.begin().await?;
            tx.execute(*sql).await?;
            sqlx::query("insert into kit_migrations (version, description) values ($1, $2)")
                .bind(version)
                .bind(description)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        }
    }
    if let Some(migrator) = migrator {
        migrator.run(&mut *conn).await?;
    }

    for grant in [
        format!("grant usage on schema {service} to {role}"),
        format!("grant select, insert, update, delete on all tables in schema {service} to {role}"),
        format!("grant usage, select on all sequences in schema {service} to {role}"),
        format!("grant execute on all functions in schema {service} to {role}"),
        format!("revoke all on {service}.kit_migrations from {role}"),
    ] {
        conn.execute(grant.as_str()).await?;
    }
    if migrator.is_some() {
        conn.execute(format!("revoke all on {service}._sqlx_migrations from {role}").as_str()).await?;
    }
    conn.execute("reset search_path").await?;
    Ok(())
}

/// `{begin}; select set_config('app.org_id', …), set_config('app.user_id', …)`: a transaction's
/// `BEGIN` statement (any isolation) and its tenant scope as one simple query. The values are
/// UUIDs, whose text form (hex digits and dashes) needs no quoting beyond the literal's quotes.
pub fn scoped_begin(begin: &str, org_id: Uuid, user_id: Option<Uuid>) -> String {
    let user = user_id.map(|u| u.to_string()).unwrap_or_default();
    format!("{begin}; select set_config('app.org_id', '{org_id}', true), set_config('app.user_id', '{user}', true)")
}
