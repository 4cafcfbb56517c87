//! The schema language: parsing, validation and compilation of module schemas into one merged,
//! evaluable [`Schema`] (spec "Schema language", validation codes, rules 17–18).
//!
//! [`compile`] takes every registered module's text at once, because references cross modules
//! (`documents` relates to identity's `organization`). Errors carry the module, a 1-based line
//! and a column in Unicode scalar values, and a stable [`Code`]; at most [`MAX_ERRORS`] are kept.

pub mod parse;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

pub use parse::Pos;
use parse::{DefinitionAst, ExprAst, ItemAst, Name, valid_name};
use serde::{Deserialize, Serialize};

/// Most errors reported by one validation.
pub const MAX_ERRORS: usize = 50;
/// Largest module text, in bytes.
pub const MAX_MODULE_BYTES: usize = 256 * 1024;
/// Most definitions in the merged schema.
pub const MAX_DEFINITIONS: usize = 500;
/// Most relations plus permissions per definition.
pub const MAX_ITEMS: usize = 128;
/// Most allowed subject types per relation.
pub const MAX_SUBJECT_TYPES: usize = 32;

/// The name of the definition that holds custom roles (owned by this module).
pub const ROLE_DEFINITION: &str = "role";
/// The definition that custom-role hooks are generated into.
pub const ORG_DEFINITION: &str = "organization";
/// The module allowed to declare `role`.
pub const OWNER_OF_ROLE: &str = "permissions";

/// Stable validation codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Code {
    Syntax,
    DuplicateName,
    UnknownType,
    UnknownSubjectRelation,
    UnknownName,
    ArrowLeftNotRelation,
    ArrowRightMissing,
    PermissionCycle,
    MixedOperators,
    WildcardSubjectRelation,
    ReservedName,
    BadHook,
    LimitExceeded,
    /// A definition declared by two modules (reported as FAILED_PRECONDITION by the API).
    DefinitionConflict,
    /// A module name that does not match `^[a-z][a-z0-9_]{1,31}$`.
    InvalidModule,
}

impl Code {
    /// The code as it appears in APIs (`UNKNOWN_TYPE`).
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Syntax => "SYNTAX",
            Code::DuplicateName => "DUPLICATE_NAME",
            Code::UnknownType => "UNKNOWN_TYPE",
            Code::UnknownSubjectRelation => "UNKNOWN_SUBJECT_RELATION",
            Code::UnknownName => "UNKNOWN_NAME",
            Code::ArrowLeftNotRelation => "ARROW_LEFT_NOT_RELATION",
            Code::ArrowRightMissing => "ARROW_RIGHT_MISSING",
            Code::PermissionCycle => "PERMISSION_CYCLE",
            Code::MixedOperators => "MIXED_OPERATORS",
            Code::WildcardSubjectRelation => "WILDCARD_SUBJECT_RELATION",
            Code::ReservedName => "RESERVED_NAME",
            Code::BadHook => "BAD_HOOK",
            Code::LimitExceeded => "LIMIT_EXCEEDED",
            Code::DefinitionConflict => "DEFINITION_CONFLICT",
            Code::InvalidModule => "INVALID_MODULE",
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One validation error.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaError {
    /// The module whose text the position refers to (empty until [`compile`] fills it).
    pub module: String,
    pub line: u32,
    pub column: u32,
    pub code: Code,
    pub message: String,
}

impl SchemaError {
    pub(crate) fn new(code: Code, pos: Pos, message: impl Into<String>) -> Self {
        Self { module: String::new(), line: pos.line, column: pos.column, code, message: message.into() }
    }

    /// The `BadRequest` field of this error: `schema:<line>:<column>`.
    pub fn field(&self) -> String {
        format!("schema:{}:{}", self.line, self.column)
    }
}

impl fmt::Display for SchemaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: {} {}", self.module, self.line, self.column, self.code, self.message)
    }
}

/// A subject type allowed by a relation.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum AllowedSubject {
    /// `user`
    Direct(String),
    /// `user:*`
    Wildcard(String),
    /// `team#member`
    Set(String, String),
}

impl AllowedSubject {
    pub fn ty(&self) -> &str {
        match self {
            AllowedSubject::Direct(t) | AllowedSubject::Wildcard(t) | AllowedSubject::Set(t, _) => t,
        }
    }
}

impl fmt::Display for AllowedSubject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AllowedSubject::Direct(t) => f.write_str(t),
            AllowedSubject::Wildcard(t) => write!(f, "{t}:*"),
            AllowedSubject::Set(t, r) => write!(f, "{t}#{r}"),
        }
    }
}

/// A compiled permission expression.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Expr {
    Union(Vec<Expr>),
    Intersection(Vec<Expr>),
    /// Left minus right.
    Exclusion(Box<Expr>, Box<Expr>),
    /// A relation or permission of the same object.
    Name(String),
    /// `rel->name`: `name` on each direct subject of `rel`.
    Arrow(String, String),
    Nil,
}

impl Expr {
    fn from_ast(a: &ExprAst) -> Expr {
        match a {
            ExprAst::Union(v) => Expr::Union(v.iter().map(Expr::from_ast).collect()),
            ExprAst::Intersection(v) => Expr::Intersection(v.iter().map(Expr::from_ast).collect()),
            ExprAst::Exclusion(l, r) => Expr::Exclusion(Box::new(Expr::from_ast(l)), Box::new(Expr::from_ast(r))),
            ExprAst::Name(n) => Expr::Name(n.text.clone()),
            ExprAst::Arrow(l, r) => Expr::Arrow(l.text.clone(), r.text.clone()),
            ExprAst::Nil(_) => Expr::Nil,
        }
    }

    fn render(&self, top: bool, out: &mut String) {
        let join = |v: &[Expr], op: &str, out: &mut String| {
            if !top {
                out.push('(');
            }
            for (i, e) in v.iter().enumerate() {
                if i > 0 {
                    out.push_str(op);
                }
                e.render(false, out);
            }
            if !top {
                out.push(')');
            }
        };
        match self {
            Expr::Union(v) => join(v, " + ", out),
            Expr::Intersection(v) => join(v, " & ", out),
            Expr::Exclusion(l, r) => {
                if !top {
                    out.push('(');
                }
                // `-` is left-associative, so a left exclusion needs no parentheses.
                match &**l {
                    Expr::Exclusion(..) => l.render(true, out),
                    _ => l.render(false, out),
                }
                out.push_str(" - ");
                r.render(false, out);
                if !top {
                    out.push(')');
                }
            }
            Expr::Name(n) => out.push_str(n),
            Expr::Arrow(l, r) => {
                out.push_str(l);
                out.push_str("->");
                out.push_str(r);
            }
            Expr::Nil => out.push_str("nil"),
        }
    }

    /// The expression as schema text.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        self.render(true, &mut s);
        s
    }

    fn visit<'a>(&'a self, f: &mut impl FnMut(&'a Expr)) {
        f(self);
        match self {
            Expr::Union(v) | Expr::Intersection(v) => v.iter().for_each(|e| e.visit(f)),
            Expr::Exclusion(l, r) => {
                l.visit(f);
                r.visit(f);
            }
            _ => {}
        }
    }
}

/// A compiled definition.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Definition {
    pub name: String,
    /// The module that declared it.
    pub module: String,
    pub relations: BTreeMap<String, Vec<AllowedSubject>>,
    pub permissions: BTreeMap<String, Expr>,
    /// Declared names in source order (relations and permissions), generated ones last.
    pub order: Vec<String>,
    /// Names generated at merge time (custom-role hooks).
    pub generated: BTreeSet<String>,
}

impl Definition {
    /// Whether `name` is a relation or a permission of this definition.
    pub fn has(&self, name: &str) -> bool {
        self.relations.contains_key(name) || self.permissions.contains_key(name)
    }
}

/// The merged, validated schema of a cell.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schema {
    pub definitions: BTreeMap<String, Definition>,
    /// The pairs `(type, permission)` that custom roles may grant (the hooks referenced).
    pub grantable: BTreeSet<(String, String)>,
}

impl Schema {
    pub fn definition(&self, ty: &str) -> Option<&Definition> {
        self.definitions.get(ty)
    }

    /// The allowed subjects of `ty#relation`, if it is a relation.
    pub fn relation(&self, ty: &str, relation: &str) -> Option<&[AllowedSubject]> {
        self.definitions.get(ty)?.relations.get(relation).map(Vec::as_slice)
    }

    /// Whether `ty` has a relation or permission `name`.
    pub fn has(&self, ty: &str, name: &str) -> bool {
        self.definitions.get(ty).is_some_and(|d| d.has(name))
    }

    /// The effective schema as SpiceDB-compatible text, generated members marked by comments.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for (i, d) in self.definitions.values().enumerate() {
            if i > 0 {
                out.push('\n');
            }
            out.push_str(&format!("// module: {}\ndefinition {} {{\n", d.module, d.name));
            let mut generated_header = false;
            for name in &d.order {
                if d.generated.contains(name) && !generated_header {
                    out.push_str("  // generated: custom-role hooks\n");
                    generated_header = true;
                }
                if let Some(subjects) = d.relations.get(name) {
                    let s: Vec<String> = subjects.iter().map(ToString::to_string).collect();
                    out.push_str(&format!("  relation {name}: {}\n", s.join(" | ")));
                } else if let Some(e) = d.permissions.get(name) {
                    out.push_str(&format!("  permission {name} = {}\n", e.to_text()));
                }
            }
            out.push_str("}\n");
        }
        out
    }
}

/// A module's registered text.
#[derive(Clone, Debug)]
pub struct ModuleSource<'a> {
    pub module: &'a str,
    pub source: &'a str,
}

/// `^[a-z][a-z0-9_]{1,31}$`
pub fn valid_module_name(m: &str) -> bool {
    let b = m.as_bytes();
    (2..=32).contains(&b.len())
        && b[0].is_ascii_lowercase()
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_')
}

/// A hook name `role__T__P`, split.
pub fn parse_hook(name: &str) -> Option<(&str, &str)> {
    let rest = name.strip_prefix("role__")?;
    let (t, p) = rest.split_once("__")?;
    (valid_name(t) && valid_name(p)).then_some((t, p))
}

const RESERVED: [&str; 4] = ["nil", "definition", "relation", "permission"];

struct Ctx {
    errors: Vec<SchemaError>,
}

impl Ctx {
    fn push(&mut self, module: &str, code: Code, pos: Pos, msg: impl Into<String>) {
        if self.errors.len() < MAX_ERRORS {
            let mut e = SchemaError::new(code, pos, msg);
            e.module = module.to_owned();
            self.errors.push(e);
        }
    }
}

fn check_declared_name(ctx: &mut Ctx, module: &str, n: &Name, what: &str) {
    if RESERVED.contains(&n.text.as_str()) {
        ctx.push(module, Code::ReservedName, n.pos, format!("`{}` is reserved and cannot name a {what}", n.text));
    } else if n.text.contains("__") {
        ctx.push(
            module,
            Code::ReservedName,
            n.pos,
            format!("{what} `{}`: `__` is reserved for generated names", n.text),
        );
    } else if n.text.starts_with("role_") && what != "definition" && n.text.starts_with("role__") {
        ctx.push(module, Code::ReservedName, n.pos, format!("`{}` is reserved for custom-role hooks", n.text));
    }
}

/// Parses, validates and merges every module. On success the schema includes the generated
/// custom-role members; on failure every error (up to [`MAX_ERRORS`]) is returned, in module and
/// position order of discovery.
pub fn compile(modules: &[ModuleSource<'_>]) -> Result<Schema, Vec<SchemaError>> {
    let mut ctx = Ctx { errors: Vec::new() };
    // 1. Parse every module.
    let mut parsed: Vec<(&str, Vec<DefinitionAst>)> = Vec::new();
    for m in modules {
        if !valid_module_name(m.module) {
            ctx.push(
                m.module,
                Code::InvalidModule,
                Pos { line: 1, column: 1 },
                format!("invalid module name `{}`", m.module),
            );
            continue;
        }
        if m.source.len() > MAX_MODULE_BYTES {
            ctx.push(
                m.module,
                Code::LimitExceeded,
                Pos { line: 1, column: 1 },
                format!("module text is {} bytes; the limit is {MAX_MODULE_BYTES}", m.source.len()),
            );
            continue;
        }
        match parse::parse(m.source) {
            Ok((defs, errs)) => {
                for mut e in errs {
                    e.module = m.module.to_owned();
                    if ctx.errors.len() < MAX_ERRORS {
                        ctx.errors.push(e);
                    }
                }
                parsed.push((m.module, defs));
            }
            Err(mut e) => {
                e.module = m.module.to_owned();
                ctx.errors.push(e);
            }
        }
    }

    // 2. Declarations: names, duplicates, ownership.
    let mut owner: HashMap<&str, (&str, &DefinitionAst)> = HashMap::new();
    for (module, defs) in &parsed {
        for d in defs {
            check_declared_name(&mut ctx, module, &d.name, "definition");
            if d.name.text == ROLE_DEFINITION && *module != OWNER_OF_ROLE {
                ctx.push(module, Code::ReservedName, d.name.pos, "the `role` definition is reserved for custom roles");
            }
            if let Some((other, _)) = owner.get(d.name.text.as_str()) {
                if other == module {
                    ctx.push(
                        module,
                        Code::DuplicateName,
                        d.name.pos,
                        format!("definition `{}` is declared twice", d.name.text),
                    );
                } else {
                    ctx.push(
                        module,
                        Code::DefinitionConflict,
                        d.name.pos,
                        format!("definition `{}` is owned by module `{other}`", d.name.text),
                    );
                }
                continue;
            }
            owner.insert(&d.name.text, (module, d));
            if d.items.len() > MAX_ITEMS {
                ctx.push(
                    module,
                    Code::LimitExceeded,
                    d.name.pos,
                    format!(
                        "definition `{}` has {} relations and permissions; the limit is {MAX_ITEMS}",
                        d.name.text,
                        d.items.len()
                    ),
                );
            }
            let mut seen: HashMap<&str, Pos> = HashMap::new();
            for item in &d.items {
                let n = item.name();
                let what = if matches!(item, ItemAst::Relation { .. }) { "relation" } else { "permission" };
                check_declared_name(&mut ctx, module, n, what);
                if seen.insert(&n.text, n.pos).is_some() {
                    ctx.push(
                        module,
                        Code::DuplicateName,
                        n.pos,
                        format!("`{}` is defined twice in definition `{}`", n.text, d.name.text),
                    );
                }
            }
        }
    }
    if owner.len() > MAX_DEFINITIONS {
        ctx.push(
            "",
            Code::LimitExceeded,
            Pos { line: 1, column: 1 },
            format!("more than {MAX_DEFINITIONS} definitions"),
        );
    }

    // 3. Build definitions (first declaration of each name wins, duplicates already reported).
    let mut schema = Schema::default();
    for (name, (module, d)) in &owner {
        let mut def = Definition { name: (*name).to_owned(), module: (*module).to_owned(), ..Default::default() };
        for item in &d.items {
            let n = &item.name().text;
            if def.has(n) {
                continue;
            }
            def.order.push(n.clone());
            match item {
                ItemAst::Relation { subjects, .. } => {
                    let allowed = subjects
                        .iter()
                        .map(|s| match (&s.relation, s.wildcard) {
                            (Some(r), _) => AllowedSubject::Set(s.ty.text.clone(), r.text.clone()),
                            (None, true) => AllowedSubject::Wildcard(s.ty.text.clone()),
                            (None, false) => AllowedSubject::Direct(s.ty.text.clone()),
                        })
                        .collect();
                    def.relations.insert(n.clone(), allowed);
                }
                ItemAst::Permission { expr, .. } => {
                    def.permissions.insert(n.clone(), Expr::from_ast(expr));
                }
            }
        }
        schema.definitions.insert((*name).to_owned(), def);
    }

    // 4. References: subject types, subject relations, expression names and arrows; hooks.
    let mut hooks: BTreeSet<(String, String)> = BTreeSet::new();
    let mut sorted: Vec<_> = owner.iter().collect();
    sorted.sort_by_key(|(n, (m, _))| (*m, *n));
    for (_, (module, d)) in &sorted {
        let Some(def) = schema.definitions.get(&d.name.text) else { continue };
        for item in &d.items {
            match item {
                ItemAst::Relation { name, subjects } => {
                    if subjects.len() > MAX_SUBJECT_TYPES {
                        ctx.push(
                            module,
                            Code::LimitExceeded,
                            name.pos,
                            format!("more than {MAX_SUBJECT_TYPES} subject types"),
                        );
                    }
                    for s in subjects {
                        let Some(target) = schema.definitions.get(&s.ty.text) else {
                            ctx.push(
                                module,
                                Code::UnknownType,
                                s.ty.pos,
                                format!("unknown type `{}` in relation `{}`", s.ty.text, name.text),
                            );
                            continue;
                        };
                        if let Some(r) = &s.relation
                            && !target.has(&r.text)
                        {
                            ctx.push(
                                module,
                                Code::UnknownSubjectRelation,
                                r.pos,
                                format!("type `{}` has no relation or permission `{}`", s.ty.text, r.text),
                            );
                        }
                    }
                }
                ItemAst::Permission { expr, .. } => {
                    check_expr(&mut ctx, &schema, module, def, expr, &mut hooks);
                }
            }
        }
    }

    // 5. Permission cycles inside one definition (through names, not arrows).
    for (_, (module, d)) in &sorted {
        let Some(def) = schema.definitions.get(&d.name.text) else { continue };
        for item in &d.items {
            if let ItemAst::Permission { name, .. } = item
                && reaches_itself(def, &name.text)
            {
                ctx.push(
                    module,
                    Code::PermissionCycle,
                    name.pos,
                    format!("permission `{}` of `{}` depends on itself", name.text, def.name),
                );
            }
        }
    }

    if !ctx.errors.is_empty() {
        return Err(ctx.errors);
    }

    // 6. Generated custom-role members.
    generate_hooks(&mut schema, &hooks);
    Ok(schema)
}

fn check_expr(
    ctx: &mut Ctx,
    schema: &Schema,
    module: &str,
    def: &Definition,
    e: &ExprAst,
    hooks: &mut BTreeSet<(String, String)>,
) {
    match e {
        ExprAst::Union(v) | ExprAst::Intersection(v) => {
            v.iter().for_each(|x| check_expr(ctx, schema, module, def, x, hooks))
        }
        ExprAst::Exclusion(l, r) => {
            check_expr(ctx, schema, module, def, l, hooks);
            check_expr(ctx, schema, module, def, r, hooks);
        }
        ExprAst::Nil(_) => {}
        ExprAst::Name(n) => {
            if let Some((t, p)) = parse_hook(&n.text) {
                // Organization permissions reference their own hooks directly.
                let ok = def.name == ORG_DEFINITION && t == ORG_DEFINITION && def.permissions.contains_key(p);
                if ok {
                    hooks.insert((t.to_owned(), p.to_owned()));
                } else {
                    ctx.push(
                        module,
                        Code::BadHook,
                        n.pos,
                        format!(
                            "`{}`: only `organization` may reference its own hooks by name, for one of its permissions",
                            n.text
                        ),
                    );
                }
                return;
            }
            if !def.has(&n.text) {
                ctx.push(
                    module,
                    Code::UnknownName,
                    n.pos,
                    format!("`{}` is not a relation or permission of `{}`", n.text, def.name),
                );
            }
        }
        ExprAst::Arrow(l, r) => {
            let Some(subjects) = def.relations.get(&l.text) else {
                let why = if def.permissions.contains_key(&l.text) {
                    "is a permission; the left side of `->` must be a relation"
                } else {
                    "is not a relation of this definition"
                };
                ctx.push(module, Code::ArrowLeftNotRelation, l.pos, format!("`{}` {why}", l.text));
                return;
            };
            if let Some(bad) = subjects.iter().find(|s| !matches!(s, AllowedSubject::Direct(_))) {
                ctx.push(
                    module,
                    Code::ArrowLeftNotRelation,
                    l.pos,
                    format!("`{}` allows `{bad}`; the left side of `->` must allow only plain types", l.text),
                );
                return;
            }
            if let Some((t, p)) = parse_hook(&r.text) {
                // A custom-role hook: `org->role__T__P` over organization.
                let ok_type = schema.definitions.get(t);
                let valid = match ok_type {
                    None => Err(format!("hook `{}`: unknown type `{t}`", r.text)),
                    Some(td) if !td.permissions.contains_key(p) => {
                        Err(format!("hook `{}`: `{t}` has no permission `{p}`", r.text))
                    }
                    Some(td)
                        if t != ORG_DEFINITION
                            && td
                                .relations
                                .get("org")
                                .is_none_or(|s| s != &[AllowedSubject::Direct(ORG_DEFINITION.into())]) =>
                    {
                        Err(format!("hook `{}`: `{t}` has no `org: organization` relation", r.text))
                    }
                    Some(_) if subjects.iter().any(|s| s.ty() != ORG_DEFINITION) => {
                        Err(format!("hook `{}` must be reached through a relation to `organization`", r.text))
                    }
                    Some(_) => Ok(()),
                };
                match valid {
                    Ok(()) => {
                        hooks.insert((t.to_owned(), p.to_owned()));
                    }
                    Err(msg) => ctx.push(module, Code::BadHook, r.pos, msg),
                }
                return;
            }
            if r.text.contains("__") {
                ctx.push(
                    module,
                    Code::BadHook,
                    r.pos,
                    format!("`{}` is not a valid hook (`role__<type>__<permission>`)", r.text),
                );
                return;
            }
            for s in subjects {
                if let Some(target) = schema.definitions.get(s.ty())
                    && !target.has(&r.text)
                {
                    ctx.push(
                        module,
                        Code::ArrowRightMissing,
                        r.pos,
                        format!(
                            "`{}->{}`: type `{}` has no relation or permission `{}`",
                            l.text,
                            r.text,
                            s.ty(),
                            r.text
                        ),
                    );
                }
            }
        }
    }
}

/// Whether permission `start` reaches itself through names of the same definition.
fn reaches_itself(def: &Definition, start: &str) -> bool {
    let mut stack = vec![start.to_owned()];
    let mut seen = BTreeSet::new();
    while let Some(p) = stack.pop() {
        let Some(e) = def.permissions.get(&p) else { continue };
        let mut next = Vec::new();
        e.visit(&mut |x| {
            if let Expr::Name(n) = x {
                next.push(n.clone());
            }
        });
        for n in next {
            if n == start {
                return true;
            }
            if seen.insert(n.clone()) {
                stack.push(n);
            }
        }
    }
    false
}

fn generate_hooks(schema: &mut Schema, hooks: &BTreeSet<(String, String)>) {
    schema.grantable = hooks.clone();
    if hooks.is_empty() {
        return;
    }
    let has_role = schema.definitions.contains_key(ROLE_DEFINITION);
    if let Some(role) = schema.definitions.get_mut(ROLE_DEFINITION) {
        for (t, p) in hooks {
            let rel = format!("grant__{t}__{p}");
            let perm = format!("{t}__{p}");
            role.relations.insert(rel.clone(), vec![AllowedSubject::Set(ROLE_DEFINITION.into(), "assignee".into())]);
            role.permissions.insert(perm.clone(), Expr::Name(rel.clone()));
            role.order.extend([rel.clone(), perm.clone()]);
            role.generated.extend([rel, perm]);
        }
    }
    if let Some(org) = schema.definitions.get_mut(ORG_DEFINITION) {
        if has_role && !org.relations.contains_key("custom_role") {
            org.relations.insert("custom_role".into(), vec![AllowedSubject::Direct(ROLE_DEFINITION.into())]);
            org.order.push("custom_role".into());
            org.generated.insert("custom_role".into());
        }
        for (t, p) in hooks {
            let name = format!("role__{t}__{p}");
            let e = if has_role { Expr::Arrow("custom_role".into(), format!("{t}__{p}")) } else { Expr::Nil };
            org.permissions.insert(name.clone(), e);
            org.order.push(name.clone());
            org.generated.insert(name);
        }
    }
}

#[cfg(test)]
mod tests;
