#!/usr/bin/env python3
"""Reads criterion's estimates (target/criterion) after `cargo bench` and prints, per workload
and branch count, gather's time against the best peer and against the design's reference, as
markdown tables. Python 3 standard library only.

    cargo bench --bench fixed --bench dynamic --bench spawn && python3 benches/ratios.py
"""

import json
import sys
from pathlib import Path

ROOT = Path(sys.argv[1] if len(sys.argv) > 1 else "target/criterion")

# The median of each benchmark, in ns: times[group][function][n].
times = {}
for bench in ROOT.glob("**/new/benchmark.json"):
    meta = json.loads(bench.read_text())
    est = json.loads((bench.parent / "estimates.json").read_text())
    group = meta["group_id"]
    function = meta["function_id"]
    n = int(meta["value_str"])
    times.setdefault(group, {}).setdefault(function, {})[n] = est["median"]["point_estimate"]

# Rows also measured in paired rounds (gather and the reference taking turns, see
# `benches/common/mod.rs`): paired[(group, workload, n)] = the result, whose median ratio
# decides the row's target.
paired = {}
for result in ROOT.glob("paired/*.json"):
    entry = json.loads(result.read_text())
    if "ours" in entry:  # results written before rows were named so are skipped
        paired[(entry["group"], entry["workload"], entry["n"], entry["ours"])] = entry


def fmt(ns):
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.2f} µs"
    return f"{ns:.0f} ns"


def table(title, rows, header):
    print(f"\n### {title}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")


WORKLOADS = ["ready", "all-woken", "reverse", "shuffled", "fail-first", "fail-middle", "fail-last", "race"]
missed = []


def rows_for(form, ours, reference, target, spawn=False):
    rows = []
    prefixes = [form] if not spawn else ["spawn-current", "spawn-2workers"]
    for prefix in prefixes:
        for workload in WORKLOADS:
            group = times.get(f"{prefix}/{workload}")
            if not group:
                continue
            mine = ours(workload)
            if mine not in group:
                continue
            for n in sorted(group[mine]):
                t = group[mine][n]
                peers = {
                    f: v[n]
                    for f, v in group.items()
                    if not f.startswith("gather") and n in v
                }
                best = min(peers, key=peers.get)
                ref = reference(workload)
                ref_t = peers.get(ref)
                goal = target(workload, n)
                ratio_ref = t / ref_t if ref_t else None
                name = workload if not spawn else f"{prefix.removeprefix('spawn-')} {workload}"
                pair = paired.get((prefix, workload, n, mine))
                judged = pair["median"] if pair else ratio_ref
                verdict = ""
                if goal is not None and judged is not None:
                    ok = judged <= goal
                    verdict = f"≤ {goal}: {'met' if ok else '**missed**'}"
                    if pair:
                        verdict += f" (paired rounds: {judged:.2f})"
                    if not ok:
                        missed.append(f"{prefix}/{workload} at {n}: {mine} / {ref} = {judged:.2f} (target ≤ {goal})")
                row = [
                    name,
                    str(n),
                    fmt(t),
                    f"{best} {fmt(peers[best])}",
                    f"{t / peers[best]:.2f}",
                    ref,
                    f"{ratio_ref:.2f}" if ratio_ref else "–",
                    verdict,
                ]
                rows.append(row)
    return rows


HEADER = ["workload", "n", "gather", "best peer", "gather / best", "reference", "gather / ref", "target"]

# Fixed form: `gather!` (policy cancel) against tokio::try_join!; within 1.1x at 10 and 100.
table(
    "Fixed form: `gather!(a, b, ..)` (cancel); races: `policy = race`",
    rows_for(
        "fixed",
        lambda w: "gather-race" if w == "race" else "gather",
        lambda w: "tokio::try_join!(err-wins)" if w == "race" else "tokio::try_join!",
        lambda w, n: 1.1 if n in (10, 100) else None,
    ),
    HEADER,
)
table(
    "Fixed form, `policy = settle` against `tokio::join!` (no failure path on either side)",
    rows_for(
        "fixed",
        lambda w: "gather-settle",
        lambda w: "tokio::join!",
        lambda w, n: 1.1 if n in (10, 100) else None,
    ),
    HEADER,
)


def dynamic_ref(w):
    return "loop" if w == "ready" else "FuturesUnordered"


def dynamic_target(w, n):
    if w == "ready":
        return 1.2
    if w in ("reverse", "shuffled") and n == 1000:
        return 0.7
    return None


table(
    "Dynamic form: `gather!(for i in 0..n => leaf(i))` (cancel); races: `policy = race`",
    rows_for(
        "dynamic",
        lambda w: "gather-race" if w == "race" else "gather",
        dynamic_ref,
        dynamic_target,
    ),
    HEADER,
)
table(
    "Spawn: `gather!(spawn; for i in 0..n => leaf(i))` against `JoinSet` (fail-first = abort and await the rest)",
    rows_for(
        "spawn",
        lambda w: "gather-spawn",
        lambda w: "JoinSet",
        lambda w, n: 1.1 if w in ("ready", "fail-first") else None,
        spawn=True,
    ),
    HEADER,
)

if paired:
    table(
        "Paired rounds: `gather!` and the reference taking turns",
        [
            [
                f"{e['group']}/{e['workload']}",
                str(e["n"]),
                e["ours"],
                e["reference"],
                f"{e['median']:.2f}",
                f"{e['p10']:.2f} – {e['p90']:.2f}",
                f"{e['rounds']} × {e['runs']}",
            ]
            for _, e in sorted(paired.items())
        ],
        ["row", "n", "ours", "reference", "median of the rounds' ratios", "10th – 90th percentile", "rounds × runs each"],
    )

print("\n### Targets missed\n")
for line in missed:
    print(f"- {line}")
if not missed:
    print("- none")
