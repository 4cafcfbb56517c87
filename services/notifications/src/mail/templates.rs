//! The system email templates and the sandbox they render in (spec Rules 20-21).
//!
//! Templates ship in `templates/{slug}.{locale}.{subject,html,txt}.j2` and are embedded in the
//! binary; `_`-prefixed files are layouts and partials. They run in a minijinja environment with
//! no filesystem or network loader, HTML autoescaping for `.html.j2` templates only, a fuel budget
//! that stops runaway templates, and undefined variables as errors when printed. Every template
//! may use the common variables ([`COMMON_VARIABLES`]) plus those its slug declares
//! ([`TemplateInfo::variables`]).

use minijinja::{AutoEscape, Environment, UndefinedBehavior};

use super::Rendered;

/// Variables every template may use.
pub const COMMON_VARIABLES: &[&str] = &["org_name", "recipient_name", "app_url", "preferences_url", "locale"];

/// The locale every system template exists in, and the last fallback.
pub const DEFAULT_LOCALE: &str = "en";

/// Instructions a render may spend; enough for any sane template, a wall against loops.
const FUEL: u64 = 200_000;

/// A system template slug, what it is for, and the variables it declares.
#[derive(Debug, Clone, Copy)]
pub struct TemplateInfo {
    /// The slug.
    pub slug: &'static str,
    /// What it sends.
    pub description: &'static str,
    /// Its own variables (beyond [`COMMON_VARIABLES`]).
    pub variables: &'static [&'static str],
}

/// The system templates.
pub const SYSTEM: &[TemplateInfo] = &[
    TemplateInfo { slug: "welcome", description: "Welcome after registration", variables: &["email"] },
    TemplateInfo {
        slug: "email_verification",
        description: "Link that verifies an address (purpose verify_email or change_email)",
        variables: &["email", "purpose", "link_url", "expires_at"],
    },
    TemplateInfo {
        slug: "password_reset",
        description: "Password reset link",
        variables: &["email", "link_url", "expires_at"],
    },
    TemplateInfo {
        slug: "invitation",
        description: "Invitation to join an organization",
        variables: &["email", "inviter_name", "role", "message", "link_url", "expires_at"],
    },
    TemplateInfo {
        slug: "email_changed",
        description: "Tells the previous address that the account's email changed",
        variables: &["email", "previous_email"],
    },
    TemplateInfo {
        slug: "security_alert",
        description: "Security alerts: password changed, account locked, MFA changes, stolen session",
        variables: &["email", "alert", "via", "locked_until", "failed_count"],
    },
];

macro_rules! system_templates {
    ($($slug:literal),* $(,)?) => {
        &[
            ("_layout.html.j2", include_str!("../../templates/_layout.html.j2")),
            ("_button.html.j2", include_str!("../../templates/_button.html.j2")),
            ("_alert.html.j2", include_str!("../../templates/_alert.html.j2")),
            ("_alert.txt.j2", include_str!("../../templates/_alert.txt.j2")),
            $(
                (concat!($slug, ".en.subject.j2"), include_str!(concat!("../../templates/", $slug, ".en.subject.j2"))),
                (concat!($slug, ".en.html.j2"), include_str!(concat!("../../templates/", $slug, ".en.html.j2"))),
                (concat!($slug, ".en.txt.j2"), include_str!(concat!("../../templates/", $slug, ".en.txt.j2"))),
            )*
        ]
    };
}

/// Every embedded file, by name.
const FILES: &[(&str, &str)] = system_templates!(
    "welcome",
    "email_verification",
    "password_reset",
    "invitation",
    "email_changed",
    "security_alert",
);

/// Why a template did not render.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// No system template has this slug.
    #[error("no template {0:?}")]
    UnknownSlug(String),
    /// The template failed (syntax, undefined variable, out of fuel).
    #[error("template {name}: {message}")]
    Render {
        /// The template file.
        name: String,
        /// What minijinja said.
        message: String,
    },
}

/// The system templates in their sandbox.
#[derive(Debug)]
pub struct Templates {
    env: Environment<'static>,
}

impl Default for Templates {
    fn default() -> Self {
        Self::system()
    }
}

impl Templates {
    /// The embedded system templates. Panics only if an embedded template does not compile,
    /// which the unit tests rule out.
    pub fn system() -> Templates {
        let mut env = Environment::new();
        env.set_auto_escape_callback(
            |name| if name.ends_with(".html.j2") { AutoEscape::Html } else { AutoEscape::None },
        );
        env.set_undefined_behavior(UndefinedBehavior::SemiStrict);
        env.set_fuel(Some(FUEL));
        env.set_keep_trailing_newline(false);
        for (name, source) in FILES {
            if let Err(e) = env.add_template(name, source) {
                panic!("embedded email template {name} does not compile: {e:#}");
            }
        }
        Templates { env }
    }

    /// The locale the templates of `slug` exist in that is closest to `locale` (`pt-BR` → `pt`
    /// → `en`).
    pub fn resolve_locale(&self, slug: &str, locale: &str) -> String {
        let locale = locale.trim();
        let language = locale.split(['-', '_']).next().unwrap_or_default();
        [locale, language]
            .into_iter()
            .filter(|l| !l.is_empty())
            .find(|l| self.env.get_template(&format!("{slug}.{l}.subject.j2")).is_ok())
            .unwrap_or(DEFAULT_LOCALE)
            .to_string()
    }

    /// Renders `slug` in `locale` (see [`Templates::resolve_locale`]) with `vars`; returns the
    /// locale used and the message parts.
    pub fn render(
        &self,
        slug: &str,
        locale: &str,
        vars: &serde_json::Value,
    ) -> Result<(String, Rendered), TemplateError> {
        if !SYSTEM.iter().any(|t| t.slug == slug) {
            return Err(TemplateError::UnknownSlug(slug.to_string()));
        }
        let locale = self.resolve_locale(slug, locale);
        let mut vars = vars.clone();
        if let Some(map) = vars.as_object_mut() {
            map.insert("locale".into(), serde_json::Value::String(locale.clone()));
        }
        let part = |kind: &str| -> Result<String, TemplateError> {
            let name = format!("{slug}.{locale}.{kind}.j2");
            let failed = |e: minijinja::Error| TemplateError::Render { name: name.clone(), message: format!("{e:#}") };
            self.env.get_template(&name).map_err(failed)?.render(&vars).map_err(failed)
        };
        let subject = part("subject")?.split_whitespace().collect::<Vec<_>>().join(" ");
        let rendered = Rendered { subject, html: part("html")?, text: tidy_text(&part("txt")?) };
        Ok((locale, rendered))
    }
}

/// Plain text with runs of blank lines collapsed to one and a final newline.
fn tidy_text(text: &str) -> String {
    let mut out = String::new();
    let mut blank = 0;
    for line in text.lines().map(str::trim_end) {
        if line.is_empty() {
            blank += 1;
            if blank > 1 || out.is_empty() {
                continue;
            }
        } else {
            blank = 0;
        }
        out.push_str(line);
        out.push('\n');
    }
    out.trim_end().to_string() + "\n"
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn common() -> serde_json::Value {
        json!({"org_name": "Trellis", "recipient_name": "Bob", "app_url": "https://app.example",
               "preferences_url": "https://app.example/settings/notifications"})
    }

    fn with(extra: serde_json::Value) -> serde_json::Value {
        let mut vars = common();
        if let (Some(map), Some(extra)) = (vars.as_object_mut(), extra.as_object()) {
            map.extend(extra.clone());
        }
        vars
    }

    fn sample(slug: &str) -> serde_json::Value {
        let info = SYSTEM.iter().find(|t| t.slug == slug).expect("slug");
        let mut vars = common();
        for name in info.variables {
            vars[*name] = json!(format!("<{name}>"));
        }
        vars
    }

    #[test]
    fn every_system_template_renders_with_its_declared_variables() {
        let templates = Templates::system();
        for info in SYSTEM {
            let (locale, r) = templates.render(info.slug, "en", &sample(info.slug)).expect(info.slug);
            assert_eq!(locale, "en");
            assert!(!r.subject.is_empty() && !r.subject.contains('\n'), "{}: {:?}", info.slug, r.subject);
            assert!(r.html.contains("<html") && r.text.ends_with('\n'), "{}", info.slug);
        }
    }

    #[test]
    fn html_is_escaped_and_text_is_not() {
        let vars = with(json!({"email": "bob@example.com", "link_url": "https://app.example/reset?token=a&b=1",
                               "expires_at": "2026-11-22 04:00 UTC", "recipient_name": "<script>x</script>"}));
        let (_, r) = Templates::system().render("password_reset", "en", &vars).expect("rendered");
        assert!(r.html.contains("&lt;script&gt;") && !r.html.contains("<script>"), "{}", r.html);
        assert!(r.html.contains("token=a&amp;b=1"));
        assert!(r.text.contains("<script>x</script>"));
        assert!(r.text.contains("https://app.example/reset?token=a&b=1"));
        assert_eq!(r.subject, "Reset your password");
    }

    #[test]
    fn verification_mail_says_which_address_change_it_confirms() {
        let t = Templates::system();
        let vars = |purpose: &str| {
            with(json!({"email": "new@example.com", "purpose": purpose, "link_url": "https://x/verify-email?token=t",
                        "expires_at": "tomorrow"}))
        };
        let (_, change) = t.render("email_verification", "en", &vars("change_email")).expect("change");
        assert_eq!(change.subject, "Confirm your new email address");
        assert!(change.html.contains("Confirm new address") && change.text.contains("current address stays"));
        let (_, verify) = t.render("email_verification", "en", &vars("verify_email")).expect("verify");
        assert_eq!(verify.subject, "Verify your email address");
        assert!(
            verify.html.contains("Verify email") && verify.html.contains("verify-email?token=t"),
            "{}",
            verify.html
        );
    }

    #[test]
    fn unknown_locales_fall_back_to_the_language_then_english() {
        let t = Templates::system();
        assert_eq!(t.resolve_locale("welcome", "en-GB"), "en");
        assert_eq!(t.resolve_locale("welcome", "es"), "en");
        assert_eq!(t.resolve_locale("welcome", ""), "en");
        let (locale, _) = t.render("welcome", "fr-CA", &sample("welcome")).expect("rendered");
        assert_eq!(locale, "en");
    }

    #[test]
    fn a_missing_variable_or_an_unknown_slug_is_an_error_not_a_panic() {
        let t = Templates::system();
        assert!(matches!(t.render("nope", "en", &common()), Err(TemplateError::UnknownSlug(_))));
        let err = t.render("password_reset", "en", &common()).expect_err("link_url is missing");
        assert!(matches!(err, TemplateError::Render { .. }), "{err:?}");
    }

    #[test]
    fn security_alerts_have_one_subject_per_kind() {
        let t = Templates::system();
        let subjects: Vec<String> =
            ["password_changed", "locked", "mfa_enabled", "mfa_disabled", "backup_codes_regenerated", "session_reuse"]
                .iter()
                .map(|alert| {
                    let mut vars = sample("security_alert");
                    vars["alert"] = json!(alert);
                    t.render("security_alert", "en", &vars).expect(alert).1.subject
                })
                .collect();
        let mut unique = subjects.clone();
        unique.dedup();
        assert_eq!(unique.len(), 6, "{subjects:?}");
        assert_eq!(subjects[0], "Your password was changed");
    }
}
