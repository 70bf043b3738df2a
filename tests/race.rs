//! `policy = race`: the first outcome of any kind wins, and `policy = race_ok`: the first
//! success wins. Either way the losers are dropped before the gather returns.

use std::future::pending;
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

use gather::{Error, gather};
use gather_tests::{Gate, Journal, poll_once};
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

#[tokio::test(start_paused = true)]
async fn race_returns_the_first_outcome_and_drops_every_loser_before_returning() {
    let start = Instant::now();
    let log = journal(start);

    let winner: &str = gather!(policy = race;
        log.probe("slow", after(300, "slow")),
        log.probe("fast", after(100, "fast")),
        log.probe("forever", pending::<&str>()),
    );
    log.mark("returned");

    assert_eq!(winner, "fast");
    assert_eq!(start.elapsed(), Duration::from_millis(100));
    assert_eq!(
        log.story(),
        [
            "fast finished at 100ms",
            "slow dropped at 100ms",
            "forever dropped at 100ms",
            "returned at 100ms",
        ]
    );

    // Nothing that lost comes back to life later.
    sleep(Duration::from_secs(1)).await;
    assert_eq!(log.story().len(), 4);
}

#[tokio::test(start_paused = true)]
async fn race_an_error_that_comes_first_wins_like_any_other_outcome() {
    let start = Instant::now();
    let log = Journal::new();

    let winner = gather!(policy = race;
        log.probe("ok", after(200, Ok::<u8, &str>(1))),
        log.probe("err", after(50, Err::<u8, &str>("failed first"))),
    );

    assert_eq!(winner, Err("failed first"));
    assert_eq!(start.elapsed(), Duration::from_millis(50));
    assert!(log.dropped("ok"));
}

#[test]
fn race_lowest_index_wins_when_several_finish_in_the_same_poll() {
    let log = Journal::new();
    let gates = [Gate::new(), Gate::new(), Gate::new(), Gate::new()];
    let mut race = pin!(async {
        gather!(policy = race;
            log.probe("0", async { gates[0].wait().await; 0 }),
            log.probe("1", async { gates[1].wait().await; 1 }),
            log.probe("2", async { gates[2].wait().await; 2 }),
            log.probe("3", async { gates[3].wait().await; 3 }),
        )
    });
    assert!(poll_once(race.as_mut()).is_pending());

    // 3, 2 and 1 can all finish; opened in reverse order before the next poll.
    gates[1..].iter().rev().for_each(Gate::open);
    assert_eq!(poll_once(race.as_mut()), Poll::Ready(1));

    // The later ready branches were not polled again: dropped, not finished.
    assert_eq!(log.polls("2"), 1);
    assert_eq!(log.polls("3"), 1);
    assert_eq!(
        log.story(),
        ["1 finished", "0 dropped", "2 dropped", "3 dropped"]
    );
}

#[tokio::test(start_paused = true)]
async fn race_lowest_index_wins_among_outcomes_at_the_same_instant() {
    let start = Instant::now();
    let winner = gather!(policy = race;
        after(300, 'a'),
        after(100, 'b'),
        after(100, 'c'),
        after(100, 'd'),
    );
    assert_eq!(winner, 'b');
    assert_eq!(start.elapsed(), Duration::from_millis(100));
}

#[tokio::test(start_paused = true)]
async fn race_with_one_branch_returns_its_output() {
    let start = Instant::now();
    let only: u32 = gather!(policy = race; after(70, 7_u32));
    assert_eq!(only, 7);
    assert_eq!(start.elapsed(), Duration::from_millis(70));
}

#[tokio::test(start_paused = true)]
async fn race_ok_first_success_wins_past_earlier_failures() {
    let start = Instant::now();
    let log = journal(start);

    let result = gather!(policy = race_ok;
        log.probe("a", after(50, Err::<&str, String>("a failed".into()))),
        log.probe("b", after(100, Err::<&str, String>("b failed".into()))),
        log.probe("c", after(200, Ok::<&str, String>("c"))),
        log.probe("d", after(300, Ok::<&str, String>("d"))),
        log.probe("e", pending::<Result<&str, String>>()),
    );
    log.mark("returned");

    assert_eq!(result, Ok("c"));
    assert_eq!(start.elapsed(), Duration::from_millis(200));
    assert_eq!(
        log.story(),
        [
            "a finished at 50ms",
            "b finished at 100ms",
            "c finished at 200ms",
            "d dropped at 200ms",
            "e dropped at 200ms",
            "returned at 200ms",
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn race_ok_when_every_branch_fails_gives_every_failure_in_branch_order() {
    let start = Instant::now();
    let log = Journal::new();

    let result = gather!(policy = race_ok;
        first = log.probe("first", after(300, Err::<u8, &str>("first failed"))),
        second = log.probe("second", after(100, Err::<u8, &str>("second failed"))),
        third = log.probe("third", after(200, Err::<u8, &str>("third failed"))),
    );

    assert_eq!(start.elapsed(), Duration::from_millis(300));
    assert!(["first", "second", "third"].iter().all(|b| log.finished(b)));
    let Err(Error::Failures { errors, .. }) = result else {
        panic!("expected Error::Failures, got {result:?}");
    };
    let errors: Vec<_> = errors
        .iter()
        .map(|(b, e)| (b.index(), b.name(), *e))
        .collect();
    assert_eq!(
        errors,
        [
            (0, "first", "first failed"),
            (1, "second", "second failed"),
            (2, "third", "third failed"),
        ]
    );
}

#[test]
fn race_ok_lowest_index_success_wins_in_the_same_poll() {
    let log = Journal::new();
    let gates = [Gate::new(), Gate::new(), Gate::new()];
    let mut race = pin!(async {
        gather!(policy = race_ok;
            log.probe("fails", async { gates[0].wait().await; Err::<u8, &str>("no") }),
            log.probe("one", async { gates[1].wait().await; Ok::<u8, &str>(1) }),
            log.probe("two", async { gates[2].wait().await; Ok::<u8, &str>(2) }),
        )
    });
    assert!(poll_once(race.as_mut()).is_pending());

    gates.iter().rev().for_each(Gate::open);
    assert_eq!(poll_once(race.as_mut()), Poll::Ready(Ok(1)));
    assert_eq!(log.polls("two"), 1);
    assert_eq!(
        log.story(),
        ["fails finished", "one finished", "two dropped"]
    );
}

#[tokio::test(start_paused = true)]
async fn race_with_limit_never_starts_a_branch_after_the_winner() {
    let start = Instant::now();
    let log = Journal::new();

    // One at a time: `quick` would win a fair race, but it waits for `first` to end.
    let winner = gather!(policy = race, limit = 1;
        log.probe("first", after(100, "first")),
        log.probe("quick", after(10, "quick")),
    );

    assert_eq!(winner, "first");
    assert_eq!(start.elapsed(), Duration::from_millis(100));
    assert_eq!(log.polls("quick"), 0);
    assert_eq!(log.story(), ["first finished", "quick dropped"]);
}

#[tokio::test(start_paused = true)]
async fn race_ok_with_limit_starts_the_next_branch_as_each_one_fails() {
    let start = Instant::now();
    let log = journal(start);

    let result = gather!(policy = race_ok, limit = 2;
        log.probe("a", after(100, Err::<u8, &str>("a failed"))),
        log.probe("b", after(50, Err::<u8, &str>("b failed"))),
        log.probe("c", after(1_000, Ok::<u8, &str>(3))),
        log.probe("d", after(10, Ok::<u8, &str>(4))),
        log.probe("e", after(10, Ok::<u8, &str>(5))),
    );
    log.mark("returned");

    // b fails at 50 and c starts; a fails at 100 and d starts, to win at 110.
    assert_eq!(result, Ok(4));
    assert_eq!(start.elapsed(), Duration::from_millis(110));
    assert_eq!(log.started(), ["a", "b", "c", "d"]);
    assert_eq!(
        log.story(),
        [
            "b finished at 50ms",
            "a finished at 100ms",
            "d finished at 110ms",
            "c dropped at 110ms",
            "e dropped at 110ms",
            "returned at 110ms",
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn race_ok_with_limit_and_timeout_names_only_the_started_branches_as_pending() {
    let start = Instant::now();
    let log = journal(start);

    let result = gather!(policy = race_ok, timeout = Duration::from_millis(250), limit = 2;
        a = log.probe("a", after(100, Err::<u8, &str>("a failed"))),
        b = log.probe("b", after(50, Err::<u8, &str>("b failed"))),
        c = log.probe("c", after(1_000, Ok::<u8, &str>(3))),
        d = log.probe("d", after(1_000, Ok::<u8, &str>(4))),
        e = log.probe("e", after(10, Ok::<u8, &str>(5))),
    );
    log.mark("returned");

    assert_eq!(start.elapsed(), Duration::from_millis(250));
    let Err(Error::TimedOut { pending, .. }) = result else {
        panic!("expected Error::TimedOut, got {result:?}");
    };
    // `e` never started: it is dropped, but not named.
    assert_eq!(branches(&pending), [(2, "c"), (3, "d")]);
    assert_eq!(log.polls("e"), 0);
    assert_eq!(
        log.story(),
        [
            "b finished at 50ms",
            "a finished at 100ms",
            "c dropped at 250ms",
            "d dropped at 250ms",
            "e dropped at 250ms",
            "returned at 250ms",
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn race_ok_with_limit_and_timeout_returns_a_success_before_the_deadline() {
    let start = Instant::now();
    let result = gather!(policy = race_ok, timeout = Duration::from_secs(1), limit = 1;
        after(100, Err::<u8, &str>("a failed")),
        after(100, Err::<u8, &str>("b failed")),
        after(100, Ok::<u8, &str>(3)),
        after(100, Ok::<u8, &str>(4)),
    );
    assert_eq!(result, Ok(3));
    assert_eq!(start.elapsed(), Duration::from_millis(300));
}
