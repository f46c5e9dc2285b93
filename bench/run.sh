#!/usr/bin/env bash
# Benchmarks of collate-run (not tests): installs the benchmark tools (awscli, moto, helm, kubectl:
# scripts/test-deps.sh --bench), builds the release binaries (collate-run, the Kubernetes API test
# server), and runs every scenario (the Ansible peer too) alternating A/B, against loopback servers only (moto, the test
# server, helm with the real upstream charts, packaged); writes medians, ratios and peak memory to bench/results.md.
# Usage: bench/run.sh [SCENARIO...] [--runs N] [--sizes 10,100,1000] [--peer-latency MS]
# Scenarios: startup, deploy, peers (the Ansible playbook), latency (+30 ms on every request), scale.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [[ " $* " == *" --help "* || " $* " == *" -h "* ]]; then
    sed -n '2,7p' "$0"
    exec python3 bench/bench.py --help
fi
scripts/test-deps.sh --bench >/dev/null
cargo build --release --quiet -p collate-run -p kube-testserver -p collate-run-tests --bins
exec .venv-test/bin/python bench/bench.py "$@"
