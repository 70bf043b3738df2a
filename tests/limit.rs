//! `limit = N` under every policy: at most N branches in flight, the first N start with the
//! gather and the rest start in branch order as others finish; branches that never started
//! are dropped without being named.

use std::future::pending;
use std::panic::AssertUnwindSafe;
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

use futures::executor::block_on;
use gather::{Error, gather};
use gather_tests::{Event, Gate, InFlight, Journal, poll_once};
use tokio::time::{Instant, sleep};

/// Outputs `value` after `ms` milliseconds.
async fn after<T>(ms: u64, value: T) -> T {
    sleep(Duration::from_millis(ms)).await;
    value
}

/// A journal stamped with the time elapsed since `start`, under paused time.
fn journal(start: Instant) -> Journal {
    Journal::with_clock(move || start.elapsed())
}

/// Each probe's name and the time of its first poll, in the order they started.
fn start_times(log: &Journal) -> Vec<(String, u64)> {
    let mut seen: Vec<(String, u64)> = Vec::new();
    for e in log.entries() {
        if e.event == Event::Polled && !seen.iter().any(|(who, _)| *who == e.who) {
            let at = e.at.expect("the journal has a clock");
            seen.push((e.who, at.as_millis() as u64));
        }
    }
    seen
}

fn owned(list: &[(&str, u64)]) -> Vec<(String, u64)> {
    list.iter().map(|(w, t)| ((*w).to_owned(), *t)).collect()
}

/// `(index, name)` of each branch, to compare branch lists.
fn branches(list: &[gather::Branch]) -> Vec<(usize, &str)> {
    list.iter().map(|b| (b.index(), b.name())).collect()
}

#[tokio::test(start_paused = true)]
async fn limit_caps_peak_concurrency_at_exactly_n_and_starts_branches_in_order() {
    let start = Instant::now();
    let log = journal(start);
    let in_flight = InFlight::new();
    let branch = |who: &'static str, ms: u64| {
        in_flight.track(log.probe(who, after(ms, Ok::<&str, &str>(who))))
    };

    let result = gather!(limit = 2;
        branch("a", 100),
        branch("b", 300),
        branch("c", 200),
        branch("d", 100),
        branch("e", 50),
    );

    assert_eq!(result, Ok(("a", "b", "c", "d", "e")));
    // a and b at 0; a ends at 100 and c starts; b and c end at 300, d and e start; e ends at
    // 350, d at 400.
    assert_eq!(start.elapsed(), Duration::from_millis(400));
    assert_eq!(
        start_times(&log),
        owned(&[("a", 0), ("b", 0), ("c", 100), ("d", 300), ("e", 300)])
    );
    assert_eq!(in_flight.peak(), 2);
    assert_eq!((in_flight.now(), in_flight.started()), (0, 5));
}

#[tokio::test(start_paused = true)]
async fn limit_one_runs_the_branches_one_after_another() {
    let start = Instant::now();
    let in_flight = InFlight::new();

    let outcomes = gather!(policy = settle, limit = 1;
        in_flight.track(after(30, 'a')),
        in_flight.track(after(10, 'b')),
        in_flight.track(after(20, 'c')),
    );

    assert_eq!(outcomes, ('a', 'b', 'c'));
    assert_eq!(start.elapsed(), Duration::from_millis(60));
    assert_eq!(in_flight.peak(), 1);
}

#[tokio::test(start_paused = true)]
async fn limit_above_the_branch_count_starts_every_branch_at_once() {
    let start = Instant::now();
    let in_flight = InFlight::new();
    let limit = 10;

    let result = gather!(policy = finish, limit = limit;
        in_flight.track(after(100, Ok::<u8, &str>(1))),
        in_flight.track(after(100, Ok::<u8, &str>(2))),
        in_flight.track(after(100, Ok::<u8, &str>(3))),
    );

    assert_eq!(result, Ok((1, 2, 3)));
    assert_eq!(start.elapsed(), Duration::from_millis(100));
    assert_eq!(in_flight.peak(), 3);
}

#[test]
fn limit_starts_the_first_n_with_the_gather_and_the_next_as_one_finishes() {
    let log = Journal::new();
    let gates = [Gate::new(), Gate::new(), Gate::new(), Gate::new()];
    let mut gather = pin!(async {
        gather!(policy = settle, limit = 2;
            log.probe("0", gates[0].wait()),
            log.probe("1", gates[1].wait()),
            log.probe("2", gates[2].wait()),
            log.probe("3", gates[3].wait()),
        )
    });

    assert!(poll_once(gather.as_mut()).is_pending());
    assert_eq!(log.started(), ["0", "1"]);

    // `1` ends: `2` starts in the same poll, `3` still waits.
    gates[1].open();
    assert!(poll_once(gather.as_mut()).is_pending());
    assert_eq!(log.started(), ["0", "1", "2"]);
    assert_eq!(["0", "1", "2", "3"].map(|b| log.polls(b)), [2, 2, 1, 0]);

    // A gate opened for a branch that has not started changes nothing yet.
    gates[3].open();
    assert!(poll_once(gather.as_mut()).is_pending());
    assert_eq!(log.polls("3"), 0);

    gates[0].open();
    assert!(poll_once(gather.as_mut()).is_pending());
    assert_eq!(log.started(), ["0", "1", "2", "3"]);
    assert!(log.finished("3"));

    gates[2].open();
    assert_eq!(poll_once(gather.as_mut()), Poll::Ready(((), (), (), ())));
}

#[tokio::test(start_paused = true)]
async fn limit_under_cancel_drops_unstarted_branches_without_naming_them() {
    let start = Instant::now();
    let log = journal(start);

    let result = gather!(policy = cancel, limit = 2;
        a = log.probe("a", after(300, Ok::<u8, &str>(1))),
        b = log.probe("b", after(50, Ok::<u8, &str>(2))),
        c = log.probe("c", after(50, Err::<u8, &str>("c failed"))),
        d = log.probe("d", after(10, Ok::<u8, &str>(4))),
        e = log.probe("e", after(10, Ok::<u8, &str>(5))),
    );
    log.mark("returned");

    // b ends at 50 and c starts, to fail at 100: d and e never started.
    assert_eq!(start.elapsed(), Duration::from_millis(100));
    let Err(Error::Failed {
        branch,
        error,
        cancelled,
        ..
    }) = result
    else {
        panic!("expected Error::Failed, got {result:?}");
    };
    assert_eq!((branch.index(), branch.name(), error), (2, "c", "c failed"));
    assert_eq!(branches(&cancelled), [(0, "a")]);
    assert_eq!(log.polls("d") + log.polls("e"), 0);
    assert_eq!(
        log.story(),
        [
            "b finished at 50ms",
            "c finished at 100ms",
            "a dropped at 100ms",
            "d dropped at 100ms",
            "e dropped at 100ms",
            "returned at 100ms",
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn limit_under_finish_runs_every_branch_and_reports_every_failure() {
    let start = Instant::now();
    let in_flight = InFlight::new();

    let result = gather!(policy = finish, limit = 2;
        in_flight.track(after(100, Err::<u8, &str>("first"))),
        in_flight.track(after(100, Ok::<u8, &str>(2))),
        in_flight.track(after(100, Err::<u8, &str>("third"))),
        in_flight.track(after(100, Ok::<u8, &str>(4))),
        in_flight.track(after(100, Err::<u8, &str>("fifth"))),
    );

    assert_eq!(start.elapsed(), Duration::from_millis(300));
    assert_eq!((in_flight.peak(), in_flight.started()), (2, 5));
    let Err(Error::Failures { errors, .. }) = result else {
        panic!("expected Error::Failures, got {result:?}");
    };
    let errors: Vec<_> = errors.iter().map(|(b, e)| (b.index(), *e)).collect();
    assert_eq!(errors, [(0, "first"), (2, "third"), (4, "fifth")]);
}

#[tokio::test(start_paused = true)]
async fn limit_under_settle_gives_every_outcome_in_branch_order() {
    let start = Instant::now();
    let in_flight = InFlight::new();

    let outcomes = gather!(policy = settle, limit = 3;
        in_flight.track(after(40, 0_u8)),
        in_flight.track(after(30, "one")),
        in_flight.track(after(20, Err::<(), &str>("two"))),
        in_flight.track(after(10, 'x')),
        in_flight.track(after(10, 4.5_f32)),
    );

    assert_eq!(outcomes, (0, "one", Err("two"), 'x', 4.5));
    // 0, 1, 2 at 0; 2 ends at 20 and 3 starts; 3 ends at 30 with 1, and 4 starts, to end at 40.
    assert_eq!(start.elapsed(), Duration::from_millis(40));
    assert_eq!(in_flight.peak(), 3);
}

#[tokio::test(start_paused = true)]
async fn limit_under_race_lets_only_started_branches_win() {
    let start = Instant::now();
    let in_flight = InFlight::new();

    let winner = gather!(policy = race, limit = 2;
        in_flight.track(after(100, 'a')),
        in_flight.track(after(150, 'b')),
        in_flight.track(after(1, 'c')),
    );

    assert_eq!(winner, 'a');
    assert_eq!(start.elapsed(), Duration::from_millis(100));
    assert_eq!((in_flight.peak(), in_flight.started()), (2, 2));
}

#[tokio::test(start_paused = true)]
async fn limit_under_race_ok_keeps_at_most_n_in_flight_until_a_success() {
    let start = Instant::now();
    let in_flight = InFlight::new();

    let result = gather!(policy = race_ok, limit = 2;
        in_flight.track(after(10, Err::<u8, &str>("0"))),
        in_flight.track(after(20, Err::<u8, &str>("1"))),
        in_flight.track(after(30, Err::<u8, &str>("2"))),
        in_flight.track(after(30, Ok::<u8, &str>(3))),
        in_flight.track(after(5, Ok::<u8, &str>(4))),
    );

    // 0 fails at 10 and 2 starts; 1 fails at 20 and 3 starts (to end at 50); 2 fails at 40
    // and 4 starts, to win at 45 while 3 is still running.
    assert_eq!(result, Ok(4));
    assert_eq!(start.elapsed(), Duration::from_millis(45));
    assert_eq!((in_flight.peak(), in_flight.started()), (2, 5));
    assert_eq!(in_flight.now(), 0);
}

#[tokio::test(start_paused = true)]
async fn limit_with_timeout_names_only_the_started_branches_as_pending() {
    let start = Instant::now();
    let log = journal(start);

    let result = gather!(policy = finish, limit = 2, timeout = Duration::from_millis(250);
        a = log.probe("a", after(100, Ok::<u8, &str>(1))),
        b = log.probe("b", after(1_000, Ok::<u8, &str>(2))),
        c = log.probe("c", after(1_000, Ok::<u8, &str>(3))),
        d = log.probe("d", after(1, Ok::<u8, &str>(4))),
    );

    assert_eq!(start.elapsed(), Duration::from_millis(250));
    let Err(Error::TimedOut { pending, .. }) = result else {
        panic!("expected Error::TimedOut, got {result:?}");
    };
    assert_eq!(branches(&pending), [(1, "b"), (2, "c")]);
    assert_eq!(log.polls("d"), 0);
    assert!(log.dropped("b") && log.dropped("c") && log.dropped("d"));
}

#[tokio::test(start_paused = true)]
async fn limit_with_settle_and_timeout_gives_none_for_unstarted_branches() {
    let start = Instant::now();
    let outcomes = gather!(policy = settle, limit = 1, timeout = Duration::from_millis(150);
        after(100, 'a'),
        after(100, 'b'),
        after(100, 'c'),
    );
    assert_eq!(outcomes, (Some('a'), None, None));
    assert_eq!(start.elapsed(), Duration::from_millis(150));
}

#[test]
#[should_panic(expected = "`limit`")]
fn limit_of_zero_at_run_time_panics_naming_limit() {
    let n = 0;
    block_on(async {
        let _ = gather!(policy = settle, limit = n; async { 1 }, async { 2 });
    });
}

#[test]
fn limit_of_zero_at_run_time_panics_before_any_branch_runs() {
    let log = Journal::new();
    let zero = || 0_usize;
    let caught = std::panic::catch_unwind(AssertUnwindSafe(|| {
        block_on(async {
            gather!(limit = zero();
                log.probe("a", async { Ok::<u8, &str>(1) }),
                log.probe("b", pending::<Result<u8, &str>>()),
            )
        })
    }));

    let payload = caught.expect_err("a limit of 0 did not panic");
    let message = payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_default();
    assert!(message.contains("`limit`"), "{message:?}");
    assert_eq!(log.polls("a") + log.polls("b"), 0);
}

#[tokio::test(start_paused = true)]
async fn limit_under_cancel_in_a_wide_gather_names_every_running_branch_and_no_other() {
    // 20 branches (each with a waker of its own), 6 at once: 0 to 4 wait for ever, 5 fails
    // at 10, and 6 to 19 never start.
    let result = gather!(policy = cancel, limit = 6;
        pending::<Result<u8, &str>>(),
        pending::<Result<u8, &str>>(),
        pending::<Result<u8, &str>>(),
        pending::<Result<u8, &str>>(),
        pending::<Result<u8, &str>>(),
        after(10, Err::<u8, &str>("5 failed")),
        pending::<Result<u8, &str>>(),
        pending::<Result<u8, &str>>(),
        pending::<Result<u8, &str>>(),
        pending::<Result<u8, &str>>(),
        pending::<Result<u8, &str>>(),
        pending::<Result<u8, &str>>(),
        pending::<Result<u8, &str>>(),
        pending::<Result<u8, &str>>(),
        pending::<Result<u8, &str>>(),
        pending::<Result<u8, &str>>(),
        pending::<Result<u8, &str>>(),
        pending::<Result<u8, &str>>(),
        pending::<Result<u8, &str>>(),
        pending::<Result<u8, &str>>(),
    );
    let Err(Error::Failed {
        branch, cancelled, ..
    }) = result
    else {
        panic!("expected Error::Failed");
    };
    assert_eq!(branch.index(), 5);
    let names: Vec<usize> = cancelled.iter().map(gather::Branch::index).collect();
    assert_eq!(names, [0, 1, 2, 3, 4]);
    // The list was made with room for exactly the running branches.
    assert_eq!(cancelled.capacity(), 5);
}
