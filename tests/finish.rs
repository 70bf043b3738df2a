//! `policy = finish`: a failure lets the others run to their end; the error lists every
//! failure in branch order.

use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

use gather::{Error, gather};
use gather_tests::{Gate, Journal, poll_once};
use tokio::time::{Instant, sleep};

async fn after<T, E>(ms: u64, out: Result<T, E>) -> Result<T, E> {
    sleep(Duration::from_millis(ms)).await;
    out
}

#[tokio::test(start_paused = true)]
async fn finish_keeps_polling_siblings_after_a_failure() {
    let start = Instant::now();
    let log = Journal::new();

    let result = gather!(policy = finish;
        failing = log.probe("failing", after(100, Err::<u8, &str>("early"))),
        ticker = log.probe("ticker", async {
            for _ in 0..5 {
                sleep(Duration::from_millis(100)).await;
            }
            Ok::<u8, &str>(5)
        }),
    );
    log.mark("returned");

    assert_eq!(start.elapsed(), Duration::from_millis(500));
    assert_eq!(
        log.story(),
        ["failing finished", "ticker finished", "returned"]
    );
    // The first poll and one per tick, including the one at 100 ms, when `failing` failed.
    assert_eq!(log.polls("ticker"), 6);
    let Err(Error::Failures { errors, .. }) = result else {
        panic!("expected Error::Failures, got {result:?}");
    };
    assert_eq!(errors.len(), 1);
    assert_eq!((errors[0].0.name(), errors[0].1), ("failing", "early"));
}

#[tokio::test(start_paused = true)]
async fn finish_reports_every_error_in_branch_order() {
    let start = Instant::now();

    // The failures happen in the reverse of branch order.
    let result = gather!(policy = finish;
        after(300, Err::<u8, String>("first".into())),
        after(100, Ok::<u8, String>(1)),
        third = after(200, Err::<u8, String>("third".into())),
        after(100, Err::<u8, String>("fourth".into())),
    );

    assert_eq!(start.elapsed(), Duration::from_millis(300));
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
            (
                0,
                r#"after(300, Err::<u8, String>("first".into()))"#,
                "first"
            ),
            (2, "third", "third"),
            (
                3,
                r#"after(100, Err::<u8, String>("fourth".into()))"#,
                "fourth"
            ),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn finish_gives_every_value_when_every_branch_succeeds() {
    let start = Instant::now();
    let result = gather!(policy = finish;
        after(20, Ok::<u8, &str>(1)),
        after(30, Ok::<String, &str>("two".into())),
        after(10, Ok::<(), &str>(())),
    );
    assert_eq!(start.elapsed(), Duration::from_millis(30));
    assert_eq!(result, Ok((1, "two".to_owned(), ())));
}

#[tokio::test(start_paused = true)]
async fn finish_with_one_branch_gives_a_one_tuple() {
    assert_eq!(
        gather!(policy = finish; after(5, Ok::<u8, &str>(9))),
        Ok((9,))
    );
    let err = gather!(policy = finish; only = after(5, Err::<u8, &str>("no")));
    let Err(Error::Failures { errors, .. }) = err else {
        panic!("expected Error::Failures, got {err:?}");
    };
    assert_eq!(errors.len(), 1);
    assert_eq!((errors[0].0.index(), errors[0].0.name()), (0, "only"));
}

#[test]
fn finish_returns_only_when_the_last_branch_ends() {
    let log = Journal::new();
    let gates = [Gate::new(), Gate::new(), Gate::new()];
    let mut gather = pin!(async {
        gather!(policy = finish;
            log.probe("a", async {
                gates[0].wait().await;
                Err::<u8, &str>("a failed")
            }),
            log.probe("b", async {
                gates[1].wait().await;
                Ok::<u8, &str>(2)
            }),
            log.probe("c", async {
                gates[2].wait().await;
                Err::<u8, &str>("c failed")
            }),
        )
    });
    assert!(poll_once(gather.as_mut()).is_pending());
    gates[0].open();
    assert!(poll_once(gather.as_mut()).is_pending());
    gates[2].open();
    assert!(poll_once(gather.as_mut()).is_pending());
    assert_eq!(log.story(), ["a finished", "c finished"]);

    gates[1].open();
    let Poll::Ready(Err(Error::Failures { errors, .. })) = poll_once(gather.as_mut()) else {
        panic!("the gather did not end with failures once every gate was open");
    };
    let errors: Vec<_> = errors.iter().map(|(b, e)| (b.index(), *e)).collect();
    assert_eq!(errors, [(0, "a failed"), (2, "c failed")]);
    assert_eq!(log.story(), ["a finished", "c finished", "b finished"]);
}
