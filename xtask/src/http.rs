//! A minimal HTTP/1.1 client over `std::net::TcpStream`, enough for health checks and the dev seed
//! against loopback servers (no TLS, one request per connection).

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};

/// A response: status code and body text.
#[derive(Debug)]
pub struct Response {
    /// HTTP status code.
    pub status: u16,
    /// The body, decoded as UTF-8 (lossily).
    pub body: String,
}

/// `GET url`.
pub fn get(url: &str, timeout: Duration) -> Result<Response> {
    request("GET", url, None, None, timeout)
}

/// `POST url` with a JSON body.
pub fn post_json(url: &str, body: &serde_json::Value, timeout: Duration) -> Result<Response> {
    request("POST", url, Some(body.to_string()), None, timeout)
}

/// `POST url` with a JSON body and a bearer token.
pub fn post_json_authorized(url: &str, token: &str, body: &serde_json::Value, timeout: Duration) -> Result<Response> {
    request("POST", url, Some(body.to_string()), Some(token), timeout)
}

fn request(method: &str, url: &str, body: Option<String>, token: Option<&str>, timeout: Duration) -> Result<Response> {
    let rest = url.strip_prefix("http://").ok_or_else(|| anyhow!("only http:// URLs are supported: {url}"))?;
    let (authority, path) = rest.find('/').map_or((rest, "/"), |i| rest.split_at(i));
    let addr = authority
        .to_socket_addrs()
        .with_context(|| format!("resolving {authority}"))?
        .next()
        .ok_or_else(|| anyhow!("no address for {authority}"))?;
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;

    let mut head =
        format!("{method} {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\nAccept: application/json\r\n");
    if let Some(token) = token {
        head.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    if let Some(body) = &body {
        head.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    if let Some(body) = &body {
        stream.write_all(body.as_bytes())?;
    }

    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    parse(&raw)
}

fn parse(raw: &[u8]) -> Result<Response> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(|| anyhow!("incomplete HTTP response"))?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let body = &raw[split + 4..];
    let mut lines = head.lines();
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("malformed status line {status_line:?}"))?;
    let chunked = lines.any(|line| {
        line.split_once(':').is_some_and(|(name, value)| {
            name.trim().eq_ignore_ascii_case("transfer-encoding") && value.to_ascii_lowercase().contains("chunked")
        })
    });
    let body = if chunked { dechunk(body)? } else { body.to_vec() };
    Ok(Response { status, body: String::from_utf8_lossy(&body).into_owned() })
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = data.windows(2).position(|w| w == b"\r\n").ok_or_else(|| anyhow!("truncated chunk"))?;
        let size_text = String::from_utf8_lossy(&data[..eol]);
        let size_hex = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_hex, 16).with_context(|| format!("bad chunk size {size_hex:?}"))?;
        data = &data[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size {
            bail!("truncated chunk");
        }
        out.extend_from_slice(&data[..size]);
        data = data.get(size + 2..).unwrap_or_default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_plain_response() {
        let r = parse(b"HTTP/1.1 409 Conflict\r\nContent-Length: 2\r\n\r\n{}").expect("parses");
        assert_eq!(r.status, 409);
        assert_eq!(r.body, "{}");
    }

    #[test]
    fn decodes_a_chunked_body() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"a\"\r\n3;x=y\r\n:1}\r\n0\r\n\r\n";
        let r = parse(raw).expect("parses");
        assert_eq!(r.status, 200);
        assert_eq!(r.body, "{\"a\":1}");
    }

    #[test]
    fn rejects_a_truncated_response() {
        assert!(parse(b"HTTP/1.1 200 OK\r\nContent-Le").is_err());
    }
}
