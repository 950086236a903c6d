//! # aos-kernel
//!
//! The agent wake cycle of AOS as pure logic over ports. This crate never touches the
//! AWS SDK, the Lambda runtime or the environment, so it builds in seconds and its
//! tests run in milliseconds against in-memory ports.
//!
//! Module map:
//! - [`ids`]: time-sortable ULIDs and ids derived deterministically from a parent.
//! - [`model`]: envelopes, agent definitions, sessions, tasks, timeline events.
//! - [`llm`]: the model port (provider-neutral tool-calling chat).
//! - [`tools`]: synchronous tools and their registry.
//! - [`ports`]: the storage, queue, blob, scheduler and clock traits.
//! - [`catalog`]: the checked set of agents.
//! - [`kernel`]: the wake cycle itself (dedupe, load, guard, think, commit, flush).
//! - [`offline`]: a deterministic model that needs no API key.
//! - [`journal`]: recorded model responses and tool results, so no step is paid twice.
//! - [`approvals`]: human approval of risky tool calls.
//! - [`audit`]: the hash-chained audit log and its verification.
//! - [`route`]: routes to providers, fallback chains and circuit breakers.
//! - [`prices`]: the editable price table every model call is priced from.
//! - [`schedules`]: tasks and wake-ups on a timetable (cron, rate, one-time) and their port.
//! - `testkit` (feature): in-memory ports, a scripted model, the conformance suite.

pub mod approvals;
pub mod audit;
pub mod catalog;
pub mod ids;
pub mod journal;
pub mod kernel;
pub mod llm;
pub mod model;
pub mod offline;
pub mod ports;
pub mod prices;
pub mod route;
pub mod schedules;
pub mod tools;

#[cfg(feature = "testkit")]
pub mod testkit;

pub use catalog::Catalog;
pub use ids::{EnvelopeId, EventId, TaskId};
pub use kernel::{
    Kernel, KernelConfig, Ports, Retry, Submission, SubmitError, Submitted, SweepReport,
    WakeOutcome,
};
pub use model::{
    AgentDef, AgentName, DEFAULT_TENANT, Envelope, Event, EventKind, Kind, SessionId, Task,
    TaskStatus,
};
pub use ports::TaskQuery;
pub use schedules::{Schedule, ScheduleError, ScheduleKind, Schedules, When};
