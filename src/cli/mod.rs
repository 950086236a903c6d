//! The commands of `aos` that work on the local store and on a remote AOS API
//! alike (`aos tasks`, `aos task --follow`, `aos submit`, `aos cancel`,
//! `aos approvals`, `aos approve`, `aos schedule`, `aos dlq`, `aos agents`), and
//! `aos login` / `aos logout`.
//!
//! - [`config`]: which one a command talks to (flags, then `AOS_API_URL` /
//!   `AOS_TOKEN`, then the file `aos login` writes); tokens go only to the API they
//!   were saved for.
//! - [`client`]: API v1 over HTTP, its event stream, and errors worded for people.
//! - [`target`]: the same operations on the local store (kernel and runtime) and on
//!   the API, answering with the kernel's types.
//! - [`progress`]: the status line shown while a command waits.
//! - [`commands`]: what each command prints, and its exit code.

pub mod client;
pub mod commands;
pub mod config;
pub mod progress;
pub mod target;
