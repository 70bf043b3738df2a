//! The dynamic form, `for PAT in ITER => FUTURE`: one branch per item, polled in place.
//!
//! Each branch gets a waker of its own that puts its index in a shared queue, so a wake polls
//! only the branch it belongs to, at any number of branches. Branches start lazily, in input
//! order, when `limit` lets them: the body runs for an item only when its branch starts.

use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll, Waker};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::Wake;

use crate::error::{Branch, Error};
use crate::guard::{Reaper, take_trouble};
use crate::slot::{BranchResult, failures};
use crate::trace::{BranchSpan, GatherSpan, Outcome};

/// The indices woken since the gather last looked, and the gather's own waker.
#[derive(Default)]
struct Woken {
    indices: Vec<usize>,
    /// `queued[i]`: branch `i` is in `indices` already.
    queued: Vec<bool>,
    parent: Option<Waker>,
}

#[derive(Default)]
struct Shared {
    woken: Mutex<Woken>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Woken> {
        // Nothing is left half-done while the lock is held, so a poisoned lock is still sound.
        self.woken.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The waker of one branch. It may outlive the gather (a timer can keep it): then it only
/// touches the shared queue, which nobody reads any more, and wakes the gather's task at most
/// once more, which is harmless.
struct BranchWaker {
    shared: Arc<Shared>,
    index: usize,
}

impl Wake for BranchWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let parent = {
            let mut woken = self.shared.lock();
            if woken.queued[self.index] {
                return;
            }
            woken.queued[self.index] = true;
            woken.indices.push(self.index);
            woken.parent.clone()
        };
        if let Some(parent) = parent {
            parent.wake();
        }
    }
}

struct Entry<F> {
    fut: Option<Pin<Box<F>>>,
    waker: Waker,
    span: BranchSpan,
}

/// What one step of the engine found.
#[derive(Debug)]
pub(crate) enum Step<O> {
    /// The branch at this index finished with this output.
    Finished(usize, O),
    /// Some branch is still running; the gather's waker will be woken.
    Pending,
    /// Every branch has finished and the iterator is exhausted.
    Done,
    /// A spawned branch's task panicked or was cancelled from outside: every branch has been
    /// cancelled, and the gather ends in a panic once their tasks are gone.
    Trouble,
}

/// Runs the branches of the dynamic form: starts them in order under `limit`, polls each
/// when its own waker was woken, and reports each output as it comes.
#[must_use = "a gather does nothing unless polled"]
pub struct Engine<I, C, F> {
    /// `None` once exhausted.
    iter: Option<I>,
    make: C,
    limit: usize,
    /// Whether branches are spawned tasks, whose trouble the engine looks for.
    spawn: bool,
    branches: Vec<Entry<F>>,
    running: usize,
    shared: Arc<Shared>,
    /// Woken branches still to poll in this poll of the gather, highest index first.
    to_poll: Vec<usize>,
    /// Whether this poll of the gather has taken the woken indices already. Taking them once
    /// per poll means a branch that wakes itself at once is polled again at the next poll, not
    /// in a loop inside this one.
    drained: bool,
    name: &'static str,
    reaper: Reaper,
    trace: GatherSpan,
}

impl<I, C, F> core::fmt::Debug for Engine<I, C, F> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Engine")
            .field("started", &self.branches.len())
            .field("running", &self.running)
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

impl<I, C, F> Engine<I, C, F>
where
    I: Iterator,
    C: FnMut(usize, I::Item) -> F,
{
    /// An engine over `iter`, making each branch with `make` (given the item's index and the
    /// item) when it starts, running at most `limit` at once. `name` names every branch in
    /// errors; `spawn` says that branches are spawned tasks; `policy` names the policy in the
    /// gather's span (under the `tracing` feature).
    ///
    /// The bounds on `make` are here, where the body's closure is written, so that its
    /// argument's type is known inside the body (`for s in &words => f(s.len())`). `F: Future`
    /// is left to the policies, so that a body that is not a future is reported once.
    pub fn new(
        iter: I,
        make: C,
        limit: usize,
        name: &'static str,
        spawn: bool,
        policy: &'static str,
    ) -> Self {
        Engine {
            iter: Some(iter),
            make,
            limit,
            spawn,
            branches: Vec::new(),
            running: 0,
            shared: Arc::default(),
            to_poll: Vec::new(),
            drained: false,
            name,
            reaper: Reaper::default(),
            trace: GatherSpan::new(policy),
        }
    }
}

impl<I, C, F> Engine<I, C, F>
where
    I: Iterator,
    C: FnMut(usize, I::Item) -> F,
    F: Future,
{
    /// Starts a poll of the gather: remembers its waker, and lets `step` take the woken
    /// indices once.
    fn begin(&mut self, cx: &Context<'_>) {
        let mut woken = self.shared.lock();
        match &woken.parent {
            Some(parent) if parent.will_wake(cx.waker()) => {}
            _ => woken.parent = Some(cx.waker().clone()),
        }
        self.drained = false;
    }

    /// Polls the next branch that may have progressed, and reports the first that finishes.
    /// When several finish in one poll of the gather, they come lowest index first.
    fn step(&mut self) -> Step<F::Output> {
        loop {
            if let Some(index) = self.to_poll.pop() {
                match self.poll_branch(index) {
                    Step::Pending => continue,
                    step => return step,
                }
            }
            if !self.drained {
                self.drained = true;
                let mut woken = self.shared.lock();
                let Woken {
                    indices, queued, ..
                } = &mut *woken;
                for index in indices.drain(..) {
                    queued[index] = false;
                    self.to_poll.push(index);
                }
                drop(woken);
                self.to_poll.sort_unstable_by(|a, b| b.cmp(a));
                continue;
            }
            if self.running < self.limit {
                if let Some(item) = self.iter.as_mut().and_then(Iterator::next) {
                    let index = self.start(item);
                    match self.poll_branch(index) {
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

    fn start(&mut self, item: I::Item) -> usize {
        let index = self.branches.len();
        let fut = Box::pin((self.make)(index, item));
        self.shared.lock().queued.push(false);
        let waker = Waker::from(Arc::new(BranchWaker {
            shared: Arc::clone(&self.shared),
            index,
        }));
        let mut span = BranchSpan::NONE;
        let name = self.name;
        span.start(&self.trace, index, || name);
        self.branches.push(Entry {
            fut: Some(fut),
            waker,
            span,
        });
        self.running += 1;
        index
    }

    fn poll_branch(&mut self, index: usize) -> Step<F::Output> {
        let entry = &mut self.branches[index];
        let Some(fut) = entry.fut.as_mut() else {
            return Step::Pending;
        };
        let waker = &entry.waker;
        match entry
            .span
            .poll(|| fut.as_mut().poll(&mut Context::from_waker(waker)))
        {
            Poll::Ready(out) => {
                entry.fut = None;
                self.running -= 1;
                Step::Finished(index, out)
            }
            Poll::Pending => {
                if self.spawn
                    && let Some((_, error)) = take_trouble()
                {
                    self.stop_all(Outcome::Cancelled, Some(index));
                    self.reaper.trouble(index, self.name, error);
                    return Step::Trouble;
                }
                Step::Pending
            }
        }
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
            branches,
            reaper,
            name,
            ..
        } = self;
        reaper.collect(|| {
            let mut stopped = Vec::new();
            for (index, entry) in branches.iter_mut().enumerate() {
                if let Some(fut) = entry.fut.take() {
                    Reaper::mark(index, core::ptr::from_ref(&*fut).addr());
                    drop(fut);
                    let outcome = if troubled == Some(index) {
                        Outcome::Panicked
                    } else {
                        stop
                    };
                    entry.span.end(outcome);
                    stopped.push(Branch::__new(index, name));
                }
            }
            stopped
        })
    }

    /// Records how the finished branch `index` ended, in its span.
    fn finished(&mut self, index: usize, outcome: Outcome) {
        self.branches[index].span.end(outcome);
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
        name: &'static str,
        stopped: &mut dyn FnMut() -> Vec<Branch>,
    ) -> Option<Self::Out>;
    /// The value once every branch has ended.
    fn done(&mut self, name: &'static str) -> Self::Out;
    /// The value at the deadline, given the branches it cancelled and how many had started.
    fn timed_out(&mut self, pending: Vec<Branch>, started: usize) -> Self::Out;
    /// Takes out of an error the branches whose task finished before its abort took effect.
    fn keep_finished(_out: &mut Self::Out, _reaper: &Reaper) {}
    /// Whether a branch's output is a failure (for its span, under the `tracing` feature).
    fn is_error(_out: &O) -> bool {
        false
    }
}

/// Puts `value` at `index` of `outs`, which grows as branches start.
fn put<T>(outs: &mut Vec<Option<T>>, index: usize, value: T) {
    if outs.len() <= index {
        outs.resize_with(index + 1, || None);
    }
    outs[index] = Some(value);
}

fn unwrap_all<T>(outs: Vec<Option<T>>) -> Vec<T> {
    outs.into_iter()
        .map(|out| out.expect("gather! returned before a branch finished"))
        .collect()
}

/// `policy = cancel`.
#[derive(Debug)]
pub struct Cancel<T> {
    outs: Vec<Option<T>>,
}

/// `policy = finish`.
#[derive(Debug)]
pub struct Finish<T, E> {
    outs: Vec<Option<T>>,
    errors: Vec<(usize, E)>,
}

/// `policy = settle`; with `timeout`, each output is an `Option`.
#[derive(Debug)]
pub struct Settle<O, const TIMED: bool> {
    outs: Vec<Option<O>>,
}

/// `policy = race`; with `timeout`, the output is an `Option`.
#[derive(Debug)]
pub struct Race<const TIMED: bool>;

/// `policy = race_ok`.
#[derive(Debug)]
pub struct RaceOk<E> {
    errors: Vec<(usize, E)>,
}

impl<T> Default for Cancel<T> {
    fn default() -> Self {
        Cancel { outs: Vec::new() }
    }
}

impl<T, E> Default for Finish<T, E> {
    fn default() -> Self {
        Finish {
            outs: Vec::new(),
            errors: Vec::new(),
        }
    }
}

impl<O, const TIMED: bool> Default for Settle<O, TIMED> {
    fn default() -> Self {
        Settle { outs: Vec::new() }
    }
}

impl<const TIMED: bool> Default for Race<TIMED> {
    fn default() -> Self {
        Race
    }
}

impl<E> Default for RaceOk<E> {
    fn default() -> Self {
        RaceOk { errors: Vec::new() }
    }
}

impl<R: BranchResult> Policy<R> for Cancel<R::Ok> {
    fn is_error(out: &R) -> bool {
        out.is_err()
    }

    type Out = Result<Vec<R::Ok>, Error<R::Err>>;

    fn output(
        &mut self,
        index: usize,
        out: R,
        name: &'static str,
        stopped: &mut dyn FnMut() -> Vec<Branch>,
    ) -> Option<Self::Out> {
        match out.into_result() {
            Ok(value) => {
                put(&mut self.outs, index, value);
                None
            }
            Err(error) => Some(Err(Error::Failed {
                branch: Branch::__new(index, name),
                error,
                cancelled: stopped(),
            })),
        }
    }

    fn done(&mut self, _: &'static str) -> Self::Out {
        Ok(unwrap_all(core::mem::take(&mut self.outs)))
    }

    fn timed_out(&mut self, pending: Vec<Branch>, _: usize) -> Self::Out {
        Err(Error::TimedOut { pending })
    }

    fn keep_finished(out: &mut Self::Out, reaper: &Reaper) {
        reaper.keep_finished(out);
    }
}

impl<R: BranchResult> Policy<R> for Finish<R::Ok, R::Err> {
    fn is_error(out: &R) -> bool {
        out.is_err()
    }

    type Out = Result<Vec<R::Ok>, Error<R::Err>>;

    fn output(
        &mut self,
        index: usize,
        out: R,
        _: &'static str,
        _: &mut dyn FnMut() -> Vec<Branch>,
    ) -> Option<Self::Out> {
        match out.into_result() {
            Ok(value) => put(&mut self.outs, index, value),
            Err(error) => self.errors.push((index, error)),
        }
        None
    }

    fn done(&mut self, name: &'static str) -> Self::Out {
        if self.errors.is_empty() {
            Ok(unwrap_all(core::mem::take(&mut self.outs)))
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
    type Out = Vec<O>;

    fn output(
        &mut self,
        index: usize,
        out: O,
        _: &'static str,
        _: &mut dyn FnMut() -> Vec<Branch>,
    ) -> Option<Self::Out> {
        put(&mut self.outs, index, out);
        None
    }

    fn done(&mut self, _: &'static str) -> Self::Out {
        unwrap_all(core::mem::take(&mut self.outs))
    }

    fn timed_out(&mut self, _: Vec<Branch>, _: usize) -> Self::Out {
        unreachable!("gather!: settle without a timeout timed out")
    }
}

impl<O> Policy<O> for Settle<O, true> {
    type Out = Vec<Option<O>>;

    fn output(
        &mut self,
        index: usize,
        out: O,
        _: &'static str,
        _: &mut dyn FnMut() -> Vec<Branch>,
    ) -> Option<Self::Out> {
        put(&mut self.outs, index, out);
        None
    }

    fn done(&mut self, _: &'static str) -> Self::Out {
        core::mem::take(&mut self.outs)
    }

    /// What finished is kept; `None` for every other item whose branch started.
    fn timed_out(&mut self, _: Vec<Branch>, started: usize) -> Self::Out {
        let mut outs = core::mem::take(&mut self.outs);
        outs.resize_with(started, || None);
        outs
    }
}

impl<O> Policy<O> for Race<false> {
    type Out = O;

    fn output(
        &mut self,
        _: usize,
        out: O,
        _: &'static str,
        stopped: &mut dyn FnMut() -> Vec<Branch>,
    ) -> Option<O> {
        stopped();
        Some(out)
    }

    fn done(&mut self, _: &'static str) -> O {
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

    fn output(
        &mut self,
        _: usize,
        out: O,
        _: &'static str,
        stopped: &mut dyn FnMut() -> Vec<Branch>,
    ) -> Option<Option<O>> {
        stopped();
        Some(Some(out))
    }

    fn done(&mut self, _: &'static str) -> Option<O> {
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

    fn output(
        &mut self,
        index: usize,
        out: R,
        _: &'static str,
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
    fn done(&mut self, name: &'static str) -> Self::Out {
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
pub struct Driver<I, C, F, P, Out> {
    engine: Engine<I, C, F>,
    policy: P,
    ending: Option<Out>,
}

impl<I, C, F, P, Out> core::fmt::Debug for Driver<I, C, F, P, Out> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Driver")
            .field("engine", &self.engine)
            .field("ending", &self.ending.is_some())
            .finish_non_exhaustive()
    }
}

impl<I, C, F, P: Default, Out> Driver<I, C, F, P, Out> {
    /// A gather over `engine` under policy `P`.
    pub fn new(engine: Engine<I, C, F>) -> Self {
        Driver {
            engine,
            policy: P::default(),
            ending: None,
        }
    }
}

impl<I, C, F, P, Out> Driver<I, C, F, P, Out>
where
    I: Iterator,
    C: FnMut(usize, I::Item) -> F,
    F: Future,
    P: Policy<F::Output, Out = Out>,
{
    /// Whether the gather is ending: it waits only for the tasks it aborted.
    pub fn is_ending(&self) -> bool {
        self.ending.is_some() || self.engine.reaper.ends_in_panic()
    }

    /// Polls the branches; the policy's outcome once it has one and every task it aborted is
    /// gone.
    pub fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Out> {
        if !self.is_ending() {
            self.engine.begin(cx);
            loop {
                match self.engine.step() {
                    Step::Finished(index, out) => {
                        let outcome = if P::is_error(&out) {
                            Outcome::Error
                        } else {
                            Outcome::Ok
                        };
                        self.engine.finished(index, outcome);
                        let Driver { engine, policy, .. } = self;
                        let name = engine.name;
                        if let Some(end) =
                            policy.output(index, out, name, &mut || engine.cancel_all())
                        {
                            self.ending = Some(end);
                            break;
                        }
                    }
                    Step::Pending => return Poll::Pending,
                    Step::Done => return Poll::Ready(self.policy.done(self.engine.name)),
                    Step::Trouble => break,
                }
            }
        }
        self.poll_end(cx)
    }

    /// Ends the gather at its deadline: cancels every running branch.
    pub fn time_out(&mut self) {
        let started = self.engine.branches.len();
        let pending = self.engine.stop_all(Outcome::TimedOut, None);
        self.ending = Some(self.policy.timed_out(pending, started));
    }

    fn poll_end(&mut self, cx: &mut Context<'_>) -> Poll<Out> {
        if self.engine.reaper.poll_reaped(cx).is_pending() {
            return Poll::Pending;
        }
        self.engine.reaper.resume_panic();
        let Some(mut out) = self.ending.take() else {
            unreachable!("gather!: ended without an outcome");
        };
        P::keep_finished(&mut out, &self.engine.reaper);
        Poll::Ready(out)
    }
}
