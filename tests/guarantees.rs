//! The guarantees that hold under every policy: nothing outlives the gather, not when the
//! caller is dropped, not when a branch panics; any executor works; the code is `Send` when
//! its branches are.

use std::cell::RefCell;
use std::future::{IntoFuture, pending};
use std::panic::AssertUnwindSafe;
use std::pin::pin;
use std::rc::Rc;
use std::time::Duration;

use futures::FutureExt;
use gather::{Error, gather};
use gather_tests::{Gate, Journal, poll_once};
use tokio::time::{Instant, sleep, timeout};

/// A panic payload no other code makes, to recognise it at the catch site.
#[derive(Debug, PartialEq)]
struct Explosion(u32);

async fn sleepy<T>(ms: u64, value: T) -> T {
    sleep(Duration::from_millis(ms)).await;
    value
}

#[tokio::test(start_paused = true)]
async fn dropping_the_caller_drops_every_branch() {
    let start = Instant::now();
    let log = Journal::new();

    let caller = async {
        gather!(
            log.probe("done", sleepy(50, Ok::<u8, &str>(1))),
            log.probe("slow", sleepy(5_000, Ok::<u8, &str>(2))),
            log.probe("forever", pending::<Result<u8, &str>>()),
        )
    };
    let elapsed = timeout(Duration::from_millis(200), caller).await;
    // `timeout` dropped the caller's future before returning.
    let story = log.story();

    assert!(elapsed.is_err());
    assert_eq!(start.elapsed(), Duration::from_millis(200));
    assert_eq!(story[0], "done finished");
    let mut dropped = story[1..].to_vec();
    dropped.sort();
    assert_eq!(dropped, ["forever dropped", "slow dropped"]);
}

#[tokio::test(start_paused = true)]
async fn dropping_the_caller_drops_every_branch_under_finish_and_settle() {
    let log = Journal::new();
    let finish = async {
        gather!(policy = finish;
            log.probe("finish.failed", sleepy(10, Err::<u8, &str>("failed"))),
            log.probe("finish.slow", sleepy(5_000, Ok::<u8, &str>(2))),
        )
    };
    assert!(timeout(Duration::from_millis(100), finish).await.is_err());
    let settle = async {
        gather!(policy = settle;
            log.probe("settle.done", sleepy(10, 1_u8)),
            log.probe("settle.slow", sleepy(5_000, 2_u8)),
        )
    };
    assert!(timeout(Duration::from_millis(100), settle).await.is_err());

    assert_eq!(
        log.story(),
        [
            "finish.failed finished",
            "finish.slow dropped",
            "settle.done finished",
            "settle.slow dropped",
        ]
    );
}

#[test]
fn dropping_the_caller_after_one_poll_drops_every_branch_of_nested_gathers() {
    let log = Journal::new();
    let gate = Gate::new();
    {
        let mut caller = pin!(async {
            gather!(
                log.probe("outer.a", gate.wait().map(Ok::<(), &str>)),
                log.probe("inner", async {
                    gather!(policy = settle;
                        log.probe("inner.a", gate.wait()),
                        log.probe("inner.b", pending::<()>()),
                    );
                    Ok::<(), &str>(())
                }),
            )
        });
        assert!(poll_once(caller.as_mut()).is_pending());
        assert!(log.story().is_empty());
    }
    let mut story = log.story();
    story.sort();
    assert_eq!(
        story,
        [
            "inner dropped",
            "inner.a dropped",
            "inner.b dropped",
            "outer.a dropped"
        ]
    );
}

/// Runs `fut` and catches its panic; `log` is read at the catch site, while `fut` itself has
/// not been dropped yet: what the story shows was dropped by the unwinding gather.
async fn catch<F: Future>(log: &Journal, fut: F) -> (Box<dyn std::any::Any + Send>, Vec<String>) {
    let mut fut = pin!(AssertUnwindSafe(fut).catch_unwind());
    let caught = fut.as_mut().await;
    let story = log.story();
    match caught {
        Ok(_) => panic!("the panic did not reach the caller"),
        Err(payload) => (payload, story),
    }
}

#[tokio::test(start_paused = true)]
async fn a_panicking_branch_drops_its_siblings_then_reaches_the_caller() {
    let start = Instant::now();
    let log = Journal::new();

    let (payload, story) = catch(&log, async {
        gather!(
            log.probe("done", sleepy(10, Ok::<u8, &str>(1))),
            log.probe("slow", sleepy(1_000, Ok::<u8, &str>(2))),
            log.probe("panics", async {
                sleep(Duration::from_millis(100)).await;
                std::panic::panic_any(Explosion(42));
                #[allow(unreachable_code)]
                Ok::<u8, &str>(3)
            }),
            log.probe("forever", pending::<Result<u8, &str>>()),
        )
    })
    .await;

    assert_eq!(start.elapsed(), Duration::from_millis(100));
    assert_eq!(payload.downcast_ref::<Explosion>(), Some(&Explosion(42)));
    let mut story = story;
    story.sort();
    assert_eq!(
        story,
        [
            "done finished",
            "forever dropped",
            "panics dropped",
            "slow dropped"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_panicking_branch_drops_its_siblings_under_finish_and_settle() {
    let log = Journal::new();

    let (payload, finish_story) = catch(&log, async {
        gather!(policy = finish;
            log.probe("finish.failed", sleepy(10, Err::<u8, &str>("failed"))),
            log.probe("finish.slow", sleepy(1_000, Ok::<u8, &str>(2))),
            log.probe("finish.panics", async {
                sleep(Duration::from_millis(100)).await;
                panic!("finish branch panicked");
                #[allow(unreachable_code)]
                Ok::<u8, &str>(3)
            }),
        )
    })
    .await;
    assert_eq!(
        payload.downcast_ref::<&str>(),
        Some(&"finish branch panicked")
    );
    assert!(finish_story.contains(&"finish.slow dropped".to_owned()));
    assert!(finish_story.contains(&"finish.panics dropped".to_owned()));

    let (payload, settle_story) = catch(&log, async {
        gather!(policy = settle;
            log.probe("settle.slow", sleepy(1_000, 1_u8)),
            log.probe("settle.panics", async {
                sleep(Duration::from_millis(100)).await;
                let n = 7;
                panic!("settle branch {n} panicked");
            }),
        )
    })
    .await;
    assert_eq!(
        payload.downcast_ref::<String>().map(String::as_str),
        Some("settle branch 7 panicked")
    );
    assert!(settle_story.contains(&"settle.slow dropped".to_owned()));
    assert!(settle_story.contains(&"settle.panics dropped".to_owned()));
}

#[test]
fn a_branch_panicking_at_its_first_poll_drops_the_others_without_a_runtime() {
    let log = Journal::new();
    let mut caller = pin!(async {
        gather!(
            log.probe("waiting", pending::<Result<u8, &str>>()),
            log.probe("panics", async {
                std::panic::panic_any(Explosion(1));
                #[allow(unreachable_code)]
                Ok::<u8, &str>(1)
            }),
            log.probe("not yet polled", pending::<Result<u8, &str>>()),
        )
    });
    // `caller` outlives the catch: what the story shows was dropped by the unwinding gather.
    let caught = std::panic::catch_unwind(AssertUnwindSafe(|| {
        futures::executor::block_on(caller.as_mut())
    }));
    let story = log.story();

    let payload = caught.expect_err("the panic did not reach the caller");
    assert_eq!(payload.downcast_ref::<Explosion>(), Some(&Explosion(1)));
    assert_eq!(log.polls("waiting"), 1);
    assert_eq!(log.polls("not yet polled"), 0);
    let mut story = story;
    story.sort();
    assert_eq!(
        story,
        [
            "not yet polled dropped",
            "panics dropped",
            "waiting dropped"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn not_send_branches_run_in_place_on_a_current_thread_runtime() {
    let start = Instant::now();
    let seen = Rc::new(RefCell::new(Vec::new()));
    let push = |ms: u64, what: &'static str| {
        let seen = Rc::clone(&seen);
        async move {
            sleep(Duration::from_millis(ms)).await;
            seen.borrow_mut().push(what);
            Ok::<Rc<&str>, &str>(Rc::new(what))
        }
    };

    let (a, b) = gather!(push(20, "a"), push(10, "b")).expect("both succeed");

    assert_eq!(start.elapsed(), Duration::from_millis(20));
    assert_eq!((*a, *b), ("a", "b"));
    assert_eq!(*seen.borrow(), ["b", "a"]);
}

#[tokio::test(start_paused = true)]
async fn not_send_branches_run_in_place_in_a_local_set() {
    let local = tokio::task::LocalSet::new();
    let shared = Rc::new(RefCell::new(0));
    let task = {
        let shared = Rc::clone(&shared);
        local.spawn_local(async move {
            let bump = |ms| {
                let shared = Rc::clone(&shared);
                async move {
                    sleep(Duration::from_millis(ms)).await;
                    *shared.borrow_mut() += 1;
                    Err::<(), Rc<u64>>(Rc::new(ms))
                }
            };
            gather!(policy = finish; bump(30), bump(10), bump(20))
        })
    };
    let result = local.run_until(task).await.expect("the task did not panic");

    assert_eq!(*shared.borrow(), 3);
    let Err(Error::Failures { errors, .. }) = result else {
        panic!("expected Error::Failures, got {result:?}");
    };
    let ms: Vec<u64> = errors.iter().map(|(_, e)| **e).collect();
    assert_eq!(ms, [30, 10, 20]);
}

#[test]
fn block_on_without_any_runtime_works_under_every_policy() {
    let gates = [Gate::new(), Gate::new(), Gate::new()];
    let opener = {
        let gates = gates.clone();
        std::thread::spawn(move || {
            for gate in gates.iter().rev() {
                std::thread::sleep(Duration::from_millis(5));
                gate.open();
            }
        })
    };
    let wait = |i: usize, out: Result<usize, usize>| {
        let gate = gates[i].clone();
        async move {
            gate.wait().await;
            out
        }
    };

    let (cancel, finish, settle) = futures::executor::block_on(async {
        let cancel = gather!(wait(0, Ok(0)), wait(1, Ok(1)), wait(2, Ok(2)));
        let finish = gather!(policy = finish; wait(0, Ok(0)), wait(1, Err(1)), wait(2, Err(2)));
        let settle = gather!(policy = settle; wait(0, Ok(0)), wait(1, Err(1)));
        (cancel, finish, settle)
    });
    opener.join().expect("the opener thread did not panic");

    assert_eq!(cancel, Ok((0, 1, 2)));
    let Err(Error::Failures { errors, .. }) = finish else {
        panic!("expected Error::Failures, got {finish:?}");
    };
    let errors: Vec<_> = errors.iter().map(|(b, e)| (b.index(), *e)).collect();
    assert_eq!(errors, [(1, 1), (2, 2)]);
    assert_eq!(settle, (Ok(0), Err(1)));
}

/// Uploads twice at once; used to check that a function using `gather!` is `Send`.
async fn upload_twice(log: Journal) -> Result<(u8, String), Error<String>> {
    gather!(
        log.probe("first", sleepy(10, Ok::<u8, String>(1))),
        log.probe("second", sleepy(20, Ok::<String, String>("two".into()))),
    )
}

async fn settle_and_finish() -> ((u8, Vec<u8>), Result<(u8,), Error<String>>) {
    let settled = gather!(policy = settle; sleepy(1, 1_u8), sleepy(2, vec![2_u8]));
    let finished = gather!(policy = finish; sleepy(3, Ok::<u8, String>(3)));
    (settled, finished)
}

fn assert_send<T: Send>(value: T) -> T {
    value
}

#[test]
fn the_future_of_a_function_using_gather_is_send() {
    // Compiles only if the futures are `Send`; they are never run here.
    drop(assert_send(upload_twice(Journal::new())));
    drop(assert_send(settle_and_finish()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_using_gather_can_be_spawned() {
    let log = Journal::new();
    let handle = tokio::spawn(upload_twice(log.clone()));
    let result = handle.await.expect("the task did not panic");

    assert_eq!(result, Ok((1, "two".to_owned())));
    assert_eq!(log.story(), ["first finished", "second finished"]);
    let (settled, finished) = tokio::spawn(settle_and_finish()).await.unwrap();
    assert_eq!(settled, (1, vec![2]));
    assert_eq!(finished, Ok((3,)));
}

/// Not a future itself: only `IntoFuture`.
struct Delayed(u64);

impl IntoFuture for Delayed {
    type Output = Result<u64, &'static str>;
    type IntoFuture = std::pin::Pin<Box<dyn Future<Output = Self::Output> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            sleep(Duration::from_millis(self.0)).await;
            Ok(self.0)
        })
    }
}

#[tokio::test(start_paused = true)]
async fn a_branch_may_be_any_into_future() {
    let start = Instant::now();
    let result = gather!(Delayed(30), Delayed(10));
    assert_eq!(result, Ok((30, 10)));
    assert_eq!(start.elapsed(), Duration::from_millis(30));
}

/// A future that is `Send` but not `Sync`, and outputs a value of the same kind.
async fn not_sync(ms: u64) -> Result<std::cell::Cell<u64>, String> {
    let cell = std::cell::Cell::new(ms);
    sleep(Duration::from_millis(ms)).await;
    cell.set(cell.get() + 1);
    Ok(cell)
}

async fn gather_not_sync() -> Result<(std::cell::Cell<u64>, std::cell::Cell<u64>), Error<String>> {
    gather!(not_sync(1), not_sync(2))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_but_not_sync_branches_and_outputs_keep_the_future_send() {
    let (a, b) = tokio::spawn(assert_send(gather_not_sync()))
        .await
        .expect("the task did not panic")
        .expect("both succeed");
    assert_eq!((a.get(), b.get()), (2, 3));
}

/// Panics when dropped before it finished.
struct PanicsOnDrop;

impl Drop for PanicsOnDrop {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            panic!("dropped a PanicsOnDrop");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_sibling_that_panics_when_cancelled_leaves_no_branch_running() {
    let log = Journal::new();
    let (payload, story) = catch(&log, async {
        gather!(
            log.probe("before", pending::<Result<u8, &str>>()),
            async {
                let _guard = PanicsOnDrop;
                pending::<()>().await;
                Ok::<u8, &str>(0)
            },
            log.probe("failing", sleepy(10, Err::<u8, &str>("failed"))),
            log.probe("after", pending::<Result<u8, &str>>()),
        )
    })
    .await;

    assert_eq!(
        payload.downcast_ref::<&str>(),
        Some(&"dropped a PanicsOnDrop")
    );
    assert!(story.contains(&"before dropped".to_owned()), "{story:?}");
    assert!(story.contains(&"after dropped".to_owned()), "{story:?}");
}

/// How many tasks of the current runtime are alive.
fn alive() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

#[tokio::test(start_paused = true)]
async fn a_drop_that_panics_inside_the_reaping_scope_still_closes_it() {
    // The failure cancels a sibling that owns a task (the scope holds it), then one that
    // panics when dropped: the scope closes on the way out, and lets go of what it held.
    let base = alive();
    let log = Journal::new();
    let (payload, _) = catch(&log, async {
        gather!(
            async {
                let _task = gather::spawn(log.probe("first", pending::<()>()));
                pending::<()>().await;
                Ok::<u8, &str>(0)
            },
            async {
                let _guard = PanicsOnDrop;
                pending::<()>().await;
                Ok::<u8, &str>(1)
            },
            sleepy(10, Err::<u8, &str>("failed")),
        )
    })
    .await;
    assert_eq!(
        payload.downcast_ref::<&str>(),
        Some(&"dropped a PanicsOnDrop")
    );
    // Aborted, though not awaited: the gather was gone.
    tokio::task::yield_now().await;
    assert!(log.dropped("first"), "{log:?}");
    assert_eq!(alive(), base);

    // The next gather on the thread opens a scope of its own, and awaits the task of the
    // branch it cancels before it returns.
    let result = gather!(
        async {
            gather::spawn(log.probe("second", pending::<()>())).await;
            Ok::<u8, &str>(0)
        },
        sleepy(10, Err::<u8, &str>("failed")),
    );
    let alive_at_return = alive();
    assert!(result.is_err());
    assert!(log.dropped("second"), "{log:?}");
    assert_eq!(alive_at_return, base, "the task outlived the gather");
}
