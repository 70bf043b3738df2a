//! The dynamic form, `gather!(for i in 0..n => leaf(i))`, against `join_all` / `try_join_all`,
//! `FuturesUnordered`, futures-concurrency's `Vec` `join` / `try_join` / `race` / `race_ok`, and
//! a plain loop of `.await`s when every branch is ready, at 10, 31, 100, 1000 and 10000
//! branches. The rows of every branch ready at 10 to 1000 are also measured in paired rounds
//! against the loop (see `paired` below).
//!
//! `cargo bench --bench dynamic`; `benches/RESULTS.md` has the ratios.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use futures::StreamExt;
use futures::future::{join_all, try_join_all};
use futures::stream::FuturesUnordered;
use futures_concurrency::prelude::*;
use gather::gather;

mod common;
#[path = "common/inplace.rs"]
mod inplace;

use common::{ALL_OK, Plan, Workload, digest, into_index, winner};
use inplace::{Board, Leaf, drive, run};

const COUNTS: [usize; 5] = [10, 31, 100, 1000, 10000];

fn leaves(b: &Board, n: usize) -> Vec<Leaf<'_>> {
    (0..n).map(|i| b.leaf(i)).collect()
}

/// `FuturesUnordered`, with the outputs put back in input order as `gather!` gives them, and
/// the others dropped at the first error.
async fn unordered(b: &Board, n: usize) -> u64 {
    let mut set: FuturesUnordered<_> = (0..n).map(|i| b.leaf(i)).collect();
    let mut out = vec![0; n];
    while let Some(result) = set.next().await {
        match result {
            Ok(value) => out[value as usize] = value,
            Err(index) => return index.into(),
        }
    }
    digest(Ok::<_, u32>(out))
}

/// The reference when every branch is ready: a loop of `.await`s, one after the other.
async fn plain_loop(b: &Board, n: usize) -> u64 {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        match b.leaf(i).await {
            Ok(value) => out.push(value),
            Err(index) => return index.into(),
        }
    }
    digest(Ok::<_, u32>(out))
}

fn dynamic(c: &mut Criterion) {
    for n in COUNTS {
        let board = Board::new(n);
        let b = &board;
        for workload in Workload::SUCCESS {
            let plan = Plan::new(workload, n);
            let mut group = c.benchmark_group(format!("dynamic/{}", workload.name(n)));
            run(&mut group, "gather", n, b, &plan, || async move {
                digest(gather!(for i in 0..n => b.leaf(i)).map_err(into_index))
            });
            run(&mut group, "gather-settle", n, b, &plan, || async move {
                let _ = black_box(gather!(policy = settle; for i in 0..n => b.leaf(i)));
                ALL_OK
            });
            run(&mut group, "join_all", n, b, &plan, || async move {
                let _ = black_box(join_all((0..n).map(|i| b.leaf(i))).await);
                ALL_OK
            });
            run(&mut group, "try_join_all", n, b, &plan, || async move {
                digest(try_join_all((0..n).map(|i| b.leaf(i))).await)
            });
            run(&mut group, "FuturesUnordered", n, b, &plan, || {
                unordered(b, n)
            });
            run(&mut group, "fc-vec-try_join", n, b, &plan, || async move {
                digest(leaves(b, n).try_join().await)
            });
            run(&mut group, "fc-vec-join", n, b, &plan, || async move {
                let _ = black_box(leaves(b, n).join().await);
                ALL_OK
            });
            if workload == Workload::Ready {
                run(&mut group, "loop", n, b, &plan, || plain_loop(b, n));
            }
            group.finish();
        }
        for workload in Workload::failures(n) {
            let plan = Plan::new(workload, n);
            let mut group = c.benchmark_group(format!("dynamic/{}", workload.name(n)));
            run(&mut group, "gather", n, b, &plan, || async move {
                digest(gather!(for i in 0..n => b.leaf(i)).map_err(into_index))
            });
            run(&mut group, "try_join_all", n, b, &plan, || async move {
                digest(try_join_all((0..n).map(|i| b.leaf(i))).await)
            });
            run(&mut group, "FuturesUnordered", n, b, &plan, || {
                unordered(b, n)
            });
            run(&mut group, "fc-vec-try_join", n, b, &plan, || async move {
                digest(leaves(b, n).try_join().await)
            });
            group.finish();
        }
        let plan = Plan::new(Workload::Race, n);
        let mut group = c.benchmark_group("dynamic/race");
        run(&mut group, "gather-race", n, b, &plan, || async move {
            winner(gather!(policy = race; for i in 0..n => b.leaf(i)))
        });
        run(&mut group, "gather-race_ok", n, b, &plan, || async move {
            winner(gather!(policy = race_ok; for i in 0..n => b.leaf(i)))
        });
        run(&mut group, "fc-vec-race", n, b, &plan, || async move {
            winner(leaves(b, n).race().await)
        });
        run(&mut group, "fc-vec-race_ok", n, b, &plan, || async move {
            winner(leaves(b, n).race_ok().await)
        });
        run(&mut group, "FuturesUnordered", n, b, &plan, || async move {
            let mut set: FuturesUnordered<_> = (0..n).map(|i| b.leaf(i)).collect();
            match set.next().await {
                Some(result) => winner(result),
                None => u64::MAX,
            }
        });
        group.finish();
    }
}

/// The rows of every branch ready at 10 to 1000 branches, also in paired rounds against the
/// loop (see [`common::Paired`]): a run takes tens to hundreds of nanoseconds, and criterion's
/// medians of these rows swung from 0.94 to 1.41 of the loop between runs of the same code.
fn paired(_: &mut Criterion) {
    for n in [10, 31, 100, 1000] {
        let board = Board::new(n);
        let b = &board;
        let plan = Plan::new(Workload::Ready, n);
        let gather = || {
            drive(b, &plan, || async move {
                digest(gather!(for i in 0..n => b.leaf(i)).map_err(into_index))
            })
        };
        let plain = || drive(b, &plan, || plain_loop(b, n));
        common::Paired {
            group: "dynamic",
            workload: "ready",
            ours: "gather",
            n,
            runs: 200_000 / n,
            expected: plan.expected,
        }
        .run(&gather, ("loop", &plain));
    }
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = dynamic, paired
}
criterion_main!(benches);
