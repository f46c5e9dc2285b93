#!/usr/bin/env bash
# Benchmarks of collate-run (not tests): builds the release binary, installs the benchmark tools
# (awscli, helm, kubectl: scripts/test-deps.sh --bench), runs every scenario alternating A/B and
# writes medians and ratios to bench/results.md.
# Usage: bench/run.sh [SCENARIO...]   (default: all; see bench/bench.py --help)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/test-deps.sh --bench >/dev/null
cargo build --release --quiet -p collate-run -p kube-testserver
exec python3 bench/bench.py "$@"
