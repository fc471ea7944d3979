#!/usr/bin/env bash
# The lazarus test command: formatting, lints (host and guest), then every
# test, then a short run of every fuzz target. The tests boot the real
# guest under KVM and need /dev/kvm.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh

echo "== rustfmt"
cargo fmt --all -- --check

echo "== clippy (host)"
cargo clippy --all-targets -- -D warnings

echo "== clippy (guest)"
guest_clippy() {
    local dir=$1 flags=$2
    shift 2
    RUSTFLAGS="$flags -C force-frame-pointers=yes -C force-unwind-tables=yes" \
        cargo clippy --release --target x86_64-unknown-none --target-dir "target/guest/$dir" "$@" -- -D warnings
}
guest_clippy kernel "-C relocation-model=static" -p lazarus-kernel
guest_clippy user "-C relocation-model=static -C code-model=small" -p lazarus-user -p lazarus-ulib -p lazarus-repair -p lazarus-guestmem
guest_clippy ext "-C relocation-model=pic" -p lazarus-extsdk -p lazarus-ext-rand -p lazarus-ext-ramdisk -p lazarus-ext-crashtest -p lazarus-ext-virtblk

echo "== tests"
cargo test --release -- --test-threads=2

echo "== fuzz (smoke)"
./scripts/fuzz.sh --smoke
