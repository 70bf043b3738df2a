//! `timeout = DURATION` under every policy: at the deadline every branch still running is
//! dropped before the gather returns; `cancel`, `finish` and `race_ok` give
//! `Error::TimedOut` naming them, `settle` keeps what finished, `race` gives `None`.

use std::future::pending;
use std::time::Duration;

use gather::{Error, gather};
use gather_tests::Journal;
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

/// `(index, name)` of each branch, to compare branch lists.
fn branches(list: &[gather::Branch]) -> Vec<(usize, &str)> {
    list.iter().map(|b| (b.index(), b.name())).collect()
}

const DEADLINE: Duration = Duration::from_millis(200);

#[tokio::test(start_paused = true)]
async fn cancel_timeout_drops_and_names_every_unfinished_branch() {
    let start = Instant::now();
    let log = journal(start);

    let result = gather!(timeout = DEADLINE;
        done = log.probe("done", after(50, Ok::<u8, &str>(1))),
        slow = log.probe("slow", after(500, Ok::<u8, &str>(2))),
        forever = log.probe("forever", pending::<Result<u8, &str>>()),
    );
    log.mark("returned");

    assert_eq!(start.elapsed(), DEADLINE);
    let Err(Error::TimedOut { pending, .. }) = result else {
        panic!("expected Error::TimedOut, got {result:?}");
    };
    assert_eq!(branches(&pending), [(1, "slow"), (2, "forever")]);
    assert_eq!(
        log.story(),
        [
            "done finished at 50ms",
            "slow dropped at 200ms",
            "forever dropped at 200ms",
            "returned at 200ms",
        ]
    );

    // Nothing that was cancelled comes back to life later.
    sleep(Duration::from_secs(1)).await;
    assert_eq!(log.story().len(), 4);
}

#[tokio::test(start_paused = true)]
async fn cancel_timeout_returns_the_values_when_every_branch_ends_in_time() {
    let start = Instant::now();
    let result = gather!(policy = cancel, timeout = DEADLINE;
        after(150, Ok::<u8, &str>(1)),
        after(50, Ok::<&str, &str>("two")),
    );
    // The plain tuple, as without `timeout`: only `settle` and `race` wrap outputs in `Option`.
    assert_eq!(result, Ok((1, "two")));
    assert_eq!(start.elapsed(), Duration::from_millis(150));
}

#[tokio::test(start_paused = true)]
async fn cancel_timeout_a_failure_before_the_deadline_is_still_a_failure() {
    let start = Instant::now();
    let log = Journal::new();

    let result = gather!(timeout = DEADLINE;
        log.probe("slow", after(500, Ok::<u8, &str>(1))),
        failing = log.probe("failing", after(100, Err::<u8, &str>("failed"))),
    );

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
    assert_eq!((branch.name(), error), ("failing", "failed"));
    assert_eq!(cancelled.len(), 1);
    assert!(log.dropped("slow"));
}

#[tokio::test(start_paused = true)]
async fn finish_timeout_drops_and_names_every_unfinished_branch() {
    let start = Instant::now();
    let log = journal(start);

    // A failure before the deadline does not end a `finish` gather; the deadline does.
    let result = gather!(policy = finish, timeout = DEADLINE;
        slow = log.probe("slow", after(500, Ok::<u8, &str>(1))),
        failed = log.probe("failed", after(50, Err::<u8, &str>("failed"))),
        done = log.probe("done", after(100, Ok::<u8, &str>(3))),
        forever = log.probe("forever", pending::<Result<u8, &str>>()),
    );
    log.mark("returned");

    assert_eq!(start.elapsed(), DEADLINE);
    let Err(Error::TimedOut { pending, .. }) = result else {
        panic!("expected Error::TimedOut, got {result:?}");
    };
    assert_eq!(branches(&pending), [(0, "slow"), (3, "forever")]);
    assert_eq!(
        log.story(),
        [
            "failed finished at 50ms",
            "done finished at 100ms",
            "slow dropped at 200ms",
            "forever dropped at 200ms",
            "returned at 200ms",
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn finish_timeout_reports_every_failure_when_every_branch_ends_in_time() {
    let start = Instant::now();
    let result = gather!(policy = finish, timeout = DEADLINE;
        after(150, Err::<u8, &str>("first")),
        after(50, Ok::<u8, &str>(2)),
        after(100, Err::<u8, &str>("third")),
    );
    assert_eq!(start.elapsed(), Duration::from_millis(150));
    let Err(Error::Failures { errors, .. }) = result else {
        panic!("expected Error::Failures, got {result:?}");
    };
    let errors: Vec<_> = errors.iter().map(|(b, e)| (b.index(), *e)).collect();
    assert_eq!(errors, [(0, "first"), (2, "third")]);
}

#[tokio::test(start_paused = true)]
async fn finish_timeout_returns_the_values_when_every_branch_ends_in_time() {
    let start = Instant::now();
    let result = gather!(policy = finish, timeout = DEADLINE;
        after(50, Ok::<u8, &str>(1)),
        after(150, Ok::<char, &str>('b')),
    );
    assert_eq!(start.elapsed(), Duration::from_millis(150));
    assert_eq!(result, Ok((1, 'b')));
}

#[tokio::test(start_paused = true)]
async fn settle_timeout_keeps_what_finished_and_gives_none_for_the_rest() {
    let start = Instant::now();
    let log = journal(start);

    // The shape, checked by the compiler: every output in an `Option`.
    type Outcomes = (
        Option<u8>,
        Option<Result<&'static str, &'static str>>,
        Option<()>,
        Option<char>,
    );
    let outcomes: Outcomes = gather!(
        policy = settle, timeout = DEADLINE;
        log.probe("slow", after(500, 1_u8)),
        log.probe("failed", after(50, Err::<&str, &str>("failed"))),
        log.probe("forever", pending::<()>()),
        log.probe("done", after(199, 'd')),
    );
    log.mark("returned");

    assert_eq!(start.elapsed(), DEADLINE);
    assert_eq!(outcomes, (None, Some(Err("failed")), None, Some('d')));
    assert_eq!(
        log.story(),
        [
            "failed finished at 50ms",
            "done finished at 199ms",
            "slow dropped at 200ms",
            "forever dropped at 200ms",
            "returned at 200ms",
        ]
    );
}

/// From 16 branches on, a branch's stage and output share one tag: one that finished in time
/// gives its output, one that waited with a waker of its own (or was never woken) gives
/// `None`, and every branch still running is dropped at the deadline.
#[tokio::test(start_paused = true)]
async fn settle_timeout_at_twenty_branches_keeps_what_finished_and_drops_the_rest() {
    let start = Instant::now();
    let log = journal(start);
    let outcomes = gather!(policy = settle, timeout = DEADLINE;
        after(0, 0_u8), log.probe("b1", pending::<u8>()), after(50, 2_u8), after(300, 3_u8),
        after(0, 4_u8), log.probe("b5", pending::<u8>()), after(50, 6_u8), after(300, 7_u8),
        after(0, 8_u8), log.probe("b9", pending::<u8>()), after(50, 10_u8), after(300, 11_u8),
        after(0, 12_u8), log.probe("b13", pending::<u8>()), after(50, 14_u8), after(300, 15_u8),
        after(0, 16_u8), log.probe("b17", pending::<u8>()), after(199, 18_u8), after(300, 19_u8),
    );
    log.mark("returned");

    assert_eq!(start.elapsed(), DEADLINE);
    let outcomes = [
        outcomes.0,
        outcomes.1,
        outcomes.2,
        outcomes.3,
        outcomes.4,
        outcomes.5,
        outcomes.6,
        outcomes.7,
        outcomes.8,
        outcomes.9,
        outcomes.10,
        outcomes.11,
        outcomes.12,
        outcomes.13,
        outcomes.14,
        outcomes.15,
        outcomes.16,
        outcomes.17,
        outcomes.18,
        outcomes.19,
    ];
    let expected: Vec<Option<u8>> = (0..20_u8)
        .map(|i| (i % 4 == 0 || i % 4 == 2).then_some(i))
        .collect();
    assert_eq!(outcomes.to_vec(), expected);
    assert_eq!(
        log.story(),
        [
            "b1 dropped at 200ms",
            "b5 dropped at 200ms",
            "b9 dropped at 200ms",
            "b13 dropped at 200ms",
            "b17 dropped at 200ms",
            "returned at 200ms",
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn settle_timeout_gives_every_output_in_some_when_every_branch_ends_in_time() {
    let start = Instant::now();
    let outcomes = gather!(policy = settle, timeout = DEADLINE;
        after(150, 1_u8),
        after(50, "two"),
    );
    assert_eq!(outcomes, (Some(1), Some("two")));
    assert_eq!(start.elapsed(), Duration::from_millis(150));
}

#[tokio::test(start_paused = true)]
async fn race_timeout_gives_none_and_drops_every_branch_at_the_deadline() {
    let start = Instant::now();
    let log = journal(start);

    let winner: Option<u8> = gather!(policy = race, timeout = DEADLINE;
        log.probe("slow", after(500, 1_u8)),
        log.probe("forever", pending::<u8>()),
    );
    log.mark("returned");

    assert_eq!(winner, None);
    assert_eq!(start.elapsed(), DEADLINE);
    assert_eq!(
        log.story(),
        [
            "slow dropped at 200ms",
            "forever dropped at 200ms",
            "returned at 200ms",
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn race_timeout_gives_the_first_outcome_in_some_before_the_deadline() {
    let start = Instant::now();
    let log = Journal::new();

    let winner = gather!(policy = race, timeout = DEADLINE;
        log.probe("slow", after(500, 1_u8)),
        log.probe("fast", after(120, 2_u8)),
    );

    assert_eq!(winner, Some(2));
    assert_eq!(start.elapsed(), Duration::from_millis(120));
    assert!(log.dropped("slow"));
}

#[tokio::test(start_paused = true)]
async fn race_ok_timeout_names_only_the_branches_still_running() {
    let start = Instant::now();
    let log = journal(start);

    let result = gather!(policy = race_ok, timeout = DEADLINE;
        failed = log.probe("failed", after(50, Err::<u8, &str>("failed"))),
        slow = log.probe("slow", after(500, Ok::<u8, &str>(2))),
        forever = log.probe("forever", pending::<Result<u8, &str>>()),
    );
    log.mark("returned");

    assert_eq!(start.elapsed(), DEADLINE);
    let Err(Error::TimedOut { pending, .. }) = result else {
        panic!("expected Error::TimedOut, got {result:?}");
    };
    assert_eq!(branches(&pending), [(1, "slow"), (2, "forever")]);
    assert_eq!(
        log.story(),
        [
            "failed finished at 50ms",
            "slow dropped at 200ms",
            "forever dropped at 200ms",
            "returned at 200ms",
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn race_ok_timeout_gives_every_failure_when_all_fail_in_time() {
    let start = Instant::now();
    let result = gather!(policy = race_ok, timeout = DEADLINE;
        a = after(150, Err::<u8, &str>("a")),
        b = after(50, Err::<u8, &str>("b")),
    );
    assert_eq!(start.elapsed(), Duration::from_millis(150));
    let Err(Error::Failures { errors, .. }) = result else {
        panic!("expected Error::Failures, got {result:?}");
    };
    let errors: Vec<_> = errors.iter().map(|(b, e)| (b.name(), *e)).collect();
    assert_eq!(errors, [("a", "a"), ("b", "b")]);
}

#[tokio::test(start_paused = true)]
async fn timeout_takes_any_duration_expression_evaluated_at_run_time() {
    let start = Instant::now();
    let ms = 75;
    let result = gather!(timeout = Duration::from_millis(ms);
        after(1_000, Ok::<u8, &str>(1)),
    );
    assert!(matches!(result, Err(Error::TimedOut { .. })));
    assert_eq!(start.elapsed(), Duration::from_millis(75));
}

#[tokio::test(start_paused = true)]
async fn timeout_of_an_inner_gather_does_not_end_the_outer_one() {
    let start = Instant::now();
    let log = Journal::new();

    let result = gather!(policy = finish;
        inner = async {
            let inner = gather!(timeout = Duration::from_millis(100);
                log.probe("inner.slow", after(1_000, Ok::<u8, &str>(1))),
            );
            Ok::<bool, &str>(matches!(inner, Err(Error::TimedOut { .. })))
        },
        outer = log.probe("outer", after(300, Ok::<bool, &str>(true))),
    );

    assert_eq!(result, Ok((true, true)));
    assert_eq!(start.elapsed(), Duration::from_millis(300));
    assert_eq!(log.story(), ["inner.slow dropped", "outer finished"]);
}
