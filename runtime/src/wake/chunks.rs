//! Slots for the branches of the dynamic form, in chunks: each chunk of [`CHUNK`] slots is one
//! allocation for the branch futures, pinned in place, and one shared allocation for their
//! wakers. A slot outlives its branch and is taken by the next branch to start, so a gather
//! allocates by the number of branches running at once, [`CHUNK`] slots at a time.
//!
//! A slot's waker is a `RawWaker` that points at its cell in the chunk's `Arc<[Cell]>`. Cell 0
//! of each chunk is a header: the number of cells, the first slot of the chunk, and the queue
//! that every chunk of the gather shares. From a slot cell, its offset finds the header, and
//! the header's length rebuilds the `Arc` to count references, as in the parent module.

use core::mem::ManuallyDrop;
use core::pin::Pin;
use core::ptr;
use core::sync::atomic::{AtomicBool, Ordering};
use core::task::{RawWaker, RawWakerVTable, Waker};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// How many slots one chunk holds.
pub(crate) const CHUNK: usize = 32;

/// The branch futures of a gather, pinned in chunks of [`CHUNK`] slots that never move.
pub(crate) struct Futures<F> {
    chunks: Vec<Pin<Box<[Option<F>]>>>,
}

impl<F> Futures<F> {
    pub(crate) const fn new() -> Self {
        Futures { chunks: Vec::new() }
    }

    /// How many slots there are.
    pub(crate) fn len(&self) -> usize {
        self.chunks.len() * CHUNK
    }

    /// Adds a chunk of empty slots.
    pub(crate) fn grow(&mut self) {
        let chunk: Box<[Option<F>]> = (0..CHUNK).map(|_| None).collect();
        self.chunks.push(Box::into_pin(chunk));
    }

    /// The future in slot `slot`, pinned.
    #[inline]
    pub(crate) fn get(&mut self, slot: usize) -> Pin<&mut Option<F>> {
        let chunk = self.chunks[slot / CHUNK].as_mut();
        // SAFETY: the chunk is a pinned boxed slice that is never moved, grown or shrunk, and
        // no slot is ever moved out of: a slot's future is only replaced or dropped in place,
        // through `Pin::set` on the reference made here, and the chunk's own drop drops every
        // slot in place. So each slot stays pinned where it is, as the pinned slice is.
        unsafe { chunk.map_unchecked_mut(|slots| &mut slots[slot % CHUNK]) }
    }

    /// Whether slot `slot` holds a future.
    #[inline]
    pub(crate) fn is_some(&self, slot: usize) -> bool {
        self.chunks[slot / CHUNK][slot % CHUNK].is_some()
    }
}

/// What the wakers of a gather share: the slots woken since the gather last looked, and the
/// gather's own waker.
#[derive(Default)]
struct Queue {
    woken: Mutex<Woken>,
}

#[derive(Default)]
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

/// The wakers of the slots of one gather.
pub(crate) struct Wakers {
    queue: Arc<Queue>,
    chunks: Vec<Arc<[Cell]>>,
    /// The gather's waker as last given to the queue, to skip replacing it when it is the same.
    parent: Option<Waker>,
}

impl core::fmt::Debug for Wakers {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Wakers")
            .field("slots", &(self.chunks.len() * CHUNK))
            .finish()
    }
}

static VTABLE: RawWakerVTable = RawWakerVTable::new(clone, wake, wake_by_ref, drop_waker);

/// The chunk a slot cell belongs to, rebuilt from the cell's address.
///
/// # Safety
///
/// `data` must point at a `Cell::Slot` of a live `Arc<[Cell]>` made by [`Wakers::grow`].
unsafe fn chunk_of(data: *const ()) -> *const [Cell] {
    let cell = data.cast::<Cell>();
    // SAFETY: the caller guarantees `cell` points at a live cell.
    let Cell::Slot { offset, .. } = (unsafe { &*cell }) else {
        unreachable!("a slot waker points at a slot cell");
    };
    // SAFETY: a slot cell at position `offset` of the chunk is `offset` cells after its
    // start, in the same allocation.
    let start = unsafe { cell.sub(*offset) };
    // SAFETY: `start` is cell 0 of the same live chunk, which is always the header.
    let Cell::Header { len, .. } = (unsafe { &*start }) else {
        unreachable!("cell 0 is the header");
    };
    ptr::slice_from_raw_parts(start, *len)
}

unsafe fn clone(data: *const ()) -> RawWaker {
    // SAFETY: `data` comes from a waker of ours, which holds a strong count of the chunk, so
    // the chunk is live; the new waker takes the count added here.
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
    // A plain load first: a slot woken again before the gather took it is queued already.
    if queued.load(Ordering::Acquire) || queued.swap(true, Ordering::AcqRel) {
        return;
    }
    let Cell::Header { first, queue, .. } = &chunk[0] else {
        unreachable!("cell 0 is the header");
    };
    let parent = {
        let mut woken = queue.lock();
        woken.slots.push(first + offset - 1);
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

impl Wakers {
    pub(crate) fn new() -> Self {
        Wakers {
            queue: Arc::default(),
            chunks: Vec::new(),
            parent: None,
        }
    }

    /// Adds the wakers of a chunk of slots: one allocation.
    pub(crate) fn grow(&mut self) {
        let first = self.chunks.len() * CHUNK;
        let chunk: Arc<[Cell]> = core::iter::once(Cell::Header {
            len: CHUNK + 1,
            first,
            queue: Arc::clone(&self.queue),
        })
        .chain((1..=CHUNK).map(|offset| Cell::Slot {
            offset,
            queued: AtomicBool::new(false),
        }))
        .collect();
        self.chunks.push(chunk);
    }

    /// Starts a poll of the gather woken by `waker`: remembers it, for the first slot wake
    /// after this to wake, and hands each slot woken since the last poll to `woken`, once,
    /// clearing its flag so that a later wake queues it again.
    pub(crate) fn begin(&mut self, waker: &Waker, mut woken: impl FnMut(usize)) {
        let mut queue = self.queue.lock();
        if !self.parent.as_ref().is_some_and(|p| p.will_wake(waker)) {
            queue.parent = Some(waker.clone());
            self.parent = Some(waker.clone());
        }
        queue.notified = false;
        for slot in queue.slots.drain(..) {
            if let Cell::Slot { queued, .. } = &self.chunks[slot / CHUNK][slot % CHUNK + 1] {
                queued.store(false, Ordering::Release);
            }
            woken(slot);
        }
    }

    /// Runs `f` with the waker of slot `slot`, without touching the reference count: the
    /// waker is only lent, and cloned (with a count of its own) if the branch keeps it.
    #[inline]
    pub(crate) fn with_waker<R>(&self, slot: usize, f: impl FnOnce(&Waker) -> R) -> R {
        let chunk = &self.chunks[slot / CHUNK];
        // From the pointer to the whole chunk, so that `chunk_of` may step back to cell 0.
        // SAFETY: `slot % CHUNK + 1` is at most `CHUNK`, in bounds of a chunk of `CHUNK + 1`
        // cells.
        let cell = unsafe { Arc::as_ptr(chunk).cast::<Cell>().add(slot % CHUNK + 1) };
        // SAFETY: `cell` is a slot cell of `chunk`, which outlives the lent waker; the
        // `ManuallyDrop` keeps the lent waker from giving back a count it never took.
        let waker =
            ManuallyDrop::new(unsafe { Waker::from_raw(RawWaker::new(cell.cast(), &VTABLE)) });
        f(&waker)
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

    fn wakers(chunks: usize) -> Wakers {
        let mut wakers = Wakers::new();
        for _ in 0..chunks {
            wakers.grow();
        }
        wakers
    }

    fn taken(wakers: &mut Wakers, waker: &Waker) -> Vec<usize> {
        let mut slots = Vec::new();
        wakers.begin(waker, |slot| slots.push(slot));
        slots
    }

    #[test]
    fn a_wake_queues_its_own_slot_once_and_wakes_the_parent_once() {
        let mut wakers = wakers(2);
        let (count, waker) = parent();
        assert!(taken(&mut wakers, &waker).is_empty());
        wakers.with_waker(CHUNK + 3, Waker::wake_by_ref);
        wakers.with_waker(CHUNK + 3, Waker::wake_by_ref);
        wakers.with_waker(1, Waker::wake_by_ref);
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert_eq!(taken(&mut wakers, &waker), [CHUNK + 3, 1]);
        assert!(
            taken(&mut wakers, &waker).is_empty(),
            "each wake is taken once"
        );
        // Taken slots are queued again by their next wake, which wakes the parent again.
        wakers.with_waker(CHUNK + 3, Waker::wake_by_ref);
        assert_eq!(taken(&mut wakers, &waker), [CHUNK + 3]);
        assert_eq!(count.0.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_lent_waker_takes_no_count_and_clones_keep_the_chunk_alive() {
        let mut wakers = wakers(1);
        let (_, waker) = parent();
        wakers.with_waker(5, |lent| {
            assert_eq!(Arc::strong_count(&wakers.chunks[0]), 1);
            lent.wake_by_ref();
        });
        assert_eq!(taken(&mut wakers, &waker), [5]);
        let kept = wakers.with_waker(5, Waker::clone);
        let kept_too = kept.clone();
        assert!(kept.will_wake(&kept_too));
        assert_eq!(Arc::strong_count(&wakers.chunks[0]), 3);
        drop(wakers);
        // The chunk outlives the gather while wakers are kept; wakes still work.
        kept.wake_by_ref();
        kept.wake(); // by value: wakes, then gives its count back
        drop(kept_too); // the last count: frees the chunk (valgrind checks nothing leaks)
    }

    #[test]
    fn a_wake_before_the_first_poll_only_queues_the_slot() {
        let mut wakers = wakers(1);
        wakers.with_waker(0, Waker::clone).wake();
        let (count, waker) = parent();
        assert_eq!(taken(&mut wakers, &waker), [0]);
        assert_eq!(count.0.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn the_parent_is_replaced_only_when_it_changes() {
        let mut wakers = wakers(1);
        let (first, waker) = parent();
        taken(&mut wakers, &waker);
        taken(&mut wakers, &waker.clone());
        let (second, other) = parent();
        taken(&mut wakers, &other);
        wakers.with_waker(0, Waker::wake_by_ref);
        assert_eq!(first.0.load(Ordering::SeqCst), 0);
        assert_eq!(second.0.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn wakes_from_other_threads_after_the_owner_is_gone() {
        let mut wakers = wakers(2);
        let (count, waker) = parent();
        taken(&mut wakers, &waker);
        let kept: Vec<Waker> = [0, CHUNK - 1, CHUNK, 2 * CHUNK - 1]
            .into_iter()
            .map(|slot| wakers.with_waker(slot, Waker::clone))
            .collect();
        drop(wakers);
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

    #[test]
    fn futures_stay_where_they_are_pinned_while_chunks_are_added() {
        let mut futures = Futures::<core::future::Pending<u8>>::new();
        futures.grow();
        futures.get(CHUNK - 1).set(Some(core::future::pending()));
        let at = ptr::from_ref(futures.get(CHUNK - 1).as_ref().get_ref()).addr();
        futures.grow();
        futures.grow();
        assert_eq!(futures.len(), 3 * CHUNK);
        assert_eq!(
            ptr::from_ref(futures.get(CHUNK - 1).as_ref().get_ref()).addr(),
            at
        );
        assert!(futures.is_some(CHUNK - 1));
        assert!(!futures.is_some(CHUNK));
        futures.get(CHUNK - 1).set(None);
        assert!(!futures.is_some(CHUNK - 1));
    }
}
