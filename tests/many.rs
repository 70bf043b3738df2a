//! Many branches: 48 work like 3, and fail-fast holds at that count.

use std::future::Future;
use std::time::Duration;

use gather::{Error, gather};
use gather_tests::{Event, Journal, Probe};
use tokio::time::{Instant, sleep};

/// Succeeds with `value` after `ms` milliseconds.
async fn after<T>(ms: u64, value: T) -> Result<T, String> {
    sleep(Duration::from_millis(ms)).await;
    Ok(value)
}

/// A probe named after `index` that succeeds with it after `ms` milliseconds.
fn step(
    log: &Journal,
    index: u8,
    ms: u64,
) -> Probe<impl Future<Output = Result<u8, String>> + use<>> {
    log.probe(index.to_string(), async move {
        sleep(Duration::from_millis(ms)).await;
        Ok(index)
    })
}

#[tokio::test(start_paused = true)]
async fn forty_eight_branches_give_every_value_in_order() {
    let start = Instant::now();
    let values = gather!(
        after(1, 0u64),
        after(38, "v1"),
        after(75, 'a'),
        after(12, 3u64),
        after(49, "v4"),
        after(86, 'b'),
        after(23, 6u64),
        after(60, "v7"),
        after(97, 'a'),
        after(34, 9u64),
        after(71, "v10"),
        after(8, 'b'),
        after(45, 12u64),
        after(82, "v13"),
        after(19, 'a'),
        after(56, 15u64),
        after(93, "v16"),
        after(30, 'b'),
        after(67, 18u64),
        after(4, "v19"),
        after(41, 'a'),
        after(78, 21u64),
        after(15, "v22"),
        after(52, 'b'),
        after(89, 24u64),
        after(26, "v25"),
        after(63, 'a'),
        after(100, 27u64),
        after(37, "v28"),
        after(74, 'b'),
        after(11, 30u64),
        after(48, "v31"),
        after(85, 'a'),
        after(22, 33u64),
        after(59, "v34"),
        after(96, 'b'),
        after(33, 36u64),
        after(70, "v37"),
        after(7, 'a'),
        after(44, 39u64),
        after(81, "v40"),
        after(18, 'b'),
        after(55, 42u64),
        after(92, "v43"),
        after(29, 'a'),
        after(66, 45u64),
        after(3, "v46"),
        after(40, 'b'),
    )
    .expect("every branch succeeds");

    assert_eq!(start.elapsed(), Duration::from_millis(100));
    assert_eq!(values.0, 0);
    assert_eq!(values.1, "v1");
    assert_eq!(values.2, 'a');
    assert_eq!(values.3, 3);
    assert_eq!(values.4, "v4");
    assert_eq!(values.5, 'b');
    assert_eq!(values.6, 6);
    assert_eq!(values.7, "v7");
    assert_eq!(values.8, 'a');
    assert_eq!(values.9, 9);
    assert_eq!(values.10, "v10");
    assert_eq!(values.11, 'b');
    assert_eq!(values.12, 12);
    assert_eq!(values.13, "v13");
    assert_eq!(values.14, 'a');
    assert_eq!(values.15, 15);
    assert_eq!(values.16, "v16");
    assert_eq!(values.17, 'b');
    assert_eq!(values.18, 18);
    assert_eq!(values.19, "v19");
    assert_eq!(values.20, 'a');
    assert_eq!(values.21, 21);
    assert_eq!(values.22, "v22");
    assert_eq!(values.23, 'b');
    assert_eq!(values.24, 24);
    assert_eq!(values.25, "v25");
    assert_eq!(values.26, 'a');
    assert_eq!(values.27, 27);
    assert_eq!(values.28, "v28");
    assert_eq!(values.29, 'b');
    assert_eq!(values.30, 30);
    assert_eq!(values.31, "v31");
    assert_eq!(values.32, 'a');
    assert_eq!(values.33, 33);
    assert_eq!(values.34, "v34");
    assert_eq!(values.35, 'b');
    assert_eq!(values.36, 36);
    assert_eq!(values.37, "v37");
    assert_eq!(values.38, 'a');
    assert_eq!(values.39, 39);
    assert_eq!(values.40, "v40");
    assert_eq!(values.41, 'b');
    assert_eq!(values.42, 42);
    assert_eq!(values.43, "v43");
    assert_eq!(values.44, 'a');
    assert_eq!(values.45, 45);
    assert_eq!(values.46, "v46");
    assert_eq!(values.47, 'b');
}

#[tokio::test(start_paused = true)]
async fn forty_eight_branches_a_failure_at_index_47_cancels_every_running_sibling() {
    let start = Instant::now();
    let log = Journal::new();

    // Even branches finish at 10 ms, odd ones would take 1 s, the last fails at 50 ms.
    let result = gather!(
        step(&log, 0, 10),
        step(&log, 1, 1000),
        step(&log, 2, 10),
        step(&log, 3, 1000),
        step(&log, 4, 10),
        step(&log, 5, 1000),
        step(&log, 6, 10),
        step(&log, 7, 1000),
        step(&log, 8, 10),
        step(&log, 9, 1000),
        step(&log, 10, 10),
        step(&log, 11, 1000),
        step(&log, 12, 10),
        step(&log, 13, 1000),
        step(&log, 14, 10),
        step(&log, 15, 1000),
        step(&log, 16, 10),
        step(&log, 17, 1000),
        step(&log, 18, 10),
        step(&log, 19, 1000),
        step(&log, 20, 10),
        step(&log, 21, 1000),
        step(&log, 22, 10),
        step(&log, 23, 1000),
        step(&log, 24, 10),
        step(&log, 25, 1000),
        step(&log, 26, 10),
        step(&log, 27, 1000),
        step(&log, 28, 10),
        step(&log, 29, 1000),
        step(&log, 30, 10),
        step(&log, 31, 1000),
        step(&log, 32, 10),
        step(&log, 33, 1000),
        step(&log, 34, 10),
        step(&log, 35, 1000),
        step(&log, 36, 10),
        step(&log, 37, 1000),
        step(&log, 38, 10),
        step(&log, 39, 1000),
        step(&log, 40, 10),
        step(&log, 41, 1000),
        step(&log, 42, 10),
        step(&log, 43, 1000),
        step(&log, 44, 10),
        step(&log, 45, 1000),
        step(&log, 46, 10),
        log.probe("47", async {
            sleep(Duration::from_millis(50)).await;
            Err::<u8, String>("47 failed".to_owned())
        }),
    );

    assert_eq!(start.elapsed(), Duration::from_millis(50));
    let Err(Error::Failed {
        branch,
        error,
        cancelled,
        ..
    }) = result
    else {
        panic!("expected Error::Failed");
    };
    assert_eq!(branch.index(), 47);
    assert_eq!(error, "47 failed");
    let odd: Vec<usize> = (1..47).step_by(2).collect();
    assert_eq!(
        cancelled
            .iter()
            .map(gather::Branch::index)
            .collect::<Vec<_>>(),
        odd
    );
    for b in &cancelled {
        assert_eq!(b.name(), format!("step(&log, {}, 1000)", b.index()));
    }
    for i in 0..47 {
        let who = i.to_string();
        if i % 2 == 0 {
            assert!(log.finished(&who) && !log.dropped(&who), "{i}");
        } else {
            assert!(log.dropped(&who) && !log.finished(&who), "{i}");
        }
    }
    // Nobody is polled from the failure on.
    let entries = log.entries();
    let failure = entries
        .iter()
        .position(|e| e.who == "47" && e.event == Event::Finished)
        .expect("branch 47 finished");
    assert!(
        entries[failure + 1..]
            .iter()
            .all(|e| e.event == Event::Dropped)
    );
}

/// `step(log, i, (i * 37 % 100) + 1)` for `i` in `0..100`, written out: a fixed form of 100
/// branches, each ending at its own instant.
macro_rules! hundred_steps {
    ($log:expr) => {
        hundred_steps!(@ $log; []; [0 1 2 3 4 5 6 7 8 9]; [0 1 2 3 4 5 6 7 8 9]; [0 1 2 3 4 5 6 7 8 9])
    };
    (@ $log:expr; [$($done:expr,)*]; [$t:tt $($ts:tt)*]; [$u:tt $($us:tt)*]; $all:tt) => {
        hundred_steps!(@ $log;
            [$($done,)* step(&$log, $t * 10 + $u, (($t * 10 + $u) as u64 * 37 % 100) + 1),];
            [$t $($ts)*]; [$($us)*]; $all)
    };
    (@ $log:expr; [$($done:expr,)*]; [$t:tt $($ts:tt)*]; []; [$($all:tt)*]) => {
        hundred_steps!(@ $log; [$($done,)*]; [$($ts)*]; [$($all)*]; [$($all)*])
    };
    (@ $log:expr; [$($done:expr,)*]; []; $us:tt; $all:tt) => {
        gather!(policy = settle; $($done,)*)
    };
}

#[tokio::test(start_paused = true)]
async fn with_a_hundred_branches_a_wake_polls_only_its_own_branch() {
    let log = Journal::new();
    // Each branch sleeps once: one wake. A branch is polled at its first poll, once more if it
    // was still waiting on the gather's own waker when another branch woke it (before its own
    // waker existed), and once per wake of its own: at most 2 + wakes = 3 times, where polling
    // every branch on every wake would poll the last one 100 times.
    let _ = hundred_steps!(log);
    let most = (0..100u8).map(|i| log.polls(&i.to_string())).max();
    assert!(most.is_some_and(|n| (2..=3).contains(&n)), "{most:?}");
    let total: usize = (0..100u8).map(|i| log.polls(&i.to_string())).sum();
    assert!(total <= 100 * 3, "{total} polls for 100 branches");
}
