//! `trellis`: what every container runs.
//!
//! - `trellis serve <service>... | all` serves the named services (and `gateway`) in one process.
//! - `trellis migrate [<service>...]` creates roles and schemas and applies migrations.

use std::sync::Arc;

use clap::{Parser, Subcommand};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use trellis_kit::auth::Authenticator;
use trellis_kit::config::Config;
use trellis_kit::module::SERVICES;

#[derive(Parser, Debug)]
#[command(name = "trellis", version, about = "Trellis: a multi-tenant business platform", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once at start-up: the size of the `serve` variant (every service's settings) is irrelevant.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
enum Command {
    /// Serve services (identity permissions tasks crm documents finance notifications gateway), or `all`.
    Serve {
        /// Services to serve, or `all`.
        #[arg(required = true)]
        services: Vec<String>,
        #[command(flatten)]
        config: Config,
        #[command(flatten)]
        identity: trellis_identity::IdentityConfig,
        #[command(flatten)]
        notifications: trellis_notifications::NotificationsConfig,
        #[command(flatten)]
        gateway: trellis_gateway::GatewayConfig,
    },
    /// Inspect or replay a consumer's dead letters, e.g. `trellis dead-letters notifications.tasks --replay`.
    DeadLetters {
        /// The consumer queue, without the cell's prefix (e.g. `notifications.tasks`).
        queue: String,
        /// Move the dead letters back into the consumer's queue instead of listing them.
        #[arg(long)]
        replay: bool,
        /// At most this many messages.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[command(flatten)]
        config: Config,
    },
    /// Start a JWT signing-key rotation now: publish a `next` key that identity activates one
    /// publish lead (10 min) later. Acts on identity's database directly, so it works while
    /// identity is down; prints every key and its status.
    RotateSigningKey {
        #[command(flatten)]
        config: Config,
        #[command(flatten)]
        identity: trellis_identity::IdentityConfig,
    },
    /// Create roles and schemas and apply migrations (all services when none are named).
    Migrate {
        /// Services to migrate; all when empty.
        services: Vec<String>,
        #[command(flatten)]
        config: Config,
    },
}

fn expand(services: &[String], with_gateway: bool) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for s in services {
        if s == "all" {
            out.extend(SERVICES.iter().map(|s| s.to_string()));
            if with_gateway {
                out.push("gateway".to_string());
            }
        } else if SERVICES.contains(&s.as_str()) || (with_gateway && s == "gateway") {
            out.push(s.clone());
        } else {
            anyhow::bail!("unknown service {s:?}; expected one of {} or all", SERVICES.join(", "));
        }
    }
    out.dedup();
    Ok(out)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Migrate { services, config } => {
            let _telemetry = trellis_kit::telemetry::init(&config.telemetry)?;
            let names = if services.is_empty() {
                SERVICES.iter().map(|s| s.to_string()).collect()
            } else {
                expand(&services, false)?
            };
            for name in names {
                let module = trellis::module(&name).ok_or_else(|| anyhow::anyhow!("unknown service {name}"))?;
                trellis_kit::db::migrate_module(&config.database_url, &module, &config.service_db_password).await?;
                tracing::info!(service = %name, "migrated");
            }
            Ok(())
        }
        Command::DeadLetters { queue, replay, limit, config } => {
            let _telemetry = trellis_kit::telemetry::init(&config.telemetry)?;
            let bus = trellis_kit::events::EventBus::new(Arc::new(config));
            if replay {
                let n = trellis_kit::events::replay_dead_letters(&bus, &queue, limit).await?;
                println!("replayed {n} dead letter(s) into {}", trellis_kit::events::queue_name(&bus, &queue));
            } else {
                let letters = trellis_kit::events::list_dead_letters(&bus, &queue, limit).await?;
                println!(
                    "{} dead letter(s) in {}",
                    letters.len(),
                    trellis_kit::events::dead_letter_queue(&bus, &queue)
                );
                for l in letters {
                    println!(
                        "{}\t{}\torg={}\treason={}\t{} bytes",
                        l.event_id.as_deref().unwrap_or("-"),
                        l.event_type.as_deref().unwrap_or("-"),
                        l.org_id.as_deref().unwrap_or("-"),
                        l.reason.as_deref().unwrap_or("-"),
                        l.size
                    );
                }
            }
            Ok(())
        }
        Command::RotateSigningKey { config, identity } => {
            let _telemetry = trellis_kit::telemetry::init(&config.telemetry)?;
            let keys = trellis_identity::keys::rotate_from_cli(&config, &identity).await?;
            println!("kid\tstatus\tcreated_at\tactivates/activated_at\tretires_at");
            for k in keys {
                let activation = k.activated_at.unwrap_or(k.activate_after);
                let retires = k.retires_at.map(|t| t.to_rfc3339()).unwrap_or_else(|| "-".into());
                println!(
                    "{}\t{}\t{}\t{}\t{}",
                    k.kid,
                    k.status.as_str(),
                    k.created_at.to_rfc3339(),
                    activation.to_rfc3339(),
                    retires
                );
            }
            Ok(())
        }
        Command::Serve { services, config, identity, notifications, gateway } => {
            let _telemetry = trellis_kit::telemetry::init(&config.telemetry)?;
            let config = Arc::new(config);
            let shutdown = CancellationToken::new();
            let auth = Authenticator::for_cell(config.clone())?;
            let mut handles = Vec::new();
            for name in expand(&services, true)? {
                if name == "gateway" {
                    let listener = TcpListener::bind(&gateway.listen).await?;
                    let admin = TcpListener::bind(&gateway.admin_listen).await?;
                    // The gateway shares the services' verifier, revocation feed included.
                    let builder =
                        trellis_gateway::Builder::new(config.clone(), gateway.clone()).authenticator(auth.clone());
                    handles.push(tokio::spawn(builder.serve(listener, admin, shutdown.clone())));
                    continue;
                }
                let module = if name == "identity" {
                    trellis_identity::module_with(Some(identity.clone()))
                } else if name == "notifications" {
                    trellis_notifications::module_with(Some(notifications.clone()))
                } else {
                    trellis::module(&name).ok_or_else(|| anyhow::anyhow!("unknown service {name}"))?
                };
                let (grpc_addr, admin_addr) = config.service_addrs(&name)?;
                let running = trellis_kit::grpc::launch(trellis_kit::grpc::Launch {
                    module,
                    config: config.clone(),
                    auth: auth.clone(),
                    grpc: TcpListener::bind(grpc_addr).await?,
                    admin: TcpListener::bind(admin_addr).await?,
                    shutdown: shutdown.clone(),
                    credentials: None,
                    register_schema: true,
                    register_scope_resources: true,
                })
                .await?;
                handles.push(running.handle);
            }
            let signal = shutdown.clone();
            tokio::spawn(async move {
                wait_for_signal().await;
                tracing::info!("shutting down");
                signal.cancel();
            });
            let mut failed = false;
            for handle in handles {
                match handle.await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::error!(error = format!("{e:#}"), "service failed");
                        failed = true;
                        shutdown.cancel();
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "service panicked");
                        failed = true;
                        shutdown.cancel();
                    }
                }
            }
            if failed { anyhow::bail!("a service failed") } else { Ok(()) }
        }
    }
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(term) => term,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
