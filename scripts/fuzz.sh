#!/usr/bin/env bash
# Coverage-guided fuzzing of lazarus's parsers and devices with libFuzzer,
# on the pinned stable toolchain. See docs/FUZZING.md.
#
#   scripts/fuzz.sh --smoke            every target briefly, from the committed
#                                      corpus (CI); fails on any crash
#   scripts/fuzz.sh run TARGET [ARGS]  fuzz one target; ARGS go to libFuzzer
#                                      (e.g. -runs=10000000, -max_total_time=600)
#   scripts/fuzz.sh cmin TARGET        merge what runs found into a minimal
#                                      fuzz/corpus/TARGET
#   scripts/fuzz.sh tmin TARGET FILE   shrink a crashing input
#   scripts/fuzz.sh build | list
#
# Inputs that crash land in fuzz/artifacts/TARGET/. New corpus entries of
# `run` go to fuzz/target/corpus/TARGET (not committed) until `cmin`.
# SMOKE_SECONDS sets the time per target of --smoke (default 10).
set -euo pipefail
cd "$(dirname "$0")/.."

TARGETS=(api cpio dump elf hypercall serial virtio_blk)
TRIPLE=x86_64-unknown-linux-gnu
BIN=fuzz/target/$TRIPLE/release

# libFuzzer's own flags for instrumentation, as `cargo fuzz build
# --sanitizer none` passes them: all stable rustc flags (no sanitizer,
# which needs nightly). Debug assertions and overflow checks make an
# arithmetic overflow a crash, not a silent wrap.
RUSTFLAGS_FUZZ="-Cpasses=sancov-module \
 -Cllvm-args=-sanitizer-coverage-level=4 \
 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
 -Cllvm-args=-sanitizer-coverage-pc-table \
 -Cllvm-args=-sanitizer-coverage-trace-compares \
 -Cllvm-args=-sanitizer-coverage-stack-depth \
 -Cllvm-args=-simplifycfg-branch-fold-threshold=0 \
 --cfg fuzzing -Cdebug-assertions -Coverflow-checks -Ccodegen-units=1"

# Limits every run enforces: an input that takes 10 s is a hang, one that
# allocates 512 MiB at once or holds 2 GiB is unbounded memory.
COMMON=(-timeout=10 -malloc_limit_mb=512 -rss_limit_mb=2048 -print_final_stats=1)

die() {
    echo "fuzz: $*" >&2
    exit 1
}

# The longest input of a target (its dumps are the largest files).
max_len() {
    case $1 in
        dump) echo 32768 ;;
        cpio) echo 8192 ;;
        *) echo 4096 ;;
    esac
}

is_target() {
    local t
    for t in "${TARGETS[@]}"; do
        [ "$t" = "$1" ] && return 0
    done
    return 1
}

build() {
    if ! command -v c++ >/dev/null 2>&1; then
        # libfuzzer-sys compiles libFuzzer (C++) with the cc crate.
        if command -v apt-get >/dev/null 2>&1; then
            SUDO=""
            [ "$(id -u)" -ne 0 ] && SUDO="sudo"
            $SUDO apt-get update -qq >/dev/null
            DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq g++ >/dev/null
        else
            die "a C++ compiler is needed to build libFuzzer"
        fi
    fi
    # --target keeps RUSTFLAGS off build scripts and proc macros.
    RUSTFLAGS="$RUSTFLAGS_FUZZ" cargo build --release --manifest-path fuzz/Cargo.toml \
        --target "$TRIPLE" --bins
}

# run TARGET WORKDIR [libFuzzer args]: the first corpus directory gets what
# is new; the committed corpus and regressions are read.
fuzz() {
    local t=$1 work=$2
    shift 2
    mkdir -p "$work" "fuzz/corpus/$t" "fuzz/artifacts/$t"
    local dirs=("$work" "fuzz/corpus/$t")
    [ -d "fuzz/regressions/$t" ] && dirs+=("fuzz/regressions/$t")
    "$BIN/$t" "${COMMON[@]}" -max_len="$(max_len "$t")" \
        -artifact_prefix="fuzz/artifacts/$t/" "$@" "${dirs[@]}"
}

smoke() {
    local seconds=${SMOKE_SECONDS:-10} start t failed=() log
    start=$(date +%s)
    echo "== fuzz build"
    build
    local built
    built=$(date +%s)
    log=$(mktemp -d)
    for t in "${TARGETS[@]}"; do
        if fuzz "$t" "$log/corpus-$t" -max_total_time="$seconds" >"$log/$t.log" 2>&1; then
            printf 'fuzz %-10s ok: %s execs, %s exec/s, %s\n' "$t" \
                "$(sed -n 's/^stat::number_of_executed_units: *//p' "$log/$t.log")" \
                "$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log/$t.log")" \
                "$(grep -oE 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+/[0-9]+[a-zA-Z]*' "$log/$t.log" | tail -1)"
        else
            failed+=("$t")
            echo "fuzz $t FAILED:"
            tail -40 "$log/$t.log"
        fi
    done
    rm -rf "$log"
    echo "fuzz smoke: build $((built - start)) s, runs $(($(date +%s) - built)) s (${#TARGETS[@]} targets x ${seconds} s)"
    echo "fuzz: $((${#TARGETS[@]} - ${#failed[@]})) passed, ${#failed[@]} failed"
    [ ${#failed[@]} -eq 0 ] || die "crashes in: ${failed[*]} (inputs in fuzz/artifacts/)"
}

cmd=${1:-}
case $cmd in
    --smoke | smoke)
        smoke
        ;;
    build)
        build
        ;;
    list)
        printf '%s\n' "${TARGETS[@]}"
        ;;
    run)
        [ $# -ge 2 ] && is_target "$2" || die "usage: fuzz.sh run TARGET [libFuzzer args]"
        t=$2
        shift 2
        build
        fuzz "$t" "fuzz/target/corpus/$t" "$@"
        ;;
    cmin)
        [ $# -eq 2 ] && is_target "$2" || die "usage: fuzz.sh cmin TARGET"
        t=$2
        build
        new=$(mktemp -d)
        sources=("fuzz/corpus/$t")
        [ -d "fuzz/target/corpus/$t" ] && sources+=("fuzz/target/corpus/$t")
        "$BIN/$t" "${COMMON[@]}" -max_len="$(max_len "$t")" -merge=1 "$new" "${sources[@]}"
        rm -rf "fuzz/corpus/$t"
        mkdir -p "fuzz/corpus/$t"
        cp "$new"/* "fuzz/corpus/$t/"
        rm -rf "$new" "fuzz/target/corpus/$t"
        echo "fuzz/corpus/$t: $(find "fuzz/corpus/$t" -type f | wc -l) files, $(du -sh "fuzz/corpus/$t" | cut -f1)"
        ;;
    tmin)
        [ $# -eq 3 ] && is_target "$2" || die "usage: fuzz.sh tmin TARGET FILE"
        build
        "$BIN/$2" -minimize_crash=1 -max_total_time=60 -timeout=10 \
            -exact_artifact_path="$3.min" "$3"
        echo "minimized: $3.min"
        ;;
    *)
        sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'
        exit 2
        ;;
esac
