//! aos-entrypoints
