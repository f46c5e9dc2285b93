#!/usr/bin/env bash
# The main job on the embedded default: builds collate-run and runs `recipes/full.rhai --plan` with
# the example customer config (recipes/customer.example.yaml) against local emulators on 127.0.0.1 —
# moto (AWS, with an EKS cluster), the Kubernetes API test server, the OpenMetadata/Argo test server —
# and real helm with the real upstream charts (tests/fixtures/charts/upstream). Nothing outside this machine is touched.
#
#   scripts/demo.sh            plan only (changes nothing)
#   scripts/demo.sh --apply    plan, apply, then plan again (which reports no changes)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD

APPLY=0
case "${1:-}" in
    --apply) APPLY=1 ;;
    "") ;;
    *) echo "usage: scripts/demo.sh [--apply]" >&2; exit 64 ;;
esac

scripts/test-deps.sh >/dev/null
echo "demo: building collate-run and the test servers"
cargo build --quiet -p collate-run -p kube-testserver -p collate-run-tests --bins

work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# AWS: moto, with the EKS cluster the recipes look up.
moto_port=$(free_port)
MOTO_IAM_LOAD_MANAGED_POLICIES=true .venv-test/bin/moto_server -H 127.0.0.1 -p "$moto_port" >"$work/moto.log" 2>&1 &
pids+=($!)
export AWS_ENDPOINT_URL="http://127.0.0.1:$moto_port" AWS_ACCESS_KEY_ID=demo AWS_SECRET_ACCESS_KEY=demo \
       AWS_REGION=eu-west-1 AWS_DEFAULT_REGION=eu-west-1 AWS_EC2_METADATA_DISABLED=true \
       AWS_CONFIG_FILE="$work/aws-config" AWS_SHARED_CREDENTIALS_FILE="$work/aws-credentials"
for _ in $(seq 100); do curl -sf "$AWS_ENDPOINT_URL/moto-api/" >/dev/null 2>&1 && break; sleep 0.1; done
.venv-test/bin/python - <<'PY'
import boto3
eks = boto3.client("eks")
if "acme-eks" not in eks.list_clusters()["clusters"]:
    eks.create_cluster(name="acme-eks", roleArn="arn:aws:iam::123456789012:role/eks",
                       resourcesVpcConfig={"subnetIds": []})
PY

# Kubernetes: the API test server.
target/debug/kube-testserver --port 0 --kubeconfig "$work/kubeconfig" >"$work/kube.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do [[ -s $work/kubeconfig ]] && break; sleep 0.05; done
export KUBECONFIG="$work/kubeconfig" HELM_BIN="$ROOT/.tools/bin/helm"
export HELM_CACHE_HOME="$work/helm/cache" HELM_CONFIG_HOME="$work/helm/config" HELM_DATA_HOME="$work/helm/data"

# The OpenMetadata and Argo APIs.
target/debug/om-argo-testserver --port 0 --token demo-admin-token --argo-token demo >"$work/api.out" 2>&1 &
pids+=($!)
for _ in $(seq 100); do [[ -s $work/api.out ]] && break; sleep 0.05; done
api=$(head -n1 "$work/api.out")

# The example customer config, pointed at the local servers and the real charts (packaged, as for an air-gapped install).
# No database or search engine runs here, so the preflight step (recipes/preflight.rhai) is off.
cat >"$work/local.yaml" <<YAML
steps: {preflight: false}
charts:
  argo_workflows: {repo_url: "", chart: "$ROOT/tests/fixtures/charts/upstream/argo-workflows-0.45.23.tgz"}
  openmetadata: {repo_url: "", chart: "$ROOT/tests/fixtures/charts/upstream/openmetadata-1.12.4.tgz"}
  timeout: 60s
argo: {api_url: "$api", token: {env: DEMO_ARGO_TOKEN}}
openmetadata: {url: "$api", health_timeout: 20}
reindex: {poll_interval: 0, timeout: 30}
YAML
export COLLATE_DB_PASSWORD=demo-db-password COLLATE_ES_PASSWORD=demo-es-password \
       ARGO_DB_PASSWORD=demo-argo-password COLLATE_ADMIN_TOKEN=demo-admin-token COLLATE_ADMIN_PASSWORD=demo-admin-password DEMO_ARGO_TOKEN=demo

run() {
    echo
    echo "\$ collate-run recipes/full.rhai --config recipes/customer.example.yaml $*"
    target/debug/collate-run recipes/full.rhai --config recipes/customer.example.yaml \
        --config "$work/local.yaml" "$@"
}
run --plan
if [[ $APPLY == 1 ]]; then
    run
    run --plan
fi
