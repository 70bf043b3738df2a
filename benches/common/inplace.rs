//! Gates for in-place contenders, and the hand-written executor that drives them: one thread,
//! a waker at the top that only raises a flag, and after each opening the workload's script
//! marks, polls for as long as the flag was raised (a contender that yields, as
//! `FuturesUnordered` does after a batch, wakes itself and is polled again).

use core::cell::Cell;
use core::future::Future;
use core::pin::{Pin, pin};
use core::task::{Context, Poll, Waker};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Wake;

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId};

use crate::common::{PENDING, Plan};

/// The digest of a run that did not finish.
const UNFINISHED: u64 = u64::MAX - 1;

struct Gate {
    state: Cell<u8>,
    waker: Cell<Option<Waker>>,
}

/// The top-level waker's flag: raised by a wake, lowered by the driver before it polls.
struct Flag(AtomicBool);

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// The gates of one benchmark, borrowed by the leaf futures of every run, and the waker the
/// driver polls with.
pub(crate) struct Board {
    gates: Vec<Gate>,
    flag: Arc<Flag>,
    waker: Waker,
}

impl Board {
    pub(crate) fn new(n: usize) -> Board {
        let gates = (0..n)
            .map(|_| Gate {
                state: Cell::new(PENDING),
                waker: Cell::new(None),
            })
            .collect();
        let flag = Arc::new(Flag(AtomicBool::new(false)));
        let waker = Waker::from(Arc::clone(&flag));
        Board { gates, flag, waker }
    }

    /// The leaf future of branch `index`: `Ok(index)` or `Err(index)` once its gate opens.
    pub(crate) fn leaf(&self, index: usize) -> Leaf<'_> {
        Leaf {
            gate: &self.gates[index],
            value: u32::try_from(index).expect("branch counts fit a u32"),
        }
    }

    fn reset(&self, state: u8) {
        for gate in &self.gates {
            gate.state.set(state);
        }
    }

    fn open(&self, index: usize, state: u8) {
        let gate = &self.gates[index];
        gate.state.set(state);
        if let Some(waker) = gate.waker.take() {
            waker.wake();
        }
    }
}

/// A gate's future. It keeps the last waker it was polled with, as a real leaf would, and
/// forgets it when dropped, as a timer or a socket deregisters.
#[must_use = "a leaf does nothing unless polled"]
pub(crate) struct Leaf<'a> {
    gate: &'a Gate,
    value: u32,
}

impl Future for Leaf<'_> {
    type Output = Result<u32, u32>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.gate.state.get() {
            crate::common::OK => Poll::Ready(Ok(self.value)),
            crate::common::ERR => Poll::Ready(Err(self.value)),
            _ => {
                let waker = match self.gate.waker.take() {
                    Some(mut waker) => {
                        waker.clone_from(cx.waker());
                        waker
                    }
                    None => cx.waker().clone(),
                };
                self.gate.waker.set(Some(waker));
                Poll::Pending
            }
        }
    }
}

impl Drop for Leaf<'_> {
    fn drop(&mut self) {
        drop(self.gate.waker.take());
    }
}

/// Runs `fut` (made after the gates are reset) through `plan`: polls it, then makes each
/// opening, and after those the plan marks, polls again as long as it was woken. Every
/// contender is driven by this same loop.
pub(crate) fn drive<F: Future<Output = u64>>(
    board: &Board,
    plan: &Plan,
    make: impl FnOnce() -> F,
) -> u64 {
    board.reset(plan.preset);
    let mut fut = pin!(make());
    let mut cx = Context::from_waker(&board.waker);
    let mut poll = |fut: Pin<&mut F>| -> Option<u64> {
        board.flag.0.store(false, Ordering::Relaxed);
        let mut fut = fut;
        loop {
            if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
                return Some(out);
            }
            if !board.flag.0.swap(false, Ordering::Relaxed) {
                return None;
            }
        }
    };
    if let Some(out) = poll(fut.as_mut()) {
        return out;
    }
    for step in &plan.steps {
        board.open(step.index, step.state);
        if step.poll
            && board.flag.0.load(Ordering::Relaxed)
            && let Some(out) = poll(fut.as_mut())
        {
            return out;
        }
    }
    // Not finished with every gate open: the check in `run` names the contender.
    UNFINISHED
}

/// Checks that `make`'s runs give the plan's digest, then measures them as `name` at `n`
/// branches in `group`. A contender that does not finish once a failure is in (it is not
/// fail-fast) is reported and skipped.
pub(crate) fn run<F: Future<Output = u64>>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    n: usize,
    board: &Board,
    plan: &Plan,
    make: impl Fn() -> F,
) {
    let out = drive(board, plan, &make);
    if out == UNFINISHED {
        // `try_join_all` above 30 futures waits for the branches before a failure.
        println!("{name} at {n} branches: still running after the failure, not measured");
        return;
    }
    assert_eq!(out, plan.expected, "{name} at {n} branches");
    group.bench_function(BenchmarkId::new(name, n), |bencher| {
        bencher.iter(|| drive(board, plan, &make));
    });
}
