//! # aos-local
//!
//! The embedded adapters of AOS: every storage port the kernel needs, kept in one
//! durable SQLite file, so `aos` runs on a laptop or in CI with no AWS account and no
//! other process. The same conformance suite (`aos_kernel::testkit::conformance`) runs
//! against these adapters and against the in-memory doubles, so the embedded runtime
//! behaves as the kernel's tests assume.
//!
//! Rule: each port call is one short SQLite transaction, so a crash between two calls
//! leaves the file as it was after the last call, never half-way through one.
//!
//! Module map:
//! - [`store`]: [`LocalStore`], which implements `SessionStore`, `TaskStore`,
//!   `Mailbox`, `Inbox`, `BlobStore` and `Scheduler`, plus the runtime's recovery and
//!   schedule-delivery calls.
//! - [`schema`]: the tables and indexes, and how a file is brought up to them.
//! - [`schedules`]: the `Schedules` port on [`LocalStore`], and the due firings the
//!   runtime submits.

pub mod schedules;
pub mod schema;
pub mod store;

pub use schedules::Firing;
pub use store::{LocalConfig, LocalError, LocalStore};
