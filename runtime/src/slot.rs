//! One branch of a fixed-form gather, polled in place, and the record the branches share.
//!
//! The branch future is pinned in the caller's frame as an `Option<F>`, in one [`Place`] with
//! what the gather keeps of it, in a tuple of slots that `gather!` pins as a whole: the
//! projections to a slot and to its future are the wake module's (`wake::place`), the one
//! home of the crate's `unsafe`. From there `Pin::as_pin_mut` reaches the future, and
//! `Pin::set(None)` drops it in place, which is how a cancelled branch stops the moment its
//! gather decides so.

use core::convert::Infallible;
use core::future::Future;
use core::marker::PhantomData;
use core::pin::Pin;
use core::task::{Context, Poll, Waker};

use crate::error::{Branch, Error, Name};
use crate::guard::{Adopted, Reaper, Spawned};
use crate::trace::{BranchSpan, GatherSpan, Outcome};
use crate::wake::place::Place;
use crate::wake::{FLAGS, Wakers};

/// One branch of a fixed-form gather: its future, then what the gather keeps of its output,
/// in one [`Place`], which `gather!` pins in the caller's frame with the other slots of its
/// tuple (see [`Fields`](crate::wake::place::Fields)), so that the slot needs no pointer to
/// its future and its output is kept beside it.
///
/// `O` is what is kept: the whole output under `settle` and `race`, the success value under
/// `cancel`, `finish` and `race_ok` (an error goes to the [`Record`] the moment it is seen).
/// `N` is the gather's branch count, which chooses how a branch is polled (see
/// `OWN_WAKERS_FROM`). `LIMITED` says whether the gather has the `limit` option: without it,
/// every branch starts with the gather, and nothing needs to check whether one has.
pub type Slot<F, O, const N: usize, const LIMITED: bool> = Place<F, Kept<O, N, LIMITED, Apart<O>>>;

/// A [`Slot`] of a `settle` gather: its stage and its output share one tag ([`Together`]).
pub type SettleSlot<F, O, const N: usize, const LIMITED: bool> =
    Place<F, Kept<O, N, LIMITED, Together<O>>>;

/// What a [`Slot`] keeps beside its future, not pinned: its stage and output, as `K` keeps
/// them, and its span.
pub struct Kept<O, const N: usize, const LIMITED: bool, K: Keep<O>> {
    /// How a pass treats the branch, and what the gather keeps of its output until it takes
    /// it.
    keep: K,
    /// The branch's span under the `tracing` feature; nothing without it.
    trace: BranchSpan,
    /// What is kept.
    out: PhantomData<fn() -> O>,
}

/// How a slot keeps its [`Stage`] and the output of its branch: apart ([`Apart`]) or under
/// one tag ([`Together`]).
///
/// From `OWN_WAKERS_FROM` branches on, a pass tells by the stage, without reaching for the
/// future, whether to poll a branch; below, the future is at hand anyway, and the stage stays
/// [`Stage::Polled`] until the branch finishes.
pub trait Keep<O> {
    /// A running branch polled in every pass, nothing kept. A function rather than a
    /// constant, which would be copied from memory where this stores its fields.
    fn new() -> Self;
    /// Whether a pass skips the branch: finished, or waiting with a waker of its own that was
    /// not woken (`woken`, the pass's word of flags, has no bit for `index`).
    fn skips(&self, woken: usize, index: usize) -> bool;
    /// The branch waits with a waker of its own.
    fn set_own(&mut self);
    /// Below `OWN_WAKERS_FROM`: keeps the output of a branch that finished.
    fn keep(&mut self, out: O);
    /// From `OWN_WAKERS_FROM` on: keeps the output of a branch that finished, and marks it.
    fn keep_finished(&mut self, out: O);
    /// From `OWN_WAKERS_FROM` on: marks a branch that finished with nothing kept.
    fn finish(&mut self);
    /// What was kept, taken.
    fn take(&mut self) -> Option<O>;
    /// What was kept, taken, when it is known to be there: told by the one tag, which an
    /// `Option` from [`take`](Self::take) would test a second time.
    fn take_kept(&mut self) -> O;
    /// Whether an output is kept.
    fn kept(&self) -> bool;
}

/// The stage in a byte of its own, the output in an `Option` beside it: for `cancel`,
/// `finish`, `race` and `race_ok` (measured: with [`Together`], their gathers at 100 branches
/// ran 2% to 6% more instructions, from a pass that kept fewer slots' addresses at hand).
pub struct Apart<O> {
    out: Option<O>,
    stage: Stage,
}

impl<O> Keep<O> for Apart<O> {
    #[inline(always)]
    fn new() -> Self {
        Apart {
            out: None,
            stage: Stage::Polled,
        }
    }

    #[inline(always)]
    fn skips(&self, woken: usize, index: usize) -> bool {
        match self.stage {
            Stage::Polled => false,
            Stage::Own => woken & (1 << (index % FLAGS)) == 0,
            Stage::Finished => true,
        }
    }

    #[inline(always)]
    fn set_own(&mut self) {
        self.stage = Stage::Own;
    }

    #[inline(always)]
    fn keep(&mut self, out: O) {
        self.out = Some(out);
    }

    #[inline(always)]
    fn keep_finished(&mut self, out: O) {
        self.out = Some(out);
        self.stage = Stage::Finished;
    }

    #[inline(always)]
    fn finish(&mut self) {
        self.stage = Stage::Finished;
    }

    #[inline(always)]
    fn take(&mut self) -> Option<O> {
        self.out.take()
    }

    #[inline(always)]
    fn take_kept(&mut self) -> O {
        match self.out.take() {
            Some(out) => out,
            None => unreachable!("gather! took an output that was not there"),
        }
    }

    #[inline(always)]
    fn kept(&self) -> bool {
        self.out.is_some()
    }
}

/// The stage and the output under one tag of a byte of its own (`repr(u8)`): a slot is made
/// with one store beside its future rather than two, and a branch that finishes is marked by
/// the store of its output. Measured best for `settle`, whose gather makes every slot and
/// takes every output (at 100 branches all ready, about 1.0x the time of `tokio::join!`
/// against 1.16x apart); under the other policies, the pass measured worse.
#[repr(u8)]
pub enum Together<O> {
    /// [`Stage::Polled`].
    Polled,
    /// [`Stage::Own`].
    Own,
    /// [`Stage::Finished`], with the output kept.
    Done(O),
    /// [`Stage::Finished`], with nothing kept: the output was taken.
    Ended,
}

impl<O> Keep<O> for Together<O> {
    #[inline(always)]
    fn new() -> Self {
        Together::Polled
    }

    #[inline(always)]
    fn skips(&self, woken: usize, index: usize) -> bool {
        // The stage of a branch polled in every pass first, told by the tag alone (measured:
        // a `match` tests for a finished branch first, with more instructions per branch).
        if matches!(self, Together::Polled) {
            false
        } else if matches!(self, Together::Own) {
            woken & (1 << (index % FLAGS)) == 0
        } else {
            true
        }
    }

    #[inline(always)]
    fn set_own(&mut self) {
        *self = Together::Own;
    }

    #[inline(always)]
    fn keep(&mut self, out: O) {
        *self = Together::Done(out);
    }

    #[inline(always)]
    fn keep_finished(&mut self, out: O) {
        *self = Together::Done(out);
    }

    #[inline(always)]
    fn finish(&mut self) {
        *self = Together::Ended;
    }

    #[inline(always)]
    fn take(&mut self) -> Option<O> {
        match core::mem::replace(self, Together::Ended) {
            Together::Done(out) => Some(out),
            _ => None,
        }
    }

    #[inline(always)]
    fn take_kept(&mut self) -> O {
        match core::mem::replace(self, Together::Ended) {
            Together::Done(out) => out,
            _ => unreachable!("gather! took an output that was not there"),
        }
    }

    #[inline(always)]
    fn kept(&self) -> bool {
        matches!(self, Together::Done(_))
    }
}

/// A slot as its poll uses it: the future, pinned, and what is kept beside it.
#[must_use = "a gather branch does nothing unless polled"]
struct View<'a, F, O, const N: usize, const LIMITED: bool, K: Keep<O>> {
    /// The branch future while it runs; `None` once it has finished or been cancelled.
    fut: Pin<&'a mut Option<F>>,
    kept: &'a mut Kept<O, N, LIMITED, K>,
}

/// How a pass of a gather of `OWN_WAKERS_FROM` branches or more treats a branch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Polled in every pass: the branch has not yet waited with a waker of its own.
    Polled,
    /// Polled only when its own waker was woken since its last poll.
    Own,
    /// Skipped: the branch finished. A branch the gather cancels is not marked: no pass
    /// follows a cancel, and `fut` says it all.
    Finished,
}

/// Tells at the call site, by its static type, whether a branch future is itself a guard of a
/// task (an adopted `JoinHandle`, or a spawned branch), whose task is then known as this
/// branch's when the gather cancels it: `(&Probe::of(&slot)).guarded()` picks
/// [`ProbeGuarded`] for [`Adopted`] and [`Spawned`] (no autoref needed) and [`ProbeAny`] for
/// any other future (one autoref).
pub struct Probe<F>(PhantomData<F>);

impl<F> core::fmt::Debug for Probe<F> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Probe")
    }
}

impl<F> Probe<F> {
    /// The probe of a slot's future.
    #[inline]
    pub fn of<S>(_slot: &Pin<&mut Place<F, S>>) -> Self {
        Probe(PhantomData)
    }
}

/// A branch future that guards a task.
pub trait ProbeGuarded {
    /// `true`: the branch guards a task.
    #[inline]
    fn guarded(&self) -> bool {
        true
    }
}

impl<T: Send + 'static> ProbeGuarded for Probe<Adopted<T>> {}

impl<F: Future> ProbeGuarded for Probe<Spawned<F>> where F::Output: Send + 'static {}

/// Any other branch future.
pub trait ProbeAny {
    /// `false`: the branch is no guard (though it may own some, which the reaping scope
    /// still collects).
    #[inline]
    fn guarded(&self) -> bool {
        false
    }
}

impl<F> ProbeAny for &Probe<F> {}

impl<F, O, const N: usize, const LIMITED: bool, K: Keep<O>> core::fmt::Debug
    for Place<F, Kept<O, N, LIMITED, K>>
{
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let state = match (self.is_running(), self.rest().keep.kept()) {
            (true, _) => "running",
            (false, true) => "finished",
            (false, false) => "ended",
        };
        f.debug_struct("Slot").field("state", &state).finish()
    }
}

/// The output a `cancel`, `finish` or `race_ok` branch must have: a `Result`.
#[diagnostic::on_unimplemented(
    message = "a `gather!` branch under this policy must output a `Result`, but this one outputs `{Self}`",
    label = "this branch's output is not a `Result`",
    note = "`policy = cancel`, `finish` and `race_ok` need `Result<T, E>` to tell success from failure",
    note = "to collect outputs of any type, use `gather!(policy = settle; ...)`"
)]
pub trait BranchResult {
    /// The success type.
    type Ok;
    /// The error type.
    type Err;
    /// The output as a `Result`.
    fn into_result(self) -> Result<Self::Ok, Self::Err>;
    /// Whether the output is an error.
    fn is_err(&self) -> bool;
}

impl<T, E> BranchResult for Result<T, E> {
    type Ok = T;
    type Err = E;
    #[inline]
    fn into_result(self) -> Result<T, E> {
        self
    }
    #[inline]
    fn is_err(&self) -> bool {
        Result::is_err(self)
    }
}

/// From this many branches on, each branch gets a waker of its own, so that a wake polls only
/// its branch. Below it, a wake polls every running branch, as `tokio::join!` does: with so
/// few branches that costs less than the wakers' allocation and bookkeeping (measured in
/// `benches/fixed.rs`).
///
/// The count also chooses how a branch's poll is compiled: below it, inline in the gather's
/// poll, which is the fastest for a few branches; from it on, a check inline (whether the
/// branch skips this pass) and the poll itself in a function that the branches of one type
/// share, so that a gather of many branches does not run through a long stretch of code once
/// each (measured: at 100 branches all ready, 1.4x the time of `tokio::try_join!` fully
/// inline, 0.9x shared).
const OWN_WAKERS_FROM: usize = 16;

/// The policies whose branches output a `Result`, as [`View::poll_policy`] tells them apart.
const CANCEL: u8 = 0;
const FINISH: u8 = 1;
const RACE_OK: u8 = 2;

/// What the polls of a fixed-form gather found so far, shared by its branches: which branches
/// may run under `limit`, how many are running, the failure that ends a `cancel` gather, the
/// failures of `finish` and `race_ok`, the winner of a race.
#[derive(Debug)]
pub struct Record<E> {
    failure: Option<(usize, E)>,
    errors: Vec<(usize, E)>,
    winner: Option<usize>,
    limit: usize,
    /// Branches start in order: those below `started` have started.
    started: usize,
    running: usize,
    names: &'static [&'static str],
    /// How a branch the gather stops now ends: cancelled, or timed out.
    stop: Outcome,
    /// The spawned branch whose task panicked, if one did.
    troubled: Option<usize>,
    trace: GatherSpan,
    /// The branches' own wakers, made when a branch first waits.
    wakers: Option<Wakers>,
    /// Which branches of the word of flags the pass is in were woken: taken from the wakers
    /// as the pass reaches the word's first branch, so that each branch tests one bit.
    woken: usize,
}

impl<E> Record<E> {
    /// An empty record for a gather under `policy` of the branches named `names`, that runs
    /// at most `limit` at once (`usize::MAX` without the option). The first `limit` branches
    /// start with the gather.
    #[inline]
    pub fn new(limit: usize, names: &'static [&'static str], policy: &'static str) -> Self {
        let started = limit.min(names.len());
        Record {
            failure: None,
            errors: Vec::new(),
            winner: None,
            limit,
            started,
            running: started,
            names,
            stop: Outcome::Cancelled,
            troubled: None,
            trace: GatherSpan::new(policy),
            wakers: None,
            woken: 0,
        }
    }

    /// The branches about to be stopped are stopped by the deadline.
    #[inline]
    pub fn timed_out(&mut self) {
        self.stop = Outcome::TimedOut;
    }

    /// The task of spawned branch `index` panicked or was cancelled from outside.
    #[inline]
    pub fn troubled(&mut self, index: usize) {
        self.troubled = Some(index);
    }

    fn stop_outcome(&self, index: usize) -> Outcome {
        if self.troubled == Some(index) {
            Outcome::Panicked
        } else {
            self.stop
        }
    }

    /// The record itself. `gather!` passes `(record).by_ref()` to each branch's poll: an
    /// expression whose tokens all carry the branch's span, so that an error type that differs
    /// is reported under that branch.
    #[inline]
    pub fn by_ref(&mut self) -> &mut Self {
        self
    }

    /// Makes the branches' own wakers, whose first wake wakes `parent`: once per gather, when
    /// its first branch waits, so out of line, which keeps the poll that calls it short.
    #[cold]
    #[inline(never)]
    fn make_wakers<const N: usize>(&mut self, parent: &Waker) {
        self.wakers = Some(Wakers::with_parent::<N>(parent));
    }

    /// Starts a pass over the branches, in a poll of the gather's task woken by `cx`.
    #[inline]
    pub fn begin(&mut self, cx: &Context<'_>) {
        if let Some(wakers) = &mut self.wakers {
            wakers.set_parent(cx.waker());
        }
    }

    /// Whether a branch is still running, or waiting for its turn under `limit`: told by the
    /// counts, rather than by a flag that every pending or skipped branch would set.
    #[inline]
    pub fn pending(&self) -> bool {
        self.running > 0 || self.started < self.names.len()
    }

    /// The failure that ends a `cancel` gather, as its branch index and error.
    #[inline]
    pub fn take_failure(&mut self) -> Option<(usize, E)> {
        self.failure.take()
    }

    /// An empty list for the branches a failure or the deadline stops: room for exactly those
    /// still running, so that nothing is allocated when none is.
    #[inline]
    pub fn stopped(&self) -> Vec<Branch> {
        Vec::with_capacity(self.running)
    }

    /// The branch that won a race.
    #[inline]
    pub fn winner(&self) -> Option<usize> {
        self.winner
    }

    /// Every failure so far, in branch order.
    pub fn take_failures(&mut self, names: &'static [&'static str]) -> Error<E> {
        failures(core::mem::take(&mut self.errors), |index| &names[index])
    }

    /// `finish`: every failure, if there was one, once no branch is running.
    pub fn failures(&mut self, names: &'static [&'static str]) -> Option<Error<E>> {
        if self.errors.is_empty() {
            None
        } else {
            Some(self.take_failures(names))
        }
    }

    /// Admits the branch at `index` if it has started, or may start now. Branches start in
    /// order, and a pass visits them in order, so `index == started` for the next to start.
    /// Asked only under `limit`: without it, every branch started with the gather.
    #[inline(always)]
    fn admit(&mut self, index: usize) -> bool {
        if index < self.started {
            return true;
        }
        if self.running >= self.limit {
            return false;
        }
        self.started += 1;
        self.running += 1;
        true
    }
}

/// `Error::Failures` from errors in the order they came, each with its branch index.
pub(crate) fn failures<E>(mut errors: Vec<(usize, E)>, name: impl Fn(usize) -> Name) -> Error<E> {
    errors.sort_by_key(|(index, _)| *index);
    let errors = errors
        .into_iter()
        .map(|(index, error)| (Branch::__new(index, name(index)), error))
        .collect();
    Error::Failures { errors }
}

/// Every branch of one gather shares one error type: a branch's error type `E` must be the one
/// the gather's [`Record`] holds. A trait rather than plain type equality, so that a
/// mismatch is reported under the branch, with words a user can act on.
#[diagnostic::on_unimplemented(
    message = "the branches of a `gather!` must share one error type, but this branch fails with `{E}`",
    label = "this branch's error type differs from the other branches'",
    note = "the other branches fail with the error type inside `{Self}`",
    note = "convert the errors to one type inside the branches, e.g. `async {{ read().await.map_err(MyError::from) }}`"
)]
pub trait SameError<E> {
    /// The record of a gather whose branches fail with `E`.
    fn record(&mut self) -> &mut Record<E>;
}

impl<E> SameError<E> for Record<E> {
    #[inline]
    fn record(&mut self) -> &mut Record<E> {
        self
    }
}

/// `cancel`: the error for a failure at `index`.
pub fn failed<E>(
    index: usize,
    names: &'static [&'static str],
    error: E,
    cancelled: Vec<Branch>,
) -> Error<E> {
    Error::Failed {
        branch: Branch::__new(index, &names[index]),
        error,
        cancelled,
    }
}

/// `timeout`: the error for a deadline that passed with `pending` still running.
pub fn timed_out<E>(pending: Vec<Branch>) -> Error<E> {
    Error::TimedOut { pending }
}

impl<F, O, const N: usize, const LIMITED: bool, K: Keep<O>> Place<F, Kept<O, N, LIMITED, K>> {
    /// The slot of a branch future, before `gather!` pins it with the others of its tuple.
    #[inline(always)]
    pub fn new(fut: F) -> Self {
        Place::with(
            fut,
            Kept {
                keep: K::new(),
                trace: BranchSpan::NONE,
                out: PhantomData,
            },
        )
    }

    /// The slot's future, pinned, and what is kept beside it.
    #[inline(always)]
    fn view(self: Pin<&mut Self>) -> View<'_, F, O, N, LIMITED, K> {
        let (fut, kept) = self.project();
        View { fut, kept }
    }

    /// Whether the branch is not polled in this pass: it has finished or been cancelled, or it
    /// runs with a waker of its own that was not woken since its last poll (a wake polls only
    /// its own branch). Before a branch has one (at its first poll, which needs no
    /// allocation), it is polled with the gather's waker, on every poll of the gather.
    #[inline(always)]
    fn skips<E>(&self, record: &mut Record<E>, index: usize) -> bool {
        // The first branch of a word of flags takes the word for the branches after it; a
        // wake after that is seen in the next pass, which the wake asks for.
        if N >= OWN_WAKERS_FROM && index.is_multiple_of(FLAGS) {
            record.woken = match &record.wakers {
                Some(wakers) => wakers.take_woken(index / FLAGS),
                None => 0,
            };
        }
        // Below `OWN_WAKERS_FROM` no branch has a waker of its own: not even a check.
        if N >= OWN_WAKERS_FROM {
            self.rest().keep.skips(record.woken, index)
        } else {
            !self.is_running()
        }
    }
}

impl<F, O, const N: usize, const LIMITED: bool, K: Keep<O>> View<'_, F, O, N, LIMITED, K> {
    /// Polls the branch if it is running, or may start under `limit`. `Some(output)` the one
    /// time it finishes.
    #[inline(always)]
    fn poll_fut<E>(
        &mut self,
        cx: &mut Context<'_>,
        record: &mut Record<E>,
        index: usize,
    ) -> Poll<Option<F::Output>>
    where
        F: Future,
    {
        let Some(fut) = self.fut.as_mut().as_pin_mut() else {
            return Poll::Ready(None);
        };
        if LIMITED && !record.admit(index) {
            return Poll::Pending;
        }
        self.kept
            .trace
            .start(&record.trace, index, || record.names[index]);
        let wakers = if N >= OWN_WAKERS_FROM {
            record.wakers.as_ref()
        } else {
            None
        };
        let polled = match wakers {
            Some(wakers) => {
                self.kept.keep.set_own();
                let trace = &mut self.kept.trace;
                wakers.with_waker(index, |waker| {
                    trace.poll(|| fut.poll(&mut Context::from_waker(waker)))
                })
            }
            None => self.kept.trace.poll(|| fut.poll(cx)),
        };
        match polled {
            // The caller drops the future, with `finished`, before or after it keeps the output.
            Poll::Ready(out) => Poll::Ready(Some(out)),
            Poll::Pending => {
                if N >= OWN_WAKERS_FROM && record.wakers.is_none() {
                    // The first branch to wait: the one allocation of the gather, or none
                    // when the thread has a spare from an earlier gather.
                    record.make_wakers::<N>(cx.waker());
                }
                Poll::Pending
            }
        }
    }

    /// Drops the future of a branch that finished, and counts it. From `OWN_WAKERS_FROM` on,
    /// the caller marked it first, with its output if it is kept ([`Keep::keep_finished`]).
    #[inline(always)]
    fn finished<E>(&mut self, record: &mut Record<E>, outcome: Outcome) {
        if N >= OWN_WAKERS_FROM {
            // In the shared poll, the marks come before the drop, so that only the future's
            // place is kept across it (measured: about 1 instruction less per branch at 100
            // branches all ready); inline, the drop first measured better.
            record.running -= 1;
            self.fut.set(None);
        } else {
            self.fut.set(None);
            record.running -= 1;
        }
        self.kept.trace.end(outcome);
    }

    /// `settle` and `race`: polls the branch; keeps its output once it finishes, and says so.
    #[inline(always)]
    fn poll_output(
        &mut self,
        cx: &mut Context<'_>,
        record: &mut Record<Infallible>,
        index: usize,
    ) -> bool
    where
        F: Future<Output = O>,
    {
        let Poll::Ready(Some(out)) = self.poll_fut(cx, record, index) else {
            return false;
        };
        // As in `poll_policy`: in the shared poll, the output is kept before the future is
        // dropped, so that nothing is kept across the drop.
        if N >= OWN_WAKERS_FROM {
            self.kept.keep.keep_finished(out);
            self.finished(record, Outcome::Ok);
        } else {
            self.finished(record, Outcome::Ok);
            self.kept.keep.keep(out);
        }
        true
    }

    /// `cancel`, `finish` and `race_ok` (`POLICY`): polls the branch, and once it finishes,
    /// keeps its success value or records its error, as the policy says. Returns `true` when
    /// no later branch is to be polled in this pass: a `cancel` failure, a `race_ok` winner.
    #[inline(always)]
    fn poll_policy<E, const POLICY: u8>(
        &mut self,
        cx: &mut Context<'_>,
        record: &mut Record<E>,
        index: usize,
    ) -> bool
    where
        F: Future,
        F::Output: BranchResult<Ok = O, Err = E>,
    {
        let Poll::Ready(Some(out)) = self.poll_fut(cx, record, index) else {
            return false;
        };
        let outcome = if out.is_err() {
            Outcome::Error
        } else {
            Outcome::Ok
        };
        // In the shared poll, the outcome is kept before the future is dropped, so that
        // nothing is kept across the drop (measured: 3 instructions less per branch at 100
        // branches); inline, the other order measured better.
        if N < OWN_WAKERS_FROM {
            self.finished(record, outcome);
        }
        let stop = match out.into_result() {
            Ok(value) => {
                if N >= OWN_WAKERS_FROM {
                    self.kept.keep.keep_finished(value);
                } else {
                    self.kept.keep.keep(value);
                }
                if POLICY == RACE_OK {
                    record.winner = Some(index);
                }
                POLICY == RACE_OK
            }
            Err(error) => {
                if N >= OWN_WAKERS_FROM {
                    self.kept.keep.finish();
                }
                if POLICY == CANCEL {
                    record.failure = Some((index, error));
                } else {
                    record.errors.push((index, error));
                }
                POLICY == CANCEL
            }
        };
        if N >= OWN_WAKERS_FROM {
            self.finished(record, outcome);
        }
        stop
    }
}

impl<F, O, const N: usize, const LIMITED: bool, K: Keep<O>> Place<F, Kept<O, N, LIMITED, K>> {
    /// [`poll_output`](View::poll_output) in a function of its own for `race`, which the
    /// branches of one type share: see [`OWN_WAKERS_FROM`].
    #[inline(never)]
    fn poll_output_shared(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        record: &mut Record<Infallible>,
        index: usize,
    ) -> bool
    where
        F: Future<Output = O>,
    {
        self.view().poll_output(cx, record, index)
    }

    /// `race`: polls the branch unless it [skips](Self::skips) this pass; keeps its output
    /// once it finishes, and says so.
    #[inline(always)]
    fn output(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        record: &mut Record<Infallible>,
        index: usize,
    ) -> bool
    where
        F: Future<Output = O>,
    {
        if self.skips(record, index) {
            false
        } else if N >= OWN_WAKERS_FROM {
            self.poll_output_shared(cx, record, index)
        } else {
            self.view().poll_output(cx, record, index)
        }
    }

    /// [`poll_policy`](View::poll_policy) in a function of its own, which the branches of one
    /// type share: see [`OWN_WAKERS_FROM`]. It records the outcome itself, so that the pass
    /// only tests what it returns.
    #[inline(never)]
    fn poll_policy_shared<E, const POLICY: u8>(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        record: &mut Record<E>,
        index: usize,
    ) -> bool
    where
        F: Future,
        F::Output: BranchResult<Ok = O, Err = E>,
    {
        self.view().poll_policy::<E, POLICY>(cx, record, index)
    }

    /// `cancel`, `finish` and `race_ok`: [`poll_policy`](View::poll_policy) unless the branch
    /// [skips](Self::skips) this pass.
    #[inline(always)]
    fn policy<E, const POLICY: u8>(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        record: &mut Record<E>,
        index: usize,
    ) -> bool
    where
        F: Future,
        F::Output: BranchResult<Ok = O, Err = E>,
    {
        if self.skips(record, index) {
            false
        } else if N >= OWN_WAKERS_FROM {
            self.poll_policy_shared::<E, POLICY>(cx, record, index)
        } else {
            self.view().poll_policy::<E, POLICY>(cx, record, index)
        }
    }

    /// `settle`: polls the branch and keeps its output.
    #[inline(always)]
    pub fn poll_settle(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        record: &mut Record<Infallible>,
        index: usize,
    ) where
        F: Future<Output = O>,
    {
        if self.skips(record, index) {
            return;
        }
        if N >= OWN_WAKERS_FROM {
            self.poll_settle_shared(cx, record, index);
        } else {
            self.view().poll_output(cx, record, index);
        }
    }

    /// [`poll_output`](View::poll_output) in a function of its own for `settle`, which the
    /// branches of one type share: see [`OWN_WAKERS_FROM`]. Unlike
    /// [`poll_output_shared`](Self::poll_output_shared), it returns nothing, which the pass
    /// would not test (measured: 1 instruction less per branch at 100 branches all ready).
    #[inline(never)]
    fn poll_settle_shared(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        record: &mut Record<Infallible>,
        index: usize,
    ) where
        F: Future<Output = O>,
    {
        self.view().poll_output(cx, record, index);
    }

    /// `race`: polls the branch; the first to finish wins. Returns `true` when it won, so that
    /// no later branch is polled in this pass.
    #[inline(always)]
    pub fn poll_race(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        record: &mut Record<Infallible>,
        index: usize,
    ) -> bool
    where
        F: Future<Output = O>,
    {
        let won = self.output(cx, record, index);
        if won {
            record.winner = Some(index);
        }
        won
    }

    /// `cancel`: polls the branch and keeps its success value. On an error, records it and
    /// returns `true`, so that no later branch is polled in this pass.
    #[inline(always)]
    pub fn poll_cancel<E, P>(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        record: &mut P,
        index: usize,
    ) -> bool
    where
        F: Future,
        F::Output: BranchResult<Ok = O, Err = E>,
        P: SameError<E>,
    {
        self.policy::<E, CANCEL>(cx, record.record(), index)
    }

    /// `finish`: polls the branch; keeps its success value, or records its error.
    #[inline(always)]
    pub fn poll_finish<E, P>(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        record: &mut P,
        index: usize,
    ) where
        F: Future,
        F::Output: BranchResult<Ok = O, Err = E>,
        P: SameError<E>,
    {
        self.policy::<E, FINISH>(cx, record.record(), index);
    }

    /// `race_ok`: polls the branch; the first success wins, an error is recorded. Returns
    /// `true` when it won, so that no later branch is polled in this pass.
    #[inline(always)]
    pub fn poll_race_ok<E, P>(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        record: &mut P,
        index: usize,
    ) -> bool
    where
        F: Future,
        F::Output: BranchResult<Ok = O, Err = E>,
        P: SameError<E>,
    {
        self.policy::<E, RACE_OK>(cx, record.record(), index)
    }

    /// Drops the branch future if it is still running, and names it in `stopped` if it had
    /// started (a branch that `limit` held back is dropped without being named). `guarded`
    /// is the branch's [`Probe`], `name` its name, both constants where `gather!` is written.
    /// Called inside the gather's reaping scope.
    #[inline(always)]
    pub fn cancel<E>(
        self: Pin<&mut Self>,
        index: usize,
        guarded: bool,
        name: Name,
        record: &Record<E>,
        stopped: &mut Vec<Branch>,
    ) {
        if self.drop_future(index, guarded, record) && (!LIMITED || index < record.started) {
            debug_assert!(
                stopped.len() < stopped.capacity(),
                "no room to name a branch"
            );
            // Always true: `stopped` has room for every running branch (see
            // `Record::stopped`). Said here, the push needs no path that grows the list, which
            // would take its address and keep it in memory across the drops.
            if stopped.len() < stopped.capacity() {
                stopped.push(Branch::__new(index, name));
            }
        }
    }

    /// Drops the branch future if it is still running, and says whether it was. `guarded` is
    /// the branch's [`Probe`], known where `gather!` is written, so that the check costs
    /// nothing. Called inside the gather's reaping scope: a task the future owned is awaited
    /// before the gather returns.
    #[inline(always)]
    pub fn drop_future<E>(
        self: Pin<&mut Self>,
        index: usize,
        guarded: bool,
        record: &Record<E>,
    ) -> bool {
        let View { mut fut, kept } = self.view();
        let Some(running) = fut.as_mut().as_pin_mut() else {
            return false;
        };
        // Only a guard's own task can be the branch's; marking costs a thread-local write.
        if guarded {
            Reaper::mark(index, core::ptr::from_ref(&*running).addr());
        }
        fut.set(None);
        kept.trace.end(record.stop_outcome(index));
        true
    }

    /// What the gather kept of the output. Called once, after the branch has finished.
    #[inline]
    pub fn take(self: Pin<&mut Self>) -> O {
        self.view().kept.keep.take_kept()
    }

    /// `settle` with `timeout`: the output, or `None` when the deadline cancelled the branch.
    #[inline]
    pub fn take_finished(self: Pin<&mut Self>) -> Option<O> {
        self.view().kept.keep.take()
    }
}
