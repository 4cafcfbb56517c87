//! The gateway: the one port a client outside the cell uses.

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use trellis_kit::config::Config;

/// Gateway settings.
#[derive(Debug, Clone, clap::Args)]
pub struct GatewayConfig {
    /// Public listen address.
    #[arg(long = "gateway-listen", env = "GATEWAY_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: String,
    /// Admin listen address.
    #[arg(long = "gateway-admin-listen", env = "GATEWAY_ADMIN_LISTEN", default_value = "0.0.0.0:9060")]
    pub admin_listen: String,
}

/// Serves the gateway until `shutdown`.
pub async fn serve(
    _config: Arc<Config>,
    _gateway: GatewayConfig,
    _listener: TcpListener,
    _admin: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    shutdown.cancelled().await;
    Ok(())
}
