//! `gather::AbortGuard` and `gather::spawn`: a tokio task that is never detached. Awaiting the
//! guard gives the task's output or resumes its panic; dropping it aborts the task; `cancel`
//! aborts it and waits until it is gone. A guard dropped by a branch that a gather cancels is
//! awaited by that gather before it returns.
//!
//! Counts of alive tasks are exact on a current-thread runtime, where a task that ends is gone
//! before anything else runs.

use std::future::pending;
use std::panic::{AssertUnwindSafe, panic_any};
use std::time::Duration;

use futures::FutureExt;
use gather::{AbortGuard, gather};
use gather_tests::{Gate, Journal};
use tokio::task::yield_now;
use tokio::time::{Instant, sleep};

/// A panic payload no other code makes, to recognise it at the catch site.
#[derive(Debug, PartialEq)]
struct Explosion(u32);

/// How many tasks of the current runtime are alive.
fn alive() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

/// Panics with `Explosion(code)`.
async fn explode<T>(code: u32) -> T {
    panic_any(Explosion(code))
}

/// A task that never ends on its own, and never sleeps: it keeps a worker busy.
async fn busy() {
    loop {
        yield_now().await;
    }
}

/// Yields to the runtime until `done()` holds, at most `turns` times; gives `done()` then.
async fn yield_until(turns: usize, done: impl Fn() -> bool) -> bool {
    for _ in 0..turns {
        if done() {
            break;
        }
        yield_now().await;
    }
    done()
}

/// The text of a panic payload.
fn message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_default()
}

#[tokio::test]
async fn awaiting_the_guard_gives_the_output_of_its_task() {
    let guard = gather::spawn(async { (tokio::task::try_id().is_some(), 6 * 7) });
    // The body ran on a task of its own, not in the test's `block_on`.
    assert_eq!(tokio::task::try_id(), None);
    assert_eq!(guard.await, (true, 42));
}

#[tokio::test]
async fn awaiting_the_guard_resumes_the_panic_of_its_task_with_the_original_payload() {
    let base = alive();
    let guard = gather::spawn(explode::<u8>(9));

    let caught = AssertUnwindSafe(guard).catch_unwind().await;

    let Err(payload) = caught else {
        panic!("the panic was turned into {caught:?}");
    };
    assert_eq!(payload.downcast_ref::<Explosion>(), Some(&Explosion(9)));
    assert_eq!(alive(), base);
}

#[tokio::test]
async fn dropping_the_guard_aborts_its_task() {
    let base = alive();
    let log = Journal::new();
    let guard = gather::spawn(log.probe("task", pending::<()>()));
    assert!(yield_until(10, || log.polls("task") == 1).await);
    assert_eq!(alive(), base + 1);

    drop(guard);
    // No async drop: the abort is a request that tokio carries out when it next runs the task.
    assert!(
        yield_until(10, || log.dropped("task") && alive() == base).await,
        "the task outlived its guard: {log:?}, {} alive",
        alive()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_guard_stops_a_busy_task_on_another_worker() {
    let log = Journal::new();
    let guard = gather::spawn(log.probe("busy", busy()));
    let start = Instant::now();
    while log.polls("busy") < 100 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the task never ran"
        );
        sleep(Duration::from_millis(1)).await;
    }

    drop(guard);
    while !log.dropped("busy") {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the task outlived its guard"
        );
        sleep(Duration::from_millis(1)).await;
    }
    let polls = log.polls("busy");
    sleep(Duration::from_millis(20)).await;
    assert_eq!(
        log.polls("busy"),
        polls,
        "the task ran after it was dropped"
    );
}

#[tokio::test]
async fn a_guard_over_a_join_handle_aborts_the_task_when_dropped() {
    let base = alive();
    let log = Journal::new();
    let handle = tokio::spawn(log.probe("task", pending::<()>()));
    let guard = AbortGuard::new(handle);
    assert!(yield_until(10, || log.polls("task") == 1).await);

    drop(guard);
    assert!(
        yield_until(10, || log.dropped("task") && alive() == base).await,
        "{log:?}"
    );
}

#[tokio::test]
async fn cancel_aborts_a_running_task_and_returns_none_once_it_is_gone() {
    let base = alive();
    let log = Journal::new();
    let guard = gather::spawn(log.probe("task", pending::<u8>()));
    assert!(yield_until(10, || log.polls("task") == 1).await);
    assert!(!guard.is_finished());

    let out = guard.cancel().await;
    // Checked before anything else can run: no await since `cancel` returned.
    let alive_at_return = alive();

    assert_eq!(out, None);
    assert!(log.dropped("task"), "{log:?}");
    assert_eq!(alive_at_return, base);
}

#[tokio::test]
async fn cancel_before_the_task_ever_ran_returns_none() {
    let base = alive();
    let log = Journal::new();
    let guard = gather::spawn(log.probe("task", async { 1_u8 }));

    assert_eq!(guard.cancel().await, None);
    assert_eq!(alive(), base);
    assert_eq!(log.polls("task"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_waits_until_a_busy_task_on_another_worker_is_gone() {
    let log = Journal::new();
    let guard = gather::spawn(log.probe("busy", busy()));
    let start = Instant::now();
    while log.polls("busy") < 100 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the task never ran"
        );
        sleep(Duration::from_millis(1)).await;
    }

    let out = guard.cancel().await;
    // The task's future is dropped before its `JoinHandle` is woken: seen at once.
    let story = log.story();

    assert_eq!(out, None);
    assert_eq!(story, ["busy dropped"]);
}

#[tokio::test]
async fn cancel_returns_the_output_of_a_task_that_finished_before_the_abort() {
    let base = alive();
    let guard = gather::spawn(async { "done" });
    assert!(yield_until(10, || guard.is_finished()).await);

    assert_eq!(guard.cancel().await, Some("done"));
    assert_eq!(alive(), base);
}

#[tokio::test]
async fn cancel_resumes_the_panic_of_a_task_that_panicked_before_the_abort() {
    let guard = gather::spawn(explode::<u8>(5));
    assert!(yield_until(10, || guard.is_finished()).await);

    let caught = AssertUnwindSafe(guard.cancel()).catch_unwind().await;

    let Err(payload) = caught else {
        panic!("the panic was turned into {caught:?}");
    };
    assert_eq!(payload.downcast_ref::<Explosion>(), Some(&Explosion(5)));
}

#[tokio::test]
async fn is_finished_tells_whether_the_task_has_ended() {
    let gate = Gate::new();
    let guard = gather::spawn(gate.wait());
    yield_now().await;
    assert!(!guard.is_finished());
    assert!(
        format!("{guard:?}").contains("finished: false"),
        "{guard:?}"
    );

    gate.open();
    assert!(yield_until(10, || guard.is_finished()).await);
    assert!(format!("{guard:?}").contains("finished: true"), "{guard:?}");
    guard.await;

    // A panic and an abort end a task too.
    let panicked = gather::spawn(explode::<()>(1));
    assert!(yield_until(10, || panicked.is_finished()).await);
    let aborted = gather::spawn(pending::<()>());
    aborted.abort();
    assert!(yield_until(10, || aborted.is_finished()).await);
    drop(AssertUnwindSafe(panicked).catch_unwind().await);
}

#[tokio::test]
async fn abort_stops_the_task_and_cancel_then_gives_none() {
    let base = alive();
    let log = Journal::new();
    let guard = gather::spawn(log.probe("task", pending::<u8>()));
    assert!(yield_until(10, || log.polls("task") == 1).await);

    guard.abort();
    assert!(yield_until(10, || guard.is_finished()).await);
    assert!(log.dropped("task"));
    assert_eq!(guard.cancel().await, None);
    assert_eq!(alive(), base);
}

#[tokio::test]
async fn awaiting_a_task_aborted_from_outside_panics_saying_so() {
    let handle = tokio::spawn(pending::<u8>());
    let stray = handle.abort_handle();
    let guard = AbortGuard::new(handle);
    stray.abort();

    let caught = AssertUnwindSafe(guard).catch_unwind().await;

    let Err(payload) = caught else {
        panic!("an aborted task gave an output: {caught:?}");
    };
    assert!(
        message(&*payload).contains("was cancelled"),
        "{}",
        message(&*payload)
    );
}

#[tokio::test]
async fn a_guard_awaited_to_its_end_cannot_be_cancelled() {
    let mut guard = gather::spawn(async { 1_u8 });
    assert_eq!((&mut guard).await, 1);
    assert!(guard.is_finished());

    let caught = AssertUnwindSafe(guard.cancel()).catch_unwind().await;
    let Err(payload) = caught else {
        panic!("cancel after the outcome was taken gave {caught:?}");
    };
    assert!(
        message(&*payload).contains("outcome"),
        "{}",
        message(&*payload)
    );
}

#[test]
fn spawn_outside_a_tokio_runtime_panics_saying_one_is_needed() {
    let caught = std::panic::catch_unwind(|| gather::spawn(async { 1_u8 }));
    let Err(payload) = caught else {
        panic!("gather::spawn spawned without a runtime");
    };
    let message = message(&*payload);
    assert!(message.contains("tokio runtime"), "{message}");
}

#[tokio::test(start_paused = true)]
async fn a_gather_awaits_the_task_of_a_guard_held_by_a_branch_it_cancels() {
    // In place (no `spawn`): a branch owns a guard. When the race cancels that branch, the
    // guard aborts its task, and the gather awaits it before returning.
    let base = alive();
    let log = Journal::new();

    let winner = gather!(policy = race;
        async {
            let guard = gather::spawn(log.probe("inner", pending::<()>()));
            guard.await;
            "inner"
        },
        async {
            sleep(Duration::from_millis(10)).await;
            "timer"
        },
    );
    let alive_at_return = alive();

    assert_eq!(winner, "timer");
    assert!(log.dropped("inner"), "{log:?}");
    assert_eq!(
        alive_at_return, base,
        "the guard's task outlived the gather"
    );
}

#[tokio::test(start_paused = true)]
async fn a_gather_awaits_the_tasks_of_guards_nested_deep_in_a_cancelled_branch() {
    let base = alive();
    let log = Journal::new();

    let result = gather!(
        outer = async {
            let (a, b) = gather!(policy = settle;
                gather::spawn(log.probe("a", pending::<u8>())),
                async { gather::spawn(log.probe("b", pending::<u8>())).await },
            );
            Ok::<u8, &str>(a + b)
        },
        failing = async {
            sleep(Duration::from_millis(10)).await;
            Err::<u8, &str>("failed")
        },
    );
    let alive_at_return = alive();

    assert!(result.is_err());
    let mut story = log.story();
    story.sort();
    assert_eq!(story, ["a dropped", "b dropped"]);
    assert_eq!(alive_at_return, base);
}
