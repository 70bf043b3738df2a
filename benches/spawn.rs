//! `gather!(spawn; for i in 0..n => leaf(i))` against tokio's `JoinSet` and `tokio::spawn` with
//! a `Vec` of `JoinHandle`s, at 10, 1000 and 10000 tasks, on a current-thread runtime and on a
//! runtime with two workers.
//!
//! On two workers at 10 tasks, a run takes tens of microseconds, most of it threads waking,
//! and criterion's medians, measured one contender after the other, swing from run to run (the
//! same code measured 0.56 and 1.49 of `JoinSet` in two runs). Those rows are also measured in
//! paired rounds: `gather!` and `JoinSet` take turns, 200 runs each, forty times, and the median
//! of the forty ratios is kept, in `target/criterion/paired/`, for `benches/ratios.py`.
//!
//! `cargo bench --bench spawn`; `benches/RESULTS.md` has the ratios.

use core::future::{Future, poll_fn};
use core::pin::{Pin, pin};
use core::task::{Context, Poll};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId, Criterion, criterion_group, criterion_main};
use futures::task::AtomicWaker;
use gather::gather;
use tokio::runtime::{Builder, Runtime};
use tokio::task::{JoinHandle, JoinSet};

mod common;

use common::{OK, PENDING, Plan, Workload, digest, into_index};

const COUNTS: [usize; 3] = [10, 1000, 10000];

struct Gate {
    state: AtomicU8,
    waker: AtomicWaker,
}

/// The gates of one benchmark, shared with the tasks.
struct Board {
    gates: Vec<Gate>,
    /// How many leaves have been polled and are waiting on their gate.
    registered: AtomicUsize,
}

impl Board {
    fn new(n: usize) -> Arc<Board> {
        let gates = (0..n)
            .map(|_| Gate {
                state: AtomicU8::new(PENDING),
                waker: AtomicWaker::new(),
            })
            .collect();
        Arc::new(Board {
            gates,
            registered: AtomicUsize::new(0),
        })
    }

    fn reset(&self, state: u8) {
        for gate in &self.gates {
            gate.state.store(state, Ordering::Relaxed);
        }
        self.registered.store(0, Ordering::Relaxed);
    }

    fn open(&self, index: usize, state: u8) {
        let gate = &self.gates[index];
        gate.state.store(state, Ordering::Release);
        gate.waker.wake();
    }
}

/// A gate's future, `Send + 'static` so that it can be a task.
#[must_use = "a leaf does nothing unless polled"]
struct Leaf {
    board: Arc<Board>,
    index: usize,
    registered: bool,
}

fn leaf(board: &Arc<Board>, index: usize) -> Leaf {
    Leaf {
        board: Arc::clone(board),
        index,
        registered: false,
    }
}

impl Leaf {
    fn outcome(&self) -> Option<Result<u32, u32>> {
        let value = u32::try_from(self.index).expect("task counts fit a u32");
        match self.board.gates[self.index].state.load(Ordering::Acquire) {
            OK => Some(Ok(value)),
            PENDING => None,
            _ => Some(Err(value)),
        }
    }
}

impl Future for Leaf {
    type Output = Result<u32, u32>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Some(out) = self.outcome() {
            return Poll::Ready(out);
        }
        self.board.gates[self.index].waker.register(cx.waker());
        if !self.registered {
            self.registered = true;
            self.board.registered.fetch_add(1, Ordering::Release);
        }
        // The gate may have opened before the waker was in place.
        match self.outcome() {
            Some(out) => Poll::Ready(out),
            None => Poll::Pending,
        }
    }
}

impl Drop for Leaf {
    fn drop(&mut self) {
        drop(self.board.gates[self.index].waker.take());
    }
}

/// Runs `make()`'s future under `plan`: when the plan opens gates, it first lets the runtime
/// poll every task until each waits on its gate, then opens them, then awaits the end.
async fn drive<F: Future<Output = u64>>(
    board: &Arc<Board>,
    plan: &Plan,
    make: impl FnOnce() -> F,
) -> u64 {
    board.reset(plan.preset);
    let mut fut = pin!(make());
    if plan.steps.is_empty() {
        return fut.await;
    }
    let n = board.gates.len();
    let early = poll_fn(|cx| match fut.as_mut().poll(cx) {
        Poll::Ready(out) => Poll::Ready(Some(out)),
        Poll::Pending if board.registered.load(Ordering::Acquire) == n => Poll::Ready(None),
        Poll::Pending => {
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
    .await;
    if let Some(out) = early {
        return out;
    }
    for step in &plan.steps {
        board.open(step.index, step.state);
    }
    fut.await
}

/// `JoinSet`: outputs put back in input order; at the first error, `shutdown`.
async fn join_set(b: &Arc<Board>, n: usize) -> u64 {
    let mut set = JoinSet::new();
    for i in 0..n {
        set.spawn(leaf(b, i));
    }
    let mut out = vec![0; n];
    while let Some(joined) = set.join_next().await {
        match joined.expect("a leaf never panics") {
            Ok(value) => out[value as usize] = value,
            Err(index) => {
                set.shutdown().await;
                return index.into();
            }
        }
    }
    digest(Ok::<_, u32>(out))
}

/// `tokio::spawn` and the handles awaited in order; at the first error, every other task is
/// aborted, then awaited.
async fn handles(b: &Arc<Board>, n: usize) -> u64 {
    let mut handles: Vec<JoinHandle<_>> = (0..n).map(|i| tokio::spawn(leaf(b, i))).collect();
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        match (&mut handles[i]).await.expect("a leaf never panics") {
            Ok(value) => out.push(value),
            Err(index) => {
                let rest = handles.split_off(i + 1);
                for handle in &rest {
                    handle.abort();
                }
                for handle in rest {
                    // Cancelled, as asked: only the wait matters.
                    let _ = handle.await;
                }
                return index.into();
            }
        }
    }
    digest(Ok::<_, u32>(out))
}

/// One workload at one task count on one runtime.
struct Run<'a, 'g> {
    group: &'a mut BenchmarkGroup<'g, WallTime>,
    rt: &'a Runtime,
    board: &'a Arc<Board>,
    plan: &'a Plan,
    n: usize,
}

impl Run<'_, '_> {
    /// Checks that `make`'s runs give the plan's digest, then measures them as `name`.
    fn run<F: Future<Output = u64>>(&mut self, name: &str, make: impl Fn() -> F) {
        let Run {
            rt, board, plan, n, ..
        } = *self;
        let out = rt.block_on(drive(board, plan, &make));
        assert_eq!(out, plan.expected, "{name} at {n} tasks");
        self.group
            .bench_function(BenchmarkId::new(name, n), |bencher| {
                bencher.iter(|| rt.block_on(drive(board, plan, &make)));
            });
    }
}

fn bench_runtime(c: &mut Criterion, label: &str, rt: &Runtime) {
    for n in COUNTS {
        let board = Board::new(n);
        let b = &board;
        for workload in [Workload::Ready, Workload::AllWoken, Workload::Fail(0)] {
            let plan = Plan::new(workload, n);
            let mut group = c.benchmark_group(format!("{label}/{}", workload.name(n)));
            let mut run = Run {
                group: &mut group,
                rt,
                board: b,
                plan: &plan,
                n,
            };
            run.run("gather-spawn", || async move {
                digest(gather!(spawn; for i in 0..n => leaf(b, i)).map_err(into_index))
            });
            run.run("JoinSet", || join_set(b, n));
            run.run("spawn+JoinHandle", || handles(b, n));
            group.finish();
        }
    }
}

fn two_workers() -> Runtime {
    Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .expect("a runtime with two workers")
}

fn spawn(c: &mut Criterion) {
    let current = Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime");
    bench_runtime(c, "spawn-current", &current);
    bench_runtime(c, "spawn-2workers", &two_workers());
}

/// The rows of two workers at 10 tasks in paired rounds (see the top of this file and
/// [`common::Paired`]).
fn paired(_: &mut Criterion) {
    let rt = two_workers();
    let n = 10;
    let board = Board::new(n);
    let b = &board;
    for workload in [Workload::Ready, Workload::AllWoken, Workload::Fail(0)] {
        let plan = Plan::new(workload, n);
        let gather = || {
            rt.block_on(drive(b, &plan, || async move {
                digest(gather!(spawn; for i in 0..n => leaf(b, i)).map_err(into_index))
            }))
        };
        let join_set = || rt.block_on(drive(b, &plan, || join_set(b, n)));
        common::Paired {
            group: "spawn-2workers",
            workload: &workload.name(n),
            ours: "gather-spawn",
            n,
            runs: 200,
            expected: plan.expected,
        }
        .run(&gather, ("JoinSet", &join_set));
    }
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = spawn, paired
}
criterion_main!(benches);
