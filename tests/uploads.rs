//! The seed's story: three uploads started together, Bucket-A (1500 ms, ok), Bucket-B (500 ms,
//! fails) and Bucket-C (1000 ms, ok), under each policy.

use std::future::Future;
use std::time::Duration;

use gather::{Error, gather};
use gather_tests::{Journal, Probe};
use tokio::time::{Instant, sleep};

/// One upload, probed: sleeps `ms`, then succeeds with its bucket's name or fails.
fn upload(
    journal: &Journal,
    bucket: &'static str,
    ms: u64,
    ok: bool,
) -> Probe<impl Future<Output = Result<&'static str, String>> + use<>> {
    journal.probe(bucket, async move {
        sleep(Duration::from_millis(ms)).await;
        if ok {
            Ok(bucket)
        } else {
            Err(format!("{bucket}: access denied"))
        }
    })
}

/// A journal stamped with the time elapsed since `start`, under paused time.
fn journal(start: Instant) -> Journal {
    Journal::with_clock(move || start.elapsed())
}

#[tokio::test(start_paused = true)]
async fn cancel_returns_at_the_first_failure_and_drops_the_others() {
    let start = Instant::now();
    let log = journal(start);

    let result = gather!(
        bucket_a = upload(&log, "Bucket-A", 1500, true),
        bucket_b = upload(&log, "Bucket-B", 500, false),
        bucket_c = upload(&log, "Bucket-C", 1000, true),
    );
    log.mark("returned");

    assert_eq!(start.elapsed(), Duration::from_millis(500));
    assert_eq!(
        log.story(),
        [
            "Bucket-B finished at 500ms",
            "Bucket-A dropped at 500ms",
            "Bucket-C dropped at 500ms",
            "returned at 500ms",
        ]
    );
    let Err(Error::Failed {
        branch,
        error,
        cancelled,
        ..
    }) = result
    else {
        panic!("expected Error::Failed, got {result:?}");
    };
    assert_eq!((branch.index(), branch.name()), (1, "bucket_b"));
    assert_eq!(error, "Bucket-B: access denied");
    let cancelled: Vec<_> = cancelled.iter().map(|b| (b.index(), b.name())).collect();
    assert_eq!(cancelled, [(0, "bucket_a"), (2, "bucket_c")]);

    // Nothing that was cancelled comes back to life later.
    sleep(Duration::from_secs(5)).await;
    assert_eq!(log.story().len(), 4);
}

#[tokio::test(start_paused = true)]
async fn finish_lets_every_upload_end_then_reports_the_failure() {
    let start = Instant::now();
    let log = journal(start);

    let result = gather!(policy = finish;
        bucket_a = upload(&log, "Bucket-A", 1500, true),
        bucket_b = upload(&log, "Bucket-B", 500, false),
        bucket_c = upload(&log, "Bucket-C", 1000, true),
    );
    log.mark("returned");

    assert_eq!(start.elapsed(), Duration::from_millis(1500));
    assert_eq!(
        log.story(),
        [
            "Bucket-B finished at 500ms",
            "Bucket-C finished at 1s",
            "Bucket-A finished at 1.5s",
            "returned at 1.5s",
        ]
    );
    let Err(Error::Failures { errors, .. }) = result else {
        panic!("expected Error::Failures, got {result:?}");
    };
    let errors: Vec<_> = errors
        .iter()
        .map(|(b, e)| (b.index(), b.name(), e.as_str()))
        .collect();
    assert_eq!(errors, [(1, "bucket_b", "Bucket-B: access denied")]);
}

#[tokio::test(start_paused = true)]
async fn settle_waits_for_every_upload_and_gives_every_outcome() {
    let start = Instant::now();
    let log = journal(start);

    let outcomes = gather!(policy = settle;
        bucket_a = upload(&log, "Bucket-A", 1500, true),
        bucket_b = upload(&log, "Bucket-B", 500, false),
        bucket_c = upload(&log, "Bucket-C", 1000, true),
    );
    log.mark("returned");

    assert_eq!(start.elapsed(), Duration::from_millis(1500));
    assert_eq!(
        log.story(),
        [
            "Bucket-B finished at 500ms",
            "Bucket-C finished at 1s",
            "Bucket-A finished at 1.5s",
            "returned at 1.5s",
        ]
    );
    assert_eq!(
        outcomes,
        (
            Ok("Bucket-A"),
            Err("Bucket-B: access denied".to_owned()),
            Ok("Bucket-C"),
        )
    );
}

#[tokio::test(start_paused = true)]
async fn cancel_returns_every_value_when_every_upload_succeeds() {
    let start = Instant::now();
    let log = journal(start);

    let result = gather!(
        upload(&log, "Bucket-A", 1500, true),
        upload(&log, "Bucket-B", 500, true),
        upload(&log, "Bucket-C", 1000, true),
    );

    assert_eq!(start.elapsed(), Duration::from_millis(1500));
    assert_eq!(result, Ok(("Bucket-A", "Bucket-B", "Bucket-C")));
    assert!(
        ["Bucket-A", "Bucket-B", "Bucket-C"]
            .iter()
            .all(|b| log.finished(b))
    );
}
