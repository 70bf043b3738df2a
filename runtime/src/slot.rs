//! One branch of a fixed-form gather, polled in place.
//!
//! The branch future is pinned in the caller's frame as an `Option<F>`: `Pin::as_pin_mut`
//! projects to the future without `unsafe`, and `Pin::set(None)` drops it in place, which is
//! how a cancelled branch stops the moment its gather decides so.

use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll};

use core::convert::Infallible;

use crate::error::{Branch, Error};

/// A branch's future, then what the gather keeps of its output. Built by `gather!` with a
/// struct literal, so that the `pin!` inside it lives as long as the gather's block.
///
/// `O` is what is kept: the whole output under `settle` and `finish`, the success value under
/// `cancel` (the error leaves the slot the moment it is seen).
#[must_use = "a gather branch does nothing unless polled"]
pub struct Slot<'a, F, O> {
    /// The branch future while it runs; `None` once it has finished or been cancelled.
    pub fut: Pin<&'a mut Option<F>>,
    /// What the gather keeps of the branch's output, until it takes it.
    pub out: Option<O>,
}

impl<F, O> core::fmt::Debug for Slot<'_, F, O> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let state = match (self.fut.is_some(), self.out.is_some()) {
            (true, _) => "running",
            (false, true) => "finished",
            (false, false) => "ended",
        };
        f.debug_struct("Slot").field("state", &state).finish()
    }
}

/// The output a `cancel` or `finish` branch must have: a `Result`.
#[diagnostic::on_unimplemented(
    message = "a `gather!` branch under this policy must output a `Result`, but this one outputs `{Self}`",
    label = "this branch's output is not a `Result`",
    note = "`policy = cancel` and `policy = finish` need `Result<T, E>` to tell success from failure",
    note = "to collect outputs of any type, use `gather!(policy = settle; ...)`"
)]
pub trait BranchResult {
    /// The success type.
    type Ok;
    /// The error type.
    type Err;
    /// The output as a `Result`.
    fn into_result(self) -> Result<Self::Ok, Self::Err>;
}

impl<T, E> BranchResult for Result<T, E> {
    type Ok = T;
    type Err = E;
    #[inline]
    fn into_result(self) -> Result<T, E> {
        self
    }
}

/// What the polls of a gather found so far: whether a branch is still running (reset before
/// each pass over the branches), the failure that ends a `cancel` gather, the failures of a
/// `finish` gather.
#[derive(Debug)]
pub struct BranchErrors<E> {
    pending: bool,
    failure: Option<(usize, E)>,
    errors: Vec<(usize, E)>,
}

impl<E> BranchErrors<E> {
    /// An empty record, before the first poll.
    #[inline]
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        BranchErrors {
            pending: false,
            failure: None,
            errors: Vec::new(),
        }
    }

    /// The record itself. `gather!` passes `(record).by_ref()` to each branch's poll: an
    /// expression whose tokens all carry the branch's span, so that an error type that differs
    /// is reported under that branch.
    #[inline]
    pub fn by_ref(&mut self) -> &mut Self {
        self
    }

    /// Starts a pass over the branches.
    #[inline]
    pub fn begin(&mut self) {
        self.pending = false;
    }

    /// Whether a branch polled in this pass is still running.
    #[inline]
    pub fn pending(&self) -> bool {
        self.pending
    }

    /// The failure that ends a `cancel` gather, as its branch index and error.
    #[inline]
    pub fn take_failure(&mut self) -> Option<(usize, E)> {
        self.failure.take()
    }

    /// `finish`: every failure, in branch order, once no branch is running.
    pub fn take_failures(&mut self, names: &[&'static str]) -> Option<Error<E>> {
        if self.errors.is_empty() {
            return None;
        }
        let mut errors = core::mem::take(&mut self.errors);
        errors.sort_by_key(|(index, _)| *index);
        let errors = errors
            .into_iter()
            .map(|(index, error)| (Branch::__new(index, names[index]), error))
            .collect();
        Some(Error::Failures { errors })
    }
}

/// Every branch of one gather shares one error type: a branch's error type `E` must be the one
/// the gather's `BranchErrors` holds. A trait rather than plain type equality, so that a
/// mismatch is reported under the branch, with words a user can act on.
#[diagnostic::on_unimplemented(
    message = "the branches of a `gather!` must share one error type, but this branch fails with `{E}`",
    label = "this branch's error type differs from the other branches'",
    note = "the other branches fail with the error type inside `{Self}`",
    note = "convert the errors to one type inside the branches, e.g. `async {{ read().await.map_err(MyError::from) }}`"
)]
pub trait SameError<E> {
    /// The record of a gather whose branches fail with `E`.
    fn errors(&mut self) -> &mut BranchErrors<E>;
}

impl<E> SameError<E> for BranchErrors<E> {
    #[inline]
    fn errors(&mut self) -> &mut BranchErrors<E> {
        self
    }
}

/// `cancel`: the error for a failure at `index`.
pub fn failed<E>(
    index: usize,
    names: &[&'static str],
    error: E,
    cancelled: Vec<Branch>,
) -> Error<E> {
    Error::Failed {
        branch: Branch::__new(index, names[index]),
        error,
        cancelled,
    }
}

impl<F, O> Slot<'_, F, O> {
    /// Polls the branch unless it has ended. `Some(output)` the one time it finishes.
    #[inline]
    fn poll_fut(&mut self, cx: &mut Context<'_>) -> Poll<Option<F::Output>>
    where
        F: Future,
    {
        let Some(fut) = self.fut.as_mut().as_pin_mut() else {
            return Poll::Ready(None);
        };
        match fut.poll(cx) {
            Poll::Ready(out) => {
                self.fut.set(None);
                Poll::Ready(Some(out))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    /// `settle`: polls the branch and keeps its output.
    #[inline]
    pub fn poll_settle(&mut self, cx: &mut Context<'_>, pass: &mut BranchErrors<Infallible>)
    where
        F: Future<Output = O>,
    {
        match self.poll_fut(cx) {
            Poll::Ready(Some(out)) => self.out = Some(out),
            Poll::Ready(None) => {}
            Poll::Pending => pass.pending = true,
        }
    }

    /// `cancel`: polls the branch and keeps its success value. On an error, records it and
    /// returns `true`, so that no later branch is polled in this pass.
    #[inline]
    pub fn poll_cancel<E, P>(&mut self, cx: &mut Context<'_>, pass: &mut P, index: usize) -> bool
    where
        F: Future,
        F::Output: BranchResult<Ok = O, Err = E>,
        P: SameError<E>,
    {
        match self.poll_fut(cx) {
            Poll::Ready(Some(out)) => match out.into_result() {
                Ok(value) => self.out = Some(value),
                Err(error) => {
                    pass.errors().failure = Some((index, error));
                    return true;
                }
            },
            Poll::Ready(None) => {}
            Poll::Pending => pass.errors().pending = true,
        }
        false
    }

    /// `finish`: polls the branch; keeps its success value, or records its error.
    #[inline]
    pub fn poll_finish<E, P>(&mut self, cx: &mut Context<'_>, pass: &mut P, index: usize)
    where
        F: Future,
        F::Output: BranchResult<Ok = O, Err = E>,
        P: SameError<E>,
    {
        match self.poll_fut(cx) {
            Poll::Ready(Some(out)) => match out.into_result() {
                Ok(value) => self.out = Some(value),
                Err(error) => pass.errors().errors.push((index, error)),
            },
            Poll::Ready(None) => {}
            Poll::Pending => pass.errors().pending = true,
        }
    }
}

impl<F, O> Slot<'_, F, O> {
    /// Drops the branch future if it is still running, and names it in `cancelled` if so.
    #[inline]
    pub fn cancel(&mut self, index: usize, names: &[&'static str], cancelled: &mut Vec<Branch>) {
        if self.fut.is_some() {
            self.fut.set(None);
            cancelled.push(Branch::__new(index, names[index]));
        }
    }

    /// What the gather kept of the output. Called once, after every branch has finished.
    #[inline]
    pub fn take(&mut self) -> O {
        match self.out.take() {
            Some(out) => out,
            None => unreachable!("gather! took an output that was not there"),
        }
    }
}
