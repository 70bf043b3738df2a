//! `policy = cancel`: the first failure ends the gather, and the siblings still running are
//! dropped, never polled again, before the error is returned.

use std::future::pending;
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

use gather::{Error, gather};
use gather_tests::{Event, Gate, Journal, poll_once};
use tokio::time::{Instant, sleep};

/// `(index, name)` of each branch, to compare branch lists.
fn branches(list: &[gather::Branch]) -> Vec<(usize, &str)> {
    list.iter().map(|b| (b.index(), b.name())).collect()
}

#[tokio::test(start_paused = true)]
async fn cancel_drops_siblings_before_returning() {
    let start = Instant::now();
    let log = Journal::new();

    let result = gather!(
        slow = log.probe("slow", async {
            sleep(Duration::from_secs(10)).await;
            Ok::<u8, &str>(1)
        }),
        failing = log.probe("failing", async {
            sleep(Duration::from_millis(200)).await;
            Err::<u8, &str>("boom")
        }),
        forever = log.probe("forever", pending::<Result<u8, &str>>()),
    );
    // Checked before anything else can run: no await since the gather returned.
    assert!(log.dropped("slow"));
    assert!(log.dropped("forever"));
    assert!(log.finished("failing"));
    assert_eq!(start.elapsed(), Duration::from_millis(200));

    let Err(Error::Failed {
        branch, cancelled, ..
    }) = result
    else {
        panic!("expected Error::Failed, got {result:?}");
    };
    assert_eq!(branch.name(), "failing");
    assert_eq!(branches(&cancelled), [(0, "slow"), (2, "forever")]);
}

#[test]
fn cancel_polls_no_sibling_after_the_failing_poll() {
    let log = Journal::new();
    let (before, failing, after) = (Gate::new(), Gate::new(), Gate::new());
    let mut gather = pin!(async {
        gather!(
            before = log.probe("before", async {
                before.wait().await;
                Ok::<u8, &str>(0)
            }),
            failing = log.probe("failing", async {
                failing.wait().await;
                Err::<u8, &str>("failed")
            }),
            after = log.probe("after", async {
                after.wait().await;
                Ok::<u8, &str>(2)
            }),
        )
    });

    assert!(poll_once(gather.as_mut()).is_pending());
    assert_eq!(
        ["before", "failing", "after"].map(|b| log.polls(b)),
        [1, 1, 1]
    );

    // `failing` and `after` can both go on; `failing` comes first and ends the gather, so
    // `after` is not polled in that pass even though it is ready.
    after.open();
    failing.open();
    let Poll::Ready(Err(Error::Failed {
        branch, cancelled, ..
    })) = poll_once(gather.as_mut())
    else {
        panic!("the gather did not fail at its second poll");
    };
    assert_eq!(branch.index(), 1);
    assert_eq!(branches(&cancelled), [(0, "before"), (2, "after")]);
    assert_eq!(log.polls("after"), 1);
    assert!(log.dropped("before"));
    assert!(log.dropped("after"));

    // From the failure on, the journal shows only drops: no poll of anyone.
    let entries = log.entries();
    let failure = entries
        .iter()
        .position(|e| e.who == "failing" && e.event == Event::Finished)
        .expect("the failing branch finished");
    assert!(
        entries[failure + 1..]
            .iter()
            .all(|e| e.event == Event::Dropped),
        "{entries:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn cancel_stops_polling_a_busy_sibling_at_the_failure() {
    let start = Instant::now();
    let log = Journal::new();

    // `ticker` wakes every 10 ms, also at 100 ms when `failing` fails: in that pass it comes
    // after the failure, so it must not be polled.
    let result = gather!(
        failing = log.probe("failing", async {
            sleep(Duration::from_millis(100)).await;
            Err::<(), &str>("failed")
        }),
        ticker = log.probe("ticker", async {
            loop {
                sleep(Duration::from_millis(10)).await;
            }
            #[allow(unreachable_code)]
            Ok::<(), &str>(())
        }),
    );
    let polls_at_return = log.polls("ticker");
    assert!(result.is_err());
    assert_eq!(start.elapsed(), Duration::from_millis(100));
    // The first poll, then one per tick at 10, 20, .., 90 ms.
    assert_eq!(polls_at_return, 10);
    assert!(log.dropped("ticker"));

    sleep(Duration::from_secs(1)).await;
    assert_eq!(log.polls("ticker"), polls_at_return);
}

#[test]
fn cancel_lowest_index_wins_when_several_fail_in_the_same_poll() {
    let log = Journal::new();
    let gates = [Gate::new(), Gate::new(), Gate::new()];
    let mut gather = pin!(async {
        gather!(
            first = log.probe("first", async {
                gates[0].wait().await;
                Err::<(), &str>("first failed")
            }),
            second = log.probe("second", async {
                gates[1].wait().await;
                Err::<(), &str>("second failed")
            }),
            third = log.probe("third", async {
                gates[2].wait().await;
                Err::<(), &str>("third failed")
            }),
        )
    });
    assert!(poll_once(gather.as_mut()).is_pending());

    // Opened in reverse order, all before the gather is polled again.
    gates.iter().rev().for_each(Gate::open);
    let Poll::Ready(Err(error)) = poll_once(gather.as_mut()) else {
        panic!("the gather did not fail");
    };
    let Error::Failed {
        branch,
        error,
        cancelled,
        ..
    } = error
    else {
        panic!("expected Error::Failed, got {error:?}");
    };
    assert_eq!((branch.index(), error), (0, "first failed"));
    // The others were ready but never seen to finish: they were cancelled.
    assert_eq!(branches(&cancelled), [(1, "second"), (2, "third")]);
    assert!(log.dropped("second") && log.dropped("third"));
}

#[tokio::test(start_paused = true)]
async fn cancel_lowest_index_wins_among_failures_at_the_same_instant() {
    let start = Instant::now();
    let fail_at = |ms, what: &'static str| async move {
        sleep(Duration::from_millis(ms)).await;
        Err::<(), &str>(what)
    };

    let result = gather!(
        fail_at(300, "a"),
        fail_at(100, "b"),
        fail_at(100, "c"),
        fail_at(100, "d"),
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
    assert_eq!((branch.index(), error), (1, "b"));
    let cancelled: Vec<_> = cancelled.iter().map(gather::Branch::index).collect();
    assert_eq!(cancelled, [0, 2, 3]);
}

#[test]
fn cancel_does_not_name_siblings_that_already_finished() {
    let log = Journal::new();
    let (done, failing) = (Gate::new(), Gate::new());
    let mut gather = pin!(async {
        gather!(
            done = log.probe("done", async {
                done.wait().await;
                Ok::<u8, &str>(1)
            }),
            failing = log.probe("failing", async {
                failing.wait().await;
                Err::<u8, &str>("failed")
            }),
            running = log.probe("running", pending::<Result<u8, &str>>()),
        )
    });
    assert!(poll_once(gather.as_mut()).is_pending());
    done.open();
    assert!(poll_once(gather.as_mut()).is_pending());
    assert!(log.finished("done"));

    failing.open();
    let Poll::Ready(Err(Error::Failed {
        branch, cancelled, ..
    })) = poll_once(gather.as_mut())
    else {
        panic!("the gather did not fail");
    };
    assert_eq!(branch.name(), "failing");
    assert_eq!(branches(&cancelled), [(2, "running")]);
    assert!(!log.dropped("done"));
    assert!(log.dropped("running"));
}

#[tokio::test(start_paused = true)]
async fn cancel_with_one_branch_gives_a_one_tuple() {
    let ok: Result<(u8,), Error<&str>> = gather!(async { Ok::<u8, &str>(7) });
    assert_eq!(ok, Ok((7,)));

    let err = gather!(only = async { Err::<u8, &str>("no") });
    let Err(Error::Failed {
        branch, cancelled, ..
    }) = err
    else {
        panic!("expected Error::Failed, got {err:?}");
    };
    assert_eq!((branch.index(), branch.name()), (0, "only"));
    assert!(cancelled.is_empty());
}

#[tokio::test(start_paused = true)]
async fn cancel_reaches_the_branches_of_a_nested_gather() {
    let start = Instant::now();
    let log = Journal::new();

    let result = gather!(
        inner = log.probe("inner", async {
            gather!(policy = finish;
                log.probe("inner.a", async {
                    sleep(Duration::from_secs(1)).await;
                    Ok::<u8, &str>(1)
                }),
                log.probe("inner.b", async {
                    sleep(Duration::from_millis(50)).await;
                    Ok::<u8, &str>(2)
                }),
                log.probe("inner.c", async {
                    gather!(
                        log.probe("inner.c.x", pending::<Result<u8, &str>>()),
                        log.probe("inner.c.y", async {
                            sleep(Duration::from_secs(2)).await;
                            Ok::<u8, &str>(3)
                        }),
                    )
                    .map(|(x, y)| x + y)
                    .map_err(|_| "inner.c failed")
                }),
            )
            .map_err(|_| "inner failed")
        }),
        failing = log.probe("failing", async {
            sleep(Duration::from_millis(100)).await;
            Err::<(u8, u8, u8), &str>("outer failure")
        }),
    );
    let story = log.story();

    assert_eq!(start.elapsed(), Duration::from_millis(100));
    let Err(Error::Failed {
        branch, cancelled, ..
    }) = result
    else {
        panic!("expected Error::Failed, got {result:?}");
    };
    assert_eq!(branch.name(), "failing");
    assert_eq!(branches(&cancelled), [(0, "inner")]);
    for dropped in ["inner", "inner.a", "inner.c", "inner.c.x", "inner.c.y"] {
        assert!(
            story.contains(&format!("{dropped} dropped")),
            "{dropped} was not dropped: {story:?}"
        );
    }
    assert!(story.contains(&"inner.b finished".to_owned()), "{story:?}");
    assert!(story.contains(&"failing finished".to_owned()), "{story:?}");
}

#[tokio::test(start_paused = true)]
async fn cancel_a_failing_inner_gather_fails_the_outer_one() {
    let start = Instant::now();
    let log = Journal::new();

    let result = gather!(
        inner = async {
            gather!(
                log.probe("inner.slow", async {
                    sleep(Duration::from_secs(1)).await;
                    Ok::<u8, &str>(1)
                }),
                async {
                    sleep(Duration::from_millis(30)).await;
                    Err::<u8, &str>("inner failure")
                },
            )
            .map_err(|e| e.into_error().unwrap_or("no error"))
        },
        outer = log.probe("outer.slow", async {
            sleep(Duration::from_secs(1)).await;
            Ok::<u8, &str>(2)
        }),
    );
    let story = log.story();

    assert_eq!(start.elapsed(), Duration::from_millis(30));
    assert_eq!(story, ["inner.slow dropped", "outer.slow dropped"]);
    let Err(Error::Failed {
        branch,
        error,
        cancelled,
        ..
    }) = result
    else {
        panic!("expected Error::Failed, got {result:?}");
    };
    assert_eq!((branch.name(), error), ("inner", "inner failure"));
    assert_eq!(branches(&cancelled), [(1, "outer")]);
}
