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
//! OPTION   := policy = cancel | finish | settle | race | race_ok
//!           | timeout = DURATION      a core::time::Duration for the whole gather
//!           | limit = N               at most N branches in flight (a usize, at least 1)
//!           | spawn                   run each branch as a tokio task behind an abort guard
//! BRANCHES := BRANCH (, BRANCH)* [,]
//!           | for PAT in ITER => FUTURE    the dynamic form: one branch per item
//! BRANCH   := [LABEL =] FUTURE
//! ```
//!
//! A branch is anything that implements [`IntoFuture`]. With no options part the policy is
//! `cancel`. Options end with `;`: `gather!(policy = finish, limit = 4; a, b, c)`; without the
//! `;`, the names `policy`, `timeout`, `limit` and `spawn` cannot label the first branch.
//! `gather!(...)`, `gather![...]` and `gather!{...}` are the same.
//!
//! # Policies
//!
//! `T` is a branch's success type, `E` the error type all branches share, `O` a branch's
//! output of any type.
//!
//! | policy | on a failure | branches | returns | with `timeout` |
//! |---|---|---|---|---|
//! | `cancel` (default) | cancel the others at once | `Result<T, E>` | `Result<(T1, .., Tn), Error<E>>`, [`Error::Failed`] | `Err(Error::TimedOut)` |
//! | `finish` | let the others finish | `Result<T, E>` | `Result<(T1, .., Tn), Error<E>>`, [`Error::Failures`] with every error in branch order | `Err(Error::TimedOut)` |
//! | `settle` | nothing: every outcome is a value | any `O` | `(O1, .., On)` | `(Option<O1>, .., Option<On>)`; `None` = cancelled at the deadline |
//! | `race_ok` | wait for the next; first success wins, the others are cancelled | `Result<T, E>`, one `T` | `Result<T, Error<E>>`, [`Error::Failures`] when all fail | `Err(Error::TimedOut)` |
//! | `race` | first outcome of any kind wins, the others are cancelled | one `O` | `O` | `Option<O>` |
//!
//! The dynamic form returns a `Vec` where the fixed form returns a tuple. Branches are polled
//! in branch order; when several finish in the same poll, the lowest index wins.
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
//! ## `race_ok`: the first success wins
//!
//! Failures are waited past; the first success cancels the rest. When every branch fails,
//! [`Error::Failures`] holds every error, in branch order.
//!
//! ```
//! use gather::gather;
//! use std::time::Duration;
//! use tokio::time::sleep;
//!
//! async fn mirror(name: &'static str, ms: u64, healthy: bool) -> Result<&'static str, String> {
//!     sleep(Duration::from_millis(ms)).await;
//!     if healthy { Ok(name) } else { Err(format!("{name} is down")) }
//! }
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! let fastest = gather!(policy = race_ok;
//!     mirror("eu", 300, true),
//!     mirror("us", 10, false),
//!     mirror("asia", 120, true),
//! );
//! assert_eq!(fastest, Ok("asia")); // "us" failed first; "eu" was cancelled.
//! # }
//! ```
//!
//! ## `race`: the first outcome of any kind wins
//!
//! ```
//! # use gather::gather; use std::time::Duration; use tokio::time::sleep;
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! let first = gather!(policy = race;
//!     async { sleep(Duration::from_millis(50)).await; "slow" },
//!     async { sleep(Duration::from_millis(5)).await; "fast" },
//! );
//! assert_eq!(first, "fast");
//! # }
//! ```
//!
//! # Options
//!
//! ## `timeout`: a deadline for the whole gather
//!
//! `timeout = DURATION` takes a [`core::time::Duration`], counted from the start of the
//! gather on tokio's timer (so it needs a tokio runtime with its timer enabled). At the
//! deadline every unfinished branch is dropped before `gather!` returns. What it returns then
//! depends on the policy: `cancel`, `finish` and `race_ok` give [`Error::TimedOut`] naming the
//! branches it cancelled; `settle` gives every output as an `Option`, keeping what finished;
//! `race` gives `Option<O>`.
//!
//! ```
//! use gather::{gather, Error};
//! use std::time::Duration;
//! use tokio::time::sleep;
//!
//! async fn step(ms: u64) -> Result<u64, String> {
//!     sleep(Duration::from_millis(ms)).await;
//!     Ok(ms)
//! }
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! let late = gather!(timeout = Duration::from_millis(100); quick = step(10), slow = step(500));
//! let Err(Error::TimedOut { pending, .. }) = late else { panic!() };
//! assert_eq!(pending[0].name(), "slow");
//!
//! let partial = gather!(policy = settle, timeout = Duration::from_millis(100); step(10), step(500));
//! assert_eq!(partial, (Some(Ok(10)), None));
//! # }
//! ```
//!
//! ## `limit`: at most N branches in flight
//!
//! `limit = N` runs at most `N` branches at once; the first `N` start with the gather, and each
//! of the others starts, in branch order, when a running one finishes. A branch that has not
//! started is not polled, and is not named in `cancelled` or `pending` when the gather ends
//! early. A literal `limit = 0` does not compile; a `limit` that is 0 at run time panics.
//!
//! ```
//! # use gather::gather; use std::time::Duration; use tokio::time::{sleep, Instant};
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! let start = Instant::now();
//! let ms = |n: u64| async move { sleep(Duration::from_millis(n)).await; n };
//! let out = gather!(policy = settle, limit = 2; ms(100), ms(100), ms(100), ms(100));
//! assert_eq!(out, (100, 100, 100, 100));
//! assert_eq!(start.elapsed(), Duration::from_millis(200)); // two at a time
//! # }
//! ```
//!
//! ## `spawn`: branches on tokio tasks, never detached
//!
//! `spawn` runs each branch as a task of the current tokio runtime, held by an
//! [`AbortGuard`]: branches then run in parallel on the runtime's worker threads. When the
//! gather ends early (a failure under `cancel`, a race won, the deadline, a panic), every other
//! task is aborted **and awaited** before `gather!` returns, so that no task of it is still
//! running; with `limit`, a task is spawned only when its branch starts, so at most `limit`
//! tasks exist at once. A panic in a task ends the gather: the other tasks are aborted and
//! awaited, then the panic is resumed in the caller with its original payload. A task
//! cancelled from outside (a runtime shutting down) ends the gather with a panic that names
//! the branch.
//!
//! ```
//! use gather::gather;
//!
//! fn checksum(data: &[u8]) -> u64 {
//!     data.iter().map(|&b| u64::from(b)).sum()
//! }
//!
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)] async fn main() {
//! let left = vec![1u8; 1 << 19];
//! let right = vec![2u8; 1 << 19];
//! // Two CPU-bound branches, each on a worker thread of its own.
//! let (l, r) = gather!(policy = settle, spawn;
//!     async move { checksum(&left) },
//!     async move { checksum(&right) },
//! );
//! assert_eq!((l, r), (1 << 19, 2 << 19));
//! # }
//! ```
//!
//! Use `spawn` for CPU work and for parallelism across threads. Leave it out to borrow from
//! the caller (spawned branches must be `'static`), to run `!Send` futures, to run without a
//! tokio runtime, or simply to save the cost of a task per branch: in place, the branches
//! still run concurrently, inside the caller's task. A `spawn` branch that is not `Send` or not
//! `'static` is a compile error under the branch.
//!
//! ## `JoinHandle` branches
//!
//! A branch that is a tokio `JoinHandle`, with or without `spawn`, is never detached: when it
//! loses a race, is cancelled or times out, its task is aborted and awaited, as with `spawn`.
//! Its output stays the handle's own, `Result<T, JoinError>`. It is recognised by its type
//! where `gather!` is written: a handle inside an `async` block, or behind a generic
//! `F: Future`, is an ordinary future, and dropping it detaches its task as tokio does.
//!
//! ```
//! # use std::time::Duration; use tokio::time::sleep;
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! let slow = tokio::spawn(async { sleep(Duration::from_secs(60)).await; "slow" });
//! let fast = tokio::spawn(async { sleep(Duration::from_millis(5)).await; "fast" });
//! let first = gather::gather!(policy = race; slow, fast);
//! assert_eq!(first.unwrap(), "fast");
//! // The slow task was aborted, and awaited: it is gone.
//! assert_eq!(tokio::runtime::Handle::current().metrics().num_alive_tasks(), 0);
//! # }
//! ```
//!
//! # The dynamic form
//!
//! `for PAT in ITER => FUTURE` runs one branch per item of `ITER` and gives the outputs as a
//! `Vec`, in input order, under any policy and option. The body behaves like the body of a
//! closure `|PAT| FUTURE`, called once per item when that item's branch starts: with `limit`,
//! items are taken from the iterator only as branches start, so an endless iterator works
//! with `race` and `race_ok`. `return` and `?` in the body belong to that closure: put
//! fallible steps inside the branch's future. Without `limit`, every item is taken at the
//! first poll, so the iterator must be finite.
//!
//! [`Branch::index`] is the item's position and [`Branch::name`] the body's source text.
//! Over an empty iterator, `cancel`, `finish` and `settle` give an empty `Vec`, `race_ok`
//! gives `Err(Error::Failures { errors: [] })`, and `race`, which has no outcome to return,
//! panics. Each branch has a waker of its own: a wake polls only the branch it belongs to.
//!
//! ```
//! use gather::{gather, Error};
//!
//! async fn fetch(id: u32) -> Result<String, String> {
//!     if id == 7 { Err("not found".into()) } else { Ok(format!("file-{id}")) }
//! }
//!
//! # futures::executor::block_on(async {
//! let ids = vec![1, 2, 3];
//! let files = gather!(limit = 2; for id in ids => fetch(id)).unwrap();
//! assert_eq!(files, ["file-1", "file-2", "file-3"]);
//!
//! let err = gather!(for id in [1, 7, 9] => fetch(id)).unwrap_err();
//! let Error::Failed { branch, .. } = &err else { panic!() };
//! assert_eq!((branch.index(), branch.name()), (1, "fetch(id)"));
//!
//! let empty: Vec<String> = gather!(for id in Vec::<u32>::new() => fetch(id)).unwrap();
//! assert!(empty.is_empty());
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
//! # Tracing
//!
//! With the `tracing` feature (`gather = { version = "0.1", features = ["tracing"] }`), each
//! gather opens a `gather` span (field `policy`), and under it one `branch` span per branch
//! (fields `index`, `branch` — its label or source text — and `outcome`), entered while the
//! branch is polled, so a branch's own events belong to it. When the branch ends, `outcome`
//! records how: `ok`, `error`, `cancelled`, `timed out` or `panicked`. Without the feature
//! none of this code exists.
//!
//! # Guarantees
//!
//! 1. When `gather!` returns (a value, an error or a panic), no branch is running: in place,
//!    every branch future has been dropped; with `spawn`, every task has been aborted **and
//!    awaited**.
//! 2. After a branch fails under `cancel`, no sibling is polled again; the siblings are dropped
//!    before the error is returned, in the same poll that saw the failure, at any number of
//!    branches, in the fixed form and the dynamic form alike. The same holds for the losers
//!    of a race and for the branches a deadline cancels.
//! 3. Dropping the future that contains `gather!` drops every in-place branch and aborts every
//!    spawned task (tokio stops it at its next `.await`; Rust has no async drop, so this one
//!    path cannot wait).
//! 4. A panicking branch cancels its siblings first, then the panic reaches the caller
//!    unchanged (resumed from a spawned task). A panic is never turned into a value.
//! 5. A branch that is itself a tokio `JoinHandle` is never detached: when it loses or is
//!    cancelled, its task is aborted and awaited, as with `spawn`.
//! 6. In place, no runtime is needed (any executor works; `!Send` futures are fine) unless
//!    `timeout` is used; `spawn` needs a tokio runtime and `Send + 'static` branches.
//! 7. Misuse is a compile error at the tokens at fault, saying what to write instead.
//! 8. The code `gather!` expands to is `Send` whenever every branch and output is, so a
//!    function using it can be spawned on a multi-threaded runtime.
//! 9. A spawned branch whose task is cancelled from outside ends the gather with a panic that
//!    names the branch; it is never mistaken for a success or an error value.
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
#![deny(unsafe_code)]

mod dynamic;
mod error;
mod guard;
pub mod guide;
mod slot;
mod trace;
// The one module with `unsafe`: per-branch wakers in shared allocations, the pinned
// chunks of slots of the dynamic form, and the pin projections to the fixed form's slots.
#[allow(unsafe_code)]
mod wake;

pub use error::{Branch, Error};
pub use guard::{AbortGuard, spawn};

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
    pub use crate::dynamic::{Cancel, Driver, Finish, Race, RaceOk, Settle};
    pub use crate::guard::{
        Adopt, AdoptAny, AdoptJoinHandle, Adopted, Reaper, Scope, SpawnAdopted,
        SpawnNeedsSendAndStatic, Spawned, take_trouble,
    };
    pub use crate::slot::{
        Apart, BranchResult, Keep, Kept, Probe, ProbeAny, ProbeGuarded, Record, SameError,
        SettleSlot, Slot, Stage, Together, failed, timed_out,
    };
    pub use crate::trace::BranchSpan;
    pub use crate::wake::place::{Fields, Place};
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
