//! Per-branch wakers for the fixed form, all in one allocation: the one module of the crate
//! with `unsafe` (with its part `chunks`, for the dynamic form).
//!
//! A wake must poll only the branch it belongs to, so each branch needs a waker of its own
//! that says which branch it is. `std::task::Wake` gives one `Arc` per waker, that is one
//! allocation per branch; the design allows one per gather. So the wakers of a gather share one
//! allocation: a [`Shared`] header (a reference count, the gather's own waker, the count of
//! cells), then one small cell per branch, and a branch's `RawWaker` points at its cell. A cell
//! holds its index, which finds the header. Before the header, one word of flags per
//! [`FLAGS`] branches says which were woken: a pass of the gather takes a word at once, and a
//! branch that was not woken costs it one bit test. The count is kept by hand rather
//! than by an `Arc`, so that a waker reaches the header with a plain pointer (an `Arc` of a
//! slice needs the length beside the pointer on every clone, wake and drop). The cells need no
//! drop, so the allocation is made and freed without a loop over them. A gather that ends with
//! no waker of its branches left keeps its allocation as the thread's spare, which the next
//! gather on the thread takes if it has room: gathers run one after another allocate once.
//!
//! The dynamic form's slots, whose futures are pinned in chunks with their wakers, are in the
//! part [`chunks`], for the same reason: it is the rest of the crate's `unsafe`.
//!
//! Every path of this module is exercised by its tests, which CI also runs under valgrind.

use core::alloc::Layout;
use core::mem::ManuallyDrop;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering, fence};
use core::task::{RawWaker, RawWakerVTable, Waker};
use std::sync::{Mutex, PoisonError};

pub(crate) mod chunks;
pub(crate) mod place;

/// The start of the allocation the wakers of one gather share; the cells follow it.
#[repr(C)]
struct Shared {
    /// How many owners the allocation has: the gather's [`Wakers`] and every branch waker it
    /// lent that was cloned.
    refs: AtomicUsize,
    /// Whether the gather's task was woken since it last started a poll, so that many branch
    /// wakes between two of its polls wake it once.
    notified: AtomicBool,
    /// How many cells follow.
    len: u32,
    /// The waker of the gather's task.
    parent: Mutex<Option<Waker>>,
}

/// The cell of one branch.
#[repr(C)]
struct Cell {
    /// The branch's index, which is the cell's position.
    index: u32,
}

/// How many branches one word of flags holds. Word `w` holds branches `w * FLAGS` to
/// `(w + 1) * FLAGS - 1`, branch `b` as the bit `b % FLAGS`; it sits `w + 1` words before the
/// header, so that a waker finds it from the header and its index alone.
pub(crate) const FLAGS: usize = usize::BITS as usize;

/// Where the cells start, in bytes from the header: right after it, since its size is a
/// multiple of its alignment, which the cells' does not exceed.
const CELLS: usize = size_of::<Shared>();

const _: () = assert!(align_of::<Cell>() <= align_of::<Shared>());
// The words of flags end right where the header starts: no padding between them.
const _: () = assert!(align_of::<Shared>() == align_of::<AtomicUsize>());

/// How many words of flags `len` branches need.
#[inline(always)]
fn words(len: usize) -> usize {
    len.div_ceil(FLAGS)
}

/// The layout of an allocation with `len` cells, and where its header starts, in bytes: after
/// the words of flags.
fn layout(len: usize) -> (Layout, usize) {
    let Ok(flags) = Layout::array::<AtomicUsize>(words(len)) else {
        panic!("gather!: too many branches")
    };
    Layout::array::<Cell>(len)
        .and_then(|cells| {
            let (layout, header) = flags.extend(Layout::new::<Shared>())?;
            let (layout, cells) = layout.extend(cells)?;
            debug_assert_eq!(header, flags.size());
            debug_assert_eq!(cells, header + CELLS);
            Ok((layout, header))
        })
        .unwrap_or_else(|_| panic!("gather!: too many branches"))
}

/// The word of flags that holds branch `index`'s.
///
/// # Safety
///
/// `shared` must be the header of a live allocation made by [`Wakers::new`] with more than
/// `index` cells, through a pointer derived from the allocation's start.
#[inline(always)]
unsafe fn flags<'a>(shared: *const Shared, index: usize) -> &'a AtomicUsize {
    // SAFETY: the allocation holds `words(len)` words before the header, and `index < len`, so
    // word `index / FLAGS` is in it, `index / FLAGS + 1` words before the header.
    unsafe { &*shared.cast::<AtomicUsize>().sub(index / FLAGS + 1) }
}

/// The wakers of the branches of one gather.
pub(crate) struct Wakers {
    /// The allocation, of which this holds one count.
    shared: NonNull<Shared>,
    /// The gather's waker as last given to the cells, to skip their lock when it is the same.
    parent: Option<Waker>,
}

// SAFETY: `Wakers` is a counted reference to its allocation, like an `Arc<Shared>`: the header
// is atomics and a `Mutex` of a `Waker` (all `Send + Sync`), the cells are a plain index and an
// atomic, and the allocation is freed once, by whichever owner gives back the last count, on
// any thread.
unsafe impl Send for Wakers {}
// SAFETY: as for `Send`: through `&Wakers` only the atomics and the `Mutex` are reached.
unsafe impl Sync for Wakers {}

impl core::fmt::Debug for Wakers {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Wakers")
            .field("branches", &self.shared().len)
            .finish()
    }
}

static VTABLE: RawWakerVTable = RawWakerVTable::new(clone, wake, wake_by_ref, drop_waker);

/// The header of the allocation that holds the cell `data` points at.
///
/// # Safety
///
/// `data` must point at a cell of a live allocation made by [`Wakers::new`], through a pointer
/// derived from the allocation's start (as [`Wakers::with_waker`] makes it).
#[inline(always)]
unsafe fn header(data: *const ()) -> *const Shared {
    let cell = data.cast::<Cell>();
    // SAFETY: the caller guarantees `cell` points at a live cell.
    let index = unsafe { (*cell).index } as usize;
    // SAFETY: the cell at position `index` is `index` cells after the first, which is `CELLS`
    // bytes after the start of the allocation, all in the same allocation.
    unsafe { cell.sub(index).byte_sub(CELLS).cast::<Shared>() }
}

/// Takes one more count of the allocation.
///
/// # Safety
///
/// `shared` must be live, held by a count of the caller's.
#[inline(always)]
unsafe fn acquire(shared: *const Shared) {
    // SAFETY: the caller's count keeps the header live.
    let old = unsafe { &(*shared).refs }.fetch_add(1, Ordering::Relaxed);
    // As `Arc` does: a count this high means wakers were leaked by the billion; stop rather
    // than let the count wrap around to a free.
    if old > isize::MAX as usize {
        std::process::abort();
    }
}

/// Gives back one count of the allocation, and frees it if that was the last.
///
/// # Safety
///
/// `shared` must be live, and the caller must own the count it gives back, and not use the
/// allocation afterwards.
#[inline(always)]
unsafe fn release(shared: *const Shared) {
    // SAFETY: the caller's count keeps the header live until it is given back here.
    if unsafe { &(*shared).refs }.fetch_sub(1, Ordering::Release) == 1 {
        // Every other owner's use of the allocation happens before this one frees it.
        fence(Ordering::Acquire);
        // SAFETY: that was the last count: no one else can reach the allocation.
        unsafe { free(shared.cast_mut()) };
    }
}

/// Writes the first `len` cells after the header `shared`, and their words of flags before
/// it, none of them woken.
///
/// # Safety
///
/// The allocation must have room for `len` cells and their words, and no one else may reach
/// them.
unsafe fn write_cells(shared: NonNull<Shared>, len: u32) {
    // SAFETY: the caller guarantees room for `len` cells after the header.
    let cells = unsafe { shared.as_ptr().byte_add(CELLS).cast::<Cell>() };
    for index in 0..len {
        // SAFETY: cell `index` is in the allocation; no one else reaches it.
        unsafe { cells.add(index as usize).write(Cell { index }) };
    }
    for word in 0..words(len as usize) {
        // SAFETY: word `word` is in the allocation, before the header; no one else reaches it.
        unsafe {
            shared
                .as_ptr()
                .cast::<AtomicUsize>()
                .sub(word + 1)
                .write(AtomicUsize::new(0));
        }
    }
}

/// Frees an allocation whose last count was given back: rare, so kept out of line.
///
/// # Safety
///
/// `shared` must be an allocation of [`Wakers::new`] that no one can reach any more.
#[cold]
#[inline(never)]
unsafe fn free(shared: *mut Shared) {
    // SAFETY: no one else reaches the header; the cells need no drop.
    let len = unsafe { (*shared).len } as usize;
    // SAFETY: the header was written by `Wakers::new` and is dropped once, here.
    unsafe { ptr::drop_in_place(&raw mut (*shared).parent) };
    let (layout, header) = layout(len);
    // SAFETY: the allocation was made by `Wakers::new` with this layout, `header` bytes before
    // its header.
    unsafe { std::alloc::dealloc(shared.byte_sub(header).cast(), layout) };
}

/// Flags the branch of the cell `data` points at, and says whether the gather's task is to be
/// woken: not when a wake since its last poll did.
///
/// Every access to the flags and to `notified`, here and in the gather's pass, is `SeqCst`:
/// a pass clears `notified` and then reads the flags, a wake sets its flag and then reads
/// `notified`. In the one order of all four, either the pass reads the flag after it was set
/// (and polls the branch), or the wake reads `notified` after the pass cleared it (and wakes
/// the gather's task again). With weaker orders both could read the old values (a store may
/// pass a later load, even on x86), and the wake would be lost.
///
/// # Safety
///
/// As for [`header`]; `shared` must be that cell's header.
#[inline(always)]
unsafe fn flag(data: *const (), shared: *const Shared) -> bool {
    // SAFETY: the caller guarantees both are live; the cell's index is below its allocation's
    // count of cells.
    let (index, flags, shared) = unsafe {
        let index = (*data.cast::<Cell>()).index as usize;
        (index, flags(shared, index), &*shared)
    };
    flags.fetch_or(1 << (index % FLAGS), Ordering::SeqCst);
    let notified = &shared.notified;
    // A plain load first: after the first wake since the gather's last poll, the others need
    // not touch the flag.
    !notified.load(Ordering::SeqCst) && !notified.swap(true, Ordering::SeqCst)
}

/// Wakes the gather's task: once between two of its polls, so kept out of line, which keeps
/// the flag's path short.
#[cold]
#[inline(never)]
fn wake_parent(shared: &Shared) {
    let parent = &shared.parent;
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
    // SAFETY: `data` comes from a waker of ours, which holds a count of the allocation (or is
    // lent by the `Wakers`, which does), so it is live; the new waker takes the count added
    // here.
    unsafe { acquire(header(data)) };
    RawWaker::new(data, &VTABLE)
}

unsafe fn wake(data: *const ()) {
    // SAFETY: `data` comes from a live waker of ours, whose count keeps the allocation live
    // until it is given back, once, after the flag is set (and the gather's task woken).
    unsafe {
        let shared = header(data);
        if flag(data, shared) {
            wake_parent_and_release(shared);
        } else {
            release(shared);
        }
    }
}

/// [`wake_parent`], then gives back the waker's count: out of line with it, so that the
/// common path of a wake by value keeps nothing across a call.
///
/// # Safety
///
/// As for [`release`].
#[cold]
#[inline(never)]
unsafe fn wake_parent_and_release(shared: *const Shared) {
    // SAFETY: the caller's count keeps the header live until it is given back, after.
    unsafe {
        wake_parent(&*shared);
        release(shared);
    }
}

unsafe fn wake_by_ref(data: *const ()) {
    // SAFETY: `data` comes from a live waker of ours, whose count keeps the allocation live.
    unsafe {
        let shared = header(data);
        if flag(data, shared) {
            wake_parent(&*shared);
        }
    }
}

unsafe fn drop_waker(data: *const ()) {
    // SAFETY: this waker holds one count of the live allocation, given back here.
    unsafe { release(header(data)) };
}

impl Wakers {
    /// Wakers for `N` branches: one allocation.
    pub(crate) fn new<const N: usize>() -> Self {
        const { assert!(N <= u32::MAX as usize, "gather!: too many branches") };
        Self::with_len(N as u32)
    }

    /// Wakers for `len` branches, out of line: made once per gather, by its first branch to
    /// wait. Takes the thread's spare allocation if it has room, else makes one.
    #[inline(never)]
    fn with_len(len: u32) -> Self {
        if let Some(shared) = Spare::take(len) {
            return Wakers {
                shared,
                parent: None,
            };
        }
        let (layout, header) = layout(len as usize);
        // SAFETY: the layout has a nonzero size (the header's).
        let start = unsafe { std::alloc::alloc(layout) };
        let Some(start) = NonNull::new(start) else {
            std::alloc::handle_alloc_error(layout)
        };
        // SAFETY: the header starts `header` bytes into the allocation.
        let shared = unsafe { start.byte_add(header).cast::<Shared>() };
        // SAFETY: the allocation is fresh, with room and alignment for the words of flags
        // before the header, the header, and `len` cells after it; each is written once, in
        // place.
        unsafe {
            shared.write(Shared {
                refs: AtomicUsize::new(1),
                notified: AtomicBool::new(false),
                len,
                parent: Mutex::new(None),
            });
            write_cells(shared, len);
        }
        Wakers {
            shared,
            parent: None,
        }
    }

    /// The header.
    #[inline(always)]
    fn shared(&self) -> &Shared {
        // SAFETY: this holds a count of the allocation, which keeps it live while borrowed.
        unsafe { self.shared.as_ref() }
    }

    /// The cell of branch `branch`, as a pointer derived from the start of the allocation, so
    /// that a waker may step back from it to the header; `None` past the last branch.
    #[inline(always)]
    fn cell(&self, branch: usize) -> Option<*const Cell> {
        if branch >= self.shared().len as usize {
            return None;
        }
        // SAFETY: `branch` is in bounds, checked above, so the cell is in the allocation.
        Some(unsafe {
            self.shared
                .as_ptr()
                .byte_add(CELLS)
                .cast::<Cell>()
                .add(branch)
        })
    }

    /// Remembers the waker of the gather's task, which the first branch wake after this wakes.
    /// Called as each poll of the gather starts, before it polls any branch.
    pub(crate) fn set_parent(&mut self, waker: &Waker) {
        let Shared {
            parent, notified, ..
        } = self.shared();
        // `SeqCst`, before the pass reads any flag: see `flag`.
        notified.store(false, Ordering::SeqCst);
        if self.parent.as_ref().is_some_and(|p| p.will_wake(waker)) {
            return;
        }
        *parent.lock().unwrap_or_else(PoisonError::into_inner) = Some(waker.clone());
        self.parent = Some(waker.clone());
    }

    /// Which of the branches `word * FLAGS` to `(word + 1) * FLAGS - 1` were woken since this
    /// was last asked, as the bits of their positions in the word; clears them.
    #[inline(always)]
    pub(crate) fn take_woken(&self, word: usize) -> usize {
        let index = word.saturating_mul(FLAGS);
        if index >= self.shared().len as usize {
            return 0;
        }
        // SAFETY: `index` is below the allocation's count of cells, checked above, and the
        // allocation is live while this is borrowed.
        let flags = unsafe { flags(self.shared.as_ptr(), index) };
        // A plain load first: most words have no wake, and a swap costs much more. `SeqCst`,
        // after the pass cleared `notified`: see `flag`.
        if flags.load(Ordering::SeqCst) == 0 {
            0
        } else {
            flags.swap(0, Ordering::SeqCst)
        }
    }

    /// Runs `f` with the waker of branch `branch`, without touching the reference count: the
    /// waker is only lent, and cloned (with a count of its own) if the branch keeps it.
    #[inline(always)]
    pub(crate) fn with_waker<R>(&self, branch: usize, f: impl FnOnce(&Waker) -> R) -> R {
        // No formatted message: the index would be kept for it on every call.
        let Some(cell) = self.cell(branch) else {
            panic!("gather!: no waker for a branch past the last")
        };
        // SAFETY: `cell` is a cell of this allocation, which outlives the lent waker; the
        // `ManuallyDrop` keeps the lent waker from giving back a count it never took.
        let waker =
            ManuallyDrop::new(unsafe { Waker::from_raw(RawWaker::new(cell.cast(), &VTABLE)) });
        f(&waker)
    }

    /// The branches woken since this was last asked, for the tests; clears their flags.
    #[cfg(test)]
    fn woken(&self) -> Vec<usize> {
        let words = words(self.shared().len as usize);
        (0..words)
            .flat_map(|word| {
                let bits = self.take_woken(word);
                (0..FLAGS)
                    .filter(move |bit| bits & (1 << bit) != 0)
                    .map(move |bit| word * FLAGS + bit)
            })
            .collect()
    }

    /// How many owners the allocation has, for the tests.
    #[cfg(test)]
    fn refs(&self) -> usize {
        self.shared().refs.load(Ordering::SeqCst)
    }
}

impl Drop for Wakers {
    fn drop(&mut self) {
        // The last owner: no branch kept a waker, so the allocation may serve the thread's
        // next gather. The load synchronizes with the releases of the wakers that were dropped,
        // so that their uses happen before the reuse.
        if self.shared().refs.load(Ordering::Acquire) == 1 && self.shared().len <= SPARE_MAX {
            Spare::keep(self.shared);
        } else {
            // SAFETY: this holds one count of the live allocation, given back once, here.
            unsafe { release(self.shared.as_ptr()) };
        }
    }
}

/// The most cells a spare may have: a gather of more branches frees its allocation, so that a
/// thread keeps at most a few kilobytes for its next gather.
const SPARE_MAX: u32 = 1024;

/// One allocation of wakers that a gather let go of with no waker of it left, kept for the
/// thread's next gather: a thread that runs gathers one after another allocates once.
struct Spare(std::cell::Cell<Option<NonNull<Shared>>>);

thread_local! {
    static SPARE: Spare = const { Spare(std::cell::Cell::new(None)) };
}

impl Spare {
    /// The thread's spare allocation, if it has at least `len` cells, made ready for a new
    /// gather: no branch flagged, the gather's task not woken. Its count is the caller's.
    fn take(len: u32) -> Option<NonNull<Shared>> {
        let shared = SPARE.try_with(|spare| spare.0.take()).ok().flatten()?;
        // SAFETY: a spare is live, and its one count is now the caller's: no one else reaches
        // it (a spare has no waker out, and no owner but the thread's `SPARE`).
        let header = unsafe { &*shared.as_ptr() };
        if header.len < len {
            // SAFETY: as above; freed once, here.
            unsafe { free(shared.as_ptr()) };
            return None;
        }
        header.notified.store(false, Ordering::Relaxed);
        // Every word of the allocation, not only the first `len` branches': a branch past
        // them has no waker in this gather, but one may have been woken in an earlier one.
        for word in 0..words(header.len as usize) {
            // SAFETY: as above; word `word` is in the allocation, before the header.
            unsafe { flags(shared.as_ptr(), word * FLAGS) }.store(0, Ordering::Relaxed);
        }
        Some(shared)
    }

    /// Keeps `shared`, whose one count the caller gives up, as the thread's spare (the larger
    /// of it and the spare there was, the other freed), without the gather's waker, which it
    /// must not keep alive.
    fn keep(shared: NonNull<Shared>) {
        // SAFETY: the caller holds the one count, so no one else reaches the allocation.
        let parent = unsafe { &mut (*shared.as_ptr()).parent };
        let parent = parent
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let freed = match SPARE.try_with(|spare| spare.0.replace(Some(shared))) {
            // SAFETY: both are live spares, reached by no one else.
            Ok(Some(other)) if unsafe { (*other.as_ptr()).len > (*shared.as_ptr()).len } => {
                SPARE.with(|spare| spare.0.set(Some(other)));
                Some(shared)
            }
            Ok(other) => other,
            // The thread is ending and its spare is gone.
            Err(_) => Some(shared),
        };
        if let Some(freed) = freed {
            // SAFETY: no one else reaches it, and it is no spare any more; freed once, here.
            unsafe { free(freed.as_ptr()) };
        }
        // Dropped last, outside the thread-local: a waker's drop may run code of its own.
        drop(parent);
    }
}

impl Drop for Spare {
    fn drop(&mut self) {
        if let Some(shared) = self.0.take() {
            // SAFETY: a spare is reached by no one else; freed once, here, as the thread ends.
            unsafe { free(shared.as_ptr()) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::task::Wake;

    /// A parent waker that counts its wakes (the tests of `chunks` use it too).
    pub(super) struct Count(pub(super) AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// A counting parent waker, and its count.
    pub(super) fn parent() -> (Arc<Count>, Waker) {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        (Arc::clone(&count), Waker::from(Arc::clone(&count)))
    }

    #[test]
    fn a_wake_flags_only_its_own_branch_and_wakes_the_parent() {
        let mut wakers = Wakers::new::<3>();
        let (count, waker) = parent();
        wakers.set_parent(&waker);
        wakers.with_waker(1, Waker::wake_by_ref);
        assert_eq!(wakers.woken(), [1]);
        assert_eq!(wakers.woken(), [], "taking the flags clears them");
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
        assert_eq!(wakers.woken(), [0, 1, 2], "every branch is flagged");
        wakers.set_parent(&waker); // the next poll of the gather
        wakers.with_waker(2, Waker::wake_by_ref);
        assert_eq!(count.0.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn clones_keep_the_cells_alive_and_give_their_count_back() {
        let wakers = Wakers::new::<2>();
        let kept = wakers.with_waker(0, Waker::clone);
        let kept_too = kept.clone();
        assert_eq!(wakers.refs(), 3);
        drop(wakers);
        // The cells outlive the gather while wakers are kept; wakes still work.
        kept.wake_by_ref();
        kept_too.wake_by_ref();
        assert!(kept.will_wake(&kept_too));
        kept.wake(); // by value: wakes, then gives its count back
        drop(kept_too); // the last count: frees the cells (valgrind checks nothing leaks)
    }

    #[test]
    fn the_flags_of_many_branches_sit_in_words_before_the_header() {
        let wakers = Wakers::new::<{ 2 * FLAGS + 3 }>();
        let last = 2 * FLAGS + 2;
        for branch in [0, FLAGS - 1, FLAGS, last] {
            wakers.with_waker(branch, Waker::wake_by_ref);
        }
        // Woken twice, flagged once.
        wakers.with_waker(FLAGS, Waker::wake_by_ref);
        assert_eq!(wakers.woken(), [0, FLAGS - 1, FLAGS, last]);
        assert_eq!(wakers.take_woken(1), 0, "taken once");
        assert_eq!(wakers.take_woken(3), 0, "no word past the last branch");
        assert_eq!(wakers.take_woken(usize::MAX), 0);
        let kept = wakers.with_waker(last, Waker::clone);
        drop(wakers);
        kept.wake(); // the last count: frees the words with the cells
    }

    #[test]
    fn the_last_waker_woken_by_value_wakes_the_parent_and_frees_the_cells() {
        let mut wakers = Wakers::new::<2>();
        let (count, waker) = parent();
        wakers.set_parent(&waker);
        let kept = wakers.with_waker(1, Waker::clone);
        drop(wakers);
        // The first wake since the gather's last poll, and the last count: wakes the gather's
        // task, then frees the cells (valgrind checks nothing leaks).
        kept.wake();
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert_eq!(
            Arc::strong_count(&count),
            2,
            "the cells' parent waker is gone"
        );
    }

    #[test]
    fn a_lent_waker_takes_no_count() {
        let wakers = Wakers::new::<1>();
        wakers.with_waker(0, |waker| {
            assert_eq!(wakers.refs(), 1);
            waker.wake_by_ref();
        });
        assert_eq!(wakers.refs(), 1);
        assert_eq!(wakers.woken(), [0]);
    }

    #[test]
    fn a_wake_without_a_parent_only_sets_the_flag() {
        let wakers = Wakers::new::<1>();
        let kept = wakers.with_waker(0, Waker::clone);
        kept.wake();
        assert_eq!(wakers.woken(), [0]);
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

    #[test]
    fn wakes_from_other_threads_set_every_flag_of_a_shared_word() {
        let mut wakers = Wakers::new::<{ FLAGS + 8 }>();
        let (count, waker) = parent();
        wakers.set_parent(&waker);
        std::thread::scope(|s| {
            for branch in 0..FLAGS + 8 {
                let waker = wakers.with_waker(branch, Waker::clone);
                s.spawn(move || waker.wake());
            }
        });
        assert_eq!(wakers.woken(), (0..FLAGS + 8).collect::<Vec<_>>());
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_gathers_wakers_serve_the_next_gather_on_its_thread_cleared() {
        let mut wakers = Wakers::new::<3>();
        let (count, waker) = parent();
        wakers.set_parent(&waker);
        wakers.with_waker(1, Waker::wake_by_ref);
        let first = wakers.shared;
        drop(wakers);
        assert_eq!(
            Arc::strong_count(&count),
            2,
            "the spare keeps no waker of the gather"
        );
        let mut again = Wakers::new::<2>();
        assert_eq!(again.shared, first, "a smaller gather takes the spare");
        assert_eq!(
            again.woken(),
            [],
            "the flags of the last gather are cleared"
        );
        assert!(!again.shared().notified.load(Ordering::SeqCst));
        // The new gather's task is the one woken.
        let (second, other) = parent();
        again.set_parent(&other);
        again.with_waker(0, Waker::wake_by_ref);
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert_eq!(second.0.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn wakers_kept_by_a_branch_are_not_reused() {
        let wakers = Wakers::new::<2>();
        let kept = wakers.with_waker(0, Waker::clone);
        let first = wakers.shared;
        drop(wakers);
        let other = Wakers::new::<2>();
        assert_ne!(other.shared, first);
        kept.wake_by_ref();
        drop(other);
        drop(kept); // the last count: frees the cells (valgrind checks nothing leaks)
    }

    #[test]
    fn the_larger_spare_is_kept_and_a_smaller_one_is_not_used() {
        let large = Wakers::new::<4>();
        let small = Wakers::new::<1>();
        drop(large);
        drop(small); // freed: the spare has more cells
        assert!(Wakers::new::<3>().shared().len >= 4);
        // Too small for 6: freed, and a new allocation is made.
        let larger = Wakers::new::<6>();
        assert_eq!(larger.shared().len, 6);
        larger.with_waker(5, Waker::wake_by_ref);
        assert_eq!(larger.woken(), [5]);
    }

    #[test]
    fn a_spare_is_cleared_in_every_word_even_past_a_smaller_gathers_branches() {
        std::thread::spawn(|| {
            let wide = Wakers::new::<{ 2 * FLAGS }>();
            wide.with_waker(2 * FLAGS - 1, Waker::wake_by_ref);
            let first = wide.shared;
            drop(wide);
            let narrow = Wakers::new::<3>();
            assert_eq!(narrow.shared, first, "the spare serves the narrow gather");
            assert_eq!(narrow.woken(), [], "no flag of the wide gather is left");
            drop(narrow);
            let again = Wakers::new::<{ 2 * FLAGS }>();
            assert_eq!(again.shared, first);
            assert_eq!(again.woken(), []);
        })
        .join()
        .expect("the thread ends");
    }

    #[test]
    fn the_spare_is_freed_when_its_thread_ends() {
        std::thread::spawn(|| drop(Wakers::new::<2>()))
            .join()
            .expect("the thread ends");
        // Dropped while the thread ends, after its spare: freed at once.
        struct Late;
        impl Drop for Late {
            fn drop(&mut self) {
                drop(Wakers::new::<1>());
            }
        }
        thread_local! { static LATE: Late = const { Late }; }
        std::thread::spawn(|| LATE.with(|_| drop(Wakers::new::<1>())))
            .join()
            .expect("the thread ends");
    }

    #[test]
    fn a_thread_keeps_no_spare_past_the_largest_size() {
        std::thread::spawn(|| {
            drop(Wakers::new::<{ SPARE_MAX as usize + 1 }>());
            assert!(SPARE.with(|spare| spare.0.get()).is_none());
            drop(Wakers::new::<{ SPARE_MAX as usize }>());
            assert!(SPARE.with(|spare| spare.0.get()).is_some());
        })
        .join()
        .expect("the thread ends");
    }
}
