//! aos-local
