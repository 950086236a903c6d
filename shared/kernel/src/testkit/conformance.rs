//! The port conformance suite: one set of checks that every adapter of a port passes.
