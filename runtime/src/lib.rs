//! Structured concurrency in one expression.
//!
//! (The guide is written in the crate docs below; see the README for now.)

#![deny(missing_docs)]

mod error;
mod slot;

pub use error::{Branch, Error};

/// Runs several futures side by side and returns only when none of them is left running.
///
/// See the crate documentation for the grammar, the policies and the guarantees.
#[macro_export]
macro_rules! gather {
    ($($input:tt)*) => {
        $crate::__private::gather_impl! { [$crate] $($input)* }
    };
}

/// Not public API: what the code `gather!` expands to needs.
#[doc(hidden)]
pub mod __private {
    pub use crate::slot::{BranchResult, Pass, Slot, failed};
    pub use gather_macros::gather_impl;
    pub use std::vec::Vec;
}
