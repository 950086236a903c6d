//! Task schedules on EventBridge Scheduler and dead-letter redrive on SQS, against
//! moto: the shared conformance checks, plus what the scheduler function relies on
//! (the target input of a schedule is the firing payload it reads).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use aos_aws::{EventSchedules, TaskScheduleSettings};
use aos_kernel::model::AgentName;
use aos_kernel::ports::SystemClock;
use aos_kernel::schedules::{Schedule, ScheduleKind, ScheduledTask, Schedules, When};
use aos_kernel::testkit::conformance::{self as c, WallTime};
use aws_sdk_scheduler::types::ActionAfterCompletion;
use std::sync::Arc;

const MAX_RECEIVES: u32 = 2;
const WALL: WallTime = WallTime { slack_ms: 150 };
const FUNCTION: &str = "arn:aws:lambda:us-east-1:123456789012:function:aos-scheduler";
const ROLE: &str = "arn:aws:iam::123456789012:role/aos-task-schedules";
const DLQ: &str = "arn:aws:sqs:us-east-1:123456789012:aos-schedule-dlq";

/// Schedules in a fresh group of their own.
async fn schedules() -> (aos_aws::AwsBackend, EventSchedules) {
    let aws = common::backend(Arc::new(SystemClock), MAX_RECEIVES).await;
    let group = format!("aos-tasks-{}", ulid::Ulid::new().to_string().to_lowercase());
    aws.clients
        .scheduler
        .create_schedule_group()
        .name(&group)
        .send()
        .await
        .unwrap();
    let s = EventSchedules::new(
        aws.clients.scheduler.clone(),
        TaskScheduleSettings {
            group,
            target_arn: FUNCTION.into(),
            role_arn: ROLE.into(),
            dead_letter_arn: Some(DLQ.into()),
        },
    );
    (aws, s)
}

#[tokio::test]
async fn schedules_round_trip_per_tenant() {
    let (_aws, s) = schedules().await;
    c::schedules_round_trip_per_tenant(&s).await;
}

#[tokio::test]
async fn a_schedule_invokes_the_scheduler_function_with_its_firing_payload() {
    let (aws, s) = schedules().await;
    let every = Schedule::new(
        "acme",
        AgentName::new("weather").unwrap(),
        ScheduleKind::Wakeup,
        "check the forecast",
        When::parse("cron(0 7 ? * MON-FRI *)").unwrap(),
        "alice",
        1_700_000_000_000,
    );
    let once = Schedule::new(
        "acme",
        AgentName::new("primary").unwrap(),
        ScheduleKind::Task,
        "send the report",
        When::parse("2030-01-01T09:00:00Z").unwrap(),
        "alice",
        1_700_000_000_001,
    );
    s.create(&every).await.unwrap();
    s.create(&once).await.unwrap();

    let group = &s.settings().group;
    let got = aws
        .clients
        .scheduler
        .get_schedule()
        .group_name(group)
        .name(format!("acme.{}", every.id))
        .send()
        .await
        .unwrap();
    assert_eq!(got.schedule_expression(), Some("cron(0 7 ? * MON-FRI *)"));
    assert_eq!(got.schedule_expression_timezone(), Some("UTC"));
    let target = got.target().unwrap();
    assert_eq!(target.arn(), FUNCTION);
    assert_eq!(target.role_arn(), ROLE);
    assert_eq!(
        target.dead_letter_config().and_then(|d| d.arn()),
        Some(DLQ),
        "failed firings go to the schedule DLQ"
    );
    let input: serde_json::Value = serde_json::from_str(target.input().unwrap()).unwrap();
    assert_eq!(input["time"], "<aws.scheduler.scheduled-time>");
    assert_eq!(input["resources"][0], "<aws.scheduler.schedule-arn>");
    let detail: ScheduledTask = serde_json::from_value(input["detail"].clone()).unwrap();
    assert_eq!(
        (detail.agent.as_str(), detail.tenant.as_str()),
        ("weather", "acme")
    );
    assert_eq!(detail.task_input(), "Scheduled wake-up: check the forecast");
    assert_eq!(detail.schedule.as_deref(), Some(every.id.as_str()));

    let got = aws
        .clients
        .scheduler
        .get_schedule()
        .group_name(group)
        .name(format!("acme.{}", once.id))
        .send()
        .await
        .unwrap();
    assert_eq!(got.schedule_expression(), Some("at(2030-01-01T09:00:00)"));
    assert_eq!(
        got.action_after_completion(),
        Some(&ActionAfterCompletion::Delete),
        "a one-time schedule deletes itself after firing"
    );

    assert_eq!(s.list("acme").await.unwrap(), vec![every.clone(), once]);
    assert!(s.list("acme-corp").await.unwrap().is_empty());
    assert!(s.delete("acme", &every.id).await.unwrap());
    assert_eq!(s.list("acme").await.unwrap().len(), 1);
}

#[tokio::test]
async fn an_input_too_large_for_the_service_is_rejected_up_front() {
    let (_aws, s) = schedules().await;
    let big = Schedule::new(
        "acme",
        AgentName::new("primary").unwrap(),
        ScheduleKind::Task,
        "x".repeat(9_000),
        When::parse("rate(1 day)").unwrap(),
        "alice",
        1_700_000_000_000,
    );
    match s.create(&big).await {
        Err(aos_kernel::ports::PortError::Rejected(why)) => {
            assert!(why.contains("too large"), "{why}")
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
}

#[tokio::test]
async fn redrive_puts_dead_letters_back() {
    let aws = common::backend(Arc::new(SystemClock), MAX_RECEIVES).await;
    c::redrive_puts_dead_letters_back(&aws.queues, &aws.queues, &WALL, MAX_RECEIVES).await;
}
