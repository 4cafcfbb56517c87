//! Backend channels and raw calls.
//!
//! One lazily connected tonic `Channel` per module (connect timeout 1 s, HTTP/2 keep-alive 30 s).
//! REST uses [`Upstreams::unary`]: already-encoded request bytes in, response bytes out, through
//! `tonic::client::Grpc` with [`BytesCodec`], so the gateway never needs generated code. gRPC-web
//! and native gRPC use [`Upstreams::forward`]: the HTTP/2 request is handed to the channel as is
//! and the response (frames and trailers) streams back untouched.

use std::collections::HashMap;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes};
use http::uri::PathAndQuery;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::metadata::MetadataMap;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};
use tower::ServiceExt;

/// A codec whose messages are their encoded bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct BytesCodec;

impl Codec for BytesCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = BytesCodec;
    type Decoder = BytesCodec;

    fn encoder(&mut self) -> Self::Encoder {
        *self
    }
    fn decoder(&mut self) -> Self::Decoder {
        *self
    }
}

impl Encoder for BytesCodec {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for BytesCodec {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// Why a backend call failed.
#[derive(Debug)]
pub enum UpstreamError {
    /// The backend answered with this status.
    Status(Status),
    /// The backend could not be reached (connect, reset, protocol error); the cause is logged.
    Unreachable,
    /// The deadline passed; the call was cancelled.
    Deadline,
}

/// The channels to every backend module.
#[derive(Debug, Clone)]
pub struct Upstreams {
    channels: HashMap<String, Channel>,
    max_message: usize,
}

impl Upstreams {
    /// Channels to `urls` (module → gRPC URL); nothing connects until the first call.
    pub fn new(urls: &HashMap<String, String>, max_message: usize) -> anyhow::Result<Self> {
        let mut channels = HashMap::new();
        for (module, url) in urls {
            let endpoint = Endpoint::from_shared(url.clone())
                .map_err(|e| anyhow::anyhow!("invalid gRPC URL {url:?} for {module}: {e}"))?
                .connect_timeout(Duration::from_secs(1))
                .http2_keep_alive_interval(Duration::from_secs(30))
                .keep_alive_while_idle(true)
                .tcp_nodelay(true);
            channels.insert(module.clone(), endpoint.connect_lazy());
        }
        Ok(Self { channels, max_message })
    }

    /// Adds (or replaces) the channel of `module`.
    pub fn insert(&mut self, module: &str, channel: Channel) {
        self.channels.insert(module.to_string(), channel);
    }

    /// The channel of `module`, for typed clients.
    pub fn channel(&self, module: &str) -> Option<Channel> {
        self.channels.get(module).cloned()
    }

    /// The modules with a backend, sorted.
    pub fn modules(&self) -> Vec<String> {
        let mut modules: Vec<String> = self.channels.keys().cloned().collect();
        modules.sort();
        modules
    }

    /// Whether `module` has a backend.
    pub fn has(&self, module: &str) -> bool {
        self.channels.contains_key(module)
    }

    /// A unary call with raw message bytes, bounded by `deadline` (sent as `grpc-timeout` too).
    pub async fn unary(
        &self,
        module: &str,
        path: &str,
        message: Bytes,
        metadata: MetadataMap,
        deadline: Duration,
    ) -> Result<(MetadataMap, Bytes), UpstreamError> {
        let channel = self.channels.get(module).cloned().ok_or(UpstreamError::Unreachable)?;
        let path = PathAndQuery::try_from(path).map_err(|_| UpstreamError::Status(Status::internal("bad path")))?;
        let mut grpc = tonic::client::Grpc::new(channel).max_decoding_message_size(self.max_message);
        let mut metadata = metadata;
        // The deadline travels as `grpc-timeout` and is enforced here (tonic's own client-side
        // enforcement would report CANCELLED, not DEADLINE_EXCEEDED).
        if let Ok(value) = format_grpc_timeout(deadline).parse() {
            metadata.insert("grpc-timeout", value);
        }
        let request = tonic::Request::from_parts(metadata, tonic::Extensions::default(), message);
        let call = async move {
            grpc.ready().await.map_err(|e| {
                tracing::warn!(error = %e, "backend channel not ready");
                UpstreamError::Unreachable
            })?;
            grpc.unary(request, path, BytesCodec).await.map_err(classify)
        };
        match tokio::time::timeout(deadline, call).await {
            Ok(Ok(response)) => {
                let (metadata, bytes, _) = response.into_parts();
                Ok((metadata, bytes))
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(UpstreamError::Deadline),
        }
    }

    /// Opens a server stream with raw message bytes; no deadline (streams have none, Rule 47).
    pub async fn server_streaming(
        &self,
        module: &str,
        path: &str,
        message: Bytes,
        metadata: MetadataMap,
    ) -> Result<tonic::Streaming<Bytes>, UpstreamError> {
        let channel = self.channels.get(module).cloned().ok_or(UpstreamError::Unreachable)?;
        let path = PathAndQuery::try_from(path).map_err(|_| UpstreamError::Status(Status::internal("bad path")))?;
        let mut grpc = tonic::client::Grpc::new(channel).max_decoding_message_size(self.max_message);
        grpc.ready().await.map_err(|e| {
            tracing::warn!(error = %e, "backend channel not ready");
            UpstreamError::Unreachable
        })?;
        let request = tonic::Request::from_parts(metadata, tonic::Extensions::default(), message);
        let response = grpc.server_streaming(request, path, BytesCodec).await.map_err(classify)?;
        Ok(response.into_inner())
    }

    /// Forwards an HTTP/2 gRPC request to `module` unchanged and returns its response as it streams.
    pub async fn forward(
        &self,
        module: &str,
        request: http::Request<tonic::body::Body>,
    ) -> Result<http::Response<tonic::body::Body>, UpstreamError> {
        let channel = self.channels.get(module).cloned().ok_or(UpstreamError::Unreachable)?;
        channel.oneshot(request).await.map_err(|e| {
            if timed_out(&e) {
                return UpstreamError::Deadline;
            }
            tracing::warn!(module, error = %e, "backend unreachable");
            UpstreamError::Unreachable
        })
    }
}

/// Tells a backend's own status from a failure to reach it: tonic attaches the transport error as
/// the source of the statuses it makes up.
fn classify(status: Status) -> UpstreamError {
    if timed_out(&status) {
        return UpstreamError::Deadline;
    }
    if std::error::Error::source(&status).is_some() && status.code() != Code::DeadlineExceeded {
        tracing::warn!(error = %status, "backend unreachable");
        UpstreamError::Unreachable
    } else {
        UpstreamError::Status(status)
    }
}

/// Whether the channel gave up because the call's `grpc-timeout` passed.
fn timed_out(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if e.is::<tonic::TimeoutExpired>() {
            return true;
        }
        current = e.source();
    }
    false
}

/// Parses a `grpc-timeout` header (`1S`, `250m`, `1000000u`, …).
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Formats a `grpc-timeout` header value (at most 8 digits).
pub fn format_grpc_timeout(d: Duration) -> String {
    let millis = d.as_millis();
    if millis < 100_000_000 { format!("{}m", millis.max(1)) } else { format!("{}S", d.as_secs().min(99_999_999)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse_every_unit_and_round_trip() {
        assert_eq!(parse_grpc_timeout("1S"), Some(Duration::from_secs(1)));
        assert_eq!(parse_grpc_timeout("2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("7u"), Some(Duration::from_micros(7)));
        assert_eq!(parse_grpc_timeout("9n"), Some(Duration::from_nanos(9)));
        for bad in ["", "S", "1", "1x", "123456789S", "-1S"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
        for d in [Duration::from_millis(1), Duration::from_secs(30), Duration::from_secs(200_000)] {
            assert_eq!(parse_grpc_timeout(&format_grpc_timeout(d)), Some(d));
        }
    }
}
