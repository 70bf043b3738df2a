//! Deterministic counters for `gather!` and its peers, beside the times of the benchmarks:
//! polls, heap allocations, the size of the future, and what a failure does to the siblings.
//!
//! Every leaf future is a gate that this program opens by hand, and every contender is polled
//! by hand with a counting waker (`JoinSet` by a current-thread tokio runtime, behind a waker
//! that counts and forwards), so the counts are exact and the same at every run:
//!
//! - child polls per branch, against the floor of 1 + the wakes that branch received;
//! - parent polls (polls of the contender's future);
//! - heap allocations and bytes from building the future until it is dropped, counted by a
//!   global allocator that forwards to the system's;
//! - `size_of_val` of the future, before its first poll;
//! - after a failure (all branches pending, then one gate opens with an error): polls of the
//!   siblings and of the parent after the failing poll, and how many pending siblings were
//!   already dropped when the error came back.
//!
//! Run it with:
//!
//! ```sh
//! cargo run --release --example counters
//! ```

// For the counting global allocator only: it cannot be written without `unsafe`.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::fmt;
use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Wake, Waker};

use futures::future::{join_all, try_join_all};
use futures::stream::{FuturesUnordered, StreamExt};
use gather::gather;
use gather_tests::Wakes;
use tokio::runtime::Runtime;
use tokio::task::JoinSet;

// ---- a global allocator that counts -------------------------------------------------------

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);
static ALLOCATED_BYTES: AtomicUsize = AtomicUsize::new(0);

/// The system allocator, counting every allocation (a `realloc` counts as one, of its new
/// size). The program runs on one thread, so the counts are the measured code's.
struct Counting;

fn count(size: usize) {
    ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    ALLOCATED_BYTES.fetch_add(size, Ordering::Relaxed);
}

// SAFETY: every method forwards its arguments unchanged to `System`, so `System`'s guarantees
// are this allocator's; the counting only touches atomics, and never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, which is `System`'s.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size);
        // SAFETY: `ptr` and `layout` come from this allocator, that is from `System`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` and `layout` come from this allocator, that is from `System`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations and bytes so far.
fn allocated() -> (usize, usize) {
    (
        ALLOCATIONS.load(Ordering::Relaxed),
        ALLOCATED_BYTES.load(Ordering::Relaxed),
    )
}

// ---- leaves: gates opened by the program -------------------------------------------------

const CLOSED: u8 = 0;
const OPEN: u8 = 1;
const FAILING: u8 = 2;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One branch's gate and what happened to its leaf.
#[derive(Default)]
struct Gate {
    state: AtomicU8,
    waker: Mutex<Option<Waker>>,
    polls: AtomicUsize,
    wakes: AtomicUsize,
    finished: AtomicBool,
    dropped: AtomicBool,
}

/// The gates of one run, allocated before it is measured: a leaf's poll never allocates.
struct Board {
    gates: Vec<Gate>,
    /// The index of the next leaf made by [`leaf_next`] (the fixed form).
    next: AtomicUsize,
    /// A leaf has returned its error.
    failed: AtomicBool,
    /// Polls of leaves after a leaf returned its error.
    polls_after_failure: AtomicUsize,
}

impl Board {
    fn new(n: usize) -> Self {
        Board {
            gates: (0..n).map(|_| Gate::default()).collect(),
            next: AtomicUsize::new(0),
            failed: AtomicBool::new(false),
            polls_after_failure: AtomicUsize::new(0),
        }
    }

    /// Opens gate `index` (with an error if `state` is `FAILING`) and wakes its leaf.
    fn open(&self, index: usize, state: u8) {
        let gate = &self.gates[index];
        let waker = {
            let mut waker = lock(&gate.waker);
            gate.state.store(state, Ordering::SeqCst);
            waker.take()
        };
        if let Some(waker) = waker {
            gate.wakes.fetch_add(1, Ordering::SeqCst);
            waker.wake();
        }
    }

    fn finished(&self, index: usize) -> bool {
        self.gates[index].finished.load(Ordering::SeqCst)
    }

    fn dropped(&self) -> usize {
        let dropped = |g: &Gate| g.dropped.load(Ordering::SeqCst);
        self.gates.iter().filter(|g| dropped(g)).count()
    }

    /// Leaves neither finished nor dropped.
    fn live(&self) -> usize {
        let live =
            |g: &Gate| !g.finished.load(Ordering::SeqCst) && !g.dropped.load(Ordering::SeqCst);
        self.gates.iter().filter(|g| live(g)).count()
    }
}

#[derive(Debug)]
struct Fail;

/// A leaf future: pending until its gate opens, then its index, or `Fail`.
struct Leaf {
    board: Arc<Board>,
    index: usize,
    done: bool,
}

fn leaf(board: &Arc<Board>, index: usize) -> Leaf {
    Leaf {
        board: Arc::clone(board),
        index,
        done: false,
    }
}

/// The next leaf in order: the fixed-form calls repeat one branch expression.
fn leaf_next(board: &Arc<Board>) -> Leaf {
    leaf(board, board.next.fetch_add(1, Ordering::SeqCst))
}

impl Future for Leaf {
    type Output = Result<usize, Fail>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let board = &*this.board;
        let gate = &board.gates[this.index];
        gate.polls.fetch_add(1, Ordering::SeqCst);
        if board.failed.load(Ordering::SeqCst) {
            board.polls_after_failure.fetch_add(1, Ordering::SeqCst);
        }
        let state = {
            let mut waker = lock(&gate.waker);
            let state = gate.state.load(Ordering::SeqCst);
            if state == CLOSED {
                match &*waker {
                    Some(old) if old.will_wake(cx.waker()) => {}
                    _ => *waker = Some(cx.waker().clone()),
                }
                return Poll::Pending;
            }
            state
        };
        this.done = true;
        gate.finished.store(true, Ordering::SeqCst);
        if state == FAILING {
            board.failed.store(true, Ordering::SeqCst);
            Poll::Ready(Err(Fail))
        } else {
            Poll::Ready(Ok(this.index))
        }
    }
}

/// A dropped leaf forgets its waker, as a timer or a channel forgets the waker of a future
/// that is dropped: nothing keeps a branch's waker once the gather has returned.
impl Drop for Leaf {
    fn drop(&mut self) {
        let gate = &self.board.gates[self.index];
        lock(&gate.waker).take();
        if !self.done {
            gate.dropped.store(true, Ordering::SeqCst);
        }
    }
}

// ---- workloads -------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq)]
enum Workload {
    AllReady,
    Together,
    Reverse,
    FailFirst,
    FailLast,
}

impl Workload {
    const ALL: [Workload; 5] = [
        Workload::AllReady,
        Workload::Together,
        Workload::Reverse,
        Workload::FailFirst,
        Workload::FailLast,
    ];

    fn fails(self) -> bool {
        matches!(self, Workload::FailFirst | Workload::FailLast)
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Workload::AllReady => "all ready",
            Workload::Together => "woken together",
            Workload::Reverse => "one at a time, reverse",
            Workload::FailFirst => "fails at 0",
            Workload::FailLast => "fails at N-1",
        })
    }
}

/// What the program does to the gates as a run goes.
struct Script {
    workload: Workload,
    n: usize,
    /// Every leaf has been polled once: the workload's gates may open.
    started: bool,
    /// Gates opened so far by the workload.
    opened: usize,
    recovered: bool,
}

impl Script {
    /// The script of `workload`; under `AllReady`, every gate opens before the first poll.
    fn new(workload: Workload, board: &Board) -> Self {
        let n = board.gates.len();
        if workload == Workload::AllReady {
            (0..n).for_each(|i| board.open(i, OPEN));
        }
        Script {
            workload,
            n,
            started: false,
            opened: 0,
            recovered: false,
        }
    }

    /// Takes the next step of the workload, if one is due; `true` if it opened a gate.
    fn act(&mut self, board: &Board) -> bool {
        if !self.started {
            let polled = |g: &Gate| g.polls.load(Ordering::SeqCst) > 0;
            self.started = board.gates.iter().all(polled);
            if !self.started {
                return false;
            }
        }
        let n = self.n;
        match self.workload {
            Workload::AllReady => return false,
            Workload::Together if self.opened == 0 => (0..n).for_each(|i| board.open(i, OPEN)),
            // The next gate opens once the branch of the last one has finished.
            Workload::Reverse if self.opened < n => {
                if self.opened > 0 && !board.finished(n - self.opened) {
                    return false;
                }
                board.open(n - 1 - self.opened, OPEN);
            }
            Workload::FailFirst if self.opened == 0 => board.open(0, FAILING),
            Workload::FailLast if self.opened == 0 => board.open(n - 1, FAILING),
            _ => return false,
        }
        self.opened += 1;
        true
    }

    /// A contender that does not return after a failure (nor wake): opens every other gate,
    /// so that it can.
    fn recover(&mut self, board: &Board) -> bool {
        if !self.workload.fails() || self.opened == 0 || self.recovered {
            return false;
        }
        self.recovered = true;
        let closed = |i: &usize| board.gates[*i].state.load(Ordering::SeqCst) == CLOSED;
        (0..self.n).filter(closed).for_each(|i| board.open(i, OPEN));
        true
    }
}

// ---- drivers ---------------------------------------------------------------------------------

/// The counts of one contender on one workload.
struct Row {
    form: &'static str,
    contender: &'static str,
    workload: Workload,
    n: usize,
    size: usize,
    parent_polls: usize,
    child_polls: usize,
    max_child_polls: usize,
    /// The sum over branches of 1 + the wakes the branch received.
    floor: usize,
    /// The most polls over 1 + wakes, over the branches.
    worst_excess: usize,
    allocations: usize,
    bytes: usize,
    /// Under a failure: sibling polls after the failing poll, parent polls after the one that
    /// observed the error, and the pending siblings already dropped when the error came back.
    after_failure: Option<(usize, usize, usize)>,
}

/// What a driver saw while the contender ran.
#[derive(Default)]
struct Seen {
    size: usize,
    parent_polls: usize,
    parent_polls_after_failure: usize,
    dropped_at_return: usize,
}

impl Row {
    fn new(
        form: &'static str,
        contender: &'static str,
        workload: Workload,
        board: &Board,
        seen: &Seen,
        (allocations, bytes): (usize, usize),
    ) -> Self {
        let polls = |g: &Gate| g.polls.load(Ordering::SeqCst);
        let floor = |g: &Gate| 1 + g.wakes.load(Ordering::SeqCst);
        let gates = &board.gates;
        Row {
            form,
            contender,
            workload,
            n: gates.len(),
            size: seen.size,
            parent_polls: seen.parent_polls,
            child_polls: gates.iter().map(polls).sum(),
            max_child_polls: gates.iter().map(polls).max().unwrap_or(0),
            floor: gates.iter().map(floor).sum(),
            worst_excess: gates
                .iter()
                .map(|g| polls(g).saturating_sub(floor(g)))
                .max()
                .unwrap_or(0),
            allocations,
            bytes,
            after_failure: workload.fails().then(|| {
                (
                    board.polls_after_failure.load(Ordering::SeqCst),
                    seen.parent_polls_after_failure,
                    seen.dropped_at_return,
                )
            }),
        }
    }
}

/// Runs the future that `make` builds over a fresh board of `n` gates, polled by hand with a
/// counting waker: polled again only when woken; when not woken, the workload's next step.
fn run_by_hand<F: Future>(
    make: &impl Fn(Arc<Board>) -> F,
    name: &str,
    workload: Workload,
    n: usize,
) -> (Arc<Board>, Seen, (usize, usize)) {
    let board = Arc::new(Board::new(n));
    let mut script = Script::new(workload, &board);
    let wakes = Wakes::new();
    let waker = wakes.waker();
    let mut cx = Context::from_waker(&waker);
    let mut seen = Seen::default();
    let before = allocated();
    {
        let fut = make(Arc::clone(&board));
        seen.size = size_of_val(&fut);
        let mut fut = pin!(fut);
        let mut woken = wakes.count();
        loop {
            seen.parent_polls += 1;
            if board.failed.load(Ordering::SeqCst) {
                seen.parent_polls_after_failure += 1;
            }
            if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
                seen.dropped_at_return = board.dropped();
                drop(out);
                break;
            }
            while wakes.count() == woken {
                if !script.act(&board) && !script.recover(&board) {
                    panic!("{name} on {workload}: pending, not woken, and no gate left to open");
                }
            }
            woken = wakes.count();
        }
    }
    let after = allocated();
    (board, seen, (after.0 - before.0, after.1 - before.1))
}

/// A waker that counts its wakes and forwards them to the runtime's waker.
#[derive(Default)]
struct Forward {
    wakes: AtomicUsize,
    to: Mutex<Option<Waker>>,
}

impl Wake for Forward {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.wakes.fetch_add(1, Ordering::SeqCst);
        if let Some(to) = lock(&self.to).as_ref() {
            to.wake_by_ref();
        }
    }
}

/// Drives a contender inside a tokio runtime (for `JoinSet`): polls it only when its own
/// waker was woken; otherwise takes the workload's next step, or yields to let the tasks run.
struct Harness<'a, F: Future> {
    fut: Pin<&'a mut F>,
    board: &'a Board,
    script: Script,
    forward: Arc<Forward>,
    waker: Waker,
    woken: Option<usize>,
    failure_observed: bool,
    seen: Seen,
    yields: usize,
}

impl<F: Future> Future for Harness<'_, F> {
    type Output = Seen;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Seen> {
        let this = self.get_mut();
        {
            let mut to = lock(&this.forward.to);
            if !to.as_ref().is_some_and(|to| to.will_wake(cx.waker())) {
                *to = Some(cx.waker().clone());
            }
        }
        let wakes = this.forward.wakes.load(Ordering::SeqCst);
        if this.woken != Some(wakes) {
            this.woken = Some(wakes);
            this.seen.parent_polls += 1;
            // A leaf fails inside its own task, between two polls of the parent: the first
            // poll after it is the one that observes the error, not an extra one.
            if this.board.failed.load(Ordering::SeqCst) {
                if this.failure_observed {
                    this.seen.parent_polls_after_failure += 1;
                }
                this.failure_observed = true;
            }
            if let Poll::Ready(out) = this
                .fut
                .as_mut()
                .poll(&mut Context::from_waker(&this.waker))
            {
                this.seen.dropped_at_return = this.board.dropped();
                drop(out);
                return Poll::Ready(core::mem::take(&mut this.seen));
            }
            if this.forward.wakes.load(Ordering::SeqCst) != wakes {
                return Poll::Pending;
            }
        }
        if !this.script.act(this.board) {
            this.yields += 1;
            assert!(
                this.yields < 10_000_000,
                "JoinSet on {}: stalled",
                this.script.workload
            );
            cx.waker().wake_by_ref();
        }
        Poll::Pending
    }
}

/// As [`run_by_hand`], with the future polled by the harness inside a current-thread runtime.
fn run_in_runtime<F: Future>(
    make: &impl Fn(Arc<Board>) -> F,
    rt: &Runtime,
    workload: Workload,
    n: usize,
) -> (Arc<Board>, Seen, (usize, usize)) {
    let board = Arc::new(Board::new(n));
    let script = Script::new(workload, &board);
    let forward = Arc::new(Forward::default());
    let waker = Waker::from(Arc::clone(&forward));
    let before = allocated();
    let seen = {
        let fut = make(Arc::clone(&board));
        let size = size_of_val(&fut);
        let fut = pin!(fut);
        let mut seen = rt.block_on(Harness {
            fut,
            board: &board,
            script,
            forward,
            waker,
            woken: None,
            failure_observed: false,
            seen: Seen::default(),
            yields: 0,
        });
        seen.size = size;
        seen
    };
    let after = allocated();
    // Let the runtime drop the aborted tasks, so that a poll after the error is seen.
    rt.block_on(async {
        while board.live() > 0 {
            tokio::task::yield_now().await;
        }
    });
    (board, seen, (after.0 - before.0, after.1 - before.1))
}

/// Where a contender runs.
#[derive(Clone, Copy)]
enum Driver<'a> {
    Hand,
    Runtime(&'a Runtime),
}

/// Measures one contender on one workload: a first run to warm up (lazy thread-locals, the
/// thread's spare block of per-branch wakers, the runtime's queues), then the run that counts:
/// the steady state of a thread that runs gathers one after another.
fn measure<F: Future>(
    rows: &mut Vec<Row>,
    driver: Driver<'_>,
    (form, contender): (&'static str, &'static str),
    workload: Workload,
    n: usize,
    make: impl Fn(Arc<Board>) -> F,
) {
    let run = || match driver {
        Driver::Hand => run_by_hand(&make, contender, workload, n),
        Driver::Runtime(rt) => run_in_runtime(&make, rt, workload, n),
    };
    drop(run());
    let (board, seen, allocations) = run();
    rows.push(Row::new(
        form,
        contender,
        workload,
        &board,
        &seen,
        allocations,
    ));
}

// ---- the contenders ----------------------------------------------------------------------

/// `$cb!($($args)* [..])` with the bracketed tokens repeated ten times.
macro_rules! ten {
    ($cb:ident!($($args:tt)*) [$($b:tt)*]) => {
        $cb!($($args)* [$($b)* $($b)* $($b)* $($b)* $($b)* $($b)* $($b)* $($b)* $($b)* $($b)*])
    };
}

/// `$mac!(..)` with the bracketed branches.
macro_rules! call {
    ($($mac:ident)::+ [$($b:tt)*]) => {
        $($mac)::+!($($b)*)
    };
}

/// A fixed-form call of `$mac!` with 10 or 100 branches, each the next leaf of `$board`.
macro_rules! fixed {
    (10, $($mac:ident)::+, $board:ident) => {
        ten!(call!($($mac)::+) [leaf_next(&$board),])
    };
    (100, $($mac:ident)::+, $board:ident) => {
        ten!(ten!(call!($($mac)::+)) [leaf_next(&$board),])
    };
}

/// Every fixed-form contender on `workload` at 10 and 100 branches.
macro_rules! fixed_rows {
    ($rows:ident, $workload:expr, $($n:tt)*) => {$(
        let rows = &mut *$rows;
        let workload = $workload;
        let form = ("fixed", "gather!");
        measure(rows, Driver::Hand, form, workload, $n, |board| async move {
            fixed!($n, gather, board)
        });
        if !workload.fails() {
            let form = ("fixed", "tokio::join!");
            measure(rows, Driver::Hand, form, workload, $n, |board| async move {
                fixed!($n, tokio::join, board)
            });
        }
        let form = ("fixed", "tokio::try_join!");
        measure(rows, Driver::Hand, form, workload, $n, |board| async move {
            fixed!($n, tokio::try_join, board)
        });
    )*};
}

/// Every dynamic-form contender on `workload` with `n` branches.
fn dynamic_rows(rows: &mut Vec<Row>, rt: &Runtime, workload: Workload, n: usize) {
    let hand = Driver::Hand;
    measure(
        rows,
        hand,
        ("dynamic", "gather!"),
        workload,
        n,
        |board| async move { gather!(for i in 0..n => leaf(&board, i)) },
    );
    if !workload.fails() {
        measure(
            rows,
            hand,
            ("dynamic", "join_all"),
            workload,
            n,
            |board| async move { join_all((0..n).map(|i| leaf(&board, i))).await },
        );
    }
    measure(
        rows,
        hand,
        ("dynamic", "try_join_all"),
        workload,
        n,
        |board| async move { try_join_all((0..n).map(|i| leaf(&board, i))).await },
    );
    let contender = ("dynamic", "FuturesUnordered");
    measure(rows, hand, contender, workload, n, |board| async move {
        let mut set: FuturesUnordered<Leaf> = (0..n).map(|i| leaf(&board, i)).collect();
        let mut out = vec![0; n];
        while let Some(value) = set.next().await {
            let value = value?;
            out[value] = value;
        }
        Ok::<_, Fail>(out)
    });
    let driver = Driver::Runtime(rt);
    measure(
        rows,
        driver,
        ("dynamic", "JoinSet"),
        workload,
        n,
        |board| async move {
            let mut set = JoinSet::new();
            for i in 0..n {
                set.spawn(leaf(&board, i));
            }
            let mut out = vec![0; n];
            while let Some(joined) = set.join_next().await {
                let value = joined.expect("no leaf panics")?;
                out[value] = value;
            }
            Ok::<_, Fail>(out)
        },
    );
}

// ---- the report ----------------------------------------------------------------------------

fn print_table(rows: &[Row]) {
    println!(
        "| form | contender | workload | N | future size (B) | parent polls | child polls per \
         branch: mean / max | floor (1 + wakes): mean | worst branch over floor | allocations | \
         bytes | after failure: sibling polls | extra parent polls | siblings dropped at error |"
    );
    println!("|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
    for row in rows {
        let n = row.n as f64;
        let failure = match row.after_failure {
            Some((siblings, parent, dropped)) => {
                format!("{siblings} | {parent} | {dropped} of {}", row.n - 1)
            }
            None => "– | – | –".to_owned(),
        };
        println!(
            "| {} | `{}` | {} | {} | {} | {} | {:.2} / {} | {:.2} | +{} | {} | {} | {} |",
            row.form,
            row.contender,
            row.workload,
            row.n,
            row.size,
            row.parent_polls,
            row.child_polls as f64 / n,
            row.max_child_polls,
            row.floor as f64 / n,
            row.worst_excess,
            row.allocations,
            row.bytes,
            failure,
        );
    }
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "NOT met" }
}

/// One line per target of DESIGN.md that these counters can judge.
fn print_targets(rows: &[Row]) {
    let ours = |form: &str| -> Vec<&Row> {
        let ours = |r: &&Row| r.form == form && r.contender == "gather!";
        rows.iter().filter(ours).collect()
    };
    let (fixed, dynamic) = (ours("fixed"), ours("dynamic"));

    let most = fixed.iter().map(|r| r.allocations).max().unwrap_or(0);
    println!(
        "- Fixed form, at most one heap allocation per gather: {} (at most {most}).",
        verdict(most <= 1)
    );
    let ready: Vec<String> = fixed
        .iter()
        .filter(|r| r.workload == Workload::AllReady)
        .map(|r| format!("{} at N = {}", r.allocations, r.n))
        .collect();
    let none = fixed
        .iter()
        .filter(|r| r.workload == Workload::AllReady)
        .all(|r| r.allocations == 0);
    println!(
        "- Fixed form, no allocation when every branch is ready at its first poll: {} ({}).",
        verdict(none),
        ready.join(", ")
    );
    let at_100: Vec<&&Row> = fixed.iter().filter(|r| r.n == 100).collect();
    let worst = at_100.iter().map(|r| r.worst_excess).max().unwrap_or(0);
    let reverse = at_100
        .iter()
        .find(|r| r.workload == Workload::Reverse)
        .map_or(0, |r| r.max_child_polls);
    println!(
        "- Fixed form, 100 branches, a wake polls only its own branch (at most 2 + wakes polls \
         per branch): {} (worst branch {worst} over 1 + wakes; woken one at a time, a branch is \
         polled up to {reverse} times).",
        verdict(worst <= 1)
    );
    let worst = dynamic.iter().map(|r| r.worst_excess).max().unwrap_or(0);
    println!(
        "- Dynamic form, 1 + wakes polls per branch at any N: {} (worst branch {worst} over it).",
        verdict(worst == 0)
    );
    let mut flat = true;
    let per_workload: Vec<String> = Workload::ALL
        .iter()
        .map(|&w| {
            let counts: Vec<usize> = dynamic
                .iter()
                .filter(|r| r.workload == w)
                .map(|r| r.allocations)
                .collect();
            flat &= counts.windows(2).all(|c| c[0] == c[1]);
            let counts: Vec<String> = counts.iter().map(ToString::to_string).collect();
            format!("{w}: {}", counts.join(" / "))
        })
        .collect();
    println!(
        "- Dynamic form, allocations independent of N (the aim): {} (at N = 10 / 1000 / 10000: \
         {}).",
        verdict(flat),
        per_workload.join("; ")
    );
    let failing: Vec<&&Row> = fixed
        .iter()
        .chain(&dynamic)
        .filter(|r| r.workload.fails())
        .collect();
    let after = |r: &&&Row| r.after_failure.unwrap_or_default();
    let fast = failing.iter().all(|r| {
        let (siblings, parent, _) = after(r);
        siblings == 0 && parent == 0
    });
    println!(
        "- Cancel, the error is returned in the same poll that observes it and no sibling is \
         polled after it: {} (every failure row of `gather!`).",
        verdict(fast)
    );
    let dropped = failing.iter().all(|r| after(r).2 == r.n - 1);
    println!(
        "- Cancel, every sibling dropped before the error is returned (guarantee 2): {}.",
        verdict(dropped)
    );
    println!(
        "- Times (1.1x of `tokio::join!`/`try_join!`, 0.7x of `FuturesUnordered`, 1.2x of a \
         loop, `spawn` against `JoinSet`): not judged by counters; see the benchmarks."
    );
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime");
    let mut fixed = Vec::new();
    for workload in Workload::ALL {
        let rows = &mut fixed;
        fixed_rows!(rows, workload, 10 100);
    }
    let mut dynamic = Vec::new();
    for workload in Workload::ALL {
        for n in [10, 1000, 10_000] {
            dynamic_rows(&mut dynamic, &rt, workload, n);
        }
    }
    let order = |r: &Row| (r.n, Workload::ALL.iter().position(|&w| w == r.workload));
    fixed.sort_by_key(order);
    dynamic.sort_by_key(order);

    println!("## Counters: fixed form\n");
    print_table(&fixed);
    println!("\n## Counters: dynamic form\n");
    print_table(&dynamic);
    println!(
        "\nPolls and allocations are exact: leaves are gates opened by this program, polled by \
         hand with a counting waker (`JoinSet` by a current-thread runtime). Allocations count \
         from building the future until it is dropped (`JoinSet`: until its error or value is \
         back; the runtime drops aborted tasks later). A failure opens one gate with an error \
         once every branch is pending; a contender that does not return then gets every other \
         gate opened. Sibling polls count from the failing leaf's poll on; extra parent polls \
         are those after the parent poll that observed the error.\n"
    );
    println!("## DESIGN.md targets, by these counters\n");
    let all: Vec<Row> = fixed.into_iter().chain(dynamic).collect();
    print_targets(&all);
}
