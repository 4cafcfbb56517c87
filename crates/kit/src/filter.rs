//! List filters (AIP-160, restricted) and orderings (AIP-132 `order_by`) over declared fields.
//!
//! A service declares the fields a list may be filtered and sorted by, each with the SQL
//! expression it stands for and its type ([`Schema`]). [`Schema::parse`] turns the caller's
//! `filter` string into a [`Filter`]; [`Filter::push_sql`] appends it to a
//! `sqlx::QueryBuilder` as a boolean SQL expression whose values are all bound parameters. Bad
//! syntax, unknown fields, unsupported operators and values of the wrong type are
//! INVALID_ARGUMENT `VALIDATION_ERROR` with a violation of the field `filter` (or `order_by`).
//!
//! The language, a subset of AIP-160:
//! - comparisons `field OP value` with `=`, `!=`, `<`, `<=`, `>`, `>=` and `:` (has: substring
//!   for text, membership for sets, `field:*` = the field is set);
//! - `AND`, `OR`, `NOT` (or `-`) and parentheses; juxtaposition is `AND`; as in AIP-160 `OR`
//!   binds tighter than `AND` (`a AND b OR c` = `a AND (b OR c)`);
//! - values: `"quoted strings"` (with `\"` and `\\`), bare words and numbers, `true`/`false`,
//!   `null` (only with `=` and `!=`); timestamps as RFC 3339 or `YYYY-MM-DD` (midnight UTC);
//!   a trailing `*` in a text value compared with `=` is a prefix match;
//! - map fields (`metadata.color = "red"`) compare the text value of one key;
//! - at most 2 000 characters, 50 comparisons and 10 levels of nesting.
//!
//! [`Schema::order_by`] parses `order_by` (`field [asc|desc]`), one declared sortable field; the
//! SQL order always ends with the row id as tiebreak, so pages are stable. [`Order::push_after`]
//! writes the keyset condition for the next page from a [`SortKey`] the service stored in its
//! page token, with NULLs last in either direction. [`Filter::canonical`] and
//! [`Order::canonical`] give the normalised text a page token binds with
//! [`crate::paging::PageTokens::query_hash`].

use std::fmt::Write as _;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{Postgres, QueryBuilder};
use uuid::Uuid;

use crate::error::{Error, Result};

/// Longest filter string accepted.
pub const MAX_FILTER_LEN: usize = 2_000;
/// Most comparisons in one filter.
pub const MAX_COMPARISONS: usize = 50;
/// Deepest nesting of parentheses and `NOT`.
pub const MAX_DEPTH: usize = 10;

/// What a declared field holds, which decides the operators and values it accepts.
#[derive(Debug, Clone, Copy)]
pub enum FieldType {
    /// Text: `=` `!=` (with a trailing `*` for a prefix), `:` substring ignoring case, `<` `>`.
    Text,
    /// A UUID: `=` `!=`.
    Uuid,
    /// A timestamp: every comparison.
    Timestamp,
    /// A boolean: `=` `!=`.
    Bool,
    /// An integer: every comparison.
    Int,
    /// One of the listed lowercase names (upper case accepted); `<` `>` compare by list order
    /// when `ordered`.
    Enum { values: &'static [&'static str], ordered: bool },
    /// A set of names matched with `=` or `:` (membership); the field's SQL is a boolean
    /// template with one `$` where the bound name goes (e.g. an `exists` over a tag table).
    Set,
    /// A JSON object column: `field.key OP "text"` compares the key's text value.
    Map,
}

/// A field a list may be filtered (and possibly sorted) by.
#[derive(Debug, Clone)]
pub struct Field {
    name: &'static str,
    sql: &'static str,
    ty: FieldType,
    filterable: bool,
    sortable: bool,
    descending_by_default: bool,
}

/// The declared fields of one list.
#[derive(Debug, Clone, Default)]
pub struct Schema {
    fields: Vec<Field>,
}

impl Schema {
    /// No fields yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// A filterable field named `name` standing for the SQL expression `sql`.
    pub fn field(mut self, name: &'static str, sql: &'static str, ty: FieldType) -> Self {
        self.fields.push(Field { name, sql, ty, filterable: true, sortable: false, descending_by_default: false });
        self
    }

    /// A field that may be filtered and sorted by.
    pub fn sortable(mut self, name: &'static str, sql: &'static str, ty: FieldType) -> Self {
        self.fields.push(Field { name, sql, ty, filterable: true, sortable: true, descending_by_default: false });
        self
    }

    /// A field that may only be sorted by.
    pub fn sort_only(mut self, name: &'static str, sql: &'static str, ty: FieldType) -> Self {
        self.fields.push(Field { name, sql, ty, filterable: false, sortable: true, descending_by_default: false });
        self
    }

    /// A field that may be filtered and sorted by, sorted descending when `order_by` names no
    /// direction (newest first, urgent first).
    pub fn sortable_desc(mut self, name: &'static str, sql: &'static str, ty: FieldType) -> Self {
        self.fields.push(Field { name, sql, ty, filterable: true, sortable: true, descending_by_default: true });
        self
    }

    fn find(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// Parses a filter; an empty or blank string is the empty filter (matches everything).
    pub fn parse(&self, raw: &str) -> Result<Filter> {
        if raw.len() > MAX_FILTER_LEN {
            return Err(invalid(format!("must be at most {MAX_FILTER_LEN} characters")));
        }
        let tokens = lex(raw).map_err(invalid)?;
        if tokens.is_empty() {
            return Ok(Filter { root: None });
        }
        let mut parser = Parser { schema: self, tokens, pos: 0, comparisons: 0 };
        let root = parser.expression(0).map_err(invalid)?;
        if parser.pos < parser.tokens.len() {
            return Err(invalid(format!("unexpected {}", parser.tokens[parser.pos].describe())));
        }
        Ok(Filter { root: Some(root) })
    }

    /// Parses `order_by`: empty → `default` (a `field [desc]` string the service trusts), else
    /// one declared sortable field with an optional `asc` or `desc`.
    pub fn order_by(&self, raw: &str, default: &str) -> Result<Order> {
        let bad = |m: String| Error::validation("order_by", m);
        let text = if raw.trim().is_empty() { default } else { raw };
        let mut parts = text.split_whitespace();
        let name = parts.next().ok_or_else(|| bad("names no field".into()))?;
        if name.contains(',') || text.contains(',') {
            return Err(bad("sorts by one field".into()));
        }
        let field = self.find(name).filter(|f| f.sortable).ok_or_else(|| {
            let known: Vec<&str> = self.fields.iter().filter(|f| f.sortable).map(|f| f.name).collect();
            bad(format!("cannot sort by {name:?}; sortable fields: {}", known.join(", ")))
        })?;
        let descending = match parts.next().map(str::to_ascii_lowercase).as_deref() {
            None => field.descending_by_default,
            Some("asc") => false,
            Some("desc") => true,
            Some(other) => return Err(bad(format!("unknown direction {other:?}; use asc or desc"))),
        };
        if parts.next().is_some() {
            return Err(bad("expected `field [asc|desc]`".into()));
        }
        Ok(Order { field: field.clone(), descending })
    }
}

fn invalid(message: impl Into<String>) -> Error {
    Error::validation("filter", message)
}

/// A parsed filter.
#[derive(Debug, Clone)]
pub struct Filter {
    root: Option<Node>,
}

#[derive(Debug, Clone)]
enum Node {
    And(Vec<Node>),
    Or(Vec<Node>),
    Not(Box<Node>),
    Cmp(Comparison),
}

/// One `field OP value` comparison, typed.
#[derive(Debug, Clone)]
struct Comparison {
    field: Field,
    key: Option<String>,
    op: Op,
    value: Value,
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `=`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `:`
    Has,
}

impl Op {
    fn as_str(self) -> &'static str {
        match self {
            Op::Eq => "=",
            Op::Ne => "!=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Has => ":",
        }
    }

    fn sql(self) -> &'static str {
        match self {
            Op::Eq | Op::Has => " = ",
            Op::Ne => " <> ",
            Op::Lt => " < ",
            Op::Le => " <= ",
            Op::Gt => " > ",
            Op::Ge => " >= ",
        }
    }

    fn ordering(self) -> bool {
        matches!(self, Op::Lt | Op::Le | Op::Gt | Op::Ge)
    }
}

#[derive(Debug, Clone)]
enum Value {
    Null,
    Present,
    Text(String),
    Prefix(String),
    Uuid(Uuid),
    Time(DateTime<Utc>),
    Bool(bool),
    Int(i64),
    Ordinal(i32),
}

impl Filter {
    /// Whether the filter matches everything.
    pub fn is_empty(&self) -> bool {
        self.root.is_none()
    }

    /// A normalised rendering, equal for equal filters (for page-token binding).
    pub fn canonical(&self) -> String {
        let mut out = String::new();
        if let Some(root) = &self.root {
            render(root, &mut out);
        }
        out
    }

    /// Appends ` AND (<filter>)` to `q`, or nothing for the empty filter.
    pub fn push_and(&self, q: &mut QueryBuilder<'_, Postgres>) {
        if let Some(root) = &self.root {
            q.push(" and (");
            push_node(root, q);
            q.push(")");
        }
    }

    /// Appends the filter as one boolean SQL expression (`true` when empty).
    pub fn push_sql(&self, q: &mut QueryBuilder<'_, Postgres>) {
        match &self.root {
            Some(root) => push_node(root, q),
            None => {
                q.push("true");
            }
        }
    }
}

fn render(node: &Node, out: &mut String) {
    match node {
        Node::And(items) | Node::Or(items) => {
            let sep = if matches!(node, Node::And(_)) { " AND " } else { " OR " };
            out.push('(');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(sep);
                }
                render(item, out);
            }
            out.push(')');
        }
        Node::Not(inner) => {
            out.push_str("NOT ");
            render(inner, out);
        }
        Node::Cmp(c) => {
            out.push_str(c.field.name);
            if let Some(key) = &c.key {
                let _ = write!(out, ".{key}");
            }
            out.push_str(c.op.as_str());
            let _ = match &c.value {
                Value::Null => write!(out, "null"),
                Value::Present => write!(out, "*"),
                Value::Text(s) => write!(out, "{s:?}"),
                Value::Prefix(s) => write!(out, "{s:?}*"),
                Value::Uuid(u) => write!(out, "{u}"),
                Value::Time(t) => write!(out, "{}", t.to_rfc3339()),
                Value::Bool(b) => write!(out, "{b}"),
                Value::Int(i) => write!(out, "{i}"),
                Value::Ordinal(i) => write!(out, "#{i}"),
            };
        }
    }
}

fn push_node(node: &Node, q: &mut QueryBuilder<'_, Postgres>) {
    match node {
        Node::And(items) | Node::Or(items) => {
            let sep = if matches!(node, Node::And(_)) { " and " } else { " or " };
            q.push("(");
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    q.push(sep);
                }
                push_node(item, q);
            }
            q.push(")");
        }
        Node::Not(inner) => {
            // NOT over a comparison with a NULL column is NULL in SQL; coalesce keeps NOT total.
            q.push("not coalesce(");
            push_node(inner, q);
            q.push(", false)");
        }
        Node::Cmp(c) => push_comparison(c, q),
    }
}

fn push_comparison(c: &Comparison, q: &mut QueryBuilder<'_, Postgres>) {
    let sql = c.field.sql;
    if let FieldType::Set = c.field.ty {
        let (before, after) = sql.split_once('$').unwrap_or((sql, ""));
        if let Value::Text(name) = &c.value {
            if c.op == Op::Ne {
                q.push("not ");
            }
            q.push("(").push(before).push_bind(name.clone()).push(after).push(")");
        }
        return;
    }
    let column = |q: &mut QueryBuilder<'_, Postgres>| {
        match (&c.key, c.field.ty) {
            (Some(key), _) => {
                q.push("(").push(sql).push(" ->> ").push_bind(key.clone()).push(")");
            }
            (None, FieldType::Enum { values, ordered: true }) if c.op.ordering() => {
                q.push("array_position(").push_bind(values.iter().map(|v| v.to_string()).collect::<Vec<_>>());
                q.push("::text[], ").push(sql).push(")");
            }
            _ => {
                q.push(sql);
            }
        };
    };
    match &c.value {
        Value::Null | Value::Present => {
            let is_null = matches!(c.value, Value::Null) && c.op == Op::Eq;
            column(q);
            q.push(if is_null { " is null" } else { " is not null" });
        }
        Value::Text(s) if c.op == Op::Has => {
            column(q);
            q.push(" ilike ").push_bind(format!("%{}%", escape_like(s))).push(" escape '\\'");
        }
        Value::Prefix(s) => {
            if c.op == Op::Ne {
                q.push("not coalesce(");
            }
            column(q);
            q.push(" like ").push_bind(format!("{}%", escape_like(s))).push(" escape '\\'");
            if c.op == Op::Ne {
                q.push(", false)");
            }
        }
        value => {
            // `!=` also matches rows where the field is not set, as a user expects.
            if c.op == Op::Ne {
                q.push("(");
                column(q);
                q.push(" is null or ");
            }
            column(q);
            q.push(c.op.sql());
            match value {
                Value::Text(s) => q.push_bind(s.clone()),
                Value::Uuid(u) => q.push_bind(*u),
                Value::Time(t) => q.push_bind(*t),
                Value::Bool(b) => q.push_bind(*b),
                Value::Int(i) => q.push_bind(*i),
                Value::Ordinal(i) => q.push_bind(*i),
                Value::Null | Value::Present | Value::Prefix(_) => q,
            };
            if c.op == Op::Ne {
                q.push(")");
            }
        }
    }
}

fn escape_like(s: &str) -> String {
    s.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")
}

// ---- Lexer ----------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum Token {
    LParen,
    RParen,
    Minus,
    Op(Op),
    /// A bare word: a field path, keyword or unquoted value.
    Word(String),
    Quoted(String),
}

impl Token {
    fn describe(&self) -> String {
        match self {
            Token::LParen => "`(`".into(),
            Token::RParen => "`)`".into(),
            Token::Minus => "`-`".into(),
            Token::Op(op) => format!("`{}`", op.as_str()),
            Token::Word(w) => format!("`{w}`"),
            Token::Quoted(s) => format!("{s:?}"),
        }
    }
}

fn lex(raw: &str) -> std::result::Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let mut chars = raw.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '(' | ')' => {
                chars.next();
                tokens.push(if c == '(' { Token::LParen } else { Token::RParen });
            }
            '=' | ':' => {
                chars.next();
                tokens.push(Token::Op(if c == '=' { Op::Eq } else { Op::Has }));
            }
            '!' => {
                chars.next();
                if chars.next() != Some('=') {
                    return Err("`!` must be followed by `=`".into());
                }
                tokens.push(Token::Op(Op::Ne));
            }
            '<' | '>' => {
                chars.next();
                let eq = chars.peek() == Some(&'=');
                if eq {
                    chars.next();
                }
                tokens.push(Token::Op(match (c, eq) {
                    ('<', false) => Op::Lt,
                    ('<', true) => Op::Le,
                    ('>', false) => Op::Gt,
                    _ => Op::Ge,
                }));
            }
            '"' | '\'' => {
                let quote = c;
                chars.next();
                let mut s = String::new();
                loop {
                    match chars.next() {
                        None => return Err("unterminated string".into()),
                        Some('\\') => match chars.next() {
                            Some(escaped) => s.push(escaped),
                            None => return Err("unterminated string".into()),
                        },
                        Some(ch) if ch == quote => break,
                        Some(ch) if ch.is_control() => return Err("control character in a string".into()),
                        Some(ch) => s.push(ch),
                    }
                }
                tokens.push(Token::Quoted(s));
            }
            '-' if tokens.last().is_none_or(|t| !matches!(t, Token::Op(_))) => {
                chars.next();
                tokens.push(Token::Minus);
            }
            _ => {
                let mut w = String::new();
                while let Some(&ch) = chars.peek() {
                    if ch.is_whitespace() || "()=:!<>\"'".contains(ch) {
                        break;
                    }
                    if ch.is_control() {
                        return Err("control character in the filter".into());
                    }
                    w.push(ch);
                    chars.next();
                }
                tokens.push(Token::Word(w));
            }
        }
    }
    Ok(tokens)
}

// ---- Parser ---------------------------------------------------------------------------------

struct Parser<'a> {
    schema: &'a Schema,
    tokens: Vec<Token>,
    pos: usize,
    comparisons: usize,
}

type ParseResult<T> = std::result::Result<T, String>;

impl Parser<'_> {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn keyword(&self, word: &str) -> bool {
        matches!(self.peek(), Some(Token::Word(w)) if w == word)
    }

    /// expression := sequence { AND sequence }; a sequence is factors side by side.
    fn expression(&mut self, depth: usize) -> ParseResult<Node> {
        if depth > MAX_DEPTH {
            return Err(format!("nests deeper than {MAX_DEPTH} levels"));
        }
        let mut items = vec![self.factor(depth)?];
        loop {
            match self.peek() {
                None | Some(Token::RParen) => break,
                Some(_) if self.keyword("AND") => {
                    self.pos += 1;
                    if self.peek().is_none() {
                        return Err("`AND` needs a comparison after it".into());
                    }
                    items.push(self.factor(depth)?);
                }
                Some(_) => items.push(self.factor(depth)?),
            }
        }
        Ok(if items.len() == 1 { items.remove(0) } else { Node::And(items) })
    }

    /// factor := term { OR term }
    fn factor(&mut self, depth: usize) -> ParseResult<Node> {
        let mut items = vec![self.term(depth)?];
        while self.keyword("OR") {
            self.pos += 1;
            items.push(self.term(depth)?);
        }
        Ok(if items.len() == 1 { items.remove(0) } else { Node::Or(items) })
    }

    /// term := [NOT | -] simple
    fn term(&mut self, depth: usize) -> ParseResult<Node> {
        if self.keyword("NOT") || self.peek() == Some(&Token::Minus) {
            self.pos += 1;
            if depth + 1 > MAX_DEPTH {
                return Err(format!("nests deeper than {MAX_DEPTH} levels"));
            }
            return Ok(Node::Not(Box::new(self.term(depth + 1)?)));
        }
        match self.tokens.get(self.pos).cloned() {
            Some(Token::LParen) => {
                self.pos += 1;
                let inner = self.expression(depth + 1)?;
                if self.peek() != Some(&Token::RParen) {
                    return Err("missing `)`".into());
                }
                self.pos += 1;
                Ok(inner)
            }
            Some(Token::Word(w)) if !matches!(w.as_str(), "AND" | "OR") => {
                self.pos += 1;
                self.comparison(&w)
            }
            Some(t) => Err(format!("expected a comparison, found {}", t.describe())),
            None => Err("expected a comparison at the end".into()),
        }
    }

    fn comparison(&mut self, path: &str) -> ParseResult<Node> {
        self.comparisons += 1;
        if self.comparisons > MAX_COMPARISONS {
            return Err(format!("has more than {MAX_COMPARISONS} comparisons"));
        }
        let (name, key) = match self.schema.find(path) {
            Some(_) => (path, None),
            None => match path.split_once('.') {
                Some((name, key)) if matches!(self.schema.find(name), Some(f) if matches!(f.ty, FieldType::Map)) => {
                    (name, Some(key))
                }
                _ => (path, None),
            },
        };
        let field = match self.schema.find(name) {
            Some(f) if f.filterable => f.clone(),
            _ => {
                let known: Vec<&str> = self.schema.fields.iter().filter(|f| f.filterable).map(|f| f.name).collect();
                return Err(format!("unknown field {path:?}; filterable fields: {}", known.join(", ")));
            }
        };
        if let Some(key) = key
            && (key.is_empty() || key.len() > 64 || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        {
            return Err(format!("{path:?} names an invalid key"));
        }
        if matches!(field.ty, FieldType::Map) && key.is_none() {
            return Err(format!("{name:?} is compared by key, e.g. `{name}.some_key = \"value\"`"));
        }
        let op = match self.tokens.get(self.pos) {
            Some(Token::Op(op)) => *op,
            Some(t) => return Err(format!("expected an operator after {path:?}, found {}", t.describe())),
            None => return Err(format!("expected an operator after {path:?}")),
        };
        self.pos += 1;
        let (raw, quoted) = match self.tokens.get(self.pos) {
            Some(Token::Word(w)) => (w.clone(), false),
            Some(Token::Quoted(s)) => (s.clone(), true),
            Some(t) => return Err(format!("expected a value for {path:?}, found {}", t.describe())),
            None => return Err(format!("expected a value for {path:?}")),
        };
        self.pos += 1;
        let value = typed_value(&field, key.is_some(), op, &raw, quoted).map_err(|m| format!("{path}: {m}"))?;
        Ok(Node::Cmp(Comparison { field, key: key.map(str::to_string), op, value }))
    }
}

fn typed_value(field: &Field, keyed: bool, op: Op, raw: &str, quoted: bool) -> ParseResult<Value> {
    if op == Op::Has && !quoted && raw == "*" {
        return Ok(Value::Present);
    }
    if !quoted && raw == "null" {
        return match op {
            Op::Eq | Op::Ne if !matches!(field.ty, FieldType::Set) => Ok(Value::Null),
            _ => Err("null compares only with = and !=".into()),
        };
    }
    let ty = if keyed { FieldType::Text } else { field.ty };
    match ty {
        FieldType::Text => {
            if op == Op::Has {
                return Ok(Value::Text(raw.to_string()));
            }
            if matches!(op, Op::Eq | Op::Ne)
                && let Some(prefix) = raw.strip_suffix('*')
            {
                return Ok(Value::Prefix(prefix.to_string()));
            }
            Ok(Value::Text(raw.to_string()))
        }
        FieldType::Uuid => match op {
            Op::Eq | Op::Ne => raw.trim().parse::<Uuid>().map(Value::Uuid).map_err(|_| "must be a UUID".into()),
            _ => Err(format!("does not support `{}`", op.as_str())),
        },
        FieldType::Timestamp => match op {
            Op::Has => Err("does not support `:` except `:*`".into()),
            _ => parse_time(raw).map(Value::Time),
        },
        FieldType::Bool => match (op, raw.to_ascii_lowercase().as_str()) {
            (Op::Eq | Op::Ne, "true") => Ok(Value::Bool(true)),
            (Op::Eq | Op::Ne, "false") => Ok(Value::Bool(false)),
            (Op::Eq | Op::Ne, _) => Err("must be true or false".into()),
            _ => Err(format!("does not support `{}`", op.as_str())),
        },
        FieldType::Int => match op {
            Op::Has => Err("does not support `:` except `:*`".into()),
            _ => raw.parse::<i64>().map(Value::Int).map_err(|_| "must be an integer".into()),
        },
        FieldType::Enum { values, ordered } => {
            let name = raw.to_ascii_lowercase();
            let Some(index) = values.iter().position(|v| *v == name) else {
                return Err(format!("must be one of {}", values.join(", ")));
            };
            match op {
                Op::Eq | Op::Ne => Ok(Value::Text(name)),
                _ if op.ordering() && ordered => Ok(Value::Ordinal(index as i32 + 1)),
                _ => Err(format!("does not support `{}`", op.as_str())),
            }
        }
        FieldType::Set => match op {
            Op::Eq | Op::Has | Op::Ne => Ok(Value::Text(raw.to_string())),
            _ => Err(format!("does not support `{}`", op.as_str())),
        },
        FieldType::Map => Err("is compared by key".into()),
    }
}

fn parse_time(raw: &str) -> ParseResult<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(raw) {
        return Ok(t.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(raw, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|d| d.and_utc())
        .ok_or_else(|| "must be an RFC 3339 timestamp or a YYYY-MM-DD date".into())
}

// ---- Ordering -------------------------------------------------------------------------------

/// A parsed `order_by`: one field and a direction; the row id breaks ties in the same direction.
#[derive(Debug, Clone)]
pub struct Order {
    field: Field,
    descending: bool,
}

/// The sort value of the last row of a page, kept in the page token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum SortKey {
    /// The field is not set on that row.
    Null,
    /// Text (or an enum name).
    Text(String),
    /// An integer.
    Int(i64),
    /// A timestamp.
    Time(DateTime<Utc>),
}

impl Order {
    /// The field sorted by.
    pub fn field(&self) -> &str {
        self.field.name
    }

    /// Whether the order is descending.
    pub fn descending(&self) -> bool {
        self.descending
    }

    /// `field asc|desc`, for page-token binding.
    pub fn canonical(&self) -> String {
        format!("{} {}", self.field.name, if self.descending { "desc" } else { "asc" })
    }

    fn push_key(&self, q: &mut QueryBuilder<'_, Postgres>) {
        match self.field.ty {
            FieldType::Enum { values, ordered: true } => {
                q.push("array_position(").push_bind(values.iter().map(|v| v.to_string()).collect::<Vec<_>>());
                q.push("::text[], ").push(self.field.sql).push(")");
            }
            _ => {
                q.push(self.field.sql);
            }
        }
    }

    /// Appends ` order by <field> <dir> nulls last, <id> <dir>`.
    pub fn push_order(&self, q: &mut QueryBuilder<'_, Postgres>, id_sql: &str) {
        let dir = if self.descending { " desc" } else { " asc" };
        q.push(" order by ");
        self.push_key(q);
        q.push(dir).push(" nulls last, ").push(id_sql).push(dir);
    }

    /// Appends ` and <rows after (key, id)>` in this order, NULLs last.
    pub fn push_after(&self, q: &mut QueryBuilder<'_, Postgres>, id_sql: &str, key: &SortKey, id: Uuid) {
        let (cmp, id_cmp) = if self.descending { (" < ", " < ") } else { (" > ", " > ") };
        q.push(" and (");
        if let SortKey::Null = key {
            q.push("(");
            self.push_key(q);
            q.push(" is null and ").push(id_sql).push(id_cmp).push_bind(id).push(")");
        } else {
            let bind = |q: &mut QueryBuilder<'_, Postgres>| match key {
                SortKey::Text(s) => match self.field.ty {
                    FieldType::Enum { values, ordered: true } => {
                        let ordinal = values.iter().position(|v| v == s).map_or(0, |i| i as i32 + 1);
                        q.push_bind(ordinal);
                    }
                    _ => {
                        q.push_bind(s.clone());
                    }
                },
                SortKey::Int(i) => {
                    q.push_bind(*i);
                }
                SortKey::Time(t) => {
                    q.push_bind(*t);
                }
                SortKey::Null => {}
            };
            self.push_key(q);
            q.push(cmp);
            bind(q);
            q.push(" or (");
            self.push_key(q);
            q.push(" = ");
            bind(q);
            q.push(" and ").push(id_sql).push(id_cmp).push_bind(id).push(") or ");
            self.push_key(q);
            q.push(" is null");
        }
        q.push(")");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUSES: &[&str] = &["todo", "done"];
    const PRIORITIES: &[&str] = &["low", "medium", "high", "urgent"];

    fn schema() -> Schema {
        Schema::new()
            .field("status", "t.status", FieldType::Enum { values: STATUSES, ordered: false })
            .sortable("priority", "t.priority", FieldType::Enum { values: PRIORITIES, ordered: true })
            .field("assignee_id", "t.assignee_id", FieldType::Uuid)
            .sortable("due_date", "t.due_date", FieldType::Timestamp)
            .sortable_desc("created_at", "t.created_at", FieldType::Timestamp)
            .sortable("title", "t.title", FieldType::Text)
            .field("is_blocked", "t.blocked", FieldType::Bool)
            .field(
                "tags",
                "exists (select 1 from tags g where g.task_id = t.id and lower(g.name) = lower($))",
                FieldType::Set,
            )
            .field("metadata", "t.metadata", FieldType::Map)
            .sort_only("number", "t.number", FieldType::Int)
    }

    fn sql(filter: &str) -> String {
        let f = schema().parse(filter).unwrap_or_else(|e| panic!("{filter}: {e}"));
        let mut q = QueryBuilder::<Postgres>::new("");
        f.push_sql(&mut q);
        q.sql().to_string()
    }

    fn error(filter: &str) -> String {
        let e = schema().parse(filter).expect_err(filter);
        assert_eq!(e.reason(), "VALIDATION_ERROR");
        assert_eq!(e.violations()[0].field, "filter");
        e.violations()[0].description.clone()
    }

    #[test]
    fn comparisons_become_bound_sql() {
        assert_eq!(sql("status = \"todo\""), "t.status = $1");
        assert_eq!(sql("status=done"), "t.status = $1");
        assert_eq!(sql(""), "true");
        assert_eq!(sql("due_date < 2026-01-01"), "t.due_date < $1");
        assert_eq!(sql("priority >= high"), "array_position($1::text[], t.priority) >= $2");
        assert_eq!(sql("assignee_id = null"), "t.assignee_id is null");
        assert_eq!(sql("due_date:*"), "t.due_date is not null");
        assert_eq!(sql("title:\"50%\""), "t.title ilike $1 escape '\\'");
        assert_eq!(sql("title = \"Fix*\""), "t.title like $1 escape '\\'");
        assert_eq!(sql("metadata.team = \"core\""), "(t.metadata ->> $1) = $2");
        assert_eq!(sql("is_blocked = true"), "t.blocked = $1");
        assert_eq!(sql("status != todo"), "(t.status is null or t.status <> $1)");
        assert!(sql("tags:urgent").contains("lower($1)"));
    }

    #[test]
    fn or_binds_tighter_than_and_and_juxtaposition_is_and() {
        assert_eq!(
            sql("status = todo AND priority = low OR priority = high"),
            "(t.status = $1 and (t.priority = $2 or t.priority = $3))"
        );
        assert_eq!(sql("status = todo priority = low"), "(t.status = $1 and t.priority = $2)");
        assert_eq!(
            sql("NOT (status = todo OR status = done)"),
            "not coalesce((t.status = $1 or t.status = $2), false)"
        );
        assert_eq!(sql("-status = todo"), "not coalesce(t.status = $1, false)");
    }

    #[test]
    fn canonical_forms_match_for_equivalent_spellings() {
        let a = schema().parse("status=todo   AND priority = \"low\"").expect("a");
        let b = schema().parse("status = \"todo\" priority=low").expect("b");
        assert_eq!(a.canonical(), b.canonical());
        assert_ne!(a.canonical(), schema().parse("status = done").expect("c").canonical());
    }

    #[test]
    fn bad_filters_name_the_problem() {
        assert!(error("colour = red").contains("unknown field"));
        assert!(error("status = purple").contains("must be one of"));
        assert!(error("status =").contains("expected a value"));
        assert!(error("status todo").contains("expected an operator"));
        assert!(error("(status = todo").contains("missing `)`"));
        assert!(error("status = todo)").contains("unexpected"));
        assert!(error("assignee_id = 42").contains("UUID"));
        assert!(error("due_date > tomorrow").contains("RFC 3339"));
        assert!(error("status < todo").contains("does not support"));
        assert!(error("title = \"open").contains("unterminated"));
        assert!(error("number = 3").contains("unknown field"), "sort-only fields are not filterable");
        assert!(error("metadata = 1").contains("by key"));
        assert!(error("metadata.bad-key = 1").contains("invalid key"));
        assert!(error("status = todo AND").contains("AND"));
        let deep = format!("{}status = todo{}", "(".repeat(12), ")".repeat(12));
        assert!(error(&deep).contains("deeper"));
        let many = vec!["status = todo"; 51].join(" OR ");
        assert!(error(&many).contains("comparisons"));
        assert!(error(&"x".repeat(2001)).contains("at most"));
    }

    #[test]
    fn order_by_takes_one_sortable_field() {
        let s = schema();
        let o = s.order_by("", "due_date desc").expect("default");
        assert_eq!(o.canonical(), "due_date desc");
        assert_eq!(s.order_by("title", "x").expect("asc").canonical(), "title asc");
        assert_eq!(s.order_by("created_at", "x").expect("desc by default").canonical(), "created_at desc");
        assert_eq!(s.order_by("created_at ASC", "x").expect("asked").canonical(), "created_at asc");
        let mut q = QueryBuilder::<Postgres>::new("");
        s.order_by("priority desc", "").expect("priority").push_order(&mut q, "t.id");
        assert_eq!(q.sql(), " order by array_position($1::text[], t.priority) desc nulls last, t.id desc");
        for bad in ["status", "title sideways", "title, due_date", "nothing", "title asc extra"] {
            let e = s.order_by(bad, "title").expect_err(bad);
            assert_eq!(e.violations()[0].field, "order_by");
        }
    }

    #[test]
    fn keyset_conditions_put_nulls_last() {
        let s = schema();
        let order = s.order_by("due_date", "").expect("order");
        let id = Uuid::nil();
        let mut q = QueryBuilder::<Postgres>::new("");
        order.push_after(&mut q, "t.id", &SortKey::Time(Utc::now()), id);
        assert_eq!(q.sql(), " and (t.due_date > $1 or (t.due_date = $2 and t.id > $3) or t.due_date is null)");
        let mut q = QueryBuilder::<Postgres>::new("");
        order.push_after(&mut q, "t.id", &SortKey::Null, id);
        assert_eq!(q.sql(), " and ((t.due_date is null and t.id > $1))");
    }
}
