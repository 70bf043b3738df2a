//! The `spawn` option: each branch runs on a tokio task of its own behind an abort guard, and
//! when `gather!` returns no task of it is alive: every task it stopped has been aborted *and
//! awaited*. Also guarantee 5: a branch that is a tokio `JoinHandle`, with or without `spawn`,
//! is never detached.
//!
//! Counts of alive tasks (`num_alive_tasks`) are exact on a current-thread runtime: a task that
//! ends there is gone before anything else runs. On a multi-thread runtime tokio wakes a
//! task's `JoinHandle` a moment before it lets go of the task, so the tests there rely on drop
//! probes (a task's future is dropped before its `JoinHandle` is woken) and let the count
//! settle.

use std::future::pending;
use std::panic::{AssertUnwindSafe, panic_any};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::ThreadId;
use std::time::Duration;

use futures::FutureExt;
use gather::{Error, gather};
use gather_tests::{Gate, InFlight, Journal, Wait};
use tokio::task::{JoinError, yield_now};
use tokio::time::{Instant, sleep};

/// A panic payload no other code makes, to recognise it at the catch site.
#[derive(Debug, PartialEq)]
struct Explosion(u32);

/// How many tasks of the current runtime are alive.
fn alive() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

/// On a multi-thread runtime: waits (up to a second) until the count of alive tasks is
/// `expected`, and gives the count then.
async fn alive_settles_at(expected: usize) -> usize {
    for _ in 0..1_000 {
        if alive() == expected {
            break;
        }
        sleep(Duration::from_millis(1)).await;
    }
    alive()
}

/// The most tasks seen alive by the branches that [`sample`](Peak::sample) it.
#[derive(Clone, Default)]
struct Peak(Arc<AtomicUsize>);

impl Peak {
    fn sample(&self) {
        self.0.fetch_max(alive(), Ordering::SeqCst);
    }

    fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

/// Outputs `value` after `ms` milliseconds.
async fn after<T>(ms: u64, value: T) -> T {
    sleep(Duration::from_millis(ms)).await;
    value
}

/// Samples the alive tasks into `peak`, then outputs `value` after `ms` milliseconds.
async fn sampled<T>(peak: Peak, ms: u64, value: T) -> T {
    peak.sample();
    after(ms, value).await
}

/// Panics with `Explosion(code)` after `ms` milliseconds.
async fn explode_after<T>(ms: u64, code: u32) -> T {
    sleep(Duration::from_millis(ms)).await;
    panic_any(Explosion(code))
}

/// Panics with `Explosion(code)` once `wait` finishes.
async fn explode_when<T>(wait: Wait, code: u32) -> T {
    wait.await;
    panic_any(Explosion(code))
}

/// A `JoinError` of a task that was aborted, for branches that fail with one.
async fn join_error() -> JoinError {
    let handle = tokio::spawn(pending::<()>());
    handle.abort();
    handle.await.expect_err("the task was aborted")
}

/// `(index, name)` of each branch, to compare branch lists.
fn branches(list: &[gather::Branch]) -> Vec<(usize, &str)> {
    list.iter().map(|b| (b.index(), b.name())).collect()
}

/// The text of a panic payload.
fn message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_default()
}

/// Until `parties` threads have arrived, or `patience` has passed. A `std::sync::Barrier`
/// that gives up: branches that do not run in parallel make the test fail, not hang.
struct Rendezvous {
    arrived: Mutex<usize>,
    all_here: Condvar,
    parties: usize,
}

impl Rendezvous {
    fn new(parties: usize) -> Self {
        Rendezvous {
            arrived: Mutex::new(0),
            all_here: Condvar::new(),
            parties,
        }
    }

    /// Blocks the thread until every party has arrived; `false` if `patience` ran out first.
    fn arrive(&self, patience: Duration) -> bool {
        let mut arrived = self.arrived.lock().unwrap_or_else(PoisonError::into_inner);
        *arrived += 1;
        self.all_here.notify_all();
        let (_arrived, waited) = self
            .all_here
            .wait_timeout_while(arrived, patience, |n| *n < self.parties)
            .unwrap_or_else(PoisonError::into_inner);
        !waited.timed_out()
    }
}

// ---- every policy, fixed form --------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn spawn_cancel_aborts_and_awaits_the_siblings_before_returning() {
    let base = alive();
    let start = Instant::now();
    let log = Journal::new();
    let peak = Peak::default();

    let result = gather!(spawn;
        slow = log.probe("slow", after(10_000, Ok::<u8, &str>(1))),
        failing = log.probe("failing", sampled(peak.clone(), 100, Err::<u8, &str>("boom"))),
        forever = log.probe("forever", pending::<Result<u8, &str>>()),
    );
    let alive_at_return = alive();

    assert_eq!(peak.get(), base + 3, "each branch ran on a task of its own");
    assert_eq!(alive_at_return, base, "a task of the gather outlived it");
    assert!(log.dropped("slow") && log.dropped("forever"), "{log:?}");
    assert!(log.finished("failing"));
    assert_eq!(start.elapsed(), Duration::from_millis(100));
    let Err(Error::Failed {
        branch, cancelled, ..
    }) = result
    else {
        panic!("expected Error::Failed, got {result:?}");
    };
    assert_eq!(branch.name(), "failing");
    assert_eq!(branches(&cancelled), [(0, "slow"), (2, "forever")]);
}

#[tokio::test(start_paused = true)]
async fn spawn_finish_lets_every_task_run_to_its_end() {
    let base = alive();
    let start = Instant::now();
    let log = Journal::new();
    let peak = Peak::default();

    let result = gather!(policy = finish, spawn;
        a = log.probe("a", sampled(peak.clone(), 100, Err::<u8, &str>("a failed"))),
        b = log.probe("b", after(300, Ok::<u8, &str>(2))),
        c = log.probe("c", after(200, Err::<u8, &str>("c failed"))),
    );
    let alive_at_return = alive();

    assert_eq!(peak.get(), base + 3);
    assert_eq!(alive_at_return, base);
    assert_eq!(start.elapsed(), Duration::from_millis(300));
    assert!(["a", "b", "c"].iter().all(|b| log.finished(b)), "{log:?}");
    let Err(Error::Failures { errors, .. }) = result else {
        panic!("expected Error::Failures, got {result:?}");
    };
    let errors: Vec<_> = errors.iter().map(|(b, e)| (b.name(), *e)).collect();
    assert_eq!(errors, [("a", "a failed"), ("c", "c failed")]);
}

#[tokio::test(start_paused = true)]
async fn spawn_settle_gives_every_outcome_and_leaves_no_task() {
    let base = alive();
    let log = Journal::new();
    let peak = Peak::default();

    let (a, b, c) = gather!(policy = settle, spawn;
        log.probe("a", sampled(peak.clone(), 30, Ok::<u8, &str>(1))),
        log.probe("b", after(10, Err::<u8, &str>("no"))),
        log.probe("c", after(20, 'c')),
    );
    let alive_at_return = alive();

    assert_eq!(peak.get(), base + 3);
    assert_eq!(alive_at_return, base);
    assert_eq!((a, b, c), (Ok(1), Err("no"), 'c'));
    assert_eq!(log.story(), ["b finished", "c finished", "a finished"]);
}

#[tokio::test(start_paused = true)]
async fn spawn_race_aborts_and_awaits_the_losers() {
    let base = alive();
    let start = Instant::now();
    let log = Journal::new();
    let peak = Peak::default();

    let winner = gather!(policy = race, spawn;
        log.probe("slow", after(300, "slow")),
        log.probe("fast", sampled(peak.clone(), 50, "fast")),
        log.probe("forever", pending::<&str>()),
    );
    let alive_at_return = alive();

    assert_eq!(peak.get(), base + 3);
    assert_eq!(alive_at_return, base);
    assert_eq!(winner, "fast");
    assert_eq!(start.elapsed(), Duration::from_millis(50));
    assert!(log.dropped("slow") && log.dropped("forever"), "{log:?}");
}

#[tokio::test(start_paused = true)]
async fn spawn_race_ok_aborts_and_awaits_the_losers() {
    let base = alive();
    let start = Instant::now();
    let log = Journal::new();
    let peak = Peak::default();

    let fastest = gather!(policy = race_ok, spawn;
        eu = log.probe("eu", after(300, Ok::<&str, &str>("eu"))),
        us = log.probe("us", sampled(peak.clone(), 10, Err::<&str, &str>("us is down"))),
        asia = log.probe("asia", after(120, Ok::<&str, &str>("asia"))),
    );
    let alive_at_return = alive();

    assert_eq!(peak.get(), base + 3);
    assert_eq!(alive_at_return, base);
    assert_eq!(fastest, Ok("asia"));
    assert_eq!(start.elapsed(), Duration::from_millis(120));
    assert!(log.dropped("eu"), "{log:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawn_cancel_on_a_multi_thread_runtime_stops_every_busy_task_before_returning() {
    let base = alive();
    let log = Journal::new();
    // Busy tasks that never sleep: each keeps a worker turning until it is aborted.
    let busy = |who: &str| {
        log.probe(who, async {
            loop {
                yield_now().await;
            }
            #[allow(unreachable_code)]
            Ok::<u8, &str>(0)
        })
    };

    let result = gather!(spawn;
        busy("a"),
        busy("b"),
        failing = async {
            sleep(Duration::from_millis(20)).await;
            Err::<u8, &str>("failed")
        },
        busy("c"),
    );
    // The drop of each task's future is recorded before its `JoinHandle` is woken.
    let story = log.story();

    assert!(result.is_err());
    let mut story = story;
    story.sort();
    assert_eq!(story, ["a dropped", "b dropped", "c dropped"]);
    assert_eq!(alive_settles_at(base).await, base);
}

// ---- every policy, dynamic form ------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn spawn_dynamic_cancel_aborts_and_awaits_the_siblings() {
    let base = alive();
    let log = Journal::new();
    let peak = Peak::default();

    let result = gather!(spawn; for ms in [10_000_u64, 100, 20_000] => log.probe(
        ms.to_string(),
        {
            let peak = peak.clone();
            async move {
                peak.sample();
                sleep(Duration::from_millis(ms)).await;
                if ms == 100 { Err("failed") } else { Ok(ms) }
            }
        },
    ));
    let alive_at_return = alive();

    assert_eq!(peak.get(), base + 3);
    assert_eq!(alive_at_return, base);
    assert!(log.dropped("10000") && log.dropped("20000"), "{log:?}");
    let Err(Error::Failed {
        branch, cancelled, ..
    }) = result
    else {
        panic!("expected Error::Failed, got {result:?}");
    };
    assert_eq!(branch.index(), 1);
    let cancelled: Vec<_> = cancelled.iter().map(gather::Branch::index).collect();
    assert_eq!(cancelled, [0, 2]);
}

#[tokio::test(start_paused = true)]
async fn spawn_dynamic_finish_and_settle_leave_no_task() {
    let base = alive();
    let finished = gather!(policy = finish, spawn; for ms in [30_u64, 10, 20] => after(ms, Ok::<u64, &str>(ms)));
    assert_eq!(alive(), base);
    assert_eq!(finished, Ok(vec![30, 10, 20]));

    let settled = gather!(policy = settle, spawn; for ms in [30_u64, 10, 20] => after(ms, ms * 2));
    assert_eq!(alive(), base);
    assert_eq!(settled, [60, 20, 40]);
}

#[tokio::test(start_paused = true)]
async fn spawn_dynamic_race_and_race_ok_abort_and_await_the_losers() {
    let base = alive();
    let log = Journal::new();

    let winner = gather!(policy = race, spawn; for ms in [300_u64, 50, 200] =>
        log.probe(format!("race {ms}"), after(ms, ms)));
    assert_eq!(alive(), base);
    assert_eq!(winner, 50);
    assert!(
        log.dropped("race 300") && log.dropped("race 200"),
        "{log:?}"
    );

    let first_ok = gather!(policy = race_ok, spawn; for ms in [300_u64, 10, 120] =>
    log.probe(format!("race_ok {ms}"), async move {
        sleep(Duration::from_millis(ms)).await;
        if ms == 10 { Err("down") } else { Ok(ms) }
    }));
    assert_eq!(alive(), base);
    assert_eq!(first_ok, Ok(120));
    assert!(log.dropped("race_ok 300"), "{log:?}");
}

// ---- parallelism ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawn_runs_cpu_bound_branches_in_parallel() {
    let meet = Arc::new(Rendezvous::new(2));
    // Each branch blocks its thread until the other has arrived: that only happens if the two
    // run at the same time, on two threads.
    let branch = |meet: Arc<Rendezvous>| async move {
        let met = meet.arrive(Duration::from_secs(10));
        (std::thread::current().id(), met)
    };

    let ((a_thread, a_met), (b_thread, b_met)): ((ThreadId, bool), (ThreadId, bool)) = gather!(
        policy = settle, spawn;
        branch(Arc::clone(&meet)),
        branch(Arc::clone(&meet)),
    );

    assert!(a_met && b_met, "the branches did not run at the same time");
    assert_ne!(a_thread, b_thread);
    assert_ne!(a_thread, std::thread::current().id());
}

// ---- dropping the caller -------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn dropping_the_caller_aborts_every_spawned_task() {
    let base = alive();
    let log = Journal::new();
    let peak = Peak::default();

    let caller = async {
        gather!(spawn;
            log.probe("done", after(50, Ok::<u8, &str>(1))),
            log.probe("slow", sampled(peak.clone(), 5_000, Ok::<u8, &str>(2))),
            log.probe("forever", pending::<Result<u8, &str>>()),
        )
    };
    let elapsed = tokio::time::timeout(Duration::from_millis(200), caller).await;
    // `timeout` dropped the caller's future. Rust has no async drop: the tasks are aborted,
    // and tokio stops them the next time they are scheduled.
    assert!(elapsed.is_err());
    assert_eq!(peak.get(), base + 3);
    for _ in 0..10 {
        if alive() == base {
            break;
        }
        yield_now().await;
    }

    assert_eq!(alive(), base, "a task outlived the caller that owned it");
    assert!(log.finished("done"));
    assert!(log.dropped("slow") && log.dropped("forever"), "{log:?}");
}

#[tokio::test(start_paused = true)]
async fn dropping_the_caller_of_a_dynamic_spawn_gather_aborts_every_task() {
    let base = alive();
    let log = Journal::new();

    let caller = async {
        gather!(policy = settle, spawn, limit = 2; for i in 0..5 =>
            log.probe(i.to_string(), after(1_000 * (i + 1), i)))
    };
    assert!(
        tokio::time::timeout(Duration::from_millis(1_500), caller)
            .await
            .is_err()
    );
    for _ in 0..10 {
        if alive() == base {
            break;
        }
        yield_now().await;
    }

    assert_eq!(alive(), base);
    // 0 finished at 1 s and 2 started then; 1 and 2 were running; 3 and 4 never started.
    assert_eq!(log.story(), ["0 finished", "1 dropped", "2 dropped"]);
}

// ---- panics --------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn spawn_a_panic_reaches_the_caller_with_its_payload_after_the_siblings_are_gone() {
    let base = alive();
    let start = Instant::now();
    let log = Journal::new();

    let caught = AssertUnwindSafe(async {
        gather!(spawn;
            log.probe("slow", after(5_000, Ok::<u8, &str>(1))),
            log.probe("panics", explode_after::<Result<u8, &str>>(100, 42)),
            log.probe("forever", pending::<Result<u8, &str>>()),
        )
    })
    .catch_unwind()
    .await;
    let alive_at_catch = alive();

    let Err(payload) = caught else {
        panic!("the panic did not reach the caller: {caught:?}");
    };
    assert_eq!(payload.downcast_ref::<Explosion>(), Some(&Explosion(42)));
    assert_eq!(alive_at_catch, base, "a sibling task outlived the panic");
    assert_eq!(start.elapsed(), Duration::from_millis(100));
    assert!(log.dropped("slow") && log.dropped("forever"), "{log:?}");
}

#[tokio::test(start_paused = true)]
async fn spawn_dynamic_a_panic_reaches_the_caller_after_the_siblings_are_gone() {
    let base = alive();
    let log = Journal::new();

    let caught = AssertUnwindSafe(async {
        gather!(policy = settle, spawn; for i in 0..3_u32 => log.probe(i.to_string(), async move {
            sleep(Duration::from_millis(100 * u64::from(i + 1))).await;
            if i == 1 {
                panic_any(Explosion(i));
            }
            pending::<u32>().await
        }))
    })
    .catch_unwind()
    .await;
    let alive_at_catch = alive();

    let Err(payload) = caught else {
        panic!("the panic did not reach the caller: {caught:?}");
    };
    assert_eq!(payload.downcast_ref::<Explosion>(), Some(&Explosion(1)));
    assert_eq!(alive_at_catch, base);
    assert!(log.dropped("0") && log.dropped("2"), "{log:?}");
}

#[tokio::test]
async fn spawn_race_resumes_a_panic_seen_in_the_same_poll_as_the_winner() {
    // `wins` opens the gate and ends; `panics` then panics: both tasks have ended before the
    // gather looks again, and in that poll the panic (branch 0) comes first. In place, the
    // panic would reach the caller; a panic is never dropped for a value.
    let gate = Gate::new();
    let opener = gate.clone();
    let caught = AssertUnwindSafe(async {
        gather!(policy = race, spawn;
            panics = explode_when::<&str>(gate.wait(), 7),
            wins = async move {
                opener.open();
                "won"
            },
        )
    })
    .catch_unwind()
    .await;

    let Err(payload) = caught else {
        panic!("the panic of branch `panics` was swallowed: the race gave {caught:?}");
    };
    assert_eq!(payload.downcast_ref::<Explosion>(), Some(&Explosion(7)));
}

#[tokio::test]
async fn spawn_cancel_resumes_a_panic_seen_in_the_same_poll_as_a_failure() {
    let gate = Gate::new();
    let opener = gate.clone();
    let caught = AssertUnwindSafe(async {
        gather!(spawn;
            panics = explode_when::<Result<u8, &str>>(gate.wait(), 8),
            fails = async move {
                opener.open();
                Err::<u8, &str>("failed")
            },
        )
    })
    .catch_unwind()
    .await;

    let Err(payload) = caught else {
        panic!("the panic of branch `panics` was swallowed: the gather gave {caught:?}");
    };
    assert_eq!(payload.downcast_ref::<Explosion>(), Some(&Explosion(8)));
}

#[tokio::test]
async fn spawn_a_panic_of_one_gather_never_reaches_the_next_gather_on_the_thread() {
    // The same race as above; whatever it gives, the panic belongs to it.
    let gate = Gate::new();
    let opener = gate.clone();
    let _ = AssertUnwindSafe(async {
        gather!(policy = race, spawn;
            panics = explode_when::<&str>(gate.wait(), 9),
            wins = async move {
                opener.open();
                "won"
            },
        )
    })
    .catch_unwind()
    .await;

    // A later gather on the same thread whose branches all succeed.
    let next = AssertUnwindSafe(async {
        gather!(spawn; async { Ok::<u8, &str>(1) }, async { Ok::<u8, &str>(2) })
    })
    .catch_unwind()
    .await;

    match next {
        Ok(result) => assert_eq!(result, Ok((1, 2))),
        Err(payload) => panic!(
            "a gather whose branches all succeed panicked with {:?} {:?}",
            payload.downcast_ref::<Explosion>(),
            message(&*payload),
        ),
    }
}

#[tokio::test(start_paused = true)]
async fn spawn_dynamic_race_resumes_a_panic_seen_in_the_same_poll_as_the_winner() {
    let gate = Gate::new();
    let caught = AssertUnwindSafe(async {
        gather!(policy = race, spawn; for i in 0..2_u32 => {
            let gate = gate.clone();
            async move {
                if i == 0 {
                    explode_when::<&str>(gate.wait(), 10).await
                } else {
                    gate.open();
                    "won"
                }
            }
        })
    })
    .catch_unwind()
    .await;

    let Err(payload) = caught else {
        panic!("the panic of branch 0 was swallowed: the race gave {caught:?}");
    };
    assert_eq!(payload.downcast_ref::<Explosion>(), Some(&Explosion(10)));
}

/// The gather's own waker, counting its wakes before passing them on.
struct Counting {
    inner: std::task::Waker,
    wakes: Arc<AtomicUsize>,
}

impl std::task::Wake for Counting {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.wakes.fetch_add(1, Ordering::SeqCst);
        self.inner.wake_by_ref();
    }
}

#[tokio::test]
async fn spawn_aborted_tasks_wake_the_gather_only_for_the_task_it_awaits() {
    // 99 tasks wait forever and one fails: the gather aborts the 99 and awaits them, one at a
    // time in abort order. A task that ends must not wake the gather through its branch's
    // waker too, which would make 99 wakes for nothing.
    let base = alive();
    let wakes = Arc::new(AtomicUsize::new(0));
    let mut gather = std::pin::pin!(async {
        gather!(spawn; for i in 0..100_u32 => async move {
            if i == 50 {
                yield_now().await;
                Err(i)
            } else {
                pending::<Result<u32, u32>>().await
            }
        })
    });
    let mut waker = None;

    let result = std::future::poll_fn(|cx| {
        let waker = waker.get_or_insert_with(|| {
            std::task::Waker::from(Arc::new(Counting {
                inner: cx.waker().clone(),
                wakes: Arc::clone(&wakes),
            }))
        });
        gather
            .as_mut()
            .poll(&mut std::task::Context::from_waker(waker))
    })
    .await;

    assert_eq!(alive(), base);
    assert!(
        matches!(result, Err(Error::Failed { error: 50, .. })),
        "{result:?}"
    );
    let wakes = wakes.load(Ordering::SeqCst);
    assert!(wakes < 10, "the gather was woken {wakes} times");
}

// ---- limit ---------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn spawn_dynamic_limit_64_keeps_at_most_64_of_10_000_tasks_alive() {
    let base = alive();
    let peak = Peak::default();
    let started = Arc::new(AtomicUsize::new(0));

    let out = gather!(policy = settle, spawn, limit = 64; for i in 0..10_000_usize => {
        let (peak, started) = (peak.clone(), Arc::clone(&started));
        async move {
            started.fetch_add(1, Ordering::SeqCst);
            peak.sample();
            // Uneven lengths, so that tasks end out of input order.
            sleep(Duration::from_millis(1 + (i % 7) as u64)).await;
            peak.sample();
            i
        }
    });

    assert_eq!(alive(), base);
    assert_eq!(started.load(Ordering::SeqCst), 10_000);
    assert_eq!(out.len(), 10_000);
    assert!(
        out.iter().copied().eq(0..10_000),
        "outputs out of input order"
    );
    assert_eq!(
        peak.get() - base,
        64,
        "the most tasks alive at once was not exactly the limit"
    );
}

#[tokio::test(start_paused = true)]
async fn spawn_fixed_limit_keeps_at_most_limit_tasks_alive() {
    // With `limit = 2`, a branch that has not started must not run: under `spawn` its task
    // must not exist yet. Four branches of 100 ms, two at a time, take 200 ms.
    let base = alive();
    let start = Instant::now();
    let peak = Peak::default();
    let in_flight = InFlight::new();
    let branch = |ms: u64| in_flight.track(sampled(peak.clone(), ms, Ok::<u64, &str>(ms)));

    let result = gather!(spawn, limit = 2; branch(100), branch(100), branch(100), branch(100));

    assert_eq!(result, Ok((100, 100, 100, 100)));
    assert_eq!(alive(), base);
    assert_eq!(
        (peak.get() - base, in_flight.peak()),
        (2, 2),
        "(tasks alive at once, branches running at once) exceed the limit of 2"
    );
    assert_eq!(start.elapsed(), Duration::from_millis(200));
}

#[tokio::test(start_paused = true)]
async fn spawn_with_every_option_races_under_limit_and_deadline() {
    let base = alive();
    let log = Journal::new();
    let deadline = Duration::from_millis(500);

    let winner = gather!(policy = race, spawn, limit = 2, timeout = deadline;
        log.probe("a", after(300, 'a')),
        log.probe("b", after(50, 'b')),
        log.probe("c", after(1_000, 'c')),
    );
    assert_eq!(alive(), base);
    assert_eq!(winner, Some('b'));
    assert!(log.dropped("a"), "{log:?}");
    // `c` never started: its task was never spawned.
    assert_eq!(log.started(), ["a", "b"]);

    let start = Instant::now();
    let late = gather!(policy = race, spawn, limit = 2, timeout = deadline;
        log.probe("late a", after(1_000, 'a')),
        log.probe("late b", pending::<char>()),
    );
    assert_eq!(alive(), base);
    assert_eq!(late, None);
    assert_eq!(start.elapsed(), deadline);
    assert!(log.dropped("late a") && log.dropped("late b"), "{log:?}");
}

// ---- timeout -------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn spawn_timeout_aborts_and_awaits_every_task_at_the_deadline() {
    let base = alive();
    let start = Instant::now();
    let log = Journal::new();
    let peak = Peak::default();

    let result = gather!(spawn, timeout = Duration::from_millis(100);
        quick = log.probe("quick", sampled(peak.clone(), 10, Ok::<u8, &str>(1))),
        slow = log.probe("slow", after(5_000, Ok::<u8, &str>(2))),
        forever = log.probe("forever", pending::<Result<u8, &str>>()),
    );
    let alive_at_return = alive();

    assert_eq!(peak.get(), base + 3);
    assert_eq!(alive_at_return, base);
    assert_eq!(start.elapsed(), Duration::from_millis(100));
    assert!(log.dropped("slow") && log.dropped("forever"), "{log:?}");
    let Err(Error::TimedOut { pending, .. }) = result else {
        panic!("expected Error::TimedOut, got {result:?}");
    };
    assert_eq!(branches(&pending), [(1, "slow"), (2, "forever")]);

    let settled = gather!(policy = settle, spawn, timeout = Duration::from_millis(100);
        after(10, 1_u8),
        log.probe("settle slow", after(5_000, 2_u8)),
    );
    assert_eq!(alive(), base);
    assert_eq!(settled, (Some(1), None));
    assert!(log.dropped("settle slow"));
}

#[tokio::test(start_paused = true)]
async fn spawn_dynamic_timeout_aborts_and_awaits_every_task_at_the_deadline() {
    let base = alive();
    let log = Journal::new();
    let peak = Peak::default();

    let settled = gather!(policy = settle, spawn, timeout = Duration::from_millis(100);
        for ms in [10_u64, 5_000, 20_000] => log.probe(ms.to_string(), sampled(peak.clone(), ms, ms)));
    assert_eq!(peak.get(), base + 3);
    assert_eq!(alive(), base);
    assert_eq!(settled, [Some(10), None, None]);
    assert!(log.dropped("5000") && log.dropped("20000"), "{log:?}");

    let result = gather!(spawn, limit = 2, timeout = Duration::from_millis(100);
        for ms in [50_u64, 5_000, 20_000, 30_000] =>
            log.probe(format!("limited {ms}"), after(ms, Ok::<u64, &str>(ms))));
    assert_eq!(alive(), base);
    let Err(Error::TimedOut { pending, .. }) = result else {
        panic!("expected Error::TimedOut, got {result:?}");
    };
    // 50 ended and 20000 started in its place; 30000 never started.
    let pending: Vec<_> = pending.iter().map(gather::Branch::index).collect();
    assert_eq!(pending, [1, 2]);
    assert!(!log.started().contains(&"limited 30000".to_owned()));
}

// ---- a task ended from outside -------------------------------------------------------------

#[test]
fn spawn_a_task_cancelled_by_runtime_shutdown_ends_the_gather_with_a_panic_naming_it() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .build()
        .expect("a runtime");
    let handle = runtime.handle().clone();
    let (started, on_start) = std::sync::mpsc::channel::<()>();
    // Shuts the runtime down once the branch's task is running: that cancels the task.
    let shutdown = std::thread::spawn(move || {
        on_start.recv().expect("the branch started");
        runtime.shutdown_timeout(Duration::from_secs(5));
    });

    // The gather runs outside the runtime (on this thread, under `futures`), with the
    // runtime entered so that `spawn` puts its tasks there.
    let entered = handle.enter();
    let caught = std::panic::catch_unwind(AssertUnwindSafe(|| {
        futures::executor::block_on(async {
            gather!(policy = settle, spawn;
                stuck = async move {
                    started.send(()).expect("the test waits");
                    pending::<u8>().await
                },
            )
        })
    }));
    drop(entered);
    shutdown.join().expect("the runtime shut down");

    let Err(payload) = caught else {
        panic!("a cancelled task was taken for an outcome: {caught:?}");
    };
    let message = message(&*payload);
    assert!(message.contains("`stuck`"), "{message}");
    assert!(message.contains("cancelled from outside"), "{message}");
}

#[test]
fn spawn_outside_a_tokio_runtime_panics_saying_one_is_needed() {
    let fixed = std::panic::catch_unwind(|| {
        futures::executor::block_on(async {
            gather!(spawn; async { Ok::<u8, &str>(1) }, async { Ok::<u8, &str>(2) })
        })
    });
    let Err(payload) = fixed else {
        panic!("gather!(spawn; ..) ran without a runtime: {fixed:?}");
    };
    assert!(
        message(&*payload).contains("tokio runtime"),
        "{}",
        message(&*payload)
    );

    let dynamic = std::panic::catch_unwind(|| {
        futures::executor::block_on(async {
            gather!(policy = settle, spawn; for i in 0..3 => async move { i })
        })
    });
    let Err(payload) = dynamic else {
        panic!("gather!(spawn; for ..) ran without a runtime: {dynamic:?}");
    };
    assert!(
        message(&*payload).contains("tokio runtime"),
        "{}",
        message(&*payload)
    );
}

async fn spawned_pair() -> Result<(u8, String), Error<String>> {
    gather!(spawn; async { Ok(1) }, async { Ok("two".to_owned()) })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_using_spawn_can_itself_be_spawned() {
    let result = tokio::spawn(spawned_pair()).await.expect("no panic");
    assert_eq!(result, Ok((1, "two".to_owned())));
}

// ---- JoinHandle branches (guarantee 5) -----------------------------------------------------

#[tokio::test(start_paused = true)]
async fn race_between_join_handles_aborts_and_awaits_the_loser() {
    let base = alive();
    let log = Journal::new();
    let fast = tokio::spawn(after(10, "fast"));
    let slow = tokio::spawn(log.probe("slow", after(5_000, "slow")));

    let winner = gather!(policy = race; fast, slow);
    let alive_at_return = alive();

    assert_eq!(alive_at_return, base, "the losing task was detached");
    assert!(log.dropped("slow"), "{log:?}");
    // The output stays the handle's own.
    let winner: Result<&str, JoinError> = winner;
    assert_eq!(winner.expect("the task did not fail"), "fast");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn race_between_join_handles_on_a_multi_thread_runtime_stops_the_busy_loser() {
    let base = alive();
    let log = Journal::new();
    let busy = tokio::spawn(log.probe("busy", async {
        loop {
            yield_now().await;
        }
    }));
    let fast = tokio::spawn(after(20, ()));

    let winner = gather!(policy = race; busy, fast);
    let story = log.story();

    assert!(winner.is_ok());
    assert_eq!(story, ["busy dropped"], "the losing task was still running");
    assert_eq!(alive_settles_at(base).await, base);
}

#[tokio::test(start_paused = true)]
async fn a_join_handle_branch_cancelled_by_a_failure_is_aborted_and_awaited() {
    let base = alive();
    let log = Journal::new();
    let error = join_error().await;
    let slow = tokio::spawn(log.probe("slow", after(10_000, 1_u8)));

    let result = gather!(
        slow = slow,
        failing = async move {
            sleep(Duration::from_millis(100)).await;
            Err::<u8, JoinError>(error)
        },
    );
    let alive_at_return = alive();

    assert_eq!(alive_at_return, base);
    assert!(log.dropped("slow"), "{log:?}");
    let Err(Error::Failed {
        branch, cancelled, ..
    }) = result
    else {
        panic!("expected Error::Failed, got {result:?}");
    };
    assert_eq!(branch.name(), "failing");
    assert_eq!(branches(&cancelled), [(0, "slow")]);
}

#[tokio::test(start_paused = true)]
async fn a_join_handle_branch_at_the_deadline_is_aborted_and_awaited() {
    let base = alive();
    let log = Journal::new();
    let slow = tokio::spawn(log.probe("slow", after(10_000, 1_u8)));
    let quick = tokio::spawn(after(10, 2_u8));

    let result = gather!(timeout = Duration::from_millis(100); quick = quick, slow = slow);
    let alive_at_return = alive();

    assert_eq!(alive_at_return, base);
    assert!(log.dropped("slow"), "{log:?}");
    let Err(Error::TimedOut { pending, .. }) = result else {
        panic!("expected Error::TimedOut, got {result:?}");
    };
    assert_eq!(branches(&pending), [(1, "slow")]);
}

#[tokio::test(start_paused = true)]
async fn a_join_handle_whose_task_finished_before_its_abort_is_not_named_cancelled() {
    let base = alive();
    let log = Journal::new();
    let error = join_error().await;
    let gate = Gate::new();
    let opener = gate.clone();
    // `done` opens the gate and ends: when the gather sees `failing` fail, `done` has finished
    // already, though the gather has not looked at it yet.
    let done = tokio::spawn(async move {
        opener.open();
        7_u8
    });
    let slow = tokio::spawn(log.probe("slow", pending::<u8>()));

    let result = gather!(
        failing = async move {
            gate.wait().await;
            Err::<u8, JoinError>(error)
        },
        done = done,
        slow = slow,
    );

    assert_eq!(alive(), base);
    let Err(Error::Failed {
        branch, cancelled, ..
    }) = result
    else {
        panic!("expected Error::Failed, got {result:?}");
    };
    assert_eq!(branch.name(), "failing");
    assert_eq!(branches(&cancelled), [(2, "slow")]);
}

#[tokio::test(start_paused = true)]
async fn spawn_a_task_that_finished_before_its_abort_is_not_named_cancelled() {
    let base = alive();
    let gate = Gate::new();
    let opener = gate.clone();

    let result = gather!(spawn;
        failing = async move {
            gate.wait().await;
            Err::<u8, &str>("failed")
        },
        done = async move {
            opener.open();
            Ok::<u8, &str>(7)
        },
        slow = pending::<Result<u8, &str>>(),
    );

    assert_eq!(alive(), base);
    let Err(Error::Failed {
        branch, cancelled, ..
    }) = result
    else {
        panic!("expected Error::Failed, got {result:?}");
    };
    assert_eq!(branch.name(), "failing");
    assert_eq!(branches(&cancelled), [(2, "slow")]);
}

#[tokio::test(start_paused = true)]
async fn spawn_dynamic_a_task_that_finished_before_its_abort_is_not_named_cancelled() {
    let base = alive();
    let gate = Gate::new();

    let result = gather!(spawn; for i in 0..3_u8 => {
        let gate = gate.clone();
        async move {
            match i {
                0 => {
                    gate.wait().await;
                    Err("failed")
                }
                1 => {
                    gate.open();
                    Ok(i)
                }
                _ => pending().await,
            }
        }
    });

    assert_eq!(alive(), base);
    let Err(Error::Failed {
        branch, cancelled, ..
    }) = result
    else {
        panic!("expected Error::Failed, got {result:?}");
    };
    assert_eq!(branch.index(), 0);
    let cancelled: Vec<_> = cancelled.iter().map(gather::Branch::index).collect();
    assert_eq!(cancelled, [2]);
}

#[tokio::test(start_paused = true)]
async fn a_join_handle_branch_under_spawn_keeps_its_join_error_as_a_value() {
    let base = alive();
    let log = Journal::new();
    let panicked = tokio::spawn(explode_after::<u8>(10, 3));

    let (handle, value) = gather!(policy = settle, spawn;
        handle = panicked,
        value = log.probe("value", after(20, 5_u8)),
    );

    assert_eq!(alive(), base);
    assert_eq!(value, 5);
    let handle: Result<u8, JoinError> = handle;
    let error = handle.expect_err("the task panicked");
    let payload = error.try_into_panic().expect("a panic, not a cancellation");
    assert_eq!(payload.downcast_ref::<Explosion>(), Some(&Explosion(3)));
}

#[tokio::test(start_paused = true)]
async fn a_join_handle_aborted_from_outside_gives_a_cancelled_join_error() {
    let base = alive();
    let handle = tokio::spawn(pending::<u8>());
    let abort = handle.abort_handle();

    let (handle, ()) = gather!(policy = settle;
        handle,
        async move {
            sleep(Duration::from_millis(10)).await;
            abort.abort();
        },
    );

    assert_eq!(alive(), base);
    assert!(handle.expect_err("the task was aborted").is_cancelled());
}
