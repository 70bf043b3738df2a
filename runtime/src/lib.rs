//! Structured concurrency in one expression.
//!
//! [`gather!`] runs several futures side by side, says by its *policy* what a failure does to
//! the others, and returns only when no branch is left running. It is written inline in an
//! `async` function, where `tokio::try_join!` or `futures::join!` would be:
//!
//! ```
//! use gather::gather;
//!
//! # #[derive(Debug)] struct User; #[derive(Debug)] struct Order;
//! # async fn load_user(_: u32) -> Result<User, String> { Ok(User) }
//! # async fn load_orders(_: u32) -> Result<Vec<Order>, String> { Ok(vec![]) }
//! async fn profile(id: u32) -> Result<(User, Vec<Order>), gather::Error<String>> {
//!     // Both loads run at once. If one fails, the other is cancelled (dropped) before
//!     // `gather!` returns, and the error names the branch that failed.
//!     gather!(load_user(id), load_orders(id))
//! }
//! # futures::executor::block_on(async { profile(7).await.unwrap(); });
//! ```
//!
//! # Why
//!
//! Python's `asyncio.gather` raises the first failure and leaves the sibling tasks running
//! with no owner: uploads that finish after the caller gave up, connections nobody closes.
//! Rust has the same trap wherever a `JoinHandle` is dropped: the task is detached and runs
//! on. `gather!` makes the safe thing the short thing: whatever happens (a value, an error, a
//! panic), when it returns, nothing it started is still running.
//!
//! # Syntax
//!
//! ```text
//! gather!( [OPTIONS ;] BRANCHES )
//! OPTIONS  := OPTION (, OPTION)*
//! OPTION   := policy = cancel | finish | settle
//! BRANCHES := BRANCH (, BRANCH)* [,]
//! BRANCH   := [LABEL =] FUTURE
//! ```
//!
//! A branch is anything that implements [`IntoFuture`]. With no
//! options part the policy is `cancel`. Options end with `;`: `gather!(policy = finish; a, b)`.
//! `gather!(...)`, `gather![...]` and `gather!{...}` are the same.
//!
//! # Policies
//!
//! `T` is a branch's success type, `E` the error type all branches share, `O` a branch's
//! output of any type.
//!
//! | policy | on a failure | branches | returns |
//! |---|---|---|---|
//! | `cancel` (default) | cancel the others at once | `Result<T, E>` | `Result<(T1, .., Tn), Error<E>>`, [`Error::Failed`] |
//! | `finish` | let the others finish | `Result<T, E>` | `Result<(T1, .., Tn), Error<E>>`, [`Error::Failures`] with every error in branch order |
//! | `settle` | nothing: every outcome is a value | any `O` | `(O1, .., On)` |
//!
//! `race`, `race_ok`, the `timeout`, `limit` and `spawn` options, and the dynamic form
//! `for x in xs => f(x)` are part of the design and come in later versions; today they are a
//! compile error that says so.
//!
//! ## `cancel`: the first failure stops the rest
//!
//! ```
//! use gather::{gather, Error};
//!
//! async fn upload(bucket: &str, fail: bool) -> Result<String, String> {
//!     if fail { Err(format!("{bucket}: refused")) } else { Ok(format!("{bucket}: done")) }
//! }
//!
//! # futures::executor::block_on(async {
//! let result = gather!(policy = cancel; upload("a", false), upload("b", true));
//! let Err(Error::Failed { branch, error, .. }) = result else { panic!() };
//! assert_eq!(branch.name(), r#"upload("b", true)"#);
//! assert_eq!(error, "b: refused");
//! # });
//! ```
//!
//! ## `finish`: every branch runs to its end, every error is reported
//!
//! ```
//! use gather::{gather, Error};
//!
//! async fn check(n: u32) -> Result<u32, String> {
//!     if n % 2 == 0 { Ok(n) } else { Err(format!("{n} is odd")) }
//! }
//!
//! # futures::executor::block_on(async {
//! let result = gather!(policy = finish; check(1), check(2), check(3));
//! let Err(Error::Failures { errors, .. }) = result else { panic!() };
//! let messages: Vec<_> = errors.iter().map(|(branch, e)| (branch.index(), e.as_str())).collect();
//! assert_eq!(messages, [(0, "1 is odd"), (2, "3 is odd")]);
//! # });
//! ```
//!
//! ## `settle`: every outcome is a value
//!
//! Branches may output anything; failures are values like any other, for the caller to handle
//! one by one (what `asyncio.gather(..., return_exceptions=True)` does).
//!
//! ```
//! use gather::gather;
//!
//! # futures::executor::block_on(async {
//! let (a, b, n) = gather!(policy = settle;
//!     async { Ok::<_, String>("a") },
//!     async { Err::<&str, _>("b failed".to_owned()) },
//!     async { 42 },
//! );
//! assert_eq!(a, Ok("a"));
//! assert!(b.is_err());
//! assert_eq!(n, 42);
//! # });
//! ```
//!
//! # Labels and names
//!
//! An error names its branch by a [`Branch`]: its index, and its name. The name is the
//! branch's label, `label = future`, or else its source text as written:
//!
//! ```
//! use gather::{gather, Error};
//!
//! # async fn fetch(_: &str) -> Result<(), String> { Err("offline".into()) }
//! # futures::executor::block_on(async {
//! let err = gather!(primary = fetch("db-1"), replica = fetch("db-2")).unwrap_err();
//! let Error::Failed { branch, cancelled, .. } = &err else { panic!() };
//! assert_eq!(branch.name(), "primary");
//! assert_eq!(cancelled[0].name(), "replica");
//! assert_eq!(err.to_string(), "branch `primary` failed: offline (cancelled `replica`)");
//!
//! # async fn compute(_: u32) -> Result<u32, String> { Ok(1) }
//! let err = gather!(compute(1), async { Err::<u32, _>("no".to_owned()) }).unwrap_err();
//! assert_eq!(err.to_string(), "branch `async { Err::<u32, _>(\"no\".to_owned()) }` failed: no");
//! # });
//! ```
//!
//! Under `cancel`, branches are polled in branch order, and the first failure ends the gather
//! in the poll that sees it. Above, `primary` failed at its first poll, before `replica` was
//! polled at all; `replica` was dropped all the same, and `cancelled` names it.
//!
//! # Guarantees
//!
//! 1. When `gather!` returns (a value, an error or a panic), no branch is running: every
//!    branch future has been dropped.
//! 2. After a branch fails under `cancel`, no sibling is polled again; the siblings are dropped
//!    before the error is returned, in the same poll that saw the failure, at any number of
//!    branches.
//! 3. Dropping the future that contains `gather!` drops every branch.
//! 4. A panicking branch drops its siblings, then the panic reaches the caller unchanged. A
//!    panic is never turned into a value.
//! 5. Branches run in place, inside the caller's task: nothing is spawned, no runtime is
//!    needed (any executor works), and branches need not be `Send` or `'static`.
//! 6. Misuse is a compile error at the tokens at fault, saying what to write instead.
//! 7. The code `gather!` expands to is `Send` whenever every branch and output is, so a
//!    function using it can be spawned on a multi-threaded runtime.
//!
//! # What cancelling a branch means
//!
//! Cancelling a branch drops its future at the `.await` where it is suspended; Rust has no
//! async drop, so whatever that future owned is released then (sockets closed, buffers freed),
//! and code after that `.await` never runs. Write branches so that stopping at any `.await` is
//! safe: keep an operation that must not be cut in half (e.g. `read_exact` into a buffer that
//! outlives the branch, or a write and the record that it happened) inside one branch that
//! finishes it, or use `policy = finish` / `settle`, which never cancel.

#![deny(missing_docs)]

mod dynamic;
mod error;
mod slot;

pub use error::{Branch, Error};

/// Runs several futures side by side and returns only when none of them is left running.
///
/// `gather!` awaits inside, like `tokio::join!`: write it in an `async` function or block.
/// See the [crate documentation](crate) for the grammar, the policies and the guarantees.
///
/// ```
/// use gather::gather;
///
/// # futures::executor::block_on(async {
/// // policy = cancel (the default): a tuple of the successes, or the first error.
/// let (a, b) = gather!(async { Ok::<_, String>(1) }, async { Ok(2) })?;
/// assert_eq!(a + b, 3);
///
/// // policy = settle: a tuple of every output.
/// let (x, y) = gather!(policy = settle; async { "x" }, async { 2.5 });
/// assert_eq!((x, y), ("x", 2.5));
/// # Ok::<(), gather::Error<String>>(())
/// # }).unwrap();
/// ```
#[macro_export]
macro_rules! gather {
    ($($input:tt)*) => {
        $crate::__private::gather_impl! { [$crate] $($input)* }
    };
}

/// Not public API: what the code `gather!` expands to needs.
#[doc(hidden)]
pub mod __private {
    pub use crate::dynamic::{Cancel, Engine, Finish, Race, RaceOk, Settle};
    pub use crate::slot::{BranchResult, Record, SameError, Slot, failed, timed_out};
    pub use core::convert::Infallible;
    pub use gather_macros::gather_impl;
    pub use std::vec::Vec;

    /// The `limit` option's value, checked once when the gather starts.
    #[track_caller]
    #[inline]
    pub fn limit(limit: usize) -> usize {
        assert!(
            limit > 0,
            "gather!: `limit` must be at least 1, but it is 0: no branch could ever start"
        );
        limit
    }

    /// The `timeout` option's deadline, set when the gather starts.
    #[track_caller]
    #[inline]
    pub fn deadline(timeout: core::time::Duration) -> tokio::time::Sleep {
        tokio::time::sleep(timeout)
    }

    /// A dynamic-form branch of `cancel`, `finish` or `race_ok`: checks, at the branch, that
    /// its output is a `Result`.
    #[inline]
    pub fn result_branch<F>(fut: F) -> F
    where
        F: core::future::Future,
        F::Output: BranchResult,
    {
        fut
    }
}
