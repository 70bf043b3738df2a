//! Model-based property tests: proptest makes up a gather (its policy, `timeout`, `limit` and
//! `spawn`, the fixed form with 1, 2, 3, 5 or 8 branches or the dynamic form with 0 to 64) and
//! a script for each branch (a few timer wakes, then a value, an error, a panic, or never an
//! end), runs it on a fresh current-thread runtime with paused time, and compares what it sees
//! with a small reference model of the policies written below: the outcome (values, which
//! branch failed or won, which were cancelled or pending, in order), the panic payload, which
//! branches were made and polled, that nothing is polled after the end, and that when
//! `gather!` returns every branch has finished or been dropped and no task of it is alive.
//!
//! A failing case is shrunk, printed, and its seed appended to
//! `tests/proptest-regressions/model.txt`, which proptest replays before any new case: commit
//! that file.
//!
//! Time is exact: a step is a `sleep` of whole milliseconds, so every branch finishes at a
//! known instant, and branches finishing at the same instant are seen in the same poll. Under
//! `spawn`, a branch's task runs after the poll that spawned it, so steps there are even and a
//! deadline odd: whether a task that ends exactly at the deadline beats it is up to tokio's
//! timer, not to `gather!`.

use std::any::Any;
use std::fmt;
use std::future::{Future, pending};
use std::panic::{AssertUnwindSafe, panic_any};
use std::sync::Once;
use std::time::Duration;

use futures::FutureExt;
use gather::{Branch, Error, gather};
use gather_tests::{Entry, Event, Journal};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use tokio::task::coop::unconstrained;
use tokio::time::{sleep, timeout};

// ---- a case --------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Policy {
    Cancel,
    Finish,
    Settle,
    Race,
    RaceOk,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Form {
    Fixed,
    Dynamic,
}

/// How a branch ends, once its steps are done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    Ok,
    Err,
    Panic,
    Never,
}

/// What a branch does: sleeps `steps` milliseconds one after the other, then ends.
#[derive(Clone, PartialEq, Eq)]
struct Script {
    steps: Vec<u64>,
    end: End,
}

impl Script {
    /// When a branch that starts at `start` finishes, if it ever does.
    fn finish(&self, start: u64) -> Option<u64> {
        (self.end != End::Never).then(|| start + self.steps.iter().sum::<u64>())
    }
}

impl fmt::Debug for Script {
    /// `2+1ms Ok`, `0ms Never`: short enough to read a shrunk case at a glance.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let steps: Vec<String> = self.steps.iter().map(u64::to_string).collect();
        let steps = if steps.is_empty() {
            "0".into()
        } else {
            steps.join("+")
        };
        write!(f, "{steps}ms {:?}", self.end)
    }
}

/// One gather to run. Times are in milliseconds.
#[derive(Clone, Debug)]
struct Case {
    policy: Policy,
    form: Form,
    timeout: Option<u64>,
    limit: Option<usize>,
    spawn: bool,
    scripts: Vec<Script>,
}

/// A branch's output: `Ok(ok(i))` or `Err(err(i))` for branch `i`.
type Out = Result<u64, u64>;

fn ok(i: usize) -> u64 {
    1000 + i as u64
}

fn err(i: usize) -> u64 {
    2000 + i as u64
}

/// The payload a branch panics with.
#[derive(Debug)]
struct Boom(usize);

/// The start of the panic of `race` over an empty iterator.
const EMPTY_RACE: &str = "gather!(policy = race; for ..) ran over an empty iterator";

/// What a gather gave, policy by policy, in one shape that the model gives too.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Outcome {
    /// `cancel` and `finish`: every value, in branch order.
    Values(Vec<u64>),
    /// `settle`: every output; `None` for a branch the deadline cancelled (or, in the fixed
    /// form, never started).
    Settled(Vec<Option<Out>>),
    /// `race`: the first outcome; `race_ok`: the first success; `None`: the deadline passed.
    Won(Option<Out>),
    Failed {
        branch: usize,
        error: u64,
        cancelled: Vec<usize>,
    },
    Failures(Vec<(usize, u64)>),
    TimedOut(Vec<usize>),
    /// The gather panicked with `Boom(i)`.
    Boom(usize),
    /// The gather panicked with this message.
    Panic(String),
    /// The gather was still running an hour later.
    Hung,
}

// ---- running a case ------------------------------------------------------------------------

/// Later than any branch of any case ends: 64 branches one at a time, 3 steps of 8 ms each.
const HORIZON: Duration = Duration::from_secs(3600);

/// What the branches need: the journal they write to, and their scripts.
struct Ctx {
    journal: Journal,
    scripts: Vec<Script>,
}

/// Branch `i`: its script, under a probe named `i`, marking `made i` in the journal when the
/// branch is made. The script runs outside tokio's cooperative budget (128 ready polls per
/// task poll), so that a timer that has fired is always seen as fired, however many branches
/// one poll of the gather visits.
fn branch(ctx: &Ctx, i: usize) -> impl Future<Output = Out> + Send + 'static {
    ctx.journal.mark(&format!("made {i}"));
    let script = ctx.scripts[i].clone();
    ctx.journal
        .probe(i.to_string(), unconstrained(run(i, script)))
}

async fn run(i: usize, script: Script) -> Out {
    for ms in script.steps {
        sleep(Duration::from_millis(ms)).await;
    }
    match script.end {
        End::Ok => Ok(ok(i)),
        End::Err => Err(err(i)),
        End::Panic => panic_any(Boom(i)),
        End::Never => pending().await,
    }
}

/// `gather!(OPTIONS; BRANCHES)`, from the two as bracketed token lists.
macro_rules! g {
    ([$($option:tt)*] [$($branch:tt)*]) => {
        gather!($($option)*; $($branch)*)
    };
}

/// Turns what a gather returned into an [`Outcome`]: by the form (`fixed` with the tuple's
/// names, or `dynamic`) and the shape of the policy's output.
macro_rules! outcome {
    (fixed, values, [$($b:ident)+], $out:expr) => {
        match $out {
            Ok(($($b,)+)) => Outcome::Values(vec![$($b),+]),
            Err(e) => error(e, Form::Fixed),
        }
    };
    (dynamic, values, [], $out:expr) => {
        match $out {
            Ok(values) => Outcome::Values(values),
            Err(e) => error(e, Form::Dynamic),
        }
    };
    (fixed, settle, [$($b:ident)+], $out:expr) => {{
        let ($($b,)+) = $out;
        Outcome::Settled(vec![$(Some($b)),+])
    }};
    (dynamic, settle, [], $out:expr) => {
        Outcome::Settled($out.into_iter().map(Some).collect())
    };
    (fixed, settle_timed, [$($b:ident)+], $out:expr) => {{
        let ($($b,)+) = $out;
        Outcome::Settled(vec![$($b),+])
    }};
    (dynamic, settle_timed, [], $out:expr) => {
        Outcome::Settled($out)
    };
    ($form:ident, race, $b:tt, $out:expr) => {
        Outcome::Won(Some($out))
    };
    ($form:ident, race_timed, $b:tt, $out:expr) => {
        Outcome::Won($out)
    };
    (fixed, race_ok, $b:tt, $out:expr) => {
        match $out {
            Ok(value) => Outcome::Won(Some(Ok(value))),
            Err(e) => error(e, Form::Fixed),
        }
    };
    (dynamic, race_ok, $b:tt, $out:expr) => {
        match $out {
            Ok(value) => Outcome::Won(Some(Ok(value))),
            Err(e) => error(e, Form::Dynamic),
        }
    };
}

/// Runs `BRANCHES` under the case's policy and options: one `gather!` per combination, since
/// options are syntax. Without a limit, `limit = usize::MAX`: what `gather!` uses itself.
macro_rules! every_option {
    ($case:ident, $form:ident $names:tt $branches:tt) => {{
        let max = $case.limit.unwrap_or(usize::MAX);
        let within = Duration::from_millis($case.timeout.unwrap_or(0));
        match ($case.policy, $case.timeout.is_some(), $case.spawn) {
            (Policy::Cancel, false, false) => outcome!($form, values, $names, g!([policy = cancel, limit = max] $branches)),
            (Policy::Cancel, false, true) => outcome!($form, values, $names, g!([policy = cancel, limit = max, spawn] $branches)),
            (Policy::Cancel, true, false) => outcome!($form, values, $names, g!([policy = cancel, limit = max, timeout = within] $branches)),
            (Policy::Cancel, true, true) => outcome!($form, values, $names, g!([policy = cancel, limit = max, timeout = within, spawn] $branches)),
            (Policy::Finish, false, false) => outcome!($form, values, $names, g!([policy = finish, limit = max] $branches)),
            (Policy::Finish, false, true) => outcome!($form, values, $names, g!([policy = finish, limit = max, spawn] $branches)),
            (Policy::Finish, true, false) => outcome!($form, values, $names, g!([policy = finish, limit = max, timeout = within] $branches)),
            (Policy::Finish, true, true) => outcome!($form, values, $names, g!([policy = finish, limit = max, timeout = within, spawn] $branches)),
            (Policy::Settle, false, false) => outcome!($form, settle, $names, g!([policy = settle, limit = max] $branches)),
            (Policy::Settle, false, true) => outcome!($form, settle, $names, g!([policy = settle, limit = max, spawn] $branches)),
            (Policy::Settle, true, false) => outcome!($form, settle_timed, $names, g!([policy = settle, limit = max, timeout = within] $branches)),
            (Policy::Settle, true, true) => outcome!($form, settle_timed, $names, g!([policy = settle, limit = max, timeout = within, spawn] $branches)),
            (Policy::Race, false, false) => outcome!($form, race, $names, g!([policy = race, limit = max] $branches)),
            (Policy::Race, false, true) => outcome!($form, race, $names, g!([policy = race, limit = max, spawn] $branches)),
            (Policy::Race, true, false) => outcome!($form, race_timed, $names, g!([policy = race, limit = max, timeout = within] $branches)),
            (Policy::Race, true, true) => outcome!($form, race_timed, $names, g!([policy = race, limit = max, timeout = within, spawn] $branches)),
            (Policy::RaceOk, false, false) => outcome!($form, race_ok, $names, g!([policy = race_ok, limit = max] $branches)),
            (Policy::RaceOk, false, true) => outcome!($form, race_ok, $names, g!([policy = race_ok, limit = max, spawn] $branches)),
            (Policy::RaceOk, true, false) => outcome!($form, race_ok, $names, g!([policy = race_ok, limit = max, timeout = within] $branches)),
            (Policy::RaceOk, true, true) => outcome!($form, race_ok, $names, g!([policy = race_ok, limit = max, timeout = within, spawn] $branches)),
        }
    }};
}

/// The fixed form at one arity: `gather!(b0 = branch(ctx, 0), b1 = branch(ctx, 1), ..)`.
macro_rules! fixed_form {
    ($($run:ident [$($b:ident $i:literal)+])+) => {$(
        async fn $run(case: &Case, ctx: &Ctx) -> Outcome {
            every_option!(case, fixed [$($b)+] [$($b = branch(ctx, $i),)+])
        }
    )+};
}

fixed_form! {
    fixed1 [b0 0]
    fixed2 [b0 0 b1 1]
    fixed3 [b0 0 b1 1 b2 2]
    fixed5 [b0 0 b1 1 b2 2 b3 3 b4 4]
    fixed8 [b0 0 b1 1 b2 2 b3 3 b4 4 b5 5 b6 6 b7 7]
}

async fn fixed(case: &Case, ctx: &Ctx) -> Outcome {
    match case.scripts.len() {
        1 => fixed1(case, ctx).await,
        2 => fixed2(case, ctx).await,
        3 => fixed3(case, ctx).await,
        5 => fixed5(case, ctx).await,
        8 => fixed8(case, ctx).await,
        n => unreachable!("no fixed form with {n} branches"),
    }
}

async fn dynamic(case: &Case, ctx: &Ctx) -> Outcome {
    let n = case.scripts.len();
    every_option!(case, dynamic [] [for i in 0..n => branch(ctx, i)])
}

/// The outcome of an error, checking each branch's name on the way: its label in the fixed
/// form, the body's source text in the dynamic form.
fn error(error: Error<u64>, form: Form) -> Outcome {
    let index = |branch: &Branch| {
        let name = match form {
            Form::Fixed => format!("b{}", branch.index()),
            Form::Dynamic => "branch(ctx, i)".to_owned(),
        };
        assert_eq!(branch.name(), name, "the name of branch {}", branch.index());
        branch.index()
    };
    let indices = |list: &[Branch]| list.iter().map(index).collect();
    match error {
        Error::Failed {
            branch,
            error,
            cancelled,
            ..
        } => Outcome::Failed {
            branch: index(&branch),
            error,
            cancelled: indices(&cancelled),
        },
        Error::Failures { errors, .. } => {
            Outcome::Failures(errors.iter().map(|(b, e)| (index(b), *e)).collect())
        }
        Error::TimedOut { pending, .. } => Outcome::TimedOut(indices(&pending)),
        other => panic!("an error the model does not know: {other:?}"),
    }
}

fn panicked(payload: Box<dyn Any + Send>) -> Outcome {
    match payload.downcast::<Boom>() {
        Ok(boom) => Outcome::Boom(boom.0),
        Err(payload) => Outcome::Panic(message(&*payload)),
    }
}

fn message(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_default()
}

/// Keeps the expected panics (`Boom`, the empty race) out of the test's output; any other
/// panic, such as a failed assertion, is reported as usual.
fn quiet_expected_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let report = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let payload = info.payload();
            if !(payload.is::<Boom>() || message(payload).starts_with(EMPTY_RACE)) {
                report(info);
            }
        }));
    });
}

/// What a run showed.
#[derive(Debug)]
struct Seen {
    outcome: Outcome,
    /// The branches made, in order.
    made: Vec<usize>,
    /// The branches polled, in the order of their first poll.
    polled: Vec<usize>,
    /// Branches made that had neither finished nor been dropped when `gather!` returned.
    unended: Vec<usize>,
    /// The journal from the start to the return of `gather!`.
    journal: Vec<Entry>,
    /// What the branches did after `gather!` returned, while the runtime ran on: nothing.
    afterwards: Vec<Entry>,
    /// Tasks alive before the gather, and when it had returned.
    alive: (usize, usize),
}

fn alive() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

/// The probe an entry is about, if any.
fn probe(entry: &Entry) -> Option<usize> {
    match entry.event {
        Event::Mark => None,
        _ => entry.who.parse().ok(),
    }
}

async fn scenario(case: Case) -> Seen {
    let ctx = Ctx {
        journal: Journal::new(),
        scripts: case.scripts.clone(),
    };
    let journal = ctx.journal.clone();
    let before = alive();
    let gather = async {
        match case.form {
            Form::Fixed => fixed(&case, &ctx).await,
            Form::Dynamic => dynamic(&case, &ctx).await,
        }
    };
    let caught = timeout(HORIZON, AssertUnwindSafe(gather).catch_unwind()).await;
    let outcome = match caught {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(payload)) => panicked(payload),
        Err(_) => {
            // Dropping a gather aborts its tasks without waiting (Rust has no async drop):
            // tokio stops them at their next turn.
            if case.spawn {
                sleep(Duration::from_millis(1)).await;
            }
            Outcome::Hung
        }
    };
    let after = alive();
    let returned = journal.entries();
    sleep(HORIZON).await;
    let afterwards = journal.entries().split_off(returned.len());

    let made = returned
        .iter()
        .filter(|e| e.event == Event::Mark)
        .filter_map(|e| e.who.strip_prefix("made ")?.parse().ok())
        .collect();
    let mut polled = Vec::new();
    for e in returned.iter().filter(|e| e.event == Event::Polled) {
        let i = probe(e).expect("a probe");
        if !polled.contains(&i) {
            polled.push(i);
        }
    }
    let ended = |i: usize| {
        let mut events = returned.iter().filter(|e| probe(e) == Some(i));
        events.any(|e| matches!(e.event, Event::Finished | Event::Dropped))
    };
    let unended = (0..case.scripts.len())
        .filter(|&i| returned.iter().any(|e| e.who == format!("made {i}")) && !ended(i))
        .collect();
    Seen {
        outcome,
        made,
        polled,
        unended,
        journal: returned,
        afterwards,
        alive: (before, after),
    }
}

/// Runs `case` and checks it against the model.
fn check(case: &Case) -> Result<(), TestCaseError> {
    quiet_expected_panics();
    let expected = model(case);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a runtime");
    // The gather runs on a task of its own rather than in `block_on`, which polls its future
    // only between batches of tasks: on a task, it is polled after every branch task that
    // woke it at the same instant, as the model has it.
    let seen = runtime
        .block_on(runtime.spawn(scenario(case.clone())))
        .expect("the scenario catches every panic of the gather");

    prop_assert!(
        expected.outcomes.contains(&seen.outcome),
        "gather! gave {:?}, the model {:?}",
        seen.outcome,
        expected.outcomes
    );
    prop_assert_eq!(&seen.made, &expected.made, "branches made");
    prop_assert!(
        seen.unended.is_empty(),
        "branches {:?} still running when gather! returned",
        seen.unended
    );
    prop_assert_eq!(
        seen.alive.1,
        seen.alive.0,
        "tasks alive after gather! returned"
    );
    prop_assert!(
        seen.afterwards.is_empty(),
        "branches ran after gather! returned: {:?}",
        seen.afterwards
    );
    // In place, the gather polls the branches itself: which, and when, is exact.
    if !case.spawn {
        prop_assert_eq!(&seen.polled, &expected.polled, "branches polled");
        // The poll that ends the gather (a failure, a winner, a panic) is the last.
        if let Some(last) = expected.last {
            let at = seen
                .journal
                .iter()
                .rposition(|e| e.event == Event::Polled && probe(e) == Some(last))
                .expect("the last branch was polled");
            let later: Vec<&Entry> = seen.journal[at..]
                .iter()
                .filter(|e| e.event == Event::Polled)
                .skip(1)
                .collect();
            prop_assert!(
                later.is_empty(),
                "polled after branch {}: {:?}",
                last,
                later
            );
        }
    }
    Ok(())
}

// ---- the model -----------------------------------------------------------------------------

/// What the model expects of a case.
struct Expected {
    /// The outcome: one of these (several only when spawned tasks panic at the same instant:
    /// then the first that the gather awaits gives the payload).
    outcomes: Vec<Outcome>,
    made: Vec<usize>,
    polled: Vec<usize>,
    /// In place: the branch whose poll ended the gather, after which nothing was polled.
    last: Option<usize>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Not polled yet.
    Idle,
    /// First polled at pass `pass`; finishes at `at`, or never.
    Running {
        at: Option<u64>,
        pass: usize,
    },
    Done,
}

/// Runs `case` pass by pass, a pass being one poll of the gather, which visits the branches in
/// branch order. Passes happen when a branch finishes, at the deadline, and under `spawn` once
/// more at the same instant when a task spawned by a pass has already ended.
fn model(case: &Case) -> Expected {
    let n = case.scripts.len();
    let limit = case.limit.unwrap_or(usize::MAX);
    let spawn = case.spawn;
    // The fixed form makes every branch up front, and starts the first `limit` with the
    // gather; the dynamic form makes and starts a branch when it takes its item.
    let (mut started, mut made) = match case.form {
        Form::Fixed => (limit.min(n), (0..n).collect()),
        Form::Dynamic => (0, Vec::new()),
    };
    let mut running = started;
    let mut state = vec![State::Idle; n];
    let mut outs: Vec<Option<Out>> = vec![None; n];
    let mut errors = Vec::new();
    let mut polled = Vec::new();
    let (mut now, mut pass) = (0, 0);
    loop {
        // Whether the gather sees, in this pass, that a branch has finished. A spawned task
        // runs after the pass that spawned it, so that pass cannot see it finish.
        let seen = |s: State| match s {
            State::Running { at, pass: p } => at == Some(now) && (!spawn || p < pass),
            _ => false,
        };
        let mut pending = false;
        // The branch whose outcome ends the gather early.
        let mut ended = None;
        for i in 0..n {
            if state[i] == State::Done {
                continue;
            }
            if i >= started {
                if running >= limit {
                    pending = true;
                    break;
                }
                started += 1;
                running += 1;
                if case.form == Form::Dynamic {
                    made.push(i);
                }
            }
            if state[i] == State::Idle {
                let at = case.scripts[i].finish(now);
                state[i] = State::Running { at, pass };
                polled.push(i);
            }
            if !seen(state[i]) {
                pending = true;
                continue;
            }
            state[i] = State::Done;
            running -= 1;
            let out = match case.scripts[i].end {
                End::Ok => Ok(ok(i)),
                End::Err => Err(err(i)),
                End::Panic => {
                    ended = Some(i);
                    break;
                }
                End::Never => unreachable!("a branch that never ends was seen ending"),
            };
            match (case.policy, out) {
                (Policy::Finish | Policy::RaceOk, Err(error)) => errors.push((i, error)),
                (policy, out) => {
                    outs[i] = Some(out);
                    let ends = match policy {
                        Policy::Cancel => out.is_err(),
                        Policy::Race | Policy::RaceOk => true,
                        Policy::Finish | Policy::Settle => false,
                    };
                    if ends {
                        ended = Some(i);
                        break;
                    }
                }
            }
        }
        let expect = |outcomes: Vec<Outcome>, last| Expected {
            outcomes,
            made: made.clone(),
            polled: polled.clone(),
            last,
        };

        // Ending early cancels every branch that started and has not finished. Under spawn, a
        // task that has ended already is awaited, not cancelled: its panic is resumed.
        let stop = || {
            let (mut cancelled, mut panics) = (Vec::new(), Vec::new());
            for (i, &s) in state.iter().enumerate().take(started) {
                match s {
                    State::Done => {}
                    s if spawn && seen(s) => {
                        if case.scripts[i].end == End::Panic {
                            panics.push(Outcome::Boom(i));
                        }
                    }
                    _ => cancelled.push(i),
                }
            }
            (cancelled, panics)
        };
        if let Some(i) = ended {
            let (cancelled, panics) = stop();
            let outcomes = match (case.scripts[i].end, case.policy) {
                // In place at once; under spawn, once the other tasks are gone.
                (End::Panic, _) => vec![Outcome::Boom(i)],
                _ if !panics.is_empty() => panics,
                (_, Policy::Cancel) => vec![Outcome::Failed {
                    branch: i,
                    error: err(i),
                    cancelled,
                }],
                _ => vec![Outcome::Won(outs[i])],
            };
            return expect(outcomes, Some(i));
        }
        if !pending {
            let values = || outs.iter().map(|o| o.unwrap().unwrap()).collect();
            errors.sort();
            let outcome = match case.policy {
                Policy::Cancel => Outcome::Values(values()),
                Policy::Finish if errors.is_empty() => Outcome::Values(values()),
                Policy::Finish | Policy::RaceOk => Outcome::Failures(errors.clone()),
                Policy::Settle => Outcome::Settled(outs.clone()),
                // A race ends at its first outcome: only an empty one gets here.
                Policy::Race => Outcome::Panic(format!(
                    "{EMPTY_RACE}: a race with no branch has no outcome to return"
                )),
            };
            return expect(vec![outcome], None);
        }
        // The deadline is looked at after the branches, in the same poll.
        if case.timeout.is_some_and(|t| t <= now) {
            let (pending, panics) = stop();
            let outcome = match (case.policy, case.form) {
                _ if !panics.is_empty() => return expect(panics, None),
                (Policy::Cancel | Policy::Finish | Policy::RaceOk, _) => Outcome::TimedOut(pending),
                (Policy::Settle, Form::Fixed) => Outcome::Settled(outs.clone()),
                // The dynamic form gives an output for each item it took.
                (Policy::Settle, Form::Dynamic) => Outcome::Settled(outs[..started].to_vec()),
                (Policy::Race, _) => Outcome::Won(None),
            };
            return expect(vec![outcome], None);
        }

        let spawned_and_ended = |s: &State| {
            *s == State::Running {
                at: Some(now),
                pass,
            }
        };
        let again = spawn && state.iter().any(spawned_and_ended);
        pass += 1;
        if !again {
            let timers = state.iter().filter_map(|s| match *s {
                State::Running { at, .. } => at,
                _ => None,
            });
            match timers.chain(case.timeout).filter(|&t| t > now).min() {
                Some(t) => now = t,
                None => return expect(vec![Outcome::Hung], None),
            }
        }
    }
}

// ---- the properties ------------------------------------------------------------------------

fn policy() -> impl Strategy<Value = Policy> {
    prop_oneof![
        Just(Policy::Cancel),
        Just(Policy::Finish),
        Just(Policy::Settle),
        Just(Policy::Race),
        Just(Policy::RaceOk),
    ]
}

/// A case in `form`, in place or spawned. Each case draws how often its branches panic, never
/// end and fail (out of 20; the rest succeed), so that some cases have none of one kind and
/// others many. Under `spawn`, steps are even and the deadline odd (see the module's docs).
fn case(form: Form, spawn: impl Strategy<Value = bool>) -> impl Strategy<Value = Case> {
    // A roll shrinks towards 0, a success after no step: the simplest branch.
    let script = (prop::collection::vec(1..=4_u64, 0..=3), 0..20_u8);
    let scripts = match form {
        Form::Fixed => (
            prop::sample::select(vec![1, 2, 3, 5, 8]),
            prop::collection::vec(script, 8),
        )
            .prop_map(|(n, mut scripts)| {
                scripts.truncate(n);
                scripts
            })
            .boxed(),
        Form::Dynamic => prop_oneof![
            prop::collection::vec(script.clone(), 0..=8),
            prop::collection::vec(script, 0..=64),
        ]
        .boxed(),
    };
    let mix = (
        prop_oneof![3 => Just(0_u8), 1 => 1..=2_u8],
        prop_oneof![2 => Just(0_u8), 1 => 1..=3_u8],
        0..=10_u8,
    );
    let options = (
        policy(),
        prop::option::of(0..=24_u64),
        prop::option::of(1..=6_usize),
        spawn,
    );
    (options, mix, scripts).prop_map(move |(options, (panic, never, fail), scripts)| {
        let (policy, timeout, limit, spawn) = options;
        let scale = if spawn { 2 } else { 1 };
        let scripts = scripts
            .into_iter()
            .map(|(steps, roll)| Script {
                steps: steps.into_iter().map(|ms| ms * scale).collect(),
                end: match 19 - roll {
                    r if r < panic => End::Panic,
                    r if r < panic + never => End::Never,
                    r if r < panic + never + fail => End::Err,
                    _ => End::Ok,
                },
            })
            .collect();
        Case {
            policy,
            form,
            timeout: timeout.map(|t| if spawn { 2 * t + 1 } else { t }),
            limit,
            spawn,
            scripts,
        }
    })
}

/// The cases each property runs, and where failing ones are kept: beside this file, in
/// `tests/proptest-regressions/model.txt`, replayed before any new case.
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/proptest-regressions/model.txt"
        )))),
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(2000))]

    #[test]
    fn the_fixed_form_in_place_matches_the_model(case in case(Form::Fixed, Just(false))) {
        check(&case)?;
    }
}

proptest! {
    #![proptest_config(config(2000))]

    #[test]
    fn the_dynamic_form_in_place_matches_the_model(case in case(Form::Dynamic, Just(false))) {
        check(&case)?;
    }
}

proptest! {
    #![proptest_config(config(2000))]

    #[test]
    fn spawned_branches_match_the_model(
        case in prop_oneof![case(Form::Fixed, Just(true)), case(Form::Dynamic, Just(true))]
    ) {
        check(&case)?;
    }
}
