//! What can go wrong in identity's domain, and the one table from reason to gRPC code.
//!
//! Handlers return [`trellis_kit::Error`]; domain code returns [`IdentityError`] where the reason
//! is identity's own, and `?` converts through [`REASONS`]. Validation errors carry every field
//! violation; when all of them share one specific reason (a password that is too short), that
//! reason becomes the `ErrorInfo` reason, otherwise it is `VALIDATION_ERROR`. Each field with a
//! specific reason is also named in the `ErrorInfo` metadata (`password: PASSWORD_TOO_SHORT`).

use tonic::Code;
use trellis_kit::Error;

/// Every reason identity returns, with its gRPC code. The gateway's HTTP status and the API docs
/// derive from this table.
pub const REASONS: &[(&str, Code)] = &[
    ("VALIDATION_ERROR", Code::InvalidArgument),
    ("PASSWORD_TOO_SHORT", Code::InvalidArgument),
    ("PASSWORD_TOO_LONG", Code::InvalidArgument),
    ("PASSWORD_TOO_COMMON", Code::InvalidArgument),
    ("PASSWORD_CONTAINS_EMAIL", Code::InvalidArgument),
    ("PASSWORD_UNCHANGED", Code::InvalidArgument),
    ("INVALID_CREDENTIALS", Code::Unauthenticated),
    ("REFRESH_TOKEN_INVALID", Code::Unauthenticated),
    ("REFRESH_TOKEN_REUSED", Code::Unauthenticated),
    ("MFA_TOKEN_INVALID", Code::Unauthenticated),
    ("MFA_CODE_INVALID", Code::Unauthenticated),
    ("MFA_ALREADY_ENABLED", Code::FailedPrecondition),
    ("MFA_NOT_ENROLLED", Code::FailedPrecondition),
    ("MFA_NOT_ENABLED", Code::FailedPrecondition),
    ("USER_NOT_FOUND", Code::NotFound),
    ("OWNERSHIP_TRANSFER_REQUIRED", Code::FailedPrecondition),
    ("EMAIL_TAKEN", Code::AlreadyExists),
    ("ALREADY_MEMBER", Code::AlreadyExists),
    ("INVITATION_PENDING", Code::AlreadyExists),
    ("INVITATION_NOT_FOUND", Code::NotFound),
    ("INVITATION_EXPIRED", Code::FailedPrecondition),
    ("INVITATION_REVOKED", Code::FailedPrecondition),
    ("INVITATION_ALREADY_USED", Code::FailedPrecondition),
    ("INVITATION_EMAIL_MISMATCH", Code::FailedPrecondition),
    ("MEMBER_LIMIT_REACHED", Code::FailedPrecondition),
    ("PERMISSION_DENIED", Code::PermissionDenied),
    ("ORGANIZATION_NOT_FOUND", Code::NotFound),
    ("MEMBER_NOT_FOUND", Code::NotFound),
    ("SLUG_TAKEN", Code::AlreadyExists),
    ("ORG_NOT_ACTIVE", Code::FailedPrecondition),
    ("ORG_LIMIT_REACHED", Code::FailedPrecondition),
    ("OWNER_IMMUTABLE", Code::FailedPrecondition),
    ("EMAIL_NOT_VERIFIED", Code::FailedPrecondition),
    ("CONFIRMATION_MISMATCH", Code::FailedPrecondition),
    ("LAST_ORGANIZATION", Code::FailedPrecondition),
    ("TEAM_NOT_FOUND", Code::NotFound),
    ("TEAM_MEMBER_NOT_FOUND", Code::NotFound),
    ("TEAM_NAME_TAKEN", Code::AlreadyExists),
    ("TEAM_DEPTH_EXCEEDED", Code::FailedPrecondition),
    ("TEAM_CYCLE", Code::FailedPrecondition),
    ("TEAM_FULL", Code::FailedPrecondition),
    // Settings (ADR 0017).
    ("SETTING_UNKNOWN", Code::InvalidArgument),
    ("SETTINGS_LIMIT_REACHED", Code::FailedPrecondition),
    ("SETTING_NAMESPACE_OWNED", Code::FailedPrecondition),
    // Feature flags.
    ("FLAG_EXISTS", Code::AlreadyExists),
    ("FLAG_NOT_FOUND", Code::NotFound),
    // Onboarding.
    ("UNKNOWN_STEP", Code::NotFound),
    ("REQUIRED_STEPS_OPEN", Code::FailedPrecondition),
];

/// The gRPC code of a reason in [`REASONS`] (INTERNAL for a reason missing from the table, which
/// a unit test rules out).
pub fn code_of(reason: &str) -> Code {
    REASONS.iter().find(|(r, _)| *r == reason).map_or(Code::Internal, |(_, code)| *code)
}

/// A field that failed validation, with a stable reason when the field has one of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The request field, e.g. `password` or `team_ids[2]`.
    pub field: String,
    /// `VALIDATION_ERROR`, or a specific reason such as `PASSWORD_TOO_COMMON`.
    pub reason: &'static str,
    /// What is wrong, for a human.
    pub description: String,
}

impl Violation {
    /// A violation with the generic reason.
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self { field: field.into(), reason: "VALIDATION_ERROR", description: description.into() }
    }

    /// A violation with a specific reason.
    pub fn with_reason(field: impl Into<String>, reason: &'static str, description: impl Into<String>) -> Self {
        Self { field: field.into(), reason, description: description.into() }
    }
}

/// Identity's domain errors.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// One or more request fields are invalid.
    #[error("request validation failed")]
    Invalid(Vec<Violation>),
    /// Any failed sign-in; deliberately says nothing about which part was wrong.
    #[error("Invalid email or password")]
    InvalidCredentials,
    /// The refresh token is unknown, expired, or its session has ended.
    #[error("The refresh token is invalid or expired")]
    RefreshTokenInvalid,
    /// A rotated refresh token was presented again; the session has been revoked.
    #[error("The refresh token was already used; the session has been signed out")]
    RefreshTokenReused,
    /// The mfa_token is unknown, expired, used up, or its account is locked.
    #[error("The sign-in has expired; sign in again")]
    MfaTokenInvalid,
    /// A wrong second-factor code at sign-in (also answers INVALID_ARGUMENT with the field
    /// `code` where the caller is already signed in, see [`mfa_code_invalid`]).
    #[error("The code is invalid")]
    MfaCodeInvalid,
    /// MFA is on already.
    #[error("Two-factor authentication is already enabled")]
    MfaAlreadyEnabled,
    /// There is no pending enrolment to confirm.
    #[error("Start two-factor enrolment first")]
    MfaNotEnrolled,
    /// MFA is off.
    #[error("Two-factor authentication is not enabled")]
    MfaNotEnabled,
    /// An account with this email exists.
    #[error("An account with this email already exists")]
    EmailTaken,
    /// The invitee already belongs to the organization.
    #[error("This person is already a member of the organization")]
    AlreadyMember,
    /// A pending invitation for this email exists in the organization.
    #[error("A pending invitation for this email already exists")]
    InvitationPending,
    /// No invitation has this token.
    #[error("The invitation does not exist")]
    InvitationNotFound,
    /// The invitation is past its expiry.
    #[error("The invitation has expired")]
    InvitationExpired,
    /// The invitation was revoked.
    #[error("The invitation was revoked")]
    InvitationRevoked,
    /// The invitation was already accepted.
    #[error("The invitation was already used")]
    InvitationAlreadyUsed,
    /// The invitation was sent to another address.
    #[error("The invitation was sent to another email address")]
    InvitationEmailMismatch,
    /// Active members plus pending invitations reached the organization's limit.
    #[error("The organization has reached its member limit")]
    MemberLimitReached,
    /// The caller's role does not allow the action.
    #[error("{0}")]
    PermissionDenied(&'static str),
    /// No live organization with this id where the caller is a member.
    #[error("The organization does not exist")]
    OrganizationNotFound,
    /// The user is not a member of the organization.
    #[error("The member does not exist")]
    MemberNotFound,
    /// Another organization has this slug.
    #[error("This slug is taken")]
    SlugTaken,
    /// A write to an organization other than the token's active one.
    #[error("Switch to this organization first")]
    OrgNotActive,
    /// The user is active in as many organizations as allowed.
    #[error("You belong to the maximum number of organizations")]
    OrgLimitReached,
    /// The owner's role cannot be changed, nor the owner removed, except by a transfer.
    #[error("The owner's role changes only through an ownership transfer")]
    OwnerImmutable,
    /// The user's email is not verified.
    #[error("The email address is not verified")]
    EmailNotVerified,
    /// The typed confirmation does not match.
    #[error("The confirmation does not match")]
    ConfirmationMismatch,
    /// The organization is the user's last one.
    #[error("Your last organization cannot be deleted")]
    LastOrganization,
    /// No live team with this id that the caller may view.
    #[error("The team does not exist")]
    TeamNotFound,
    /// The user is not a direct member of the team.
    #[error("The team member does not exist")]
    TeamMemberNotFound,
    /// Another live team of the org has this name.
    #[error("A team with this name exists")]
    TeamNameTaken,
    /// Teams nest at most 5 levels.
    #[error("Teams nest at most 5 levels deep")]
    TeamDepthExceeded,
    /// The team would become its own ancestor.
    #[error("A team cannot be placed under itself or one of its descendants")]
    TeamCycle,
    /// The team has as many direct members as allowed.
    #[error("The team is full")]
    TeamFull,
}

impl IdentityError {
    /// The stable reason (`ErrorInfo.reason`).
    pub fn reason(&self) -> &'static str {
        match self {
            IdentityError::Invalid(violations) => combined_reason(violations),
            IdentityError::InvalidCredentials => "INVALID_CREDENTIALS",
            IdentityError::RefreshTokenInvalid => "REFRESH_TOKEN_INVALID",
            IdentityError::RefreshTokenReused => "REFRESH_TOKEN_REUSED",
            IdentityError::MfaTokenInvalid => "MFA_TOKEN_INVALID",
            IdentityError::MfaCodeInvalid => "MFA_CODE_INVALID",
            IdentityError::MfaAlreadyEnabled => "MFA_ALREADY_ENABLED",
            IdentityError::MfaNotEnrolled => "MFA_NOT_ENROLLED",
            IdentityError::MfaNotEnabled => "MFA_NOT_ENABLED",
            IdentityError::EmailTaken => "EMAIL_TAKEN",
            IdentityError::AlreadyMember => "ALREADY_MEMBER",
            IdentityError::InvitationPending => "INVITATION_PENDING",
            IdentityError::InvitationNotFound => "INVITATION_NOT_FOUND",
            IdentityError::InvitationExpired => "INVITATION_EXPIRED",
            IdentityError::InvitationRevoked => "INVITATION_REVOKED",
            IdentityError::InvitationAlreadyUsed => "INVITATION_ALREADY_USED",
            IdentityError::InvitationEmailMismatch => "INVITATION_EMAIL_MISMATCH",
            IdentityError::MemberLimitReached => "MEMBER_LIMIT_REACHED",
            IdentityError::PermissionDenied(_) => "PERMISSION_DENIED",
            IdentityError::OrganizationNotFound => "ORGANIZATION_NOT_FOUND",
            IdentityError::MemberNotFound => "MEMBER_NOT_FOUND",
            IdentityError::SlugTaken => "SLUG_TAKEN",
            IdentityError::OrgNotActive => "ORG_NOT_ACTIVE",
            IdentityError::OrgLimitReached => "ORG_LIMIT_REACHED",
            IdentityError::OwnerImmutable => "OWNER_IMMUTABLE",
            IdentityError::EmailNotVerified => "EMAIL_NOT_VERIFIED",
            IdentityError::ConfirmationMismatch => "CONFIRMATION_MISMATCH",
            IdentityError::LastOrganization => "LAST_ORGANIZATION",
            IdentityError::TeamNotFound => "TEAM_NOT_FOUND",
            IdentityError::TeamMemberNotFound => "TEAM_MEMBER_NOT_FOUND",
            IdentityError::TeamNameTaken => "TEAM_NAME_TAKEN",
            IdentityError::TeamDepthExceeded => "TEAM_DEPTH_EXCEEDED",
            IdentityError::TeamCycle => "TEAM_CYCLE",
            IdentityError::TeamFull => "TEAM_FULL",
        }
    }
}

/// A wrong code from a signed-in caller (Verify, RegenerateBackupCodes, Disable): INVALID_ARGUMENT
/// MFA_CODE_INVALID with the field `code`. At sign-in the same reason is UNAUTHENTICATED
/// ([`IdentityError::MfaCodeInvalid`]), since the code is the credential there.
pub fn mfa_code_invalid() -> Error {
    Error::invalid_argument("MFA_CODE_INVALID", "The code is invalid")
        .with_field("code", "is not a current or unused code")
}

/// The reason of a set of violations: their common specific reason, else `VALIDATION_ERROR`.
fn combined_reason(violations: &[Violation]) -> &'static str {
    match violations.first() {
        Some(first) if violations.iter().all(|v| v.reason == first.reason) => first.reason,
        _ => "VALIDATION_ERROR",
    }
}

impl From<IdentityError> for Error {
    fn from(e: IdentityError) -> Self {
        let reason = e.reason();
        let code = code_of(reason);
        match e {
            IdentityError::Invalid(violations) => {
                let mut error = Error::new(code, reason, "Request validation failed");
                for v in violations {
                    if v.reason != "VALIDATION_ERROR" {
                        error = error.with_metadata(v.field.clone(), v.reason);
                    }
                    error = error.with_field(v.field, v.description);
                }
                error
            }
            other => Error::new(code, reason, other.to_string()),
        }
    }
}

/// Collects violations, then fails with all of them at once.
#[derive(Debug, Default)]
pub struct Violations(Vec<Violation>);

impl Violations {
    /// Records a violation.
    pub fn push(&mut self, violation: Violation) {
        self.0.push(violation);
    }

    /// Records a generic violation of `field` when `description` is `Some`.
    pub fn check(&mut self, field: &str, description: Option<&str>) {
        if let Some(description) = description {
            self.0.push(Violation::new(field, description));
        }
    }

    /// `Ok(())`, or [`IdentityError::Invalid`] with every violation.
    pub fn finish(self) -> Result<(), IdentityError> {
        if self.0.is_empty() { Ok(()) } else { Err(IdentityError::Invalid(self.0)) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_is_in_the_table() {
        let all = [
            IdentityError::Invalid(vec![Violation::new("x", "bad")]),
            IdentityError::InvalidCredentials,
            IdentityError::RefreshTokenInvalid,
            IdentityError::RefreshTokenReused,
            IdentityError::MfaTokenInvalid,
            IdentityError::MfaCodeInvalid,
            IdentityError::MfaAlreadyEnabled,
            IdentityError::MfaNotEnrolled,
            IdentityError::MfaNotEnabled,
            IdentityError::EmailTaken,
            IdentityError::AlreadyMember,
            IdentityError::InvitationPending,
            IdentityError::InvitationNotFound,
            IdentityError::InvitationExpired,
            IdentityError::InvitationRevoked,
            IdentityError::InvitationAlreadyUsed,
            IdentityError::InvitationEmailMismatch,
            IdentityError::MemberLimitReached,
            IdentityError::PermissionDenied("no"),
            IdentityError::OrganizationNotFound,
            IdentityError::MemberNotFound,
            IdentityError::SlugTaken,
            IdentityError::OrgNotActive,
            IdentityError::OrgLimitReached,
            IdentityError::OwnerImmutable,
            IdentityError::EmailNotVerified,
            IdentityError::ConfirmationMismatch,
            IdentityError::LastOrganization,
            IdentityError::TeamNotFound,
            IdentityError::TeamMemberNotFound,
            IdentityError::TeamNameTaken,
            IdentityError::TeamDepthExceeded,
            IdentityError::TeamCycle,
            IdentityError::TeamFull,
        ];
        for e in all {
            assert!(REASONS.iter().any(|(r, _)| *r == e.reason()), "{} missing from REASONS", e.reason());
        }
        for reason in ["PASSWORD_TOO_SHORT", "PASSWORD_TOO_LONG", "PASSWORD_TOO_COMMON", "PASSWORD_CONTAINS_EMAIL"] {
            assert_eq!(code_of(reason), Code::InvalidArgument);
        }
    }

    #[test]
    fn a_single_specific_violation_names_its_reason() {
        let e: Error =
            IdentityError::Invalid(vec![Violation::with_reason("password", "PASSWORD_TOO_COMMON", "is too common")])
                .into();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert_eq!(e.reason(), "PASSWORD_TOO_COMMON");
        assert_eq!(e.violations()[0].field, "password");
    }

    #[test]
    fn mixed_violations_are_a_validation_error() {
        let e: Error = IdentityError::Invalid(vec![
            Violation::new("email", "is not an email address"),
            Violation::with_reason("password", "PASSWORD_TOO_SHORT", "too short"),
        ])
        .into();
        assert_eq!(e.reason(), "VALIDATION_ERROR");
        assert_eq!(e.violations().len(), 2);
    }

    #[test]
    fn credentials_errors_say_nothing_specific() {
        let e: Error = IdentityError::InvalidCredentials.into();
        assert_eq!(e.code(), Code::Unauthenticated);
        assert_eq!(e.message(), "Invalid email or password");
    }
}
