//! The dynamic form, `gather!([OPTIONS;] for PAT in ITER => BODY)`: one branch per item,
//! outputs in input order, the body called lazily when its item's branch starts, and each
//! branch woken, and polled, on its own.

use std::cell::Cell;
use std::future::{pending, ready};
use std::panic::AssertUnwindSafe;
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

use futures::executor::block_on;
use gather::{Error, gather};
use gather_tests::{Event, Gate, InFlight, Journal, poll_once};
use tokio::time::{Instant, sleep, timeout};

/// Outputs `value` after `ms` milliseconds.
async fn after<T>(ms: u64, value: T) -> T {
    sleep(Duration::from_millis(ms)).await;
    value
}

/// Succeeds with `n` after `n` × 10 ms when `n` is even, fails when it is odd.
async fn check(n: u64) -> Result<u64, String> {
    sleep(Duration::from_millis(n * 10)).await;
    if n.is_multiple_of(2) {
        Ok(n)
    } else {
        Err(format!("{n} is odd"))
    }
}

/// A journal stamped with the time elapsed since `start`, under paused time.
fn journal(start: Instant) -> Journal {
    Journal::with_clock(move || start.elapsed())
}

/// A probe's name for an item. A function rather than `item.to_string()` in the body: see
/// `dynamic_body_infers_the_item_type_like_a_closure`.
fn name(item: impl std::fmt::Display) -> String {
    item.to_string()
}

/// The wait of gate `i`, as a function for the same reason as [`name`].
fn wait(gates: &[Gate], i: usize) -> gather_tests::Wait {
    gates[i].wait()
}

/// `(index, name)` of each branch, to compare branch lists.
fn branches(list: &[gather::Branch]) -> Vec<(usize, &str)> {
    list.iter().map(|b| (b.index(), b.name())).collect()
}

/// The index of each branch.
fn indices(list: &[gather::Branch]) -> Vec<usize> {
    list.iter().map(gather::Branch::index).collect()
}

/// The text of a panic payload.
fn message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_default()
}

// ---- every policy --------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn dynamic_cancel_gives_every_value_in_input_order() {
    let start = Instant::now();
    let result = gather!(for ms in [30_u64, 10, 20] => after(ms, Ok::<u64, &str>(ms)));
    assert_eq!(result, Ok(vec![30, 10, 20]));
    assert_eq!(start.elapsed(), Duration::from_millis(30));
}

#[tokio::test(start_paused = true)]
async fn dynamic_cancel_returns_at_the_first_failure_and_drops_the_others() {
    let start = Instant::now();
    let log = journal(start);

    let result = gather!(policy = cancel;
        for i in 0..5_u64 => log.probe(name(i), async move {
            sleep(Duration::from_millis(100 * (i + 1))).await;
            if i == 1 { Err(format!("{i} failed")) } else { Ok(i) }
        })
    );
    log.mark("returned");

    assert_eq!(start.elapsed(), Duration::from_millis(200));
    let Err(Error::Failed {
        branch,
        error,
        cancelled,
        ..
    }) = result
    else {
        panic!("expected Error::Failed, got {result:?}");
    };
    assert_eq!((branch.index(), error.as_str()), (1, "1 failed"));
    assert_eq!(indices(&cancelled), [2, 3, 4]);
    assert_eq!(
        log.story(),
        [
            "0 finished at 100ms",
            "1 finished at 200ms",
            "2 dropped at 200ms",
            "3 dropped at 200ms",
            "4 dropped at 200ms",
            "returned at 200ms",
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn dynamic_errors_name_each_branch_by_its_item_index_and_the_body_text() {
    let result = gather!(policy = finish; for n in 0..6 => check(n));
    let Err(Error::Failures { errors, .. }) = result else {
        panic!("expected Error::Failures, got {result:?}");
    };
    let errors: Vec<_> = errors
        .iter()
        .map(|(b, e)| (b.index(), b.name(), e.as_str()))
        .collect();
    assert_eq!(
        errors,
        [
            (1, "check(n)", "1 is odd"),
            (3, "check(n)", "3 is odd"),
            (5, "check(n)", "5 is odd"),
        ]
    );

    let result = gather!(for n in [4, 2, 3, 6] => check(n));
    let Err(Error::Failed {
        branch, cancelled, ..
    }) = result
    else {
        panic!("expected Error::Failed, got {result:?}");
    };
    assert_eq!((branch.index(), branch.name()), (2, "check(n)"));
    assert_eq!(branches(&cancelled), [(0, "check(n)"), (3, "check(n)")]);
}

#[tokio::test(start_paused = true)]
async fn dynamic_finish_runs_every_branch_and_reports_every_failure_in_input_order() {
    let start = Instant::now();
    let log = Journal::new();

    // The failures come in reverse input order.
    let result = gather!(policy = finish;
        for (i, ms) in [(0_u64, 300_u64), (1, 50), (2, 200), (3, 100)] => log.probe(name(i), async move {
            sleep(Duration::from_millis(ms)).await;
            if i == 1 { Ok(i) } else { Err(i) }
        })
    );

    assert_eq!(start.elapsed(), Duration::from_millis(300));
    assert!((0..4).all(|i| log.finished(&name(i))));
    let Err(Error::Failures { errors, .. }) = result else {
        panic!("expected Error::Failures, got {result:?}");
    };
    let errors: Vec<_> = errors.iter().map(|(b, e)| (b.index(), *e)).collect();
    assert_eq!(errors, [(0, 0), (2, 2), (3, 3)]);

    let ok = gather!(policy = finish; for n in [2, 0, 4] => check(n));
    assert_eq!(ok, Ok(vec![2, 0, 4]));
}

#[tokio::test(start_paused = true)]
async fn dynamic_settle_gives_every_outcome_in_input_order() {
    let start = Instant::now();
    let outcomes = gather!(policy = settle; for n in [3, 1, 2] => check(n));
    assert_eq!(
        outcomes,
        [
            Err("3 is odd".to_owned()),
            Err("1 is odd".to_owned()),
            Ok(2)
        ]
    );
    assert_eq!(start.elapsed(), Duration::from_millis(30));
}

#[tokio::test(start_paused = true)]
async fn dynamic_race_returns_the_first_outcome_and_drops_every_loser() {
    let start = Instant::now();
    let log = journal(start);

    let winner = gather!(policy = race;
        for ms in [300_u64, 100, 200] => log.probe(name(ms), after(ms, ms))
    );
    log.mark("returned");

    assert_eq!(winner, 100);
    assert_eq!(start.elapsed(), Duration::from_millis(100));
    assert_eq!(
        log.story(),
        [
            "100 finished at 100ms",
            "300 dropped at 100ms",
            "200 dropped at 100ms",
            "returned at 100ms",
        ]
    );
}

#[test]
fn dynamic_race_lowest_index_wins_when_several_finish_in_the_same_poll() {
    let log = Journal::new();
    let gates: Vec<Gate> = (0..4).map(|_| Gate::new()).collect();
    let mut race = pin!(async {
        gather!(policy = race;
            for i in 0..4_usize => {
                let gate = wait(&gates, i);
                log.probe(name(i), async move {
                    gate.await;
                    i
                })
            }
        )
    });
    assert!(poll_once(race.as_mut()).is_pending());

    gates[1..].iter().rev().for_each(Gate::open);
    assert_eq!(poll_once(race.as_mut()), Poll::Ready(1));
    assert_eq!(log.polls("2") + log.polls("3"), 2);
    assert_eq!(
        log.story(),
        ["1 finished", "0 dropped", "2 dropped", "3 dropped"]
    );
}

#[tokio::test(start_paused = true)]
async fn dynamic_race_ok_first_success_wins_past_earlier_failures() {
    let start = Instant::now();
    let log = journal(start);

    // `check` fails on odd numbers: 1 fails at 10 ms, then 2 succeeds at 20 ms.
    let result = gather!(policy = race_ok;
        for n in [5_u64, 1, 2, 3, 4] => log.probe(name(n), check(n))
    );
    log.mark("returned");

    assert_eq!(result, Ok(2));
    assert_eq!(start.elapsed(), Duration::from_millis(20));
    assert_eq!(
        log.story(),
        [
            "1 finished at 10ms",
            "2 finished at 20ms",
            "5 dropped at 20ms",
            "3 dropped at 20ms",
            "4 dropped at 20ms",
            "returned at 20ms",
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn dynamic_race_ok_when_every_branch_fails_gives_every_failure_in_input_order() {
    let start = Instant::now();
    let result = gather!(policy = race_ok; for n in [5, 1, 3] => check(n));

    assert_eq!(start.elapsed(), Duration::from_millis(50));
    let Err(Error::Failures { errors, .. }) = result else {
        panic!("expected Error::Failures, got {result:?}");
    };
    let errors: Vec<_> = errors
        .iter()
        .map(|(b, e)| (b.index(), b.name(), e.as_str()))
        .collect();
    assert_eq!(
        errors,
        [
            (0, "check(n)", "5 is odd"),
            (1, "check(n)", "1 is odd"),
            (2, "check(n)", "3 is odd"),
        ]
    );
}

// ---- timeout -------------------------------------------------------------------------------

const DEADLINE: Duration = Duration::from_millis(250);

#[tokio::test(start_paused = true)]
async fn dynamic_cancel_timeout_drops_and_names_every_unfinished_branch() {
    let start = Instant::now();
    let log = journal(start);

    let result = gather!(timeout = DEADLINE;
        for i in 0..5_u64 => log.probe(name(i), after(i * 100, Ok::<u64, &str>(i)))
    );
    log.mark("returned");

    assert_eq!(start.elapsed(), DEADLINE);
    let Err(Error::TimedOut { pending, .. }) = result else {
        panic!("expected Error::TimedOut, got {result:?}");
    };
    assert_eq!(indices(&pending), [3, 4]);
    assert_eq!(
        pending[0].name(),
        r#"log.probe(name(i), after(i * 100, Ok::<u64, &str>(i)))"#
    );
    assert_eq!(
        log.story(),
        [
            "0 finished at 0ns",
            "1 finished at 100ms",
            "2 finished at 200ms",
            "3 dropped at 250ms",
            "4 dropped at 250ms",
            "returned at 250ms",
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn dynamic_finish_timeout_names_the_unfinished_branches_after_earlier_failures() {
    let start = Instant::now();
    let in_flight = InFlight::new();

    let result = gather!(policy = finish, timeout = DEADLINE;
        for n in [20, 21, 30, 40, 50] => in_flight.track(check(n))
    );

    // 20 ends at 200 ms; 21 fails at 210; 30 and up are still running at 250.
    assert_eq!(start.elapsed(), DEADLINE);
    let Err(Error::TimedOut { pending, .. }) = result else {
        panic!("expected Error::TimedOut, got {result:?}");
    };
    assert_eq!(indices(&pending), [2, 3, 4]);
    assert_eq!((in_flight.now(), in_flight.started()), (0, 5));

    let in_time = gather!(policy = finish, timeout = DEADLINE; for n in [2, 4] => check(n));
    assert_eq!(in_time, Ok(vec![2, 4]));
}

#[tokio::test(start_paused = true)]
async fn dynamic_settle_timeout_keeps_what_finished_and_gives_none_for_the_rest() {
    let start = Instant::now();
    let log = journal(start);

    let outcomes: Vec<Option<u64>> = gather!(policy = settle, timeout = DEADLINE;
        for ms in [300_u64, 100, 1_000, 200] => log.probe(name(ms), after(ms, ms))
    );
    log.mark("returned");

    assert_eq!(outcomes, [None, Some(100), None, Some(200)]);
    assert_eq!(start.elapsed(), DEADLINE);
    assert_eq!(
        log.story(),
        [
            "100 finished at 100ms",
            "200 finished at 200ms",
            "300 dropped at 250ms",
            "1000 dropped at 250ms",
            "returned at 250ms",
        ]
    );

    let in_time = gather!(policy = settle, timeout = DEADLINE; for ms in [20, 10] => after(ms, ms));
    assert_eq!(in_time, [Some(20), Some(10)]);
}

#[tokio::test(start_paused = true)]
async fn dynamic_race_timeout_gives_none_and_drops_every_branch() {
    let start = Instant::now();
    let in_flight = InFlight::new();

    let winner: Option<u64> = gather!(policy = race, timeout = DEADLINE;
        for ms in [300_u64, 400, 500] => in_flight.track(after(ms, ms))
    );
    assert_eq!(winner, None);
    assert_eq!(start.elapsed(), DEADLINE);
    assert_eq!((in_flight.now(), in_flight.started()), (0, 3));

    let winner = gather!(policy = race, timeout = DEADLINE;
        for ms in [300_u64, 40, 500] => in_flight.track(after(ms, ms))
    );
    assert_eq!(winner, Some(40));
    assert_eq!(start.elapsed(), DEADLINE + Duration::from_millis(40));
    assert_eq!(in_flight.now(), 0);
}

#[tokio::test(start_paused = true)]
async fn dynamic_race_ok_timeout_names_only_the_branches_still_running() {
    let start = Instant::now();
    let result = gather!(policy = race_ok, timeout = DEADLINE;
        for n in [1_u64, 30, 3, 50] => check(n)
    );
    assert_eq!(start.elapsed(), DEADLINE);
    let Err(Error::TimedOut { pending, .. }) = result else {
        panic!("expected Error::TimedOut, got {result:?}");
    };
    assert_eq!(indices(&pending), [1, 3]);
}

// ---- limit ---------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn dynamic_settle_with_limit_runs_at_most_n_at_once_in_input_order() {
    let start = Instant::now();
    let log = journal(start);
    let in_flight = InFlight::new();

    let outcomes = gather!(policy = settle, limit = 3;
        for i in 0..10_u64 => in_flight.track(log.probe(name(i), after(10, i * i)))
    );

    assert_eq!(outcomes, (0..10).map(|i| i * i).collect::<Vec<_>>());
    assert_eq!(start.elapsed(), Duration::from_millis(40));
    assert_eq!(in_flight.peak(), 3);
    assert_eq!(in_flight.started(), 10);
    let expected: Vec<String> = (0..10).map(|i: u64| name(i)).collect();
    assert_eq!(log.started(), expected);
    // Started three by three, every 10 ms.
    let mut first_poll_at = vec![None; 10];
    for e in log.entries() {
        if e.event == Event::Polled {
            let i: usize = e.who.parse().expect("a branch index");
            first_poll_at[i].get_or_insert(e.at.expect("a clock").as_millis());
        }
    }
    assert_eq!(
        first_poll_at,
        [0, 0, 0, 10, 10, 10, 20, 20, 20, 30].map(Some)
    );
}

#[tokio::test(start_paused = true)]
async fn dynamic_peak_concurrency_equals_limit_under_every_policy() {
    for limit in [1, 2, 5] {
        let in_flight = InFlight::new();
        let r = gather!(policy = cancel, limit = limit;
            for ms in [50_u64, 10, 30, 20, 40, 10, 10] => in_flight.track(after(ms, Ok::<u64, ()>(ms)))
        );
        assert_eq!(r, Ok(vec![50, 10, 30, 20, 40, 10, 10]));
        assert_eq!(
            (in_flight.peak(), in_flight.started()),
            (limit, 7),
            "cancel"
        );

        let in_flight = InFlight::new();
        let r = gather!(policy = finish, limit = limit;
            for ms in [50_u64, 10, 30, 20, 40, 10, 10] => in_flight.track(after(ms, Ok::<u64, ()>(ms)))
        );
        assert_eq!(r, Ok(vec![50, 10, 30, 20, 40, 10, 10]));
        assert_eq!(
            (in_flight.peak(), in_flight.started()),
            (limit, 7),
            "finish"
        );

        let in_flight = InFlight::new();
        let r = gather!(policy = race_ok, limit = limit;
            for ms in [50_u64, 10, 30, 20, 40, 10, 10] => in_flight.track(after(ms, Err::<(), u64>(ms)))
        );
        assert!(matches!(r, Err(Error::Failures { ref errors, .. }) if errors.len() == 7));
        assert_eq!(
            (in_flight.peak(), in_flight.started()),
            (limit, 7),
            "race_ok"
        );
    }
}

#[test]
fn dynamic_body_is_called_lazily_when_each_branch_starts_under_limit() {
    let calls = Cell::new(0);
    let gates: Vec<Gate> = (0..5).map(|_| Gate::new()).collect();
    let mut gather = pin!(async {
        gather!(policy = settle, limit = 2;
            for i in 0..5_usize => {
                calls.set(calls.get() + 1);
                let gate = wait(&gates, i);
                async move { gate.await; i }
            }
        )
    });

    assert!(poll_once(gather.as_mut()).is_pending());
    assert_eq!(calls.get(), 2);
    gates[0].open();
    assert!(poll_once(gather.as_mut()).is_pending());
    assert_eq!(calls.get(), 3);
    // A branch that has not started has not been made: opening its gate changes nothing.
    gates[4].open();
    assert!(poll_once(gather.as_mut()).is_pending());
    assert_eq!(calls.get(), 3);
    gates[1].open();
    gates[2].open();
    gates[3].open();
    assert_eq!(poll_once(gather.as_mut()), Poll::Ready(vec![0, 1, 2, 3, 4]));
    assert_eq!(calls.get(), 5);
}

#[tokio::test(start_paused = true)]
async fn dynamic_race_ok_with_limit_over_an_endless_iterator_stops_at_the_first_success() {
    let start = Instant::now();
    let calls = Cell::new(0_u32);
    let in_flight = InFlight::new();

    // Every item fails after 10 ms but 7: three by three, 6, 7 and 8 run from 20 to 30 ms.
    let result = gather!(policy = race_ok, limit = 3;
        for i in 0_u64.. => {
            calls.set(calls.get() + 1);
            in_flight.track(async move {
                sleep(Duration::from_millis(10)).await;
                if i == 7 { Ok(i) } else { Err(i) }
            })
        }
    );

    assert_eq!(result, Ok(7));
    assert_eq!(start.elapsed(), Duration::from_millis(30));
    assert_eq!(calls.get(), 9);
    assert_eq!(in_flight.peak(), 3);
    assert_eq!(in_flight.now(), 0);
}

#[tokio::test(start_paused = true)]
async fn dynamic_race_with_limit_over_an_endless_iterator_returns_the_first_outcome() {
    let start = Instant::now();
    let calls = Cell::new(0_u64);
    let winner = gather!(policy = race, limit = 2;
        for i in 1_u64.. => {
            calls.set(calls.get() + 1);
            after(100 / i, i)
        }
    );
    assert_eq!(winner, 2);
    assert_eq!(start.elapsed(), Duration::from_millis(50));
    assert_eq!(calls.get(), 2);
}

#[tokio::test(start_paused = true)]
async fn dynamic_race_ok_with_limit_and_timeout_names_only_the_started_branches() {
    let start = Instant::now();
    let result = gather!(policy = race_ok, limit = 2, timeout = Duration::from_millis(35);
        for i in 0_u64.. => after(10 * (i + 1), Err::<(), u64>(i))
    );
    // 0 fails at 10 and 2 starts (to end at 40); 1 fails at 20 and 3 starts (to end at 60).
    assert_eq!(start.elapsed(), Duration::from_millis(35));
    let Err(Error::TimedOut { pending, .. }) = result else {
        panic!("expected Error::TimedOut, got {result:?}");
    };
    assert_eq!(indices(&pending), [2, 3]);
}

#[tokio::test(start_paused = true)]
async fn dynamic_cancel_with_limit_names_only_the_started_branches_as_cancelled() {
    let start = Instant::now();
    let calls = Cell::new(0);
    let result = gather!(limit = 3;
        for i in 0..10_u64 => {
            calls.set(calls.get() + 1);
            after(10 * (i + 1), if i == 1 { Err(i) } else { Ok(i) })
        }
    );
    assert_eq!(start.elapsed(), Duration::from_millis(20));
    assert_eq!(calls.get(), 4);
    let Err(Error::Failed {
        branch, cancelled, ..
    }) = result
    else {
        panic!("expected Error::Failed, got {result:?}");
    };
    assert_eq!(branch.index(), 1);
    assert_eq!(indices(&cancelled), [2, 3]);
}

#[test]
#[should_panic(expected = "`limit`")]
fn dynamic_limit_of_zero_at_run_time_panics_naming_limit() {
    let n = 0;
    block_on(async {
        let _ = gather!(policy = settle, limit = n; for i in 0..3 => ready(i));
    });
}

// ---- scale and wakes -----------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn dynamic_an_error_at_the_last_of_100_items_returns_at_once() {
    let start = Instant::now();
    let in_flight = InFlight::new();

    let result = gather!(
        for i in 0..100_u64 => in_flight.track(async move {
            if i == 99 {
                return Err(format!("{i} failed"));
            }
            sleep(Duration::from_secs(10)).await;
            Ok(i)
        })
    );

    // Not a moment later than the failure: the other 99 would take 10 s.
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!((in_flight.now(), in_flight.started()), (0, 100));
    let Err(Error::Failed {
        branch,
        error,
        cancelled,
        ..
    }) = result
    else {
        panic!("expected Error::Failed, got {result:?}");
    };
    assert_eq!((branch.index(), error.as_str()), (99, "99 failed"));
    assert_eq!(indices(&cancelled), (0..99).collect::<Vec<_>>());
}

#[tokio::test(start_paused = true)]
async fn dynamic_an_error_at_item_99_while_99_others_are_pending_returns_at_once() {
    let start = Instant::now();
    let in_flight = InFlight::new();

    let result = gather!(
        for i in 0..100_u64 => in_flight.track(async move {
            if i == 99 {
                sleep(Duration::from_millis(100)).await;
                return Err(i);
            }
            sleep(Duration::from_secs(10)).await;
            Ok(i)
        })
    );

    assert_eq!(start.elapsed(), Duration::from_millis(100));
    assert_eq!((in_flight.now(), in_flight.started()), (0, 100));
    let Err(Error::Failed {
        branch,
        error,
        cancelled,
        ..
    }) = result
    else {
        panic!("expected Error::Failed, got {result:?}");
    };
    assert_eq!((branch.index(), error), (99, 99));
    assert_eq!(indices(&cancelled), (0..99).collect::<Vec<_>>());
}

#[tokio::test(start_paused = true)]
async fn dynamic_1000_branches_give_every_output_in_input_order() {
    let start = Instant::now();
    let log = Journal::new();

    // The last item finishes first.
    let outputs = gather!(
        for i in 0..1000_u64 => log.probe(name(i), after(1000 - i, Ok::<u64, ()>(i)))
    );

    assert_eq!(outputs, Ok((0..1000).collect::<Vec<_>>()));
    assert_eq!(start.elapsed(), Duration::from_millis(1000));
    // One wake each, when its sleep ends: 1 + 1 polls per branch.
    let mut polls = vec![0; 1000];
    for e in log.entries() {
        if e.event == Event::Polled {
            polls[e.who.parse::<usize>().expect("a branch index")] += 1;
        }
    }
    assert!(polls.iter().all(|&p| p == 2), "{polls:?}");

    let settled = gather!(policy = settle; for i in 0..1000_u64 => after(1000 - i, i));
    assert_eq!(settled, (0..1000).collect::<Vec<_>>());
}

#[tokio::test]
async fn dynamic_ready_tokio_leaves_past_the_coop_budget_are_not_polled_again_and_again() {
    // Tokio lets a task see 128 ready resources per poll; past that, a resource polled only
    // wakes itself. The gather stops at the first branch found pending that way, and leaves
    // the rest for its next poll, rather than polling, and queueing again, every branch still
    // to go at each of its polls (about n * n / 256 polls in all).
    const N: usize = 1000;
    let log = Journal::new();
    let receivers: Vec<_> = (0..N)
        .map(|i| {
            let (tx, rx) = tokio::sync::oneshot::channel();
            tx.send(i).expect("the receiver is alive");
            rx
        })
        .collect();

    let outputs = gather!(
        policy = settle;
        for (i, rx) in receivers.into_iter().enumerate() => log.probe(name(i), rx)
    );

    assert_eq!(
        outputs.into_iter().map(Result::unwrap).collect::<Vec<_>>(),
        (0..N).collect::<Vec<_>>()
    );
    // Each poll of the gather sees at most 128 ready branches, and polls one more, which is
    // pending past the budget and woken by tokio: at most one extra poll per 128 branches.
    let polls: Vec<usize> = (0..N).map(|i| log.polls(&name(i))).collect();
    assert!(polls.iter().all(|&p| p <= 2), "{polls:?}");
    let total: usize = polls.iter().sum();
    assert!(total <= N + N / 128 + 1, "{total} polls for {N} branches");
}

#[test]
fn dynamic_a_waker_left_by_an_ended_branch_costs_its_slots_next_branch_one_poll_at_most() {
    // Under `limit = 1`, branch 1 runs in the slot branch 0 ended in, with the same waker.
    let log = Journal::new();
    let gate = Gate::new();
    let kept: Cell<Option<std::task::Waker>> = Cell::new(None);
    let (kept_ref, gate_ref) = (&kept, &gate);
    let mut gather = pin!(async {
        gather!(policy = settle, limit = 1; for i in 0..2_usize => log.probe(name(i), async move {
            if i == 0 {
                // Keeps its waker, and ends at once.
                std::future::poll_fn(|cx| {
                    kept_ref.set(Some(cx.waker().clone()));
                    Poll::Ready(0)
                })
                .await
            } else {
                gate_ref.wait().await;
                1
            }
        }))
    });
    assert!(poll_once(gather.as_mut()).is_pending());
    assert_eq!((log.polls("0"), log.polls("1")), (1, 1));

    // The old waker wakes the slot: branch 1 is polled once more, and stays pending.
    kept.take().expect("branch 0 kept its waker").wake();
    assert!(poll_once(gather.as_mut()).is_pending());
    assert_eq!(log.polls("1"), 2);
    assert!(poll_once(gather.as_mut()).is_pending());
    assert_eq!(log.polls("1"), 2, "no wake, no poll");

    // Its own wake is not lost.
    gate.open();
    assert_eq!(poll_once(gather.as_mut()), Poll::Ready(vec![0, 1]));
    assert_eq!(log.polls("1"), 3);
}

#[test]
fn dynamic_a_branch_that_wakes_itself_in_its_first_poll_is_polled_again_at_the_next() {
    // Each branch wakes the waker it was lent, without keeping it, and is pending once: the
    // first branch's waker is made by that wake, before the gather has given its own.
    let log = Journal::new();
    let mut gather = pin!(async {
        gather!(policy = settle;
            for i in 0..3_usize => log.probe(name(i), gather_tests::yields(1))
        )
    });
    let wakes = gather_tests::Wakes::new();
    let waker = wakes.waker();
    let mut cx = std::task::Context::from_waker(&waker);

    assert!(gather.as_mut().poll(&mut cx).is_pending());
    assert_eq!(wakes.count(), 1, "the gather's task is woken");
    assert_eq!(gather.as_mut().poll(&mut cx), Poll::Ready(vec![(); 3]));
    let polls: Vec<usize> = (0..3).map(|i| log.polls(&name(i))).collect();
    assert_eq!(polls, [2, 2, 2]);
}

#[test]
fn dynamic_a_wake_left_by_a_branch_ready_at_once_costs_the_next_one_poll_at_most() {
    // Branch 0 wakes its waker and ends at once; branch 1 starts where it ran, and waits.
    let log = Journal::new();
    let gate = Gate::new();
    let gate_ref = &gate;
    let mut gather = pin!(async {
        gather!(policy = settle; for i in 0..2_usize => log.probe(name(i), async move {
            if i == 0 {
                std::future::poll_fn(|cx| {
                    cx.waker().wake_by_ref();
                    Poll::Ready(0)
                })
                .await
            } else {
                gate_ref.wait().await;
                1
            }
        }))
    });
    let wakes = gather_tests::Wakes::new();
    let waker = wakes.waker();
    let mut cx = std::task::Context::from_waker(&waker);

    assert!(gather.as_mut().poll(&mut cx).is_pending());
    assert!(gather.as_mut().poll(&mut cx).is_pending());
    assert!(log.polls("1") <= 2, "{} polls", log.polls("1"));
    gate.open();
    assert!(wakes.count() >= 2, "the gate's wake reached the gather");
    assert_eq!(gather.as_mut().poll(&mut cx), Poll::Ready(vec![0, 1]));
    assert!(log.polls("1") <= 3, "{} polls", log.polls("1"));
}

#[test]
fn dynamic_a_waker_cloned_on_another_thread_in_a_first_poll_wakes_its_branch() {
    let kept: Cell<Option<std::task::Waker>> = Cell::new(None);
    let kept_ref = &kept;
    let mut gather = pin!(async {
        gather!(policy = settle; for i in 0..20_usize => async move {
            let mut polled = false;
            std::future::poll_fn(|cx| {
                if polled {
                    return Poll::Ready(i);
                }
                polled = true;
                if i == 0 {
                    let waker = cx.waker();
                    kept_ref.set(Some(std::thread::scope(|s| {
                        s.spawn(|| waker.clone()).join().unwrap()
                    })));
                    Poll::Pending
                } else {
                    // The others are ready at their second poll, after a wake of their own.
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
            })
            .await
        })
    });
    let wakes = gather_tests::Wakes::new();
    let waker = wakes.waker();
    let mut cx = std::task::Context::from_waker(&waker);

    assert!(gather.as_mut().poll(&mut cx).is_pending());
    assert!(
        gather.as_mut().poll(&mut cx).is_pending(),
        "branch 0 was not woken"
    );
    let kept = kept.take().expect("branch 0 kept its waker");
    let before = wakes.count();
    std::thread::spawn(move || kept.wake()).join().unwrap();
    assert_eq!(wakes.count(), before + 1);
    assert_eq!(
        gather.as_mut().poll(&mut cx),
        Poll::Ready((0..20).collect::<Vec<_>>())
    );
}

/// A branch ready at its first poll with `Ok(i)`, or `Err(i)` where `fail` says, that counts the
/// branch futures alive, and the most alive at once.
struct Counted<'a> {
    i: usize,
    fail: bool,
    alive: &'a Cell<usize>,
}

impl<'a> Counted<'a> {
    fn new(i: usize, fail: bool, alive: &'a Cell<usize>, peak: &'a Cell<usize>) -> Self {
        alive.set(alive.get() + 1);
        peak.set(peak.get().max(alive.get()));
        Counted { i, fail, alive }
    }
}

impl std::future::Future for Counted<'_> {
    type Output = Result<usize, usize>;

    fn poll(self: std::pin::Pin<&mut Self>, _: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        Poll::Ready(if self.fail { Err(self.i) } else { Ok(self.i) })
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.alive.set(self.alive.get() - 1);
    }
}

#[test]
fn dynamic_branches_ready_at_once_are_dropped_before_the_gather_returns_one_by_one() {
    let (alive, peak) = (Cell::new(0), Cell::new(0));
    let branch = |i: usize, fail_at: usize| Counted::new(i, i == fail_at, &alive, &peak);
    let out = block_on(async { gather!(for i in 0..10_usize => branch(i, usize::MAX)) });
    assert_eq!(out.ok(), Some((0..10).collect::<Vec<_>>()));
    // A finished branch is dropped when the next has been made, and the last before the
    // gather returns: never more than two at once, whatever the count.
    assert_eq!((alive.get(), peak.get()), (0, 2));
    let out = block_on(async { gather!(for i in 0..10_usize => branch(i, 4)) });
    assert!(matches!(out, Err(Error::Failed { ref branch, .. }) if branch.index() == 4));
    assert_eq!(
        alive.get(),
        0,
        "every branch is dropped by the time the gather returns"
    );
    let out = block_on(async { gather!(policy = settle; for i in 0..10_usize => branch(i, 4)) });
    assert_eq!((out.len(), out[4], alive.get()), (10, Err(4), 0));
    let won = block_on(async { gather!(policy = race; for i in 0..10_usize => branch(i, 4)) });
    assert_eq!((won, alive.get()), (Ok(0), 0));
    let won =
        block_on(async { gather!(policy = race_ok; for i in 0..10_usize => branch(i + 1, 1)) });
    assert_eq!((won, alive.get()), (Ok(2), 0));
    assert_eq!(peak.get(), 2);
}

#[test]
fn dynamic_branches_ready_at_once_end_at_the_first_failure_and_start_no_more() {
    let made = Cell::new(0);
    let out = block_on(async {
        gather!(for i in 0..10_usize => {
            made.set(made.get() + 1);
            ready(if i == 5 { Err(i) } else { Ok(i) })
        })
    });
    let Err(Error::Failed {
        branch, cancelled, ..
    }) = out
    else {
        panic!("{out:?}");
    };
    assert_eq!((branch.index(), cancelled.len(), made.get()), (5, 0, 6));
    // An endless iterator: the first outcome wins.
    let won = block_on(async { gather!(policy = race; for i in 0_usize.. => ready(i)) });
    assert_eq!(won, 0);
    let won = block_on(async {
        gather!(policy = race_ok; for i in 0_u32.. => ready(if i < 3 { Err(i) } else { Ok(i) }))
    });
    assert_eq!(won, Ok(3));
}

#[test]
fn dynamic_wakes_of_many_branches_between_two_polls_wake_the_gather_once() {
    let gates: Vec<Gate> = (0..100).map(|_| Gate::new()).collect();
    let mut gather =
        pin!(async { gather!(policy = settle; for i in 0..100_usize => wait(&gates, i)) });
    let wakes = gather_tests::Wakes::new();
    let waker = wakes.waker();
    let mut cx = std::task::Context::from_waker(&waker);

    assert!(gather.as_mut().poll(&mut cx).is_pending());
    gates[..50].iter().for_each(Gate::open);
    assert_eq!(wakes.count(), 1);

    assert!(gather.as_mut().poll(&mut cx).is_pending());
    gates[50..].iter().for_each(Gate::open);
    assert_eq!(wakes.count(), 2);

    assert_eq!(gather.as_mut().poll(&mut cx), Poll::Ready(vec![(); 100]));
}

#[test]
fn dynamic_a_wake_polls_only_the_branch_it_belongs_to() {
    let log = Journal::new();
    let gates: Vec<Gate> = (0..100).map(|_| Gate::new()).collect();
    let mut gather = pin!(async {
        gather!(policy = settle;
            for i in 0..100_usize => log.probe(name(i), wait(&gates, i))
        )
    });
    let polls = || -> Vec<usize> { (0..100).map(|i| log.polls(&name(i))).collect() };

    assert!(poll_once(gather.as_mut()).is_pending());
    assert_eq!(polls(), vec![1; 100]);

    gates[50].open();
    assert!(poll_once(gather.as_mut()).is_pending());
    let mut expected = vec![1; 100];
    expected[50] = 2;
    assert_eq!(polls(), expected);

    gates[7].open();
    gates[93].open();
    assert!(poll_once(gather.as_mut()).is_pending());
    expected[7] = 2;
    expected[93] = 2;
    assert_eq!(polls(), expected);

    // A poll of the gather with no wake polls no branch.
    assert!(poll_once(gather.as_mut()).is_pending());
    assert_eq!(polls(), expected);

    gates.iter().for_each(Gate::open);
    assert_eq!(poll_once(gather.as_mut()), Poll::Ready(vec![(); 100]));
    assert_eq!(polls(), vec![2; 100]);
}

// ---- empty iterators, closures, patterns ---------------------------------------------------

#[test]
fn dynamic_over_an_empty_iterator_gives_an_empty_vec_or_no_failures() {
    block_on(async {
        let none = std::iter::empty::<u8>;
        let cancel = gather!(for i in none() => ready(Ok::<u8, &str>(i)));
        assert_eq!(cancel, Ok(Vec::new()));
        let finish = gather!(policy = finish; for i in none() => ready(Ok::<u8, &str>(i)));
        assert_eq!(finish, Ok(Vec::new()));
        let settle = gather!(policy = settle; for i in none() => ready(i));
        assert_eq!(settle, Vec::<u8>::new());
        let race_ok = gather!(policy = race_ok; for i in none() => ready(Ok::<u8, &str>(i)));
        let Err(Error::Failures { errors, .. }) = race_ok else {
            panic!("expected Error::Failures, got {race_ok:?}");
        };
        assert!(errors.is_empty());
    });
}

#[test]
fn dynamic_race_over_an_empty_iterator_panics_saying_it_has_no_outcome() {
    let caught = std::panic::catch_unwind(|| {
        block_on(async { gather!(policy = race; for i in Vec::<u8>::new() => ready(i)) })
    });
    let payload = caught.expect_err("a race over nothing returned");
    let message = message(&*payload);
    assert!(message.contains("no outcome"), "{message:?}");
}

#[test]
fn dynamic_body_return_belongs_to_the_per_item_closure() {
    let outputs = block_on(async {
        gather!(policy = settle;
            for i in 0..4_u32 => {
                if i % 2 == 0 {
                    return ready(i * 10);
                }
                ready(i)
            }
        )
    });
    assert_eq!(outputs, [0, 1, 20, 3]);
}

#[tokio::test(start_paused = true)]
async fn dynamic_body_infers_the_item_type_like_a_closure() {
    // As in `words.iter().map(|word| word.len())`, the body calls methods on the item, and
    // indexes with it, without naming its type.
    let words = vec!["a".to_owned(), "bb".to_owned(), "ccc".to_owned()];
    let lens = gather!(policy = settle;
        for word in &words => after(10, word.len())
    );
    assert_eq!(lens, [1, 2, 3]);

    let result = gather!(for i in 0..3 => after(10, Ok::<String, ()>(words[i].to_uppercase())));
    assert_eq!(result, Ok(vec!["A".to_owned(), "BB".into(), "CCC".into()]));
}

#[tokio::test(start_paused = true)]
async fn dynamic_patterns_destructure_each_item_and_borrowed_iterators_work() {
    let jobs = vec![("a", 30_u64), ("b", 10), ("c", 20)];
    let result = gather!(
        for &(name, ms) in &jobs => after(ms, Ok::<String, ()>(format!("{name}{ms}")))
    );
    assert_eq!(
        result,
        Ok(vec!["a30".to_owned(), "b10".into(), "c20".into()])
    );
    assert_eq!(jobs.len(), 3);
}

// ---- the caller goes away, a branch panics -------------------------------------------------

#[tokio::test(start_paused = true)]
async fn dynamic_dropping_the_caller_drops_every_branch() {
    let start = Instant::now();
    let log = Journal::new();

    let caller = async {
        gather!(policy = finish;
            for i in 0..6_u64 => log.probe(name(i), async move {
                if i % 2 == 0 {
                    sleep(Duration::from_millis(50)).await;
                    Ok::<u64, ()>(i)
                } else {
                    pending().await
                }
            })
        )
    };
    let elapsed = timeout(Duration::from_millis(200), caller).await;
    let mut story = log.story();

    assert!(elapsed.is_err());
    assert_eq!(start.elapsed(), Duration::from_millis(200));
    story.sort();
    assert_eq!(
        story,
        [
            "0 finished",
            "1 dropped",
            "2 finished",
            "3 dropped",
            "4 finished",
            "5 dropped"
        ]
    );
}

#[test]
fn dynamic_dropping_the_caller_after_one_poll_drops_every_started_branch() {
    let in_flight = InFlight::new();
    let gate = Gate::new();
    {
        let mut caller = pin!(async {
            gather!(policy = settle, limit = 4;
                for _ in 0..10 => in_flight.track(gate.wait())
            )
        });
        assert!(poll_once(caller.as_mut()).is_pending());
        assert_eq!((in_flight.now(), in_flight.started()), (4, 4));
    }
    assert_eq!(in_flight.now(), 0);
}

#[tokio::test(start_paused = true)]
async fn dynamic_a_panicking_branch_drops_its_siblings_then_reaches_the_caller() {
    let start = Instant::now();
    let in_flight = InFlight::new();
    let caller = async {
        gather!(policy = settle;
            for i in 0..5_u64 => in_flight.track(async move {
                sleep(Duration::from_millis(100 * (i + 1))).await;
                if i == 2 {
                    panic!("branch {i} panicked");
                }
                i
            })
        )
    };
    let mut caller = pin!(futures::FutureExt::catch_unwind(AssertUnwindSafe(caller)));
    let caught = caller.as_mut().await;
    let now = in_flight.now();

    let payload = caught.expect_err("the panic did not reach the caller");
    assert_eq!(message(&*payload), "branch 2 panicked");
    assert_eq!(start.elapsed(), Duration::from_millis(300));
    assert_eq!(now, 0);
}

#[tokio::test(start_paused = true)]
async fn dynamic_over_an_endless_iterator_ends_at_the_first_failure() {
    // `0..` says it has `usize::MAX` items left at least: the output is not sized from that.
    let ready = gather!(for i in 0_u64.. => async move { if i == 5 { Err(i) } else { Ok(i) } });
    let Err(Error::Failed { branch, error, .. }) = ready else {
        panic!("expected the failure of branch 5, got {ready:?}");
    };
    assert_eq!((branch.index(), error), (5, 5));

    let limited = gather!(limit = 3; for i in 0_u64.. => async move {
        sleep(Duration::from_millis(10)).await;
        if i == 7 { Err(i) } else { Ok(i) }
    });
    let Err(Error::Failed { branch, error, .. }) = limited else {
        panic!("expected the failure of branch 7, got {limited:?}");
    };
    assert_eq!((branch.index(), error), (7, 7));
}

#[test]
fn dynamic_a_waker_kept_by_branches_ready_at_once_outlives_the_gather_and_still_wakes() {
    // Every branch is ready at its first poll, and the first keeps its waker: the gather ends
    // in that poll, and the waker it kept works (and frees what it holds) after the gather.
    let kept = Cell::new(None);
    let kept_ref = &kept;
    let out = block_on(async {
        gather!(policy = settle; for i in 0..3_usize => std::future::poll_fn(move |cx| {
            if i == 0 {
                kept_ref.set(Some(cx.waker().clone()));
            }
            Poll::Ready(i)
        }))
    });
    assert_eq!(out, [0, 1, 2]);
    let waker = kept.take().expect("branch 0 kept its waker");
    waker.wake_by_ref();
    drop(waker.clone());
    waker.wake();
}

#[test]
fn dynamic_a_branch_that_panics_when_dropped_with_the_caller_leaves_no_other_running() {
    /// Counts its drops, and panics in its own if told to.
    struct Probe<'a> {
        dropped: &'a Cell<usize>,
        panics: bool,
    }
    impl Drop for Probe<'_> {
        fn drop(&mut self) {
            self.dropped.set(self.dropped.get() + 1);
            assert!(!self.panics, "branch dropped with a panic");
        }
    }
    let dropped = Cell::new(0);
    let dropped_ref = &dropped;
    let caught = std::panic::catch_unwind(AssertUnwindSafe(|| {
        let mut caller = Box::pin(async move {
            gather!(policy = settle; for i in 0..4_usize => {
                let probe = Probe { dropped: dropped_ref, panics: i == 1 };
                async move {
                    pending::<()>().await;
                    drop(probe);
                }
            })
        });
        assert!(poll_once(caller.as_mut()).is_pending());
        drop(caller);
    }));
    let payload = caught.expect_err("the branch's panic reaches the caller");
    assert_eq!(message(&*payload), "branch dropped with a panic");
    assert_eq!(dropped.get(), 4, "every branch was dropped");
}

#[tokio::test]
async fn dynamic_a_caller_dropped_while_the_gather_awaits_its_aborted_tasks_drops_its_outcome() {
    // Branch 0's task fails; the gather aborts branch 1's and returns pending until it is gone,
    // holding the error it will end with. The caller gives up then: the error is dropped.
    let mut caller = Box::pin(async {
        gather!(spawn; for i in 0..2_u64 => async move {
            if i == 0 {
                Err(format!("branch {i} failed"))
            } else {
                pending::<Result<u64, String>>().await
            }
        })
    });
    assert!(
        poll_once(caller.as_mut()).is_pending(),
        "the tasks are spawned"
    );
    tokio::task::yield_now().await;
    assert!(
        poll_once(caller.as_mut()).is_pending(),
        "branch 1's task is aborted, not yet gone"
    );
    drop(caller);
}
