//! Routing rules: who hears about an event, why, and what the notification says (spec Rules 2,
//! 3 and 8). Pure functions; the consumer in [`crate::events`] stores what they return.

use serde_json::json;
use trellis_proto::trellis::events::v1::Actor;
use trellis_proto::trellis::tasks::v1::TaskAssigned;
use unicode_segmentation::UnicodeSegmentation;
use uuid::Uuid;

/// Longest title, in characters.
pub const TITLE_MAX: usize = 200;
/// Longest body, in characters.
pub const BODY_MAX: usize = 2_000;

/// Why a user receives a notification, highest rank first (Rule 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reason {
    /// The user was assigned the entity.
    Assigned,
    /// The user was mentioned.
    Mentioned,
    /// The user is asked to approve.
    Approver,
    /// The event is about the user.
    Subject,
    /// The user owns the entity.
    Owner,
    /// The user takes part in the thread.
    Participant,
    /// The entity was taken away from the user.
    Unassigned,
    /// The user created the entity.
    Created,
    /// The user watches the entity.
    Watching,
    /// The user administers the organization.
    Admin,
    /// A platform message.
    System,
}

impl Reason {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Assigned => "assigned",
            Reason::Mentioned => "mentioned",
            Reason::Approver => "approver",
            Reason::Subject => "subject",
            Reason::Owner => "owner",
            Reason::Participant => "participant",
            Reason::Unassigned => "unassigned",
            Reason::Created => "created",
            Reason::Watching => "watching",
            Reason::Admin => "admin",
            Reason::System => "system",
        }
    }
}

/// A user who gets a notification, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recipient {
    /// The user.
    pub user_id: Uuid,
    /// The highest-ranked reason they have.
    pub reason: Reason,
}

/// The recipient set from candidate (user, reason) pairs: one entry per user with their
/// highest-ranked reason (Rule 2), never the actor (Rule 3), in first-seen order.
pub fn recipients(candidates: impl IntoIterator<Item = (Uuid, Reason)>, actor: &Actor) -> Vec<Recipient> {
    let actor_user: Option<Uuid> = (actor.kind == "user").then(|| actor.id.parse().ok()).flatten();
    let mut out: Vec<Recipient> = Vec::new();
    for (user_id, reason) in candidates {
        if Some(user_id) == actor_user || user_id.is_nil() {
            continue;
        }
        match out.iter_mut().find(|r| r.user_id == user_id) {
            Some(existing) => existing.reason = existing.reason.min(reason),
            None => out.push(Recipient { user_id, reason }),
        }
    }
    out
}

/// What a notification shows.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    /// One line, at most [`TITLE_MAX`] characters.
    pub title: String,
    /// More text, at most [`BODY_MAX`] characters.
    pub body: String,
    /// Where the client navigates.
    pub url: String,
    /// The entity type.
    pub entity_type: &'static str,
    /// The entity id.
    pub entity_id: Option<Uuid>,
    /// Structured extras for clients.
    pub data: serde_json::Value,
}

/// Recipients of `tasks.task.assigned`: the new assignee (assigned) and the previous one
/// (unassigned).
///
/// The spec adds the task's watchers (watching); they are candidates that must pass a
/// `task#view` check (Rule 4), so they join once the permissions service can answer it.
pub fn task_assigned_recipients(event: &TaskAssigned, actor: &Actor) -> Vec<Recipient> {
    let candidates = [(&event.assignee_id, Reason::Assigned), (&event.previous_assignee_id, Reason::Unassigned)]
        .into_iter()
        .filter_map(|(id, reason)| id.parse::<Uuid>().ok().map(|id| (id, reason)));
    recipients(candidates, actor)
}

/// The notification of `tasks.task.assigned` for one reason. English until the catalog of
/// Rule 8 lands.
pub fn render_task_assigned(event: &TaskAssigned, reason: Reason) -> Rendered {
    let subject = format!("{}: {}", event.key, event.title);
    let (title, body) = match reason {
        Reason::Unassigned => (format!("You were unassigned from {subject}"), String::new()),
        _ => (format!("You were assigned {subject}"), event.note.clone()),
    };
    Rendered {
        title: truncate(&title, TITLE_MAX),
        body: truncate(&body, BODY_MAX),
        url: format!("/tasks/{}", event.task_id),
        entity_type: "task",
        entity_id: event.task_id.parse().ok(),
        data: json!({"task_key": event.key, "board_id": event.board_id}),
    }
}

/// `text` cut to at most `max` characters at a grapheme boundary, ending with "…" when cut.
pub fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut out = String::new();
    let mut used = 0;
    for grapheme in text.graphemes(true) {
        let n = grapheme.chars().count();
        if used + n > max.saturating_sub(1) {
            break;
        }
        out.push_str(grapheme);
        used += n;
    }
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: Uuid) -> Actor {
        Actor { kind: "user".to_string(), id: id.to_string() }
    }

    fn assigned(assignee: Uuid, previous: Option<Uuid>) -> TaskAssigned {
        TaskAssigned {
            task_id: Uuid::now_v7().to_string(),
            key: "TASK-7".to_string(),
            title: "Fix the login page".to_string(),
            assignee_id: assignee.to_string(),
            previous_assignee_id: previous.map(|p| p.to_string()).unwrap_or_default(),
            note: "before Friday".to_string(),
            ..Default::default()
        }
    }

    #[test]
    fn the_assignee_hears_of_an_assignment_and_the_previous_assignee_of_losing_it() {
        let (bob, carol, alice) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let r = task_assigned_recipients(&assigned(bob, Some(carol)), &user(alice));
        assert_eq!(
            r,
            [
                Recipient { user_id: bob, reason: Reason::Assigned },
                Recipient { user_id: carol, reason: Reason::Unassigned }
            ]
        );
    }

    #[test]
    fn the_actor_never_hears_of_their_own_action() {
        let alice = Uuid::now_v7();
        assert!(task_assigned_recipients(&assigned(alice, None), &user(alice)).is_empty());
        // Another kind of actor with the same id is not the user.
        let key = Actor { kind: "api_key".to_string(), id: alice.to_string() };
        assert_eq!(task_assigned_recipients(&assigned(alice, None), &key).len(), 1);
    }

    #[test]
    fn each_user_is_notified_once_with_the_highest_ranked_reason() {
        let bob = Uuid::now_v7();
        let system = Actor { kind: "system".to_string(), id: String::new() };
        let r = recipients([(bob, Reason::Watching), (bob, Reason::Assigned), (bob, Reason::Unassigned)], &system);
        assert_eq!(r, [Recipient { user_id: bob, reason: Reason::Assigned }]);
        assert!(Reason::Mentioned < Reason::Participant && Reason::Unassigned < Reason::Created);
    }

    #[test]
    fn an_assignment_renders_key_title_note_and_link() {
        let event = assigned(Uuid::now_v7(), None);
        let n = render_task_assigned(&event, Reason::Assigned);
        assert_eq!(n.title, "You were assigned TASK-7: Fix the login page");
        assert_eq!(n.body, "before Friday");
        assert_eq!(n.url, format!("/tasks/{}", event.task_id));
        assert_eq!((n.entity_type, n.entity_id.map(|i| i.to_string())), ("task", Some(event.task_id.clone())));
        assert_eq!(render_task_assigned(&event, Reason::Unassigned).body, "");
    }

    #[test]
    fn long_text_is_cut_at_a_grapheme_boundary_with_an_ellipsis() {
        assert_eq!(truncate("short", 200), "short");
        let cut = truncate(&"x".repeat(300), TITLE_MAX);
        assert_eq!(cut.chars().count(), TITLE_MAX);
        assert!(cut.ends_with('…'));
        // "e" + combining acute is one grapheme of two characters: never split.
        let text = "e\u{301}".repeat(150);
        let cut = truncate(&text, TITLE_MAX);
        assert!(cut.chars().count() <= TITLE_MAX);
        assert!(cut.trim_end_matches('…').ends_with("e\u{301}"));
    }
}
