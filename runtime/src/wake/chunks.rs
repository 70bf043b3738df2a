//! Slots for the branches of the dynamic form, in chunks that double in size: chunk 0 has
//! [`FIRST`] slots, each later chunk twice the slots of the one before. A chunk is one
//! allocation for its branch futures, pinned in place, with what the gather keeps of each
//! slot, and one shared allocation for their wakers. A slot outlives its branch and is taken by
//! the next branch to start, so a gather allocates by the number of branches running at once,
//! and only about twice per doubling of it.
//!
//! A slot's waker is a `RawWaker` that points at its cell in the chunk's `Arc<[Cell]>`. Cell 0
//! of each chunk is a header: the number of cells, the first slot of the chunk, and the queue
//! that every chunk of the gather shares. From a slot cell, its offset finds the header, and
//! the header's length rebuilds the `Arc` to count references, as in the parent module.
//!
//! Beside the chunks, a gather has a stage: one slot whose future lives in the gather's own
//! pinned frame, not in a chunk, for a branch's first poll (and for the rest of its run if it
//! is pending). A branch ready at its first poll then needs no chunk, no queue and no waker
//! of its own, so a gather whose branches are all ready allocates none of them. The stage's
//! own waker points at the queue itself, which has the stage's flag. Until there is a queue,
//! the stage's waker is lent as a pointer to the place for it, the gather's [`Lazy`], which the
//! gather keeps apart from its slots: its first clone or wake makes the queue. The gather gives
//! that queue its own waker once the branch is pending.

use core::mem::ManuallyDrop;
use core::pin::Pin;
use core::ptr;
use core::sync::atomic::{AtomicBool, Ordering};
use core::task::{RawWaker, RawWakerVTable, Waker};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

/// How many slots chunk 0 has.
pub(crate) const FIRST: usize = 16;

/// The number of the stage, the slot whose future is kept outside the chunks.
pub(crate) const STAGE: usize = usize::MAX;

/// The chunk that holds slot `slot`, and the slot's offset in it: chunk `k` holds
/// `FIRST * 2^k` slots, from slot `FIRST * (2^k - 1)` on.
#[inline]
fn locate(slot: usize) -> (usize, usize) {
    let chunk = (slot / FIRST + 1).ilog2() as usize;
    (chunk, slot - FIRST * ((1 << chunk) - 1))
}

/// What the wakers of a gather share: the slots woken since the gather last looked, and the
/// gather's own waker. It is also the stage's waker, whose `RawWaker` points at it.
struct Queue {
    woken: Mutex<Woken>,
    /// Whether the stage is in the queue already.
    stage: AtomicBool,
}

struct Woken {
    slots: Vec<usize>,
    parent: Option<Waker>,
    /// Whether the gather's task was woken since its last poll began: the wakes that follow
    /// before its next poll need not wake it again.
    notified: bool,
}

impl Queue {
    /// A queue with nothing woken, whose wakes wake `parent`.
    fn new(parent: Option<Waker>) -> Arc<Self> {
        Arc::new(Queue {
            woken: Mutex::new(Woken {
                slots: Vec::new(),
                parent,
                notified: false,
            }),
            stage: AtomicBool::new(false),
        })
    }

    /// Queues `slot`, whose flag is `queued`, unless it is queued already, and wakes the
    /// gather's task unless it was woken since its last poll began.
    ///
    /// The flag is set with a swap, never skipped on a plain load, and the gather clears it
    /// with a swap too (in `take_woken`), before it polls the slot's branch. Either this swap
    /// comes first and the gather's reads `true` from it, which makes what the waker did
    /// before it visible to that poll; or the gather's comes first, this one reads `false`,
    /// and the slot is queued again. A plain load that saw an old `true` would take neither
    /// path, and the wake could be lost (a store may pass a later load, even on x86).
    fn wake(&self, slot: usize, queued: &AtomicBool) {
        if queued.swap(true, Ordering::AcqRel) {
            return;
        }
        let parent = {
            let mut woken = self.lock();
            woken.slots.push(slot);
            if woken.notified {
                return;
            }
            woken.notified = true;
            // Cloned under the lock and woken after it, so that a waker that runs code of its
            // own never does so while the lock is held.
            woken.parent.clone()
        };
        if let Some(parent) = parent {
            parent.wake();
        }
    }

    fn lock(&self) -> MutexGuard<'_, Woken> {
        // Nothing is left half-done while the lock is held, so a poisoned lock is still sound.
        self.woken.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One cell of a chunk of wakers.
enum Cell {
    /// Cell 0: how many cells the chunk has, the slot of its cell 1, and the gather's queue.
    Header {
        len: usize,
        first: usize,
        queue: Arc<Queue>,
    },
    /// Cell `offset`: whether the slot `first + offset - 1` is in the queue already.
    Slot { offset: usize, queued: AtomicBool },
}

/// The slots of one gather: chunks of branch futures, pinned where they are, each with the
/// wakers of its slots and what the gather keeps of each slot (`M`). The queue they share is
/// kept apart, in a [`Lazy`] that every method that needs it is given: a gather whose branches
/// are all ready at their first poll needs the `Lazy` (its stage's lent waker points at it) but
/// no slots.
pub(crate) struct Slots<F, M> {
    chunks: Vec<Chunk<F, M>>,
    /// The gather's waker as last given to the queue, to skip replacing it when it is the
    /// same. `None` until the queue has one.
    parent: Option<Waker>,
    /// What the gather keeps of the stage.
    stage: M,
}

/// Where the queue of a gather's slots is made when first needed: what the stage's lent waker
/// points at, so that its first clone or wake can make it.
pub(crate) struct Lazy {
    queue: OnceLock<Arc<Queue>>,
}

impl Lazy {
    /// No queue yet.
    pub(crate) const fn new() -> Self {
        Lazy {
            queue: OnceLock::new(),
        }
    }

    /// The queue, made if there is none yet, without a waker of the gather's.
    fn queue(&self) -> &Arc<Queue> {
        self.queue.get_or_init(|| Queue::new(None))
    }

    /// Whether the queue has been made: by a branch that was pending, or by a clone or wake
    /// of the stage's lent waker.
    #[inline]
    pub(crate) fn has_queue(&self) -> bool {
        self.queue.get().is_some()
    }

    /// Runs `f` with the stage's waker, to poll the branches that start in the stage: its own
    /// (the queue) if there is a queue, else a lent one that points at `self`, whose first
    /// clone or wake makes the queue. A branch ready at its first poll makes nothing.
    #[inline]
    pub(crate) fn lend<R>(&self, f: impl FnOnce(&Waker) -> R) -> R {
        let raw = match self.queue.get() {
            Some(queue) => RawWaker::new(Arc::as_ptr(queue).cast(), &STAGE_VTABLE),
            None => RawWaker::new(ptr::from_ref(self).cast(), &LENT),
        };
        // SAFETY: either the queue, which `self` keeps alive while the waker is lent, or
        // `self`, borrowed (shared) for as long as the waker is lent; `LENT`'s entries reach
        // it only through shared references, and its `OnceLock` makes the queue once, from any
        // thread. The `ManuallyDrop` keeps the lent waker from giving back a count it never
        // took.
        let waker = ManuallyDrop::new(unsafe { Waker::from_raw(raw) });
        f(&waker)
    }
}

/// The wakers of `size` slots from slot `first` on, sharing `queue`.
fn cells(first: usize, size: usize, queue: &Arc<Queue>) -> Arc<[Cell]> {
    core::iter::once(Cell::Header {
        len: size + 1,
        first,
        queue: Arc::clone(queue),
    })
    .chain((1..=size).map(|offset| Cell::Slot {
        offset,
        queued: AtomicBool::new(false),
    }))
    .collect()
}

struct Chunk<F, M> {
    entries: Pin<Box<[Entry<F, M>]>>,
    wakers: Arc<[Cell]>,
}

/// One slot: its future, pinned (the entry is never moved, nor the future out of it), and
/// what the gather keeps of it, which is not pinned.
struct Entry<F, M> {
    future: Option<F>,
    meta: M,
}

impl<F, M> core::fmt::Debug for Slots<F, M> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Slots").field("slots", &self.len()).finish()
    }
}

static VTABLE: RawWakerVTable = RawWakerVTable::new(clone, wake, wake_by_ref, drop_waker);

/// The stage's own waker, which points at the queue and holds a strong count of it.
static STAGE_VTABLE: RawWakerVTable =
    RawWakerVTable::new(stage_clone, stage_wake, stage_wake_by_ref, stage_drop);

unsafe fn stage_clone(data: *const ()) -> RawWaker {
    // SAFETY: `data` is the `Arc`'s pointer to a queue that a waker of ours keeps alive (or
    // the slots, while they lend it); the new waker takes the count added here.
    unsafe { Arc::increment_strong_count(data.cast::<Queue>()) };
    RawWaker::new(data, &STAGE_VTABLE)
}

unsafe fn stage_wake(data: *const ()) {
    // SAFETY: as for `stage_wake_by_ref`; then this waker's own count is given back.
    unsafe {
        stage_wake_by_ref(data);
        stage_drop(data);
    }
}

unsafe fn stage_wake_by_ref(data: *const ()) {
    // SAFETY: `data` points at a live queue, as in `stage_clone`.
    let queue = unsafe { &*data.cast::<Queue>() };
    queue.wake(STAGE, &queue.stage);
}

unsafe fn stage_drop(data: *const ()) {
    // SAFETY: this waker holds one strong count of the live queue, given back here.
    unsafe { Arc::decrement_strong_count(data.cast::<Queue>()) };
}

/// The stage's lent waker, which points at the gather's [`Lazy`]. It is only ever lent
/// (as `&Waker`, during a poll of the stage), so it is never woken by value nor dropped: those
/// entries do as a wake by reference and nothing.
static LENT: RawWakerVTable = RawWakerVTable::new(lent_clone, lent_wake, lent_wake, lent_drop);

/// A clone of the stage's lent waker is the stage's own waker, the queue, made if need be.
unsafe fn lent_clone(data: *const ()) -> RawWaker {
    // SAFETY: `data` points at the gather's `Lazy`, which is borrowed while the waker is lent
    // (see `Lazy::lend`); it is reached only through shared references.
    let lazy = unsafe { &*data.cast::<Lazy>() };
    // SAFETY: the `Arc`'s pointer to the live queue, which `lazy` holds.
    unsafe { stage_clone(Arc::as_ptr(lazy.queue()).cast()) }
}

/// A wake of the stage's lent waker queues the stage, in the queue made if need be.
unsafe fn lent_wake(data: *const ()) {
    // SAFETY: as in `lent_clone`.
    let lazy = unsafe { &*data.cast::<Lazy>() };
    let queue = lazy.queue();
    queue.wake(STAGE, &queue.stage);
}

/// A lent waker holds no count.
unsafe fn lent_drop(_: *const ()) {}

/// The chunk of wakers a slot cell belongs to, rebuilt from the cell's address.
///
/// # Safety
///
/// `data` must point at a `Cell::Slot` of a live `Arc<[Cell]>` made by [`Slots::grow`], with a
/// pointer derived from the `Arc`'s own (as [`Slots::with`] makes it).
unsafe fn chunk_of(data: *const ()) -> *const [Cell] {
    let cell = data.cast::<Cell>();
    // SAFETY: the caller guarantees `cell` points at a live cell.
    let Cell::Slot { offset, .. } = (unsafe { &*cell }) else {
        unreachable!("a slot waker points at a slot cell");
    };
    // SAFETY: a slot cell at position `offset` of the chunk is `offset` cells after its
    // start, in the same allocation, which the pointer may reach: it was derived from the
    // `Arc`'s.
    let start = unsafe { cell.sub(*offset) };
    // SAFETY: `start` is cell 0 of the same live chunk, which is always the header.
    let Cell::Header { len, .. } = (unsafe { &*start }) else {
        unreachable!("cell 0 is the header");
    };
    ptr::slice_from_raw_parts(start, *len)
}

unsafe fn clone(data: *const ()) -> RawWaker {
    // SAFETY: `data` comes from a waker of ours, which holds a strong count of the chunk, so
    // the chunk is live, and `chunk_of` gives the `Arc`'s own pointer back; the new waker
    // takes the count added here.
    unsafe { Arc::increment_strong_count(chunk_of(data)) };
    RawWaker::new(data, &VTABLE)
}

unsafe fn wake(data: *const ()) {
    // SAFETY: as for `wake_by_ref`; then this waker's own count is given back.
    unsafe {
        wake_by_ref(data);
        drop_waker(data);
    }
}

unsafe fn wake_by_ref(data: *const ()) {
    // SAFETY: `data` comes from a live waker of ours, so the chunk is live.
    let chunk = unsafe { &*chunk_of(data) };
    // SAFETY: as above, `data` points at a slot cell of that chunk.
    let Cell::Slot { offset, queued } = (unsafe { &*data.cast::<Cell>() }) else {
        unreachable!("a slot waker points at a slot cell");
    };
    let Cell::Header { first, queue, .. } = &chunk[0] else {
        unreachable!("cell 0 is the header");
    };
    queue.wake(first + offset - 1, queued);
}

unsafe fn drop_waker(data: *const ()) {
    // SAFETY: this waker holds one strong count of the live chunk, given back here.
    unsafe { Arc::decrement_strong_count(chunk_of(data)) };
}

impl<F, M> Slots<F, M> {
    /// No chunks yet, and `stage` as what the gather keeps of the stage.
    pub(crate) const fn new(stage: M) -> Self {
        Slots {
            chunks: Vec::new(),
            parent: None,
            stage,
        }
    }

    /// How many slots there are.
    pub(crate) fn len(&self) -> usize {
        FIRST * ((1 << self.chunks.len()) - 1)
    }

    /// Adds a chunk of empty slots, each with `meta()`, as many as all the chunks before it
    /// and [`FIRST`] more: one allocation for the futures, one for the wakers, which share
    /// `lazy`'s queue, made if need be. `parent` is the gather's waker, for the queue if it has
    /// none yet.
    pub(crate) fn grow(&mut self, lazy: &Lazy, parent: &Waker, mut meta: impl FnMut() -> M) {
        let first = self.len();
        let size = FIRST << self.chunks.len();
        let entries: Box<[Entry<F, M>]> = (0..size)
            .map(|_| Entry {
                future: None,
                meta: meta(),
            })
            .collect();
        let wakers = cells(first, size, lazy.queue());
        self.chunks.push(Chunk {
            entries: Box::into_pin(entries),
            wakers,
        });
        if self.parent.is_none() {
            self.adopt(lazy, parent);
        }
    }

    /// Gives `lazy`'s queue, if there is one, the gather's waker `parent`, and wakes it if a
    /// slot was woken while the queue had none.
    #[cold]
    fn adopt(&mut self, lazy: &Lazy, parent: &Waker) {
        let Some(queue) = lazy.queue.get() else {
            return;
        };
        self.parent = Some(parent.clone());
        let missed = {
            let mut woken = queue.lock();
            woken.parent.clone_from(&self.parent);
            woken.notified
        };
        if missed {
            parent.wake_by_ref();
        }
    }

    /// What the gather keeps of slot `slot` (or of the stage).
    #[inline]
    pub(crate) fn meta(&self, slot: usize) -> &M {
        if slot == STAGE {
            return &self.stage;
        }
        let (chunk, offset) = locate(slot);
        &self.chunks[chunk].entries[offset].meta
    }

    /// What the gather keeps of slot `slot` (or of the stage), to change.
    #[inline]
    pub(crate) fn meta_mut(&mut self, slot: usize) -> &mut M {
        if slot == STAGE {
            return &mut self.stage;
        }
        self.with(slot, |_, _, meta| meta)
    }

    /// Runs `f` with the stage's future `future` (which the gather keeps pinned in its own
    /// frame), the stage's waker (see [`Lazy::lend`]), and what the gather keeps of the stage.
    /// The gather calls [`pending`](Self::pending) when the stage's branch is pending after
    /// it.
    #[inline]
    pub(crate) fn with_stage<R>(
        &mut self,
        lazy: &Lazy,
        future: Pin<&mut Option<F>>,
        f: impl FnOnce(Pin<&mut Option<F>>, &Waker, &mut M) -> R,
    ) -> R {
        lazy.lend(|waker| f(future, waker, &mut self.stage))
    }

    /// After the stage's branch was found pending: if its waker made `lazy`'s queue, gives the
    /// queue the gather's waker `parent` (and wakes it, if the branch was woken already). A
    /// queue made by a branch that was ready after all waits for the next that is pending:
    /// until then no branch is running, and nothing needs waking.
    #[inline]
    pub(crate) fn pending(&mut self, lazy: &Lazy, parent: &Waker) {
        if self.parent.is_none() {
            self.adopt(lazy, parent);
        }
    }

    /// The running slots of the chunks (not the stage), each with what the gather keeps of it.
    pub(crate) fn running(&self) -> impl Iterator<Item = (usize, &M)> {
        self.chunks.iter().enumerate().flat_map(|(c, chunk)| {
            let first = FIRST * ((1 << c) - 1);
            chunk
                .entries
                .iter()
                .enumerate()
                .filter(|(_, entry)| entry.future.is_some())
                .map(move |(offset, entry)| (first + offset, &entry.meta))
        })
    }

    /// Runs `f` with the future of slot `slot`, pinned, the slot's waker, and what the gather
    /// keeps of the slot. The waker is only lent, without touching the reference count, and
    /// cloned (with a count of its own) if the branch keeps it.
    #[inline]
    pub(crate) fn with<'a, R>(
        &'a mut self,
        slot: usize,
        f: impl FnOnce(Pin<&'a mut Option<F>>, &Waker, &'a mut M) -> R,
    ) -> R {
        let (chunk, offset) = locate(slot);
        let chunk = &mut self.chunks[chunk];
        // SAFETY: the entries are a pinned boxed slice that is never moved, grown or shrunk;
        // nothing is moved out of the slice here, only one entry borrowed.
        let entry = &mut unsafe { chunk.entries.as_mut().get_unchecked_mut() }[offset];
        // SAFETY: an entry's future is never moved: it is only replaced or dropped in place,
        // through `Pin::set` on the reference made here, and the slice's own drop drops it in
        // place. So it stays pinned where it is, as the slice is. The entry's `meta` is not
        // pinned, and is borrowed apart.
        let future = unsafe { Pin::new_unchecked(&mut entry.future) };
        // From the pointer to the whole chunk of cells, so that `chunk_of` may step back to
        // cell 0.
        // SAFETY: `offset + 1` is at most the chunk's size, in bounds of its cells, which are
        // one more.
        let cell = unsafe { Arc::as_ptr(&chunk.wakers).cast::<Cell>().add(offset + 1) };
        // SAFETY: `cell` is a slot cell of `chunk.wakers`, which outlives the lent waker; the
        // `ManuallyDrop` keeps the lent waker from giving back a count it never took.
        let waker =
            ManuallyDrop::new(unsafe { Waker::from_raw(RawWaker::new(cell.cast(), &VTABLE)) });
        f(future, &waker, &mut entry.meta)
    }

    /// Drops the future of slot `slot` in place, if it holds one.
    pub(crate) fn clear(&mut self, slot: usize) {
        self.with(slot, |mut future, _, _| future.set(None));
    }

    /// Starts a poll of the gather woken by `waker`: remembers it, for the first slot wake
    /// after this to wake, and hands each slot woken since the last poll to `woken`, once,
    /// with what the gather keeps of it, clearing its flag so that a later wake queues it
    /// again.
    /// Without a queue (no branch has been pending yet), nothing is woken, and the gather's
    /// waker is not kept.
    #[inline]
    pub(crate) fn begin(&mut self, lazy: &Lazy, waker: &Waker, woken: impl FnMut(usize, &M)) {
        if lazy.has_queue() {
            self.take_woken(lazy, waker, woken);
        }
    }

    /// [`begin`](Self::begin), once there is a queue.
    fn take_woken(&mut self, lazy: &Lazy, waker: &Waker, mut woken: impl FnMut(usize, &M)) {
        let Some(queue) = lazy.queue.get() else {
            return;
        };
        let changed = !self.parent.as_ref().is_some_and(|p| p.will_wake(waker));
        if changed {
            self.parent = Some(waker.clone());
        }
        let queue_stage = &queue.stage;
        let mut queue = queue.lock();
        if changed {
            queue.parent.clone_from(&self.parent);
        }
        queue.notified = false;
        for slot in queue.slots.drain(..) {
            // A swap, not a store: it reads the last wake's `true`, and so sees what that
            // waker did before it (see `Queue::wake`).
            if slot == STAGE {
                queue_stage.swap(false, Ordering::AcqRel);
                woken(slot, &self.stage);
                continue;
            }
            let (chunk, offset) = locate(slot);
            let chunk = &self.chunks[chunk];
            if let Cell::Slot { queued, .. } = &chunk.wakers[offset + 1] {
                queued.swap(false, Ordering::AcqRel);
            }
            woken(slot, &chunk.entries[offset].meta);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wake::tests::parent;

    type Pending = core::future::Pending<u8>;

    /// Slots and the place of their queue, as a gather keeps them.
    struct Both {
        lazy: Lazy,
        slots: Slots<Pending, ()>,
    }

    impl Both {
        fn grow(&mut self, parent: &Waker) {
            self.slots.grow(&self.lazy, parent, || ());
        }

        fn pending(&mut self, parent: &Waker) {
            self.slots.pending(&self.lazy, parent);
        }

        fn has_queue(&self) -> bool {
            self.lazy.has_queue()
        }
    }

    fn slots(chunks: usize) -> Both {
        let mut slots = Both {
            lazy: Lazy::new(),
            slots: Slots::new(()),
        };
        for _ in 0..chunks {
            slots.grow(Waker::noop());
        }
        slots
    }

    /// Runs `f` with the lent waker of `slot`.
    fn lend<R>(slots: &mut Both, slot: usize, f: impl FnOnce(&Waker) -> R) -> R {
        slots.slots.with(slot, |_, waker, ()| f(waker))
    }

    fn taken(slots: &mut Both, waker: &Waker) -> Vec<usize> {
        let mut taken = Vec::new();
        let Both { lazy, slots } = slots;
        slots.begin(lazy, waker, |slot, ()| taken.push(slot));
        taken
    }

    /// Runs `f` with the stage's waker, as lent for a poll of the stage.
    fn lend_stage<R>(slots: &mut Both, f: impl FnOnce(&Waker) -> R) -> R {
        let mut stage = core::pin::pin!(None::<Pending>);
        let Both { lazy, slots } = slots;
        slots.with_stage(lazy, stage.as_mut(), |_, waker, ()| f(waker))
    }

    #[test]
    fn a_stage_waker_left_alone_makes_nothing() {
        let mut slots = slots(0);
        let (count, waker) = parent();
        lend_stage(&mut slots, |lent| {
            assert!(lent.will_wake(lent));
        });
        slots.pending(&waker);
        assert!(slots.lazy.queue.get().is_none());
        assert!(!slots.has_queue());
        assert!(taken(&mut slots, &waker).is_empty());
        assert!(
            slots.slots.parent.is_none(),
            "no queue, so the gather's waker is not kept"
        );
        assert_eq!(count.0.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_clone_of_the_lent_stage_waker_makes_the_queue_its_own_waker() {
        let mut slots = slots(0);
        let (count, waker) = parent();
        let kept = lend_stage(&mut slots, Waker::clone);
        assert!(slots.has_queue());
        let cells = Arc::clone(slots.lazy.queue.get().expect("made by the clone"));
        assert_eq!(
            Arc::strong_count(&cells),
            3,
            "the slots', the clone's and this test's"
        );
        // The queue has no parent yet: a wake is only queued, until the gather gives one.
        kept.wake_by_ref();
        assert_eq!(count.0.load(Ordering::SeqCst), 0);
        slots.pending(&waker);
        assert_eq!(
            count.0.load(Ordering::SeqCst),
            1,
            "the missed wake, once adopted"
        );
        assert_eq!(taken(&mut slots, &waker), [STAGE]);
        // Later lends give the stage's own waker, without a count; a clone's wakes queue the
        // stage again.
        lend_stage(&mut slots, |lent| {
            assert!(lent.will_wake(&kept));
            assert_eq!(Arc::strong_count(&cells), 3);
        });
        kept.wake_by_ref();
        kept.wake_by_ref();
        assert_eq!(count.0.load(Ordering::SeqCst), 2);
        assert_eq!(taken(&mut slots, &waker), [STAGE]);
        // Chunks grown later share the stage's queue.
        slots.grow(&waker);
        lend(&mut slots, 3, Waker::wake_by_ref);
        kept.wake_by_ref();
        assert_eq!(taken(&mut slots, &waker), [3, STAGE]);
        assert_eq!(count.0.load(Ordering::SeqCst), 3);
        drop((slots, cells));
        // The stage's waker outlives the gather; wakes still work.
        kept.wake();
    }

    #[test]
    fn a_wake_of_the_lent_stage_waker_queues_the_stage() {
        let mut slots = slots(0);
        let (count, waker) = parent();
        lend_stage(&mut slots, Waker::wake_by_ref);
        slots.pending(&waker);
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert_eq!(taken(&mut slots, &waker), [STAGE]);
        // Adopted once: the next pending branch changes nothing.
        slots.pending(&waker);
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert!(taken(&mut slots, &waker).is_empty());
    }

    #[test]
    fn a_stage_waker_made_after_the_chunks_wakes_their_parent() {
        let mut slots = slots(0);
        let (count, waker) = parent();
        slots.grow(&waker);
        assert!(taken(&mut slots, &waker).is_empty());
        let kept = lend_stage(&mut slots, |lent| {
            lent.wake_by_ref();
            lent.clone()
        });
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert_eq!(taken(&mut slots, &waker), [STAGE]);
        drop(slots);
        drop(kept);
    }

    #[test]
    fn the_lent_stage_waker_is_cloned_and_woken_from_other_threads_at_once() {
        let mut slots = slots(0);
        let (count, waker) = parent();
        let kept: Vec<Waker> = lend_stage(&mut slots, |lent| {
            std::thread::scope(|s| {
                let threads: Vec<_> = (0..4)
                    .map(|_| {
                        s.spawn(|| {
                            lent.wake_by_ref();
                            lent.clone()
                        })
                    })
                    .collect();
                threads.into_iter().map(|t| t.join().unwrap()).collect()
            })
        });
        assert!(kept.iter().all(|k| k.will_wake(&kept[0])), "one waker made");
        slots.pending(&waker);
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert_eq!(taken(&mut slots, &waker), [STAGE]);
        drop(slots);
        drop(kept);
    }

    #[test]
    fn the_lent_stage_wakers_entries_by_value_wake_and_give_back_nothing() {
        let mut slots = slots(0);
        let (count, waker) = parent();
        let lazy = ptr::from_ref(&slots.lazy).cast::<()>();
        // SAFETY: as in `with_stage`: `slots.lazy` outlives this waker, which is dropped and
        // woken here, before the slots are used again.
        let lent = unsafe { Waker::from_raw(RawWaker::new(lazy, &LENT)) };
        drop(lent.clone());
        drop(lent);
        // SAFETY: as above.
        let lent = unsafe { Waker::from_raw(RawWaker::new(lazy, &LENT)) };
        lent.wake();
        slots.pending(&waker);
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert_eq!(taken(&mut slots, &waker), [STAGE]);
    }

    #[test]
    fn a_wake_queues_its_own_slot_once_and_wakes_the_parent_once() {
        let mut slots = slots(2);
        let (count, waker) = parent();
        assert!(taken(&mut slots, &waker).is_empty());
        lend(&mut slots, FIRST + 3, Waker::wake_by_ref);
        lend(&mut slots, FIRST + 3, Waker::wake_by_ref);
        lend(&mut slots, 1, Waker::wake_by_ref);
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert_eq!(taken(&mut slots, &waker), [FIRST + 3, 1]);
        assert!(
            taken(&mut slots, &waker).is_empty(),
            "each wake is taken once"
        );
        // Taken slots are queued again by their next wake, which wakes the parent again.
        lend(&mut slots, FIRST + 3, Waker::wake_by_ref);
        assert_eq!(taken(&mut slots, &waker), [FIRST + 3]);
        assert_eq!(count.0.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_lent_waker_takes_no_count_and_clones_keep_the_chunk_alive() {
        let mut slots = slots(1);
        let (_, waker) = parent();
        let cells = Arc::clone(&slots.slots.chunks[0].wakers);
        lend(&mut slots, 5, |lent| {
            assert_eq!(Arc::strong_count(&cells), 2, "the slots' and this test's");
            lent.wake_by_ref();
        });
        assert_eq!(taken(&mut slots, &waker), [5]);
        let kept = lend(&mut slots, 5, Waker::clone);
        let kept_too = kept.clone();
        assert!(kept.will_wake(&kept_too));
        assert_eq!(Arc::strong_count(&cells), 4);
        drop((slots, cells));
        // The chunk outlives the gather while wakers are kept; wakes still work.
        kept.wake_by_ref();
        kept.wake(); // by value: wakes, then gives its count back
        drop(kept_too); // the last count: frees the chunk (valgrind checks nothing leaks)
    }

    #[test]
    fn a_wake_before_the_first_poll_only_queues_the_slot() {
        let mut slots = slots(1);
        lend(&mut slots, 0, Waker::clone).wake();
        let (count, waker) = parent();
        assert_eq!(taken(&mut slots, &waker), [0]);
        assert_eq!(count.0.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn the_parent_is_replaced_only_when_it_changes() {
        let mut slots = slots(1);
        let (first, waker) = parent();
        taken(&mut slots, &waker);
        taken(&mut slots, &waker.clone());
        let (second, other) = parent();
        taken(&mut slots, &other);
        lend(&mut slots, 0, Waker::wake_by_ref);
        assert_eq!(first.0.load(Ordering::SeqCst), 0);
        assert_eq!(second.0.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn wakes_from_other_threads_after_the_owner_is_gone() {
        let mut slots = slots(2);
        let (count, waker) = parent();
        taken(&mut slots, &waker);
        let kept: Vec<Waker> = [0, FIRST - 1, FIRST, 3 * FIRST - 1]
            .into_iter()
            .map(|slot| lend(&mut slots, slot, Waker::clone))
            .collect();
        drop(slots);
        std::thread::scope(|s| {
            for waker in &kept {
                for _ in 0..2 {
                    let waker = waker.clone();
                    s.spawn(move || {
                        for _ in 0..100 {
                            waker.wake_by_ref();
                        }
                        waker.wake();
                    });
                }
            }
        });
        // No poll of the gather came between the wakes: it was woken once.
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        drop(kept);
    }

    /// The address of the future in `slot`.
    fn address(slots: &mut Both, slot: usize) -> usize {
        slots.slots.with(slot, |future, _, ()| {
            core::ptr::from_ref(future.as_ref().get_ref()).addr()
        })
    }

    #[test]
    fn chunks_double_and_every_slot_has_one_place() {
        let mut next = 0;
        for chunk in 0..12 {
            for offset in 0..FIRST << chunk {
                assert_eq!(locate(next), (chunk, offset), "slot {next}");
                next += 1;
            }
        }
        let mut slots = slots(3);
        assert_eq!(slots.slots.len(), FIRST + 2 * FIRST + 4 * FIRST);
        // The last slot of each chunk, and the first of the next, each have a waker of their
        // own.
        let (_, waker) = parent();
        for slot in [FIRST - 1, FIRST, 3 * FIRST - 1, 3 * FIRST, 7 * FIRST - 1] {
            lend(&mut slots, slot, Waker::wake_by_ref);
            assert_eq!(taken(&mut slots, &waker), [slot]);
        }
    }

    #[test]
    fn futures_stay_where_they_are_pinned_while_chunks_are_added() {
        let mut slots = slots(1);
        slots.slots.with(FIRST - 1, |mut future, _, ()| {
            future.set(Some(core::future::pending()));
        });
        let at = address(&mut slots, FIRST - 1);
        slots.grow(Waker::noop());
        slots.grow(Waker::noop());
        assert_eq!(slots.slots.len(), 7 * FIRST);
        assert_eq!(address(&mut slots, FIRST - 1), at);
        let running = |slots: &Slots<Pending, ()>| -> Vec<usize> {
            slots.running().map(|(slot, ())| slot).collect()
        };
        assert_eq!(running(&slots.slots), [FIRST - 1]);
        slots.slots.clear(FIRST - 1);
        assert!(running(&slots.slots).is_empty());
    }

    #[test]
    fn a_future_left_in_a_slot_is_dropped_with_the_slots() {
        struct Probe<'a>(&'a core::cell::Cell<usize>);
        impl Drop for Probe<'_> {
            fn drop(&mut self) {
                self.0.set(self.0.get() + 1);
            }
        }
        let dropped = core::cell::Cell::new(0);
        let lazy = Lazy::new();
        let mut slots = Slots::new(0_usize);
        slots.grow(&lazy, Waker::noop(), || 0_usize);
        for slot in [0, 7, FIRST - 1] {
            slots.with(slot, |mut future, _, meta| {
                future.set(Some(Probe(&dropped)));
                *meta = slot + 100;
            });
        }
        assert_eq!(
            slots
                .running()
                .map(|(slot, &meta)| (slot, meta))
                .collect::<Vec<_>>(),
            [(0, 100), (7, 107), (FIRST - 1, FIRST + 99)]
        );
        assert_eq!(*slots.meta(7), 107);
        *slots.meta_mut(7) = 7;
        assert_eq!(*slots.meta(7), 7);
        slots.clear(7);
        assert_eq!(dropped.get(), 1);
        drop(slots);
        assert_eq!(dropped.get(), 3);
    }
}
