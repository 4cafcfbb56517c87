//! Feature flags (spec rule 29, ADR 0017): rule validation, the deterministic evaluation, and the
//! FeatureFlagService flows.
//!
//! Evaluation reads the flags from the primary on every request (the table is tiny and keyed), so
//! an identity replica never answers from a stale copy; callers in other services cache answers
//! for up to 30 s and drop them on `identity.feature_flag.changed`.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use trellis_kit::paging::{PageTokens, page_size};
use trellis_kit::{Error, RequestContext, Result, Subject};
use trellis_proto::trellis::identity::v1 as pb;
use uuid::Uuid;

use crate::accounts::Identity;
use crate::error::{Violation, Violations, code_of};
use crate::flags_store::{self as store, FlagRow};
use crate::organizations::parse_id;
use crate::service_tokens::require_service;

/// `identity.feature_flag.changed`
pub const FEATURE_FLAG_CHANGED: &str = "identity.feature_flag.changed";
/// Most ids in one user or org rule.
pub const MAX_RULE_IDS: usize = 1000;
/// Most rules per flag.
pub const MAX_RULES: usize = 50;
/// Most keys per EvaluateFlags.
pub const MAX_EVALUATE: usize = 100;

/// One targeting rule, as stored in `feature_flags.rules`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Rule {
    User { ids: Vec<Uuid>, enabled: bool },
    Org { ids: Vec<Uuid>, enabled: bool },
    Percentage { value: u8, enabled: bool },
}

/// What a flag is evaluated for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    pub user: Option<Uuid>,
    pub org: Option<Uuid>,
}

impl Target {
    /// The percentage subject: the user, else the org.
    fn subject(&self) -> Option<Uuid> {
        self.user.or(self.org)
    }
}

/// The percentage bucket of `subject` for `key`: `u32_be(sha256(key ":" subject)[0..4]) % 100`.
pub fn bucket(key: &str, subject: Uuid) -> u32 {
    let digest =
        Sha256::new().chain_update(key.as_bytes()).chain_update(b":").chain_update(subject.to_string()).finalize();
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]) % 100
}

/// Rule 29: the first user rule naming the user, else the first org rule naming the org, else
/// the first percentage rule whose bucket holds the subject, else the global default.
pub fn evaluate(key: &str, enabled: bool, rules: &[Rule], target: Target) -> bool {
    let user = rules.iter().find_map(|r| match r {
        Rule::User { ids, enabled } if target.user.is_some_and(|u| ids.contains(&u)) => Some(*enabled),
        _ => None,
    });
    let org = || {
        rules.iter().find_map(|r| match r {
            Rule::Org { ids, enabled } if target.org.is_some_and(|o| ids.contains(&o)) => Some(*enabled),
            _ => None,
        })
    };
    let percentage = || {
        let subject = target.subject()?;
        rules.iter().find_map(|r| match r {
            Rule::Percentage { value, enabled } if bucket(key, subject) < u32::from(*value) => Some(*enabled),
            _ => None,
        })
    };
    user.or_else(org).or_else(percentage).unwrap_or(enabled)
}

/// Why a flag key is malformed.
pub fn check_flag_key(key: &str) -> Option<&'static str> {
    let mut chars = key.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && (2..=100).contains(&key.len())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    (!ok).then_some("must match ^[a-z][a-z0-9_]{1,99}$")
}

/// Rules from the wire, with a violation per bad field (`rules[i].ids[j]`).
pub fn rules_from_proto(rules: &[pb::FlagRule], violations: &mut Violations) -> Vec<Rule> {
    if rules.len() > MAX_RULES {
        violations.push(Violation::new("rules", format!("at most {MAX_RULES} rules")));
    }
    let mut out = Vec::new();
    for (i, r) in rules.iter().enumerate() {
        let ids = |violations: &mut Violations| {
            if r.ids.is_empty() || r.ids.len() > MAX_RULE_IDS {
                violations.push(Violation::new(format!("rules[{i}].ids"), "must hold 1 to 1000 ids"));
            }
            r.ids
                .iter()
                .enumerate()
                .filter_map(|(j, id)| match id.trim().parse::<Uuid>() {
                    Ok(id) => Some(id),
                    Err(_) => {
                        violations.push(Violation::new(format!("rules[{i}].ids[{j}]"), "must be a UUID"));
                        None
                    }
                })
                .collect::<Vec<_>>()
        };
        match pb::FlagRuleType::try_from(r.r#type).unwrap_or(pb::FlagRuleType::Unspecified) {
            pb::FlagRuleType::User => out.push(Rule::User { ids: ids(violations), enabled: r.enabled }),
            pb::FlagRuleType::Org => out.push(Rule::Org { ids: ids(violations), enabled: r.enabled }),
            pb::FlagRuleType::Percentage => match u8::try_from(r.value) {
                Ok(value) if value <= 100 => out.push(Rule::Percentage { value, enabled: r.enabled }),
                _ => violations.push(Violation::new(format!("rules[{i}].value"), "must be 0 to 100")),
            },
            pb::FlagRuleType::Unspecified => {
                violations.push(Violation::new(format!("rules[{i}].type"), "must be user, org or percentage"))
            }
        }
    }
    out
}

/// Rules to the wire.
pub fn rules_to_proto(rules: &[Rule]) -> Vec<pb::FlagRule> {
    rules
        .iter()
        .map(|r| match r {
            Rule::User { ids, enabled } | Rule::Org { ids, enabled } => pb::FlagRule {
                r#type: if matches!(r, Rule::User { .. }) { pb::FlagRuleType::User } else { pb::FlagRuleType::Org }
                    .into(),
                ids: ids.iter().map(Uuid::to_string).collect(),
                value: 0,
                enabled: *enabled,
            },
            Rule::Percentage { value, enabled } => pb::FlagRule {
                r#type: pb::FlagRuleType::Percentage.into(),
                ids: Vec::new(),
                value: i32::from(*value),
                enabled: *enabled,
            },
        })
        .collect()
}

/// The stored rules of a row (rules that no longer parse are ignored rather than failing reads).
pub fn rules_of(row: &FlagRow) -> Vec<Rule> {
    serde_json::from_value(row.rules.clone()).unwrap_or_else(|e| {
        tracing::warn!(key = %row.key, error = %e, "feature flag rules do not parse; ignoring them");
        Vec::new()
    })
}

fn rules_json(rules: &[Rule]) -> Result<serde_json::Value> {
    serde_json::to_value(rules).map_err(Error::internal)
}

fn reason_error(reason: &'static str, message: &str) -> Error {
    Error::new(code_of(reason), reason, message)
}

fn changed(row: &FlagRow, deleted: bool) -> pb::FeatureFlagChanged {
    pb::FeatureFlagChanged {
        key: row.key.clone(),
        enabled: row.enabled && !deleted,
        rules: if deleted { Vec::new() } else { rules_to_proto(&rules_of(row)) },
        deleted,
    }
}

impl Identity {
    /// Stages `identity.feature_flag.changed` (flags belong to no organization: the nil org).
    async fn stage_flag_changed(
        &self,
        tx: &mut trellis_kit::db::Tx,
        ctx: &RequestContext,
        row: &FlagRow,
        deleted: bool,
    ) -> Result<()> {
        crate::organizations::stage(tx, ctx, Uuid::nil(), FEATURE_FLAG_CHANGED, &changed(row, deleted)).await
    }

    /// ListFlags (platform admins).
    pub async fn list_flags(
        &self,
        ctx: &RequestContext,
        tokens: &PageTokens,
        req: &pb::ListFlagsRequest,
    ) -> Result<(Vec<FlagRow>, String, i64)> {
        self.authorize_platform_admin(ctx).await?;
        let size = page_size(req.page_size)?;
        let hash = PageTokens::query_hash(&["feature_flags"]);
        let offset: i64 = tokens.decode(&hash, &req.page_token)?.unwrap_or(0);
        let (rows, total) = store::page(self.db.pool(), offset, i64::from(size)).await?;
        let next = offset + rows.len() as i64;
        let token = if next < total { tokens.encode(&hash, &next) } else { String::new() };
        Ok((rows, token, total))
    }

    /// CreateFlag (platform admins).
    pub async fn create_flag(&self, ctx: &RequestContext, req: &pb::CreateFlagRequest) -> Result<FlagRow> {
        let mut violations = Violations::default();
        let key = req.key.trim();
        violations.check("key", check_flag_key(key));
        if req.description.chars().count() > 500 {
            violations.push(Violation::new("description", "must be at most 500 characters"));
        }
        let rules = rules_from_proto(&req.rules, &mut violations);
        violations.finish()?;
        self.authorize_platform_admin(ctx).await?;
        let (_, actor) = ctx.actor();
        let mut tx = self.db.tx().await?;
        let row = store::insert(&mut tx, key, req.description.trim(), req.enabled, &rules_json(&rules)?, &actor)
            .await?
            .ok_or_else(|| reason_error("FLAG_EXISTS", "A feature flag with this key exists"))?;
        self.stage_flag_changed(&mut tx, ctx, &row, false).await?;
        tx.commit().await?;
        tracing::info!(key, actor = %actor, "feature flag created");
        Ok(row)
    }

    /// UpdateFlag (platform admins).
    pub async fn update_flag(&self, ctx: &RequestContext, req: &pb::UpdateFlagRequest) -> Result<FlagRow> {
        let mut violations = Violations::default();
        let mask: Vec<String> = match &req.update_mask {
            Some(m) if !m.paths.is_empty() => m.paths.clone(),
            _ => vec!["description".into(), "enabled".into(), "rules".into()],
        };
        let mut rules = None;
        for path in &mask {
            match path.as_str() {
                "description" if req.description.chars().count() > 500 => {
                    violations.push(Violation::new("description", "must be at most 500 characters"))
                }
                "rules" => rules = Some(rules_from_proto(&req.rules, &mut violations)),
                "description" | "enabled" => {}
                other => violations.push(Violation::new("update_mask", format!("`{other}` cannot be updated"))),
            }
        }
        violations.finish()?;
        self.authorize_platform_admin(ctx).await?;
        let (_, actor) = ctx.actor();
        let mut tx = self.db.tx().await?;
        let current = store::lock(&mut tx, req.key.trim())
            .await?
            .ok_or_else(|| reason_error("FLAG_NOT_FOUND", "The feature flag does not exist"))?;
        let has = |p: &str| mask.iter().any(|m| m == p);
        let description = if has("description") { req.description.trim() } else { current.description.as_str() };
        let enabled = if has("enabled") { req.enabled } else { current.enabled };
        let rules = match rules {
            Some(rules) => rules_json(&rules)?,
            None => current.rules.clone(),
        };
        let row = store::update(&mut tx, &current.key, description, enabled, &rules, &actor).await?;
        self.stage_flag_changed(&mut tx, ctx, &row, false).await?;
        tx.commit().await?;
        tracing::info!(key = %row.key, actor = %actor, "feature flag updated");
        Ok(row)
    }

    /// DeleteFlag (platform admins).
    pub async fn delete_flag(&self, ctx: &RequestContext, key: &str) -> Result<()> {
        self.authorize_platform_admin(ctx).await?;
        let mut tx = self.db.tx().await?;
        let row = store::lock(&mut tx, key.trim())
            .await?
            .ok_or_else(|| reason_error("FLAG_NOT_FOUND", "The feature flag does not exist"))?;
        store::delete(&mut tx, &row.key).await?;
        self.stage_flag_changed(&mut tx, ctx, &row, true).await?;
        tx.commit().await?;
        Ok(())
    }

    /// GetMyFeatures: every flag for the caller in the active org.
    pub async fn my_features(&self, ctx: &RequestContext) -> Result<HashMap<String, bool>> {
        let target = match &ctx.subject {
            Subject::User(id) => Target { user: Some(*id), org: ctx.org_id },
            Subject::ApiKey(_) | Subject::Service(_) | Subject::System => Target { user: None, org: ctx.org_id },
            Subject::Anonymous => return Err(Error::unauthenticated("UNAUTHENTICATED", "Authentication required")),
        };
        let rows = store::all(self.db.pool()).await?;
        Ok(rows.iter().map(|r| (r.key.clone(), evaluate(&r.key, r.enabled, &rules_of(r), target))).collect())
    }

    /// EvaluateFlags (service principals): `keys` for an org and optionally a user.
    pub async fn evaluate_flags(
        &self,
        ctx: &RequestContext,
        req: &pb::EvaluateFlagsRequest,
    ) -> Result<HashMap<String, bool>> {
        require_service(ctx)?;
        let org = parse_id("org_id", &req.org_id)?;
        let user = match req.user_id.trim() {
            "" => None,
            raw => Some(parse_id("user_id", raw)?),
        };
        if req.keys.is_empty() || req.keys.len() > MAX_EVALUATE {
            return Err(Error::validation("keys", "must hold 1 to 100 keys"));
        }
        let rows = store::by_keys(self.db.pool(), &req.keys).await?;
        let target = Target { user, org: Some(org) };
        let mut answers: HashMap<String, bool> = req.keys.iter().map(|k| (k.clone(), false)).collect();
        for r in &rows {
            answers.insert(r.key.clone(), evaluate(&r.key, r.enabled, &rules_of(r), target));
        }
        Ok(answers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_matching_kind_decides_in_rule_order() {
        let (u1, o2, other) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let rules = vec![
            Rule::Percentage { value: 100, enabled: true },
            Rule::Org { ids: vec![o2], enabled: false },
            Rule::User { ids: vec![u1], enabled: true },
        ];
        // The user rule beats the org rule even though it is listed later.
        assert!(evaluate("f", false, &rules, Target { user: Some(u1), org: Some(o2) }));
        // The org rule beats the percentage rule.
        assert!(!evaluate("f", false, &rules, Target { user: Some(other), org: Some(o2) }));
        // Else the percentage rule (100 %), else the default.
        assert!(evaluate("f", false, &rules, Target { user: Some(other), org: Some(other) }));
        assert!(evaluate("f", true, &[], Target { user: None, org: None }));
        assert!(!evaluate(
            "f",
            false,
            &[Rule::Percentage { value: 0, enabled: true }],
            Target { user: Some(u1), org: None }
        ));
    }

    #[test]
    fn percentage_buckets_are_stable_and_roughly_uniform() {
        let rules = [Rule::Percentage { value: 25, enabled: true }];
        let users: Vec<Uuid> = (0..1000u128).map(|i| Uuid::from_u128(i * 7_919 + 13)).collect();
        let on = users
            .iter()
            .filter(|u| evaluate("kanban_view", false, &rules, Target { user: Some(**u), org: None }))
            .count();
        assert!((200..=300).contains(&on), "{on} of 1000");
        for u in &users[..50] {
            assert_eq!(bucket("kanban_view", *u), bucket("kanban_view", *u));
        }
        // The spec's formula, spelled out once.
        let subject = Uuid::nil();
        let digest = Sha256::digest(format!("kanban_view:{subject}").as_bytes());
        let expected = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]) % 100;
        assert_eq!(bucket("kanban_view", subject), expected);
    }

    #[test]
    fn rules_round_trip_through_storage_and_the_wire() {
        let rules = vec![
            Rule::User { ids: vec![Uuid::now_v7()], enabled: true },
            Rule::Percentage { value: 25, enabled: true },
        ];
        let stored = serde_json::to_value(&rules).expect("json");
        assert_eq!(stored[1], serde_json::json!({"type": "percentage", "value": 25, "enabled": true}));
        let mut violations = Violations::default();
        assert_eq!(rules_from_proto(&rules_to_proto(&rules), &mut violations), rules);
        assert!(violations.finish().is_ok());
        let bad = [pb::FlagRule { r#type: pb::FlagRuleType::Percentage.into(), value: 101, ..Default::default() }];
        let mut violations = Violations::default();
        rules_from_proto(&bad, &mut violations);
        assert!(violations.finish().is_err());
    }
}
