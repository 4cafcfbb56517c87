//! What an automation is (trigger, conditions, actions) and how it is validated and evaluated,
//! as pure functions (Rules 29-31): validation reports each problem at its path
//! (`conditions[0].op`, `actions[1].value`), evaluation tests conditions against [`Facts`].

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use trellis_kit::error::Violations;
use uuid::Uuid;

use crate::task::{Priority, Status};

/// Triggers (Rule 29), without the `tasks.` prefix of their routing keys.
pub const TRIGGERS: &[&str] = &[
    "task.created",
    "task.updated",
    "task.assigned",
    "task.status_changed",
    "task.completed",
    "task.overdue",
    "task.due_soon",
    "task.unblocked",
    "task.checklist_completed",
    "comment.created",
];
/// Most conditions per automation.
pub const MAX_CONDITIONS: usize = 10;
/// Most actions per automation.
pub const MAX_ACTIONS: usize = 10;
/// Longest name.
pub const NAME_MAX: usize = 200;

/// A condition `field op value`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Condition {
    /// The field.
    pub field: String,
    /// The operator.
    pub op: String,
    /// The operand (absent for is_set / is_not_set).
    #[serde(default)]
    pub value: Value,
}

/// An action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Action {
    /// notify | set_field | reassign.
    #[serde(rename = "type")]
    pub kind: String,
    /// set_field's field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// set_field's value.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub value: Value,
    /// notify / reassign target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The user of target `user`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<Uuid>,
    /// notify's template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// notify's message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Status,
    Priority,
    Id,
    Text,
    Number,
    Bool,
}

fn field_kind(field: &str) -> Option<Kind> {
    Some(match field {
        "status" | "from_status" | "to_status" => Kind::Status,
        "priority" => Kind::Priority,
        "assignee_id" | "column_id" | "to_column_id" => Kind::Id,
        "tag" | "changed_field" | "title" => Kind::Text,
        "overdue_days" => Kind::Number,
        "is_subtask" => Kind::Bool,
        _ => return None,
    })
}

const OPS: &[&str] = &["eq", "ne", "in", "not_in", "gte", "lte", "contains", "is_set", "is_not_set"];

fn scalar_ok(kind: Kind, value: &Value, columns: &[Uuid]) -> Result<(), &'static str> {
    match (kind, value) {
        (Kind::Status, Value::String(s)) if Status::parse(s).is_some() => Ok(()),
        (Kind::Status, _) => Err("must be a status (backlog, todo, in_progress, in_review, blocked, done, cancelled)"),
        (Kind::Priority, Value::String(s)) if Priority::parse(s).is_some() => Ok(()),
        (Kind::Priority, _) => Err("must be a priority (low, medium, high, urgent)"),
        (Kind::Id, Value::String(s)) => match s.parse::<Uuid>() {
            Ok(id) if columns.is_empty() || columns.contains(&id) => Ok(()),
            Ok(_) => Err("must be a column of this board"),
            Err(_) => Err("must be an id"),
        },
        (Kind::Id, _) => Err("must be an id"),
        (Kind::Text, Value::String(_)) => Ok(()),
        (Kind::Text, _) => Err("must be a string"),
        (Kind::Number, Value::Number(n)) if n.as_i64().is_some() => Ok(()),
        (Kind::Number, _) => Err("must be a whole number"),
        (Kind::Bool, Value::Bool(_)) => Ok(()),
        (Kind::Bool, _) => Err("must be true or false"),
    }
}

/// Validates trigger, conditions and actions, adding violations at their paths. `columns` are
/// the board's columns (column ids must be among them).
pub fn validate(v: &mut Violations, trigger: &str, conditions: &[Condition], actions: &[Action], columns: &[Uuid]) {
    if !TRIGGERS.contains(&trigger) {
        v.add("trigger_event", format!("must be one of {}", TRIGGERS.join(", ")));
    }
    if conditions.len() > MAX_CONDITIONS {
        v.add("conditions", format!("at most {MAX_CONDITIONS}"));
    }
    for (i, c) in conditions.iter().enumerate() {
        let Some(kind) = field_kind(&c.field) else {
            v.add(format!("conditions[{i}].field"), "is not a condition field");
            continue;
        };
        if !OPS.contains(&c.op.as_str()) {
            v.add(format!("conditions[{i}].op"), format!("must be one of {}", OPS.join(", ")));
            continue;
        }
        let column_check: &[Uuid] =
            if matches!(c.field.as_str(), "column_id" | "to_column_id") { columns } else { &[] };
        let path = format!("conditions[{i}].value");
        match c.op.as_str() {
            "is_set" | "is_not_set" => {}
            "in" | "not_in" => match &c.value {
                Value::Array(items) if !items.is_empty() => {
                    if let Some(Err(why)) = items.iter().map(|x| scalar_ok(kind, x, column_check)).find(Result::is_err)
                    {
                        v.add(path, why);
                    }
                }
                _ => {
                    v.add(path, "must be a non-empty list");
                }
            },
            "gte" | "lte" if !matches!(kind, Kind::Number | Kind::Priority) => {
                v.add(format!("conditions[{i}].op"), "applies to overdue_days and priority only");
            }
            "contains" if kind != Kind::Text => {
                v.add(format!("conditions[{i}].op"), "applies to tag, changed_field and title only");
            }
            _ => {
                if let Err(why) = scalar_ok(kind, &c.value, column_check) {
                    v.add(path, why);
                }
            }
        }
    }
    if actions.is_empty() || actions.len() > MAX_ACTIONS {
        v.add("actions", format!("needs 1 to {MAX_ACTIONS} actions"));
    }
    for (i, a) in actions.iter().enumerate() {
        let at = |part: &str| format!("actions[{i}].{part}");
        match a.kind.as_str() {
            "notify" => {
                match a.target.as_deref() {
                    Some("assignee" | "creator" | "watchers") => {}
                    Some("user") if a.user_id.is_some() => {}
                    Some("user") => {
                        v.add(at("user_id"), "is required for target user");
                    }
                    _ => {
                        v.add(at("target"), "must be assignee, creator, watchers or user");
                    }
                }
                if a.template.as_deref().is_none_or(|t| t.trim().is_empty()) {
                    v.add(at("template"), "is required");
                }
                if a.message.as_deref().is_some_and(|m| m.chars().count() > 2_000) {
                    v.add(at("message"), "at most 2 000 characters");
                }
            }
            "set_field" => {
                let Some(field) = a.field.as_deref() else {
                    v.add(at("field"), "is required");
                    continue;
                };
                let ok = match field {
                    "status" => scalar_ok(Kind::Status, &a.value, &[]),
                    "priority" => scalar_ok(Kind::Priority, &a.value, &[]),
                    "column_id" => scalar_ok(Kind::Id, &a.value, columns),
                    "assignee_id" if a.value.is_null() => Ok(()),
                    "assignee_id" => scalar_ok(Kind::Id, &a.value, &[]),
                    "start_date" | "due_date" => match &a.value {
                        Value::Null => Ok(()),
                        Value::String(s) if DateValue::parse(s).is_some() => Ok(()),
                        _ => Err("must be an RFC 3339 time, {{now}}, {{now+Nd}} or {{due_date+Nd}}"),
                    },
                    _ => {
                        v.add(at("field"), "must be status, priority, assignee_id, column_id, start_date or due_date");
                        continue;
                    }
                };
                if let Err(why) = ok {
                    v.add(at("value"), why);
                }
            }
            "reassign" => match a.target.as_deref() {
                Some("creator" | "team_maintainer" | "unassigned") => {}
                Some("user") if a.user_id.is_some() => {}
                Some("user") => {
                    v.add(at("user_id"), "is required for target user");
                }
                _ => {
                    v.add(at("target"), "must be creator, user, team_maintainer or unassigned");
                }
            },
            _ => {
                v.add(at("type"), "must be notify, set_field or reassign");
            }
        }
    }
}

/// A date value of set_field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DateValue {
    /// A fixed time.
    At(DateTime<Utc>),
    /// `{{now}}` / `{{now+Nd}}`.
    NowPlus(i64),
    /// `{{due_date+Nd}}`.
    DuePlus(i64),
}

impl DateValue {
    /// Parses an RFC 3339 time or a template.
    pub fn parse(s: &str) -> Option<DateValue> {
        if let Some(inner) = s.strip_prefix("{{").and_then(|r| r.strip_suffix("}}")) {
            let inner = inner.trim();
            let (base, days) = match inner.split_once(['+', '-']) {
                Some((base, n)) => {
                    let n: i64 = n.trim().strip_suffix('d')?.trim().parse().ok()?;
                    (base.trim(), if inner.contains('-') { -n } else { n })
                }
                None => (inner, 0),
            };
            if days.abs() > 3_650 {
                return None;
            }
            return match base {
                "now" => Some(DateValue::NowPlus(days)),
                "due_date" => Some(DateValue::DuePlus(days)),
                _ => None,
            };
        }
        s.parse::<DateTime<Utc>>().ok().map(DateValue::At)
    }

    /// The time it denotes; `{{due_date+Nd}}` of a task without a due date is none.
    pub fn resolve(self, now: DateTime<Utc>, due: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
        match self {
            DateValue::At(t) => Some(t),
            DateValue::NowPlus(d) => Some(now + TimeDelta::days(d)),
            DateValue::DuePlus(d) => due.map(|due| due + TimeDelta::days(d)),
        }
    }
}

/// What conditions are tested against: the event's fields and the task's current state.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// Current status.
    pub status: Option<String>,
    /// Event: status before.
    pub from_status: Option<String>,
    /// Event: status after.
    pub to_status: Option<String>,
    /// Current priority.
    pub priority: Option<String>,
    /// Current assignee.
    pub assignee_id: Option<String>,
    /// Current column.
    pub column_id: Option<String>,
    /// Event: column after.
    pub to_column_id: Option<String>,
    /// Current tags.
    pub tags: Vec<String>,
    /// Event: overdue days.
    pub overdue_days: Option<i64>,
    /// Current: has a parent.
    pub is_subtask: bool,
    /// Event: changed fields.
    pub changed_fields: Vec<String>,
    /// Current title.
    pub title: Option<String>,
}

fn priority_rank(p: &str) -> Option<i64> {
    ["low", "medium", "high", "urgent"].iter().position(|x| *x == p).map(|i| i as i64)
}

impl Facts {
    fn values(&self, field: &str) -> Vec<Value> {
        let one = |v: &Option<String>| v.iter().map(|s| Value::String(s.clone())).collect();
        match field {
            "status" => one(&self.status),
            "from_status" => one(&self.from_status),
            "to_status" => one(&self.to_status),
            "priority" => one(&self.priority),
            "assignee_id" => one(&self.assignee_id),
            "column_id" => one(&self.column_id),
            "to_column_id" => one(&self.to_column_id),
            "title" => one(&self.title),
            "tag" => self.tags.iter().map(|t| Value::String(t.clone())).collect(),
            "changed_field" => self.changed_fields.iter().map(|t| Value::String(t.clone())).collect(),
            "overdue_days" => self.overdue_days.iter().map(|n| Value::from(*n)).collect(),
            "is_subtask" => vec![Value::Bool(self.is_subtask)],
            _ => Vec::new(),
        }
    }

    /// Whether one condition holds. For multi-valued fields (tag, changed_field) a positive
    /// operator needs one matching value and a negative one needs none.
    pub fn holds(&self, c: &Condition) -> bool {
        let values = self.values(&c.field);
        let same = |a: &Value, b: &Value| match (a, b) {
            (Value::String(x), Value::String(y)) => x.eq_ignore_ascii_case(y),
            _ => a == b,
        };
        let number = |v: &Value| {
            if c.field == "priority" { v.as_str().and_then(priority_rank) } else { v.as_i64() }
        };
        let list = c.value.as_array().cloned().unwrap_or_default();
        match c.op.as_str() {
            "is_set" => !values.is_empty(),
            "is_not_set" => values.is_empty(),
            "eq" => values.iter().any(|v| same(v, &c.value)),
            "ne" => !values.iter().any(|v| same(v, &c.value)),
            "in" => values.iter().any(|v| list.iter().any(|x| same(v, x))),
            "not_in" => !values.iter().any(|v| list.iter().any(|x| same(v, x))),
            "gte" => values.iter().any(|v| number(v).zip(number(&c.value)).is_some_and(|(a, b)| a >= b)),
            "lte" => values.iter().any(|v| number(v).zip(number(&c.value)).is_some_and(|(a, b)| a <= b)),
            "contains" => {
                let needle = c.value.as_str().unwrap_or_default().to_lowercase();
                values.iter().any(|v| v.as_str().is_some_and(|s| s.to_lowercase().contains(&needle)))
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(v: &mut Violations) -> Vec<String> {
        match v.finish() {
            Ok(()) => Vec::new(),
            Err(e) => e.violations().iter().map(|f| f.field.clone()).collect(),
        }
    }

    fn action(j: Value) -> Action {
        serde_json::from_value(j).unwrap_or_else(|e| panic!("{e}"))
    }

    fn cond(field: &str, op: &str, value: Value) -> Condition {
        Condition { field: field.into(), op: op.into(), value }
    }

    #[test]
    fn problems_are_reported_at_their_paths() {
        let column = Uuid::now_v7();
        let mut v = Violations::default();
        validate(
            &mut v,
            "task.exploded",
            &[
                cond("colour", "eq", json!("red")),
                cond("status", "between", json!(1)),
                cond("column_id", "eq", json!(Uuid::now_v7().to_string())),
            ],
            &[
                action(json!({"type": "set_field", "field": "colour", "value": "red"})),
                action(json!({"type": "set_field", "field": "priority", "value": "extreme"})),
                action(json!({"type": "notify", "target": "user"})),
                action(json!({"type": "teleport"})),
            ],
            &[column],
        );
        assert_eq!(
            fields(&mut v),
            [
                "trigger_event",
                "conditions[0].field",
                "conditions[1].op",
                "conditions[2].value",
                "actions[0].field",
                "actions[1].value",
                "actions[2].user_id",
                "actions[2].template",
                "actions[3].type"
            ]
        );
    }

    #[test]
    fn flow_rules_are_valid() {
        let mut v = Violations::default();
        validate(
            &mut v,
            "task.overdue",
            &[cond("overdue_days", "gte", json!(3))],
            &[
                action(json!({"type": "reassign", "target": "team_maintainer"})),
                action(json!({"type": "set_field", "field": "priority", "value": "urgent"})),
                action(json!({"type": "set_field", "field": "due_date", "value": "{{now+2d}}"})),
                action(json!({"type": "notify", "target": "creator", "template": "task_done"})),
            ],
            &[],
        );
        assert!(fields(&mut v).is_empty(), "{:?}", fields(&mut v));
    }

    #[test]
    fn conditions_compare_event_and_task_facts() {
        let facts = Facts {
            to_status: Some("done".into()),
            priority: Some("high".into()),
            overdue_days: Some(3),
            tags: vec!["Backend".into()],
            ..Facts::default()
        };
        assert!(facts.holds(&cond("to_status", "eq", json!("done"))));
        assert!(!facts.holds(&cond("to_status", "ne", json!("done"))));
        assert!(facts.holds(&cond("overdue_days", "gte", json!(3))));
        assert!(!facts.holds(&cond("overdue_days", "gte", json!(4))));
        assert!(facts.holds(&cond("priority", "gte", json!("medium"))));
        assert!(facts.holds(&cond("priority", "in", json!(["high", "urgent"]))));
        assert!(facts.holds(&cond("tag", "eq", json!("backend"))));
        assert!(facts.holds(&cond("assignee_id", "is_not_set", Value::Null)));
        assert!(!facts.holds(&cond("from_status", "is_set", Value::Null)));
    }

    #[test]
    fn date_templates_resolve_against_now_and_the_due_date() {
        let now: DateTime<Utc> = "2026-11-22T10:00:00Z".parse().unwrap_or_default();
        assert_eq!(DateValue::parse("{{now}}").and_then(|d| d.resolve(now, None)), Some(now));
        assert_eq!(DateValue::parse("{{now+2d}}").and_then(|d| d.resolve(now, None)), Some(now + TimeDelta::days(2)));
        assert_eq!(
            DateValue::parse("{{due_date+1d}}").and_then(|d| d.resolve(now, Some(now))),
            Some(now + TimeDelta::days(1))
        );
        assert_eq!(DateValue::parse("{{due_date+1d}}").and_then(|d| d.resolve(now, None)), None);
        assert_eq!(DateValue::parse("{{later}}"), None);
        assert!(DateValue::parse("2026-12-01T00:00:00Z").is_some());
    }
}
