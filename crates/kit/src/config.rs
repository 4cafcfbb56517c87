//! Configuration shared by every service: clap arguments with environment fallbacks (12-factor).
//!
//! The `trellis` binary flattens [`Config`] into its commands, so `trellis serve --help` documents
//! every variable. Defaults are the dev ports of ARCHITECTURE §9.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;

use crate::db::DbSettings;

/// Settings every service reads.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Postgres URL with an owner role: used by `trellis migrate`, and as the host/port/database
    /// that services reach as their own roles.
    #[arg(long, env = "DATABASE_URL", default_value = "postgres://postgres@127.0.0.1:5432/trellis")]
    pub database_url: String,

    /// Password of the per-service Postgres roles (`<service>_svc`), set by `trellis migrate`.
    #[arg(long, env = "SERVICE_DB_PASSWORD", default_value = "trellis-dev", hide_default_value = true)]
    pub service_db_password: String,

    /// Connections per service pool.
    #[arg(long, env = "DB_MAX_CONNECTIONS", default_value_t = 10)]
    pub db_max_connections: u32,

    /// Redis URL (revocation feed, rate limits, caches).
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    pub redis_url: String,

    /// RabbitMQ URL.
    #[arg(long, env = "AMQP_URL", default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    pub amqp_url: String,

    /// The cell's topic exchange.
    #[arg(long, env = "EVENTS_EXCHANGE", default_value = "trellis.events")]
    pub events_exchange: String,

    /// Prefix of every consumer queue (`<prefix><service>.<purpose>`); empty in a cell.
    #[arg(long, env = "EVENTS_QUEUE_PREFIX", default_value = "")]
    pub events_queue_prefix: String,

    /// Deliveries of one message before it is dead-lettered.
    #[arg(long, env = "EVENTS_MAX_DELIVERIES", default_value_t = 5)]
    pub events_max_deliveries: u32,

    /// `iss` of access tokens.
    #[arg(long, env = "JWT_ISSUER", default_value = "http://localhost:8080")]
    pub jwt_issuer: String,

    /// `aud` of access tokens.
    #[arg(long, env = "JWT_AUDIENCE", default_value = "trellis")]
    pub jwt_audience: String,

    /// The URL browsers reach the cell at (the gateway); links in emails start with it, and its
    /// origin is trusted for browser flows.
    #[arg(long, env = "PUBLIC_BASE_URL", default_value = "http://localhost:8080")]
    pub public_base_url: String,

    /// Secret of the cell: signs page tokens and blob URLs. At least 32 bytes in production.
    #[arg(long, env = "CELL_SECRET", default_value = "trellis-dev-cell-secret-change-me!", hide_default_value = true)]
    pub cell_secret: String,

    /// Address the services bind (each on its own port).
    #[arg(long, env = "BIND_HOST", default_value = "127.0.0.1")]
    pub bind_host: String,

    /// Deadline applied to every RPC that carries none.
    #[arg(long, env = "GRPC_REQUEST_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub grpc_request_timeout: Duration,

    /// Concurrent requests per service before new ones wait.
    #[arg(long, env = "GRPC_CONCURRENCY_LIMIT", default_value_t = 1024)]
    pub grpc_concurrency_limit: usize,

    /// How long shutdown waits for in-flight requests.
    #[arg(long, env = "SHUTDOWN_GRACE", default_value = "20s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,

    /// How often a service's scheduler looks for due occurrences of its periodic jobs.
    #[arg(long, env = "JOBS_POLL_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub jobs_poll_interval: Duration,

    /// The time source of the service and its scheduled jobs (the system clock; tests install a
    /// `kit::jobs::TestClock`).
    #[arg(skip)]
    pub clock: crate::jobs::SharedClock,

    /// Where each service is reached by the others.
    #[command(flatten)]
    pub urls: ServiceUrls,

    /// Logging and tracing.
    #[command(flatten)]
    pub telemetry: crate::telemetry::TelemetryConfig,
}

/// gRPC URLs of the services (defaults: the dev ports 50061..50067).
#[derive(Debug, Clone, Args)]
pub struct ServiceUrls {
    /// identity's gRPC URL.
    #[arg(long = "identity-grpc-url", env = "TRELLIS_IDENTITY_GRPC_URL", default_value = "http://127.0.0.1:50061")]
    pub identity: String,
    /// permissions' gRPC URL.
    #[arg(
        long = "permissions-grpc-url",
        env = "TRELLIS_PERMISSIONS_GRPC_URL",
        default_value = "http://127.0.0.1:50062"
    )]
    pub permissions: String,
    /// tasks' gRPC URL.
    #[arg(long = "tasks-grpc-url", env = "TRELLIS_TASKS_GRPC_URL", default_value = "http://127.0.0.1:50063")]
    pub tasks: String,
    /// crm's gRPC URL.
    #[arg(long = "crm-grpc-url", env = "TRELLIS_CRM_GRPC_URL", default_value = "http://127.0.0.1:50064")]
    pub crm: String,
    /// documents' gRPC URL.
    #[arg(long = "documents-grpc-url", env = "TRELLIS_DOCUMENTS_GRPC_URL", default_value = "http://127.0.0.1:50065")]
    pub documents: String,
    /// finance's gRPC URL.
    #[arg(long = "finance-grpc-url", env = "TRELLIS_FINANCE_GRPC_URL", default_value = "http://127.0.0.1:50066")]
    pub finance: String,
    /// notifications' gRPC URL.
    #[arg(
        long = "notifications-grpc-url",
        env = "TRELLIS_NOTIFICATIONS_GRPC_URL",
        default_value = "http://127.0.0.1:50067"
    )]
    pub notifications: String,
}

impl ServiceUrls {
    /// The URL of a service by name.
    pub fn get(&self, service: &str) -> Option<&str> {
        Some(match service {
            "identity" => &self.identity,
            "permissions" => &self.permissions,
            "tasks" => &self.tasks,
            "crm" => &self.crm,
            "documents" => &self.documents,
            "finance" => &self.finance,
            "notifications" => &self.notifications,
            _ => return None,
        })
    }

    /// Sets the URL of a service by name (tests that bind ephemeral ports).
    pub fn set(&mut self, service: &str, url: String) {
        let slot = match service {
            "identity" => &mut self.identity,
            "permissions" => &mut self.permissions,
            "tasks" => &mut self.tasks,
            "crm" => &mut self.crm,
            "documents" => &mut self.documents,
            "finance" => &mut self.finance,
            "notifications" => &mut self.notifications,
            _ => return,
        };
        *slot = url;
    }
}

impl Config {
    /// The database settings of the service pools.
    pub fn db(&self) -> DbSettings {
        DbSettings {
            url: self.database_url.clone(),
            service_password: self.service_db_password.clone(),
            max_connections: self.db_max_connections,
        }
    }

    /// The gRPC and admin addresses of a service: gRPC 5006N, admin 906N (N = 1..7 in
    /// [`crate::module::SERVICES`] order), on [`Config::bind_host`].
    pub fn service_addrs(&self, service: &str) -> anyhow::Result<(SocketAddr, SocketAddr)> {
        let index = crate::module::SERVICES
            .iter()
            .position(|s| *s == service)
            .ok_or_else(|| anyhow::anyhow!("unknown service {service:?}"))? as u16
            + 1;
        let grpc = format!("{}:{}", self.bind_host, 50060 + index).parse()?;
        let admin = format!("{}:{}", self.bind_host, 9060 + index).parse()?;
        Ok((grpc, admin))
    }

    /// A configuration from the environment alone (tests), with defaults for the rest.
    pub fn from_env() -> Self {
        #[derive(clap::Parser)]
        struct Wrapper {
            #[command(flatten)]
            config: Config,
        }
        <Wrapper as clap::Parser>::parse_from(["trellis"]).config
    }
}

/// Parses `250ms`, `30s`, `5m`, `1h` or a number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (number, unit) = s.find(|c: char| !c.is_ascii_digit() && c != '.').map_or((s, "s"), |i| s.split_at(i));
    let value: f64 = number.parse().map_err(|_| format!("invalid duration {s:?}"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("invalid duration unit in {s:?} (use ms, s, m or h)")),
    };
    if !seconds.is_finite() || seconds < 0.0 {
        return Err(format!("invalid duration {s:?}"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn services_have_fixed_dev_ports() {
        let config = Config::from_env();
        let (grpc, admin) = config.service_addrs("tasks").expect("known service");
        assert_eq!(grpc.port(), 50063);
        assert_eq!(admin.port(), 9063);
        assert!(config.service_addrs("nope").is_err());
    }
}
