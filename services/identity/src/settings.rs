//! Organization and user settings (spec rule 28, ADR 0017): validation of names and values,
//! resolution (user → org → registered default), and the SettingsService flows.
//!
//! Values are JSON (`serde_json::Value`). A key is usable when a module registered it
//! (RegisterSettingDefinitions) or when it lives in the free-form namespace [`CUSTOM`]. Every
//! stored change publishes `identity.setting.changed` from its transaction.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use trellis_kit::{Error, RequestContext, Result, Subject};
use trellis_proto::trellis::identity::v1 as pb;
use uuid::Uuid;

use crate::accounts::Identity;
use crate::error::{Violation, Violations, code_of};
use crate::json_schema;
use crate::organizations::stage;
use crate::service_tokens::require_service;
use crate::settings_store::{self as store, Definition, Stored};

/// `identity.setting.changed`
pub const SETTING_CHANGED: &str = "identity.setting.changed";
/// The namespace for keys nobody registered.
pub const CUSTOM: &str = "custom";
/// Largest serialized value.
pub const MAX_VALUE_BYTES: usize = 16 * 1024;
/// Most keys one scope (the org, or one user in the org) may hold.
pub const MAX_KEYS_PER_SCOPE: i64 = 500;

/// Where a value is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Org,
    User,
}

impl Scope {
    /// From the wire; `None` for unspecified.
    pub fn from_proto(v: i32) -> Option<Scope> {
        match pb::SettingScope::try_from(v).ok()? {
            pb::SettingScope::Org => Some(Scope::Org),
            pb::SettingScope::User => Some(Scope::User),
            pb::SettingScope::Unspecified => None,
        }
    }

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Org => "org",
            Scope::User => "user",
        }
    }
}

/// Where an effective value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    User,
    Org,
    Default,
}

/// One resolved key.
#[derive(Debug, Clone, PartialEq)]
pub struct Effective {
    pub namespace: String,
    pub key: String,
    pub value: Value,
    pub source: Source,
}

/// Why a namespace is malformed.
pub fn check_namespace(namespace: &str) -> Option<&'static str> {
    let mut chars = namespace.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && namespace.len() <= 50
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    (!ok).then_some("must match ^[a-z][a-z0-9_]{0,49}$")
}

/// Why a key is malformed.
pub fn check_key(key: &str) -> Option<&'static str> {
    let mut chars = key.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && key.len() <= 100
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.');
    (!ok).then_some("must match ^[a-z][a-z0-9_.]{0,99}$")
}

/// The violations of storing `value` under `definition` (None: an unregistered key) in `scope`:
/// size, registration, allowed scope and the JSON schema (fields `value` + JSON pointer).
pub fn check_value(namespace: &str, definition: Option<&Definition>, scope: Scope, value: &Value) -> Vec<Violation> {
    let mut violations = Vec::new();
    if serde_json::to_vec(value).map_or(usize::MAX, |v| v.len()) > MAX_VALUE_BYTES {
        violations.push(Violation::new("value", "must be at most 16 KB of JSON"));
        return violations;
    }
    match definition {
        None if namespace == CUSTOM => {}
        None => violations.push(Violation::with_reason(
            "key",
            "SETTING_UNKNOWN",
            "is not a registered setting (unregistered keys belong in namespace `custom`)",
        )),
        Some(d) => {
            if !d.scopes.iter().any(|s| s == scope.as_str()) {
                violations.push(Violation::new("scope", format!("must be one of: {}", d.scopes.join(", "))));
            }
            if let Some(schema) = &d.json_schema {
                for e in json_schema::validate(schema, value) {
                    violations.push(Violation::new(format!("value{}", e.pointer), e.message));
                }
            }
        }
    }
    violations
}

/// Resolves every key known in `definitions`, `org` and `user`: user value, else org value, else
/// default; keys with none are absent. Sorted by namespace, then key.
pub fn resolve(definitions: &[Definition], org: &[Stored], user: &[Stored]) -> Vec<Effective> {
    let mut out: BTreeMap<(String, String), (Value, Source)> = BTreeMap::new();
    for d in definitions {
        if let Some(default) = &d.default_value {
            out.insert((d.namespace.clone(), d.key.clone()), (default.clone(), Source::Default));
        }
    }
    for (stored, source) in [(org, Source::Org), (user, Source::User)] {
        for s in stored {
            out.insert((s.namespace.clone(), s.key.clone()), (s.value.clone(), source));
        }
    }
    out.into_iter().map(|((namespace, key), (value, source))| Effective { namespace, key, value, source }).collect()
}

/// Identity's own definitions, registered at start-up.
pub fn own_definitions() -> Vec<Definition> {
    let def =
        |namespace: &str, key: &str, scopes: &[&str], default: Value, schema: Value, writable_by: &str| Definition {
            namespace: namespace.into(),
            key: key.into(),
            module: "identity".into(),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            default_value: Some(default),
            json_schema: Some(schema),
            writable_by: writable_by.into(),
        };
    vec![
        def(
            "branding",
            "primary_color",
            &["org"],
            json!("#4f46e5"),
            json!({"type": "string", "pattern": "^#[0-9a-fA-F]{6}$"}),
            "admin",
        ),
        def(
            "general",
            "week_start",
            &["org", "user"],
            json!("monday"),
            json!({"enum": ["monday", "sunday", "saturday"]}),
            "self",
        ),
        def(
            "general",
            "date_format",
            &["org", "user"],
            json!("YYYY-MM-DD"),
            json!({"enum": ["YYYY-MM-DD", "DD/MM/YYYY", "MM/DD/YYYY", "DD.MM.YYYY"]}),
            "self",
        ),
        def("appearance", "theme", &["user"], json!("system"), json!({"enum": ["light", "dark", "system"]}), "self"),
    ]
}

fn reason_error(reason: &'static str, message: &str) -> Error {
    Error::new(code_of(reason), reason, message)
}

fn parse_scope(raw: i32, violations: &mut Violations) -> Option<Scope> {
    let scope = Scope::from_proto(raw);
    if scope.is_none() {
        violations.push(Violation::new("scope", "must be org or user"));
    }
    scope
}

fn check_names(namespace: &str, key: &str, violations: &mut Violations) {
    violations.check("namespace", check_namespace(namespace));
    violations.check("key", check_key(key));
}

impl Identity {
    /// The scope id for `scope` (the org, or the calling user); API keys have no user scope.
    fn scope_id(ctx: &RequestContext, scope: Scope) -> Result<Uuid> {
        match scope {
            Scope::Org => ctx.org_id(),
            Scope::User => match ctx.subject {
                Subject::User(id) => Ok(id),
                _ => Err(Error::permission_denied("PERMISSION_DENIED", "Only users have user-scope settings")),
            },
        }
    }

    /// ListSettings: the stored values of one scope.
    pub async fn list_settings(&self, ctx: &RequestContext, req: &pb::ListSettingsRequest) -> Result<Vec<Stored>> {
        let mut violations = Violations::default();
        let scope = parse_scope(req.scope, &mut violations);
        let namespace = req.namespace.trim();
        if !namespace.is_empty() {
            violations.check("namespace", check_namespace(namespace));
        }
        violations.finish()?;
        let scope = scope.unwrap_or(Scope::Org);
        let org_id = ctx.org_id()?;
        let scope_id = Self::scope_id(ctx, scope)?;
        if scope == Scope::Org {
            self.require(ctx, org_id, "view").await?;
        }
        let mut tx = self.db.tenant_tx(ctx).await?;
        let rows = store::stored(&mut tx, scope.as_str(), scope_id, Some(namespace).filter(|n| !n.is_empty())).await?;
        tx.commit().await?;
        Ok(rows)
    }

    /// GetEffectiveSettings: every key resolved for the caller.
    pub async fn effective_settings(&self, ctx: &RequestContext, namespace: &str) -> Result<Vec<Effective>> {
        let namespace = Some(namespace.trim()).filter(|n| !n.is_empty());
        if let Some(n) = namespace {
            let mut violations = Violations::default();
            violations.check("namespace", check_namespace(n));
            violations.finish()?;
        }
        let org_id = ctx.org_id()?;
        self.require(ctx, org_id, "view").await?;
        let definitions = store::definitions(self.db.pool(), namespace).await?;
        let mut tx = self.db.tenant_tx(ctx).await?;
        let org = store::stored(&mut tx, "org", org_id, namespace).await?;
        let user = match ctx.subject {
            Subject::User(id) => store::stored(&mut tx, "user", id, namespace).await?,
            _ => Vec::new(),
        };
        tx.commit().await?;
        Ok(resolve(&definitions, &org, &user))
    }

    /// Who may write `scope`: org admins (`organization#manage_settings`) for org scope; the user
    /// for their own user scope when the key lets users write it.
    async fn authorize_setting_write(
        &self,
        ctx: &RequestContext,
        scope: Scope,
        definition: Option<&Definition>,
    ) -> Result<Uuid> {
        let org_id = ctx.org_id()?;
        let scope_id = Self::scope_id(ctx, scope)?;
        match scope {
            Scope::Org => self.require(ctx, org_id, "manage_settings").await?,
            Scope::User => {
                if definition.is_some_and(|d| d.writable_by == "admin") {
                    return Err(Error::permission_denied(
                        "PERMISSION_DENIED",
                        "This setting is managed by the organization's admins",
                    ));
                }
            }
        }
        Ok(scope_id)
    }

    /// SetSetting: validates and stores a value, publishing `identity.setting.changed`.
    pub async fn set_setting(&self, ctx: &RequestContext, req: &pb::SetSettingRequest) -> Result<Stored> {
        let mut violations = Violations::default();
        let scope = parse_scope(req.scope, &mut violations);
        let (namespace, key) = (req.namespace.trim(), req.key.trim());
        check_names(namespace, key, &mut violations);
        let value = match &req.value {
            Some(v) => trellis_kit::json::from_proto(v),
            None => {
                violations.push(Violation::new("value", "is required"));
                Value::Null
            }
        };
        let names_ok = check_namespace(namespace).is_none() && check_key(key).is_none();
        let definition = if names_ok { store::definition(self.db.pool(), namespace, key).await? } else { None };
        if let Some(scope) = scope
            && names_ok
            && req.value.is_some()
        {
            for v in check_value(namespace, definition.as_ref(), scope, &value) {
                violations.push(v);
            }
        }
        violations.finish()?;
        let Some(scope) = scope else { return Err(Error::validation("scope", "must be org or user")) };
        let scope_id = self.authorize_setting_write(ctx, scope, definition.as_ref()).await?;
        let org_id = ctx.org_id()?;
        let mut tx = self.db.tenant_tx(ctx).await?;
        let (exists, count) = store::key_count(&mut tx, scope.as_str(), scope_id, namespace, key).await?;
        if !exists && count >= MAX_KEYS_PER_SCOPE {
            return Err(reason_error("SETTINGS_LIMIT_REACHED", "This scope holds the maximum of 500 settings"));
        }
        let stored =
            store::upsert(&mut tx, org_id, scope.as_str(), scope_id, namespace, key, &value, ctx.user_id_opt()).await?;
        let payload = changed(scope, scope_id, namespace, key, false);
        stage(&mut tx, ctx, org_id, SETTING_CHANGED, &payload).await?;
        tx.commit().await?;
        tracing::info!(org_id = %org_id, scope = scope.as_str(), namespace, key, "setting changed");
        Ok(stored)
    }

    /// DeleteSetting: removes a stored value (idempotent).
    pub async fn delete_setting(&self, ctx: &RequestContext, req: &pb::DeleteSettingRequest) -> Result<()> {
        let mut violations = Violations::default();
        let scope = parse_scope(req.scope, &mut violations);
        let (namespace, key) = (req.namespace.trim(), req.key.trim());
        check_names(namespace, key, &mut violations);
        violations.finish()?;
        let Some(scope) = scope else { return Err(Error::validation("scope", "must be org or user")) };
        let definition = store::definition(self.db.pool(), namespace, key).await?;
        let scope_id = self.authorize_setting_write(ctx, scope, definition.as_ref()).await?;
        let org_id = ctx.org_id()?;
        let mut tx = self.db.tenant_tx(ctx).await?;
        if store::delete(&mut tx, scope.as_str(), scope_id, namespace, key).await? {
            let payload = changed(scope, scope_id, namespace, key, true);
            stage(&mut tx, ctx, org_id, SETTING_CHANGED, &payload).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// RegisterSettingDefinitions: the calling module's definitions (service principals only).
    pub async fn register_setting_definitions(
        &self,
        ctx: &RequestContext,
        req: &pb::RegisterSettingDefinitionsRequest,
    ) -> Result<i64> {
        let module = require_service(ctx)?.to_string();
        let mut violations = Violations::default();
        let mut definitions = Vec::new();
        for (i, d) in req.definitions.iter().enumerate() {
            let field = |name: &str| format!("definitions[{i}].{name}");
            let (namespace, key) = (d.namespace.trim(), d.key.trim());
            violations.check(&field("namespace"), check_namespace(namespace));
            if namespace == CUSTOM {
                violations.push(Violation::new(field("namespace"), "`custom` is reserved for unregistered keys"));
            }
            violations.check(&field("key"), check_key(key));
            let mut scopes = Vec::new();
            for s in &d.scopes {
                match Scope::from_proto(*s) {
                    Some(s) if !scopes.contains(&s.as_str().to_string()) => scopes.push(s.as_str().to_string()),
                    Some(_) => {}
                    None => violations.push(Violation::new(field("scopes"), "must be org or user")),
                }
            }
            if scopes.is_empty() {
                violations.push(Violation::new(field("scopes"), "must name at least one scope"));
            }
            let schema = d.json_schema.as_ref().map(trellis_kit::json::from_struct);
            if let Some(schema) = &schema
                && let Err(e) = json_schema::check_schema(schema)
            {
                violations.push(Violation::new(field("json_schema"), e));
            }
            let default = d.default_value.as_ref().map(trellis_kit::json::from_proto);
            if let (Some(default), Some(schema)) = (&default, &schema)
                && json_schema::check_schema(schema).is_ok()
                && !json_schema::validate(schema, default).is_empty()
            {
                violations.push(Violation::new(field("default_value"), "does not satisfy json_schema"));
            }
            let writable_by = match pb::SettingWriter::try_from(d.writable_by) {
                Ok(pb::SettingWriter::Admin) => "admin",
                _ => "self",
            };
            definitions.push(Definition {
                namespace: namespace.to_string(),
                key: key.to_string(),
                module: module.clone(),
                scopes,
                default_value: default,
                json_schema: schema,
                writable_by: writable_by.to_string(),
            });
        }
        violations.finish()?;
        self.upsert_definitions(&module, &definitions).await
    }

    /// Upserts definitions after checking that their namespaces are `module`'s (or new).
    async fn upsert_definitions(&self, module: &str, definitions: &[Definition]) -> Result<i64> {
        let mut namespaces: Vec<String> = definitions.iter().map(|d| d.namespace.clone()).collect();
        namespaces.sort();
        namespaces.dedup();
        let owners = store::namespace_owners(self.db.pool(), &namespaces).await?;
        if let Some((namespace, owner)) = owners.iter().find(|(_, owner)| owner != module) {
            return Err(reason_error(
                "SETTING_NAMESPACE_OWNED",
                &format!("The namespace `{namespace}` belongs to the module `{owner}`"),
            ));
        }
        Ok(store::upsert_definitions(self.db.pool(), module, definitions).await?)
    }

    /// Registers identity's own definitions ([`own_definitions`]).
    pub(crate) async fn register_own_setting_definitions(&self) -> anyhow::Result<()> {
        self.upsert_definitions("identity", &own_definitions())
            .await
            .map_err(|e| anyhow::anyhow!("{}", e.message()))?;
        Ok(())
    }
}

fn changed(scope: Scope, scope_id: Uuid, namespace: &str, key: &str, deleted: bool) -> pb::SettingChanged {
    pb::SettingChanged {
        scope: scope.as_str().into(),
        scope_id: scope_id.to_string(),
        namespace: namespace.into(),
        key: key.into(),
        deleted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn stored(namespace: &str, key: &str, value: Value) -> Stored {
        Stored {
            scope: "org".into(),
            scope_id: Uuid::nil(),
            namespace: namespace.into(),
            key: key.into(),
            value,
            updated_by: None,
            updated_at: Utc::now(),
        }
    }

    #[test]
    fn the_user_value_wins_then_the_org_value_then_the_default() {
        let defs = own_definitions();
        let org = vec![stored("general", "week_start", json!("sunday")), stored("custom", "x", json!(1))];
        let user = vec![stored("general", "date_format", json!("DD/MM/YYYY"))];
        let resolved = resolve(&defs, &org, &user);
        let find = |ns: &str, key: &str| resolved.iter().find(|e| e.namespace == ns && e.key == key).cloned();
        assert_eq!(find("general", "week_start").map(|e| (e.value, e.source)), Some((json!("sunday"), Source::Org)));
        assert_eq!(find("general", "date_format").map(|e| e.source), Some(Source::User));
        assert_eq!(find("appearance", "theme").map(|e| e.source), Some(Source::Default));
        assert_eq!(find("custom", "x").map(|e| e.source), Some(Source::Org));
        assert_eq!(find("custom", "absent"), None);
    }

    #[test]
    fn names_follow_the_spec_patterns() {
        assert_eq!(check_namespace("branding"), None);
        assert!(check_namespace("Branding").is_some());
        assert!(check_namespace(&"a".repeat(51)).is_some());
        assert_eq!(check_key("primary_color.dark"), None);
        assert!(check_key("1st").is_some());
        assert!(check_key("").is_some());
    }

    #[test]
    fn values_are_checked_for_size_registration_scope_and_schema() {
        let defs = own_definitions();
        let color = defs.iter().find(|d| d.key == "primary_color");
        assert!(check_value("branding", color, Scope::Org, &json!("#112233")).is_empty());
        let bad = check_value("branding", color, Scope::Org, &json!("red"));
        assert_eq!(bad.iter().map(|v| v.field.as_str()).collect::<Vec<_>>(), vec!["value"]);
        let user = check_value("branding", color, Scope::User, &json!("#112233"));
        assert_eq!(user[0].field, "scope");
        assert_eq!(check_value("nope", None, Scope::Org, &json!(1))[0].reason, "SETTING_UNKNOWN");
        assert!(check_value(CUSTOM, None, Scope::User, &json!({"any": [1, 2]})).is_empty());
        let big = json!("x".repeat(17 * 1024));
        assert_eq!(check_value(CUSTOM, None, Scope::User, &big)[0].field, "value");
    }
}
