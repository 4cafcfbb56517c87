//! The route table: every `google.api.http` binding in the descriptor set, compiled into a path
//! template matcher, plus the index of every method by its gRPC path.
//!
//! Templates follow `google/api/http.proto`:
//!
//! ```text
//! Template = "/" Segments [ ":" Verb ] ;
//! Segments = Segment { "/" Segment } ;
//! Segment  = "*" | "**" | LITERAL | Variable ;
//! Variable = "{" FieldPath [ "=" Segments ] "}" ;
//! ```
//!
//! Precedence (spec Rule 1): matching candidates are compared segment by segment from the left; a
//! literal beats `*`/`{var}`, which beats `**`, and a template with a matching `:verb` beats one
//! without. Two bindings with the same method and the same shape can never be told apart, so
//! [`RouteTable::build`] refuses them, naming both methods.

use std::cmp::Ordering;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::Method;
use percent_encoding::percent_decode_str;
use prost_reflect::{
    DescriptorPool, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, MethodDescriptor, ReflectMessage, Value,
};

/// One segment of a compiled template.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Segment {
    /// Matches exactly this text.
    Literal(String),
    /// `*` or `{var}`: one non-empty segment.
    Single,
    /// `**`: zero or more segments; always last.
    Rest,
}

impl Segment {
    /// Lower ranks win (Rule 1).
    fn rank(&self) -> u8 {
        match self {
            Segment::Literal(_) => 0,
            Segment::Single => 1,
            Segment::Rest => 2,
        }
    }
}

/// A variable of a template: the request field it fills and the segments it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variable {
    /// Dotted field path into the request message, e.g. `task_id` or `widget.id`.
    pub field_path: String,
    start: usize,
    /// Exclusive end; `None` when the variable ends with `**` and takes the rest of the path.
    end: Option<usize>,
}

impl Variable {
    /// Whether the variable can hold several segments (and so a `/`).
    pub fn is_multi_segment(&self) -> bool {
        self.end.is_none_or(|end| end - self.start > 1)
    }
}

/// A compiled path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathTemplate {
    raw: String,
    segments: Vec<Segment>,
    variables: Vec<Variable>,
    verb: Option<String>,
}

/// Why a template is invalid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError {
    /// The template.
    pub template: String,
    /// What is wrong with it.
    pub reason: String,
}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid path template {:?}: {}", self.template, self.reason)
    }
}

impl std::error::Error for TemplateError {}

fn is_field_path(s: &str) -> bool {
    !s.is_empty()
        && s.split('.').all(|ident| {
            let mut chars = ident.chars();
            chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
}

fn is_literal(s: &str) -> bool {
    !s.is_empty() && !s.contains(['{', '}', '*', ':', '/', '=', '?', '#'])
}

impl PathTemplate {
    /// Parses a template such as `/api/v1/tasks/{task_id}:archive`.
    pub fn parse(template: &str) -> Result<Self, TemplateError> {
        let fail = |reason: &str| TemplateError { template: template.to_string(), reason: reason.to_string() };
        let rest = template.strip_prefix('/').ok_or_else(|| fail("must start with '/'"))?;

        // The verb is the text after the last ':' outside braces, when no '/' follows it.
        let mut depth = 0i32;
        let mut verb_at = None;
        for (i, c) in rest.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ':' if depth == 0 => verb_at = Some(i),
                '/' if depth == 0 => verb_at = None,
                _ => {}
            }
            if !(0..=1).contains(&depth) {
                return Err(fail("unbalanced or nested braces"));
            }
        }
        if depth != 0 {
            return Err(fail("unbalanced braces"));
        }
        let (path, verb) = match verb_at {
            Some(i) => {
                let verb = &rest[i + 1..];
                if !is_literal(verb) {
                    return Err(fail("invalid verb"));
                }
                (&rest[..i], Some(verb.to_string()))
            }
            None => (rest, None),
        };

        // Split on '/' outside braces.
        let mut parts = Vec::new();
        let mut depth = 0;
        let mut start = 0;
        for (i, c) in path.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                '/' if depth == 0 => {
                    parts.push(&path[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        if !path.is_empty() {
            parts.push(&path[start..]);
        }

        let mut segments = Vec::new();
        let mut variables: Vec<Variable> = Vec::new();
        for part in parts {
            if let Some(inner) = part.strip_prefix('{') {
                let inner = inner.strip_suffix('}').ok_or_else(|| fail("a variable must be a whole segment"))?;
                let (field_path, sub) = inner.split_once('=').unwrap_or((inner, "*"));
                if !is_field_path(field_path) {
                    return Err(fail(&format!("invalid field path {field_path:?}")));
                }
                if variables.iter().any(|v| v.field_path == field_path) {
                    return Err(fail(&format!("variable {field_path:?} appears twice")));
                }
                let start = segments.len();
                for s in sub.split('/') {
                    segments.push(match s {
                        "*" => Segment::Single,
                        "**" => Segment::Rest,
                        s if is_literal(s) => Segment::Literal(s.to_string()),
                        _ => return Err(fail(&format!("invalid segment {s:?} in variable {field_path:?}"))),
                    });
                }
                let end = (segments.last() != Some(&Segment::Rest)).then_some(segments.len());
                variables.push(Variable { field_path: field_path.to_string(), start, end });
            } else {
                segments.push(match part {
                    "*" => Segment::Single,
                    "**" => Segment::Rest,
                    s if is_literal(s) => Segment::Literal(s.to_string()),
                    _ => return Err(fail(&format!("invalid segment {part:?}"))),
                });
            }
        }
        if let Some(i) = segments.iter().position(|s| *s == Segment::Rest)
            && i + 1 != segments.len()
        {
            return Err(fail("'**' must be the last segment"));
        }
        Ok(Self { raw: template.to_string(), segments, variables, verb })
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// Its variables, left to right.
    pub fn variables(&self) -> &[Variable] {
        &self.variables
    }

    /// The raw path segments with this template's `:verb` removed from the last one; `None` when
    /// the template has a verb the path lacks.
    fn strip_verb<'p>(&self, segments: &[&'p str]) -> Option<Vec<&'p str>> {
        let mut path = segments.to_vec();
        if let Some(verb) = &self.verb {
            let last = path.pop()?;
            let stem = last.strip_suffix(verb.as_str())?.strip_suffix(':')?;
            if !stem.is_empty() {
                path.push(stem);
            } else if !self.segments.is_empty() {
                return None;
            }
        }
        Some(path)
    }

    /// Matches raw path segments; returns the segment span of each variable.
    fn matches(&self, segments: &[&str]) -> Option<Vec<(usize, usize)>> {
        let path = self.strip_verb(segments)?;
        let has_rest = self.segments.last() == Some(&Segment::Rest);
        let fixed = self.segments.len() - usize::from(has_rest);
        if path.len() < fixed || (!has_rest && path.len() != fixed) {
            return None;
        }
        for (segment, text) in self.segments.iter().zip(&path) {
            match segment {
                Segment::Literal(l) if l != text => return None,
                Segment::Single if text.is_empty() => return None,
                _ => {}
            }
        }
        Some(self.variables.iter().map(|v| (v.start, v.end.unwrap_or(path.len()).min(path.len()))).collect())
    }

    /// Same method + same shape = indistinguishable.
    fn shape(&self) -> (Vec<Segment>, Option<&str>) {
        (self.segments.clone(), self.verb.as_deref())
    }

    fn rank(&self) -> (Vec<u8>, u8) {
        (self.segments.iter().map(Segment::rank).collect(), u8::from(self.verb.is_none()))
    }

    /// Fills the template with values for its variables (percent-encoding each); `None` when a
    /// value is missing or a variable spans several segments.
    pub fn expand(&self, value_of: impl Fn(&str) -> Option<String>) -> Option<String> {
        let mut out = String::new();
        let mut i = 0;
        while i < self.segments.len() {
            out.push('/');
            if let Some(var) = self.variables.iter().find(|v| v.start == i) {
                if var.is_multi_segment() {
                    return None;
                }
                let value = value_of(&var.field_path)?;
                if value.is_empty() {
                    return None;
                }
                out.extend(percent_encoding::utf8_percent_encode(&value, SEGMENT));
                i += 1;
                continue;
            }
            match &self.segments[i] {
                Segment::Literal(l) => out.push_str(l),
                _ => return None,
            }
            i += 1;
        }
        if out.is_empty() {
            out.push('/');
        }
        if let Some(verb) = &self.verb {
            out.push(':');
            out.push_str(verb);
        }
        Some(out)
    }
}

/// Characters escaped in a path segment (RFC 3986 `pchar` complement).
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'@')
    .remove(b'!')
    .remove(b'$')
    .remove(b'&')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')')
    .remove(b'+')
    .remove(b',')
    .remove(b';')
    .remove(b'=');

/// The outcome of a lookup.
#[derive(Debug)]
pub enum Lookup<'a, T> {
    /// A binding matched; the variables are percent-decoded.
    Found(&'a T, Vec<(String, String)>),
    /// A binding matched but a variable is invalid (a decoded `/` in a single-segment variable,
    /// or invalid UTF-8): the field path and why.
    BadVariable(String, &'static str),
    /// The path is known under other methods (the `Allow` list, HEAD included when GET is).
    MethodNotAllowed(Vec<Method>),
    /// No binding has this path.
    NotFound,
}

/// Two bindings that tie under the precedence order.
#[derive(Debug)]
pub struct Conflict<'a, T> {
    /// The binding already present.
    pub existing: &'a T,
}

#[derive(Debug)]
struct Entry<T> {
    method: Method,
    template: PathTemplate,
    value: T,
}

/// A matching binding and the segment span of each of its variables.
type Candidate<'a, T> = (&'a Entry<T>, Vec<(usize, usize)>);

/// A set of (method, template) bindings with precedence matching.
#[derive(Debug)]
pub struct Router<T> {
    entries: Vec<Entry<T>>,
    /// Entry indexes by their leading literal segments (at most [`INDEX_DEPTH`], joined by `/`),
    /// so a lookup only tries the bindings of its own collection.
    by_prefix: HashMap<String, Vec<usize>>,
}

/// How many leading literal segments key the index (`api/v1/tasks`).
const INDEX_DEPTH: usize = 3;

impl<T> Default for Router<T> {
    fn default() -> Self {
        Self { entries: Vec::new(), by_prefix: HashMap::new() }
    }
}

fn method_order(m: &Method) -> usize {
    [Method::GET, Method::HEAD, Method::POST, Method::PUT, Method::PATCH, Method::DELETE]
        .iter()
        .position(|x| x == m)
        .unwrap_or(6)
}

/// Splits a request path into raw segments, tolerating one trailing `/`.
fn split_path(path: &str) -> Option<Vec<&str>> {
    let rest = path.strip_prefix('/')?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() {
        return Some(Vec::new());
    }
    Some(rest.split('/').collect())
}

impl<T> Router<T> {
    /// Adds a binding; fails when one with the same method and shape exists.
    pub fn insert(&mut self, method: Method, template: PathTemplate, value: T) -> Result<(), Conflict<'_, T>> {
        if let Some(existing) =
            self.entries.iter().position(|e| e.method == method && e.template.shape() == template.shape())
        {
            return Err(Conflict { existing: &self.entries[existing].value });
        }
        let index = self.entries.len();
        let key = template
            .segments
            .iter()
            .take(INDEX_DEPTH)
            .map_while(|s| match s {
                Segment::Literal(l) => Some(l.as_str()),
                _ => None,
            })
            .collect::<Vec<_>>()
            .join("/");
        self.by_prefix.entry(key).or_default().push(index);
        self.entries.push(Entry { method, template, value });
        Ok(())
    }

    /// Number of bindings.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Every binding's value, in insertion order.
    pub fn values(&self) -> impl Iterator<Item = &T> {
        self.entries.iter().map(|e| &e.value)
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Finds the binding for `method` and the raw `path` (no query string). `HEAD` uses GET bindings.
    pub fn find(&self, method: &Method, path: &str) -> Lookup<'_, T> {
        let Some(segments) = split_path(path) else { return Lookup::NotFound };
        let wanted = if method == Method::HEAD { &Method::GET } else { method };
        // Every prefix a binding can be indexed under; the last path segment may carry a verb.
        let mut keys = Vec::with_capacity(INDEX_DEPTH + 1);
        for k in 0..=INDEX_DEPTH.min(segments.len()) {
            let mut parts: Vec<&str> = segments[..k].to_vec();
            if k == segments.len()
                && let Some(last) = parts.last_mut()
            {
                *last = last.split(':').next().unwrap_or(last);
            }
            keys.push(parts.join("/"));
        }
        let candidates = keys.iter().filter_map(|key| self.by_prefix.get(key)).flatten().map(|&i| &self.entries[i]);

        let mut best: Option<Candidate<'_, T>> = None;
        let mut allowed = BTreeSet::new();
        for entry in candidates {
            let Some(spans) = entry.template.matches(&segments) else { continue };
            if entry.method != *wanted {
                allowed.insert((method_order(&entry.method), entry.method.clone()));
                continue;
            }
            let better = match &best {
                None => true,
                Some((b, _)) => entry.template.rank().cmp(&b.template.rank()) == Ordering::Less,
            };
            if better {
                best = Some((entry, spans));
            }
        }
        let Some((entry, spans)) = best else {
            if allowed.is_empty() {
                return Lookup::NotFound;
            }
            if allowed.iter().any(|(_, m)| m == Method::GET) {
                allowed.insert((method_order(&Method::HEAD), Method::HEAD));
            }
            return Lookup::MethodNotAllowed(allowed.into_iter().map(|(_, m)| m).collect());
        };

        // Slice the variables out of the path with the verb removed.
        let stripped = entry.template.strip_verb(&segments).unwrap_or_default();
        let mut vars = Vec::with_capacity(spans.len());
        for (var, (start, end)) in entry.template.variables.iter().zip(spans) {
            let multi = var.is_multi_segment();
            let mut decoded = Vec::with_capacity(end.saturating_sub(start));
            for raw in stripped.get(start..end).unwrap_or_default() {
                let Ok(text) = percent_decode_str(raw).decode_utf8() else {
                    return Lookup::BadVariable(var.field_path.clone(), "is not valid UTF-8 once percent-decoded");
                };
                if !multi && text.contains('/') {
                    return Lookup::BadVariable(var.field_path.clone(), "must not contain '/'");
                }
                decoded.push(text.into_owned());
            }
            vars.push((var.field_path.clone(), decoded.join("/")));
        }
        Lookup::Found(&entry.value, vars)
    }
}

// ---------------------------------------------------------------------------------------------
// The route table built from descriptors.
// ---------------------------------------------------------------------------------------------

/// Everything the gateway knows about one gRPC method.
#[derive(Debug)]
pub struct MethodInfo {
    /// `/trellis.tasks.v1.TaskService/CreateTask`.
    pub path: String,
    /// The descriptor.
    pub descriptor: MethodDescriptor,
    /// The owning module: the context of the proto package (`trellis.tasks.v1` → `tasks`).
    pub module: String,
    /// `(trellis.common.v1.auth) = PUBLIC`.
    pub public: bool,
    /// Has at least one `google.api.http` binding, so it is reachable from outside the cell.
    pub external: bool,
    /// `(trellis.common.v1.timeout_ms)`, when set.
    pub timeout: Option<Duration>,
    /// `(trellis.common.v1.rate_class)`: which limiters apply (Rule 30).
    pub rate_class: RateClass,
    /// `(trellis.common.v1.rate_key_field)`: the body field holding the email of `auth_login`.
    pub rate_key_field: Option<String>,
    /// `(trellis.common.v1.scope)`: what an API key needs to call the method.
    pub scope: Option<String>,
    /// `(trellis.common.v1.api_key) = DENY`: API keys are refused whatever their scopes.
    pub api_key_denied: bool,
}

/// The rate-limit class of a method (`trellis.common.v1.RateClass`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RateClass {
    /// The anonymous/user/api_key/org limiters.
    #[default]
    Standard,
    /// Login and MFA challenge.
    AuthLogin,
    /// Forgot and reset password.
    AuthPasswordReset,
    /// Register, invitation preview and accept.
    AuthRegister,
    /// Refresh and logout.
    AuthRefresh,
}

impl RateClass {
    fn from_name(name: &str) -> Self {
        match name {
            "AUTH_LOGIN" => RateClass::AuthLogin,
            "AUTH_PASSWORD_RESET" => RateClass::AuthPasswordReset,
            "AUTH_REGISTER" => RateClass::AuthRegister,
            "AUTH_REFRESH" => RateClass::AuthRefresh,
            _ => RateClass::Standard,
        }
    }
}

impl MethodInfo {
    /// Neither side streams.
    pub fn is_unary(&self) -> bool {
        !self.descriptor.is_client_streaming() && !self.descriptor.is_server_streaming()
    }
}

/// How the HTTP body maps onto the request message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyBinding {
    /// No body is accepted.
    None,
    /// `body: "*"`: the body is the request message.
    Whole,
    /// `body: "field"`: the body fills that top-level field.
    Field(FieldDescriptor),
}

/// What a successful response looks like on REST (Rule 9).
#[derive(Debug, Clone)]
pub enum Success {
    /// 200 with the JSON body.
    Ok,
    /// 201 with `Location` when it can be built from the `Get<Resource>` route.
    Created(Option<PathTemplate>),
    /// 204, no body (`google.protobuf.Empty`).
    NoContent,
    /// 302 to the response's `location` (`trellis.common.v1.Redirect`).
    Redirect,
}

/// One HTTP binding.
#[derive(Debug)]
pub struct Route {
    /// The method it calls.
    pub method: Arc<MethodInfo>,
    /// The HTTP method.
    pub http_method: Method,
    /// The compiled template.
    pub template: PathTemplate,
    /// The body mapping.
    pub body: BodyBinding,
    /// `response_body`: the response field sent instead of the whole message.
    pub response_body: Option<FieldDescriptor>,
    /// The success status.
    pub success: Success,
}

impl Route {
    /// `GET /api/v1/tasks/{task_id}`: the label used in logs and metrics (never the raw path).
    pub fn label(&self) -> String {
        format!("{} {}", self.http_method, self.template.as_str())
    }
}

/// Every binding, and every method by gRPC path.
#[derive(Debug, Default)]
pub struct RouteTable {
    router: Router<Arc<Route>>,
    methods: HashMap<String, Arc<MethodInfo>>,
}

/// The module of a proto package: `trellis.tasks.v1` → `tasks`; other packages are their own name.
pub fn module_of(package: &str) -> String {
    let mut parts = package.split('.');
    match (parts.next(), parts.next()) {
        (Some("trellis"), Some(context)) => context.to_string(),
        _ => package.to_string(),
    }
}

fn string_field(message: &DynamicMessage, name: &str) -> String {
    message.get_field_by_name(name).and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}

/// The (method, path) of an `HttpRule`, if it has a pattern.
fn rule_pattern(rule: &DynamicMessage) -> Option<(Method, String)> {
    for (name, method) in [
        ("get", Method::GET),
        ("put", Method::PUT),
        ("post", Method::POST),
        ("delete", Method::DELETE),
        ("patch", Method::PATCH),
    ] {
        if rule.descriptor().get_field_by_name(name).is_some_and(|f| rule.has_field(&f)) {
            return Some((method, string_field(rule, name)));
        }
    }
    let custom = rule.get_field_by_name("custom")?;
    let custom = custom.as_message()?;
    let kind = string_field(custom, "kind");
    let method = Method::from_bytes(kind.as_bytes()).ok()?;
    Some((method, string_field(custom, "path")))
}

/// Resolves a dotted field path through singular message fields.
pub fn resolve_field_path(message: &MessageDescriptor, path: &str) -> Option<FieldDescriptor> {
    let mut current = message.clone();
    let mut parts = path.split('.').peekable();
    while let Some(part) = parts.next() {
        let field = current.get_field_by_name(part)?;
        if parts.peek().is_none() {
            return Some(field);
        }
        if field.is_list() || field.is_map() {
            return None;
        }
        match field.kind() {
            Kind::Message(m) => current = m,
            _ => return None,
        }
    }
    None
}

fn extension_value(options: &DynamicMessage, ext: Option<&prost_reflect::ExtensionDescriptor>) -> Option<Value> {
    let ext = ext?;
    options.has_extension(ext).then(|| options.get_extension(ext).into_owned())
}

impl RouteTable {
    /// Builds the table from `pool`. Fails, naming the methods, on an invalid template, a
    /// binding that names an unknown field, or two bindings that tie.
    pub fn build(pool: &DescriptorPool) -> anyhow::Result<Self> {
        let http_ext = pool.get_extension_by_name("google.api.http");
        let timeout_ext = pool.get_extension_by_name("trellis.common.v1.timeout_ms");
        let rate_class_ext = pool.get_extension_by_name("trellis.common.v1.rate_class");
        let rate_key_ext = pool.get_extension_by_name("trellis.common.v1.rate_key_field");
        let scope_ext = pool.get_extension_by_name("trellis.common.v1.scope");
        let api_key_ext = pool.get_extension_by_name("trellis.common.v1.api_key");
        let public_methods = public_methods(pool);

        let mut table = RouteTable::default();
        let mut bindings: Vec<(Arc<MethodInfo>, DynamicMessage)> = Vec::new();
        for service in pool.services() {
            for method in service.methods() {
                let options = method.options();
                let path = format!("/{}/{}", service.full_name(), method.name());
                let rule = extension_value(&options, http_ext.as_ref()).and_then(|v| v.as_message().cloned());
                let timeout = extension_value(&options, timeout_ext.as_ref())
                    .and_then(|v| v.as_u32())
                    .filter(|ms| *ms > 0)
                    .map(|ms| Duration::from_millis(u64::from(ms)));
                let text = |ext: Option<&prost_reflect::ExtensionDescriptor>| {
                    extension_value(&options, ext)
                        .and_then(|v| v.as_str().map(str::to_string))
                        .filter(|s| !s.is_empty())
                };
                let enum_name = |ext: Option<&prost_reflect::ExtensionDescriptor>| {
                    let number = extension_value(&options, ext).and_then(|v| v.as_enum_number())?;
                    let kind = ext?.kind();
                    kind.as_enum()?.get_value(number).map(|v| v.name().to_string())
                };
                let info = Arc::new(MethodInfo {
                    rate_class: enum_name(rate_class_ext.as_ref())
                        .map_or_else(RateClass::default, |n| RateClass::from_name(&n)),
                    rate_key_field: text(rate_key_ext.as_ref()),
                    scope: text(scope_ext.as_ref()),
                    api_key_denied: enum_name(api_key_ext.as_ref()).as_deref() == Some("DENY"),
                    public: public_methods.contains(&path),
                    external: rule.as_ref().is_some_and(|r| rule_pattern(r).is_some()),
                    module: module_of(service.package_name()),
                    descriptor: method.clone(),
                    timeout,
                    path: path.clone(),
                });
                table.methods.insert(path, info.clone());
                if let Some(rule) = rule {
                    let additional = rule
                        .get_field_by_name("additional_bindings")
                        .and_then(|v| v.as_list().map(<[Value]>::to_vec))
                        .unwrap_or_default();
                    bindings.push((info.clone(), rule));
                    for extra in additional {
                        if let Some(extra) = extra.as_message() {
                            bindings.push((info.clone(), extra.clone()));
                        }
                    }
                }
            }
        }

        let mut routes = Vec::new();
        for (info, rule) in bindings {
            let name = info.descriptor.full_name().to_string();
            let Some((http_method, path)) = rule_pattern(&rule) else {
                anyhow::bail!("{name}: an HTTP binding has no pattern");
            };
            let template = PathTemplate::parse(&path).map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
            let input = info.descriptor.input();
            for var in template.variables() {
                let field = resolve_field_path(&input, &var.field_path).ok_or_else(|| {
                    anyhow::anyhow!(
                        "{name}: {path} binds {:?}, which is not a field of {}",
                        var.field_path,
                        input.full_name()
                    )
                })?;
                if field.is_list() || field.is_map() || matches!(field.kind(), Kind::Message(_)) {
                    anyhow::bail!("{name}: {path} binds {:?}, which is not a singular scalar", var.field_path);
                }
            }
            let body = match string_field(&rule, "body").as_str() {
                "" => BodyBinding::None,
                "*" => BodyBinding::Whole,
                field => BodyBinding::Field(input.get_field_by_name(field).ok_or_else(|| {
                    anyhow::anyhow!("{name}: body {field:?} is not a field of {}", input.full_name())
                })?),
            };
            let output = info.descriptor.output();
            let response_body = match string_field(&rule, "response_body").as_str() {
                "" => None,
                field => Some(output.get_field_by_name(field).ok_or_else(|| {
                    anyhow::anyhow!("{name}: response_body {field:?} is not a field of {}", output.full_name())
                })?),
            };
            let success = match output.full_name() {
                "google.protobuf.Empty" => Success::NoContent,
                "trellis.common.v1.Redirect" => Success::Redirect,
                _ if info.descriptor.name().starts_with("Create") => Success::Created(None),
                _ => Success::Ok,
            };
            routes.push(Route { method: info, http_method, template, body, response_body, success });
        }

        // Location templates: `Create<X>` → the GET binding of `Get<X>` in the same service.
        let get_templates: HashMap<String, PathTemplate> = routes
            .iter()
            .filter(|r| r.http_method == Method::GET && r.method.descriptor.name().starts_with("Get"))
            .map(|r| (r.method.descriptor.full_name().to_string(), r.template.clone()))
            .rev() // the primary binding (first) wins
            .collect();
        for route in &mut routes {
            if let Success::Created(location) = &mut route.success {
                let service = route.method.descriptor.parent_service().full_name().to_string();
                let resource = route.method.descriptor.name().trim_start_matches("Create");
                *location = get_templates.get(&format!("{service}.Get{resource}")).cloned();
            }
        }

        for route in routes {
            let route = Arc::new(route);
            if let Err(conflict) = table.router.insert(route.http_method.clone(), route.template.clone(), route.clone())
            {
                anyhow::bail!(
                    "HTTP bindings tie and cannot be told apart: {} {} ({}) and {} {} ({})",
                    conflict.existing.http_method,
                    conflict.existing.template.as_str(),
                    conflict.existing.method.descriptor.full_name(),
                    route.http_method,
                    route.template.as_str(),
                    route.method.descriptor.full_name(),
                );
            }
        }
        Ok(table)
    }

    /// The binding for a REST request.
    pub fn find(&self, method: &Method, path: &str) -> Lookup<'_, Arc<Route>> {
        self.router.find(method, path)
    }

    /// Every HTTP binding.
    pub fn routes(&self) -> impl Iterator<Item = &Arc<Route>> {
        self.router.values()
    }

    /// A method by its gRPC path (`/package.Service/Method`).
    pub fn method(&self, path: &str) -> Option<&Arc<MethodInfo>> {
        self.methods.get(path)
    }

    /// Number of HTTP bindings.
    pub fn len(&self) -> usize {
        self.router.len()
    }

    /// Whether there are no bindings.
    pub fn is_empty(&self) -> bool {
        self.router.is_empty()
    }

    /// The modules that own at least one method.
    pub fn modules(&self) -> HashSet<&str> {
        self.methods.values().map(|m| m.module.as_str()).collect()
    }
}

/// `/package.Service/Method` of every method marked `(trellis.common.v1.auth) = PUBLIC` in `pool`.
fn public_methods(pool: &DescriptorPool) -> HashSet<String> {
    let Some(auth) = pool.get_extension_by_name("trellis.common.v1.auth") else {
        return HashSet::new();
    };
    let public = auth.kind().as_enum().and_then(|e| e.get_value_by_name("PUBLIC")).map(|v| v.number());
    pool.services()
        .flat_map(|s| s.methods().collect::<Vec<_>>())
        .filter(
            |m| matches!(extension_value(&m.options(), Some(&auth)), Some(Value::EnumNumber(n)) if Some(n) == public),
        )
        .map(|m| format!("/{}/{}", m.parent_service().full_name(), m.name()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn router(bindings: &[(&str, &str)]) -> Router<String> {
        let mut router = Router::default();
        for (method, template) in bindings {
            let m = Method::from_bytes(method.as_bytes()).expect("method");
            router
                .insert(m, PathTemplate::parse(template).expect("template"), format!("{method} {template}"))
                .unwrap_or_else(|c| panic!("conflict with {}", c.existing));
        }
        router
    }

    fn found(router: &Router<String>, method: &str, path: &str) -> (String, Vec<(String, String)>) {
        match router.find(&Method::from_bytes(method.as_bytes()).expect("method"), path) {
            Lookup::Found(v, vars) => (v.clone(), vars),
            other => panic!("{method} {path}: expected a match, got {other:?}"),
        }
    }

    #[test]
    fn templates_parse_literals_variables_wildcards_and_verbs() {
        let t = PathTemplate::parse("/api/v1/{name=projects/*/tasks/*}:archive").expect("valid");
        assert_eq!(t.verb.as_deref(), Some("archive"));
        assert_eq!(t.segments.len(), 6);
        assert_eq!(t.variables()[0].field_path, "name");
        assert!(t.variables()[0].is_multi_segment());
        let t = PathTemplate::parse("/v1/{task.id}/**").expect("valid");
        assert_eq!(t.variables()[0].field_path, "task.id");
        assert!(!t.variables()[0].is_multi_segment());
        assert_eq!(t.segments.last(), Some(&Segment::Rest));
        assert!(PathTemplate::parse("/.well-known/jwks.json").is_ok());
    }

    #[test]
    fn invalid_templates_are_refused() {
        for bad in ["api/v1", "/a/**/b", "/a/{x", "/a/{x}/{x}", "/a/{1x}", "/a/{x={y}}", "/a//b", "/a/b:", "/a/x{y}"] {
            assert!(PathTemplate::parse(bad).is_err(), "{bad} should be invalid");
        }
    }

    #[test]
    fn variables_are_extracted_and_percent_decoded_once() {
        let r = router(&[("GET", "/api/v1/tasks/{task_id}")]);
        let (_, vars) = found(&r, "GET", "/api/v1/tasks/a%20b%2541");
        assert_eq!(vars, vec![("task_id".to_string(), "a b%41".to_string())]);
    }

    #[test]
    fn a_decoded_slash_in_a_single_segment_variable_is_rejected() {
        let r = router(&[("GET", "/api/v1/tasks/{task_id}")]);
        assert!(matches!(
            r.find(&Method::GET, "/api/v1/tasks/a%2Fb"),
            Lookup::BadVariable(field, _) if field == "task_id"
        ));
    }

    #[test]
    fn multi_segment_variables_take_the_rest_of_the_path() {
        let r = router(&[("GET", "/files/{path=**}"), ("GET", "/v1/{name=projects/*/docs/*}")]);
        assert_eq!(found(&r, "GET", "/files/a/b/c.txt").1, vec![("path".to_string(), "a/b/c.txt".to_string())]);
        assert_eq!(found(&r, "GET", "/files").1, vec![("path".to_string(), String::new())]);
        assert_eq!(
            found(&r, "GET", "/v1/projects/p1/docs/d1").1,
            vec![("name".to_string(), "projects/p1/docs/d1".to_string())]
        );
        assert!(matches!(r.find(&Method::GET, "/v1/projects/p1/other/d1"), Lookup::NotFound));
    }

    #[test]
    fn a_literal_beats_a_variable_which_beats_a_rest_wildcard() {
        // Inserted in the "wrong" order on purpose: precedence does not depend on it.
        let r = router(&[
            ("GET", "/api/v1/webhooks/{path=**}"),
            ("GET", "/api/v1/webhooks/{webhook_id}"),
            ("GET", "/api/v1/webhooks/event-types"),
        ]);
        assert_eq!(found(&r, "GET", "/api/v1/webhooks/event-types").0, "GET /api/v1/webhooks/event-types");
        assert_eq!(found(&r, "GET", "/api/v1/webhooks/w1").0, "GET /api/v1/webhooks/{webhook_id}");
        assert_eq!(found(&r, "GET", "/api/v1/webhooks/w1/deliveries").0, "GET /api/v1/webhooks/{path=**}");
    }

    #[test]
    fn precedence_is_decided_from_the_left() {
        let r = router(&[("GET", "/a/{x}/c"), ("GET", "/a/b/{y}")]);
        assert_eq!(found(&r, "GET", "/a/b/c").0, "GET /a/b/{y}");
        assert_eq!(found(&r, "GET", "/a/z/c").0, "GET /a/{x}/c");
    }

    #[test]
    fn a_matching_verb_beats_a_variable() {
        let r = router(&[("POST", "/v1/tasks/{task_id}"), ("POST", "/v1/tasks/{task_id}:archive")]);
        let (route, vars) = found(&r, "POST", "/v1/tasks/t1:archive");
        assert_eq!(route, "POST /v1/tasks/{task_id}:archive");
        assert_eq!(vars, vec![("task_id".to_string(), "t1".to_string())]);
        assert_eq!(found(&r, "POST", "/v1/tasks/t1").0, "POST /v1/tasks/{task_id}");
    }

    #[test]
    fn a_trailing_slash_is_tolerated() {
        let r = router(&[("GET", "/api/v1/tasks")]);
        assert_eq!(found(&r, "GET", "/api/v1/tasks/").0, "GET /api/v1/tasks");
    }

    #[test]
    fn an_unknown_path_is_not_found() {
        let r = router(&[("GET", "/api/v1/tasks")]);
        assert!(matches!(r.find(&Method::GET, "/api/v1/nope"), Lookup::NotFound));
        assert!(matches!(r.find(&Method::GET, "no-slash"), Lookup::NotFound));
        assert!(matches!(r.find(&Method::GET, "/api/v1//tasks"), Lookup::NotFound));
    }

    #[test]
    fn a_known_path_with_another_method_lists_the_allowed_ones() {
        let r = router(&[
            ("GET", "/api/v1/notifications/unread-count"),
            ("POST", "/api/v1/tasks"),
            ("GET", "/api/v1/tasks"),
        ]);
        match r.find(&Method::DELETE, "/api/v1/notifications/unread-count") {
            Lookup::MethodNotAllowed(allow) => assert_eq!(allow, vec![Method::GET, Method::HEAD]),
            other => panic!("expected 405, got {other:?}"),
        }
        match r.find(&Method::PUT, "/api/v1/tasks") {
            Lookup::MethodNotAllowed(allow) => assert_eq!(allow, vec![Method::GET, Method::HEAD, Method::POST]),
            other => panic!("expected 405, got {other:?}"),
        }
    }

    #[test]
    fn head_is_answered_by_get_bindings() {
        let r = router(&[("GET", "/.well-known/jwks.json")]);
        assert_eq!(found(&r, "HEAD", "/.well-known/jwks.json").0, "GET /.well-known/jwks.json");
    }

    #[test]
    fn bindings_that_tie_are_refused() {
        let mut r: Router<&str> = Router::default();
        r.insert(Method::GET, PathTemplate::parse("/a/{x}").expect("t"), "first").expect("first insert");
        let conflict = r.insert(Method::GET, PathTemplate::parse("/a/{y}").expect("t"), "second").expect_err("tie");
        assert_eq!(*conflict.existing, "first");
        assert!(r.insert(Method::GET, PathTemplate::parse("/a/*").expect("t"), "third").is_err());
        // Another method, another literal or a verb makes a distinct binding.
        assert!(r.insert(Method::POST, PathTemplate::parse("/a/{y}").expect("t"), "post").is_ok());
        assert!(r.insert(Method::GET, PathTemplate::parse("/a/{y}:do").expect("t"), "verb").is_ok());
        assert!(r.insert(Method::GET, PathTemplate::parse("/a/b").expect("t"), "literal").is_ok());
    }

    #[test]
    fn templates_expand_with_percent_encoding() {
        let t = PathTemplate::parse("/api/v1/boards/{board_id}/tasks/{task_id}").expect("t");
        let path = t.expand(|f| Some(if f == "board_id" { "b 1".into() } else { "t/2".into() }));
        assert_eq!(path.as_deref(), Some("/api/v1/boards/b%201/tasks/t%2F2"));
        assert_eq!(t.expand(|_| None), None);
    }

    #[test]
    fn packages_map_to_modules() {
        assert_eq!(module_of("trellis.tasks.v1"), "tasks");
        assert_eq!(module_of("trellis.gateway.v1"), "gateway");
        assert_eq!(module_of("grpc.health.v1"), "grpc.health.v1");
    }

    #[test]
    fn the_contract_builds_a_route_table() {
        let table = RouteTable::build(trellis_kit::descriptors::pool()).expect("the contract's routes are valid");
        let jwks = match table.find(&Method::GET, "/.well-known/jwks.json") {
            Lookup::Found(route, _) => route.clone(),
            other => panic!("jwks route missing: {other:?}"),
        };
        assert_eq!(jwks.method.path, "/trellis.identity.v1.TokenService/GetJwks");
        assert_eq!(jwks.method.module, "identity");
        assert!(jwks.method.public);
        assert!(jwks.method.external);
    }

    #[test]
    fn bindings_that_tie_stop_the_gateway_naming_both_methods() {
        let pool = crate::test_pool::compile("trellis/clash/v1/clash.proto");
        let error = RouteTable::build(&pool).expect_err("the clash must be refused").to_string();
        assert!(error.contains("trellis.clash.v1.ClashService.GetFirst"), "{error}");
        assert!(error.contains("trellis.clash.v1.ClashService.GetSecond"), "{error}");
    }

    #[test]
    fn additional_bindings_are_routes_too() {
        let table = RouteTable::build(crate::test_pool::pool()).expect("widget routes");
        for path in ["/api/v1/catalog", "/api/v1/catalog/a/b"] {
            match table.find(&Method::GET, path) {
                Lookup::Found(route, _) => assert!(route.method.path.ends_with("/GetCatalog")),
                other => panic!("{path}: {other:?}"),
            }
        }
        let purge = table.method("/trellis.widgets.v1.WidgetService/PurgeWidgets").expect("indexed");
        assert!(!purge.external, "a method without an HTTP rule is internal");
    }

    fn segment() -> impl Strategy<Value = String> {
        "[a-z][a-z0-9-]{0,8}"
    }

    proptest! {
        #[test]
        fn a_literal_template_matches_exactly_its_own_path(segs in prop::collection::vec(segment(), 1..6)) {
            let path = format!("/{}", segs.join("/"));
            let r = router(&[("GET", path.as_str())]);
            prop_assert!(matches!(r.find(&Method::GET, &path), Lookup::Found(_, ref v) if v.is_empty()));
            let longer = format!("{path}/extra");
            prop_assert!(matches!(r.find(&Method::GET, &longer), Lookup::NotFound));
        }

        #[test]
        fn a_variable_captures_its_segment_decoded(
            segs in prop::collection::vec(segment(), 1..6),
            at in any::<prop::sample::Index>(),
            value in "[^/]{1,12}",
        ) {
            let i = at.index(segs.len());
            let mut template_segs = segs.clone();
            template_segs[i] = "{v}".to_string();
            let template = format!("/{}", template_segs.join("/"));
            let mut path_segs = segs.clone();
            path_segs[i] = percent_encoding::utf8_percent_encode(&value, SEGMENT).to_string();
            let path = format!("/{}", path_segs.join("/"));
            let r = router(&[("GET", template.as_str())]);
            let (_, vars) = found(&r, "GET", &path);
            prop_assert_eq!(vars, vec![("v".to_string(), value)]);
        }

        #[test]
        fn a_literal_binding_always_beats_a_variable_binding(
            segs in prop::collection::vec(segment(), 1..6),
            at in any::<prop::sample::Index>(),
            literal_first in any::<bool>(),
        ) {
            let i = at.index(segs.len());
            let literal = format!("/{}", segs.join("/"));
            let mut var_segs = segs.clone();
            var_segs[i] = "{v}".to_string();
            let variable = format!("/{}", var_segs.join("/"));
            let bindings = if literal_first {
                [("GET", literal.as_str()), ("GET", variable.as_str())]
            } else {
                [("GET", variable.as_str()), ("GET", literal.as_str())]
            };
            let r = router(&bindings);
            prop_assert_eq!(found(&r, "GET", &literal).0, format!("GET {literal}"));
        }

        #[test]
        fn the_index_finds_what_a_linear_scan_finds(
            templates in prop::collection::vec(
                (prop::collection::vec(prop::sample::select(vec!["a", "b", "c", "*", "{v}"]), 0..4), any::<bool>(), any::<bool>()),
                1..12,
            ),
            path in prop::collection::vec(prop::sample::select(vec!["a", "b", "c", "x"]), 0..5),
            verb in any::<bool>(),
        ) {
            let mut router: Router<usize> = Router::default();
            for (i, (segs, rest, with_verb)) in templates.iter().enumerate() {
                let mut parts: Vec<String> = segs
                    .iter()
                    .enumerate()
                    .map(|(j, s)| if *s == "{v}" { format!("{{v{j}}}") } else { s.to_string() })
                    .collect();
                if *rest {
                    parts.push("**".into());
                }
                let mut template = format!("/{}", parts.join("/"));
                if *with_verb {
                    template.push_str(":go");
                }
                if let Ok(t) = PathTemplate::parse(&template) {
                    let _ = router.insert(Method::GET, t, i);
                }
            }
            let mut raw = format!("/{}", path.join("/"));
            if verb {
                raw.push_str(":go");
            }
            let segments = split_path(&raw).expect("path");
            let linear = router
                .entries
                .iter()
                .filter(|e| e.template.matches(&segments).is_some())
                .min_by(|a, b| a.template.rank().cmp(&b.template.rank()))
                .map(|e| e.value);
            let indexed = match router.find(&Method::GET, &raw) {
                Lookup::Found(v, _) => Some(*v),
                _ => None,
            };
            prop_assert_eq!(indexed, linear);
        }

        #[test]
        fn expanding_then_matching_round_trips(value in "[^/]{1,16}", other in "[a-z0-9]{1,8}") {
            let t = PathTemplate::parse("/api/v1/things/{thing_id}/parts/{part_id}").expect("t");
            let path = t.expand(|f| Some(if f == "thing_id" { value.clone() } else { other.clone() })).expect("expand");
            let r = router(&[("GET", "/api/v1/things/{thing_id}/parts/{part_id}")]);
            let (_, vars) = found(&r, "GET", &path);
            prop_assert_eq!(vars, vec![("thing_id".to_string(), value), ("part_id".to_string(), other)]);
        }
    }
}
