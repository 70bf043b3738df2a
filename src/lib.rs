//! Tests and examples for gather.
