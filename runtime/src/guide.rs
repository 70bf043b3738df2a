//! Longer reading: moving to `gather!` from other tools, and every compile error it gives.

#[doc = include_str!("../docs/migration.md")]
pub mod migration {}

#[doc = include_str!("../docs/misuse.md")]
pub mod misuse {}
