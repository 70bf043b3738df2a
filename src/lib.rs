//! Test support for the behaviour tests of `gather`.
//!
//! Two tools, both free of any runtime so that tests can use them under tokio, under
//! `futures::executor` or with hand-made polls:
//!
//! - [`Journal`] and its [`Probe`]s: a probe wraps a future and writes to the shared journal,
//!   in order, each time the future is polled, when it finishes, and when it is dropped before
//!   finishing. Tests read the journal to see who ran, who was cancelled, and in what order.
//! - [`Gate`]: a future that stays pending until the test opens it, so that a test decides
//!   exactly when a branch may go on and poll counts are exact.
//! - [`InFlight`]: counts the futures it tracks that have started and not yet ended, and the
//!   most that were ever in flight at once, to check a concurrency limit.
//! - [`Live`]: counts the futures it tracks that exist at all, polled or not, to check that
//!   every branch was dropped.
//! - [`yields`] and [`Wakes`], for tests that poll by hand: a future that is pending a given
//!   number of times and wakes itself each time, and a waker that counts its wakes.
//!
//! ```
//! use gather_tests::{Gate, Journal, poll_once};
//! use std::pin::pin;
//!
//! let journal = Journal::new();
//! let gate = Gate::new();
//! let mut fut = pin!(journal.probe("a", gate.wait()));
//! assert!(poll_once(fut.as_mut()).is_pending());
//! gate.open();
//! assert!(poll_once(fut.as_mut()).is_ready());
//! assert_eq!(journal.polls("a"), 2);
//! assert_eq!(journal.story(), ["a finished"]);
//! ```

#![warn(missing_docs)]

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

/// What a probe (or the test itself, with [`Journal::mark`]) saw happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Event {
    /// The probed future was about to be polled.
    Polled,
    /// The probed future returned `Poll::Ready`.
    Finished,
    /// The probe was dropped before its future finished: it was cancelled.
    Dropped,
    /// A point the test marked with [`Journal::mark`], such as "returned".
    Mark,
}

/// One line of a [`Journal`]: who, what, and when if the journal has a clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The probe's name, or the mark's text.
    pub who: String,
    /// What happened.
    pub event: Event,
    /// The journal's clock at that moment, if it has one.
    pub at: Option<Duration>,
}

impl fmt::Display for Entry {
    /// `"a finished"`, `"b dropped at 500ms"`, `"returned at 1.5s"`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.who)?;
        match self.event {
            Event::Polled => f.write_str(" polled")?,
            Event::Finished => f.write_str(" finished")?,
            Event::Dropped => f.write_str(" dropped")?,
            Event::Mark => {}
        }
        match self.at {
            Some(at) => write!(f, " at {at:?}"),
            None => Ok(()),
        }
    }
}

type Clock = Box<dyn Fn() -> Duration + Send>;

#[derive(Default)]
struct Inner {
    clock: Option<Clock>,
    entries: Vec<Entry>,
}

/// A shared, ordered record of what [`Probe`]s saw. Cloning gives another handle to the same
/// record.
#[derive(Clone, Default)]
pub struct Journal {
    inner: Arc<Mutex<Inner>>,
}

impl fmt::Debug for Journal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.lock().entries.iter()).finish()
    }
}

impl Journal {
    /// An empty journal without a clock: entries record order only.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty journal that stamps every entry with `clock()`, for instance
    /// `move || start.elapsed()` over a `tokio::time::Instant` under paused time.
    pub fn with_clock(clock: impl Fn() -> Duration + Send + 'static) -> Self {
        let journal = Self::new();
        journal.lock().clock = Some(Box::new(clock));
        journal
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panicking branch must not hide what the journal saw before the panic.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn record(&self, who: &str, event: Event) {
        let mut inner = self.lock();
        let at = inner.clock.as_ref().map(|clock| clock());
        inner.entries.push(Entry {
            who: who.to_owned(),
            event,
            at,
        });
    }

    /// Wraps `fut` in a probe named `who` that writes to this journal.
    pub fn probe<F: Future>(&self, who: impl Into<String>, fut: F) -> Probe<F> {
        Probe {
            fut: Box::pin(fut),
            who: who.into(),
            journal: self.clone(),
            finished: false,
        }
    }

    /// Writes a mark of the test's own, such as `"returned"` right after a gather returns.
    pub fn mark(&self, what: &str) {
        self.record(what, Event::Mark);
    }

    /// Every entry so far, in order.
    pub fn entries(&self) -> Vec<Entry> {
        self.lock().entries.clone()
    }

    /// Every entry but the polls, as text (see [`Entry`]'s `Display`): the story of who
    /// finished, who was dropped, and the test's marks, in order.
    pub fn story(&self) -> Vec<String> {
        let inner = self.lock();
        let entries = inner.entries.iter();
        entries
            .filter(|e| e.event != Event::Polled)
            .map(Entry::to_string)
            .collect()
    }

    fn count(&self, who: &str, event: Event) -> usize {
        let inner = self.lock();
        let entries = inner.entries.iter();
        entries.filter(|e| e.who == who && e.event == event).count()
    }

    /// How many times the probe `who` has been polled.
    pub fn polls(&self, who: &str) -> usize {
        self.count(who, Event::Polled)
    }

    /// Whether the probe `who` has finished.
    pub fn finished(&self, who: &str) -> bool {
        self.count(who, Event::Finished) > 0
    }

    /// Whether the probe `who` has been dropped before it finished.
    pub fn dropped(&self, who: &str) -> bool {
        self.count(who, Event::Dropped) > 0
    }

    /// The probes that have been polled, each once, in the order of their first poll: the
    /// order in which they started.
    pub fn started(&self) -> Vec<String> {
        let inner = self.lock();
        let mut started: Vec<String> = Vec::new();
        for e in inner.entries.iter().filter(|e| e.event == Event::Polled) {
            if !started.contains(&e.who) {
                started.push(e.who.clone());
            }
        }
        started
    }
}

/// A future that writes to a [`Journal`] when it is polled, finishes, or is dropped
/// unfinished. Made by [`Journal::probe`]; it is `Send` when the future it wraps is.
#[must_use = "a probe does nothing unless polled"]
pub struct Probe<F> {
    fut: Pin<Box<F>>,
    who: String,
    journal: Journal,
    finished: bool,
}

impl<F> fmt::Debug for Probe<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Probe")
            .field("who", &self.who)
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

impl<F: Future> Future for Probe<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        assert!(
            !self.finished,
            "probe `{}` polled after it finished",
            self.who
        );
        self.journal.record(&self.who, Event::Polled);
        let out = self.fut.as_mut().poll(cx);
        if out.is_ready() {
            self.finished = true;
            self.journal.record(&self.who, Event::Finished);
        }
        out
    }
}

impl<F> Drop for Probe<F> {
    fn drop(&mut self) {
        if !self.finished {
            self.journal.record(&self.who, Event::Dropped);
        }
    }
}

#[derive(Debug, Default)]
struct GateState {
    open: bool,
    wakers: Vec<Waker>,
}

/// A gate the test opens by hand. [`wait`](Gate::wait) futures stay pending until
/// [`open`](Gate::open), which wakes every waiter. Cloning gives another handle to the same gate.
#[derive(Debug, Clone, Default)]
pub struct Gate {
    state: Arc<Mutex<GateState>>,
}

impl Gate {
    /// A closed gate.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Opens the gate and wakes everything waiting on it.
    pub fn open(&self) {
        let wakers = {
            let mut state = self.lock();
            state.open = true;
            std::mem::take(&mut state.wakers)
        };
        wakers.into_iter().for_each(Waker::wake);
    }

    /// Whether the gate is open.
    pub fn is_open(&self) -> bool {
        self.lock().open
    }

    /// A future that finishes once the gate is open.
    pub fn wait(&self) -> Wait {
        Wait { gate: self.clone() }
    }
}

/// The future of [`Gate::wait`]: pending until the gate is open.
#[derive(Debug)]
#[must_use = "a gate's wait does nothing unless polled"]
pub struct Wait {
    gate: Gate,
}

impl Future for Wait {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut state = self.gate.lock();
        if state.open {
            return Poll::Ready(());
        }
        if !state.wakers.iter().any(|w| w.will_wake(cx.waker())) {
            state.wakers.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

#[derive(Debug, Default)]
struct Counts {
    now: AtomicUsize,
    peak: AtomicUsize,
    started: AtomicUsize,
}

/// Counts the futures it [`track`](InFlight::track)s that are in flight: polled at least once,
/// and neither finished nor dropped. Cloning gives another handle to the same counts.
///
/// ```
/// use gather_tests::{Gate, InFlight, poll_once};
/// use std::pin::pin;
///
/// let in_flight = InFlight::new();
/// let gate = Gate::new();
/// let mut a = pin!(in_flight.track(gate.wait()));
/// let b = in_flight.track(gate.wait());
/// assert!(poll_once(a.as_mut()).is_pending());
/// assert_eq!((in_flight.now(), in_flight.peak()), (1, 1));
/// drop(b); // never polled: it never was in flight
/// gate.open();
/// assert!(poll_once(a.as_mut()).is_ready());
/// assert_eq!((in_flight.now(), in_flight.peak(), in_flight.started()), (0, 1, 1));
/// ```
#[derive(Debug, Clone, Default)]
pub struct InFlight {
    counts: Arc<Counts>,
}

impl InFlight {
    /// Counts at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Wraps `fut` so that it counts as in flight from its first poll until it finishes or is
    /// dropped.
    pub fn track<F: Future>(&self, fut: F) -> Tracked<F> {
        Tracked {
            fut: Box::pin(fut),
            counts: Arc::clone(&self.counts),
            state: TrackState::NotStarted,
        }
    }

    /// How many tracked futures are in flight now.
    pub fn now(&self) -> usize {
        self.counts.now.load(Ordering::SeqCst)
    }

    /// The most tracked futures that were ever in flight at once.
    pub fn peak(&self) -> usize {
        self.counts.peak.load(Ordering::SeqCst)
    }

    /// How many tracked futures have started (been polled at least once).
    pub fn started(&self) -> usize {
        self.counts.started.load(Ordering::SeqCst)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TrackState {
    NotStarted,
    Running,
    Ended,
}

/// A future that counts in an [`InFlight`] while it runs. Made by [`InFlight::track`].
#[must_use = "a tracked future does nothing unless polled"]
pub struct Tracked<F> {
    fut: Pin<Box<F>>,
    counts: Arc<Counts>,
    state: TrackState,
}

impl<F> fmt::Debug for Tracked<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tracked")
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl<F> Tracked<F> {
    fn end(&mut self) {
        if self.state == TrackState::Running {
            self.counts.now.fetch_sub(1, Ordering::SeqCst);
        }
        self.state = TrackState::Ended;
    }
}

impl<F: Future> Future for Tracked<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        if self.state == TrackState::NotStarted {
            self.state = TrackState::Running;
            self.counts.started.fetch_add(1, Ordering::SeqCst);
            let now = self.counts.now.fetch_add(1, Ordering::SeqCst) + 1;
            self.counts.peak.fetch_max(now, Ordering::SeqCst);
        }
        let out = self.fut.as_mut().poll(cx);
        if out.is_ready() {
            self.end();
        }
        out
    }
}

impl<F> Drop for Tracked<F> {
    fn drop(&mut self) {
        self.end();
    }
}

/// Polls `fut` once with a waker that does nothing: the test polls again by hand.
pub fn poll_once<F: Future + ?Sized>(fut: Pin<&mut F>) -> Poll<F::Output> {
    fut.poll(&mut Context::from_waker(Waker::noop()))
}

#[derive(Debug, Default)]
struct LiveCounts {
    now: AtomicUsize,
    made: AtomicUsize,
    finished: AtomicUsize,
    dropped: AtomicUsize,
}

/// Counts the futures it [`track`](Live::track)s that exist: made and not yet dropped, whether
/// they were ever polled or not. Cloning gives another handle to the same counts.
///
/// Where [`InFlight`] sees only futures that started, `Live` also sees a branch that `limit`
/// held back, or that was built and never polled: `now() == 0` means every tracked future is
/// gone.
///
/// ```
/// use gather_tests::{Live, poll_once, yields};
/// use std::pin::pin;
///
/// let live = Live::new();
/// let mut a = pin!(live.track(yields(1)));
/// let b = live.track(yields(1));
/// assert_eq!((live.now(), live.made()), (2, 2));
/// drop(b); // never polled, and gone
/// assert!(poll_once(a.as_mut()).is_pending());
/// assert!(poll_once(a.as_mut()).is_ready());
/// assert_eq!((live.now(), live.finished(), live.dropped()), (1, 1, 1));
/// ```
#[derive(Debug, Clone, Default)]
pub struct Live {
    counts: Arc<LiveCounts>,
}

impl Live {
    /// Counts at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Wraps `fut` so that it counts as live until it is dropped.
    pub fn track<F: Future>(&self, fut: F) -> Alive<F> {
        self.counts.made.fetch_add(1, Ordering::SeqCst);
        self.counts.now.fetch_add(1, Ordering::SeqCst);
        Alive {
            fut: Box::pin(fut),
            counts: Arc::clone(&self.counts),
            finished: false,
        }
    }

    /// How many tracked futures exist now.
    pub fn now(&self) -> usize {
        self.counts.now.load(Ordering::SeqCst)
    }

    /// How many tracked futures were ever made.
    pub fn made(&self) -> usize {
        self.counts.made.load(Ordering::SeqCst)
    }

    /// How many tracked futures have finished (returned `Poll::Ready`).
    pub fn finished(&self) -> usize {
        self.counts.finished.load(Ordering::SeqCst)
    }

    /// How many tracked futures were dropped before they finished.
    pub fn dropped(&self) -> usize {
        self.counts.dropped.load(Ordering::SeqCst)
    }
}

/// A future that counts in a [`Live`] until it is dropped. Made by [`Live::track`]; it is
/// `Send` when the future it wraps is.
#[must_use = "a tracked future does nothing unless polled"]
pub struct Alive<F> {
    fut: Pin<Box<F>>,
    counts: Arc<LiveCounts>,
    finished: bool,
}

impl<F> fmt::Debug for Alive<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Alive")
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

impl<F: Future> Future for Alive<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        assert!(
            !self.finished,
            "a tracked future was polled after it finished"
        );
        let out = self.fut.as_mut().poll(cx);
        if out.is_ready() {
            self.finished = true;
            self.counts.finished.fetch_add(1, Ordering::SeqCst);
        }
        out
    }
}

impl<F> Drop for Alive<F> {
    fn drop(&mut self) {
        if !self.finished {
            self.counts.dropped.fetch_add(1, Ordering::SeqCst);
        }
        self.counts.now.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A future that is pending `n` times, waking its waker each time, then finishes: a branch
/// that makes progress at every poll, under any executor or by hand, and needs no runtime.
pub fn yields(n: usize) -> Yields {
    Yields { left: n }
}

/// The future of [`yields`].
#[derive(Debug)]
#[must_use = "yields does nothing unless polled"]
pub struct Yields {
    left: usize,
}

impl Future for Yields {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.left == 0 {
            return Poll::Ready(());
        }
        self.left -= 1;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// A waker that counts its wakes, for tests that poll by hand. `Arc::strong_count` of it tells
/// whether anything still keeps a clone of the waker.
///
/// ```
/// use gather_tests::Wakes;
/// use std::sync::Arc;
///
/// let wakes = Wakes::new();
/// let waker = wakes.waker();
/// waker.wake_by_ref();
/// waker.clone().wake();
/// assert_eq!(wakes.count(), 2);
/// drop(waker);
/// assert_eq!(Arc::strong_count(&wakes), 1);
/// ```
#[derive(Debug, Default)]
pub struct Wakes {
    count: AtomicUsize,
}

impl Wakes {
    /// A counter at zero, shared with the wakers it makes.
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// A waker that counts its wakes here.
    pub fn waker(self: &Arc<Self>) -> Waker {
        Waker::from(Arc::clone(self))
    }

    /// How many wakes so far.
    pub fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }
}

impl Wake for Wakes {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.count.fetch_add(1, Ordering::SeqCst);
    }
}
