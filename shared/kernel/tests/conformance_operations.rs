//! The conformance checks for schedules and dead-letter redrive against the
//! in-memory doubles.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use aos_kernel::ports::Clock;
use aos_kernel::testkit::conformance as c;
use aos_kernel::testkit::{ManualClock, MemQueues, MemSchedules};
use std::sync::Arc;

#[tokio::test]
async fn schedules_round_trip_per_tenant() {
    c::schedules_round_trip_per_tenant(&MemSchedules::default()).await;
}

#[tokio::test]
async fn redrive_puts_dead_letters_back() {
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let q = MemQueues::new(clock.clone() as Arc<dyn Clock>, 3);
    c::redrive_puts_dead_letters_back(&q, &q, &*clock, 3).await;
}
