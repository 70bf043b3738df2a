//! What every benchmark shares: gates the benchmark opens by hand, the workloads as scripts of
//! gate openings, a fixed-seed shuffle, and the criterion settings that keep the suite short.
//!
//! A leaf future is a gate: pending until the benchmark opens it with `Ok(index)` or
//! `Err(index)`, then ready. No timers and no I/O, so every contender does exactly the same
//! leaf work and the times differ only by what the combinator itself costs.

// Each benchmark binary uses a part of this module.
#![allow(dead_code)]

use std::time::Duration;

use criterion::Criterion;

/// A gate not yet opened.
pub(crate) const PENDING: u8 = 0;
/// A gate that gives `Ok(index)`.
pub(crate) const OK: u8 = 1;
/// A gate that gives `Err(index)`.
pub(crate) const ERR: u8 = 2;

/// The digest of a run that ended with every branch's success; a failure or a race winner
/// digests to its branch index.
pub(crate) const ALL_OK: u64 = 1 << 40;

/// Short measurements: the suite runs in about ten minutes on two cores. Every benchmark is
/// one group per workload and contender count, so the settings apply to all of them.
pub(crate) fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(200))
        .measurement_time(Duration::from_millis(800))
        .sample_size(20)
}

/// A tiny fixed-seed generator (PCG's LCG step), so that a shuffle and a race's winner are
/// the same in every run and for every contender.
pub(crate) struct Lcg(u64);

impl Lcg {
    pub(crate) fn new(seed: u64) -> Self {
        Lcg(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub(crate) fn below(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        // n is far below 2^31: the modulo bias is irrelevant to a benchmark.
        usize::try_from(self.0 >> 33).expect("31 bits fit a usize") % n
    }
}

/// How the gates of one run open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Workload {
    /// Every gate is open before the first poll.
    Ready,
    /// Every branch pending at the first poll, then every gate opened, then one poll.
    AllWoken,
    /// Gates opened one at a time, last index first, with a poll after each.
    Reverse,
    /// Gates opened one at a time in a fixed-seed shuffled order, with a poll after each.
    Shuffled,
    /// Everything pending; then the gate at this index opens with `Err`, and one poll.
    Fail(usize),
    /// Everything pending; then the gate at a fixed-seed random index opens with `Ok`.
    Race,
}

impl Workload {
    /// The workloads that end with every branch's success.
    pub(crate) const SUCCESS: [Workload; 4] = [
        Workload::Ready,
        Workload::AllWoken,
        Workload::Reverse,
        Workload::Shuffled,
    ];

    /// A failure at 0, n/2 and n - 1 (at two branches, n/2 is n - 1).
    pub(crate) fn failures(n: usize) -> Vec<Workload> {
        let mut at = vec![0, n / 2, n - 1];
        at.dedup();
        at.into_iter().map(Workload::Fail).collect()
    }

    /// The group name: the workload, with a failure's position as first, middle or last.
    pub(crate) fn name(self, n: usize) -> String {
        match self {
            Workload::Ready => "ready".into(),
            Workload::AllWoken => "all-woken".into(),
            Workload::Reverse => "reverse".into(),
            Workload::Shuffled => "shuffled".into(),
            Workload::Fail(0) => "fail-first".into(),
            Workload::Fail(k) if k == n - 1 => "fail-last".into(),
            Workload::Fail(_) => "fail-middle".into(),
            Workload::Race => "race".into(),
        }
    }
}

/// One gate opening, and whether the driver polls after it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Step {
    pub(crate) index: usize,
    pub(crate) state: u8,
    pub(crate) poll: bool,
}

/// A workload at one branch count, as the gates' state before the first poll and the
/// openings after it. Built before the measurement, so that no contender pays for it.
#[derive(Clone, Debug)]
pub(crate) struct Plan {
    pub(crate) preset: u8,
    pub(crate) steps: Vec<Step>,
    /// The digest every contender's run must give.
    pub(crate) expected: u64,
}

impl Plan {
    pub(crate) fn new(workload: Workload, n: usize) -> Plan {
        let one = |index: usize, state: u8| Step {
            index,
            state,
            poll: true,
        };
        let (preset, steps, expected) = match workload {
            Workload::Ready => (OK, Vec::new(), ALL_OK),
            Workload::AllWoken => {
                let steps = (0..n)
                    .map(|index| Step {
                        index,
                        state: OK,
                        poll: index == n - 1,
                    })
                    .collect();
                (PENDING, steps, ALL_OK)
            }
            Workload::Reverse => (PENDING, (0..n).rev().map(|i| one(i, OK)).collect(), ALL_OK),
            Workload::Shuffled => {
                let mut order: Vec<usize> = (0..n).collect();
                let mut lcg = Lcg::new(0x5EED ^ n as u64);
                for i in (1..n).rev() {
                    order.swap(i, lcg.below(i + 1));
                }
                (
                    PENDING,
                    order.into_iter().map(|i| one(i, OK)).collect(),
                    ALL_OK,
                )
            }
            Workload::Fail(k) => (PENDING, vec![one(k, ERR)], k as u64),
            Workload::Race => {
                let winner = Plan::race_winner(n);
                (PENDING, vec![one(winner, OK)], winner as u64)
            }
        };
        Plan {
            preset,
            steps,
            expected,
        }
    }

    /// The branch that wins the race at `n` branches.
    pub(crate) fn race_winner(n: usize) -> usize {
        Lcg::new(0xACE ^ n as u64).below(n)
    }
}

/// The digest of a run's result: `ALL_OK` for a success (whose value is only black-boxed),
/// the failing branch's index for a failure.
pub(crate) fn digest<T, E: Into<u64>>(result: Result<T, E>) -> u64 {
    match result {
        Ok(value) => {
            std::hint::black_box(value);
            ALL_OK
        }
        Err(index) => index.into(),
    }
}

/// The digest of a race's result: the winner's index, from `Ok(index)`.
pub(crate) fn winner<E>(result: Result<u32, E>) -> u64 {
    match result {
        Ok(index) => u64::from(index),
        Err(_) => u64::MAX,
    }
}

/// The failing branch's index, from a `gather!` error.
pub(crate) fn into_index(error: gather::Error<u32>) -> u32 {
    error.into_error().unwrap_or(u32::MAX)
}

/// Rounds of paired runs at one row.
const ROUNDS: usize = 40;

/// One row measured in paired rounds, beside criterion, for rows whose criterion medians swing
/// between runs of the same code (rows of a few tens of nanoseconds, and rows on two workers)
/// and rows close to their targets: `gather!` and the reference take turns, `runs` runs each
/// per round, and the median of the rounds' ratios is printed, with the 10th and 90th
/// percentiles, and written to `target/criterion/paired/GROUP-WORKLOAD-OURS-N.json` for
/// `benches/ratios.py`, which judges the
/// row's target by it. `group` and `workload` name the row as criterion's group does
/// (`dynamic/ready`), and `ours` names `gather!`'s contender as criterion does (`gather`,
/// `gather-settle`); each run returns its digest, which must be `expected`.
pub(crate) struct Paired<'a> {
    pub(crate) group: &'a str,
    pub(crate) workload: &'a str,
    pub(crate) ours: &'a str,
    pub(crate) n: usize,
    pub(crate) runs: usize,
    pub(crate) expected: u64,
}

impl Paired<'_> {
    pub(crate) fn run(&self, gather: &dyn Fn() -> u64, reference: (&str, &dyn Fn() -> u64)) {
        let (name, reference) = reference;
        let time = |run: &dyn Fn() -> u64| {
            let start = std::time::Instant::now();
            for _ in 0..self.runs {
                assert_eq!(run(), self.expected, "{} {}", self.group, self.workload);
            }
            start.elapsed().as_secs_f64()
        };
        // One round of each first, unmeasured, to warm both.
        time(gather);
        time(reference);
        let mut times: Vec<(f64, f64)> = (0..ROUNDS)
            .map(|_| (time(gather), time(reference)))
            .collect();
        let mut ratios: Vec<f64> = times.iter().map(|(ours, other)| ours / other).collect();
        ratios.sort_by(f64::total_cmp);
        // The median time of a run of each, in nanoseconds, for the record.
        let per_run = |pick: fn(&(f64, f64)) -> f64, times: &mut Vec<(f64, f64)>| {
            times.sort_by(|a, b| pick(a).total_cmp(&pick(b)));
            pick(&times[ROUNDS / 2]) * 1e9 / self.runs as f64
        };
        let ours_ns = per_run(|t| t.0, &mut times);
        let other_ns = per_run(|t| t.1, &mut times);
        let (median, low, high) = (
            ratios[ROUNDS / 2],
            ratios[ROUNDS / 10],
            ratios[ROUNDS * 9 / 10],
        );
        let Paired {
            group,
            workload,
            ours,
            n,
            runs,
            ..
        } = self;
        println!(
            "paired {group}/{workload} at {n}: {ours} / {name} median {median:.2} (10th {low:.2}, 90th {high:.2}); a run {ours_ns:.0} ns against {other_ns:.0} ns"
        );
        let dir = std::env::var_os("CARGO_TARGET_DIR")
            .map_or_else(|| "target".into(), std::path::PathBuf::from)
            .join("criterion/paired");
        std::fs::create_dir_all(&dir).expect("the directory of paired results");
        let json = format!(
            "{{\"group\": \"{group}\", \"workload\": \"{workload}\", \"ours\": \"{ours}\", \"n\": {n}, \"reference\": \"{name}\", \"median\": {median}, \"gather_ns\": {ours_ns}, \"reference_ns\": {other_ns}, \"p10\": {low}, \"p90\": {high}, \"rounds\": {ROUNDS}, \"runs\": {runs}}}\n"
        );
        let file = dir.join(format!("{group}-{workload}-{ours}-{n}.json"));
        std::fs::write(file, json).expect("a paired result written");
    }
}
