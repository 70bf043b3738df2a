//! The dynamic form, `for PAT in ITER => FUTURE`: one branch per item, polled in place.
//!
//! Each branch runs in a slot that has a waker of its own, which puts the slot in a shared
//! queue, so a wake polls only the branch it belongs to, at any number of branches. The first
//! slot is the stage, whose future the gather keeps pinned in its own frame: a branch starts
//! there whenever it is free, and one ready at its first poll leaves it free for the next, so
//! a gather whose branches are all ready needs no other slot and allocates nothing for them.
//! The other slots come in chunks that double in size (16, 32, 64, ..), each chunk one
//! allocation for the futures and one for the wakers, and a slot is used again once its
//! branch has ended: a gather allocates by the number of branches running at once, not by the
//! number of items (see `wake::chunks`). A waker that an ended branch left behind can wake its
//! slot's next branch: that costs one extra poll, never a lost wake. Branches start lazily, in
//! input order, when `limit` lets them: the body runs for an item only when its branch starts.

use core::future::Future;
use core::mem::ManuallyDrop;
use core::pin::Pin;
use core::task::{Context, Poll, Waker};

use crate::error::{Branch, Error, Name};
use crate::guard::{Reaper, take_trouble};
use crate::slot::{BranchResult, failures};
use crate::trace::{BranchSpan, GatherSpan, Outcome};
use crate::wake::chunks::{Lazy, STAGE, Slots};

/// The most outputs a gather makes room for before its first branch ends: beyond it, the
/// output vector grows as outputs come, so a long iterator that ends early (at a failure, or
/// a winner) does not reserve memory for items it never takes.
const RESERVE_AT_MOST: usize = 1 << 16;

/// What a gather knows of one slot, beside its future and its waker.
struct Slot {
    /// The branch in the slot, while it holds a future.
    branch: usize,
    span: BranchSpan,
}

impl Slot {
    /// A slot that holds no branch.
    const NONE: Slot = Slot {
        branch: usize::MAX,
        span: BranchSpan::NONE,
    };
}

/// Fills `order` with the running branches, as (branch, slot), lowest index first, the stage's
/// if `stage` holds one. `order` is the engine's list of branches to poll, of no more use when
/// every branch is stopped.
fn running_in_order<F>(slots: &Slots<F, Slot>, stage: &Option<F>, order: &mut Vec<(usize, usize)>) {
    order.clear();
    if stage.is_some() {
        order.push((slots.meta(STAGE).branch, STAGE));
    }
    order.extend(slots.running().map(|(slot, entry)| (entry.branch, slot)));
    order.sort_unstable();
}

/// Whether the task running the gather has spent tokio's cooperative budget, after a branch
/// was found pending: then the gather stops polling branches until its next poll, which it
/// wakes at once. A task may see 128 ready tokio resources per poll; past that, a tokio
/// resource polled only wakes its branch again, so polling the rest of the woken branches now
/// would queue each of them again, at every poll (with thousands of spawned branches ending
/// at once, the polls per branch grew with their number). Checked only after a pending
/// branch, because only a ready one spends budget: the first branch polled past the budget
/// is pending, and the gather stops there. Outside a tokio runtime, there is no budget.
fn out_of_budget(cx: &Context<'_>) -> bool {
    if tokio::task::coop::has_budget_remaining() {
        return false;
    }
    cx.waker().wake_by_ref();
    true
}

/// What one step of the engine found.
#[derive(Debug)]
pub(crate) enum Step<O> {
    /// The branch at this index finished with this output; its span is to be ended.
    Finished(usize, BranchSpan, O),
    /// Some branch is still running; the gather's waker will be woken.
    Pending,
    /// Every branch has finished and the iterator is exhausted.
    Done,
    /// A spawned branch's task panicked or was cancelled from outside: every branch has been
    /// cancelled, and the gather ends in a panic once their tasks are gone.
    Trouble,
}

/// How a run of branches in the stage ended (see [`Engine::run_ready`]).
enum Run<E, O> {
    /// The policy ended the gather with this outcome.
    Ended(E),
    /// The iterator is exhausted, and no branch is running.
    Exhausted,
    /// A branch was pending; the engine goes on with its other steps.
    Continue,
    /// A branch was pending, and the step to report (`Pending` or `Trouble`).
    Step(Step<O>),
}

/// Runs the branches of the dynamic form: starts them in order under `limit`, polls each
/// when its own waker was woken, and reports each output as it comes.
#[must_use = "a gather does nothing unless polled"]
pub(crate) struct Engine<'a, I, C, F> {
    /// `None` once exhausted.
    iter: Option<I>,
    make: C,
    limit: usize,
    /// Whether branches are spawned tasks, whose trouble the engine looks for.
    spawn: bool,
    /// The stage's future, pinned in the gather's frame.
    stage: Pin<&'a mut Option<F>>,
    /// Where the queue of the branches' wakers is made when first needed, which the stage's
    /// lent waker points at. It holds nothing to drop until a branch is pending or a clone of
    /// the stage's waker makes the queue: the engine's drop drops it only then.
    lazy: ManuallyDrop<Lazy>,
    /// How many branches have started.
    started: usize,
    running: usize,
    name: Name,
    /// What only a gather with a branch that was pending or stopped needs: made then. Until
    /// then it is one word, so that a gather whose branches are all ready at their first poll
    /// neither writes nor drops the rest.
    busy: ManuallyDrop<Option<Busy<F>>>,
    trace: GatherSpan,
}

/// The part of an engine that only a branch that was pending or stopped needs. Its fields
/// are dropped in order: the slots first, the reaper last.
struct Busy<F> {
    /// The branch futures, their wakers, and which branch each slot (and the stage) holds.
    slots: Slots<F, Slot>,
    /// How many slots have been used so far.
    made: usize,
    /// A slot whose branch has ended, ready for the next branch: kept apart from `free`, so
    /// that when each branch is ready at its first poll, they all take the same slot without
    /// touching the list. [`STAGE`] when there is none: the stage is never a spare.
    spare: usize,
    /// The other slots whose branch has ended.
    free: Vec<usize>,
    /// Woken branches still to poll in this poll of the gather, as (branch, slot), highest
    /// branch first. Taken once per poll of the gather, so that a branch that wakes itself at
    /// once is polled again at the next poll, not in a loop inside this one.
    to_poll: Vec<(usize, usize)>,
    /// Made when a branch is first stopped or in trouble: until then, nothing is reaped.
    reaper: Option<Reaper>,
}

impl<F> Busy<F> {
    fn new() -> Self {
        Busy {
            slots: Slots::new(Slot::NONE),
            made: 0,
            spare: STAGE,
            free: Vec::new(),
            to_poll: Vec::new(),
            reaper: None,
        }
    }
}

impl<I, C, F> core::fmt::Debug for Engine<'_, I, C, F> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Engine")
            .field("started", &self.started)
            .field("running", &self.running)
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

/// A gather dropped before it ended (its caller gave up) drops its running branches in input
/// order, as it cancels them.
impl<I, C, F> Drop for Engine<'_, I, C, F> {
    #[inline]
    fn drop(&mut self) {
        // Only a branch that was pending or stopped makes a branch run, a slot, a list or a
        // reaper, and only it or a clone of the stage's waker makes a queue.
        if self.busy.is_some() || self.lazy.has_queue() {
            self.drop_busy();
        }
    }
}

impl<I, C, F> Engine<'_, I, C, F> {
    /// Drops the running branches, lowest index first, then the slots, the lists, the reaper
    /// and the queue. Each is taken out first, so that it is dropped even if a branch's drop
    /// panics.
    #[cold]
    fn drop_busy(&mut self) {
        let _lazy = core::mem::replace(&mut *self.lazy, Lazy::new());
        let Some(mut busy) = self.busy.take() else {
            return;
        };
        if self.running == 0 {
            return;
        }
        let mut order = core::mem::take(&mut busy.to_poll);
        running_in_order(&busy.slots, &self.stage, &mut order);
        for &(_, slot) in &order {
            if slot == STAGE {
                self.stage.set(None);
            } else {
                busy.slots.clear(slot);
            }
        }
    }
}

impl<I, C, F> Engine<'_, I, C, F>
where
    I: Iterator,
    C: FnMut(usize, I::Item) -> F,
    F: Future,
{
    /// Starts a poll of the gather: remembers its waker, and takes the woken branches, to
    /// poll lowest index first.
    fn begin(&mut self, cx: &Context<'_>) {
        let Engine { lazy, busy, .. } = self;
        let Busy { slots, to_poll, .. } = busy.get_or_insert_with(Busy::new);
        let before = to_poll.len();
        slots.begin(lazy, cx.waker(), |slot, entry| {
            to_poll.push((entry.branch, slot))
        });
        if to_poll.len() > before {
            // Some may be left from a poll that ran out of budget, and woken again since.
            to_poll.sort_unstable_by(|a, b| b.cmp(a));
            to_poll.dedup();
        }
    }

    /// Polls the next branch that may have progressed, and reports the first that finishes.
    /// When several finish in one poll of the gather, they come lowest index first.
    fn step(&mut self, cx: &Context<'_>) -> Step<F::Output> {
        loop {
            if let Some(busy) = self.busy.as_mut()
                && let Some((branch, slot)) = busy.to_poll.pop()
            {
                if busy.slots.meta(slot).branch != branch {
                    continue;
                }
                match self.poll_slot(slot, cx.waker()) {
                    Step::Pending if out_of_budget(cx) => return Step::Pending,
                    Step::Pending => continue,
                    step => return step,
                }
            }
            if self.running < self.limit {
                if let Some(item) = self.iter.as_mut().and_then(Iterator::next) {
                    match self.start(item, cx.waker()) {
                        Step::Pending if out_of_budget(cx) => return Step::Pending,
                        Step::Pending => continue,
                        step => return step,
                    }
                }
                self.iter = None;
            }
            if self.running == 0 && self.iter.is_none() {
                return Step::Done;
            }
            return Step::Pending;
        }
    }

    /// While no branch is running, starts each next branch in the stage and polls it, and
    /// hands its output to `output` while each is ready at its first poll: the loop of a
    /// gather whose branches are all ready, with the stage's waker made once for all. Stops
    /// when `output` ends the gather, when the iterator is exhausted, or after a branch that
    /// is pending, which keeps the stage.
    #[inline(never)]
    fn run_ready<E>(
        &mut self,
        cx: &Context<'_>,
        mut output: impl FnMut(usize, BranchSpan, F::Output) -> Option<E>,
    ) -> Run<E, F::Output> {
        enum Found<E> {
            Ended(E),
            Exhausted,
            Pending(usize, BranchSpan),
        }
        let Engine {
            iter,
            make,
            stage,
            lazy,
            started,
            trace,
            name,
            ..
        } = self;
        let Some(items) = iter.as_mut() else {
            return Run::Exhausted;
        };
        let name = *name;
        let mut stage = stage.as_mut();
        // Counted here and kept at the end: a panic out of a branch ends the gather.
        let mut next = *started;
        let found = lazy.lend(|waker| {
            let mut cx = Context::from_waker(waker);
            // A branch that finished stays in the stage until the next is made, whose `set`
            // drops it: one write per branch instead of two, and the loop stays short. The last
            // is dropped when the loop ends, whichever way it ends but pending.
            for item in items {
                let index = next;
                next += 1;
                stage.set(Some(make(index, item)));
                let mut span = BranchSpan::NONE;
                span.start(trace, index, || name);
                let Some(fut) = stage.as_mut().as_pin_mut() else {
                    unreachable!("the future was just put in the stage");
                };
                match span.poll(|| fut.poll(&mut cx)) {
                    Poll::Ready(out) => {
                        if let Some(end) = output(index, span, out) {
                            stage.set(None);
                            return Found::Ended(end);
                        }
                    }
                    Poll::Pending => return Found::Pending(index, span),
                }
            }
            stage.set(None);
            Found::Exhausted
        });
        *started = next;
        match found {
            Found::Ended(end) => Run::Ended(end),
            Found::Exhausted => {
                self.iter = None;
                Run::Exhausted
            }
            Found::Pending(index, span) => {
                let slots = &mut self.busy.get_or_insert_with(Busy::new).slots;
                slots.pending(&self.lazy, cx.waker());
                *slots.meta_mut(STAGE) = Slot {
                    branch: index,
                    span,
                };
                self.running += 1;
                match self.after_pending(index) {
                    Step::Pending if out_of_budget(cx) => Run::Step(Step::Pending),
                    Step::Pending => Run::Continue,
                    step => Run::Step(step),
                }
            }
        }
    }

    /// Runs `f` with the future of `slot` (or of the stage), pinned, its waker, and what the
    /// gather keeps of it.
    #[inline(always)]
    fn with_slot<R>(
        &mut self,
        slot: usize,
        f: impl FnOnce(Pin<&mut Option<F>>, &Waker, &mut Slot) -> R,
    ) -> R {
        let Engine {
            lazy, stage, busy, ..
        } = self;
        let slots = &mut busy.get_or_insert_with(Busy::new).slots;
        if slot == STAGE {
            slots.with_stage(lazy, stage.as_mut(), f)
        } else {
            slots.with(slot, f)
        }
    }

    /// Starts the next branch in the stage if it is free, else in a free slot, or in a new
    /// one, and polls it. A branch that is ready at once leaves its slot free for the next: it
    /// is never counted as running.
    #[inline(always)]
    fn start(&mut self, item: I::Item, parent: &Waker) -> Step<F::Output> {
        let index = self.started;
        self.started += 1;
        let fut = (self.make)(index, item);
        let slot = if self.stage.is_none() {
            STAGE
        } else {
            let busy = self.busy.get_or_insert_with(Busy::new);
            match core::mem::replace(&mut busy.spare, STAGE) {
                STAGE => match busy.free.pop() {
                    Some(slot) => slot,
                    None => self.new_slot(parent),
                },
                slot => slot,
            }
        };
        let mut span = BranchSpan::NONE;
        let name = self.name;
        span.start(&self.trace, index, || name);
        let polled = self.with_slot(slot, |mut future, waker, _| {
            future.set(Some(fut));
            let Some(fut) = future.as_mut().as_pin_mut() else {
                unreachable!("the future was just put in its slot");
            };
            let polled = span.poll(|| fut.poll(&mut Context::from_waker(waker)));
            if polled.is_ready() {
                future.set(None);
            }
            polled
        });
        match polled {
            Poll::Ready(out) => {
                self.release(slot);
                Step::Finished(index, span, out)
            }
            Poll::Pending => {
                let slots = &mut self.busy.get_or_insert_with(Busy::new).slots;
                if slot == STAGE {
                    slots.pending(&self.lazy, parent);
                }
                *slots.meta_mut(slot) = Slot {
                    branch: index,
                    span,
                };
                self.running += 1;
                self.after_pending(index)
            }
        }
    }

    /// Gives back the slot of a branch that ended (the stage is free once its future is gone).
    #[inline]
    fn release(&mut self, slot: usize) {
        if slot == STAGE {
            return;
        }
        let busy = self.busy.get_or_insert_with(Busy::new);
        if busy.spare == STAGE {
            busy.spare = slot;
        } else {
            busy.free.push(slot);
        }
    }

    /// A slot never used yet, from a new chunk when the last is full.
    fn new_slot(&mut self, parent: &Waker) -> usize {
        let busy = self.busy.get_or_insert_with(Busy::new);
        let slot = busy.made;
        busy.made += 1;
        if slot == busy.slots.len() {
            busy.slots.grow(&self.lazy, parent, || Slot::NONE);
        }
        slot
    }

    /// Polls the running branch in `slot`, that was woken.
    #[inline(always)]
    fn poll_slot(&mut self, slot: usize, parent: &Waker) -> Step<F::Output> {
        let (index, polled) = self.with_slot(slot, |mut future, waker, entry| {
            let Some(fut) = future.as_mut().as_pin_mut() else {
                return (entry.branch, None);
            };
            let polled = entry
                .span
                .poll(|| fut.poll(&mut Context::from_waker(waker)));
            let polled = match polled {
                Poll::Ready(out) => {
                    future.set(None);
                    let span = core::mem::replace(&mut entry.span, BranchSpan::NONE);
                    Poll::Ready((span, out))
                }
                Poll::Pending => Poll::Pending,
            };
            (entry.branch, Some(polled))
        });
        match polled {
            None => Step::Pending,
            Some(Poll::Ready((span, out))) => {
                self.release(slot);
                self.running -= 1;
                Step::Finished(index, span, out)
            }
            Some(Poll::Pending) => {
                if slot == STAGE {
                    (self.busy.get_or_insert_with(Busy::new).slots).pending(&self.lazy, parent);
                }
                self.after_pending(index)
            }
        }
    }

    /// After branch `index` was found pending: if it is a spawned branch whose task panicked
    /// or was cancelled from outside, the gather ends.
    #[inline]
    fn after_pending(&mut self, index: usize) -> Step<F::Output> {
        if self.spawn
            && let Some((_, error)) = take_trouble()
        {
            return self.trouble(index, error);
        }
        Step::Pending
    }

    /// The task of spawned branch `index` panicked or was cancelled from outside: cancels
    /// every branch, and keeps the trouble for the gather to end with.
    #[cold]
    fn trouble(&mut self, index: usize, error: tokio::task::JoinError) -> Step<F::Output> {
        self.stop_all(Outcome::Cancelled, Some(index));
        let busy = self.busy.get_or_insert_with(Busy::new);
        busy.reaper
            .get_or_insert_default()
            .trouble(index, self.name, error);
        Step::Trouble
    }

    /// Cancels every running branch: see [`stop_all`](Self::stop_all).
    fn cancel_all(&mut self) -> Vec<Branch> {
        self.stop_all(Outcome::Cancelled, None)
    }

    /// Drops every running branch, in index order, inside the reaping scope, and names each;
    /// branches that never started are not named, and the iterator is not advanced again.
    /// Their spans record `stop`, but `troubled`'s records that it panicked.
    fn stop_all(&mut self, stop: Outcome, troubled: Option<usize>) -> Vec<Branch> {
        self.iter = None;
        self.running = 0;
        let Engine {
            stage, busy, name, ..
        } = self;
        let Busy {
            slots,
            to_poll,
            reaper,
            ..
        } = busy.get_or_insert_with(Busy::new);
        running_in_order(slots, stage, to_poll);
        reaper.get_or_insert_default().collect(|| {
            let mut stopped = Vec::with_capacity(to_poll.len());
            for (index, slot) in to_poll.drain(..) {
                let outcome = if troubled == Some(index) {
                    Outcome::Panicked
                } else {
                    stop
                };
                let stop = |mut future: Pin<&mut Option<F>>, entry: &mut Slot| {
                    if let Some(fut) = future.as_mut().as_pin_mut() {
                        Reaper::mark(index, core::ptr::from_ref(&*fut).addr());
                        future.set(None);
                    }
                    entry.span.end(outcome);
                };
                if slot == STAGE {
                    stop(stage.as_mut(), slots.meta_mut(STAGE));
                } else {
                    slots.with(slot, |future, _, entry| stop(future, entry));
                }
                stopped.push(Branch::__new(index, name));
            }
            stopped
        })
    }
}

/// What a policy does with the outputs of the dynamic form's branches.
pub trait Policy<O> {
    /// What the gather returns.
    type Out;
    /// Takes the output of branch `index`; `Some` ends the gather early (the other branches
    /// are then cancelled), and `stopped` gives the branches that were cancelled.
    fn output(
        &mut self,
        index: usize,
        out: O,
        name: Name,
        stopped: &mut dyn FnMut() -> Vec<Branch>,
    ) -> Option<Self::Out>;
    /// The value once every branch has ended.
    fn done(&mut self, name: Name) -> Self::Out;
    /// The value at the deadline, given the branches it cancelled and how many had started.
    fn timed_out(&mut self, pending: Vec<Branch>, started: usize) -> Self::Out;
    /// Takes out of an error the branches whose task finished before its abort took effect.
    fn keep_finished(_out: &mut Self::Out, _reaper: &Reaper) {}
    /// Whether a branch's output is a failure (for its span, under the `tracing` feature).
    fn is_error(_out: &O) -> bool {
        false
    }
    /// [`output`](Self::output) in the loop of branches ready at their first poll, while no
    /// other branch is running (so an end cancels none): kept small, as it runs once per
    /// branch there.
    #[inline(always)]
    fn output_next(&mut self, index: usize, out: O, name: Name) -> Option<Self::Out> {
        self.output(index, out, name, &mut Vec::new)
    }
}

/// Puts `value` at `index` of `outs`, which grows as branches start.
fn put<T>(outs: &mut Vec<Option<T>>, index: usize, value: T) {
    if outs.len() <= index {
        outs.resize_with(index + 1, || None);
    }
    outs[index] = Some(value);
}

/// The outputs of the branches, in input order.
///
/// Each output that comes in input order is pushed to `done` as it comes (when every branch is
/// ready at its first poll, all do), and `done` is the gather's value as it stands. An output
/// that comes ahead of an earlier branch's goes to `scattered`, at its index; the outputs
/// that then come in turn still go to `done`, and once every branch has finished, the rest of
/// `scattered` follows them. So the loop of branches ready at once has one check per output.
#[derive(Debug)]
struct Outs<T> {
    done: Vec<T>,
    /// By branch index: `Some` for an output that came ahead of its turn and is not in
    /// `done`. `None` until one does (one word to write for a gather that never needs it).
    scattered: Option<Vec<Option<T>>>,
}

impl<T> Outs<T> {
    /// No outputs yet, with room for `items` in input order.
    fn with_room(items: usize) -> Self {
        Outs {
            done: Vec::with_capacity(items),
            scattered: None,
        }
    }

    #[inline(always)]
    fn put(&mut self, index: usize, value: T) {
        if index == self.done.len() {
            self.done.push(value);
        } else {
            put(self.scattered.get_or_insert_default(), index, value);
        }
    }

    /// [`put`](Self::put) for the loop of branches ready at once, where outputs come in input
    /// order but for the first: kept small, with the rest out of line.
    #[inline(always)]
    fn put_next(&mut self, index: usize, value: T) {
        if index == self.done.len() {
            self.done.push(value);
        } else {
            self.scatter_cold(index, value);
        }
    }

    /// Puts an output that does not come next in input order.
    #[cold]
    fn scatter_cold(&mut self, index: usize, value: T) {
        put(self.scattered.get_or_insert_default(), index, value);
    }

    /// The outputs of `done`, then those of `scattered` past them, as options.
    fn drain(&mut self) -> (Vec<T>, impl Iterator<Item = Option<T>>) {
        let done = core::mem::take(&mut self.done);
        let rest = (self.scattered.take())
            .unwrap_or_default()
            .into_iter()
            .skip(done.len());
        (done, rest)
    }

    #[inline]
    fn take(&mut self) -> Vec<T> {
        if self.scattered.is_none() {
            return core::mem::take(&mut self.done);
        }
        self.take_scattered()
    }

    #[cold]
    fn take_scattered(&mut self) -> Vec<T> {
        let (mut done, rest) = self.drain();
        done.extend(rest.map(|out| out.expect("gather! returned before a branch finished")));
        done
    }

    /// Every output so far, `None` for branches that have not finished.
    fn take_options(&mut self) -> Vec<Option<T>> {
        let (done, rest) = self.drain();
        done.into_iter().map(Some).chain(rest).collect()
    }
}

/// The error of a gather under `cancel` whose branch `index` failed: cancels the others.
#[cold]
fn failed<E>(
    index: usize,
    error: E,
    name: Name,
    stopped: &mut dyn FnMut() -> Vec<Branch>,
) -> Error<E> {
    Error::Failed {
        branch: Branch::__new(index, name),
        error,
        cancelled: stopped(),
    }
}

/// `policy = cancel`.
#[derive(Debug)]
pub struct Cancel<T> {
    outs: Outs<T>,
}

/// `policy = finish`.
#[derive(Debug)]
pub struct Finish<T, E> {
    outs: Outs<T>,
    errors: Vec<(usize, E)>,
}

/// `policy = settle`; with `timeout`, each output is an `Option`.
#[derive(Debug)]
pub struct Settle<O, const TIMED: bool> {
    outs: Outs<O>,
}

/// `policy = race`; with `timeout`, the output is an `Option`.
#[derive(Debug)]
pub struct Race<const TIMED: bool>;

/// `policy = race_ok`.
#[derive(Debug)]
pub struct RaceOk<E> {
    errors: Vec<(usize, E)>,
}

/// How a gather makes its policy, before the first poll.
pub trait Room {
    /// The policy with no output yet, and room for the outputs of `items` branches if it
    /// keeps them.
    fn with_room(items: usize) -> Self;
}

impl<T> Room for Cancel<T> {
    fn with_room(items: usize) -> Self {
        Cancel {
            outs: Outs::with_room(items),
        }
    }
}

impl<T, E> Room for Finish<T, E> {
    fn with_room(items: usize) -> Self {
        Finish {
            outs: Outs::with_room(items),
            errors: Vec::new(),
        }
    }
}

impl<O, const TIMED: bool> Room for Settle<O, TIMED> {
    fn with_room(items: usize) -> Self {
        Settle {
            outs: Outs::with_room(items),
        }
    }
}

impl<const TIMED: bool> Room for Race<TIMED> {
    fn with_room(_: usize) -> Self {
        Race
    }
}

impl<E> Room for RaceOk<E> {
    fn with_room(_: usize) -> Self {
        RaceOk { errors: Vec::new() }
    }
}

impl<R: BranchResult> Policy<R> for Cancel<R::Ok> {
    #[inline(always)]
    fn output_next(&mut self, index: usize, out: R, name: Name) -> Option<Self::Out> {
        match out.into_result() {
            Ok(value) => {
                self.outs.put_next(index, value);
                None
            }
            Err(error) => Some(Err(failed(index, error, name, &mut Vec::new))),
        }
    }

    fn is_error(out: &R) -> bool {
        out.is_err()
    }

    type Out = Result<Vec<R::Ok>, Error<R::Err>>;

    #[inline(always)]
    fn output(
        &mut self,
        index: usize,
        out: R,
        name: Name,
        stopped: &mut dyn FnMut() -> Vec<Branch>,
    ) -> Option<Self::Out> {
        match out.into_result() {
            Ok(value) => {
                self.outs.put(index, value);
                None
            }
            Err(error) => Some(Err(failed(index, error, name, stopped))),
        }
    }

    fn done(&mut self, _: Name) -> Self::Out {
        Ok(self.outs.take())
    }

    fn timed_out(&mut self, pending: Vec<Branch>, _: usize) -> Self::Out {
        Err(Error::TimedOut { pending })
    }

    fn keep_finished(out: &mut Self::Out, reaper: &Reaper) {
        reaper.keep_finished(out);
    }
}

impl<R: BranchResult> Policy<R> for Finish<R::Ok, R::Err> {
    #[inline(always)]
    fn output_next(&mut self, index: usize, out: R, _: Name) -> Option<Self::Out> {
        match out.into_result() {
            Ok(value) => self.outs.put_next(index, value),
            Err(error) => self.errors.push((index, error)),
        }
        None
    }

    fn is_error(out: &R) -> bool {
        out.is_err()
    }

    type Out = Result<Vec<R::Ok>, Error<R::Err>>;

    #[inline(always)]
    fn output(
        &mut self,
        index: usize,
        out: R,
        _: Name,
        _: &mut dyn FnMut() -> Vec<Branch>,
    ) -> Option<Self::Out> {
        match out.into_result() {
            Ok(value) => self.outs.put(index, value),
            Err(error) => self.errors.push((index, error)),
        }
        None
    }

    fn done(&mut self, name: Name) -> Self::Out {
        if self.errors.is_empty() {
            Ok(self.outs.take())
        } else {
            Err(failures(core::mem::take(&mut self.errors), |_| name))
        }
    }

    fn timed_out(&mut self, pending: Vec<Branch>, _: usize) -> Self::Out {
        Err(Error::TimedOut { pending })
    }

    fn keep_finished(out: &mut Self::Out, reaper: &Reaper) {
        reaper.keep_finished(out);
    }
}

impl<O> Policy<O> for Settle<O, false> {
    #[inline(always)]
    fn output_next(&mut self, index: usize, out: O, _: Name) -> Option<Self::Out> {
        self.outs.put_next(index, out);
        None
    }

    type Out = Vec<O>;

    #[inline(always)]
    fn output(
        &mut self,
        index: usize,
        out: O,
        _: Name,
        _: &mut dyn FnMut() -> Vec<Branch>,
    ) -> Option<Self::Out> {
        self.outs.put(index, out);
        None
    }

    fn done(&mut self, _: Name) -> Self::Out {
        self.outs.take()
    }

    fn timed_out(&mut self, _: Vec<Branch>, _: usize) -> Self::Out {
        unreachable!("gather!: settle without a timeout timed out")
    }
}

impl<O> Policy<O> for Settle<O, true> {
    #[inline(always)]
    fn output_next(&mut self, index: usize, out: O, _: Name) -> Option<Self::Out> {
        self.outs.put_next(index, out);
        None
    }

    type Out = Vec<Option<O>>;

    #[inline(always)]
    fn output(
        &mut self,
        index: usize,
        out: O,
        _: Name,
        _: &mut dyn FnMut() -> Vec<Branch>,
    ) -> Option<Self::Out> {
        self.outs.put(index, out);
        None
    }

    fn done(&mut self, _: Name) -> Self::Out {
        self.outs.take_options()
    }

    /// What finished is kept; `None` for every other item whose branch started.
    fn timed_out(&mut self, _: Vec<Branch>, started: usize) -> Self::Out {
        let mut outs = self.outs.take_options();
        outs.resize_with(started, || None);
        outs
    }
}

impl<O> Policy<O> for Race<false> {
    type Out = O;

    #[inline(always)]
    fn output(
        &mut self,
        _: usize,
        out: O,
        _: Name,
        stopped: &mut dyn FnMut() -> Vec<Branch>,
    ) -> Option<O> {
        stopped();
        Some(out)
    }

    fn done(&mut self, _: Name) -> O {
        panic!(
            "gather!(policy = race; for ..) ran over an empty iterator: a race with no branch \
             has no outcome to return"
        )
    }

    fn timed_out(&mut self, _: Vec<Branch>, _: usize) -> O {
        unreachable!("gather!: race without a timeout timed out")
    }
}

impl<O> Policy<O> for Race<true> {
    type Out = Option<O>;

    #[inline(always)]
    fn output(
        &mut self,
        _: usize,
        out: O,
        _: Name,
        stopped: &mut dyn FnMut() -> Vec<Branch>,
    ) -> Option<Option<O>> {
        stopped();
        Some(Some(out))
    }

    fn done(&mut self, _: Name) -> Option<O> {
        panic!(
            "gather!(policy = race; for ..) ran over an empty iterator: a race with no branch \
             has no outcome to return"
        )
    }

    fn timed_out(&mut self, _: Vec<Branch>, _: usize) -> Option<O> {
        None
    }
}

impl<R: BranchResult> Policy<R> for RaceOk<R::Err> {
    fn is_error(out: &R) -> bool {
        out.is_err()
    }

    type Out = Result<R::Ok, Error<R::Err>>;

    #[inline(always)]
    fn output(
        &mut self,
        index: usize,
        out: R,
        _: Name,
        stopped: &mut dyn FnMut() -> Vec<Branch>,
    ) -> Option<Self::Out> {
        match out.into_result() {
            Ok(value) => {
                stopped();
                Some(Ok(value))
            }
            Err(error) => {
                self.errors.push((index, error));
                None
            }
        }
    }

    /// Every failure in input order (none over an empty iterator).
    fn done(&mut self, name: Name) -> Self::Out {
        Err(failures(core::mem::take(&mut self.errors), |_| name))
    }

    fn timed_out(&mut self, pending: Vec<Branch>, _: usize) -> Self::Out {
        Err(Error::TimedOut { pending })
    }

    fn keep_finished(out: &mut Self::Out, reaper: &Reaper) {
        reaper.keep_finished(out);
    }
}

/// A dynamic-form gather: the engine, the policy, and the outcome it ends with once the tasks
/// of the branches it cancelled are gone.
///
/// `Out` is the policy's outcome type; it is a parameter of its own, and the struct has no
/// bounds, so that a body that is not a future is reported once, where it is written.
#[must_use = "a gather does nothing unless polled"]
pub struct Driver<'a, I, C, F, P, Out> {
    engine: Engine<'a, I, C, F>,
    policy: P,
    /// Kept across polls only while the tasks of stopped branches are reaped, which makes the
    /// engine busy: dropped by the driver's drop only then.
    ending: ManuallyDrop<Option<Out>>,
}

impl<I, C, F, P, Out> Drop for Driver<'_, I, C, F, P, Out> {
    #[inline]
    fn drop(&mut self) {
        if self.engine.busy.is_some() {
            drop(ManuallyDrop::into_inner(core::mem::take(&mut self.ending)));
        }
    }
}

impl<I, C, F, P, Out> core::fmt::Debug for Driver<'_, I, C, F, P, Out> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Driver")
            .field("engine", &self.engine)
            .field("ending", &self.ending.is_some())
            .finish_non_exhaustive()
    }
}

impl<'a, I, C, F, P: Room, Out> Driver<'a, I, C, F, P, Out>
where
    I: Iterator,
    C: FnMut(usize, I::Item) -> F,
{
    /// A gather under policy `P` over `iter`, making each branch with `make` (given the item's
    /// index and the item) when it starts, running at most `limit` at once. `name` names every
    /// branch in errors; `spawn` says that branches are spawned tasks; `policy` names the
    /// policy in the gather's span (under the `tracing` feature). `stage` is the place, pinned
    /// in the gather's frame and empty, where each branch starts when it is free.
    ///
    /// Made just before its first poll, it makes room for the outputs at once: as many as the
    /// iterator says it has left at least, up to `RESERVE_AT_MOST`. An endless iterator such
    /// as `0..` says `usize::MAX`, and a gather over it ends at its first failure or winner.
    ///
    /// The bounds on `make` are here, where the body's closure is written, so that its
    /// argument's type is known inside the body (`for s in &words => f(s.len())`). `F: Future`
    /// is left to the policies, so that a body that is not a future is reported once.
    pub fn new(
        iter: I,
        make: C,
        limit: usize,
        name: Name,
        spawn: bool,
        policy: &'static str,
        stage: Pin<&'a mut Option<F>>,
    ) -> Self {
        // The policy first: if its room cannot be made, nothing else was.
        Driver {
            policy: P::with_room(iter.size_hint().0.min(RESERVE_AT_MOST)),
            engine: Engine {
                iter: Some(iter),
                make,
                limit,
                spawn,
                stage,
                lazy: ManuallyDrop::new(Lazy::new()),
                started: 0,
                running: 0,
                name,
                busy: ManuallyDrop::new(None),
                trace: GatherSpan::new(policy),
            },
            ending: ManuallyDrop::new(None),
        }
    }
}

impl<I, C, F, P, Out> Driver<'_, I, C, F, P, Out>
where
    I: Iterator,
    C: FnMut(usize, I::Item) -> F,
    F: Future,
    P: Policy<F::Output, Out = Out>,
{
    /// Whether the gather is ending: it waits only for the tasks it aborted.
    pub fn is_ending(&self) -> bool {
        self.ending.is_some()
            || (self.engine.busy.as_ref())
                .and_then(|busy| busy.reaper.as_ref())
                .is_some_and(Reaper::ends_in_panic)
    }

    /// Polls the branches; the policy's outcome once it has one and every task it aborted is
    /// gone.
    pub fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Out> {
        if self.engine.started == 0 {
            // The first poll: nothing is woken or ending yet. A gather whose branches are all
            // ready at their first poll ends here, without the engine's other steps.
            match self.run_ready(cx) {
                Run::Exhausted => return Poll::Ready(self.policy.done(self.engine.name)),
                Run::Continue => {}
                Run::Step(Step::Pending) => return Poll::Pending,
                Run::Ended(end) => {
                    *self.ending = Some(end);
                    return self.poll_end(cx);
                }
                Run::Step(_) => return self.poll_end(cx),
            }
        } else if self.is_ending() {
            return self.poll_end(cx);
        } else {
            self.engine.begin(cx);
        }
        self.poll_branches(cx)
    }

    /// Runs the branches that start in the stage while each is ready at its first poll (see
    /// [`Engine::run_ready`]), handing their outputs to the policy.
    #[inline(always)]
    fn run_ready(&mut self, cx: &Context<'_>) -> Run<Out, F::Output> {
        let Driver { engine, policy, .. } = self;
        let name = engine.name;
        engine.run_ready(cx, |index, mut span, out| {
            span.end(if P::is_error(&out) {
                Outcome::Error
            } else {
                Outcome::Ok
            });
            // No other branch is running: an end cancels none.
            policy.output_next(index, out, name)
        })
    }

    /// The rest of a poll, once the woken branches are taken: polls them, starts the next
    /// branches, and hands each output to the policy, until the gather waits or ends.
    fn poll_branches(&mut self, cx: &mut Context<'_>) -> Poll<Out> {
        loop {
            if self.engine.running == 0
                && (self.engine.busy.as_ref()).is_none_or(|busy| busy.to_poll.is_empty())
            {
                match self.run_ready(cx) {
                    Run::Ended(end) => {
                        *self.ending = Some(end);
                        break;
                    }
                    Run::Step(Step::Pending) => return Poll::Pending,
                    Run::Step(_) => break,
                    Run::Exhausted | Run::Continue => {}
                }
            }
            match self.engine.step(cx) {
                Step::Finished(index, mut span, out) => {
                    let outcome = if P::is_error(&out) {
                        Outcome::Error
                    } else {
                        Outcome::Ok
                    };
                    span.end(outcome);
                    let Driver { engine, policy, .. } = self;
                    let name = engine.name;
                    if let Some(end) = policy.output(index, out, name, &mut || engine.cancel_all())
                    {
                        *self.ending = Some(end);
                        break;
                    }
                }
                Step::Pending => return Poll::Pending,
                Step::Done => return Poll::Ready(self.policy.done(self.engine.name)),
                Step::Trouble => break,
            }
        }
        self.poll_end(cx)
    }

    /// Ends the gather at its deadline: cancels every running branch.
    pub fn time_out(&mut self) {
        let started = self.engine.started;
        let pending = self.engine.stop_all(Outcome::TimedOut, None);
        *self.ending = Some(self.policy.timed_out(pending, started));
    }

    fn poll_end(&mut self, cx: &mut Context<'_>) -> Poll<Out> {
        let Some(reaper) = (self.engine.busy.as_mut()).and_then(|busy| busy.reaper.as_mut()) else {
            let Some(out) = self.ending.take() else {
                unreachable!("gather!: ended without an outcome");
            };
            return Poll::Ready(out);
        };
        if reaper.poll_reaped(cx).is_pending() {
            return Poll::Pending;
        }
        reaper.resume_panic();
        let Some(mut out) = self.ending.take() else {
            unreachable!("gather!: ended without an outcome");
        };
        P::keep_finished(&mut out, reaper);
        Poll::Ready(out)
    }
}

#[cfg(test)]
mod tests {
    use super::Outs;

    /// Puts `order`'s outputs (each its own index) in the order given.
    fn outs(order: &[usize]) -> Outs<usize> {
        let mut outs = Outs::with_room(order.len());
        for &index in order {
            outs.put(index, index);
        }
        outs
    }

    #[test]
    fn outputs_come_back_in_input_order_whatever_order_they_came_in() {
        for order in [
            &[0, 1, 2, 3, 4][..],
            &[4, 3, 2, 1, 0],
            &[0, 2, 1, 3, 4],
            &[1, 0, 2, 4, 3],
            &[0, 1, 4, 2, 3],
            &[3, 0, 1, 2, 4],
        ] {
            assert_eq!(outs(order).take(), [0, 1, 2, 3, 4], "{order:?}");
        }
        let mut outs = Outs::with_room(0);
        outs.put_next(0, 0);
        outs.put_next(2, 2);
        outs.put_next(1, 1);
        outs.put_next(3, 3);
        assert_eq!(outs.take(), [0, 1, 2, 3]);
    }

    #[test]
    fn outputs_so_far_leave_none_for_the_branches_still_running() {
        assert_eq!(
            outs(&[0, 3, 1, 5]).take_options(),
            [Some(0), Some(1), None, Some(3), None, Some(5)]
        );
        assert_eq!(outs(&[0, 1]).take_options(), [Some(0), Some(1)]);
        assert_eq!(outs(&[2]).take_options(), [None, None, Some(2)]);
    }

    #[test]
    #[should_panic(expected = "returned before a branch finished")]
    fn an_output_missing_at_the_end_is_a_bug_that_panics() {
        let _ = outs(&[0, 2]).take();
    }
}
