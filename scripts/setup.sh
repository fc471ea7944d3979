#!/usr/bin/env bash
# Installs what lazarus needs on a fresh Debian/Ubuntu machine: the pinned
# Rust toolchain with the guest target, gdb (dump tests use the real gdb),
# promtool and prometheus (the metrics tests use the real ones) and
# Chromium (the dashboard is tested in a real headless browser). Safe
# to run repeatedly.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -e /dev/kvm ]; then
    echo "setup: /dev/kvm is missing: lazarus needs Linux with KVM" >&2
    exit 5
fi

if ! command -v rustup >/dev/null 2>&1; then
    echo "setup: rustup is required (https://rustup.rs)" >&2
    exit 1
fi
# rust-toolchain.toml pins the toolchain; make sure it and the guest
# target are installed.
toolchain=$(sed -n 's/^channel *= *"\(.*\)"/\1/p' rust-toolchain.toml)
rustup toolchain install "$toolchain" --profile minimal --component rustfmt,clippy >/dev/null
rustup target add --toolchain "$toolchain" x86_64-unknown-none >/dev/null

# gdb for the dump tests; PostgreSQL for the shared crash database's
# tests (they start their own server from its binaries, as the postgres
# user, in a temporary directory: the package's own cluster is not used).
PG_BIN=/usr/lib/postgresql/15/bin
missing=()
command -v gdb >/dev/null 2>&1 || missing+=(gdb)
[ -x "$PG_BIN/initdb" ] && [ -x "$PG_BIN/pg_ctl" ] || missing+=(postgresql)
if [ ${#missing[@]} -gt 0 ]; then
    if command -v apt-get >/dev/null 2>&1; then
        SUDO=""
        [ "$(id -u)" -ne 0 ] && SUDO="sudo"
        $SUDO apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        echo "setup: please install ${missing[*]}" >&2
        exit 1
    fi
fi
# Chromium, headless, for the dashboard's browser test (Debian's own
# packages; chromedriver comes with chromium-driver for WebDriver use).
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium chromium-driver >/dev/null
fi
# promtool (Prometheus' own parser and linter of its text format) and the
# Prometheus server, for the metrics tests: from Debian's prometheus
# package, unpacked rather than installed (installing it would start a
# Prometheus service on this machine).
if ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus >/dev/null 2>&1; then
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    tmp=$(mktemp -d)
    chmod 0755 "$tmp"
    $SUDO apt-get update -qq >/dev/null
    (cd "$tmp" && apt-get download -qq prometheus >/dev/null 2>&1)
    dpkg-deb -x "$tmp"/prometheus_*.deb "$tmp/pkg"
    $SUDO install -m 0755 "$tmp/pkg/usr/bin/promtool" "$tmp/pkg/usr/bin/prometheus" /usr/local/bin/
    rm -rf "$tmp"
fi
echo "setup: ok ($(rustc --version), $(gdb --version | head -1), $("$PG_BIN/postgres" --version), $(promtool --version 2>&1 | head -1), $(/usr/bin/chromium --version 2>/dev/null | head -1))"
