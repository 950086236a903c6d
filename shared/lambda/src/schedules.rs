//! Task schedules for the api function: the `Schedules` port on EventBridge
//! Scheduler, when the function is configured to manage them. The rule: without
//! `AOS_SCHEDULER_FUNCTION_ARN` there is no port (the API answers that schedules are
//! not available) rather than one that creates schedules aimed at nothing.

use crate::Config;
use aos_aws::AwsBackend;
use aos_kernel::schedules::Schedules;
use std::sync::Arc;

/// The schedules port the API hands out, or `None` when the function has no
/// scheduler function to aim schedules at.
pub fn task_schedules(config: &Config, aws: &AwsBackend) -> Option<Arc<dyn Schedules>> {
    config
        .task_schedules
        .then(|| Arc::new(aws.schedules.clone()) as Arc<dyn Schedules>)
}
