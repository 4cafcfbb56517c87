//! ExportMyData (spec flow 15): everything identity holds about the caller, as one document.
//!
//! The account and its sessions are global rows. Memberships are found through the caller's own
//! `app.user_id` policy; each organization's part (teams, user-scope settings, onboarding,
//! invitations sent, API keys created) is then read under that organization's tenant policy, all
//! in one read-only transaction so the document is consistent. Nothing secret is selected: no
//! password hash, TOTP secret, backup code, token hash or key material, and not even the API key
//! prefix.

use std::time::Duration;

use chrono::Utc;
use trellis_kit::{Error, RequestContext, Result};
use trellis_proto::trellis::identity::v1 as pb;

use crate::Identity;
use crate::events::timestamp;
use crate::organization::Role;
use crate::store::{self, export as q, users as users_store};

/// Exports per user per day.
pub const EXPORTS_PER_DAY: u32 = 5;

fn org_role(role: &str) -> i32 {
    Role::parse(role).map_or(pb::OrgRole::Unspecified, Role::to_proto).into()
}

fn team_role(role: &str) -> i32 {
    if role == "maintainer" { pb::TeamRole::Maintainer } else { pb::TeamRole::Member }.into()
}

impl Identity {
    /// ExportMyData: the caller's document; at most [`EXPORTS_PER_DAY`] per user per day.
    pub async fn export_my_data(&self, ctx: &RequestContext) -> Result<pb::ExportMyDataResponse> {
        let user_id = ctx.user_id()?;
        self.limiter.hit(&format!("export:user:{user_id}"), EXPORTS_PER_DAY, Duration::from_secs(86_400)).await?;

        let mut tx = self.db.tx().await?;
        sqlx::query("set transaction isolation level repeatable read, read only").execute(&mut *tx).await?;
        let account = q::account(&mut tx, user_id)
            .await?
            .ok_or_else(|| Error::unauthenticated("UNAUTHENTICATED", "Authentication required"))?;
        let sessions = q::sessions(&mut tx, user_id).await?;
        store::scope_to_user(&mut tx, user_id).await?;
        let mut memberships = Vec::new();
        for m in q::memberships(&mut tx, user_id).await? {
            users_store::scope_to_org(&mut tx, m.org_id).await?;
            let Some(org) = q::organization(&mut tx, m.org_id, user_id).await? else { continue };
            let (steps, dismissed_at) = q::onboarding(&mut tx, user_id).await?;
            memberships.push(pb::ExportedMembership {
                organization_id: m.org_id.to_string(),
                organization_name: org.name,
                organization_slug: org.slug,
                personal: org.personal,
                role: org_role(&m.role),
                status: m.status,
                joined_at: Some(timestamp(m.joined_at)),
                teams: q::teams(&mut tx, user_id)
                    .await?
                    .into_iter()
                    .map(|t| pb::ExportedTeam {
                        id: t.id.to_string(),
                        name: t.name,
                        role: team_role(&t.role),
                        added_at: Some(timestamp(t.added_at)),
                    })
                    .collect(),
                settings: q::settings(&mut tx, user_id)
                    .await?
                    .into_iter()
                    .map(|s| pb::ExportedSetting {
                        namespace: s.namespace,
                        key: s.key,
                        value: Some(trellis_kit::json::to_proto(&s.value)),
                        updated_at: Some(timestamp(s.updated_at)),
                    })
                    .collect(),
                onboarding_completed: steps
                    .into_iter()
                    .map(|s| pb::ExportedOnboardingStep {
                        module: s.module,
                        step: s.step,
                        completed_at: Some(timestamp(s.completed_at)),
                    })
                    .collect(),
                onboarding_dismissed_at: dismissed_at.map(timestamp),
                invitations_sent: q::invitations_sent(&mut tx, user_id)
                    .await?
                    .into_iter()
                    .map(|i| pb::ExportedInvitation {
                        id: i.id.to_string(),
                        email: i.email,
                        role: org_role(&i.role),
                        status: i.status,
                        created_at: Some(timestamp(i.created_at)),
                        expires_at: Some(timestamp(i.expires_at)),
                    })
                    .collect(),
                api_keys: q::api_keys_created(&mut tx, user_id)
                    .await?
                    .into_iter()
                    .map(|k| pb::ExportedApiKey {
                        id: k.id.to_string(),
                        name: k.name,
                        scopes: k.scopes,
                        role: org_role(&k.role),
                        created_at: Some(timestamp(k.created_at)),
                        expires_at: Some(timestamp(k.expires_at)),
                        last_used_at: k.last_used_at.map(timestamp),
                        revoked_at: k.revoked_at.map(timestamp),
                    })
                    .collect(),
                organization_deleted_at: org.deleted_at.map(timestamp),
            });
        }
        tx.commit().await?;

        Ok(pb::ExportMyDataResponse {
            exported_at: Some(timestamp(Utc::now())),
            profile: Some(pb::ExportedProfile {
                id: account.id.to_string(),
                email: account.email,
                email_verified_at: account.email_verified_at.map(timestamp),
                first_name: account.first_name,
                last_name: account.last_name,
                timezone: account.timezone,
                locale: account.locale,
                status: account.status,
                created_at: Some(timestamp(account.created_at)),
                last_login_at: account.last_login_at.map(timestamp),
                login_count: account.login_count,
                has_password: account.has_password,
                password_changed_at: account.password_changed_at.map(timestamp),
                has_avatar: account.has_avatar,
                deactivated_at: account.deactivated_at.map(timestamp),
                erase_after: account.erase_after.map(timestamp),
            }),
            memberships,
            sessions: sessions
                .into_iter()
                .map(|s| pb::ExportedSession {
                    session: Some(pb::Session {
                        id: s.session.id.to_string(),
                        created_at: Some(timestamp(s.session.created_at)),
                        last_seen_at: Some(timestamp(s.session.last_seen_at)),
                        ip: s.session.ip.unwrap_or_default(),
                        user_agent: s.session.user_agent.unwrap_or_default(),
                        amr: s.session.amr,
                        active_org_id: s.session.active_org_id.map(|o| o.to_string()).unwrap_or_default(),
                        current: false,
                    }),
                    expires_at: Some(timestamp(s.expires_at)),
                    revoked_at: s.revoked_at.map(timestamp),
                    revoke_reason: s.revoke_reason.unwrap_or_default(),
                })
                .collect(),
            mfa: Some(pb::ExportedMfa {
                enabled: account.mfa_enabled,
                confirmed_at: account.mfa_confirmed_at.map(timestamp),
                backup_codes_remaining: i32::try_from(account.backup_codes_remaining).unwrap_or(i32::MAX),
            }),
        })
    }
}
