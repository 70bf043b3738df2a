//! Wakers from other threads, and wakers that outlive the gather: branches woken from other OS
//! threads, under the fixed and dynamic forms, on tokio and on `futures::executor`, finish as
//! they should; in the dynamic form a wake polls only the branch it belongs to; and a waker kept
//! after `gather!` has returned can be woken, cloned and dropped in any order, from any thread,
//! without a crash, without waking a branch, and without keeping the gather's state alive once
//! the last one is dropped; and the fixed form's wakers, which the next gather on the thread
//! reuses when none was kept, carry no wake of the gather before.

use std::future::{Future, pending, poll_fn};
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::thread;
use std::time::{Duration, Instant};

use futures::executor::block_on;
use gather::{Error, gather};
use gather_tests::{Gate, Journal, Live, Probe, Wakes};

// ---- a bell rung from other threads ----------------------------------------------------------

#[derive(Debug, Default)]
struct BellState {
    rings: usize,
    released: bool,
    waker: Option<Waker>,
}

/// A doorbell that another thread rings. [`wait`](Bell::wait)`(n)` is pending until the bell
/// has rung `n` times; while it waits, the bell keeps the waiter's waker, and a ring takes it
/// and wakes it. `parks` counts the polls that ended pending, so that a test can wait until a
/// poll is over.
#[derive(Debug, Default)]
struct Bell {
    state: Mutex<BellState>,
    parks: AtomicUsize,
}

impl Bell {
    fn lock(&self) -> MutexGuard<'_, BellState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Rings once, and wakes the waiter, if any.
    fn ring(&self) {
        let waker = {
            let mut state = self.lock();
            state.rings += 1;
            state.waker.take()
        };
        waker.into_iter().for_each(Waker::wake);
    }

    /// Lets every wait finish, and wakes the waiter, if any.
    fn release(&self) {
        let waker = {
            let mut state = self.lock();
            state.released = true;
            state.waker.take()
        };
        waker.into_iter().for_each(Waker::wake);
    }

    /// A clone of the waiter's waker, if one is waiting.
    fn waker(&self) -> Option<Waker> {
        self.lock().waker.clone()
    }

    fn parks(&self) -> usize {
        self.parks.load(Ordering::SeqCst)
    }

    /// Finishes once the bell has rung `n` times.
    async fn wait(&self, n: usize) {
        poll_fn(|cx| {
            let mut state = self.lock();
            if state.released || state.rings >= n {
                return Poll::Ready(());
            }
            state.waker = Some(cx.waker().clone());
            drop(state);
            self.parks.fetch_add(1, Ordering::SeqCst);
            Poll::Pending
        })
        .await;
    }
}

/// How many times each branch waits for its bell.
const ROUNDS: usize = 4;

/// Branch `i`: waits for `ROUNDS` rings of its bell, then outputs `i`.
fn ringing(journal: &Journal, bell: &Arc<Bell>, i: usize) -> Probe<impl Future<Output = usize>> {
    let bell = Arc::clone(bell);
    journal.probe(i.to_string(), async move {
        for round in 1..=ROUNDS {
            bell.wait(round).await;
        }
        i
    })
}

/// Waits (up to 10 seconds) until `done()`.
fn wait_until(what: impl Fn() -> String, done: impl Fn() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out waiting until {}",
            what()
        );
        thread::sleep(Duration::from_micros(50));
    }
}

/// A small deterministic scramble: xorshift.
fn scrambled(mut items: Vec<usize>, mut seed: u64) -> Vec<usize> {
    for i in (1..items.len()).rev() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        items.swap(i, (seed % (i as u64 + 1)) as usize);
    }
    items
}

/// Rings every bell `ROUNDS` times, in a scrambled order (skipping, for now, branches that
/// `limit` has not started yet), each ring from this thread or from a thread of its own, and
/// after each ring waits until the gather is still: the branch it woke has parked again or
/// finished, no poll is under way, and as many branches have started as `limit` lets. Every
/// few rings it also wakes a waiting branch's waker with no ring, from another thread (a
/// spurious wake). With `exact` (the dynamic form), checks after each ring or wake that the
/// branch it belongs to was polled once, and no other branch was polled, but for those that
/// started in that step.
fn ring_all(bells: &[Arc<Bell>], journal: &Journal, limit: usize, exact: bool) -> usize {
    let n = bells.len();
    let name = |i: usize| i.to_string();
    let polls = || (0..n).map(|i| journal.polls(&name(i))).collect::<Vec<_>>();
    let finished = |i: usize| journal.finished(&name(i));
    // Still: every poll of a branch ended (parked or finished), and every branch that may
    // have started has.
    let still = || {
        let polls = polls();
        let done = (0..n).filter(|&i| finished(i)).count();
        let started = polls.iter().filter(|&&p| p > 0).count();
        started == n.min(done + limit)
            && (0..n).all(|i| polls[i] == bells[i].parks() + usize::from(finished(i)))
    };
    wait_until(
        || format!("the first branches have started: {:?}", polls()),
        still,
    );
    let mut remaining = scrambled(
        (0..n).flat_map(|i| [i; ROUNDS]).collect(),
        0x9e37_79b9_7f4a_7c15,
    );
    let waiting = |i: usize| bells[i].parks() > 0 && !finished(i);
    let step_of = |i: usize, wake: &dyn Fn(), how: &str| {
        let before = polls();
        let parks = bells[i].parks();
        wake();
        wait_until(
            || format!("branch {i} was polled after {how}: {:?}", polls()),
            || (bells[i].parks() > parks || finished(i)) && still(),
        );
        if exact {
            let after = polls();
            assert_eq!(after[i], before[i] + 1, "{how} of branch {i}: {after:?}");
            for k in (0..n).filter(|&k| k != i) {
                let started_now = before[k] == 0 && after[k] == 1;
                assert!(
                    after[k] == before[k] || started_now,
                    "{how} of branch {i} polled branch {k}: {before:?} -> {after:?}"
                );
            }
        }
    };
    let (mut step, mut spurious) = (0, 0);
    while !remaining.is_empty() {
        let at = remaining
            .iter()
            .position(|&i| waiting(i))
            .expect("a branch with rings to go is waiting");
        let i = remaining.remove(at);
        let bell = Arc::clone(&bells[i]);
        if step % 2 == 0 {
            step_of(i, &|| bell.ring(), &format!("ring {step} (here)"));
        } else {
            let ring = || {
                let bell = Arc::clone(&bell);
                thread::spawn(move || bell.ring()).join().unwrap();
            };
            step_of(i, &ring, &format!("ring {step} (from a thread)"));
        }
        // A spurious wake of a branch still waiting: it is polled, and pends again.
        if step % 5 == 2
            && let Some(j) = (0..n).map(|k| (k + step) % n).find(|&k| waiting(k))
        {
            let waker = bells[j].waker().expect("a waiting branch keeps its waker");
            let wake = || {
                let waker = waker.clone();
                if step % 2 == 0 {
                    thread::spawn(move || waker.wake()).join().unwrap();
                } else {
                    thread::spawn(move || waker.wake_by_ref()).join().unwrap();
                }
            };
            step_of(j, &wake, &format!("a spurious wake after ring {step}"));
            spurious += 1;
        }
        step += 1;
    }
    assert!((0..n).all(finished));
    spurious
}

/// Runs [`ring_all`] on a thread of its own. If it fails, it releases every bell so that the
/// gather ends, and the failure is resumed by [`Driver::finish`].
struct Driver(thread::JoinHandle<usize>);

impl Driver {
    fn start(bells: &[Arc<Bell>], journal: &Journal, limit: usize, exact: bool) -> Self {
        let (bells, journal) = (bells.to_vec(), journal.clone());
        Driver(thread::spawn(move || {
            let result = catch_unwind(AssertUnwindSafe(|| {
                ring_all(&bells, &journal, limit, exact)
            }));
            result.unwrap_or_else(|panic| {
                bells.iter().for_each(|b| b.release());
                resume_unwind(panic)
            })
        }))
    }

    /// The number of spurious wakes, once every ring is done.
    fn finish(self) -> usize {
        self.0.join().unwrap_or_else(|panic| resume_unwind(panic))
    }
}

fn bells(n: usize) -> Vec<Arc<Bell>> {
    (0..n).map(|_| Arc::default()).collect()
}

/// A dynamic gather of `n` ringing branches, `limit` at a time if any, checked: every branch
/// polled once to start, then once per ring and once per spurious wake (`ring_all` checks
/// each step).
async fn dynamic_ringing(bells: Vec<Arc<Bell>>, journal: Journal, limit: Option<usize>) {
    let n = bells.len();
    let driver = Driver::start(&bells, &journal, limit.unwrap_or(n), true);
    let out = match limit {
        Some(limit) => gather!(policy = settle, limit = limit;
            for i in 0..n => ringing(&journal, &bells[i], i)
        ),
        None => gather!(policy = settle; for i in 0..n => ringing(&journal, &bells[i], i)),
    };
    let spurious = driver.finish();
    assert_eq!(out, (0..n).collect::<Vec<_>>());
    let polls: usize = (0..n).map(|i| journal.polls(&i.to_string())).sum();
    // The first poll of each branch, one per ring, one per spurious wake.
    assert!(spurious > 0);
    assert_eq!(polls, n + n * ROUNDS + spurious);
}

/// A fixed gather of four ringing branches, woken from other threads.
async fn fixed_ringing(bells: Vec<Arc<Bell>>, journal: Journal) {
    let driver = Driver::start(&bells, &journal, 4, false);
    let out = gather!(policy = settle;
        ringing(&journal, &bells[0], 0),
        ringing(&journal, &bells[1], 1),
        ringing(&journal, &bells[2], 2),
        ringing(&journal, &bells[3], 3),
    );
    driver.finish();
    assert_eq!(out, (0, 1, 2, 3));
    assert!((0..4).all(|i| journal.finished(&i.to_string())));
}

const DYNAMIC: usize = 24;

#[tokio::test]
async fn dynamic_wakes_from_other_threads_poll_only_their_branch_on_tokio() {
    dynamic_ringing(bells(DYNAMIC), Journal::new(), None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamic_wakes_from_other_threads_poll_only_their_branch_on_a_multi_thread_runtime() {
    let task = tokio::spawn(dynamic_ringing(bells(DYNAMIC), Journal::new(), Some(5)));
    task.await.unwrap_or_else(|e| resume_unwind(e.into_panic()));
}

#[test]
fn dynamic_wakes_from_other_threads_poll_only_their_branch_on_block_on() {
    block_on(dynamic_ringing(bells(DYNAMIC), Journal::new(), None));
}

#[test]
fn dynamic_wakes_from_other_threads_poll_only_their_branch_under_limit_on_block_on() {
    block_on(dynamic_ringing(bells(DYNAMIC), Journal::new(), Some(3)));
}

#[tokio::test]
async fn fixed_wakes_from_other_threads_finish_every_branch_on_tokio() {
    fixed_ringing(bells(4), Journal::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixed_wakes_from_other_threads_finish_every_branch_on_a_multi_thread_runtime() {
    let task = tokio::spawn(fixed_ringing(bells(4), Journal::new()));
    task.await.unwrap_or_else(|e| resume_unwind(e.into_panic()));
}

#[test]
fn fixed_wakes_from_other_threads_finish_every_branch_on_block_on() {
    block_on(fixed_ringing(bells(4), Journal::new()));
}

// ---- wakers kept after the gather returns ----------------------------------------------------

/// Where a branch keeps its waker for the test.
type Slot = Arc<Mutex<Option<Waker>>>;

fn lock(slot: &Slot) -> MutexGuard<'_, Option<Waker>> {
    slot.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Keeps a clone of its waker in `slot` at every poll; pending `pending` times (waking itself
/// each time), then finishes.
async fn stash(slot: Slot, mut pending: usize) {
    poll_fn(|cx| {
        *lock(&slot) = Some(cx.waker().clone());
        if pending == 0 {
            return Poll::Ready(());
        }
        pending -= 1;
        cx.waker().wake_by_ref();
        Poll::Pending
    })
    .await;
}

/// Branch `i` of the kept-waker tests: keeps its waker in `slot`; every fourth one then waits
/// forever (and is cancelled), branch 9 fails at its second poll, the others succeed then.
async fn stashing(slot: Slot, i: usize) -> Result<usize, usize> {
    stash(Arc::clone(&slot), 1).await;
    if i % 4 == 3 {
        pending::<()>().await;
    }
    if i == 9 { Err(i) } else { Ok(i) }
}

/// Wakes every waker many times from four threads at once, by `wake_by_ref` and by `wake` on
/// clones, and drops the clones there.
fn hammer(wakers: &[Waker]) {
    thread::scope(|scope| {
        for t in 0..4 {
            scope.spawn(move || {
                for round in 0..250 {
                    for waker in wakers {
                        if (round + t) % 2 == 0 {
                            waker.wake_by_ref();
                        } else {
                            // By value, on a clone: the path that `wake_by_ref` does not take.
                            let clone = waker.clone();
                            clone.wake();
                        }
                    }
                }
            });
        }
    });
}

/// Takes the wakers out of the slots, checking that no branch still holds a slot.
fn take_wakers(slots: &[Slot]) -> Vec<Waker> {
    slots
        .iter()
        .enumerate()
        .map(|(i, slot)| {
            assert_eq!(
                Arc::strong_count(slot),
                1,
                "branch {i}'s future still holds its slot after the gather returned"
            );
            lock(slot).take().expect("every branch kept its waker")
        })
        .collect()
}

/// Drops `wakers` in a scrambled order, some on other threads.
fn drop_scrambled(wakers: Vec<Waker>, seed: u64) {
    let mut wakers: Vec<Option<Waker>> = wakers.into_iter().map(Some).collect();
    let order = scrambled((0..wakers.len()).collect(), seed);
    thread::scope(|scope| {
        for (k, i) in order.into_iter().enumerate() {
            let waker = wakers[i].take();
            if k % 3 == 0 {
                scope.spawn(move || drop(waker));
            } else {
                drop(waker);
            }
        }
    });
}

/// Polls `fut` with `parent`'s waker until it is ready (at most 100 times).
fn poll_to_end<F: Future + ?Sized>(mut fut: Pin<&mut F>, parent: &Arc<Wakes>) -> F::Output {
    let waker = parent.waker();
    for _ in 0..100 {
        if let Poll::Ready(out) = fut.as_mut().poll(&mut Context::from_waker(&waker)) {
            return out;
        }
    }
    panic!("the gather did not finish within 100 polls");
}

#[test]
fn dynamic_wakers_kept_after_the_gather_returns_are_harmless_and_free_its_state() {
    let live = Live::new();
    let slots: Vec<Slot> = (0..16).map(|_| Slot::default()).collect();
    let parent = Wakes::new();
    let mut fut = Box::pin(async {
        gather!(for i in 0..16 => live.track(stashing(Arc::clone(&slots[i]), i)))
    });
    let result = poll_to_end(fut.as_mut(), &parent);
    drop(fut);
    let Err(Error::Failed { branch, .. }) = result else {
        panic!("expected Error::Failed, got {result:?}");
    };
    assert_eq!(branch.index(), 9);
    assert_eq!(live.now(), 0, "branch futures outlived the gather");

    let wakers = take_wakers(&slots);
    // Each branch had a waker of its own.
    for (i, a) in wakers.iter().enumerate() {
        for b in &wakers[i + 1..] {
            assert!(!a.will_wake(b), "two branches shared a waker");
        }
    }
    hammer(&wakers);
    let wakes = parent.count();
    hammer(&wakers);
    assert!(
        parent.count() - wakes <= wakers.len(),
        "kept wakers woke the finished gather's task {} times",
        parent.count() - wakes
    );
    drop_scrambled(wakers, 7);
    // The gather's state, which held the parent's waker, went with the last branch waker.
    assert_eq!(
        Arc::strong_count(&parent),
        1,
        "the gather's waker state outlived every waker"
    );
}

#[test]
fn fixed_wakers_kept_after_the_gather_returns_are_harmless_and_free_its_state() {
    let live = Live::new();
    let slots: Vec<Slot> = (0..4).map(|_| Slot::default()).collect();
    let parent = Wakes::new();
    let mut fut = Box::pin(async {
        gather!(
            live.track(stashing(Arc::clone(&slots[0]), 0)),
            live.track(stashing(Arc::clone(&slots[1]), 3)),
            live.track(stashing(Arc::clone(&slots[2]), 9)),
            live.track(stashing(Arc::clone(&slots[3]), 4)),
        )
    });
    let result = poll_to_end(fut.as_mut(), &parent);
    drop(fut);
    let Err(Error::Failed { branch, .. }) = result else {
        panic!("expected Error::Failed, got {result:?}");
    };
    assert_eq!(branch.index(), 2);
    assert_eq!(live.now(), 0, "branch futures outlived the gather");

    let wakers = take_wakers(&slots);
    hammer(&wakers);
    drop_scrambled(wakers, 11);
    assert_eq!(
        Arc::strong_count(&parent),
        1,
        "a clone of the gather's waker outlived every kept waker"
    );
}

/// Runs the dynamic kept-waker scenario on an executor, given as `run`.
fn kept_wakers_on(run: impl FnOnce(Pin<Box<dyn Future<Output = ()> + Send + '_>>)) {
    let live = Live::new();
    let slots: Vec<Slot> = (0..16).map(|_| Slot::default()).collect();
    run(Box::pin(async {
        let result = gather!(policy = settle;
            for i in 0..16 => live.track(stashing(Arc::clone(&slots[i]), i % 3))
        );
        assert_eq!(result.len(), 16);
        let fixed = gather!(policy = settle;
            live.track(stashing(Arc::new(Mutex::new(None)), 1)),
            live.track(stash(Arc::new(Mutex::new(None)), 2)),
        );
        assert_eq!(fixed, (Ok(1), ()));
    }));
    assert_eq!(live.now(), 0, "branch futures outlived the gather");
    let wakers = take_wakers(&slots);
    hammer(&wakers);
    drop_scrambled(wakers, 3);
}

#[test]
fn wakers_kept_after_the_gather_returns_are_harmless_on_block_on() {
    kept_wakers_on(|fut| block_on(fut));
}

#[test]
fn wakers_kept_after_the_gather_returns_are_harmless_on_tokio() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    kept_wakers_on(|fut| runtime.block_on(fut));
    drop(runtime);
}

// ---- wake and wake_by_ref, clones dropped in every order -------------------------------------

/// What one clone of a branch's waker does.
#[derive(Debug, Clone, Copy)]
enum Op {
    Wake,
    WakeByRefThenDrop,
    Drop,
    WakeOnAThread,
    WakeByRefOnAThreadThenDrop,
}

fn apply(op: Op, waker: Waker) {
    match op {
        Op::Wake => waker.wake(),
        Op::WakeByRefThenDrop => {
            waker.wake_by_ref();
            drop(waker);
        }
        Op::Drop => drop(waker),
        Op::WakeOnAThread => thread::spawn(move || waker.wake()).join().unwrap(),
        Op::WakeByRefOnAThreadThenDrop => thread::spawn(move || {
            waker.wake_by_ref();
            drop(waker);
        })
        .join()
        .unwrap(),
    }
}

/// Every order of `items`.
fn permutations<T: Copy>(items: &[T]) -> Vec<Vec<T>> {
    if items.len() <= 1 {
        return vec![items.to_vec()];
    }
    let mut all = Vec::new();
    for (i, &first) in items.iter().enumerate() {
        let mut rest = items.to_vec();
        rest.remove(i);
        for mut tail in permutations(&rest) {
            tail.insert(0, first);
            all.push(tail);
        }
    }
    all
}

#[test]
fn dynamic_clones_woken_and_dropped_in_every_order_poll_only_their_branch_once() {
    let journal = Journal::new();
    let bells = bells(8);
    let parent = Wakes::new();
    let waker = parent.waker();
    let mut cx = Context::from_waker(&waker);
    let mut fut = Box::pin(async {
        gather!(policy = settle; for i in 0..8 => journal.probe(i.to_string(), bells[i].wait(1)))
    });
    let polls = || {
        (0..8)
            .map(|i| journal.polls(&i.to_string()))
            .collect::<Vec<_>>()
    };
    assert!(fut.as_mut().poll(&mut cx).is_pending());
    assert_eq!(polls(), [1; 8]);

    let ops = [
        Op::Wake,
        Op::WakeByRefThenDrop,
        Op::Drop,
        Op::WakeOnAThread,
        Op::WakeByRefOnAThreadThenDrop,
    ];
    for (k, order) in permutations(&ops).into_iter().enumerate() {
        let j = k % 8;
        let original = bells[j].waker().expect("branch waits");
        let wakes = parent.count();
        let clones: Vec<Waker> = order.iter().map(|_| original.clone()).collect();
        if k % 2 == 0 {
            drop(original);
            order.iter().zip(clones).for_each(|(&op, c)| apply(op, c));
        } else {
            order.iter().zip(clones).for_each(|(&op, c)| apply(op, c));
            drop(original);
        }
        // Waking the branch woke the gather.
        assert!(
            parent.count() > wakes,
            "order {k}: the gather was not woken"
        );
        let before = polls();
        assert!(fut.as_mut().poll(&mut cx).is_pending());
        let mut expected = before;
        expected[j] += 1;
        assert_eq!(polls(), expected, "order {k}: {order:?} on branch {j}");
    }

    // A finished branch's waker, woken while the others run, polls nobody.
    let finished = bells[0].waker().expect("branch 0 waits");
    bells[0].release();
    assert!(fut.as_mut().poll(&mut cx).is_pending());
    assert!(journal.finished("0"));
    let before = polls();
    finished.wake_by_ref();
    let clone = finished.clone();
    clone.wake();
    assert!(fut.as_mut().poll(&mut cx).is_pending());
    assert_eq!(polls(), before, "a finished branch's waker polled a branch");

    bells.iter().for_each(|b| b.release());
    let Poll::Ready(out) = fut.as_mut().poll(&mut cx) else {
        panic!("the gather did not finish once every bell was released");
    };
    assert_eq!(out.len(), 8);
    drop(fut);
    finished.wake();
    let _ = cx;
    drop(waker);
    assert_eq!(Arc::strong_count(&parent), 1);
}

// ---- the wakers of one gather serving the next on the same thread ------------------------------

/// Wakes itself at every poll, the last one too, so that its gather ends with the branch's
/// wake flag raised; pending once before that.
async fn restless() {
    let mut left = 1;
    poll_fn(|cx| {
        cx.waker().wake_by_ref();
        if left == 0 {
            return Poll::Ready(());
        }
        left -= 1;
        Poll::Pending
    })
    .await;
}

/// Twenty branches, enough for each to have a waker of its own.
macro_rules! twenty {
    ($policy:ident; $branch:expr) => {
        gather!(policy = $policy;
            ($branch)(0), ($branch)(1), ($branch)(2), ($branch)(3), ($branch)(4),
            ($branch)(5), ($branch)(6), ($branch)(7), ($branch)(8), ($branch)(9),
            ($branch)(10), ($branch)(11), ($branch)(12), ($branch)(13), ($branch)(14),
            ($branch)(15), ($branch)(16), ($branch)(17), ($branch)(18), ($branch)(19),
        )
    };
}

/// Seventy branches: the flags of their wakes fill three words of 32.
macro_rules! seventy {
    ($policy:ident; $branch:expr) => {
        gather!(policy = $policy;
            ($branch)(0), ($branch)(1), ($branch)(2), ($branch)(3), ($branch)(4),
            ($branch)(5), ($branch)(6), ($branch)(7), ($branch)(8), ($branch)(9),
            ($branch)(10), ($branch)(11), ($branch)(12), ($branch)(13), ($branch)(14),
            ($branch)(15), ($branch)(16), ($branch)(17), ($branch)(18), ($branch)(19),
            ($branch)(20), ($branch)(21), ($branch)(22), ($branch)(23), ($branch)(24),
            ($branch)(25), ($branch)(26), ($branch)(27), ($branch)(28), ($branch)(29),
            ($branch)(30), ($branch)(31), ($branch)(32), ($branch)(33), ($branch)(34),
            ($branch)(35), ($branch)(36), ($branch)(37), ($branch)(38), ($branch)(39),
            ($branch)(40), ($branch)(41), ($branch)(42), ($branch)(43), ($branch)(44),
            ($branch)(45), ($branch)(46), ($branch)(47), ($branch)(48), ($branch)(49),
            ($branch)(50), ($branch)(51), ($branch)(52), ($branch)(53), ($branch)(54),
            ($branch)(55), ($branch)(56), ($branch)(57), ($branch)(58), ($branch)(59),
            ($branch)(60), ($branch)(61), ($branch)(62), ($branch)(63), ($branch)(64),
            ($branch)(65), ($branch)(66), ($branch)(67), ($branch)(68), ($branch)(69),
        )
    };
}

#[test]
fn fixed_wakes_on_both_sides_of_a_word_of_flags_poll_only_their_branch() {
    let journal = Journal::new();
    let gates: Vec<Gate> = (0..70).map(|_| Gate::new()).collect();
    let parent = Wakes::new();
    let waker = parent.waker();
    let mut cx = Context::from_waker(&waker);
    let mut fut = Box::pin(async {
        seventy!(settle; |i: usize| journal.probe(i.to_string(), gates[i].wait()))
    });
    let polls = |b: usize| journal.polls(&b.to_string());
    assert!(fut.as_mut().poll(&mut cx).is_pending());
    // Branch 0 waited before there were wakers of its own: the next poll polls it again.
    assert!(fut.as_mut().poll(&mut cx).is_pending());
    for woken in [69, 64, 63, 31, 32, 1, 65, 2] {
        let before: Vec<usize> = (0..70).map(polls).collect();
        let wakes = parent.count();
        gates[woken].open();
        assert_eq!(
            parent.count(),
            wakes + 1,
            "a wake of branch {woken} wakes the gather"
        );
        assert!(fut.as_mut().poll(&mut cx).is_pending());
        for (b, was) in before.into_iter().enumerate() {
            let now = polls(b);
            if b == woken {
                assert_eq!(now, was + 1, "branch {b} was woken and polled");
            } else {
                assert_eq!(now, was, "branch {b} was polled for branch {woken}'s wake");
            }
        }
    }
    // Two wakes of one word between two polls: the first wakes the gather, the second finds
    // the word flagged and counts on that wake; the next poll polls both.
    let before: Vec<usize> = (0..70).map(polls).collect();
    let wakes = parent.count();
    gates[40].open();
    gates[33].open();
    assert_eq!(parent.count(), wakes + 1, "one wake of the gather for both");
    assert!(fut.as_mut().poll(&mut cx).is_pending());
    for (b, was) in before.into_iter().enumerate() {
        let woken = usize::from(b == 33 || b == 40);
        assert_eq!(polls(b), was + woken, "branch {b}");
    }
    gates.iter().for_each(Gate::open);
    assert!(fut.as_mut().poll(&mut cx).is_ready());
    assert!((0..70).all(|b| polls(b) <= 3));
}

/// A 20-branch `settle` gather of `gates`, polled once with `cx`: every branch is pending, and
/// every branch but the first (which waited before there were wakers) with a waker of its own.
fn twenty_gates_polled_once<'a>(
    journal: &'a Journal,
    gates: &'a [Gate],
    cx: &mut Context<'_>,
) -> Pin<Box<impl Future + 'a>> {
    let mut fut = Box::pin(async move {
        twenty!(settle; |i: usize| journal.probe(i.to_string(), gates[i].wait()))
    });
    assert!(fut.as_mut().poll(cx).is_pending());
    fut
}

/// Asserts that branches 1 to 19 of [`twenty_gates_polled_once`] were polled once only.
fn assert_polled_once(journal: &Journal, why: &str) {
    for i in 1..20 {
        assert_eq!(
            journal.polls(&i.to_string()),
            1,
            "branch {i} was polled {why}"
        );
    }
}

#[test]
fn fixed_wakers_the_next_gather_on_a_thread_reuses_carry_no_wake_of_the_last() {
    // The first gather ends with every branch's flag raised, and no waker kept: the thread
    // keeps its wakers for the next gather.
    let _ = block_on(async { twenty!(settle; |_| restless()) });

    let journal = Journal::new();
    let gates: Vec<Gate> = (0..20).map(|_| Gate::new()).collect();
    let parent = Wakes::new();
    let waker = parent.waker();
    let mut cx = Context::from_waker(&waker);
    let mut fut = twenty_gates_polled_once(&journal, &gates, &mut cx);
    // A poll with no branch woken: the branches that wait with wakers of their own are not
    // polled.
    assert!(fut.as_mut().poll(&mut cx).is_pending());
    assert_polled_once(&journal, "for a wake of the last gather");
    gates[7].open();
    assert!(fut.as_mut().poll(&mut cx).is_pending());
    assert_eq!(journal.polls("7"), 2);
    assert_eq!(journal.polls("8"), 1);
    gates.iter().for_each(Gate::open);
    assert!(fut.as_mut().poll(&mut cx).is_ready());
    assert!((0..20).all(|i| journal.polls(&i.to_string()) <= 3));
}

#[test]
fn fixed_wakers_kept_past_a_gather_never_wake_the_next_gathers_branches() {
    let slots: Vec<Slot> = (0..20).map(|_| Slot::default()).collect();
    let _ = block_on(async { twenty!(settle; |i: usize| stash(Arc::clone(&slots[i]), 1)) });
    let kept = take_wakers(&slots);

    let journal = Journal::new();
    let gates: Vec<Gate> = (0..20).map(|_| Gate::new()).collect();
    let parent = Wakes::new();
    let waker = parent.waker();
    let mut cx = Context::from_waker(&waker);
    let mut fut = twenty_gates_polled_once(&journal, &gates, &mut cx);
    // The first gather's wakers, woken from other threads, reach none of these branches.
    hammer(&kept);
    assert!(fut.as_mut().poll(&mut cx).is_pending());
    assert_polled_once(&journal, "for a wake of the first gather's wakers");
    gates.iter().for_each(Gate::open);
    assert!(fut.as_mut().poll(&mut cx).is_ready());
    drop(fut);
    drop_scrambled(kept, 5);
}

/// Seventy ringing branches in one fixed gather: from 16 branches on, each has a waker of its
/// own, and the flags of seventy fill three words, so that rings and spurious wakes from other
/// threads land on both sides of each word, some while the gather takes the word's flags.
async fn fixed_ringing_wide(bells: Vec<Arc<Bell>>, journal: Journal) {
    let driver = Driver::start(&bells, &journal, 70, false);
    let out = seventy!(settle; |i: usize| ringing(&journal, &bells[i], i));
    driver.finish();
    assert_eq!((out.0, out.33, out.69), (0, 33, 69));
    assert!((0..70).all(|i| journal.finished(&i.to_string())));
}

#[test]
fn fixed_wakes_from_other_threads_finish_every_branch_of_a_wide_gather_on_block_on() {
    block_on(fixed_ringing_wide(bells(70), Journal::new()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixed_wakes_from_other_threads_finish_every_branch_of_a_wide_gather_on_a_multi_thread_runtime()
 {
    let task = tokio::spawn(fixed_ringing_wide(bells(70), Journal::new()));
    task.await.unwrap_or_else(|e| resume_unwind(e.into_panic()));
}
