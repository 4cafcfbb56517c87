//! The browser refresh cookie and CSRF protection (Rules 26–29).
//!
//! A string field annotated `(trellis.common.v1.cookie) = "<name>"` travels in cookie `<name>`
//! for browsers. Requests with an `Origin` header are in cookie mode: annotated response fields
//! are blanked in the body and set as cookies, and the refresh cookie comes with a CSRF cookie
//! whose value the page echoes in `X-CSRF-Token`. An empty annotated request field is filled from
//! its cookie only when the origin is trusted and the CSRF header matches the CSRF cookie.
//! Cookies never authenticate anything else.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::header::{COOKIE, ORIGIN, SET_COOKIE};
use http::{HeaderMap, HeaderValue};
use prost_reflect::{DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, ReflectMessage, Value};
use rand::RngCore;
use subtle::ConstantTimeEq;

use crate::errors::ApiError;
use crate::http::Gateway;

/// The refresh-token cookie.
pub const REFRESH: &str = "trellis_refresh";
/// The CSRF cookie, readable by scripts.
pub const CSRF: &str = "trellis_csrf";
/// The header that must repeat the CSRF cookie.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// Methods whose success ends the browser session, so the cookies are cleared (Rule 28).
const CLEARS_COOKIES: &[&str] =
    &["/trellis.identity.v1.AuthService/Logout", "/trellis.identity.v1.AuthService/LogoutAll"];
/// Lifetime of the refresh cookie: the refresh token's 30 days.
const REFRESH_MAX_AGE: u32 = 30 * 24 * 3600;

/// The top-level string fields of `message` annotated with a cookie name.
pub fn cookie_fields(message: &MessageDescriptor) -> Vec<(FieldDescriptor, String)> {
    let Some(ext) = message.parent_pool().get_extension_by_name("trellis.common.v1.cookie") else {
        return Vec::new();
    };
    message
        .fields()
        .filter(|f| matches!(f.kind(), Kind::String) && !f.is_list())
        .filter_map(|f| {
            let options = f.options();
            let name =
                options.has_extension(&ext).then(|| options.get_extension(&ext).as_str().map(str::to_string))??;
            (!name.is_empty()).then_some((f, name))
        })
        .collect()
}

/// Whether a call of `method` (at gRPC `path`) involves cookies: an annotated field in its request
/// or response, or a method that clears them.
pub fn involved(method: &prost_reflect::MethodDescriptor, path: &str) -> bool {
    CLEARS_COOKIES.contains(&path)
        || !cookie_fields(&method.input()).is_empty()
        || !cookie_fields(&method.output()).is_empty()
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"'))
        .filter(|v| !v.is_empty())
}

/// Whether the request is in cookie mode (a browser: it sent `Origin`).
pub fn cookie_mode(headers: &HeaderMap) -> bool {
    headers.contains_key(ORIGIN)
}

/// What the request side decided, for the response side.
#[derive(Debug, Default, Clone, Copy)]
pub struct Filled {
    /// An annotated field came from its cookie.
    pub from_cookie: bool,
}

/// Fills empty annotated fields of `message` from their cookies, after the origin and CSRF checks
/// (Rule 27). A field the client filled itself is left alone and needs no check.
pub fn fill_request(gateway: &Gateway, message: &mut DynamicMessage, headers: &HeaderMap) -> Result<Filled, ApiError> {
    let mut filled = Filled::default();
    for (field, name) in cookie_fields(&message.descriptor()) {
        let empty = message.get_field(&field).as_str().is_none_or(str::is_empty);
        let Some(value) = cookie(headers, &name).filter(|_| empty) else { continue };
        if !trusted_origin(gateway, headers) || !csrf_matches(headers) {
            tracing::info!(security = true, origin = ?headers.get(ORIGIN), "cookie refused: CSRF check failed");
            return Err(ApiError::csrf_failed());
        }
        message.set_field(&field, Value::String(value.to_string()));
        filled.from_cookie = true;
    }
    Ok(filled)
}

/// `Origin` is on the CORS allow-list or is the cell's own origin (`PUBLIC_BASE_URL`).
fn trusted_origin(gateway: &Gateway, headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(ORIGIN).and_then(|v| v.to_str().ok()) else { return false };
    gateway.settings.cors_allowed_origins.iter().any(|o| o == origin) || gateway.settings.public_origin == origin
}

/// `X-CSRF-Token` equals the CSRF cookie (constant time).
fn csrf_matches(headers: &HeaderMap) -> bool {
    let (Some(header), Some(cookie)) = (headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()), cookie(headers, CSRF))
    else {
        return false;
    };
    header.len() == cookie.len() && bool::from(header.as_bytes().ct_eq(cookie.as_bytes()))
}

/// `scheme://host[:port]` of a URL.
pub fn origin_of(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return String::new() };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    format!("{}://{}", scheme.to_ascii_lowercase(), authority.to_ascii_lowercase())
}

/// The response side of a successful call of `method`: in cookie mode, annotated response fields
/// move into cookies (with a fresh CSRF cookie next to the refresh cookie); logout clears both.
pub fn apply_response(
    gateway: &Gateway,
    method: &str,
    output: &mut DynamicMessage,
    request_headers: &HeaderMap,
    filled: Filled,
    response: &mut HeaderMap,
) {
    if !cookie_mode(request_headers) && !filled.from_cookie {
        return;
    }
    if CLEARS_COOKIES.contains(&method) {
        clear(gateway, response);
        return;
    }
    for (field, name) in cookie_fields(&output.descriptor()) {
        let Some(value) = output.get_field(&field).as_str().map(str::to_string).filter(|v| !v.is_empty()) else {
            continue;
        };
        output.set_field(&field, Value::String(String::new()));
        if name == REFRESH {
            set(response, &refresh_cookie(gateway, &value, REFRESH_MAX_AGE));
            let csrf = new_csrf_token();
            set(response, &csrf_cookie(gateway, &csrf, None));
            if let Ok(v) = HeaderValue::from_str(&csrf) {
                response.insert(CSRF_HEADER, v);
            }
        } else {
            // Other cookies (the OIDC state) must survive a cross-site redirect: Lax, session.
            set(response, &format!("{name}={value}; HttpOnly{}; SameSite=Lax; Path=/", secure(gateway)));
        }
    }
}

/// Clears the refresh and CSRF cookies (logout; a 401 from a cookie-filled refresh).
pub fn clear(gateway: &Gateway, response: &mut HeaderMap) {
    set(response, &refresh_cookie(gateway, "", 0));
    set(response, &csrf_cookie(gateway, "", Some(0)));
}

fn secure(gateway: &Gateway) -> &'static str {
    if gateway.settings.cookie_secure { "; Secure" } else { "" }
}

fn refresh_cookie(gateway: &Gateway, value: &str, max_age: u32) -> String {
    format!("{REFRESH}={value}; HttpOnly{}; SameSite=Strict; Path=/api/v1/auth; Max-Age={max_age}", secure(gateway))
}

fn csrf_cookie(gateway: &Gateway, value: &str, max_age: Option<u32>) -> String {
    let max_age = max_age.map(|m| format!("; Max-Age={m}")).unwrap_or_default();
    format!("{CSRF}={value}{}; SameSite=Strict; Path=/{max_age}", secure(gateway))
}

fn set(headers: &mut HeaderMap, cookie: &str) {
    if let Ok(v) = HeaderValue::from_str(cookie) {
        headers.append(SET_COOKIE, v);
    }
}

/// 32 random bytes, base64url.
fn new_csrf_token() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        h
    }

    #[test]
    fn cookies_are_read_from_every_cookie_header() {
        let h = headers(&[("cookie", "a=1; trellis_refresh=abc"), ("cookie", "trellis_csrf=\"xyz\"")]);
        assert_eq!(cookie(&h, REFRESH), Some("abc"));
        assert_eq!(cookie(&h, CSRF), Some("xyz"));
        assert_eq!(cookie(&h, "missing"), None);
        assert_eq!(cookie(&headers(&[("cookie", "trellis_refresh=")]), REFRESH), None);
    }

    #[test]
    fn the_csrf_header_must_equal_the_cookie() {
        assert!(csrf_matches(&headers(&[("cookie", "trellis_csrf=t0k"), ("x-csrf-token", "t0k")])));
        assert!(!csrf_matches(&headers(&[("cookie", "trellis_csrf=t0k"), ("x-csrf-token", "t0K")])));
        assert!(!csrf_matches(&headers(&[("cookie", "trellis_csrf=t0k")])));
        assert!(!csrf_matches(&headers(&[("x-csrf-token", "t0k")])));
    }

    #[test]
    fn origins_are_scheme_host_and_port() {
        assert_eq!(origin_of("https://App.Example.com/path?q"), "https://app.example.com");
        assert_eq!(origin_of("http://localhost:8080"), "http://localhost:8080");
        assert_eq!(origin_of("nonsense"), "");
    }

    #[test]
    fn identity_annotates_the_refresh_token_of_refresh() {
        let pool = trellis_kit::descriptors::pool();
        let request = pool.get_message_by_name("trellis.identity.v1.RefreshRequest").expect("message");
        let fields = cookie_fields(&request);
        assert_eq!(fields.len(), 1);
        assert_eq!((fields[0].0.name(), fields[0].1.as_str()), ("refresh_token", REFRESH));
        let login = pool.get_message_by_name("trellis.identity.v1.LoginRequest").expect("message");
        assert!(cookie_fields(&login).is_empty());
    }

    #[test]
    fn csrf_tokens_are_32_random_bytes() {
        let (a, b) = (new_csrf_token(), new_csrf_token());
        assert_ne!(a, b);
        assert_eq!(URL_SAFE_NO_PAD.decode(&a).expect("base64url").len(), 32);
    }
}
