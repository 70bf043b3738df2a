//! Per-branch wakers for the fixed form, all in one allocation: the one module of the crate
//! with `unsafe` (with its part `chunks`, for the dynamic form).
//!
//! A wake must poll only the branch it belongs to, so each branch needs a waker of its own
//! that says which branch it is. `std::task::Wake` gives one `Arc` per waker, that is one
//! allocation per branch; the design allows one per gather. So the wakers of a gather share one
//! `Arc<Shared<[Cell]>>`: a header with the gather's own waker, then one small cell per
//! branch, and a branch's `RawWaker` points at its cell. A cell holds its index and the count
//! of cells: the index finds the start of the allocation, the count rebuilds the `Arc` to
//! count references. The cells need no drop, so the allocation is made and freed without a
//! loop over them.
//!
//! The dynamic form's slots, whose futures are pinned in chunks with their wakers, are in the
//! part [`chunks`], for the same reason: it is the rest of the crate's `unsafe`.
//!
//! Every path of this module is exercised by its tests, which CI also runs under valgrind.

use core::mem::ManuallyDrop;
use core::ptr;
use core::sync::atomic::{AtomicBool, Ordering};
use core::task::{RawWaker, RawWakerVTable, Waker};
use std::sync::{Arc, Mutex, PoisonError};

pub(crate) mod chunks;

/// The allocation the wakers of one gather share. `C` is `[Cell; N]` when it is made and
/// `[Cell]` once unsized; `repr(C)` keeps the cells at the same offset in both.
#[repr(C)]
struct Shared<C: ?Sized> {
    /// The waker of the gather's task.
    parent: Mutex<Option<Waker>>,
    /// Whether the gather's task was woken since it last started a poll, so that many branch
    /// wakes between two of its polls wake it once.
    notified: AtomicBool,
    /// One cell per branch, in branch order.
    cells: C,
}

/// The cell of one branch.
struct Cell {
    /// The branch's index, which is the cell's position.
    index: u32,
    /// How many cells there are.
    len: u32,
    /// Whether the branch was woken since it was last polled.
    woken: AtomicBool,
}

/// Where the cells start in a `Shared`, in bytes.
const CELLS: usize = core::mem::offset_of!(Shared<[Cell; 0]>, cells);

/// The wakers of the branches of one gather.
pub(crate) struct Wakers {
    shared: Arc<Shared<[Cell]>>,
    /// The gather's waker as last given to the cells, to skip their lock when it is the same.
    parent: Option<Waker>,
}

impl core::fmt::Debug for Wakers {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Wakers")
            .field("branches", &self.shared.cells.len())
            .finish()
    }
}

static VTABLE: RawWakerVTable = RawWakerVTable::new(clone, wake, wake_by_ref, drop_waker);

/// What a branch waker reaches from its cell: the whole allocation (to count references), the
/// branch's flag, and the gather's waker and flag.
struct Parts<'a> {
    shared: *const Shared<[Cell]>,
    woken: &'a AtomicBool,
    parent: &'a Mutex<Option<Waker>>,
    notified: &'a AtomicBool,
}

/// The parts a branch cell reaches, found once from the cell's address: a wake needs them
/// all, and a clone or a drop only the allocation.
///
/// # Safety
///
/// `data` must point at a cell of a live `Arc<Shared<[Cell]>>` made by [`Wakers::new`], and
/// the parts must not be used once the caller's count of that `Arc` is given back.
#[inline(always)]
unsafe fn parts<'a>(data: *const ()) -> Parts<'a> {
    let cell = data.cast::<Cell>();
    // SAFETY: the caller guarantees `cell` points at a live cell.
    let Cell { index, len, woken } = unsafe { &*cell };
    // SAFETY: the cell at position `index` is `index` cells after the first, which is `CELLS`
    // bytes after the start of the `Shared`, all in the same allocation.
    let start = unsafe { cell.sub(*index as usize).byte_sub(CELLS) };
    // The start of the `Shared` with the count of its cells: the pointer its `Arc` gives.
    let shared = ptr::slice_from_raw_parts(start, *len as usize) as *const Shared<[Cell]>;
    // SAFETY: `shared` points at the live `Shared` that holds the cell.
    let Shared {
        parent, notified, ..
    } = unsafe { &*shared };
    Parts {
        shared,
        woken,
        parent,
        notified,
    }
}

impl Parts<'_> {
    /// Flags the branch, and wakes the gather's task unless a wake since its last poll did.
    #[inline(always)]
    fn wake(&self) {
        self.woken.store(true, Ordering::Release);
        // A plain load first: after the first wake since the gather's last poll, the others
        // need not touch the flag.
        if !self.notified.load(Ordering::Acquire) && !self.notified.swap(true, Ordering::AcqRel) {
            wake_parent(self.parent);
        }
    }
}

/// Wakes the gather's task: once between two of its polls, so kept out of line, which keeps
/// the flag's path short.
#[cold]
#[inline(never)]
fn wake_parent(parent: &Mutex<Option<Waker>>) {
    // Cloned under the lock and woken after it, so that a waker that runs code of its own
    // never does so while the lock is held.
    let parent = parent
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    if let Some(parent) = parent {
        parent.wake();
    }
}

unsafe fn clone(data: *const ()) -> RawWaker {
    // SAFETY: `data` comes from a waker of ours, which holds a strong count of the allocation,
    // so it is live; the new waker takes the count added here.
    unsafe { Arc::increment_strong_count(parts(data).shared) };
    RawWaker::new(data, &VTABLE)
}

unsafe fn wake(data: *const ()) {
    let shared = {
        // SAFETY: `data` comes from a live waker of ours, whose count keeps the allocation
        // live until it is given back below, after the last use of the parts.
        let parts = unsafe { parts(data) };
        parts.wake();
        parts.shared
    };
    // SAFETY: this waker's own count of the live allocation, given back once.
    unsafe { Arc::decrement_strong_count(shared) };
}

unsafe fn wake_by_ref(data: *const ()) {
    // SAFETY: `data` comes from a live waker of ours, whose count keeps the allocation live.
    unsafe { parts(data) }.wake();
}

unsafe fn drop_waker(data: *const ()) {
    // SAFETY: this waker holds one strong count of the live allocation, given back here.
    unsafe { Arc::decrement_strong_count(parts(data).shared) };
}

impl Wakers {
    /// Wakers for `N` branches: one allocation.
    pub(crate) fn new<const N: usize>() -> Self {
        const { assert!(N <= u32::MAX as usize, "gather!: too many branches") };
        let len = N as u32;
        let shared: Arc<Shared<[Cell; N]>> = Arc::new(Shared {
            parent: Mutex::new(None),
            notified: AtomicBool::new(false),
            cells: core::array::from_fn(|index| Cell {
                index: index as u32,
                len,
                woken: AtomicBool::new(false),
            }),
        });
        Wakers {
            shared,
            parent: None,
        }
    }

    /// Remembers the waker of the gather's task, which the first branch wake after this wakes.
    /// Called as each poll of the gather starts, before it polls any branch.
    pub(crate) fn set_parent(&mut self, waker: &Waker) {
        let Shared {
            parent, notified, ..
        } = &*self.shared;
        notified.store(false, Ordering::Release);
        if self.parent.as_ref().is_some_and(|p| p.will_wake(waker)) {
            return;
        }
        *parent.lock().unwrap_or_else(PoisonError::into_inner) = Some(waker.clone());
        self.parent = Some(waker.clone());
    }

    /// Whether branch `branch` was woken since this was last asked; clears the flag.
    #[inline(always)]
    pub(crate) fn take_woken(&self, branch: usize) -> bool {
        let woken = &self.shared.cells[branch].woken;
        // A plain load first: most branches were not woken, and a swap costs much more.
        woken.load(Ordering::Relaxed) && woken.swap(false, Ordering::Acquire)
    }

    /// Runs `f` with the waker of branch `branch`, without touching the reference count: the
    /// waker is only lent, and cloned (with a count of its own) if the branch keeps it.
    #[inline(always)]
    pub(crate) fn with_waker<R>(&self, branch: usize, f: impl FnOnce(&Waker) -> R) -> R {
        assert!(
            branch < self.shared.cells.len(),
            "gather!: no waker for branch {branch}"
        );
        // From the pointer to the whole allocation, so that `parts` may step back to its start.
        // SAFETY: the pointer is the live `Arc`'s, and `branch` is in bounds, checked above.
        let cell = unsafe {
            (&raw const (*Arc::as_ptr(&self.shared)).cells)
                .cast::<Cell>()
                .add(branch)
        };
        // SAFETY: `cell` is a cell of `self.shared`, which outlives the lent waker; the
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

    #[test]
    fn a_wake_flags_only_its_own_branch_and_wakes_the_parent() {
        let mut wakers = Wakers::new::<3>();
        let (count, waker) = parent();
        wakers.set_parent(&waker);
        wakers.with_waker(1, Waker::wake_by_ref);
        assert!(!wakers.take_woken(0));
        assert!(wakers.take_woken(1));
        assert!(!wakers.take_woken(1), "taking the flag clears it");
        assert!(!wakers.take_woken(2));
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn wakes_between_two_polls_of_the_gather_wake_it_once() {
        let mut wakers = Wakers::new::<3>();
        let (count, waker) = parent();
        wakers.set_parent(&waker);
        for branch in 0..3 {
            wakers.with_waker(branch, Waker::wake_by_ref);
        }
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert!(
            (0..3).all(|b| wakers.take_woken(b)),
            "every branch is flagged"
        );
        wakers.set_parent(&waker); // the next poll of the gather
        wakers.with_waker(2, Waker::wake_by_ref);
        assert_eq!(count.0.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn clones_keep_the_cells_alive_and_give_their_count_back() {
        let wakers = Wakers::new::<2>();
        let kept = wakers.with_waker(0, Waker::clone);
        let kept_too = kept.clone();
        assert_eq!(Arc::strong_count(&wakers.shared), 3);
        drop(wakers);
        // The cells outlive the gather while wakers are kept; wakes still work.
        kept.wake_by_ref();
        kept_too.wake_by_ref();
        assert!(kept.will_wake(&kept_too));
        kept.wake(); // by value: wakes, then gives its count back
        drop(kept_too); // the last count: frees the cells (valgrind checks nothing leaks)
    }

    #[test]
    fn a_lent_waker_takes_no_count() {
        let wakers = Wakers::new::<1>();
        wakers.with_waker(0, |waker| {
            assert_eq!(Arc::strong_count(&wakers.shared), 1);
            waker.wake_by_ref();
        });
        assert_eq!(Arc::strong_count(&wakers.shared), 1);
        assert!(wakers.take_woken(0));
    }

    #[test]
    fn a_wake_without_a_parent_only_sets_the_flag() {
        let wakers = Wakers::new::<1>();
        let kept = wakers.with_waker(0, Waker::clone);
        kept.wake();
        assert!(wakers.take_woken(0));
    }

    #[test]
    fn the_parent_is_replaced_only_when_it_changes() {
        let mut wakers = Wakers::new::<1>();
        let (first, waker) = parent();
        wakers.set_parent(&waker);
        wakers.set_parent(&waker.clone());
        let (second, other) = parent();
        wakers.set_parent(&other);
        wakers.with_waker(0, Waker::wake_by_ref);
        assert_eq!(first.0.load(Ordering::SeqCst), 0);
        assert_eq!(second.0.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn wakes_from_other_threads_after_the_owner_is_gone() {
        let mut wakers = Wakers::new::<4>();
        let (count, waker) = parent();
        wakers.set_parent(&waker);
        let kept: Vec<Waker> = (0..4).map(|i| wakers.with_waker(i, Waker::clone)).collect();
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
}
