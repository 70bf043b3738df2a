//! Slots for the branches of the dynamic form, in chunks: each chunk of [`CHUNK`] slots is one
//! allocation for the branch futures, pinned in place, and one shared allocation for their
//! wakers. A slot outlives its branch and is taken by the next branch to start, so a gather
//! allocates by the number of branches running at once, [`CHUNK`] slots at a time.
//!
//! A slot's waker is a `RawWaker` that points at its cell in the chunk's `Arc<Wakers>`. A cell
//! holds its offset in the chunk, which leads back to the start of the chunk's `Wakers` and so
//! to the `Arc` to count references. Chunk 0 holds the queue that every waker of the gather
//! shares, and each later chunk holds chunk 0.

use core::mem::{ManuallyDrop, offset_of};
use core::pin::Pin;
use core::sync::atomic::{AtomicBool, Ordering};
use core::task::{RawWaker, RawWakerVTable, Waker};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// How many slots one chunk holds.
pub(crate) const CHUNK: usize = 32;

/// What the wakers of a gather share: the slots woken since the gather last looked, and the
/// gather's own waker.
struct Queue {
    woken: Mutex<Woken>,
}

struct Woken {
    slots: Vec<usize>,
    parent: Option<Waker>,
    /// Whether the gather's task was woken since its last poll began: the wakes that follow
    /// before its next poll need not wake it again.
    notified: bool,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, Woken> {
        // Nothing is left half-done while the lock is held, so a poisoned lock is still sound.
        self.woken.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The wakers of one chunk's slots, in one allocation that each of their wakers counts.
struct Wakers {
    /// The slot of `cells[0]`.
    first: usize,
    queue: QueueOf,
    cells: [Cell; CHUNK],
}

/// Where a chunk finds the gather's queue.
enum QueueOf {
    /// Chunk 0 holds it.
    Own(Queue),
    /// A later chunk holds chunk 0.
    First(Arc<Wakers>),
}

/// What a slot's waker points at: the slot's offset in its chunk, and whether the slot is in
/// the queue already.
struct Cell {
    offset: u8,
    queued: AtomicBool,
}

impl Wakers {
    fn queue(&self) -> &Queue {
        match &self.queue {
            QueueOf::Own(queue) => queue,
            QueueOf::First(first) => match &first.queue {
                QueueOf::Own(queue) => queue,
                QueueOf::First(_) => unreachable!("chunk 0 holds the queue"),
            },
        }
    }
}

/// The slots of one gather: chunks of [`CHUNK`] branch futures, pinned where they are, each
/// with the wakers of its slots and what the gather keeps of each slot (`M`).
pub(crate) struct Slots<F, M> {
    chunks: Vec<Chunk<F, M>>,
    /// The gather's waker as last given to the queue, to skip replacing it when it is the same,
    /// and to give to the queue when chunk 0 is made.
    parent: Option<Waker>,
}

struct Chunk<F, M> {
    futures: Pin<Box<[Option<F>]>>,
    wakers: Arc<Wakers>,
    meta: [M; CHUNK],
}

impl<F, M> core::fmt::Debug for Slots<F, M> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Slots").field("slots", &self.len()).finish()
    }
}

static VTABLE: RawWakerVTable = RawWakerVTable::new(clone, wake, wake_by_ref, drop_waker);

/// The chunk of wakers a cell belongs to, rebuilt from the cell's address.
///
/// # Safety
///
/// `data` must point at a cell of a live `Arc<Wakers>` made by [`Slots::grow`], with a pointer
/// derived from the `Arc`'s own (as [`Slots::with`] makes it).
unsafe fn chunk_of(data: *const ()) -> *const Wakers {
    let cell = data.cast::<Cell>();
    // SAFETY: the caller guarantees `cell` points at a live cell.
    let offset = usize::from(unsafe { (*cell).offset });
    // SAFETY: the cell at `offset` is `offset` cells after the first cell of its chunk, and
    // the cells are `offset_of!(Wakers, cells)` bytes after the start of the `Wakers`, all in
    // one allocation, which the pointer may reach: it was derived from the `Arc`'s.
    unsafe {
        cell.sub(offset)
            .byte_sub(offset_of!(Wakers, cells))
            .cast::<Wakers>()
    }
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
    // SAFETY: as above, `data` points at a cell of that chunk.
    let cell = unsafe { &*data.cast::<Cell>() };
    // A plain load first: a slot woken again before the gather took it is queued already.
    if cell.queued.load(Ordering::Acquire) || cell.queued.swap(true, Ordering::AcqRel) {
        return;
    }
    let parent = {
        let mut woken = chunk.queue().lock();
        woken.slots.push(chunk.first + usize::from(cell.offset));
        if woken.notified {
            return;
        }
        woken.notified = true;
        // Cloned under the lock and woken after it, so that a waker that runs code of its own
        // never does so while the lock is held.
        woken.parent.clone()
    };
    if let Some(parent) = parent {
        parent.wake();
    }
}

unsafe fn drop_waker(data: *const ()) {
    // SAFETY: this waker holds one strong count of the live chunk, given back here.
    unsafe { Arc::decrement_strong_count(chunk_of(data)) };
}

impl<F, M> Slots<F, M> {
    pub(crate) const fn new() -> Self {
        Slots {
            chunks: Vec::new(),
            parent: None,
        }
    }

    /// How many slots there are.
    pub(crate) fn len(&self) -> usize {
        self.chunks.len() * CHUNK
    }

    /// Adds a chunk of empty slots, each with `meta()`: one allocation for the futures, one
    /// for the wakers (and the queue, in chunk 0).
    pub(crate) fn grow(&mut self, mut meta: impl FnMut() -> M) {
        let first = self.len();
        let futures: Box<[Option<F>]> = (0..CHUNK).map(|_| None).collect();
        let queue = match self.chunks.first() {
            None => QueueOf::Own(Queue {
                woken: Mutex::new(Woken {
                    slots: Vec::new(),
                    parent: self.parent.clone(),
                    notified: false,
                }),
            }),
            Some(chunk) => QueueOf::First(Arc::clone(&chunk.wakers)),
        };
        let wakers = Arc::new(Wakers {
            first,
            queue,
            cells: core::array::from_fn(|offset| Cell {
                offset: u8::try_from(offset).expect("a chunk has at most 256 slots"),
                queued: AtomicBool::new(false),
            }),
        });
        self.chunks.push(Chunk {
            futures: Box::into_pin(futures),
            wakers,
            meta: core::array::from_fn(|_| meta()),
        });
    }

    /// What the gather keeps of slot `slot`.
    #[inline]
    pub(crate) fn meta(&self, slot: usize) -> &M {
        &self.chunks[slot / CHUNK].meta[slot % CHUNK]
    }

    /// What the gather keeps of slot `slot`, to change.
    #[inline]
    pub(crate) fn meta_mut(&mut self, slot: usize) -> &mut M {
        &mut self.chunks[slot / CHUNK].meta[slot % CHUNK]
    }

    /// The running slots, each with what the gather keeps of it.
    pub(crate) fn running(&self) -> impl Iterator<Item = (usize, &M)> {
        self.chunks.iter().enumerate().flat_map(|(c, chunk)| {
            chunk
                .futures
                .iter()
                .zip(&chunk.meta)
                .enumerate()
                .filter(|(_, (future, _))| future.is_some())
                .map(move |(offset, (_, meta))| (c * CHUNK + offset, meta))
        })
    }

    /// Runs `f` with the future of slot `slot`, pinned, the slot's waker, and what the gather
    /// keeps of the slot. The waker is only lent, without touching the reference count, and
    /// cloned (with a count of its own) if the branch keeps it.
    #[inline]
    pub(crate) fn with<R>(
        &mut self,
        slot: usize,
        f: impl FnOnce(Pin<&mut Option<F>>, &Waker, &mut M) -> R,
    ) -> R {
        let chunk = &mut self.chunks[slot / CHUNK];
        let offset = slot % CHUNK;
        // SAFETY: the chunk's futures are a pinned boxed slice that is never moved, grown or
        // shrunk, and no slot is ever moved out of: a slot's future is only replaced or
        // dropped in place, through `Pin::set` on the reference made here, and the chunk's own
        // drop drops every slot in place. So each slot stays pinned where it is, as the slice
        // is.
        let future = unsafe {
            chunk
                .futures
                .as_mut()
                .map_unchecked_mut(|futures| &mut futures[offset])
        };
        let wakers = Arc::as_ptr(&chunk.wakers);
        // From the `Arc`'s own pointer, so that `chunk_of` may step back to the start of the
        // `Wakers`.
        // SAFETY: `wakers` points at a live `Wakers`, and `offset` is below `CHUNK`, in bounds
        // of its cells.
        let cell = unsafe { (&raw const (*wakers).cells).cast::<Cell>().add(offset) };
        // SAFETY: `cell` is a cell of `chunk.wakers`, which outlives the lent waker; the
        // `ManuallyDrop` keeps the lent waker from giving back a count it never took.
        let waker =
            ManuallyDrop::new(unsafe { Waker::from_raw(RawWaker::new(cell.cast(), &VTABLE)) });
        f(future, &waker, &mut chunk.meta[offset])
    }

    /// Drops the future of slot `slot` in place, if it holds one.
    pub(crate) fn clear(&mut self, slot: usize) {
        self.with(slot, |mut future, _, _| future.set(None));
    }

    /// Starts a poll of the gather woken by `waker`: remembers it, for the first slot wake
    /// after this to wake, and hands each slot woken since the last poll to `woken`, once,
    /// with what the gather keeps of it, clearing its flag so that a later wake queues it
    /// again.
    pub(crate) fn begin(&mut self, waker: &Waker, mut woken: impl FnMut(usize, &M)) {
        let changed = !self.parent.as_ref().is_some_and(|p| p.will_wake(waker));
        if changed {
            self.parent = Some(waker.clone());
        }
        let Some(first) = self.chunks.first() else {
            return;
        };
        let mut queue = first.wakers.queue().lock();
        if changed {
            queue.parent.clone_from(&self.parent);
        }
        queue.notified = false;
        for slot in queue.slots.drain(..) {
            let chunk = &self.chunks[slot / CHUNK];
            let offset = slot % CHUNK;
            chunk.wakers.cells[offset]
                .queued
                .store(false, Ordering::Release);
            woken(slot, &chunk.meta[offset]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::task::Wake;

    /// A parent waker that counts its wakes.
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn parent() -> (Arc<Count>, Waker) {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        (Arc::clone(&count), Waker::from(Arc::clone(&count)))
    }

    type Pending = core::future::Pending<u8>;

    fn slots(chunks: usize) -> Slots<Pending, ()> {
        let mut slots = Slots::new();
        for _ in 0..chunks {
            slots.grow(|| ());
        }
        slots
    }

    /// Runs `f` with the lent waker of `slot`.
    fn lend<R>(slots: &mut Slots<Pending, ()>, slot: usize, f: impl FnOnce(&Waker) -> R) -> R {
        slots.with(slot, |_, waker, ()| f(waker))
    }

    fn taken(slots: &mut Slots<Pending, ()>, waker: &Waker) -> Vec<usize> {
        let mut taken = Vec::new();
        slots.begin(waker, |slot, ()| taken.push(slot));
        taken
    }

    #[test]
    fn a_wake_queues_its_own_slot_once_and_wakes_the_parent_once() {
        let mut slots = slots(2);
        let (count, waker) = parent();
        assert!(taken(&mut slots, &waker).is_empty());
        lend(&mut slots, CHUNK + 3, Waker::wake_by_ref);
        lend(&mut slots, CHUNK + 3, Waker::wake_by_ref);
        lend(&mut slots, 1, Waker::wake_by_ref);
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert_eq!(taken(&mut slots, &waker), [CHUNK + 3, 1]);
        assert!(
            taken(&mut slots, &waker).is_empty(),
            "each wake is taken once"
        );
        // Taken slots are queued again by their next wake, which wakes the parent again.
        lend(&mut slots, CHUNK + 3, Waker::wake_by_ref);
        assert_eq!(taken(&mut slots, &waker), [CHUNK + 3]);
        assert_eq!(count.0.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_lent_waker_takes_no_count_and_clones_keep_the_chunk_alive() {
        let mut slots = slots(1);
        let (_, waker) = parent();
        let cells = Arc::clone(&slots.chunks[0].wakers);
        lend(&mut slots, 5, |lent| {
            assert_eq!(Arc::strong_count(&cells), 2, "the slots' and this test's");
            lent.wake_by_ref();
        });
        assert_eq!(taken(&mut slots, &waker), [5]);
        let kept = lend(&mut slots, 5, Waker::clone);
        let kept_too = kept.clone();
        assert!(kept.will_wake(&kept_too));
        assert_eq!(Arc::strong_count(&cells), 4);
        // Chunk 0 holds the queue, so a later chunk counts it too.
        slots.grow(|| ());
        assert_eq!(Arc::strong_count(&cells), 5);
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
        let kept: Vec<Waker> = [0, CHUNK - 1, CHUNK, 2 * CHUNK - 1]
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
    fn address(slots: &mut Slots<Pending, ()>, slot: usize) -> usize {
        slots.with(slot, |future, _, ()| {
            core::ptr::from_ref(future.as_ref().get_ref()).addr()
        })
    }

    #[test]
    fn futures_stay_where_they_are_pinned_while_chunks_are_added() {
        let mut slots = slots(1);
        slots.with(CHUNK - 1, |mut future, _, ()| {
            future.set(Some(core::future::pending()));
        });
        let at = address(&mut slots, CHUNK - 1);
        slots.grow(|| ());
        slots.grow(|| ());
        assert_eq!(slots.len(), 3 * CHUNK);
        assert_eq!(address(&mut slots, CHUNK - 1), at);
        let running = |slots: &Slots<Pending, ()>| -> Vec<usize> {
            slots.running().map(|(slot, ())| slot).collect()
        };
        assert_eq!(running(&slots), [CHUNK - 1]);
        slots.clear(CHUNK - 1);
        assert!(running(&slots).is_empty());
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
        let mut slots = Slots::new();
        slots.grow(|| 0_usize);
        for slot in [0, 7, CHUNK - 1] {
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
            [(0, 100), (7, 107), (CHUNK - 1, CHUNK + 99)]
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
