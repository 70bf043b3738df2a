//! Places for the branches of the fixed form: a branch's future and what the gather keeps of
//! it, side by side in one place, pinned with the other branches of its tuple in the caller's
//! frame.
//!
//! A branch future must stay where it was first polled, and `core::pin::pin!` pins a whole
//! value: pinning each future on its own gives the gather one more pointer per branch, to set
//! up, to keep, and to follow on every poll, and keeps the output apart from the future. Here
//! the gather pins each tuple of places once, and reaches a place's future through two
//! projections that keep it pinned: [`Fields::fields`] from the tuple to its places, and
//! [`Place::project`] from a place to its future (pinned) and the rest (not pinned).
//!
//! Both projections are structural pinning of a field, as `pin-project` would write them.
//! They are sound because nothing moves a pinned field out: a [`Place`] has no `Drop` of its
//! own and no method that moves its future (`Pin::set` drops it in place), a tuple has none
//! either, and both are `Unpin` only when all their fields are.

use core::pin::Pin;

/// A branch's future while it runs (`None` once it has ended), pinned, beside `S`, the rest
/// of the branch's slot, which is not pinned.
pub struct Place<F, S> {
    fut: Option<F>,
    rest: S,
}

impl<F, S> Place<F, S> {
    /// A place for `fut`, not yet pinned, with the rest of its slot.
    #[inline(always)]
    pub(crate) const fn with(fut: F, rest: S) -> Self {
        Place {
            fut: Some(fut),
            rest,
        }
    }

    /// Whether the future is still there: the branch runs, or waits for its turn.
    #[inline(always)]
    pub(crate) fn is_running(&self) -> bool {
        self.fut.is_some()
    }

    /// The rest of the slot, to read.
    #[inline(always)]
    pub(crate) fn rest(&self) -> &S {
        &self.rest
    }

    /// The future, still pinned, and the rest of the slot, not pinned.
    #[inline(always)]
    pub(crate) fn project(self: Pin<&mut Self>) -> (Pin<&mut Option<F>>, &mut S) {
        // SAFETY: the reference is used only to reach the two fields below, and nothing is
        // moved out of it.
        let this = unsafe { self.get_unchecked_mut() };
        // SAFETY: `fut` is pinned structurally: it is reached only through this `Pin`, a
        // `Place` has no `Drop` that could move it and no method that moves it out (setting
        // it goes through `Pin::set`, which drops it in place), and `Place` is `Unpin` only
        // when `F` is. `rest` is never treated as pinned, so a plain reference to it is fine.
        let fut = unsafe { Pin::new_unchecked(&mut this.fut) };
        (fut, &mut this.rest)
    }
}

/// The places of one tuple of the fixed form, each still pinned, from the tuple pinned.
pub trait Fields {
    /// One pinned reference per place, in a tuple of the same length.
    type Pinned<'a>
    where
        Self: 'a;

    /// Every place of the tuple, pinned.
    fn fields(self: Pin<&mut Self>) -> Self::Pinned<'_>;
}

/// `Fields` for tuples of places of one length: the type parameters of each place, then the
/// field index.
macro_rules! fields {
    ($($f:ident $s:ident $i:tt),+) => {
        impl<$($f, $s),+> Fields for ($(Place<$f, $s>,)+) {
            type Pinned<'a> = ($(Pin<&'a mut Place<$f, $s>>,)+) where Self: 'a;

            #[inline(always)]
            fn fields(self: Pin<&mut Self>) -> Self::Pinned<'_> {
                // SAFETY: the reference is used only to reach the fields below, and nothing
                // is moved out of it.
                let this = unsafe { self.get_unchecked_mut() };
                // SAFETY: each place is pinned structurally: a tuple has no `Drop` and no
                // method that moves a field out of a pinned tuple, and it is `Unpin` only when
                // every place is; each field is reached once, so the references are disjoint.
                unsafe { ($(Pin::new_unchecked(&mut this.$i),)+) }
            }
        }
    };
}

fields!(F0 S0 0);
fields!(F0 S0 0, F1 S1 1);
fields!(F0 S0 0, F1 S1 1, F2 S2 2);
fields!(F0 S0 0, F1 S1 1, F2 S2 2, F3 S3 3);
fields!(F0 S0 0, F1 S1 1, F2 S2 2, F3 S3 3, F4 S4 4);
fields!(F0 S0 0, F1 S1 1, F2 S2 2, F3 S3 3, F4 S4 4, F5 S5 5);
fields!(F0 S0 0, F1 S1 1, F2 S2 2, F3 S3 3, F4 S4 4, F5 S5 5, F6 S6 6);
fields!(F0 S0 0, F1 S1 1, F2 S2 2, F3 S3 3, F4 S4 4, F5 S5 5, F6 S6 6, F7 S7 7);
fields!(F0 S0 0, F1 S1 1, F2 S2 2, F3 S3 3, F4 S4 4, F5 S5 5, F6 S6 6, F7 S7 7, F8 S8 8);
fields!(
    F0 S0 0, F1 S1 1, F2 S2 2, F3 S3 3, F4 S4 4, F5 S5 5, F6 S6 6, F7 S7 7, F8 S8 8, F9 S9 9
);
fields!(
    F0 S0 0, F1 S1 1, F2 S2 2, F3 S3 3, F4 S4 4, F5 S5 5, F6 S6 6, F7 S7 7, F8 S8 8, F9 S9 9,
    F10 S10 10
);
fields!(
    F0 S0 0, F1 S1 1, F2 S2 2, F3 S3 3, F4 S4 4, F5 S5 5, F6 S6 6, F7 S7 7, F8 S8 8, F9 S9 9,
    F10 S10 10, F11 S11 11
);
fields!(
    F0 S0 0, F1 S1 1, F2 S2 2, F3 S3 3, F4 S4 4, F5 S5 5, F6 S6 6, F7 S7 7, F8 S8 8, F9 S9 9,
    F10 S10 10, F11 S11 11, F12 S12 12
);
fields!(
    F0 S0 0, F1 S1 1, F2 S2 2, F3 S3 3, F4 S4 4, F5 S5 5, F6 S6 6, F7 S7 7, F8 S8 8, F9 S9 9,
    F10 S10 10, F11 S11 11, F12 S12 12, F13 S13 13
);
fields!(
    F0 S0 0, F1 S1 1, F2 S2 2, F3 S3 3, F4 S4 4, F5 S5 5, F6 S6 6, F7 S7 7, F8 S8 8, F9 S9 9,
    F10 S10 10, F11 S11 11, F12 S12 12, F13 S13 13, F14 S14 14
);
fields!(
    F0 S0 0, F1 S1 1, F2 S2 2, F3 S3 3, F4 S4 4, F5 S5 5, F6 S6 6, F7 S7 7, F8 S8 8, F9 S9 9,
    F10 S10 10, F11 S11 11, F12 S12 12, F13 S13 13, F14 S14 14, F15 S15 15
);

#[cfg(test)]
mod tests {
    use super::*;
    use core::future::Future;
    use core::marker::PhantomPinned;
    use core::pin::pin;
    use core::task::{Context, Poll, Waker};
    use std::rc::Rc;

    /// A future that is `!Unpin`, checks that it was not moved between polls, owns a heap
    /// value (so that a leak or a double drop shows under valgrind), and counts its drops.
    struct Fixed {
        at: Option<usize>,
        polls: usize,
        /// Held only to be counted: the strong count tells whether the future was dropped.
        _held: Rc<()>,
        _pin: PhantomPinned,
    }

    impl Fixed {
        fn new(drops: &Rc<()>) -> Self {
            Fixed {
                at: None,
                polls: 0,
                _held: Rc::clone(drops),
                _pin: PhantomPinned,
            }
        }
    }

    impl Future for Fixed {
        type Output = usize;

        fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<usize> {
            let addr = core::ptr::from_ref(&*self).addr();
            // SAFETY: test code: only plain fields are written, nothing is moved.
            let this = unsafe { self.get_unchecked_mut() };
            assert_eq!(*this.at.get_or_insert(addr), addr, "moved while pinned");
            this.polls += 1;
            if this.polls < 2 {
                Poll::Pending
            } else {
                Poll::Ready(this.polls)
            }
        }
    }

    fn poll<F: Future>(fut: Pin<&mut F>) -> Poll<F::Output> {
        fut.poll(&mut Context::from_waker(Waker::noop()))
    }

    #[test]
    fn place_projects_to_its_future_pinned_and_its_rest() {
        let drops = Rc::new(());
        let mut place = pin!(Place::with(Fixed::new(&drops), vec![1u8]));
        assert!(place.is_running());
        assert_eq!(place.rest(), &[1]);
        let (fut, rest) = place.as_mut().project();
        assert!(poll(fut.as_pin_mut().expect("running")).is_pending());
        rest.push(2);
        let (mut fut, _) = place.as_mut().project();
        let Poll::Ready(polls) = poll(fut.as_mut().as_pin_mut().expect("running")) else {
            panic!("a second poll is ready");
        };
        assert_eq!(polls, 2);
        assert_eq!(Rc::strong_count(&drops), 2);
        fut.set(None);
        assert_eq!(Rc::strong_count(&drops), 1, "dropped in place");
        assert!(!place.is_running());
        assert_eq!(place.rest(), &[1, 2]);
    }

    #[test]
    fn a_running_place_drops_its_future_with_it() {
        let drops = Rc::new(());
        {
            let mut place = pin!(Place::with(Fixed::new(&drops), String::from("rest")));
            let (fut, _) = place.as_mut().project();
            assert!(poll(fut.as_pin_mut().expect("running")).is_pending());
            assert_eq!(Rc::strong_count(&drops), 2);
        }
        assert_eq!(Rc::strong_count(&drops), 1);
    }

    #[test]
    fn a_tuple_projects_to_each_of_its_places() {
        let drops = Rc::new(());
        let mut one = pin!((Place::with(Fixed::new(&drops), 0usize),));
        let (a,) = one.as_mut().fields();
        assert!(poll(a.project().0.as_pin_mut().expect("running")).is_pending());

        let place = |n| Place::with(Fixed::new(&drops), vec![n]);
        let mut many = pin!((
            place(0),
            place(1),
            place(2),
            place(3),
            place(4),
            place(5),
            place(6),
            place(7),
            place(8),
            place(9),
            place(10),
            place(11),
            place(12),
            place(13),
            place(14),
            place(15),
        ));
        assert_eq!(Rc::strong_count(&drops), 18);
        // Each field is its own place: polled twice in place, then ended in place.
        for _ in 0..2 {
            let places = many.as_mut().fields();
            let all: [Pin<&mut Place<Fixed, Vec<i32>>>; 16] = [
                places.0, places.1, places.2, places.3, places.4, places.5, places.6, places.7,
                places.8, places.9, places.10, places.11, places.12, places.13, places.14,
                places.15,
            ];
            for (index, place) in all.into_iter().enumerate() {
                let (mut fut, rest) = place.project();
                assert_eq!(rest, &[i32::try_from(index).expect("small")]);
                if poll(fut.as_mut().as_pin_mut().expect("running")).is_ready() {
                    fut.set(None);
                }
            }
        }
        assert_eq!(
            Rc::strong_count(&drops),
            2,
            "the sixteen futures dropped in place"
        );
        assert!(!many.15.is_running());
        let (b,) = one.as_mut().fields();
        assert!(b.is_running());
        assert_eq!(b.rest(), &0);
    }

    /// Every arity of `Fields`, each with places of two types.
    #[test]
    fn every_arity_projects() {
        macro_rules! arity {
            ($($i:tt)+) => {{
                let mut tuple = pin!(($(Place::with(core::future::ready($i), [$i; 2]),)+));
                let places = tuple.as_mut().fields();
                $(
                    let (fut, rest) = places.$i.project();
                    assert_eq!(poll(fut.as_pin_mut().expect("running")), Poll::Ready($i));
                    assert_eq!(rest, &[$i; 2]);
                )+
            }};
        }
        arity!(0);
        arity!(0 1);
        arity!(0 1 2);
        arity!(0 1 2 3);
        arity!(0 1 2 3 4);
        arity!(0 1 2 3 4 5);
        arity!(0 1 2 3 4 5 6);
        arity!(0 1 2 3 4 5 6 7);
        arity!(0 1 2 3 4 5 6 7 8);
        arity!(0 1 2 3 4 5 6 7 8 9);
        arity!(0 1 2 3 4 5 6 7 8 9 10);
        arity!(0 1 2 3 4 5 6 7 8 9 10 11);
        arity!(0 1 2 3 4 5 6 7 8 9 10 11 12);
        arity!(0 1 2 3 4 5 6 7 8 9 10 11 12 13);
        arity!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14);
        arity!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15);
    }
}
