//! The `tracing` feature: a span for each gather, and under it one span per branch, named by
//! the branch's label or source text, that records how the branch ended. Run with
//! `cargo test --features tracing --test tracing`.
#![cfg(feature = "tracing")]

use std::collections::HashMap;
use std::future::pending;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use gather::gather;
use tokio::time::sleep;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

/// One span as the recorder saw it.
#[derive(Debug, Clone, Default)]
struct Seen {
    name: &'static str,
    parent: Option<u64>,
    fields: HashMap<&'static str, String>,
    closed: bool,
    /// Events recorded while this span was entered.
    events: usize,
}

/// A subscriber that records every span, its fields, its parent and whether it closed.
#[derive(Clone, Default)]
struct Recorder {
    spans: Arc<Mutex<HashMap<u64, Seen>>>,
    stack: Arc<Mutex<Vec<u64>>>,
    next: Arc<AtomicU64>,
}

struct Fields<'a>(&'a mut HashMap<&'static str, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name(), value.to_owned());
    }
}

impl Subscriber for Recorder {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, attrs: &Attributes<'_>) -> Id {
        let id = self.next.fetch_add(1, Ordering::SeqCst) + 1;
        let mut seen = Seen {
            name: attrs.metadata().name(),
            parent: attrs.parent().map(Id::into_u64),
            ..Seen::default()
        };
        attrs.record(&mut Fields(&mut seen.fields));
        self.spans.lock().unwrap().insert(id, seen);
        Id::from_u64(id)
    }
    fn record(&self, span: &Id, values: &Record<'_>) {
        if let Some(seen) = self.spans.lock().unwrap().get_mut(&span.into_u64()) {
            values.record(&mut Fields(&mut seen.fields));
        }
    }
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, _: &Event<'_>) {
        let current = self.stack.lock().unwrap().last().copied();
        if let Some(id) = current
            && let Some(seen) = self.spans.lock().unwrap().get_mut(&id)
        {
            seen.events += 1;
        }
    }
    fn enter(&self, span: &Id) {
        self.stack.lock().unwrap().push(span.into_u64());
    }
    fn exit(&self, _: &Id) {
        self.stack.lock().unwrap().pop();
    }
    fn try_close(&self, id: Id) -> bool {
        if let Some(seen) = self.spans.lock().unwrap().get_mut(&id.into_u64()) {
            seen.closed = true;
        }
        true
    }
}

impl Recorder {
    /// The branch spans: (branch name, outcome, closed), in index order, with their gather.
    fn branches(&self) -> Vec<(String, String, bool)> {
        let spans = self.spans.lock().unwrap();
        let mut branches: Vec<_> = spans
            .values()
            .filter(|s| s.name == "branch")
            .map(|s| {
                let index: usize = s.fields["index"].parse().unwrap();
                let outcome = s.fields.get("outcome").cloned().unwrap_or_default();
                (index, s.fields["branch"].clone(), outcome, s.closed)
            })
            .collect();
        branches.sort();
        branches.into_iter().map(|(_, b, o, c)| (b, o, c)).collect()
    }

    /// The policy recorded by the only gather span, after checking every branch is its child.
    fn gather_policy(&self) -> String {
        let spans = self.spans.lock().unwrap();
        let gathers: Vec<(&u64, &Seen)> =
            spans.iter().filter(|(_, s)| s.name == "gather").collect();
        assert_eq!(gathers.len(), 1, "one gather span: {spans:?}");
        let (id, gather) = gathers[0];
        for branch in spans.values().filter(|s| s.name == "branch") {
            assert_eq!(
                branch.parent,
                Some(*id),
                "every branch span is under the gather's"
            );
        }
        gather.fields["policy"].clone()
    }
}

async fn after<T>(ms: u64, value: T) -> T {
    sleep(Duration::from_millis(ms)).await;
    value
}

fn owned(spans: &[(&str, &str, bool)]) -> Vec<(String, String, bool)> {
    spans
        .iter()
        .map(|(b, o, c)| ((*b).to_owned(), (*o).to_owned(), *c))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn cancel_records_ok_error_and_cancelled_under_the_gather_span() {
    let recorder = Recorder::default();
    let _default = tracing::subscriber::set_default(recorder.clone());

    let result = gather!(
        quick = after(10, Ok::<u8, &str>(1)),
        fails = after(20, Err::<u8, &str>("no")),
        after(30, Ok::<u8, &str>(3)),
    );

    assert!(result.is_err());
    assert_eq!(recorder.gather_policy(), "cancel");
    assert_eq!(
        recorder.branches(),
        owned(&[
            ("quick", "ok", true),
            ("fails", "error", true),
            ("after(30, Ok::<u8, &str>(3))", "cancelled", true),
        ])
    );
}

#[tokio::test(start_paused = true)]
async fn timeout_records_timed_out_for_what_the_deadline_stopped() {
    let recorder = Recorder::default();
    let _default = tracing::subscriber::set_default(recorder.clone());

    let result = gather!(policy = settle, timeout = Duration::from_millis(50);
        a = after(10, 1_u8),
        b = pending::<u8>(),
    );
    assert_eq!(result, (Some(1), None));
    assert_eq!(
        recorder.branches(),
        owned(&[("a", "ok", true), ("b", "timed out", true)])
    );
}

#[tokio::test(start_paused = true)]
async fn race_records_the_losers_as_cancelled() {
    let recorder = Recorder::default();
    let _default = tracing::subscriber::set_default(recorder.clone());

    let winner = gather!(policy = race; slow = after(50, "slow"), fast = after(5, "fast"));
    assert_eq!(winner, "fast");
    assert_eq!(recorder.gather_policy(), "race");
    assert_eq!(
        recorder.branches(),
        owned(&[("slow", "cancelled", true), ("fast", "ok", true)])
    );
}

#[tokio::test(start_paused = true)]
async fn a_panicking_branch_records_panicked() {
    let recorder = Recorder::default();
    let _default = tracing::subscriber::set_default(recorder.clone());

    let caught = std::panic::AssertUnwindSafe(async {
        gather!(policy = settle;
            boom = async {
                sleep(Duration::from_millis(5)).await;
                panic!("boom")
            },
            calm = after(50, ()),
        )
    })
    .catch_unwind()
    .await;

    assert!(caught.is_err());
    let branches = recorder.branches();
    assert_eq!(
        branches[0],
        ("boom".to_owned(), "panicked".to_owned(), true)
    );
    // The sibling was dropped by the unwinding: its span closed, with no outcome of its own.
    assert!(branches[1].2, "{branches:?}");
}

#[tokio::test(start_paused = true)]
async fn dynamic_branches_are_named_by_the_body_and_record_their_outcome() {
    let recorder = Recorder::default();
    let _default = tracing::subscriber::set_default(recorder.clone());

    let result = gather!(policy = finish, limit = 2;
        for n in 0..3_u8 => after(10, if n == 1 { Err("odd") } else { Ok(n) }),
    );

    assert!(result.is_err());
    assert_eq!(recorder.gather_policy(), "finish");
    let body = r#"after(10, if n == 1 { Err("odd") } else { Ok(n) })"#;
    assert_eq!(
        recorder.branches(),
        owned(&[
            (body, "ok", true),
            (body, "error", true),
            (body, "ok", true)
        ])
    );
}

#[tokio::test(start_paused = true)]
async fn events_inside_a_branch_belong_to_its_span() {
    let recorder = Recorder::default();
    let _default = tracing::subscriber::set_default(recorder.clone());

    let _ = gather!(policy = settle;
        talks = async {
            tracing::info!("first poll");
            sleep(Duration::from_millis(5)).await;
            tracing::info!("second poll");
        },
        silent = after(1, ()),
    );

    let spans = recorder.spans.lock().unwrap();
    let talks = spans
        .values()
        .find(|s| s.fields.get("branch").is_some_and(|b| b == "talks"))
        .unwrap();
    assert_eq!(talks.events, 2);
}

#[tokio::test(start_paused = true)]
async fn a_spawned_task_that_panics_records_panicked_and_the_others_cancelled() {
    let recorder = Recorder::default();
    let _default = tracing::subscriber::set_default(recorder.clone());

    let caught = std::panic::AssertUnwindSafe(async {
        gather!(spawn;
            boom = async {
                sleep(Duration::from_millis(5)).await;
                panic!("boom");
                #[allow(unreachable_code)]
                Ok::<(), ()>(())
            },
            calm = after(50, Ok::<(), ()>(())),
        )
    })
    .catch_unwind()
    .await;

    assert!(caught.is_err());
    assert_eq!(
        recorder.branches(),
        owned(&[("boom", "panicked", true), ("calm", "cancelled", true)])
    );
}
