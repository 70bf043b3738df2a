//! The fixed form, `gather!(a, b, c)`, against `tokio::join!` / `try_join!`, `futures::join!` /
//! `try_join!` and futures-concurrency's tuple `join` / `try_join` / `race` / `race_ok` (an
//! array past the twelve branches its tuples stop at), at 2, 3, 10, 12 and 100 branches. The
//! rows at 100 branches closest to their targets are also measured in paired rounds against
//! their reference (see `paired_100` below).
//!
//! `cargo bench --bench fixed`; `benches/RESULTS.md` has the ratios.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use futures_concurrency::prelude::*;
use gather::gather;

mod common;
#[path = "common/inplace.rs"]
mod inplace;

use common::{ALL_OK, Plan, Workload, digest, into_index, winner};
use inplace::{Board, drive, run};

/// futures-concurrency's contender over the branches: a tuple up to twelve, else an array.
macro_rules! fc_list {
    (tuple, $b:ident, $($i:literal)*) => { ( $( $b.leaf($i), )* ) };
    (array, $b:ident, $($i:literal)*) => { [ $( $b.leaf($i) ),* ] };
}

/// Every workload at one branch count; the branches are written out, as a user would.
macro_rules! fixed {
    ($c:expr, $fc:ident, [$($i:literal)*]) => {{
        let n: usize = [$($i),*].len();
        let board = Board::new(n);
        let b = &board;
        let fc = |op: &str| format!("fc-{}-{op}", stringify!($fc));
        for workload in Workload::SUCCESS {
            let plan = Plan::new(workload, n);
            let mut group = $c.benchmark_group(format!("fixed/{}", workload.name(n)));
            run(&mut group, "gather", n, b, &plan, || async move {
                digest(gather!($( b.leaf($i) ),*).map_err(into_index))
            });
            run(&mut group, "gather-settle", n, b, &plan, || async move {
                let _ = black_box(gather!(policy = settle; $( b.leaf($i) ),*));
                ALL_OK
            });
            run(&mut group, "tokio::try_join!", n, b, &plan, || async move {
                digest(tokio::try_join!($( b.leaf($i) ),*))
            });
            run(&mut group, "tokio::join!", n, b, &plan, || async move {
                let _ = black_box(tokio::join!($( b.leaf($i) ),*));
                ALL_OK
            });
            run(&mut group, "futures::join!", n, b, &plan, || async move {
                let _ = black_box(futures::join!($( b.leaf($i) ),*));
                ALL_OK
            });
            run(&mut group, &fc("try_join"), n, b, &plan, || async move {
                digest(fc_list!($fc, b, $($i)*).try_join().await)
            });
            run(&mut group, &fc("join"), n, b, &plan, || async move {
                let _ = black_box(fc_list!($fc, b, $($i)*).join().await);
                ALL_OK
            });
            group.finish();
        }
        for workload in Workload::failures(n) {
            let plan = Plan::new(workload, n);
            let mut group = $c.benchmark_group(format!("fixed/{}", workload.name(n)));
            run(&mut group, "gather", n, b, &plan, || async move {
                digest(gather!($( b.leaf($i) ),*).map_err(into_index))
            });
            run(&mut group, "tokio::try_join!", n, b, &plan, || async move {
                digest(tokio::try_join!($( b.leaf($i) ),*))
            });
            run(&mut group, "futures::try_join!", n, b, &plan, || async move {
                digest(futures::try_join!($( b.leaf($i) ),*))
            });
            run(&mut group, &fc("try_join"), n, b, &plan, || async move {
                digest(fc_list!($fc, b, $($i)*).try_join().await)
            });
            group.finish();
        }
        let plan = Plan::new(Workload::Race, n);
        let mut group = $c.benchmark_group("fixed/race");
        run(&mut group, "gather-race", n, b, &plan, || async move {
            winner(gather!(policy = race; $( b.leaf($i) ),*))
        });
        run(&mut group, "gather-race_ok", n, b, &plan, || async move {
            winner(gather!(policy = race_ok; $( b.leaf($i) ),*))
        });
        run(&mut group, &fc("race"), n, b, &plan, || async move {
            winner(fc_list!($fc, b, $($i)*).race().await)
        });
        run(&mut group, &fc("race_ok"), n, b, &plan, || async move {
            winner(fc_list!($fc, b, $($i)*).race_ok().await)
        });
        // The reference has no race: the same branch ends it by failing instead.
        let fails = Plan::new(Workload::Fail(Plan::race_winner(n)), n);
        run(&mut group, "tokio::try_join!(err-wins)", n, b, &fails, || async move {
            digest(tokio::try_join!($( b.leaf($i) ),*))
        });
        group.finish();
    }};
}

/// The rows at 100 branches closest to their targets, also in paired rounds against their
/// reference (see [`common::Paired`]).
macro_rules! paired {
    ([$($i:literal)*]) => {{
        let n: usize = [$($i),*].len();
        let board = Board::new(n);
        let b = &board;
        let gather = |plan: &Plan| {
            drive(b, plan, || async move { digest(gather!($( b.leaf($i) ),*).map_err(into_index)) })
        };
        let settle = |plan: &Plan| {
            drive(b, plan, || async move {
                let _ = black_box(gather!(policy = settle; $( b.leaf($i) ),*));
                ALL_OK
            })
        };
        let race = |plan: &Plan| {
            drive(b, plan, || async move { winner(gather!(policy = race; $( b.leaf($i) ),*)) })
        };
        let try_join = |plan: &Plan| {
            drive(b, plan, || async move { digest(tokio::try_join!($( b.leaf($i) ),*)) })
        };
        let join = |plan: &Plan| {
            drive(b, plan, || async move {
                let _ = black_box(tokio::join!($( b.leaf($i) ),*));
                ALL_OK
            })
        };
        let row = |workload: Workload, ours: &str, run: &dyn Fn(&Plan) -> u64, reference: (&str, &dyn Fn(&Plan) -> u64)| {
            let plan = Plan::new(workload, n);
            // A race's reference is the same branch failing instead.
            let other = match workload {
                Workload::Race => Plan::new(Workload::Fail(Plan::race_winner(n)), n),
                _ => plan.clone(),
            };
            assert_eq!(plan.expected, other.expected);
            common::Paired {
                group: "fixed",
                workload: &workload.name(n),
                ours,
                n,
                runs: 2000,
                expected: plan.expected,
            }
            .run(&|| run(&plan), (reference.0, &|| (reference.1)(&other)));
        };
        row(Workload::AllWoken, "gather", &gather, ("tokio::try_join!", &try_join));
        row(Workload::Fail(n / 2), "gather", &gather, ("tokio::try_join!", &try_join));
        row(Workload::Fail(n - 1), "gather", &gather, ("tokio::try_join!", &try_join));
        row(Workload::Race, "gather-race", &race, ("tokio::try_join!(err-wins)", &try_join));
        row(Workload::Ready, "gather-settle", &settle, ("tokio::join!", &join));
        row(Workload::AllWoken, "gather-settle", &settle, ("tokio::join!", &join));
    }};
}

fn paired_100(_: &mut Criterion) {
    paired!([
        0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31 32
        33 34 35 36 37 38 39 40 41 42 43 44 45 46 47 48 49 50 51 52 53 54 55 56 57 58 59 60 61 62
        63 64 65 66 67 68 69 70 71 72 73 74 75 76 77 78 79 80 81 82 83 84 85 86 87 88 89 90 91 92
        93 94 95 96 97 98 99
    ]);
}

fn fixed_2(c: &mut Criterion) {
    fixed!(c, tuple, [0 1]);
}

fn fixed_3(c: &mut Criterion) {
    fixed!(c, tuple, [0 1 2]);
}

fn fixed_10(c: &mut Criterion) {
    fixed!(c, tuple, [0 1 2 3 4 5 6 7 8 9]);
}

fn fixed_12(c: &mut Criterion) {
    fixed!(c, tuple, [0 1 2 3 4 5 6 7 8 9 10 11]);
}

fn fixed_100(c: &mut Criterion) {
    fixed!(c, array, [
        0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31 32
        33 34 35 36 37 38 39 40 41 42 43 44 45 46 47 48 49 50 51 52 53 54 55 56 57 58 59 60 61 62
        63 64 65 66 67 68 69 70 71 72 73 74 75 76 77 78 79 80 81 82 83 84 85 86 87 88 89 90 91 92
        93 94 95 96 97 98 99
    ]);
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = fixed_2, fixed_3, fixed_10, fixed_12, fixed_100, paired_100
}
criterion_main!(benches);
