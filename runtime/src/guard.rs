//! Tokio tasks that are never detached: [`AbortGuard`], [`spawn`], and the scope through which
//! a gather awaits the tasks it aborts.
//!
//! Dropping a tokio `JoinHandle` detaches its task; dropping an [`AbortGuard`] aborts it. Rust
//! has no async drop, so a drop cannot wait for the task to be gone. A gather can: while it
//! cancels its branches, it opens a *reaping scope* on its thread, and every guard dropped in
//! that scope hands its aborted task to the gather, which awaits them all before it returns.

use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll, Waker};
use std::any::Any;
use std::cell::{Cell, RefCell};

use tokio::task::{JoinError, JoinHandle};

/// A tokio task that is aborted when its guard is dropped: a `JoinHandle` that never detaches.
///
/// `AbortGuard<T>` is a future of the task's output. Awaiting it gives `T`; if the task
/// panicked, the panic is resumed in the awaiting task with its original payload, so a panic
/// is never mistaken for a value.
///
/// Aborting is a request: tokio stops the task at its next `.await`, or at once if it is
/// waiting. To know that the task is gone, await it after aborting, which
/// [`cancel`](AbortGuard::cancel) does. A `gather!` that ends early does this for every
/// guard it drops, so that no task of it is left running when it returns.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use std::time::Duration;
///
/// let guard = gather::spawn(async { 6 * 7 });
/// assert_eq!(guard.await, 42);
///
/// let slow = gather::spawn(tokio::time::sleep(Duration::from_secs(3600)));
/// // Dropping `slow` here would abort the task; `cancel` aborts it and waits until it is gone.
/// assert_eq!(slow.cancel().await, None);
/// # }
/// ```
///
/// The task's output must be `Send + 'static`, as for any task spawned with `tokio::spawn`.
#[must_use = "dropping an AbortGuard aborts its task at once"]
pub struct AbortGuard<T: Send + 'static> {
    /// `None` once the task's outcome has been taken, or while the guard is being dropped.
    handle: Option<JoinHandle<T>>,
}

impl<T: Send + 'static> core::fmt::Debug for AbortGuard<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let mut s = f.debug_struct("AbortGuard");
        if let Some(handle) = &self.handle {
            s.field("id", &handle.id());
            s.field("finished", &handle.is_finished());
        }
        s.finish()
    }
}

/// Spawns `future` on the current tokio runtime and returns the guard that owns the task.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let sum = gather::spawn(async { (1..=10).sum::<u32>() });
/// assert_eq!(sum.await, 55);
/// # }
/// ```
///
/// # Panics
///
/// Outside a tokio runtime, with a message that says one is needed.
#[track_caller]
pub fn spawn<F>(future: F) -> AbortGuard<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        panic!(
            "gather: spawning a task needs a tokio runtime, and there is none on this thread; \
             run this code inside one (e.g. #[tokio::main]), or drop `spawn` to run in place"
        );
    };
    AbortGuard::new(runtime.spawn(future))
}

impl<T: Send + 'static> AbortGuard<T> {
    /// Takes ownership of a task: from now on, dropping the guard aborts it.
    pub fn new(handle: JoinHandle<T>) -> Self {
        AbortGuard {
            handle: Some(handle),
        }
    }

    /// Asks tokio to stop the task at its next `.await`. The guard can still be awaited: see
    /// [`cancel`](AbortGuard::cancel).
    pub fn abort(&self) {
        if let Some(handle) = &self.handle {
            handle.abort();
        }
    }

    /// Whether the task has ended: finished, panicked or aborted.
    pub fn is_finished(&self) -> bool {
        self.handle.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Aborts the task and waits until it is gone. Gives its output if it finished before the
    /// abort took effect, `None` if the abort stopped it.
    ///
    /// # Panics
    ///
    /// Resumes the task's panic if it panicked before the abort took effect; panics if the
    /// guard was already awaited to its end.
    pub async fn cancel(mut self) -> Option<T> {
        self.abort();
        match core::future::poll_fn(|cx| self.poll_join(cx)).await {
            Ok(output) => Some(output),
            Err(error) => match error.try_into_panic() {
                Ok(payload) => std::panic::resume_unwind(payload),
                Err(_) => None,
            },
        }
    }

    /// Polls the task without resuming its panic. Once it gives the outcome, the guard lets go
    /// of the task, which is gone.
    fn poll_join(&mut self, cx: &mut Context<'_>) -> Poll<Result<T, JoinError>> {
        let Some(handle) = self.handle.as_mut() else {
            panic!("gather: an AbortGuard was polled after its task's outcome was taken");
        };
        let outcome = core::task::ready!(Pin::new(handle).poll(cx));
        self.handle = None;
        Poll::Ready(outcome)
    }

    /// Aborts the task and hands it to the reaping scope; `branch` is the address of the
    /// branch future that owns this guard, by which the scope knows the task as that branch's.
    fn abort_branch(&mut self, branch: usize) {
        if let Some(handle) = self.handle.take() {
            handle.abort();
            reap(handle, Some(branch));
        }
    }
}

impl<T: Send + 'static> Future for AbortGuard<T> {
    type Output = T;

    /// # Panics
    ///
    /// Resumes the task's panic; panics if the task was cancelled (by [`abort`](Self::abort),
    /// a stray abort, or the runtime shutting down), since there is then no output to give.
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        self.poll_join(cx).map(|result| match result {
            Ok(output) => output,
            Err(error) => match error.try_into_panic() {
                Ok(payload) => std::panic::resume_unwind(payload),
                Err(_) => panic!(
                    "gather: the task behind this AbortGuard was cancelled (by `abort`, from \
                     outside, or by its runtime shutting down), so it has no output; `cancel()` \
                     aborts and waits without panicking"
                ),
            },
        })
    }
}

impl<T: Send + 'static> Drop for AbortGuard<T> {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            handle.abort();
            reap(handle, None);
        }
    }
}

/// A branch of a `spawn` gather: its future until the branch starts (its first poll, which
/// `limit` may hold back), then its task, behind a guard. Its output is the branch future's;
/// a panic or an outside cancellation of the task is not resumed here but reported to the
/// gather (see [`take_trouble`]), which first aborts and awaits the other branches.
#[must_use = "a gather branch does nothing unless polled"]
pub struct Spawned<F: Future>
where
    F::Output: Send + 'static,
{
    waiting: Option<F>,
    guard: Option<AbortGuard<F::Output>>,
    index: usize,
}

// The future is only ever moved into `tokio::spawn`, never polled here, so nothing is pinned
// through a `Spawned`.
impl<F: Future> Unpin for Spawned<F> where F::Output: Send + 'static {}

impl<F: Future> core::fmt::Debug for Spawned<F>
where
    F::Output: Send + 'static,
{
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Spawned")
            .field("index", &self.index)
            .field("started", &self.waiting.is_none())
            .field("guard", &self.guard)
            .finish()
    }
}

impl<F> Spawned<F>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    /// The branch at `index` of a gather, spawned when it starts.
    pub fn new(future: F, index: usize) -> Self {
        Spawned {
            waiting: Some(future),
            guard: None,
            index,
        }
    }
}

impl<F> Future for Spawned<F>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        if let Some(future) = this.waiting.take() {
            this.guard = Some(spawn(future));
        }
        let Some(guard) = this.guard.as_mut() else {
            panic!("gather: a spawned branch was polled after its outcome was taken");
        };
        match guard.poll_join(cx) {
            Poll::Ready(Ok(output)) => Poll::Ready(output),
            Poll::Ready(Err(error)) => {
                let index = this.index;
                TROUBLE.with(|trouble| {
                    trouble.borrow_mut().get_or_insert((index, error));
                });
                // The gather looks for trouble right after this poll, and ends.
                Poll::Pending
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<F: Future> Drop for Spawned<F>
where
    F::Output: Send + 'static,
{
    fn drop(&mut self) {
        let me = core::ptr::from_ref(self).addr();
        if let Some(guard) = self.guard.as_mut() {
            guard.abort_branch(me);
        }
    }
}

/// A branch that is a tokio `JoinHandle`, adopted so that it is never detached: its output is
/// the handle's own, `Result<T, JoinError>`, and when the gather cancels it, its task is aborted
/// and awaited.
#[must_use = "a gather branch does nothing unless polled"]
pub struct Adopted<T: Send + 'static> {
    guard: AbortGuard<T>,
}

impl<T: Send + 'static> core::fmt::Debug for Adopted<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Adopted")
            .field("guard", &self.guard)
            .finish()
    }
}

impl<T: Send + 'static> Future for Adopted<T> {
    type Output = Result<T, JoinError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.guard.poll_join(cx)
    }
}

impl<T: Send + 'static> Drop for Adopted<T> {
    fn drop(&mut self) {
        let me = core::ptr::from_ref(self).addr();
        self.guard.abort_branch(me);
    }
}

/// Turns a branch expression into its future. `(&&Adopt::new(expr)).adopt()` picks, by
/// autoref, [`AdoptJoinHandle`] for a tokio `JoinHandle` and [`AdoptAny`] for anything else;
/// that is how a `JoinHandle` branch is recognised by its type at the call site.
pub struct Adopt<T>(core::cell::Cell<Option<T>>);

impl<T> core::fmt::Debug for Adopt<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Adopt")
    }
}

impl<T> Adopt<T> {
    /// Wraps a branch expression's value.
    pub fn new(value: T) -> Self {
        Adopt(core::cell::Cell::new(Some(value)))
    }

    fn take(&self) -> T {
        match self.0.take() {
            Some(value) => value,
            None => unreachable!("gather! adopts each branch once"),
        }
    }
}

/// A `JoinHandle` branch becomes an [`Adopted`] one.
pub trait AdoptJoinHandle<T: Send + 'static> {
    /// The branch, with its task behind a guard.
    fn adopt(&self) -> Adopted<T>;
}

impl<T: Send + 'static> AdoptJoinHandle<T> for Adopt<JoinHandle<T>> {
    fn adopt(&self) -> Adopted<T> {
        Adopted {
            guard: AbortGuard::new(self.take()),
        }
    }
}

/// Any other branch is itself.
pub trait AdoptAny<T> {
    /// The branch as it is.
    fn adopt(&self) -> T;
}

impl<T> AdoptAny<T> for &Adopt<T> {
    fn adopt(&self) -> T {
        self.take()
    }
}

/// Under `spawn`, an adopted `JoinHandle` branch stays as it is: its task is already spawned.
pub trait SpawnAdopted<T: Send + 'static> {
    /// The branch as it is.
    fn spawn_or_drop_spawn_to_run_in_place(&self, index: usize) -> Adopted<T>;
}

impl<T: Send + 'static> SpawnAdopted<T> for Adopt<Adopted<T>> {
    fn spawn_or_drop_spawn_to_run_in_place(&self, _index: usize) -> Adopted<T> {
        self.take()
    }
}

/// Under `spawn`, any other branch is spawned on a task of its own.
pub trait SpawnNeedsSendAndStatic<F> {
    /// Spawns the branch at `index` when it starts.
    fn spawn_or_drop_spawn_to_run_in_place(&self, index: usize) -> Spawned<F>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static;
}

impl<F> SpawnNeedsSendAndStatic<F> for &Adopt<F> {
    fn spawn_or_drop_spawn_to_run_in_place(&self, index: usize) -> Spawned<F>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        Spawned::new(self.take(), index)
    }
}

thread_local! {
    /// A spawned branch whose task panicked or was cancelled from outside, reported by its
    /// poll for the gather that polled it.
    static TROUBLE: RefCell<Option<(usize, JoinError)>> = const { RefCell::new(None) };
}

/// The spawned branch whose task panicked or was cancelled from outside during the last poll
/// of a gather's branches, if any.
pub fn take_trouble() -> Option<(usize, JoinError)> {
    TROUBLE.with(|trouble| trouble.borrow_mut().take())
}

/// How an aborted task ended, once awaited.
#[derive(Debug)]
pub(crate) enum Ended {
    /// It finished before the abort took effect.
    Finished,
    /// The abort stopped it.
    Aborted,
    /// It panicked before the abort took effect.
    Panicked(Box<dyn Any + Send>),
}

/// An aborted task to await, its output type erased.
trait Reaped: Send {
    fn poll_ended(&mut self, cx: &mut Context<'_>) -> Poll<Ended>;
}

impl<T: Send> Reaped for JoinHandle<T> {
    fn poll_ended(&mut self, cx: &mut Context<'_>) -> Poll<Ended> {
        Pin::new(self).poll(cx).map(ended)
    }
}

/// How a task ended, from its outcome.
fn ended<T>(outcome: Result<T, JoinError>) -> Ended {
    match outcome {
        Ok(_) => Ended::Finished,
        Err(error) => match error.try_into_panic() {
            Ok(payload) => Ended::Panicked(payload),
            Err(_) => Ended::Aborted,
        },
    }
}

/// One aborted task: which branch of the gather it was (when the guard was the branch itself),
/// and the task, or how it ended if it had ended when it was aborted.
struct Reap {
    branch: Option<usize>,
    task: Task,
}

/// An aborted task still to await, or how it ended.
enum Task {
    Running(Box<dyn Reaped>),
    Ended(Ended),
}

/// What a reaping scope holds: an aborted task, or the panic a gather cancelled inside the
/// scope still had to resume.
enum Held {
    Task(Reap),
    Panic(Box<dyn Any + Send>),
}

// The reaping scopes open on this thread. A gather opens one while it drops the branches it
// cancels, and scopes nest (a branch's drop may cancel a gather of its own); what a scope
// holds is at the end of one stack that the scopes share, from where it was when the scope
// opened. Opening and closing a scope touches only plain cells: the stack is reached only
// when a task was aborted inside a scope, which is rare.
thread_local! {
    /// How many reaping scopes are open.
    static OPEN: Cell<usize> = const { Cell::new(0) };
    /// The branch being cancelled, while the gather drops it: its index and the address of
    /// its future. A guard dropped with it is that branch's own task only if the guard's
    /// owner is the branch future itself, not a future nested inside it.
    static BRANCH: Cell<Option<(usize, usize)>> = const { Cell::new(None) };
    /// How much the stack holds.
    static HELD: Cell<usize> = const { Cell::new(0) };
    /// What the open scopes hold, innermost last.
    static STACK: RefCell<Vec<Held>> = const { RefCell::new(Vec::new()) };
}

/// Hands `held` to the innermost reaping scope, if one is open; otherwise it is dropped (a
/// task is then only aborted, as any dropped guard's is).
fn hold(held: impl FnOnce(Option<(usize, usize)>) -> Held) {
    if OPEN.get() == 0 {
        return;
    }
    // `try_with`: a guard dropped while the thread ends has no scope to go to.
    let _ = STACK.try_with(|stack| {
        if let Ok(mut stack) = stack.try_borrow_mut() {
            stack.push(held(BRANCH.get()));
            HELD.set(stack.len());
        }
    });
}

/// Hands an aborted task to the gather whose reaping scope is open, if any; otherwise the task
/// is only aborted, as any dropped guard's is. `owner` is the address of the branch future
/// that held the guard, when that future is one of gather's own wrappers.
///
/// The task is polled once, with a waker that does nothing: a task that has ended is known
/// at once, and one that is still running no longer wakes the branch's waker when it ends,
/// which would wake the gather for nothing; the gather polls it with its own waker when it
/// waits for it. The poll is outside tokio's budget: it is a drop, not progress of the task.
fn reap<T: Send + 'static>(mut handle: JoinHandle<T>, owner: Option<usize>) {
    hold(|marked| {
        let branch = match (marked, owner) {
            (Some((index, address)), Some(owner)) if address == owner => Some(index),
            _ => None,
        };
        let mut quiet = Context::from_waker(Waker::noop());
        let task = match Pin::new(&mut tokio::task::unconstrained(&mut handle)).poll(&mut quiet) {
            Poll::Ready(outcome) => Task::Ended(ended(outcome)),
            Poll::Pending => Task::Running(Box::new(handle)),
        };
        Held::Task(Reap { branch, task })
    });
}

/// The tasks a gather aborted and still has to await, how they ended, and the panic the
/// gather must resume once they are gone.
#[derive(Default)]
pub struct Reaper {
    pending: Vec<Reap>,
    /// Branches whose own task finished before its abort took effect.
    finished: Vec<usize>,
    panic: Option<Box<dyn Any + Send>>,
    /// A spawned branch whose task was cancelled from outside: the message to panic with.
    outside: Option<String>,
}

impl core::fmt::Debug for Reaper {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Reaper")
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

/// A gather cancelled while it was still awaiting the tasks it aborted (its caller gave up,
/// or an outer gather cancelled it) hands them, and a panic it still had to resume, to the
/// gather whose reaping scope is open, if any: that gather awaits them before it returns.
impl Drop for Reaper {
    fn drop(&mut self) {
        if let Some(message) = self.outside.take() {
            self.panic.get_or_insert(Box::new(message));
        }
        if self.pending.is_empty() && self.panic.is_none() {
            return;
        }
        // These tasks were the inner gather's branches, not the outer one's.
        for reap in self.pending.drain(..) {
            hold(|_| {
                Held::Task(Reap {
                    branch: None,
                    task: reap.task,
                })
            });
        }
        if let Some(payload) = self.panic.take() {
            hold(|_| Held::Panic(payload));
        }
    }
}

/// An open reaping scope: the fixed form opens one, drops the branches it cancels, and closes
/// it into its reaper with [`close_into`](Scope::close_into); the dynamic form and the tests
/// use [`Reaper::collect`]. A guard rather than a closure, so that the drops need no closure
/// that captures every branch.
///
/// Opening and closing it touches only plain cells; the stack is reached only when something
/// was held in it. Dropping it closes it, also when a drop inside it panics: what it holds is
/// then dropped (its tasks only aborted), as the gather is gone.
#[must_use = "a reaping scope collects what is dropped while it is open, then must be closed"]
pub struct Scope {
    open: usize,
    branch: Option<(usize, usize)>,
    held: usize,
}

impl core::fmt::Debug for Scope {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Scope")
            .field("outer", &self.open)
            .finish_non_exhaustive()
    }
}

impl Scope {
    /// Opens a reaping scope on this thread, inside any already open.
    #[inline(always)]
    pub fn open() -> Scope {
        let open = OPEN.get();
        OPEN.set(open + 1);
        Scope {
            open,
            branch: BRANCH.take(),
            held: HELD.get(),
        }
    }

    /// Whether something was held in the scope since it opened.
    #[inline(always)]
    fn holds(&self) -> bool {
        HELD.get() != self.held
    }

    /// What the scope holds, taken off the stack.
    #[cold]
    #[inline(never)]
    fn take(&self) -> Vec<Held> {
        HELD.set(self.held);
        STACK
            .try_with(|stack| stack.borrow_mut().split_off(self.held))
            .unwrap_or_default()
    }

    /// Closes the scope, and gives what it held, if anything was.
    #[inline(always)]
    fn close(self) -> Option<Vec<Held>> {
        let held = self.holds().then(|| self.take());
        drop(self);
        held
    }

    /// Closes the scope. What it held (a task aborted, or a panic still to resume) goes to
    /// `reaper`, made then if there is none yet; a gather whose `reaper` stays `None` has
    /// nothing to await and can return at once.
    #[inline(always)]
    pub fn close_into(self, reaper: &mut Option<Reaper>) {
        if let Some(held) = self.close() {
            reaper.get_or_insert_default().keep(held);
        }
    }
}

impl Drop for Scope {
    #[inline(always)]
    fn drop(&mut self) {
        OPEN.set(self.open);
        BRANCH.set(self.branch);
        if self.holds() {
            drop(self.take());
        }
    }
}

impl Reaper {
    /// Runs `cancel` (the drops of a gather's branches) with a reaping scope open, and keeps
    /// every task aborted by it, to await in [`poll_reaped`](Reaper::poll_reaped).
    pub fn collect<R>(&mut self, cancel: impl FnOnce() -> R) -> R {
        let scope = Scope::open();
        let result = cancel();
        if let Some(held) = scope.close() {
            self.keep(held);
        }
        result
    }

    /// Keeps what a closed scope held: its tasks to await, and its first panic.
    #[cold]
    #[inline(never)]
    fn keep(&mut self, held: Vec<Held>) {
        let mut tasks = Vec::with_capacity(held.len() + self.pending.len());
        for held in held {
            match held {
                Held::Task(reap) => tasks.push(reap),
                // The first panic is the one resumed.
                Held::Panic(payload) => {
                    self.panic.get_or_insert(payload);
                }
            }
        }
        // Kept last-aborted first, so that `poll_reaped` meets them in abort order.
        tasks.reverse();
        tasks.append(&mut self.pending);
        self.pending = tasks;
    }

    /// Marks the branch whose drop follows (its index, and the address of its future), so
    /// that its own task is known as that branch's.
    pub fn mark(index: usize, address: usize) {
        BRANCH.set(Some((index, address)));
    }

    /// Awaits every collected task. Ready once all are gone.
    pub fn poll_reaped(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        // Only the last task is polled until it is gone: tasks end about in the order they
        // were aborted, so each wake costs one poll, not one per task still pending (which
        // made awaiting 10,000 aborted tasks quadratic).
        while let Some(reap) = self.pending.last_mut() {
            let ended = match &mut reap.task {
                Task::Running(task) => core::task::ready!(task.poll_ended(cx)),
                Task::Ended(ended) => core::mem::replace(ended, Ended::Aborted),
            };
            let branch = reap.branch;
            self.pending.pop();
            match ended {
                Ended::Finished => self.finished.extend(branch),
                Ended::Aborted => {}
                Ended::Panicked(payload) => {
                    self.panic.get_or_insert(payload);
                }
            }
        }
        Poll::Ready(())
    }

    /// Records the trouble of spawned branch `index` (see [`take_trouble`]): its panic, to
    /// resume once every other task is gone, or its cancellation from outside.
    pub fn trouble(&mut self, index: usize, name: &str, error: JoinError) {
        match error.try_into_panic() {
            Ok(payload) => {
                self.panic.get_or_insert(payload);
            }
            Err(_) => {
                self.outside.get_or_insert_with(|| {
                    format!(
                        "gather!: the task of branch {index} `{name}` was cancelled from outside \
                         (aborted elsewhere, or its runtime shut down), so it has no outcome"
                    )
                });
            }
        }
    }

    /// Whether the gather ends in a panic, once its tasks are gone.
    pub fn ends_in_panic(&self) -> bool {
        self.panic.is_some() || self.outside.is_some()
    }

    /// Resumes the first panic (of a branch, or of a task aborted too late), once every task is
    /// gone: a panic is never dropped on the way out.
    pub fn resume_panic(&mut self) {
        if let Some(payload) = self.panic.take() {
            std::panic::resume_unwind(payload);
        }
        if let Some(message) = self.outside.take() {
            panic!("{message}");
        }
    }

    /// Takes out of `cancelled` or `pending` the branches whose task finished before its abort
    /// took effect: they were not cancelled.
    pub fn keep_finished<T, E>(&self, result: &mut Result<T, crate::Error<E>>) {
        if self.finished.is_empty() {
            return;
        }
        if let Err(crate::Error::Failed {
            cancelled: branches,
            ..
        })
        | Err(crate::Error::TimedOut { pending: branches }) = result
        {
            branches.retain(|b| !self.finished.contains(&b.index()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::panic::{AssertUnwindSafe, catch_unwind};

    /// The scope cells of this thread: open scopes, marked branch, held count, stack length.
    fn cells() -> (usize, Option<(usize, usize)>, usize, usize) {
        let stack = STACK.with(|stack| stack.borrow().len());
        (OPEN.get(), BRANCH.get(), HELD.get(), stack)
    }

    /// As they are with no scope open.
    const CLOSED: (usize, Option<(usize, usize)>, usize, usize) = (0, None, 0, 0);

    fn hold_panic(code: u32) {
        hold(|_| Held::Panic(Box::new(code)));
    }

    /// Always `true`, though the compiler cannot tell: code after a panic stays reachable.
    fn caught_here() -> bool {
        std::hint::black_box(true)
    }

    fn panic_code(reaper: &mut Reaper) -> Option<u32> {
        reaper
            .panic
            .take()
            .and_then(|p| p.downcast::<u32>().ok())
            .map(|p| *p)
    }

    #[test]
    fn a_scope_that_holds_nothing_makes_no_reaper() {
        let mut reaper = None;
        let scope = Scope::open();
        assert_eq!(cells(), (1, None, 0, 0));
        Reaper::mark(3, 0x40);
        scope.close_into(&mut reaper);
        assert!(reaper.is_none());
        assert_eq!(cells(), CLOSED);
    }

    #[test]
    fn a_scope_that_holds_something_makes_a_reaper_for_it() {
        let mut reaper = None;
        let scope = Scope::open();
        hold_panic(1);
        scope.close_into(&mut reaper);
        assert_eq!(cells(), CLOSED);
        let mut reaper = reaper.expect("the scope held a panic");
        assert!(reaper.ends_in_panic());
        assert_eq!(panic_code(&mut reaper), Some(1));
    }

    #[test]
    fn nested_scopes_keep_what_was_held_in_each() {
        let mut outer = None;
        let scope = Scope::open();
        hold_panic(1);
        let mut empty = None;
        Scope::open().close_into(&mut empty);
        assert!(empty.is_none());
        let mut inner = None;
        let inner_scope = Scope::open();
        hold_panic(2);
        inner_scope.close_into(&mut inner);
        assert_eq!(cells(), (1, None, 1, 1));
        let mut inner = inner.expect("the inner scope held a panic");
        assert_eq!(panic_code(&mut inner), Some(2));
        scope.close_into(&mut outer);
        assert_eq!(cells(), CLOSED);
        let mut outer = outer.expect("the outer scope held a panic");
        assert_eq!(panic_code(&mut outer), Some(1));
    }

    #[test]
    fn a_drop_that_panics_inside_a_scope_closes_it() {
        let mut reaper = None;
        let caught = catch_unwind(AssertUnwindSafe(|| {
            let scope = Scope::open();
            Reaper::mark(0, 0x40);
            hold_panic(1);
            if caught_here() {
                panic!("a drop panicked");
            }
            scope.close_into(&mut reaper);
        }));
        assert!(caught.is_err());
        // What the scope held is dropped with it: the gather is gone.
        assert!(reaper.is_none());
        assert_eq!(cells(), CLOSED);
    }

    #[test]
    fn a_reaper_adds_what_a_later_scope_held() {
        let mut reaper = Reaper::default();
        reaper.collect(|| {});
        assert!(!reaper.ends_in_panic());
        reaper.collect(|| hold_panic(1));
        reaper.collect(|| hold_panic(2));
        assert_eq!(cells(), CLOSED);
        // The first panic is the one resumed.
        assert_eq!(panic_code(&mut reaper), Some(1));
    }
}
