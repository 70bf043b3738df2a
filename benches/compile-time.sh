#!/usr/bin/env bash
# Compile time of a file with 100 `gather!` calls against the same file with `tokio::try_join!`
# (issue 5, item 4). Builds two throwaway crates under target/, with the dependencies built
# once, then times only the rebuild of each file, three times, and prints the medians.
#
#     bash benches/compile-time.sh                        # 100 calls of 5 branches
#     CALLS=4 BRANCHES=100 bash benches/compile-time.sh   # 4 calls of 100 branches
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
work="$root/target/compile-time"
calls=${CALLS:-100}
branches=${BRANCHES:-5}

mkdir -p "$work"
make_crate() { # name, macro call prefix
    local name=$1 call=$2 dir="$work/$1"
    mkdir -p "$dir/src"
    cat > "$dir/Cargo.toml" <<TOML
[package]
name = "$name"
version = "0.0.0"
edition = "2024"
publish = false

[dependencies]
gather = { path = "$root/runtime" }
tokio = { version = "1", features = ["macros"] }

[workspace]
TOML
    {
        echo "async fn leaf(n: u32) -> Result<u32, String> { Ok(n) }"
        for i in $(seq 1 $calls); do
            local args=""
            for b in $(seq 1 $branches); do args="$args leaf($b),"; done
            echo "pub async fn f$i() -> u32 { let t = $call($args).unwrap(); t.0 + t.4 }"
        done
    } > "$dir/src/lib.rs"
    # Dependencies once.
    (cd "$dir" && CARGO_TARGET_DIR="$work/target" cargo build -q 2>/dev/null)
}
time_crate() { # name -> median seconds of 3 rebuilds
    local dir="$work/$1" times=()
    for _ in 1 2 3; do
        touch "$dir/src/lib.rs"
        local start end
        start=$(date +%s.%N)
        (cd "$dir" && CARGO_TARGET_DIR="$work/target" cargo build -q)
        end=$(date +%s.%N)
        times+=("$(echo "$end - $start" | bc)")
    done
    printf '%s\n' "${times[@]}" | sort -n | sed -n 2p
}

make_crate with-gather "gather::gather!"
make_crate with-try-join "tokio::try_join!"
g=$(time_crate with-gather)
t=$(time_crate with-try-join)
echo "$calls calls of $branches branches each, debug build of one file (median of 3):"
echo "  gather!          ${g}s"
echo "  tokio::try_join! ${t}s"
echo "  ratio            $(echo "scale=2; $g / $t" | bc)"
