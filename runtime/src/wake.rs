//! Per-branch wakers for the fixed form, all in one allocation: the one module of the crate
//! with `unsafe` (with its parts `place`, for the fixed form's slots, and `chunks`, for the
//! dynamic form).
//!
//! A wake must poll only the branch it belongs to, so each branch needs a waker of its own
//! that says which branch it is. `std::task::Wake` gives one `Arc` per waker, that is one
//! allocation per branch; the design allows one per gather. So the wakers of a gather share one
//! allocation: a [`Shared`] header (a reference count, the gather's own waker, the count of
//! cells), then one small cell per branch, and a branch's `RawWaker` points at its cell. A cell
//! holds its index, which finds the header, and how far back its word is. Before the header,
//! one word per [`FLAGS`] branches holds two halves: the flags that say which of its branches
//! were woken, and a count of the wakers of its branches. A pass of the gather takes a word's
//! flags at once, and a branch that was not woken costs it one bit test.
//!
//! The counts are kept so that each clone, wake and drop of a waker is one atomic operation on
//! its word, as many as `tokio::join!` spends on its one waker:
//! - the gather holds one count in every word for as long as it runs, so that while it does, a
//!   clone or a drop never takes a word's count to or from none;
//! - the header counts the words whose count is not none, so that only the last waker of a word,
//!   once the gather is gone, touches it;
//! - a wake by value sets its flag and gives back its count in one operation. Only the first
//!   wake of a word since the gather last took its flags has the gather's task to wake, and it
//!   keeps its count until it has.
//!
//! The gather's own waker is given to the header as the wakers are made, before any is lent,
//! and is then read without a lock and woken by reference; only a waker that changes later is
//! kept under a lock.
//!
//! The counts are kept by hand rather than by an `Arc`, so that a waker reaches its word with a
//! plain pointer (an `Arc` of a slice needs the length beside the pointer on every clone, wake
//! and drop). A word is an `AtomicU64`, on every target: the crate needs 64-bit atomics, which
//! all of Rust's tier-1 targets have. The cells need no drop, so the allocation is made and
//! freed without a loop over them. A gather that ends with no waker of its branches left keeps
//! its allocation as the thread's spare, which the next gather on the thread takes if it has
//! room: gathers run one after another allocate once.
//!
//! The fixed form's slots, whose futures are pinned in tuples with what the gather keeps of
//! them, are in the part [`place`], and the dynamic form's, whose futures are pinned in chunks
//! with their wakers, in the part [`chunks`], for the same reason: they are the rest of the
//! crate's `unsafe`.
//!
//! Every path of this module is exercised by its tests, which CI also runs under valgrind.

use core::alloc::Layout;
use core::mem::ManuallyDrop;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering, fence};
use core::task::{RawWaker, RawWakerVTable, Waker};
use std::sync::{Mutex, PoisonError};

pub(crate) mod chunks;
pub(crate) mod place;

/// The start of the allocation the wakers of one gather share; the cells follow it.
#[repr(C)]
struct Shared {
    /// How many owners the allocation has: the words whose count is not none (every word,
    /// while the gather runs).
    refs: AtomicUsize,
    /// Whether the gather's task was woken since it last started a poll, so that many branch
    /// wakes between two of its polls wake it once.
    notified: AtomicBool,
    /// Whether the gather's task has a waker other than `first`, kept in `parent`: it changed
    /// since the wakers were made, or was first given after they were lent (in the tests).
    replaced: AtomicBool,
    /// How many cells follow.
    len: u32,
    /// The waker of the gather's task as it was when the wakers were made, before any was
    /// lent: written only while no one else reaches the header, so that a wake reads it
    /// without a lock, and wakes it by reference, without the clone and drop (two atomic
    /// operations) that a waker taken from under a lock needs.
    first: Option<Waker>,
    /// The waker of the gather's task once it is no longer `first` (see `replaced`).
    parent: Mutex<Option<Waker>>,
}

/// The cell of one branch.
#[repr(C)]
struct Cell {
    /// The branch's index, which is the cell's position.
    index: u32,
    /// How many bytes before the cell the branch's word is, so that a waker reaches it without
    /// reckoning.
    back: u32,
}

/// How many branches one word holds. Word `w` holds branches `w * FLAGS` to
/// `(w + 1) * FLAGS - 1`, branch `b` as the bit `b % FLAGS` of its low half; its high half
/// counts the wakers of those branches that are alive (cloned from the wakers the gather lends),
/// and one more while the gather runs. The word sits `w + 1` words before the header, so that a
/// waker finds it from the header and its index alone.
pub(crate) const FLAGS: usize = 32;

/// One waker in a word's count, its high half.
const ONE: u64 = 1 << FLAGS;

const _: () = assert!(
    usize::BITS as usize >= FLAGS,
    "a word's flags fit a `usize`"
);

/// The flags of a word, its low half.
const MASK: u64 = ONE - 1;

/// Where the cells start, in bytes from the header: right after it, since its size is a
/// multiple of its alignment, which the cells' does not exceed.
const CELLS: usize = size_of::<Shared>();

const _: () = assert!(align_of::<Cell>() <= align_of::<Shared>());
// The words end right where the header starts: no padding between them, since their size is a
// multiple of the header's alignment.
const _: () = assert!(align_of::<Shared>() <= size_of::<AtomicU64>());

/// How many words `len` branches need.
#[inline(always)]
fn words(len: usize) -> usize {
    len.div_ceil(FLAGS)
}

/// The layout of an allocation with `len` cells, and where its header starts, in bytes: after
/// the words. Its size fits a `u32`.
fn layout(len: usize) -> (Layout, usize) {
    let Ok(flags) = Layout::array::<AtomicU64>(words(len)) else {
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
        .ok()
        // A cell's distance back to its word is kept in a `u32`.
        .filter(|(layout, _)| u32::try_from(layout.size()).is_ok())
        .unwrap_or_else(|| panic!("gather!: too many branches"))
}

/// The word that holds branch `index`'s flag and counts its wakers.
///
/// # Safety
///
/// `shared` must be the header of a live allocation made by [`Wakers::new`] with more than
/// `index` cells, through a pointer derived from the allocation's start.
#[inline(always)]
unsafe fn word_of<'a>(shared: *const Shared, index: usize) -> &'a AtomicU64 {
    // SAFETY: the allocation holds `words(len)` words before the header, and `index < len`, so
    // word `index / FLAGS` is in it, `index / FLAGS + 1` words before the header.
    unsafe { &*shared.cast::<AtomicU64>().sub(index / FLAGS + 1) }
}

/// The wakers of the branches of one gather.
pub(crate) struct Wakers {
    /// The allocation, of which this holds one count in every word.
    shared: NonNull<Shared>,
    /// What tells apart the gather's waker as last given to the cells (see [`Identity`]), to
    /// skip their lock when it is the same.
    parent: Option<Identity>,
}

/// What tells a waker apart, as [`Waker::will_wake`] compares two: its data pointer and its
/// table of functions. Kept rather than a clone of the waker, which would cost an atomic
/// operation to make and another to drop, in every gather: the cells hold a clone of the
/// waker it tells, which keeps its data alive for as long as it is compared.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Identity(*const (), NonNull<RawWakerVTable>);

impl Identity {
    /// What tells `waker` apart.
    #[inline(always)]
    fn of(waker: &Waker) -> Self {
        Identity(waker.data(), NonNull::from(waker.vtable()))
    }
}

// SAFETY: `Wakers` is a counted reference to its allocation, like an `Arc<Shared>`: the header
// is atomics and a `Mutex` of a `Waker` (all `Send + Sync`), the cells are a plain index, the
// words atomics, and the allocation is freed once, by whichever owner gives back the last count,
// on any thread.
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

/// The functions of a branch's waker. A constant rather than a static, so that the code that
/// lends a waker, compiled where `gather!` is written, sees the table: a branch that clones
/// the waker it was lent calls `clone` directly, inlined (measured: about 6 instructions less
/// per branch that waits, at 100 branches), where a static's table would be read at run time
/// and called through. Each use may get its own copy of the table, so two wakers of one
/// branch may have different tables: `Waker::will_wake` may then say `false`, which only
/// costs a clone, and nothing here tells wakers apart by their table.
const VTABLE: RawWakerVTable = RawWakerVTable::new(clone, wake, wake_by_ref, drop_waker);

/// The index of the cell `data` points at, and the header of its allocation.
///
/// # Safety
///
/// `data` must point at a cell of a live allocation made by [`Wakers::new`], through a pointer
/// derived from the allocation's start (as [`Wakers::with_waker`] makes it).
#[inline(always)]
unsafe fn locate(data: *const ()) -> (usize, *const Shared) {
    let cell = data.cast::<Cell>();
    // SAFETY: the caller guarantees `cell` points at a live cell.
    let index = unsafe { (*cell).index } as usize;
    // SAFETY: the cell at position `index` is `index` cells after the first, which is `CELLS`
    // bytes after the start of the allocation, all in the same allocation.
    let shared = unsafe { cell.sub(index).byte_sub(CELLS).cast::<Shared>() };
    (index, shared)
}

/// The word of the branch whose cell `data` points at, and the branch's bit in it, reached
/// without the header.
///
/// # Safety
///
/// As for [`locate`].
#[inline(always)]
unsafe fn word_and_bit<'a>(data: *const ()) -> (&'a AtomicU64, u64) {
    // SAFETY: the caller guarantees `data` points at a live cell.
    let cell = unsafe { &*data.cast::<Cell>() };
    // SAFETY: the cell's word is `back` bytes before it, in the same allocation, as
    // `write_cells` wrote it.
    let word = unsafe { &*data.byte_sub(cell.back as usize).cast::<AtomicU64>() };
    (word, 1 << (cell.index as usize % FLAGS))
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

/// Gives back the header's count that a word held while it counted wakers: called by whoever
/// took the word's count from one to none, out of line, since that is once per word.
///
/// # Safety
///
/// As for [`release`]; the word's count of the header is the caller's.
#[cold]
#[inline(never)]
unsafe fn release_word(shared: *const Shared) {
    // Every waker of the word that was dropped before (each with a release on the word) has
    // its uses happen before the header's count is given back, and so before any free.
    fence(Ordering::Acquire);
    // SAFETY: as the caller guarantees.
    unsafe { release(shared) };
}

/// Writes the first `len` cells after the header `shared`, and their words before it, none of
/// them woken, each with the one count of the gather.
///
/// # Safety
///
/// The allocation must have room for `len` cells and their words, and no one else may reach
/// them.
unsafe fn write_cells(shared: NonNull<Shared>, len: u32) {
    // SAFETY: the caller guarantees room for `len` cells after the header.
    let cells = unsafe { shared.as_ptr().byte_add(CELLS).cast::<Cell>() };
    for index in 0..len {
        let at = index as usize;
        // In bounds of `u32`: the allocation's size is (see `layout`).
        let back =
            (CELLS + at * size_of::<Cell>() + (at / FLAGS + 1) * size_of::<AtomicU64>()) as u32;
        // SAFETY: cell `index` is in the allocation; no one else reaches it.
        unsafe { cells.add(at).write(Cell { index, back }) };
    }
    for word in 0..words(len as usize) {
        // SAFETY: word `word` is in the allocation, before the header; no one else reaches it.
        unsafe {
            shared
                .as_ptr()
                .cast::<AtomicU64>()
                .sub(word + 1)
                .write(AtomicU64::new(ONE));
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
    unsafe { ptr::drop_in_place(shared) };
    let (layout, header) = layout(len);
    // SAFETY: the allocation was made by `Wakers::new` with this layout, `header` bytes before
    // its header.
    unsafe { std::alloc::dealloc(shared.byte_sub(header).cast(), layout) };
}

/// Says whether the gather's task is to be woken after a branch's flag was set, the first of
/// its word since the gather took the word's flags: not when a wake since its last poll did.
///
/// Every access to the flags and to `notified`, here and in the gather's pass, is `SeqCst`:
/// a pass clears `notified` and then reads the flags, a wake sets its flag and then reads
/// `notified`. In the one order of all four, either the pass reads the flag after it was set
/// (and polls the branch), or the wake reads `notified` after the pass cleared it (and wakes
/// the gather's task again). With weaker orders both could read the old values (a store may
/// pass a later load, even on x86), and the wake would be lost. The flag is set by a
/// read-modify-write, never skipped after a plain load, so that the pass that takes it also
/// sees what the waker did before the wake.
///
/// A wake that finds a flag of its word already set reads no `notified`: the wake that set the
/// first of them does, after it, and no pass took the word's flags between the two (a pass
/// takes them all at once), so the pass that takes the first flag takes this one too.
#[inline(always)]
fn notify(shared: &Shared) -> bool {
    let notified = &shared.notified;
    // A plain load first: after the first wake since the gather's last poll, the others need
    // not touch the flag.
    !notified.load(Ordering::SeqCst) && !notified.swap(true, Ordering::SeqCst)
}

/// Wakes the gather's task: once between two of its polls, so kept out of line, which keeps
/// the flag's path short.
///
/// While the task's waker is the one the wakers were made with, it is `first`, which no one
/// writes while a waker is out, and is woken by reference, with no lock. Once the gather gave
/// another (`set_parent`), it is in `parent`: `replaced` is set after it is stored there, and
/// both are `SeqCst`, so that a wake whose flag the gather's next pass does not see (it comes
/// after that pass read the flags, after `set_parent`) reads `replaced` set, and then finds
/// the new waker under the lock.
#[cold]
#[inline(never)]
fn wake_parent(shared: &Shared) {
    if !shared.replaced.load(Ordering::SeqCst) {
        if let Some(first) = &shared.first {
            first.wake_by_ref();
        }
        return;
    }
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

/// Clones a branch's waker: one count more in its word. Inlined where the table is seen (see
/// [`VTABLE`]).
#[inline]
unsafe fn clone(data: *const ()) -> RawWaker {
    // SAFETY: `data` comes from a waker of ours, which holds a count of its word (or is lent
    // by the `Wakers`, which holds one in every word), so the allocation is live and the count
    // is not none; the new waker takes the count added here.
    unsafe {
        let (word, _) = word_and_bit(data);
        // As `Arc` does: a count this high means wakers were leaked by the billion; stop
        // rather than let the count wrap around to a free. Told by the sign of the new value,
        // which the addition itself gives: no register keeps the old value for a test.
        let new = word.fetch_add(ONE, Ordering::Relaxed).wrapping_add(ONE);
        if new.cast_signed() < 0 {
            std::process::abort();
        }
    }
    RawWaker::new(data, &VTABLE)
}

unsafe fn wake(data: *const ()) {
    // SAFETY: `data` comes from a live waker of ours, whose count keeps its word's count of the
    // header, and so the allocation, live until the word's count is given back, after the flag
    // is set (and the gather's task woken).
    unsafe {
        let (word, bit) = word_and_bit(data);
        // The flag set and, unless this is the first of its word, the waker's count given back,
        // in one operation. `SeqCst` for the flag (see `notify`); it is also the release and
        // acquire a count given back needs.
        let old = match word.fetch_update(Ordering::SeqCst, Ordering::Relaxed, |old| {
            Some(if old & MASK == 0 {
                old | bit
            } else {
                (old | bit) - ONE
            })
        }) {
            Ok(old) | Err(old) => old,
        };
        if old & MASK == 0 {
            first_wake(data);
        } else if old < 2 * ONE {
            // The count given back was the word's last: the gather is gone.
            release_word(locate(data).1);
        }
    }
}

/// The first wake by value of a word since the gather took its flags: wakes the gather's task
/// if no wake since its last poll did, then gives back the waker's count, which kept the
/// header live until then. Out of line, so that the common path keeps nothing across a call.
///
/// # Safety
///
/// `data` must come from a live waker of ours whose count the caller gives back.
#[inline(never)]
unsafe fn first_wake(data: *const ()) {
    // SAFETY: the waker's count keeps the allocation live until it is given back, after.
    unsafe {
        let (_, shared) = locate(data);
        let (word, _) = word_and_bit(data);
        if notify(&*shared) {
            wake_parent(&*shared);
        }
        if word.fetch_sub(ONE, Ordering::Release) < 2 * ONE {
            release_word(shared);
        }
    }
}

unsafe fn wake_by_ref(data: *const ()) {
    // SAFETY: `data` comes from a live waker of ours, whose count keeps the allocation live.
    unsafe {
        let (word, bit) = word_and_bit(data);
        // `SeqCst`: see `notify`, which only the first wake of the word since the gather took
        // its flags asks.
        if word.fetch_or(bit, Ordering::SeqCst) & MASK == 0 {
            let (_, shared) = locate(data);
            if notify(&*shared) {
                wake_parent(&*shared);
            }
        }
    }
}

unsafe fn drop_waker(data: *const ()) {
    // SAFETY: this waker holds one count of its word, given back here, and with the word's
    // last (once the gather is gone), the word's count of the header.
    unsafe {
        let (word, _) = word_and_bit(data);
        if word.fetch_sub(ONE, Ordering::Release) < 2 * ONE {
            release_word(locate(data).1);
        }
    }
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
        // SAFETY: the allocation is fresh, with room and alignment for the words before the
        // header, the header, and `len` cells after it; each is written once, in place.
        unsafe {
            shared.write(Shared {
                // Every word holds the allocation, with the gather's count in it.
                refs: AtomicUsize::new(words(len as usize)),
                notified: AtomicBool::new(false),
                replaced: AtomicBool::new(false),
                len,
                first: None,
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
        // SAFETY: this holds counts of the allocation, which keep it live while borrowed.
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

    /// Wakers for `N` branches, whose first wake wakes `parent`, the waker of the gather's
    /// task: made by the gather's first branch to wait, in its first poll, so that the
    /// gather's next poll finds the waker already given ([`set_parent`](Self::set_parent)).
    pub(crate) fn with_parent<const N: usize>(parent: &Waker) -> Self {
        let mut wakers = Self::new::<N>();
        // SAFETY: the allocation was just made or taken as the thread's spare, and no waker of
        // it has been lent yet: no one else reaches the header, and it is live.
        let header = unsafe { wakers.shared.as_mut() };
        // No lock, no store to `notified`: with no waker out, no wake can race with this, and
        // a new allocation (or a spare, see `Spare::take`) has no gather's task woken and no
        // waker other than `first`. A spare's wakers were taken when it became the spare, so
        // nothing is dropped here.
        header.first = Some(parent.clone());
        wakers.parent = Some(Identity::of(parent));
        wakers
    }

    /// Remembers the waker of the gather's task, which the first branch wake after this wakes.
    /// Called as each poll of the gather starts, before it polls any branch.
    pub(crate) fn set_parent(&mut self, waker: &Waker) {
        let Shared {
            parent, notified, ..
        } = self.shared();
        // `SeqCst`, before the pass reads any flag: see `notify`.
        notified.store(false, Ordering::SeqCst);
        let identity = Identity::of(waker);
        if self.parent == Some(identity) {
            return;
        }
        *parent.lock().unwrap_or_else(PoisonError::into_inner) = Some(waker.clone());
        // After the store, and before the pass reads any flag: see `wake_parent`.
        self.shared().replaced.store(true, Ordering::SeqCst);
        self.parent = Some(identity);
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
        let word = unsafe { word_of(self.shared.as_ptr(), index) };
        // A plain load first: most words have no wake, and a read-modify-write costs much more.
        // `SeqCst`, after the pass cleared `notified`: see `notify`.
        if word.load(Ordering::SeqCst) & MASK == 0 {
            return 0;
        }
        // Every flag at once, those set since the load too: a wake that found a flag set
        // counts on the pass that takes it (see `notify`). The count stays.
        let old =
            match word.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |old| Some(old & !MASK)) {
                Ok(old) | Err(old) => old,
            };
        (old & MASK) as usize
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

    /// How many wakers of the branches of word `word` are alive, for the tests: the word's
    /// count, but the gather's.
    #[cfg(test)]
    fn alive(&self, word: usize) -> u64 {
        // SAFETY: the tests ask only for words of the allocation, which is live while this is
        // borrowed.
        (unsafe { word_of(self.shared.as_ptr(), word * FLAGS) }.load(Ordering::SeqCst) >> FLAGS) - 1
    }
}

impl Drop for Wakers {
    fn drop(&mut self) {
        let words = words(self.shared().len as usize);
        // SAFETY: word `word` of the live allocation, for each word it has.
        let word = |word: usize| unsafe { word_of(self.shared.as_ptr(), word * FLAGS) };
        // No word counts more than the gather's: no branch kept a waker, and none is in the
        // middle of a wake (a wake keeps its count while it reaches the header), so the
        // allocation may serve the thread's next gather, counts as they are. The loads
        // synchronize with the release of each count given back, so that the uses of every
        // waker happen before the reuse.
        if self.shared().len <= SPARE_MAX
            && (0..words).all(|w| word(w).load(Ordering::Acquire) >> FLAGS == 1)
        {
            Spare::keep(self.shared);
            return;
        }
        for w in 0..words {
            if word(w).fetch_sub(ONE, Ordering::Release) < 2 * ONE {
                // SAFETY: the gather's count was the word's last: its count of the header is
                // given back, once, here.
                unsafe { release_word(self.shared.as_ptr()) };
            }
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
    /// gather: no branch flagged, the gather's task not woken. Its counts are the caller's.
    fn take(len: u32) -> Option<NonNull<Shared>> {
        let shared = SPARE.try_with(|spare| spare.0.take()).ok().flatten()?;
        // SAFETY: a spare is live, and its counts are now the caller's: no one else reaches it
        // (a spare has no waker out, and no owner but the thread's `SPARE`).
        let header = unsafe { &*shared.as_ptr() };
        if header.len < len {
            // SAFETY: as above; freed once, here.
            unsafe { free(shared.as_ptr()) };
            return None;
        }
        header.notified.store(false, Ordering::Relaxed);
        header.replaced.store(false, Ordering::Relaxed);
        // Every word of the allocation, not only the first `len` branches': a branch past
        // them has no waker in this gather, but one may have been woken in an earlier one. Each
        // keeps the one count, the gather's, that it had when the allocation became the spare.
        for word in 0..words(header.len as usize) {
            // SAFETY: as above; word `word` is in the allocation, before the header.
            unsafe { word_of(shared.as_ptr(), word * FLAGS) }.store(ONE, Ordering::Relaxed);
        }
        Some(shared)
    }

    /// Keeps `shared`, whose only counts the caller gives up, as the thread's spare (the larger
    /// of it and the spare there was, the other freed), without the gather's waker, which it
    /// must not keep alive.
    fn keep(shared: NonNull<Shared>) {
        // SAFETY: the caller holds the only counts, so no one else reaches the allocation.
        let header = unsafe { &mut *shared.as_ptr() };
        let first = header.first.take();
        let parent = header
            .parent
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
        drop(first);
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
    fn wakers_made_with_the_gathers_waker_wake_it_without_the_lock() {
        let (count, waker) = parent();
        let mut wakers = Wakers::with_parent::<{ FLAGS + 2 }>(&waker);
        assert_eq!(Arc::strong_count(&count), 3, "the header holds one clone");
        wakers.set_parent(&waker.clone()); // the same waker: kept as it is
        assert!(!wakers.shared().replaced.load(Ordering::SeqCst));
        let kept = wakers.with_waker(FLAGS + 1, Waker::clone);
        kept.wake_by_ref();
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert_eq!(
            Arc::strong_count(&count),
            3,
            "woken by reference: no clone left over"
        );
        // The next poll of the gather, and its pass.
        wakers.set_parent(&waker);
        assert_eq!(wakers.woken(), [FLAGS + 1]);
        kept.wake(); // by value, the first of its word again
        assert_eq!(count.0.load(Ordering::SeqCst), 2);
        assert_eq!(wakers.woken(), [FLAGS + 1]);
        drop(wakers);
        assert_eq!(
            Arc::strong_count(&count),
            2,
            "the spare keeps no waker of the gather"
        );
        // A gather that takes the spare wakes its own task, without the lock.
        let (second, other) = parent();
        let again = Wakers::with_parent::<2>(&other);
        assert!(!again.shared().replaced.load(Ordering::SeqCst));
        again.with_waker(1, Waker::wake_by_ref);
        assert_eq!(second.0.load(Ordering::SeqCst), 1);
        assert_eq!(count.0.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_gathers_waker_that_changes_is_woken_from_under_the_lock() {
        let (first, waker) = parent();
        let mut wakers = Wakers::with_parent::<3>(&waker);
        let (second, other) = parent();
        wakers.set_parent(&other);
        assert!(wakers.shared().replaced.load(Ordering::SeqCst));
        let kept = wakers.with_waker(2, Waker::clone);
        kept.wake_by_ref();
        assert_eq!(
            first.0.load(Ordering::SeqCst),
            0,
            "the first waker is not woken"
        );
        assert_eq!(second.0.load(Ordering::SeqCst), 1);
        // Back to the first waker, in the next poll: still from under the lock.
        wakers.set_parent(&waker);
        assert_eq!(wakers.woken(), [2]);
        kept.wake();
        assert_eq!(first.0.load(Ordering::SeqCst), 1);
        assert_eq!(second.0.load(Ordering::SeqCst), 1);
        drop(wakers);
        assert_eq!(
            (Arc::strong_count(&first), Arc::strong_count(&second)),
            (2, 2),
            "the spare keeps neither waker"
        );
        // The spare serves the next gather with its waker given anew, as the first.
        let again = Wakers::with_parent::<3>(&other);
        assert!(!again.shared().replaced.load(Ordering::SeqCst));
        again.with_waker(0, Waker::wake_by_ref);
        assert_eq!(second.0.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn wakes_from_other_threads_wake_the_first_waker_once() {
        let (count, waker) = parent();
        let wakers = Wakers::with_parent::<{ 2 * FLAGS }>(&waker);
        let kept: Vec<Waker> = (0..2 * FLAGS)
            .step_by(7)
            .map(|i| wakers.with_waker(i, Waker::clone))
            .collect();
        drop(wakers);
        std::thread::scope(|s| {
            for waker in &kept {
                let waker = waker.clone();
                s.spawn(move || {
                    waker.wake_by_ref();
                    waker.wake();
                });
            }
        });
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        // The last waker frees the allocation and the first waker with it (valgrind checks
        // nothing leaks).
        drop(kept);
        assert_eq!(Arc::strong_count(&count), 2);
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
        assert_eq!(wakers.alive(0), 2, "each clone counts in its word");
        assert_eq!(wakers.refs(), 1, "the one word holds the allocation");
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
    fn the_words_hold_the_allocation_until_their_last_waker_is_gone() {
        let wakers = Wakers::new::<{ 2 * FLAGS }>();
        assert_eq!(wakers.refs(), 2, "each word holds the allocation");
        let first = wakers.with_waker(0, Waker::clone);
        let second = wakers.with_waker(1, Waker::clone);
        let far = wakers.with_waker(FLAGS + 3, Waker::clone);
        assert_eq!((wakers.alive(0), wakers.alive(1)), (2, 1));
        assert_eq!(
            wakers.refs(),
            2,
            "while the gather runs, clones touch only their word"
        );
        drop(far);
        assert_eq!(
            (wakers.alive(1), wakers.refs()),
            (0, 2),
            "the gather holds the word"
        );
        let shared = wakers.shared;
        // SAFETY: read only while a word holds the allocation.
        let refs = || unsafe { shared.as_ref() }.refs.load(Ordering::SeqCst);
        // Wakers are out: no spare. The gather's count was the far word's last, and the far
        // word gives back its count of the allocation; the near one keeps it.
        drop(wakers);
        assert_eq!(refs(), 1);
        drop(second);
        assert_eq!(refs(), 1);
        first.wake(); // the last count: frees the allocation (valgrind checks nothing leaks)
    }

    #[test]
    fn a_wake_by_value_of_a_flagged_branch_gives_back_only_its_count() {
        let mut wakers = Wakers::new::<3>();
        let (count, waker) = parent();
        wakers.set_parent(&waker);
        let kept = wakers.with_waker(2, Waker::clone);
        let kept_too = kept.clone();
        kept.wake_by_ref();
        kept.wake(); // already flagged: the flag stays, one count goes
        assert_eq!(wakers.alive(0), 1);
        assert_eq!(wakers.woken(), [2]);
        assert_eq!(
            count.0.load(Ordering::SeqCst),
            1,
            "one wake of the gather's task"
        );
        drop(wakers);
        kept_too.wake_by_ref(); // the first since the flags were taken
        // Flagged already, and the word's last count: gives back the word's count of the
        // allocation, which frees it (valgrind checks nothing leaks).
        kept_too.wake();
        assert_eq!(
            count.0.load(Ordering::SeqCst),
            1,
            "no poll of the gather came between the wakes"
        );
    }

    #[test]
    fn taking_the_flags_leaves_the_count_of_wakers() {
        let wakers = Wakers::new::<{ FLAGS }>();
        let kept: Vec<Waker> = [0, 5, FLAGS - 1]
            .into_iter()
            .map(|branch| wakers.with_waker(branch, Waker::clone))
            .collect();
        for waker in &kept {
            waker.wake_by_ref();
        }
        assert_eq!(wakers.woken(), [0, 5, FLAGS - 1]);
        assert_eq!(wakers.alive(0), 3);
        drop(kept);
        assert_eq!(wakers.alive(0), 0);
    }

    #[test]
    fn clones_wakes_and_drops_from_threads_keep_each_word_counted() {
        let mut wakers = Wakers::new::<{ 2 * FLAGS }>();
        let (_count, waker) = parent();
        wakers.set_parent(&waker);
        let mut seen = [false; 2 * FLAGS];
        std::thread::scope(|s| {
            for branch in [0, 1, 2, FLAGS - 1, FLAGS, 2 * FLAGS - 1] {
                let waker = wakers.with_waker(branch, Waker::clone);
                s.spawn(move || {
                    for round in 0..200 {
                        let copy = waker.clone();
                        match round % 3 {
                            0 => copy.wake(),
                            1 => {
                                copy.wake_by_ref();
                                drop(copy);
                            }
                            _ => drop(copy),
                        }
                    }
                    waker.wake();
                });
            }
            // The gather's passes take the flags while the wakes come.
            for _ in 0..200 {
                for branch in wakers.woken() {
                    seen[branch] = true;
                }
            }
        });
        for branch in wakers.woken() {
            seen[branch] = true;
        }
        let woken: Vec<usize> = (0..2 * FLAGS).filter(|&branch| seen[branch]).collect();
        assert_eq!(woken, [0, 1, 2, FLAGS - 1, FLAGS, 2 * FLAGS - 1]);
        assert_eq!(
            (wakers.alive(0), wakers.alive(1)),
            (0, 0),
            "every count was given back"
        );
        assert_eq!(wakers.refs(), 2);
    }

    #[test]
    #[should_panic(expected = "too many branches")]
    fn an_allocation_whose_size_is_past_a_u32_is_refused() {
        // A cell keeps its distance back to its word in a `u32`: refused before allocating.
        layout(1 << 30);
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
