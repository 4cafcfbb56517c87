//! OnboardingService (spec rule 31, flow 18): registered steps per subject, completion by the
//! caller or by an event, idempotent completion, dismissal only with the required steps done,
//! and modules replacing their steps.

use std::time::Duration;

use tonic::Code;
use tonic::transport::Channel;
use trellis_kit::testing::wait_until;
use trellis_proto::trellis::identity::v1 as pb;
use trellis_proto::trellis::identity::v1::onboarding_service_client::OnboardingServiceClient;
use trellis_proto::trellis::identity::v1::team_service_client::TeamServiceClient;

use crate::common::{bearer, failure, violated_fields};
use crate::organizations::{Orgs, Signed};
use crate::settings::service_token;

async fn client(t: &Orgs) -> OnboardingServiceClient<Channel> {
    OnboardingServiceClient::new(t.cell.channel("identity").await)
}

async fn status(c: &OnboardingServiceClient<Channel>, who: &Signed) -> pb::GetOnboardingStatusResponse {
    c.clone()
        .get_onboarding_status(bearer(pb::GetOnboardingStatusRequest {}, &who.token))
        .await
        .expect("status")
        .into_inner()
}

fn step<'a>(s: &'a pb::GetOnboardingStatusResponse, id: &str) -> Option<&'a pb::OnboardingStep> {
    s.steps.iter().find(|x| x.id == id)
}

#[tokio::test]
async fn a_team_created_completes_the_first_step_and_dismissal_waits_for_required_steps() {
    let t = Orgs::start().await;
    let c = client(&t).await;
    let owner = t.register("owner@example.com", "Olive").await;

    let fresh = status(&c, &owner).await;
    let first = step(&fresh, "identity.create_first_team").expect("registered step");
    assert!(!first.completed && first.required);
    assert!(!fresh.all_required_completed && !fresh.dismissed);
    let refused = c.clone().dismiss_onboarding(bearer(pb::DismissOnboardingRequest {}, &owner.token)).await;
    assert_eq!(failure(refused), (Code::FailedPrecondition, "REQUIRED_STEPS_OPEN".into()));

    // Creating a team completes the org-scope step through identity.team.created.
    let teams = TeamServiceClient::new(t.cell.channel("identity").await);
    let team = pb::CreateTeamRequest { name: "Eng".into(), ..Default::default() };
    teams.clone().create_team(bearer(team, &owner.token)).await.expect("team");
    wait_until(Duration::from_secs(10), || async {
        step(&status(&c, &owner).await, "identity.create_first_team").is_some_and(|s| s.completed)
    })
    .await;
    let done = status(&c, &owner).await;
    assert!(done.all_required_completed);
    let completed_at = step(&done, "identity.create_first_team").and_then(|s| s.completed_at);

    // Completing again keeps the first time (and publishes nothing new).
    let again = pb::CompleteOnboardingStepRequest { step: "create_first_team".into() };
    let again = c.clone().complete_onboarding_step(bearer(again, &owner.token)).await.expect("again").into_inner();
    assert_eq!(again.step.expect("step").completed_at, completed_at);
    let unknown = pb::CompleteOnboardingStepRequest { step: "identity.nope".into() };
    let unknown = c.clone().complete_onboarding_step(bearer(unknown, &owner.token)).await;
    assert_eq!(failure(unknown), (Code::NotFound, "UNKNOWN_STEP".into()));
    let events: Vec<pb::OnboardingStepCompleted> = t.payloads("identity.onboarding.step_completed").await;
    assert_eq!(events.iter().filter(|e| e.step == "create_first_team").count(), 1);
    assert_eq!(events[0].subject_id, owner.org.to_string(), "an org-scope step's subject is the org");

    let dismissed = c.clone().dismiss_onboarding(bearer(pb::DismissOnboardingRequest {}, &owner.token)).await;
    assert!(dismissed.expect("dismiss").into_inner().status.expect("status").dismissed);
    assert!(status(&c, &owner).await.dismissed);

    // Another org starts from scratch.
    let other = t.register("other@example.com", "Otto").await;
    let theirs = status(&c, &other).await;
    assert!(!step(&theirs, "identity.create_first_team").expect("step").completed && !theirs.dismissed);
}

#[tokio::test]
async fn modules_register_user_steps_and_retire_old_ones_keeping_progress() {
    let t = Orgs::start().await;
    let c = client(&t).await;
    let user = t.register("user@example.com", "Una").await;
    let tasks = service_token(&t, "tasks");
    let define = |step: &str, required: bool| pb::OnboardingStepDefinition {
        step: step.into(),
        title: format!("Do {step}"),
        required,
        position: 5,
        scope: pb::OnboardingScope::User.into(),
        completed_by_event: "tasks.task.created".into(),
    };
    let register =
        pb::RegisterOnboardingStepsRequest { steps: vec![define("create_task", false), define("set_due", false)] };
    let by_user = c.clone().register_onboarding_steps(bearer(register.clone(), &user.token)).await;
    assert_eq!(failure(by_user), (Code::PermissionDenied, "SERVICE_PRINCIPAL_REQUIRED".into()));
    c.clone().register_onboarding_steps(bearer(register, &tasks)).await.expect("register");
    let listed = status(&c, &user).await;
    assert_eq!(listed.steps.first().map(|s| s.id.as_str()), Some("tasks.create_task"), "by position");

    let complete = pb::CompleteOnboardingStepRequest { step: "tasks.set_due".into() };
    c.clone().complete_onboarding_step(bearer(complete, &user.token)).await.expect("complete");
    // The module stops registering set_due: hidden, but the progress stays.
    let register = pb::RegisterOnboardingStepsRequest { steps: vec![define("create_task", false)] };
    c.clone().register_onboarding_steps(bearer(register.clone(), &tasks)).await.expect("re-register");
    assert!(step(&status(&c, &user).await, "tasks.set_due").is_none());
    let kept: i64 = sqlx::query_scalar("select count(*) from identity.onboarding_progress where step = 'set_due'")
        .fetch_one(&t.cell.owner_pool().await)
        .await
        .expect("progress");
    assert_eq!(kept, 1);

    let bad = pb::RegisterOnboardingStepsRequest {
        steps: vec![pb::OnboardingStepDefinition {
            step: "X".into(),
            completed_by_event: "tasks".into(),
            ..define("x", false)
        }],
    };
    let refused = c.clone().register_onboarding_steps(bearer(bad, &tasks)).await.expect_err("invalid");
    let mut fields = violated_fields(&refused);
    fields.sort();
    assert_eq!(fields, vec!["steps[0].completed_by_event", "steps[0].step"]);
}
