//! # aos
//!
//! The `aos` command and the embedded runtime. The kernel (`aos-kernel`) holds the
//! wake cycle; this crate wires it to the embedded store (`aos-local`), the reference
//! agents (`aos-agents`) and the entrypoints (`aos-entrypoints`), and runs it all in
//! one process.
//!
//! - [`runtime`]: trigger loops that do what Lambda's SQS event source mapping does.
//! - [`render`]: progress lines, the answer and the timeline, for a terminal.
//! - [`bench`]: `aos bench` figures.
//! - [`lambda_bench`]: `aos bench --lambda`, the function binaries' package sizes
//!   and cold starts.
//! - [`replay`]: `aos replay --task`, a whole run again from its journal, diffed.
//! - [`events`]: `aos replay <file>`, a recorded AWS event through its handler.

pub mod bench;
pub mod events;
pub mod lambda_bench;
pub mod render;
pub mod replay;
pub mod runtime;

pub use runtime::{RunningRuntime, Runtime, RuntimeConfig};
