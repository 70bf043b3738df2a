//! Cancellation at every poll (guarantee 3): for each `k`, the future that contains `gather!`
//! is polled by hand `k` times, then dropped. Right after the drop no in-place branch is left
//! (every tracked future is gone), and under `spawn`, no task is left once the runtime has run
//! a few ticks. `k` counts up from 0 until the gather completes on its own, so every state it
//! goes through is cut once: before it starts, with branches running, finished, held back by
//! `limit`, failed, won, timed out, and while it awaits the tasks it aborted.

use std::future::{Future, pending};
use std::panic::{AssertUnwindSafe, catch_unwind, panic_any};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use gather::{Error, gather};
use gather_tests::{Gate, Journal, Live, Wakes, yields};
use tokio::task::yield_now;
use tokio::time::{advance, sleep};

/// What cutting a gather at every poll saw.
#[derive(Debug)]
struct Cuts {
    /// How many polls the gather needed to complete on its own.
    polls: usize,
    /// The most tracked futures alive at a drop: more than 0 means some drop cut live branches.
    most_cut: usize,
    /// The most tasks alive at a drop, under `spawn`.
    most_tasks: usize,
}

/// Polls `fut` once with `wakes`'s waker.
fn poll<F: Future + ?Sized>(fut: Pin<&mut F>, wakes: &Arc<Wakes>) -> Poll<F::Output> {
    fut.poll(&mut Context::from_waker(&wakes.waker()))
}

/// A panic payload no other code makes, to recognise it at the catch site.
#[derive(Debug, PartialEq)]
struct Explosion;

/// For k = 0, 1, 2, ..: builds the future with `make`, polls it `k` times by hand, drops it,
/// and checks that no tracked future outlived the drop and that nothing keeps the waker. Ends
/// at the first `k` at which the future completed, or panicked: then every branch must be gone
/// when the panic is caught, before the future is dropped (guarantee 4). Every branch here
/// makes progress at every poll ([`yields`]), so a `Pending` must have woken the waker, or an
/// executor would hang.
fn cut_at_every_poll<F: Future>(make: impl Fn(Live) -> F) -> Cuts {
    let mut most_cut = 0;
    for k in 0..1_000 {
        let live = Live::new();
        let wakes = Wakes::new();
        let mut fut = Box::pin(make(live.clone()));
        let mut completed = false;
        for poll_index in 0..k {
            let before = wakes.count();
            match catch_unwind(AssertUnwindSafe(|| poll(fut.as_mut(), &wakes))) {
                Ok(Poll::Ready(_)) => completed = true,
                Ok(Poll::Pending) => {}
                Err(payload) => {
                    assert_eq!(payload.downcast_ref::<Explosion>(), Some(&Explosion));
                    assert_eq!(
                        live.now(),
                        0,
                        "k = {k}: {} branches were left when the panic reached the caller",
                        live.now()
                    );
                    completed = true;
                }
            }
            if completed {
                break;
            }
            assert!(
                wakes.count() > before,
                "k = {k}: poll {poll_index} was pending without waking the waker"
            );
        }
        most_cut = most_cut.max(live.now());
        drop(fut);
        assert_eq!(
            live.now(),
            0,
            "k = {k}: {} branch futures outlived the drop of the gather",
            live.now()
        );
        assert_eq!(
            Arc::strong_count(&wakes),
            1,
            "k = {k}: a clone of the waker outlived the drop of the gather"
        );
        if completed {
            return Cuts {
                polls: k,
                most_cut,
                most_tasks: 0,
            };
        }
    }
    panic!("the gather did not complete within 1,000 polls");
}

/// [`cut_at_every_poll`] on the current tokio runtime with paused time: moves the clock by
/// `tick` after each poll, and after each drop runs a few ticks of the runtime, then checks
/// that no task is left (for `spawn`) and no tracked future, inside a task or not.
async fn cut_at_every_poll_timed<F: Future>(tick: Duration, make: impl Fn(Live) -> F) -> Cuts {
    let baseline = alive_tasks();
    let (mut most_cut, mut most_tasks) = (0, 0);
    for k in 0..1_000 {
        let live = Live::new();
        let wakes = Wakes::new();
        let mut fut = Box::pin(make(live.clone()));
        let mut completed = false;
        for _ in 0..k {
            if poll(fut.as_mut(), &wakes).is_ready() {
                completed = true;
                break;
            }
            advance(tick).await;
        }
        most_cut = most_cut.max(live.now());
        most_tasks = most_tasks.max(alive_tasks() - baseline);
        drop(fut);
        // In place, every branch is gone at once; tasks go at the runtime's next ticks.
        let in_place = live.now();
        for _ in 0..10 {
            yield_now().await;
        }
        assert_eq!(
            alive_tasks(),
            baseline,
            "k = {k}: tasks left alive after the drop"
        );
        assert_eq!(
            live.now(),
            0,
            "k = {k}: {} branch futures outlived the drop (at the drop: {in_place})",
            live.now()
        );
        assert_eq!(
            Arc::strong_count(&wakes),
            1,
            "k = {k}: a clone of the waker outlived the drop of the gather"
        );
        if completed {
            return Cuts {
                polls: k,
                most_cut,
                most_tasks,
            };
        }
    }
    panic!("the gather did not complete within 1,000 polls");
}

/// How many tasks of the current runtime are alive.
fn alive_tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

/// A branch that is pending `n` times, then outputs `value`.
async fn after<T>(n: usize, value: T) -> T {
    yields(n).await;
    value
}

/// A branch that sleeps `ms` milliseconds, then outputs `value`.
async fn slept<T>(ms: u64, value: T) -> T {
    sleep(Duration::from_millis(ms)).await;
    value
}

// ---- the fixed form, in place, by hand ------------------------------------------------------

#[test]
fn every_poll_cut_of_a_cancel_gather_drops_every_branch() {
    let cuts = cut_at_every_poll(|live| async move {
        let result = gather!(
            a = live.track(after(1, Ok::<u8, &str>(1))),
            b = live.track(after(3, Ok(2))),
            c = live.track(after(5, Err::<u8, _>("c failed"))),
            d = live.track(async {
                pending::<()>().await;
                Ok(4)
            }),
        );
        let Err(Error::Failed { branch, .. }) = result else {
            panic!("expected Error::Failed, got {result:?}");
        };
        assert_eq!(branch.name(), "c");
    });
    // `c` fails at its sixth poll, the gather's sixth.
    assert_eq!(cuts.polls, 6);
    assert_eq!(cuts.most_cut, 4);
}

#[test]
fn every_poll_cut_of_a_finish_gather_with_limit_drops_every_branch() {
    let cuts = cut_at_every_poll(|live| async move {
        let result = gather!(policy = finish, limit = 2;
            live.track(after(2, Ok::<u8, u8>(0))),
            live.track(after(1, Err::<u8, _>(1))),
            live.track(after(3, Ok(2))),
            live.track(after(0, Err::<u8, _>(3))),
            live.track(after(2, Ok(4))),
        );
        let Err(Error::Failures { errors, .. }) = result else {
            panic!("expected Error::Failures, got {result:?}");
        };
        assert_eq!(errors.len(), 2);
    });
    assert_eq!(cuts.polls, 5);
    // All five are built with the gather; `limit` only holds three back from starting.
    assert_eq!(cuts.most_cut, 5);
}

#[test]
fn every_poll_cut_of_a_settle_gather_drops_every_branch() {
    let cuts = cut_at_every_poll(|live| async move {
        let out = gather!(policy = settle;
            live.track(after(0, "now")),
            live.track(after(4, 4_u32)),
            live.track(after(2, Err::<(), _>("two"))),
        );
        assert_eq!(out, ("now", 4, Err("two")));
    });
    assert_eq!(cuts.polls, 5);
    // "now" finished, and was dropped, at the first poll.
    assert_eq!(cuts.most_cut, 2);
}

#[test]
fn every_poll_cut_of_a_race_drops_every_branch() {
    let cuts = cut_at_every_poll(|live| async move {
        let first = gather!(policy = race;
            live.track(after(4, "slow")),
            live.track(after(2, "fast")),
            live.track(async {
                pending::<()>().await;
                "never"
            }),
        );
        assert_eq!(first, "fast");
    });
    assert_eq!(cuts.polls, 3);
    assert_eq!(cuts.most_cut, 3);
}

#[test]
fn every_poll_cut_of_a_race_ok_drops_every_branch() {
    let cuts = cut_at_every_poll(|live| async move {
        let first = gather!(policy = race_ok;
            live.track(after(1, Err::<&str, &str>("down"))),
            live.track(after(3, Ok("up"))),
            live.track(after(6, Ok("late"))),
        );
        assert_eq!(first, Ok("up"));
    });
    assert_eq!(cuts.polls, 4);
    assert_eq!(cuts.most_cut, 3);
}

#[test]
fn every_poll_cut_of_a_gather_with_a_panicking_branch_drops_every_branch() {
    let cuts = cut_at_every_poll(|live| async move {
        let _ = gather!(policy = finish;
            live.track(after(1, Ok::<u8, u8>(1))),
            live.track(async {
                yields(3).await;
                panic_any(Explosion);
                #[allow(unreachable_code)]
                Ok(2)
            }),
            live.track(after(6, Ok(3))),
        );
        unreachable!("the gather panics");
    });
    assert_eq!(cuts.polls, 4);
    assert_eq!(cuts.most_cut, 3);
}

// ---- the dynamic form, in place, by hand ----------------------------------------------------

#[test]
fn every_poll_cut_of_a_dynamic_cancel_gather_with_limit_drops_every_branch() {
    let cuts = cut_at_every_poll(|live| async move {
        let result = gather!(limit = 3;
            for i in 0..12_usize => live.track(after(i % 5, if i == 9 { Err(i) } else { Ok(i) }))
        );
        let Err(Error::Failed { branch, .. }) = result else {
            panic!("expected Error::Failed, got {result:?}");
        };
        assert_eq!(branch.index(), 9);
    });
    assert_eq!(cuts.polls, 10);
    // At most `limit` branches exist at once: the others are not made until they start.
    assert_eq!(cuts.most_cut, 3);
}

#[test]
fn every_poll_cut_of_a_dynamic_settle_gather_drops_every_branch() {
    let cuts = cut_at_every_poll(|live| async move {
        let out = gather!(policy = settle; for i in 0..20_usize => live.track(after(i % 7, i)));
        assert_eq!(out, (0..20).collect::<Vec<_>>());
    });
    assert_eq!(cuts.polls, 7);
    // 0, 7 and 14 finish at their first poll.
    assert_eq!(cuts.most_cut, 17);
}

#[test]
fn every_poll_cut_of_a_dynamic_race_ok_over_an_endless_iterator_drops_every_branch() {
    let cuts = cut_at_every_poll(|live| async move {
        let first = gather!(policy = race_ok, limit = 4;
            for i in 0_usize.. => live.track(after(i % 3, if i == 10 { Ok(i) } else { Err(i) }))
        );
        assert_eq!(first, Ok(10));
    });
    assert_eq!(cuts.polls, 4);
    assert_eq!(cuts.most_cut, 4);
}

#[test]
fn every_poll_cut_of_a_dynamic_race_drops_every_branch() {
    let cuts = cut_at_every_poll(|live| async move {
        let first = gather!(policy = race; for i in [5_usize, 3, 8, 4] => live.track(after(i, i)));
        assert_eq!(first, 3);
    });
    assert_eq!(cuts.polls, 4);
    assert_eq!(cuts.most_cut, 4);
}

#[test]
fn every_poll_cut_of_a_dynamic_gather_with_a_panicking_branch_drops_every_branch() {
    let cuts = cut_at_every_poll(|live| async move {
        let _ = gather!(policy = settle, limit = 3;
            for i in 0..8_usize => live.track(async move {
                yields(i).await;
                if i == 5 {
                    panic_any(Explosion);
                }
                i
            })
        );
        unreachable!("the gather panics");
    });
    // Item 5 starts at the third poll, under the limit, and panics at its sixth.
    assert_eq!(cuts.polls, 8);
    assert_eq!(cuts.most_cut, 3);
}

// ---- nested gathers, two deep ---------------------------------------------------------------

/// An inner dynamic gather of `n` branches.
async fn inner_dynamic(live: Live, n: usize) -> Result<Vec<usize>, Error<usize>> {
    gather!(limit = 2; for j in 0..n => live.track(after(j + 1, Ok::<usize, usize>(j))))
}

/// An inner fixed gather that fails after `n` polls.
async fn inner_failing(live: Live, n: usize) -> Result<(u8, u8, u8), Error<&'static str>> {
    gather!(
        live.track(after(1, Ok(1))),
        live.track(after(n, Err("inner failed"))),
        live.track(after(n + 5, Ok(3))),
    )
}

#[test]
fn every_poll_cut_of_nested_gathers_drops_every_branch_at_both_levels() {
    let cuts = cut_at_every_poll(|live| async move {
        let (dynamic, failing, raced) = gather!(policy = settle;
            inner_dynamic(live.clone(), 4),
            inner_failing(live.clone(), 3),
            async {
                gather!(policy = race;
                    live.track(after(6, "slow")),
                    live.track(after(5, "fast")),
                )
            },
        );
        assert_eq!(dynamic, Ok(vec![0, 1, 2, 3]));
        assert!(failing.is_err());
        assert_eq!(raced, "fast");
    });
    assert_eq!(cuts.polls, 7);
    // Two of the dynamic one (its limit), three of the failing one, two racing.
    assert_eq!(cuts.most_cut, 7);
}

#[test]
fn every_poll_cut_of_a_dynamic_gather_of_dynamic_gathers_drops_every_branch() {
    let cuts = cut_at_every_poll(|live| async move {
        let result = gather!(limit = 3; for i in 0..5_usize => inner_dynamic(live.clone(), i + 1));
        let outs = result.expect("no inner gather fails");
        assert_eq!(outs.len(), 5);
        assert_eq!(outs[4], [0, 1, 2, 3, 4]);
    });
    assert_eq!(cuts.polls, 12);
    // Three inner gathers at once (the outer limit), each with at most two branches, some
    // of which have finished at every cut.
    assert_eq!(cuts.most_cut, 5);
}

#[test]
fn every_poll_cut_of_a_gather_whose_failure_cancels_a_nested_gather_drops_every_branch() {
    let cuts = cut_at_every_poll(|live| async move {
        let result = gather!(
            nested = async { inner_dynamic(live.clone(), 8).await.map_err(|_| "inner") },
            failing = live.track(after(4, Err::<Vec<usize>, &str>("outer failed"))),
        );
        let Err(Error::Failed { branch, .. }) = result else {
            panic!("expected Error::Failed, got {result:?}");
        };
        assert_eq!(branch.name(), "failing");
    });
    assert_eq!(cuts.polls, 5);
    assert_eq!(cuts.most_cut, 3);
}

// ---- timeout, on tokio with paused time -----------------------------------------------------

#[tokio::test(start_paused = true)]
async fn every_poll_cut_of_a_gather_with_timeout_drops_every_branch() {
    let tick = Duration::from_millis(10);
    let cuts = cut_at_every_poll_timed(tick, |live| async move {
        let result = gather!(timeout = Duration::from_millis(55);
            live.track(slept(10, Ok::<u8, &str>(1))),
            live.track(slept(30, Ok(2))),
            live.track(slept(1_000, Ok(3))),
        );
        let Err(Error::TimedOut { pending, .. }) = result else {
            panic!("expected Error::TimedOut, got {result:?}");
        };
        assert_eq!(pending.len(), 1);
    })
    .await;
    // Polls at 0, 10, .., 60 ms: the deadline at 55 ms is seen at the seventh.
    assert_eq!(cuts.polls, 7);
    assert_eq!(cuts.most_cut, 3);
}

#[tokio::test(start_paused = true)]
async fn every_poll_cut_of_a_dynamic_settle_gather_with_timeout_and_limit_drops_every_branch() {
    let tick = Duration::from_millis(10);
    let cuts = cut_at_every_poll_timed(tick, |live| async move {
        let out = gather!(policy = settle, limit = 3, timeout = Duration::from_millis(75);
            for i in 0..8_u64 => live.track(slept(10 * (i + 1), i))
        );
        // By 75 ms every item has started; 0 to 4 have finished.
        let finished: Vec<u64> = out.iter().flatten().copied().collect();
        assert_eq!((out.len(), finished), (8, vec![0, 1, 2, 3, 4]));
    })
    .await;
    assert_eq!(cuts.polls, 9);
    assert_eq!(cuts.most_cut, 3);
}

#[tokio::test(start_paused = true)]
async fn every_poll_cut_of_a_race_with_timeout_drops_every_branch() {
    let tick = Duration::from_millis(10);
    let cuts = cut_at_every_poll_timed(tick, |live| async move {
        let first = gather!(policy = race, timeout = Duration::from_millis(45);
            live.track(slept(100, "slow")),
            live.track(slept(200, "slower")),
        );
        assert_eq!(first, None);
    })
    .await;
    assert_eq!(cuts.polls, 6);
    assert_eq!(cuts.most_cut, 2);
}

// ---- spawn, on a current-thread runtime -----------------------------------------------------

#[tokio::test(start_paused = true)]
async fn every_poll_cut_of_a_spawn_gather_leaves_no_task() {
    let tick = Duration::from_millis(10);
    let cuts = cut_at_every_poll_timed(tick, |live| async move {
        let result = gather!(spawn;
            live.track(slept(10, Ok::<u8, &str>(1))),
            live.track(slept(40, Ok(2))),
            live.track(slept(25, Err::<u8, _>("failed"))),
            live.track(slept(1_000, Ok(4))),
        );
        assert!(matches!(result, Err(Error::Failed { .. })), "{result:?}");
    })
    .await;
    assert!(cuts.polls >= 4, "{cuts:?}");
    assert_eq!((cuts.most_cut, cuts.most_tasks), (4, 4));
}

#[tokio::test(start_paused = true)]
async fn every_poll_cut_of_a_dynamic_spawn_gather_with_limit_leaves_no_task() {
    let tick = Duration::from_millis(10);
    let cuts = cut_at_every_poll_timed(tick, |live| async move {
        let out = gather!(policy = settle, spawn, limit = 2;
            for i in 0..6_u64 => live.track(slept(10 * (i % 3 + 1), i))
        );
        assert_eq!(out, [0, 1, 2, 3, 4, 5]);
    })
    .await;
    assert!(cuts.polls >= 6, "{cuts:?}");
    assert_eq!((cuts.most_cut, cuts.most_tasks), (2, 2));
}

#[tokio::test(start_paused = true)]
async fn every_poll_cut_of_a_spawn_race_with_timeout_leaves_no_task() {
    let tick = Duration::from_millis(10);
    let cuts = cut_at_every_poll_timed(tick, |live| async move {
        let first = gather!(policy = race, spawn, timeout = Duration::from_millis(35);
            live.track(slept(100, 1)),
            live.track(slept(500, 2)),
        );
        assert_eq!(first, None);
    })
    .await;
    assert!(cuts.polls >= 4, "{cuts:?}");
    assert_eq!((cuts.most_cut, cuts.most_tasks), (2, 2));
}

#[tokio::test(start_paused = true)]
async fn every_poll_cut_of_a_gather_of_join_handles_leaves_no_task() {
    let tick = Duration::from_millis(10);
    let cuts = cut_at_every_poll_timed(tick, |live| async move {
        let first = gather!(policy = race;
            tokio::spawn(live.track(slept(10, 1))),
            tokio::spawn(live.track(slept(50, 2))),
            live.track(slept(40, Ok(3))),
        );
        assert_eq!(first.unwrap(), 1);
    })
    .await;
    assert!(cuts.polls >= 4, "{cuts:?}");
    assert_eq!((cuts.most_cut, cuts.most_tasks), (3, 2));
}

/// An inner spawn gather, itself run inside a spawned branch.
async fn inner_spawned(live: Live, i: u64) -> Vec<u64> {
    gather!(policy = settle, spawn;
        for j in 0..3_u64 => live.track(slept(10 * (i + j + 1), j))
    )
}

#[tokio::test(start_paused = true)]
async fn every_poll_cut_of_nested_spawn_gathers_leaves_no_task_at_either_level() {
    let tick = Duration::from_millis(10);
    let cuts = cut_at_every_poll_timed(tick, |live| async move {
        let out = gather!(policy = settle, spawn;
            for i in 0..3_u64 => inner_spawned(live.clone(), i)
        );
        assert_eq!(out, [[0, 1, 2]; 3]);
    })
    .await;
    assert!(cuts.polls >= 5, "{cuts:?}");
    // Three outer tasks, each with three inner ones.
    assert_eq!((cuts.most_cut, cuts.most_tasks), (9, 12));
}

#[tokio::test(start_paused = true)]
async fn every_poll_cut_of_an_in_place_gather_of_spawn_gathers_leaves_no_task() {
    let tick = Duration::from_millis(10);
    let cuts = cut_at_every_poll_timed(tick, |live| async move {
        let result = gather!(
            inner = async { Ok::<_, &str>(inner_spawned(live.clone(), 2).await) },
            failing = live.track(slept(35, Err::<Vec<u64>, _>("failed"))),
        );
        assert!(matches!(result, Err(Error::Failed { .. })), "{result:?}");
    })
    .await;
    assert!(cuts.polls >= 4, "{cuts:?}");
    assert_eq!((cuts.most_cut, cuts.most_tasks), (4, 3));
}

// ---- a nested spawn gather cancelled while it awaits its aborted tasks -----------------------

/// Gathers `fut` as the first branch of an outer in-place gather whose second branch fails the
/// moment `gate` opens. The inner spawn gather ends early in the same poll (its task `a`
/// opened `gate` and failed), so when the outer gather cancels it, it is awaiting the task it
/// aborted, `b`. The outer gather must await `b` too before it returns, as it awaits the task
/// of any guard dropped with a branch it cancels.
async fn cancel_while_ending(
    log: &Journal,
    gate: &Gate,
    inner: impl Future<Output = Result<(), &'static str>>,
) {
    let base = alive_tasks();
    let result = gather!(
        inner = inner,
        outer = async {
            gate.wait().await;
            Err::<(), _>("outer failed")
        },
    );
    let (alive_at_return, b_gone_at_return) = (alive_tasks(), log.dropped("b"));
    // What a few ticks of the runtime do: `b` was aborted, so it goes then at the latest.
    for _ in 0..3 {
        yield_now().await;
    }
    let (alive_later, b_gone_later) = (alive_tasks(), log.dropped("b"));
    let Err(Error::Failed { branch, .. }) = result else {
        panic!("expected Error::Failed, got {result:?}");
    };
    assert_eq!(branch.name(), "outer");
    assert!(log.finished("a"), "{log:?}");
    assert!(
        b_gone_at_return && alive_at_return == base,
        "the outer gather returned while the task that the inner gather had aborted, and was \
         awaiting, still ran: at the return {} task(s) alive and `b` not yet dropped; a few \
         ticks later {} alive, `b` dropped: {b_gone_later}",
        alive_at_return - base,
        alive_later - base,
    );
}

#[tokio::test(start_paused = true)]
async fn an_outer_gather_awaits_the_tasks_a_nested_spawn_gather_was_awaiting_when_cancelled() {
    let log = Journal::new();
    let gate = Gate::new();
    let opener = gate.clone();
    let inner = async {
        let result = gather!(spawn;
            a = log.probe("a", async move {
                sleep(Duration::from_millis(10)).await;
                opener.open();
                Err::<(), _>("inner failed")
            }),
            b = log.probe("b", slept(10_000, Ok(()))),
        );
        result.map(|_| ()).map_err(|_| "inner failed")
    };
    cancel_while_ending(&log, &gate, inner).await;
}

#[tokio::test(start_paused = true)]
async fn an_outer_gather_awaits_the_tasks_a_nested_dynamic_spawn_gather_was_awaiting_when_cancelled()
 {
    let log = Journal::new();
    let gate = Gate::new();
    let inner = async {
        let result = gather!(spawn;
            for name in ["a", "b"] => {
                let opener = gate.clone();
                log.probe(name, async move {
                    if name == "b" {
                        sleep(Duration::from_secs(10)).await;
                        return Ok(());
                    }
                    sleep(Duration::from_millis(10)).await;
                    opener.open();
                    Err("inner failed")
                })
            }
        );
        result.map(|_| ()).map_err(|_| "inner failed")
    };
    cancel_while_ending(&log, &gate, inner).await;
}
