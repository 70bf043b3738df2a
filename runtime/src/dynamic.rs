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
use crate::slot::{BranchResult, failures};

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
/// touches the shared queue, which nobody reads any more.
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
}

/// What one step of the engine found.
#[derive(Debug)]
pub enum Step<O> {
    /// The branch at this index finished with this output.
    Finished(usize, O),
    /// Some branch is still running; the gather's waker will be woken.
    Pending,
    /// Every branch has finished and the iterator is exhausted.
    Done,
}

/// Runs the branches of the dynamic form: starts them in order under `limit`, polls each
/// when its own waker was woken, and reports each output as it comes.
#[must_use = "a gather does nothing unless polled"]
pub struct Engine<I, C, F> {
    /// `None` once exhausted.
    iter: Option<I>,
    make: C,
    limit: usize,
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
    C: FnMut(I::Item) -> F,
{
    /// An engine over `iter`, making each branch with `make` when it starts, running at most
    /// `limit` at once. `name` names every branch in errors.
    ///
    /// The bounds on `make` are here, where the body's closure is written, so that its
    /// argument's type is known inside the body (`for s in &words => f(s.len())`). `F: Future`
    /// is left to the policies, so that a body that is not a future is reported once.
    pub fn new(iter: I, make: C, limit: usize, name: &'static str) -> Self {
        Engine {
            iter: Some(iter),
            make,
            limit,
            branches: Vec::new(),
            running: 0,
            shared: Arc::default(),
            to_poll: Vec::new(),
            drained: false,
            name,
        }
    }
}

impl<I, C, F> Engine<I, C, F>
where
    I: Iterator,
    C: FnMut(I::Item) -> F,
    F: Future,
{
    fn branch(&self, index: usize) -> Branch {
        Branch::__new(index, self.name)
    }

    /// Starts a poll of the gather: remembers its waker, and lets `step` take the woken
    /// indices once.
    pub fn begin(&mut self, cx: &Context<'_>) {
        let mut woken = self.shared.lock();
        match &woken.parent {
            Some(parent) if parent.will_wake(cx.waker()) => {}
            _ => woken.parent = Some(cx.waker().clone()),
        }
        self.drained = false;
    }

    /// Polls the next branch that may have progressed, and reports the first that finishes.
    /// When several finish in one poll of the gather, they come lowest index first.
    pub fn step(&mut self) -> Step<F::Output> {
        loop {
            if let Some(index) = self.to_poll.pop() {
                if let Some(out) = self.poll_branch(index) {
                    return Step::Finished(index, out);
                }
                continue;
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
                    if let Some(out) = self.poll_branch(index) {
                        return Step::Finished(index, out);
                    }
                    continue;
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
        let fut = Box::pin((self.make)(item));
        self.shared.lock().queued.push(false);
        let waker = Waker::from(Arc::new(BranchWaker {
            shared: Arc::clone(&self.shared),
            index,
        }));
        self.branches.push(Entry {
            fut: Some(fut),
            waker,
        });
        self.running += 1;
        index
    }

    fn poll_branch(&mut self, index: usize) -> Option<F::Output> {
        let entry = &mut self.branches[index];
        let fut = entry.fut.as_mut()?;
        let out = match fut.as_mut().poll(&mut Context::from_waker(&entry.waker)) {
            Poll::Ready(out) => out,
            Poll::Pending => return None,
        };
        entry.fut = None;
        self.running -= 1;
        Some(out)
    }

    /// Drops every running branch, in index order, and names each; branches that never
    /// started are not named, and the iterator is not advanced again.
    pub fn cancel_all(&mut self) -> Vec<Branch> {
        self.iter = None;
        let mut stopped = Vec::new();
        for index in 0..self.branches.len() {
            if self.branches[index].fut.take().is_some() {
                stopped.push(self.branch(index));
            }
        }
        self.running = 0;
        stopped
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

/// `policy = cancel` over the dynamic form.
#[must_use = "a gather does nothing unless polled"]
pub struct Cancel<I, C, F, T> {
    engine: Engine<I, C, F>,
    outs: Vec<Option<T>>,
}

/// `policy = finish` over the dynamic form.
#[must_use = "a gather does nothing unless polled"]
pub struct Finish<I, C, F, T, E> {
    engine: Engine<I, C, F>,
    outs: Vec<Option<T>>,
    errors: Vec<(usize, E)>,
}

/// `policy = settle` over the dynamic form.
#[must_use = "a gather does nothing unless polled"]
pub struct Settle<I, C, F, O> {
    engine: Engine<I, C, F>,
    outs: Vec<Option<O>>,
}

/// `policy = race` over the dynamic form.
#[must_use = "a gather does nothing unless polled"]
pub struct Race<I, C, F> {
    engine: Engine<I, C, F>,
}

/// `policy = race_ok` over the dynamic form.
#[must_use = "a gather does nothing unless polled"]
pub struct RaceOk<I, C, F, E> {
    engine: Engine<I, C, F>,
    errors: Vec<(usize, E)>,
}

macro_rules! debug_driver {
    ($($name:ident<$($p:ident),*>),*) => {$(
        impl<$($p),*> core::fmt::Debug for $name<$($p),*> {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                f.debug_struct(stringify!($name)).field("engine", &self.engine).finish_non_exhaustive()
            }
        }
    )*};
}
debug_driver!(Cancel<I, C, F, T>, Finish<I, C, F, T, E>, Settle<I, C, F, O>, Race<I, C, F>, RaceOk<I, C, F, E>);

impl<I, C, F, T> Cancel<I, C, F, T> {
    /// Cancel over `engine`.
    pub fn new(engine: Engine<I, C, F>) -> Self {
        Cancel {
            engine,
            outs: Vec::new(),
        }
    }
}

impl<I, C, F, T, E> Cancel<I, C, F, T>
where
    I: Iterator,
    C: FnMut(I::Item) -> F,
    F: Future,
    F::Output: BranchResult<Ok = T, Err = E>,
{
    /// Every success in input order, or the first failure with the branches it cancelled.
    pub fn poll(&mut self, cx: &Context<'_>) -> Poll<Result<Vec<T>, Error<E>>> {
        self.engine.begin(cx);
        loop {
            match self.engine.step() {
                Step::Finished(index, out) => match out.into_result() {
                    Ok(value) => put(&mut self.outs, index, value),
                    Err(error) => {
                        let cancelled = self.engine.cancel_all();
                        let branch = self.engine.branch(index);
                        return Poll::Ready(Err(Error::Failed {
                            branch,
                            error,
                            cancelled,
                        }));
                    }
                },
                Step::Pending => return Poll::Pending,
                Step::Done => return Poll::Ready(Ok(unwrap_all(core::mem::take(&mut self.outs)))),
            }
        }
    }

    /// Cancels every running branch at the deadline.
    pub fn timed_out(&mut self) -> Result<Vec<T>, Error<E>> {
        Err(Error::TimedOut {
            pending: self.engine.cancel_all(),
        })
    }
}

impl<I, C, F, T, E> Finish<I, C, F, T, E> {
    /// Finish over `engine`.
    pub fn new(engine: Engine<I, C, F>) -> Self {
        Finish {
            engine,
            outs: Vec::new(),
            errors: Vec::new(),
        }
    }
}

impl<I, C, F, T, E> Finish<I, C, F, T, E>
where
    I: Iterator,
    C: FnMut(I::Item) -> F,
    F: Future,
    F::Output: BranchResult<Ok = T, Err = E>,
{
    /// Once every branch has ended: every success in input order, or every failure.
    pub fn poll(&mut self, cx: &Context<'_>) -> Poll<Result<Vec<T>, Error<E>>> {
        self.engine.begin(cx);
        loop {
            match self.engine.step() {
                Step::Finished(index, out) => match out.into_result() {
                    Ok(value) => put(&mut self.outs, index, value),
                    Err(error) => self.errors.push((index, error)),
                },
                Step::Pending => return Poll::Pending,
                Step::Done if self.errors.is_empty() => {
                    return Poll::Ready(Ok(unwrap_all(core::mem::take(&mut self.outs))));
                }
                Step::Done => {
                    let name = self.engine.name;
                    let errors = core::mem::take(&mut self.errors);
                    return Poll::Ready(Err(failures(errors, |_| name)));
                }
            }
        }
    }

    /// Cancels every running branch at the deadline.
    pub fn timed_out(&mut self) -> Result<Vec<T>, Error<E>> {
        Err(Error::TimedOut {
            pending: self.engine.cancel_all(),
        })
    }
}

impl<I, C, F, O> Settle<I, C, F, O> {
    /// Settle over `engine`.
    pub fn new(engine: Engine<I, C, F>) -> Self {
        Settle {
            engine,
            outs: Vec::new(),
        }
    }
}

impl<I, C, F> Settle<I, C, F, F::Output>
where
    I: Iterator,
    C: FnMut(I::Item) -> F,
    F: Future,
{
    /// Once every branch has ended: every output, in input order.
    pub fn poll(&mut self, cx: &Context<'_>) -> Poll<Vec<F::Output>> {
        self.poll_finished(cx).map(unwrap_all)
    }

    /// As `poll`, with each output in `Some`: the shape the `timeout` option gives.
    pub fn poll_finished(&mut self, cx: &Context<'_>) -> Poll<Vec<Option<F::Output>>> {
        self.engine.begin(cx);
        loop {
            match self.engine.step() {
                Step::Finished(index, out) => put(&mut self.outs, index, out),
                Step::Pending => return Poll::Pending,
                Step::Done => return Poll::Ready(core::mem::take(&mut self.outs)),
            }
        }
    }

    /// Cancels every running branch at the deadline: what finished is kept, `None` for the
    /// rest (for every item whose branch started).
    pub fn timed_out(&mut self) -> Vec<Option<F::Output>> {
        let started = self.engine.branches.len();
        self.engine.cancel_all();
        let mut outs = core::mem::take(&mut self.outs);
        outs.resize_with(started, || None);
        outs
    }
}

impl<I, C, F> Race<I, C, F> {
    /// Race over `engine`.
    pub fn new(engine: Engine<I, C, F>) -> Self {
        Race { engine }
    }
}

impl<I, C, F> Race<I, C, F>
where
    I: Iterator,
    C: FnMut(I::Item) -> F,
    F: Future,
{
    /// The first output of any kind; the other branches are cancelled.
    ///
    /// # Panics
    ///
    /// When the iterator is empty: a race with no branch has no outcome to return.
    pub fn poll(&mut self, cx: &Context<'_>) -> Poll<F::Output> {
        self.engine.begin(cx);
        match self.engine.step() {
            Step::Finished(_, out) => {
                self.engine.cancel_all();
                Poll::Ready(out)
            }
            Step::Pending => Poll::Pending,
            Step::Done => panic!(
                "gather!(policy = race; for ..) ran over an empty iterator: a race with no \
                 branch has no outcome to return"
            ),
        }
    }

    /// Cancels every running branch at the deadline.
    pub fn timed_out(&mut self) -> Option<F::Output> {
        self.engine.cancel_all();
        None
    }
}

impl<I, C, F, E> RaceOk<I, C, F, E> {
    /// Race_ok over `engine`.
    pub fn new(engine: Engine<I, C, F>) -> Self {
        RaceOk {
            engine,
            errors: Vec::new(),
        }
    }
}

impl<I, C, F, T, E> RaceOk<I, C, F, E>
where
    I: Iterator,
    C: FnMut(I::Item) -> F,
    F: Future,
    F::Output: BranchResult<Ok = T, Err = E>,
{
    /// The first success, the other branches cancelled; or, when every branch failed, every
    /// failure in input order (none over an empty iterator).
    pub fn poll(&mut self, cx: &Context<'_>) -> Poll<Result<T, Error<E>>> {
        self.engine.begin(cx);
        loop {
            match self.engine.step() {
                Step::Finished(index, out) => match out.into_result() {
                    Ok(value) => {
                        self.engine.cancel_all();
                        return Poll::Ready(Ok(value));
                    }
                    Err(error) => self.errors.push((index, error)),
                },
                Step::Pending => return Poll::Pending,
                Step::Done => {
                    let name = self.engine.name;
                    let errors = core::mem::take(&mut self.errors);
                    return Poll::Ready(Err(failures(errors, |_| name)));
                }
            }
        }
    }

    /// Cancels every running branch at the deadline.
    pub fn timed_out(&mut self) -> Result<T, Error<E>> {
        Err(Error::TimedOut {
            pending: self.engine.cancel_all(),
        })
    }
}
