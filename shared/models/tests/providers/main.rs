//! The providers against scripted servers speaking each wire format: what goes out
//! (messages, tools, cache markers, context placement) and how every kind of answer
//! and failure comes back through the kernel's `Model` port.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod anthropic;
mod bedrock;
mod openai;
mod registry;
mod scripted;
