//! One moto server per test binary (installed and started on first use), and a fresh
//! set of AWS resources per test so tests never see each other's data.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use aos_aws::emulator::Moto;
use aos_aws::{AwsBackend, AwsClients, AwsSettings, QueueSettings, emulator_sdk_config, provision};
use aos_kernel::ports::Clock;
use std::sync::Arc;

/// The emulator's endpoint, starting it on first use.
pub fn endpoint() -> String {
    Moto::shared_endpoint()
        .unwrap_or_else(|e| panic!("{e}"))
        .to_string()
}

/// A backend on its own table, bucket and schedule group (queues are per agent, and
/// the checks make their own agent names), created on the emulator.
pub async fn backend(clock: Arc<dyn Clock>, max_receives: u32) -> AwsBackend {
    let config = emulator_sdk_config(&endpoint()).await;
    let id = ulid::Ulid::new().to_string().to_lowercase();
    let settings = AwsSettings {
        table: format!("aos-{id}"),
        bucket: format!("aos-{id}"),
        schedule_group: format!("aos-{id}"),
        queues: QueueSettings {
            create_missing: true,
            max_receives,
            ..QueueSettings::default()
        },
        ..AwsSettings::default()
    };
    let aws = AwsBackend::new(AwsClients::new(&config), settings, clock);
    provision(&aws, &[]).await.unwrap();
    aws
}
