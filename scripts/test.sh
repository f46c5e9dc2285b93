#!/usr/bin/env bash
# Runs every check and test of collate-run: installs the loopback test tools (moto, helm 3/4,
# kubectl; idempotent), then fmt, clippy and the whole workspace's tests against real servers
# on 127.0.0.1. This is the README's test command and what CI runs.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/test-deps.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings

echo "== cargo test"
cargo test --workspace --quiet
