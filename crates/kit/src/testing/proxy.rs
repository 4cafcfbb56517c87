//! A TCP proxy that can fail on command, to test what happens when a dependency goes away.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Forwards TCP connections to a target (RabbitMQ, Postgres, Redis) until told to fail.
///
/// [`FaultProxy::cut`] drops every open connection and refuses new ones (they are accepted and
/// closed at once) until [`FaultProxy::restore`]. Point the client at [`FaultProxy::url`].
///
/// ```no_run
/// # async fn demo() {
/// use trellis_kit::testing::FaultProxy;
/// let proxy = FaultProxy::in_front_of("amqp://guest:guest@127.0.0.1:5672/%2f").await;
/// let url = proxy.url(); // amqp://guest:guest@127.0.0.1:<proxy port>/%2f
/// proxy.cut();
/// proxy.restore();
/// # }
/// ```
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    url: String,
    state: Arc<Mutex<Link>>,
    stop: CancellationToken,
}

#[derive(Debug)]
struct Link {
    up: bool,
    /// Cancelled by `cut`: every connection accepted while up holds the token of its time.
    connections: CancellationToken,
}

impl FaultProxy {
    /// Starts a proxy on 127.0.0.1 in front of the host and port of `url` (the scheme's default
    /// port when it names none).
    pub async fn in_front_of(url: &str) -> FaultProxy {
        let (authority, _) = split_authority(url);
        let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        let target = if host_port.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok()) {
            host_port.to_string()
        } else {
            let port = match url.split("://").next() {
                Some("postgres" | "postgresql") => 5432,
                Some("redis") => 6379,
                _ => 5672,
            };
            format!("{host_port}:{port}")
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the fault proxy");
        let addr = listener.local_addr().expect("fault proxy address");
        let state = Arc::new(Mutex::new(Link { up: true, connections: CancellationToken::new() }));
        let stop = CancellationToken::new();
        tokio::spawn(accept(listener, target, state.clone(), stop.clone()));
        FaultProxy { addr, url: replace_host_port(url, &addr.to_string()), state, stop }
    }

    /// The address the proxy listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The URL it was started with, pointing at the proxy instead.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// Drops every open connection and refuses new ones.
    pub fn cut(&self) {
        let mut link = self.state.lock().unwrap_or_else(|p| p.into_inner());
        link.up = false;
        link.connections.cancel();
        link.connections = CancellationToken::new();
    }

    /// Accepts and forwards connections again.
    pub fn restore(&self) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).up = true;
    }

    /// Whether connections are being forwarded.
    pub fn is_up(&self) -> bool {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).up
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn accept(listener: TcpListener, target: String, state: Arc<Mutex<Link>>, stop: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.cancelled() => return,
        };
        let Ok((mut inbound, _)) = accepted else { continue };
        // Checked and captured together, so a connection is either refused or dropped by the
        // next cut, never missed by it.
        let connections = {
            let link = state.lock().unwrap_or_else(|p| p.into_inner());
            link.up.then(|| link.connections.clone())
        };
        let Some(connections) = connections else {
            drop(inbound);
            continue;
        };
        let target = target.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let Ok(mut outbound) = TcpStream::connect(&target).await else { return };
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                _ = connections.cancelled() => {}
                _ = stop.cancelled() => {}
            }
        });
    }
}

/// (`user:pass@host:port`, the rest) of a URL.
fn split_authority(url: &str) -> (&str, &str) {
    let start = url.find("://").map_or(0, |i| i + 3);
    let end = url[start..].find(['/', '?', '#']).map_or(url.len(), |i| start + i);
    (&url[start..end], &url[end..])
}

/// `url` with its host and port replaced, keeping the scheme, credentials, path and query.
fn replace_host_port(url: &str, host_port: &str) -> String {
    let start = url.find("://").map_or(0, |i| i + 3);
    let (authority, rest) = split_authority(url);
    let credentials = authority.rsplit_once('@').map_or(String::new(), |(c, _)| format!("{c}@"));
    format!("{}{credentials}{host_port}{rest}", &url[..start])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_keep_everything_but_the_host_and_port() {
        assert_eq!(
            replace_host_port("amqp://guest:guest@127.0.0.1:5672/%2f", "127.0.0.1:9"),
            "amqp://guest:guest@127.0.0.1:9/%2f"
        );
        assert_eq!(replace_host_port("redis://localhost", "127.0.0.1:9"), "redis://127.0.0.1:9");
        assert_eq!(
            replace_host_port("postgres://u@db:5432/x?sslmode=disable", "127.0.0.1:9"),
            "postgres://u@127.0.0.1:9/x?sslmode=disable"
        );
    }

    #[tokio::test]
    async fn a_cut_drops_open_connections_and_refuses_new_ones_until_restored() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let echo = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let echo_addr = echo.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = echo.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = socket.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        let proxy = FaultProxy::in_front_of(&format!("tcp://{echo_addr}")).await;
        let roundtrip = |addr: SocketAddr| async move {
            let mut s = TcpStream::connect(addr).await.ok()?;
            s.write_all(b"ping").await.ok()?;
            let mut buf = [0u8; 4];
            s.read_exact(&mut buf).await.ok()?;
            Some(buf)
        };
        assert_eq!(roundtrip(proxy.addr()).await, Some(*b"ping"));

        let mut open = TcpStream::connect(proxy.addr()).await.expect("connect");
        open.write_all(b"a").await.expect("write");
        let mut one = [0u8; 1];
        open.read_exact(&mut one).await.expect("echo");
        proxy.cut();
        assert!(!proxy.is_up());
        assert_eq!(open.read(&mut one).await.unwrap_or(0), 0, "the open connection is closed");
        assert_eq!(roundtrip(proxy.addr()).await, None);

        proxy.restore();
        assert_eq!(roundtrip(proxy.addr()).await, Some(*b"ping"));
    }
}
