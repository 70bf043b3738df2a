//! Stress, quick enough for CI: 100,000 dynamic branches in bounded memory, gathers nested
//! three deep cancelled from the top, and 10,000 spawned branches on a 2-worker runtime, over
//! and over, with no task left alive.
//!
//! Memory is counted by a global allocator that wraps the system's and keeps the bytes in use
//! and the most ever in use (`peak_alloc`: the crate forbids `unsafe`, test files included, so
//! the `unsafe impl GlobalAlloc` lives in that dependency). Its counts are for the whole
//! process, so the tests of this file run one at a time.

use std::future::{Future, pending};
use std::pin::Pin;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::executor::block_on;
use gather::{Error, gather};
use gather_tests::{Live, Wakes, yields};
use peak_alloc::PeakAlloc;
use tokio::task::yield_now;

#[global_allocator]
static ALLOC: PeakAlloc = PeakAlloc;

/// Held by every test of this file: the allocator's counts are the process's.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs `f`, and gives its output and the most bytes allocated at once while it ran, beyond
/// those allocated before it.
fn peak_bytes<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = ALLOC.current_usage();
    ALLOC.reset_peak_usage();
    let out = f();
    (out, ALLOC.peak_usage().saturating_sub(base))
}

/// A branch with a little state, pending once so that, without `limit`, every branch is in
/// flight at once.
async fn small_branch(i: u32) -> u32 {
    yields(1).await;
    i
}

/// Branches per dynamic gather in the memory tests.
const BRANCHES: u32 = 100_000;

/// The most bytes per branch the dynamic form may use at its peak, everything included (the
/// branch futures, the engine's slots and wakers, the outputs, the growth of its vectors).
/// Measured on 64-bit Linux at 100,000 branches: 120 bytes per branch without `limit`, every
/// branch in flight at once; 135 at 10,000 branches, where vector growth weighs more.
const BYTES_PER_BRANCH: usize = 200;

/// Under `limit = 1000`, a finished branch's slot goes to the next branch, so what grows with
/// the items is only the output (4 bytes each here, and the vector's growth): measured, 5
/// bytes per branch at 100,000 branches.
const BYTES_PER_BRANCH_LIMITED: usize = 12;

/// The peak bytes of a dynamic gather of `n` small branches, `limit` at a time, once its output
/// is checked; and checks that it leaves nothing allocated behind.
fn dynamic_peak(n: u32, limit: Option<usize>) -> usize {
    let base = ALLOC.current_usage();
    let (sum, peak) = peak_bytes(|| {
        let out = match limit {
            Some(limit) => block_on(async {
                gather!(policy = settle, limit = limit; for i in 0..n => small_branch(i))
            }),
            None => block_on(async { gather!(policy = settle; for i in 0..n => small_branch(i)) }),
        };
        assert_eq!(out.len(), n as usize);
        assert!(out.iter().enumerate().all(|(i, &v)| v as usize == i));
        out.iter().map(|&v| u64::from(v)).sum::<u64>()
    });
    assert_eq!(sum, u64::from(n) * u64::from(n - 1) / 2);
    // The counts are the process's: the test harness's other threads allocate a little
    // meanwhile (about 1 KiB). A leak would be per branch (an allocation per branch is 1.6 MB
    // at 100,000), or the engine's shared state (about 900 KB at 100,000).
    let left = ALLOC.current_usage().saturating_sub(base);
    assert!(
        left < 64 * 1024,
        "{left} bytes still allocated after a gather of {n} branches returned"
    );
    peak
}

#[test]
fn dynamic_gather_of_100_000_branches_stays_within_its_memory_bound() {
    let _serial = serial();
    // Warm up: the executor's thread-local state, the first allocations of this thread.
    dynamic_peak(1_000, None);

    let start = Instant::now();
    let unlimited = dynamic_peak(BRANCHES, None);
    let limited = dynamic_peak(BRANCHES, Some(1_000));
    let small = dynamic_peak(BRANCHES / 10, None);
    let n = BRANCHES as usize;
    println!(
        "dynamic form, {n} branches: peak {unlimited} bytes without limit ({} per branch), \
         {limited} bytes with limit = 1000 ({} per branch); {} branches: {small} bytes ({} per \
         branch); {:?}",
        unlimited / n,
        limited / n,
        n / 10,
        small / (n / 10),
        start.elapsed(),
    );
    assert!(
        unlimited <= BYTES_PER_BRANCH * n,
        "without limit: {} bytes per branch",
        unlimited / n
    );
    assert!(
        limited <= BYTES_PER_BRANCH_LIMITED * n,
        "with limit: {} bytes per branch",
        limited / n
    );
    // Bounded per branch: ten times the branches, about ten times the memory, not more.
    assert!(
        unlimited <= small * 12,
        "{unlimited} bytes for {n} branches, {small} for a tenth of them"
    );
    // Under `limit`, finished branch futures are freed as the gather goes.
    assert!(
        limited < unlimited,
        "{limited} with limit, {unlimited} without"
    );
}

/// The peak bytes of a dynamic gather of `n` branches without output, `limit` at a time, each
/// ready at its first poll or pending once.
fn unit_peak(n: usize, limit: usize, pending_once: bool) -> usize {
    let (len, peak) = peak_bytes(|| {
        block_on(async {
            gather!(policy = settle, limit = limit; for _ in 0..n => async move {
                if pending_once {
                    yields(1).await;
                }
            })
        })
        .len()
    });
    assert_eq!(len, n);
    peak
}

#[test]
fn dynamic_gather_allocates_by_the_branches_running_at_once_not_by_the_items() {
    let _serial = serial();
    unit_peak(1_000, usize::MAX, true); // warm up
    // Outputs of `()` take no memory: what is left is the engine's own. Every branch ready at
    // its first poll: one slot, taken by each branch in turn, at any number of items.
    let ten = unit_peak(10, usize::MAX, false);
    let many = unit_peak(BRANCHES as usize, usize::MAX, false);
    println!("every branch ready at once: peak {ten} bytes for 10 items, {many} for {BRANCHES}");
    // The harness's other threads allocate a little meanwhile (a few KiB); one byte per item
    // would be 100 KB.
    assert!(
        many <= ten + 16 * 1024,
        "{many} bytes for {BRANCHES} items ready at once, {ten} for 10"
    );
    // Pending once each, 100 at a time: 100 slots, at any number of items.
    let thousand = unit_peak(1_000, 100, true);
    let many = unit_peak(BRANCHES as usize, 100, true);
    println!("100 at a time: peak {thousand} bytes for 1000 items, {many} for {BRANCHES}");
    assert!(
        many <= thousand + 16 * 1024,
        "{many} bytes for {BRANCHES} items under limit = 100, {thousand} for 1000"
    );
    // A thousand branches in flight at once need their slots: the engine's memory grows
    // with the branches running at once.
    let wide = unit_peak(1_000, usize::MAX, true);
    println!("1000 at once: peak {wide} bytes");
    assert!(
        wide > thousand + 32 * 1024,
        "{wide} bytes for 1000 at once, {thousand} for 100 at once"
    );
}

// ---- nested three deep, cancelled from the top ----------------------------------------------

/// Pending `n` times, then outputs `value`.
async fn after<T>(n: usize, value: T) -> T {
    yields(n).await;
    value
}

/// The innermost gather: 10 leaves.
async fn leaves(live: Live, seed: usize) -> Vec<usize> {
    gather!(policy = settle; for m in 0..10 => live.track(after((seed + m) % 7, m)))
}

/// The output of `fut`, as a success.
async fn ok<T>(fut: impl Future<Output = T>) -> Result<T, String> {
    Ok(fut.await)
}

/// The middle gather: 10 inner gathers, 5 at a time.
async fn middle(live: Live, i: usize) -> Result<Vec<Vec<usize>>, Error<String>> {
    gather!(limit = 5; for j in 0..10 => ok(leaves(live.clone(), i + j)))
}

/// The top gather: 100 middle gathers, all at once.
async fn tree(live: Live) -> Result<Vec<Vec<Vec<usize>>>, Error<Error<String>>> {
    gather!(for i in 0..100 => middle(live.clone(), i))
}

/// Polls `fut` by hand until it completes, or `polls` times.
fn poll_times<F: Future>(mut fut: Pin<&mut F>, polls: usize) -> Option<F::Output> {
    let wakes = Wakes::new();
    let waker = wakes.waker();
    for _ in 0..polls {
        if let Poll::Ready(out) = fut.as_mut().poll(&mut Context::from_waker(&waker)) {
            return Some(out);
        }
    }
    None
}

#[test]
fn nested_gathers_three_deep_run_every_leaf() {
    let _serial = serial();
    let live = Live::new();
    let out = block_on(tree(live.clone())).expect("no branch fails");
    assert_eq!(out.len(), 100);
    assert!(out.iter().all(|middle| middle.len() == 10));
    assert_eq!(out[99][9], (0..10).collect::<Vec<_>>());
    assert_eq!(
        (live.made(), live.finished(), live.now()),
        (10_000, 10_000, 0)
    );
}

#[test]
fn nested_gathers_three_deep_dropped_from_the_top_drop_every_leaf() {
    let _serial = serial();
    let polls_to_finish = {
        let mut top = Box::pin(tree(Live::new()));
        (1..100)
            .find(|_| poll_times(top.as_mut(), 1).is_some())
            .expect("the tree finishes within 100 polls")
    };
    assert!(polls_to_finish >= 7, "{polls_to_finish}");
    // Cut the tree after every poll on the way.
    for polls in 1..polls_to_finish {
        let live = Live::new();
        let mut top = Box::pin(tree(live.clone()));
        assert!(poll_times(top.as_mut(), polls).is_none());
        let (made, finished, in_flight) = (live.made(), live.finished(), live.now());
        assert!(
            made > 0 && in_flight > 0,
            "after {polls} polls: {made} leaves made, {in_flight} in flight"
        );
        drop(top);
        assert_eq!(
            live.now(),
            0,
            "after {polls} polls: {} of {made} leaves outlived the drop of the top gather",
            live.now()
        );
        assert_eq!(live.dropped(), made - finished);
    }
}

#[test]
fn nested_gathers_three_deep_cancelled_by_a_failure_at_the_top_drop_every_leaf() {
    let _serial = serial();
    let live = Live::new();
    let result = block_on(async {
        gather!(
            tree = async { tree(live.clone()).await.map_err(|e| e.to_string()) },
            failing = async {
                yields(4).await;
                Err::<(), _>("failed".to_owned())
            },
        )
    });
    let Err(Error::Failed {
        branch, cancelled, ..
    }) = result
    else {
        panic!("expected Error::Failed, got {result:?}");
    };
    assert_eq!(branch.name(), "failing");
    assert_eq!(cancelled.len(), 1);
    assert!(live.finished() > 0 && live.dropped() > 0, "{live:?}");
    assert_eq!(live.now(), 0, "{} leaves outlived the gather", live.now());
}

/// Three levels of 100 branches each (a million leaves in all), middle gathers two inner
/// gathers at a time: cut after a few polls of the top gather, dropping it drops every leaf
/// that was made.
#[test]
fn nested_gathers_three_deep_with_100_branches_each_cancelled_from_the_top() {
    let _serial = serial();
    async fn inner(live: Live, seed: usize) -> Vec<usize> {
        gather!(policy = settle; for m in 0..100 => live.track(after((seed + m) % 5, m)))
    }
    async fn middle(live: Live, i: usize) -> Vec<Vec<usize>> {
        gather!(policy = settle, limit = 2; for j in 0..100 => inner(live.clone(), i + j))
    }
    let live = Live::new();
    let mut top =
        Box::pin(async { gather!(policy = settle; for i in 0..100 => middle(live.clone(), i)) });
    assert!(poll_times(top.as_mut(), 3).is_none());
    let (made, in_flight) = (live.made(), live.now());
    assert!(
        made >= 20_000 && in_flight > 0,
        "{made} made, {in_flight} in flight"
    );
    drop(top);
    assert_eq!(
        live.now(),
        0,
        "{} of {made} leaves outlived the drop",
        live.now()
    );
    assert_eq!(live.dropped(), made - live.finished());
}

/// A multi-thread runtime with two workers. The tests hold [`serial`] outside it, not across
/// its `.await`s.
fn two_workers() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
}

#[test]
fn nested_gathers_under_spawn_cancelled_at_the_top_drop_every_leaf_before_returning() {
    let _serial = serial();
    two_workers().block_on(nested_under_spawn());
}

async fn nested_under_spawn() {
    let live = Live::new();
    let result = gather!(spawn;
        for i in 0..100_usize => {
            let live = live.clone();
            async move {
                if i == 60 {
                    yield_now().await;
                    return Err("failed".to_owned());
                }
                middle(live, i).await.map_err(|e| e.to_string())
            }
        }
    );
    // Every task was aborted and awaited: the leaves inside them are gone already.
    assert_eq!(live.now(), 0, "{} leaves outlived the gather", live.now());
    let Err(Error::Failed { branch, .. }) = result else {
        panic!("expected Error::Failed, got {result:?}");
    };
    assert_eq!(branch.index(), 60);
    assert_eq!(alive_settles_at(0).await, 0);
}

// ---- 10,000 spawned branches, again and again -----------------------------------------------

/// How many tasks of the current runtime are alive.
fn alive() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

/// On a multi-thread runtime: waits (up to a second) until the count of alive tasks is
/// `expected`, and gives the count then. Tokio wakes a task's `JoinHandle` a moment before it
/// lets go of the task.
async fn alive_settles_at(expected: usize) -> usize {
    for _ in 0..1_000 {
        if alive() == expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    alive()
}

const SPAWNED: usize = 10_000;

#[test]
fn ten_thousand_spawned_branches_twenty_times_leave_no_task_alive() {
    let _serial = serial();
    two_workers().block_on(spawned_rounds());
}

async fn spawned_rounds() {
    let start = Instant::now();
    for round in 0..20 {
        let live = Live::new();
        match round % 4 {
            0 => {
                let out = gather!(policy = settle, spawn;
                    for i in 0..SPAWNED => live.track(async move {
                        yield_now().await;
                        i
                    })
                );
                assert_eq!(out.len(), SPAWNED);
                assert_eq!(out[SPAWNED - 1], SPAWNED - 1);
            }
            1 => {
                let result = gather!(spawn;
                    for i in 0..SPAWNED => live.track(async move {
                        yield_now().await;
                        if i == SPAWNED / 2 {
                            return Err(i);
                        }
                        pending::<()>().await;
                        Ok(i)
                    })
                );
                let Err(Error::Failed { branch, .. }) = result else {
                    panic!("round {round}: expected Error::Failed, got {result:?}");
                };
                assert_eq!(branch.index(), SPAWNED / 2);
            }
            2 => {
                let first = gather!(policy = race, spawn;
                    for i in 0..SPAWNED => live.track(async move {
                        if i != 1_234 {
                            pending::<()>().await;
                        }
                        i
                    })
                );
                assert_eq!(first, 1_234);
            }
            _ => {
                let out = gather!(policy = settle, spawn, limit = 64;
                    for i in 0..SPAWNED => live.track(async move {
                        yield_now().await;
                        i
                    })
                );
                assert_eq!(out.len(), SPAWNED);
            }
        }
        // Every task was aborted and awaited before the gather returned: their futures are
        // gone already, and the count of alive tasks follows. A race can be won, or a branch
        // fail, while the gather still starts branches (the task may finish at once on a
        // worker, and the gather starts the rest at its next poll once tokio's budget for
        // this one is spent): the items after it are then never taken.
        let made = live.made();
        if round % 4 == 1 {
            assert!(
                (SPAWNED / 2 + 1..=SPAWNED).contains(&made),
                "round {round}: {made}"
            );
        } else if round % 4 == 2 {
            assert!((1_235..=SPAWNED).contains(&made), "round {round}: {made}");
        } else {
            assert_eq!(made, SPAWNED, "round {round}");
        }
        assert_eq!(
            live.now(),
            0,
            "round {round}: branch futures outlived the gather"
        );
        assert_eq!(
            alive_settles_at(0).await,
            0,
            "round {round}: tasks left alive"
        );
    }
    println!(
        "20 rounds of {SPAWNED} spawned branches: {:?}",
        start.elapsed()
    );
}
