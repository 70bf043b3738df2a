//! The bucket-upload story from the asyncio.gather seed, told with real tokio timers.
//!
//! Three uploads start together: Bucket-A (375 ms), Bucket-B (125 ms, fails) and Bucket-C
//! (250 ms). Each upload says when it starts, finishes or is cancelled. The program runs the
//! same uploads three times:
//!
//! 1. Without structure: `tokio::spawn` plus `tokio::try_join!` over the handles. The error
//!    comes back, and Bucket-A and Bucket-C finish afterwards with no owner.
//! 2. `gather!(policy = cancel; ...)`: the error names the failed branch, the other two are
//!    cancelled before it is returned, and nothing finishes afterwards.
//! 3. `gather!(policy = settle; ...)`: every outcome comes back as a value and is handled.
//!
//! Run it with:
//!
//! ```sh
//! cargo run --example buckets
//! ```
//!
//! The whole run takes about 1.5 seconds.

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use gather::{Error, gather};
use tokio::time::sleep;

/// How long each act waits after its error, to see whether anything still finishes.
/// The seed waits 1.5 s; every delay here is the seed's divided by 4.
const AFTERWARDS: Duration = Duration::from_millis(375);

/// How many uploads have finished so far, so each act can count those that finished after
/// its error instead of asserting it.
static FINISHED: AtomicUsize = AtomicUsize::new(0);

fn finished() -> usize {
    FINISHED.load(Ordering::SeqCst)
}

/// Prints "Upload to X cancelled" if the upload future is dropped before it finishes.
///
/// Rust cancels a future by dropping it, so this guard is how cancellation becomes visible.
struct CancelProbe {
    name: &'static str,
    finished: bool,
}

impl Drop for CancelProbe {
    fn drop(&mut self) {
        if !self.finished {
            println!("Upload to {} cancelled", self.name);
        }
    }
}

async fn upload_bucket(name: &'static str, delay_ms: u64, fail: bool) -> io::Result<String> {
    let mut probe = CancelProbe {
        name,
        finished: false,
    };
    println!("Starting upload to {name}");
    sleep(Duration::from_millis(delay_ms)).await;
    probe.finished = true;
    if fail {
        return Err(io::Error::other(format!("Failed uploading to {name}")));
    }
    println!("Finished upload to {name}");
    FINISHED.fetch_add(1, Ordering::SeqCst);
    Ok(format!("Success {name}"))
}

/// Act 1: the seed's bug, in Rust.
async fn detached_tasks() {
    println!("== Act 1: tokio::spawn + try_join! (no structure) ==");
    let a = tokio::spawn(upload_bucket("Bucket-A", 375, false));
    let b = tokio::spawn(upload_bucket("Bucket-B", 125, true));
    let c = tokio::spawn(upload_bucket("Bucket-C", 250, false));

    // `try_join!` returns at the first error and drops the other two futures. Dropping a
    // `JoinHandle` does not stop its task: it detaches it, so A and C run on with no owner.
    let joined = tokio::try_join!(
        async move { a.await.expect("upload task panicked") },
        async move { b.await.expect("upload task panicked") },
        async move { c.await.expect("upload task panicked") },
    );
    match joined {
        Ok(results) => println!("{results:?}"),
        Err(e) => println!("Caught error: {e}"),
    }
    let before = finished();

    // As the seed does: wait a moment and see whether the other uploads completed.
    sleep(AFTERWARDS).await;
    println!(
        "Uploads that finished after the error: {} (detached, nobody was waiting for them)",
        finished() - before
    );
    println!();
}

/// Act 2: the same uploads under `gather!`, default policy `cancel`.
async fn gather_cancel() {
    println!("== Act 2: gather!(policy = cancel; ...) ==");
    // The labels name the branches in the error. The branches run in place, inside this
    // future: when Bucket-B fails, `gather!` drops the other two before it returns.
    let gathered = gather!(policy = cancel;
        bucket_a = upload_bucket("Bucket-A", 375, false),
        bucket_b = upload_bucket("Bucket-B", 125, true),
        bucket_c = upload_bucket("Bucket-C", 250, false),
    );
    match gathered {
        Ok(results) => println!("{results:?}"),
        Err(e) => {
            println!("Caught error: {e}");
            // `Error` is `#[non_exhaustive]`; without `timeout`, `cancel` only returns `Failed`.
            if let Error::Failed {
                branch, cancelled, ..
            } = &e
            {
                let cancelled: Vec<&str> = cancelled.iter().map(|b| b.name()).collect();
                println!("Failed branch: {}", branch.name());
                println!(
                    "Cancelled before gather! returned: {}",
                    cancelled.join(", ")
                );
            }
        }
    }
    let before = finished();

    // The same wait as in act 1: this time no upload is left running to finish.
    sleep(AFTERWARDS).await;
    println!(
        "Uploads that finished after the error: {}",
        finished() - before
    );
    println!();
}

/// Act 3: the seed's fix, `return_exceptions=True`, is `policy = settle`.
async fn gather_settle() {
    println!("== Act 3: gather!(policy = settle; ...) ==");
    // Under `settle` a failure is just an output: every upload runs to its end, and
    // `gather!` returns each one's `io::Result` in branch order.
    let (a, b, c) = gather!(policy = settle;
        upload_bucket("Bucket-A", 375, false),
        upload_bucket("Bucket-B", 125, true),
        upload_bucket("Bucket-C", 250, false),
    );
    for result in [a, b, c] {
        match result {
            Ok(value) => println!("Task result: {value}"),
            Err(e) => println!("Handling task error: {e}"),
        }
    }
}

#[tokio::main]
async fn main() {
    detached_tasks().await;
    gather_cancel().await;
    gather_settle().await;
}
