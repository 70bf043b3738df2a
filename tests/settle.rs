//! `policy = settle`: every branch runs to its end and every outcome is a value.

use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

use gather::gather;
use gather_tests::{Gate, Journal, poll_once};
use tokio::time::{Instant, sleep};

#[tokio::test(start_paused = true)]
async fn settle_gives_outputs_of_any_type_in_branch_order() {
    let start = Instant::now();
    let (number, text, failure, unit) = gather!(policy = settle;
        async {
            sleep(Duration::from_millis(30)).await;
            7_u64
        },
        async {
            sleep(Duration::from_millis(10)).await;
            String::from("text")
        },
        async {
            sleep(Duration::from_millis(20)).await;
            Err::<u8, &str>("a failure is just a value")
        },
        sleep(Duration::from_millis(40)),
    );
    assert_eq!(start.elapsed(), Duration::from_millis(40));
    assert_eq!(number, 7);
    assert_eq!(text, "text");
    assert_eq!(failure, Err("a failure is just a value"));
    assert_eq!(unit, ());
}

#[tokio::test(start_paused = true)]
async fn settle_with_one_branch_gives_a_one_tuple() {
    let start = Instant::now();
    let out: (u8,) = gather!(policy = settle; async {
        sleep(Duration::from_millis(5)).await;
        3_u8
    });
    assert_eq!(out, (3,));
    assert_eq!(start.elapsed(), Duration::from_millis(5));
}

#[tokio::test(start_paused = true)]
async fn settle_cancels_nothing_when_branches_fail() {
    let start = Instant::now();
    let log = Journal::new();
    let outs = gather!(policy = settle;
        log.probe("fails early", async {
            sleep(Duration::from_millis(10)).await;
            Err::<(), &str>("early")
        }),
        log.probe("slow", async {
            sleep(Duration::from_millis(900)).await;
            Ok::<(), &str>(())
        }),
        log.probe("fails late", async {
            sleep(Duration::from_millis(500)).await;
            Err::<(), &str>("late")
        }),
    );
    log.mark("returned");
    assert_eq!(start.elapsed(), Duration::from_millis(900));
    assert_eq!(
        log.story(),
        [
            "fails early finished",
            "fails late finished",
            "slow finished",
            "returned"
        ]
    );
    assert_eq!(outs, (Err("early"), Ok(()), Err("late")));
}

#[test]
fn settle_returns_only_when_the_last_branch_ends() {
    let gates = [Gate::new(), Gate::new()];
    let mut gather = pin!(async {
        gather!(policy = settle;
            async {
                gates[0].wait().await;
                "first"
            },
            async {
                gates[1].wait().await;
                "second"
            },
        )
    });
    assert!(poll_once(gather.as_mut()).is_pending());
    gates[1].open();
    assert!(poll_once(gather.as_mut()).is_pending());
    gates[0].open();
    assert_eq!(poll_once(gather.as_mut()), Poll::Ready(("first", "second")));
}
