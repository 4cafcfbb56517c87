//! A local SMTP capture server, so tests read mail the way a user does.
//!
//! [`SmtpCapture::start`] listens on a free port of 127.0.0.1 and speaks just enough SMTP
//! (EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT; AUTH PLAIN/LOGIN accepted) for a real client
//! such as lettre. Every message it accepts is kept; a test waits for the mail to an address and
//! follows the link in it:
//!
//! ```no_run
//! # async fn demo() {
//! use std::time::Duration;
//! use trellis_kit::testing::SmtpCapture;
//! let smtp = SmtpCapture::start().await;
//! // ... start the notifications module with SMTP_URL = smtp.url() ...
//! let mail = smtp.wait_for("bob@example.com", Duration::from_secs(10)).await;
//! assert_eq!(mail.subject(), "Reset your password");
//! let link = mail.link_containing("/reset-password?token=").expect("a reset link");
//! # }
//! ```
//!
//! [`SmtpCapture::reject_with`] makes it answer `MAIL FROM` with an error code (451 for a
//! temporary failure, 550 for a permanent one); put a [`super::FaultProxy`] in front of it to make
//! the server unreachable.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// One message as the server received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapturedMail {
    /// The envelope sender (`MAIL FROM`).
    pub from: String,
    /// The envelope recipients (`RCPT TO`), lowercased.
    pub to: Vec<String>,
    /// The raw message (headers and body, dot-unstuffed, CRLF line ends).
    pub data: String,
}

impl CapturedMail {
    /// The value of the first header `name` (case-insensitive), unfolded; RFC 2047 encoded words
    /// in UTF-8 (base64 or Q) are decoded.
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self.data.split("\r\n\r\n").next().unwrap_or_default();
        let mut value: Option<String> = None;
        for line in head.split("\r\n") {
            if let Some(v) = value.as_mut() {
                if line.starts_with([' ', '\t']) {
                    v.push_str(line);
                    continue;
                }
                break;
            }
            if let Some((key, rest)) = line.split_once(':')
                && key.eq_ignore_ascii_case(name)
            {
                value = Some(rest.trim().to_string());
            }
        }
        value.map(|v| decode_words(&v))
    }

    /// The `Subject`.
    pub fn subject(&self) -> String {
        self.header("subject").unwrap_or_default()
    }

    /// Every leaf body part of the message, transfer-decoded (quoted-printable or base64),
    /// joined by newlines; multipart bodies are walked by their boundaries.
    pub fn body(&self) -> String {
        decode_entity(&self.data)
    }

    /// Every `http(s)://` link in the body, in order, with `&amp;` decoded.
    pub fn links(&self) -> Vec<String> {
        let body = self.body();
        let mut links = Vec::new();
        let mut rest = body.as_str();
        while let Some(start) = rest.find("http://").or_else(|| rest.find("https://")) {
            let candidate = &rest[start..];
            let end = candidate
                .find(|c: char| c.is_whitespace() || matches!(c, '"' | '<' | '>' | '\''))
                .unwrap_or(candidate.len());
            let link = candidate[..end]
                .replace("&#x2f;", "/")
                .replace("&#x2F;", "/")
                .replace("&#47;", "/")
                .replace("&#x3d;", "=")
                .replace("&#x3D;", "=")
                .replace("&amp;", "&");
            if !links.contains(&link) {
                links.push(link);
            }
            rest = &candidate[end..];
        }
        links
    }

    /// The first link that contains `needle` (`"/reset-password?token="`).
    pub fn link_containing(&self, needle: &str) -> Option<String> {
        self.links().into_iter().find(|l| l.contains(needle))
    }
}

/// The decoded text of a MIME entity (headers, blank line, body): its parts for a multipart one.
fn decode_entity(entity: &str) -> String {
    let (headers, body) = entity.split_once("\r\n\r\n").unwrap_or((entity, ""));
    let lower = unfold(headers).to_ascii_lowercase();
    if lower.contains("content-type: multipart/") {
        let original = unfold(headers);
        let boundary = original
            .to_ascii_lowercase()
            .find("boundary=")
            .map(|i| original[i + "boundary=".len()..].split(';').next().unwrap_or_default().trim().trim_matches('"'))
            .unwrap_or_default()
            .to_string();
        if !boundary.is_empty() {
            let delimiter = format!("--{boundary}");
            return body
                .split(delimiter.as_str())
                .skip(1)
                .take_while(|part| !part.starts_with("--"))
                .map(|part| decode_entity(part.trim_start_matches("\r\n").trim_end_matches("\r\n")))
                .collect::<Vec<_>>()
                .join("\n");
        }
    }
    if lower.contains("content-transfer-encoding: quoted-printable") {
        decode_quoted_printable(body)
    } else if lower.contains("content-transfer-encoding: base64") {
        let compact: String = body.chars().filter(|c| !c.is_whitespace()).collect();
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, compact)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    } else {
        body.to_string()
    }
}

/// Header lines with continuation lines joined.
fn unfold(headers: &str) -> String {
    headers.replace("\r\n ", " ").replace("\r\n\t", " ")
}

/// `=?UTF-8?B?…?=` and `=?UTF-8?Q?…?=` words decoded; anything else as is.
fn decode_words(value: &str) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("=?") {
        let (before, word) = rest.split_at(start);
        // Whitespace between two encoded words is not part of the text.
        if !(out.ends_with('\u{0}') && before.trim().is_empty()) {
            out.push_str(before);
        }
        out = out.trim_end_matches('\u{0}').to_string();
        let parts: Vec<&str> = word[2..].splitn(3, '?').collect();
        let Some(end) = parts.get(2).and_then(|p| p.find("?=")) else {
            out.push_str(word);
            return out;
        };
        let (encoding, text) = (parts[1], &parts[2][..end]);
        let decoded = if encoding.eq_ignore_ascii_case("b") {
            base64::Engine::decode(&base64::engine::general_purpose::STANDARD, text)
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_else(|_| text.to_string())
        } else {
            decode_quoted_printable(&text.replace('_', " "))
        };
        out.push_str(&decoded);
        out.push('\u{0}');
        rest = &parts[2][end + 2..];
    }
    out.push_str(rest);
    out.replace('\u{0}', "")
}

/// Quoted-printable (RFC 2045) decoded as UTF-8.
fn decode_quoted_printable(text: &str) -> String {
    let mut bytes = Vec::with_capacity(text.len());
    let raw = text.as_bytes();
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'=' if raw.get(i + 1) == Some(&b'\r') && raw.get(i + 2) == Some(&b'\n') => i += 3,
            b'=' if raw.get(i + 1) == Some(&b'\n') => i += 2,
            b'=' if i + 2 < raw.len() => {
                match u8::from_str_radix(&text[i + 1..i + 3], 16) {
                    Ok(b) => bytes.push(b),
                    Err(_) => bytes.extend_from_slice(&raw[i..i + 3]),
                }
                i += 3;
            }
            b => {
                bytes.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

#[derive(Debug, Default)]
struct State {
    messages: Vec<CapturedMail>,
    reject: Option<u16>,
    sessions: usize,
}

/// A running capture server; it stops when dropped.
#[derive(Debug, Clone)]
pub struct SmtpCapture {
    port: u16,
    state: Arc<Mutex<State>>,
    arrived: Arc<Notify>,
    stop: CancellationToken,
    _guard: Arc<StopOnDrop>,
}

#[derive(Debug)]
struct StopOnDrop(CancellationToken);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

impl SmtpCapture {
    /// Starts a server on a free port of 127.0.0.1.
    pub async fn start() -> SmtpCapture {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the SMTP capture server");
        let port = listener.local_addr().expect("SMTP capture address").port();
        let stop = CancellationToken::new();
        let capture = SmtpCapture {
            port,
            state: Arc::default(),
            arrived: Arc::default(),
            stop: stop.clone(),
            _guard: Arc::new(StopOnDrop(stop)),
        };
        let server = capture.clone_inner();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    accepted = listener.accept() => accepted,
                    _ = server.stop.cancelled() => return,
                };
                if let Ok((stream, _)) = accepted {
                    let server = server.clone_inner();
                    tokio::spawn(async move { server.session(stream).await });
                }
            }
        });
        capture
    }

    /// A handle sharing the state without keeping the server alive.
    fn clone_inner(&self) -> Inner {
        Inner { state: self.state.clone(), arrived: self.arrived.clone(), stop: self.stop.clone() }
    }

    /// `smtp://127.0.0.1:<port>`, for `SMTP_URL`.
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Answers `MAIL FROM` with `code` from now on (451: try later; 550: refused), or accepts
    /// mail again with `None`.
    pub fn reject_with(&self, code: Option<u16>) {
        self.lock().reject = code;
    }

    /// Every message accepted so far, oldest first.
    pub fn messages(&self) -> Vec<CapturedMail> {
        self.lock().messages.clone()
    }

    /// The messages to `address` (case-insensitive), oldest first.
    pub fn messages_to(&self, address: &str) -> Vec<CapturedMail> {
        let address = address.to_lowercase();
        self.messages().into_iter().filter(|m| m.to.contains(&address)).collect()
    }

    /// How many SMTP conversations were opened (accepted or not).
    pub fn sessions(&self) -> usize {
        self.lock().sessions
    }

    /// Waits for the first message to `address`; panics after `timeout`.
    pub async fn wait_for(&self, address: &str, timeout: Duration) -> CapturedMail {
        self.wait_for_nth(address, 1, timeout).await
    }

    /// Waits until `n` messages to `address` arrived and returns the `n`th; panics after
    /// `timeout`.
    pub async fn wait_for_nth(&self, address: &str, n: usize, timeout: Duration) -> CapturedMail {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let arrived = self.arrived.notified();
            if let Some(mail) = self.messages_to(address).into_iter().nth(n.saturating_sub(1)) {
                return mail;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                let seen: Vec<_> = self.messages().into_iter().map(|m| (m.subject(), m.to)).collect();
                panic!("no mail #{n} to {address} after {timeout:?}; the server has {seen:?}");
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[derive(Clone)]
struct Inner {
    state: Arc<Mutex<State>>,
    arrived: Arc<Notify>,
    stop: CancellationToken,
}

impl Inner {
    fn clone_inner(&self) -> Inner {
        self.clone()
    }

    async fn session(&self, stream: TcpStream) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).sessions += 1;
        let (read, mut write) = stream.into_split();
        let mut lines = BufReader::new(read);
        let _ = self.converse(&mut lines, &mut write).await;
    }

    async fn converse(
        &self,
        lines: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
        write: &mut tokio::net::tcp::OwnedWriteHalf,
    ) -> std::io::Result<()> {
        write.write_all(b"220 capture.localhost ESMTP trellis-capture\r\n").await?;
        let (mut from, mut to) = (String::new(), Vec::new());
        let mut line = String::new();
        loop {
            line.clear();
            let read = tokio::select! {
                read = lines.read_line(&mut line) => read?,
                _ = self.stop.cancelled() => return Ok(()),
            };
            if read == 0 {
                return Ok(());
            }
            let command = line.trim_end().to_string();
            let verb = command.split_whitespace().next().unwrap_or_default().to_ascii_uppercase();
            let reply: &[u8] = match verb.as_str() {
                "EHLO" => b"250-capture.localhost\r\n250-8BITMIME\r\n250-AUTH PLAIN LOGIN\r\n250 SMTPUTF8\r\n",
                "HELO" => b"250 capture.localhost\r\n",
                "AUTH" => b"235 2.7.0 Authentication successful\r\n",
                "MAIL" => {
                    let reject = self.state.lock().unwrap_or_else(|p| p.into_inner()).reject;
                    if let Some(code) = reject {
                        let class = if code >= 500 { "5.7.1 Refused" } else { "4.3.0 Try again later" };
                        write.write_all(format!("{code} {class}\r\n").as_bytes()).await?;
                        continue;
                    }
                    from = address_of(&command);
                    to.clear();
                    b"250 2.1.0 OK\r\n"
                }
                "RCPT" => {
                    to.push(address_of(&command).to_lowercase());
                    b"250 2.1.5 OK\r\n"
                }
                "DATA" => {
                    write.write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n").await?;
                    let mut data = String::new();
                    loop {
                        line.clear();
                        if lines.read_line(&mut line).await? == 0 {
                            return Ok(());
                        }
                        let text = line.trim_end_matches(['\r', '\n']);
                        if text == "." {
                            break;
                        }
                        data.push_str(text.strip_prefix('.').unwrap_or(text));
                        data.push_str("\r\n");
                    }
                    let n = {
                        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
                        state.messages.push(CapturedMail { from: from.clone(), to: to.clone(), data });
                        state.messages.len()
                    };
                    self.arrived.notify_waiters();
                    write.write_all(format!("250 2.0.0 OK queued as capture-{n}\r\n").as_bytes()).await?;
                    continue;
                }
                "RSET" => {
                    from.clear();
                    to.clear();
                    b"250 OK\r\n"
                }
                "NOOP" => b"250 OK\r\n",
                "QUIT" => {
                    write.write_all(b"221 Bye\r\n").await?;
                    return Ok(());
                }
                _ if line.trim().is_empty() => continue,
                // The second line of AUTH LOGIN (user, password) or an unknown verb.
                _ => b"502 5.5.2 Command not recognized\r\n",
            };
            write.write_all(reply).await?;
        }
    }
}

/// The address inside `<…>` of a MAIL or RCPT command.
fn address_of(command: &str) -> String {
    command
        .split_once('<')
        .and_then(|(_, rest)| rest.split_once('>'))
        .map_or_else(String::new, |(address, _)| address.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mail(data: &str) -> CapturedMail {
        CapturedMail { from: "a@x.io".into(), to: vec!["b@x.io".into()], data: data.replace('\n', "\r\n") }
    }

    #[test]
    fn headers_unfold_and_decode_encoded_words() {
        let m = mail("Subject: =?utf-8?b?UmVzZXQgeW91ciBwYXNzd29yZCDinJM=?=\nTo: b@x.io\n\nbody\n");
        assert_eq!(m.subject(), "Reset your password ✓");
        let m = mail("Subject: A long\n subject line\nX: y\n\nbody\n");
        assert_eq!(m.subject(), "A long subject line");
        assert_eq!(m.header("x").as_deref(), Some("y"));
        assert_eq!(m.header("missing"), None);
    }

    #[test]
    fn links_are_found_in_quoted_printable_bodies() {
        let m = mail(
            "Subject: s\nContent-Type: multipart/alternative; boundary=\"b\"\n\n--b\nContent-Type: text/plain\n\
             Content-Transfer-Encoding: quoted-printable\n\nOpen https://app.example/reset-password?token=3Dab=\ncd now\n\
             --b\nContent-Type: text/html\nContent-Transfer-Encoding: 7bit\n\n<a href=\"https://app.example/x?a=1&amp;b=2\">x</a>\n--b--\n",
        );
        assert_eq!(
            m.link_containing("reset-password").as_deref(),
            Some("https://app.example/reset-password?token=abcd")
        );
        assert_eq!(m.link_containing("/x?").as_deref(), Some("https://app.example/x?a=1&b=2"));
    }
}
