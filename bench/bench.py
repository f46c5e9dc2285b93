"""collate-run benchmarks (not tests). Each scenario runs A and B alternately, several times, and
reports medians and the ratio B/A, so machine noise hits both sides alike. Results go to
bench/results.md (machine, date, medians, ratios, peak memory, the end-state comparison).

Scenarios:
  deploy   the guide as a bash script (bench/guide.sh: aws CLI, kubectl, helm) vs `collate-run
           recipes/full.rhai` (reindex skipped), each on a fresh world (moto reset and re-seeded, a new
           Kubernetes API test server, new helm homes); the end states are compared
  rerun    the same two on the world they converged (no changes)
  plan     `collate-run recipes/full.rhai --plan` on a converged world
  peers    `collate-run recipes/full.rhai` vs the Ansible playbook bench/peers/ansible/deploy.yml
           (amazon.aws, kubernetes.core): fresh deploy, converged re-run, and the preview (`--plan` vs
           `ansible-playbook --check --diff`); end states compared
  latency  +30 ms (--peer-latency) on every request to moto and the Kubernetes API test server (helm
           too): deploy, converged re-run and preview of collate-run (whole and step by step), guide.sh
           and the playbook, with the requests per server; the issue-18 targets
  startup  `collate-run -e '1+1'` vs `aws --version`
  scale    bench/scale.rhai, N namespaces x (Secret, SA, Role, RoleBinding): one k8s::apply of all 5N
           objects (batch) at N = --sizes, also at +--peer-latency ms (parallel([...]) beside it at N = 100),
           and one object after the other at N = 10, 100: create and converged re-run, time and peak memory

Runs under .venv-test/bin/python (boto3 for seeding moto and reading the end state): bench/run.sh.
"""

import argparse
import base64
import datetime
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROFILE = os.environ.get("BENCH_PROFILE", "release")
BIN = os.path.join(ROOT, "target", PROFILE, "collate-run")
KUBE_SERVER = os.path.join(ROOT, "target", PROFILE, "kube-testserver")
VENV = os.path.join(ROOT, ".venv-test", "bin")
TOOLS = os.path.join(ROOT, ".tools", "bin")
CHARTS = os.path.join(ROOT, "tests", "fixtures", "charts", "upstream")
EXAMPLE = os.path.join(ROOT, "recipes", "customer.example.yaml")
FULL = os.path.join(ROOT, "recipes", "full.rhai")
SCALE = os.path.join(ROOT, "bench", "scale.rhai")
GUIDE = os.path.join(ROOT, "bench", "guide.sh")
PROXY = os.path.join(ROOT, "bench", "latency_proxy.py")
GNU_TIME = "/usr/bin/time"
ACCOUNT = "123456789012"
SECRETS_ENV = {
    "COLLATE_DB_PASSWORD": "bench-db-password",
    "COLLATE_ES_PASSWORD": "bench-es-password",
    "ARGO_DB_PASSWORD": "bench-argo-password",
    "COLLATE_ADMIN_TOKEN": "bench-admin-token",
    "COLLATE_ADMIN_PASSWORD": "bench-admin-password",
}


# --- processes ---------------------------------------------------------------------------------


class Failed(Exception):
    pass


def own_hwm(pid, out, stop, wrapped):
    """Polls VmHWM (the peak RSS) of process pid itself (of its first child when `wrapped`, i.e.
    run under GNU time), the process's own children excluded, until stop is set."""
    if wrapped:
        child = None
        while child is None and not stop.is_set():
            try:
                with open(f"/proc/{pid}/task/{pid}/children") as f:
                    kids = f.read().split()
                child = int(kids[0]) if kids else None
            except OSError:
                return
            if child is None:
                stop.wait(0.0005)
        if child is None:
            return
        pid = child
    path = f"/proc/{pid}/status"
    while not stop.is_set():
        try:
            with open(path) as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        out[0] = max(out[0], int(line.split()[1]) * 1024)
                        break
        except (OSError, ValueError):
            return
        stop.wait(0.005)


def run(cmd, env=None, cwd=ROOT, ok=(0,), own=None, mem=True, out=None):
    """Runs cmd once: (wall seconds, peak RSS in bytes of the child and its reaped descendants,
    exit code, stderr). The RSS comes from wait4's rusage of this one child. With own=[0], also
    polls the child's own VmHWM into own[0] (what the child itself used, without e.g. helm).
    With out=[], the child's stdout is appended to it (else discarded)."""
    rss_file = None
    if mem and os.access(GNU_TIME, os.X_OK):
        # ru_maxrss of a child forked from this (large) Python process starts at Python's own RSS
        # (exec keeps the old mm's high-water mark), so measure through GNU time, a small parent.
        fd, rss_file = tempfile.mkstemp(prefix="bench-rss-")
        os.close(fd)
        cmd = [GNU_TIME, "-f", "%M", "-o", rss_file, *cmd]
    with tempfile.TemporaryFile() as stdout, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        p = subprocess.Popen(cmd, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=stdout, stderr=err)
        poller = None
        if own is not None:
            stop = threading.Event()
            poller = threading.Thread(target=own_hwm, args=(p.pid, own, stop, rss_file is not None), daemon=True)
            poller.start()
        _, status, usage = os.wait4(p.pid, 0)
        elapsed = time.perf_counter() - start
        if poller:
            stop.set()
            poller.join()
        p.returncode = code = os.waitstatus_to_exitcode(status)
        err.seek(0)
        text = err.read().decode(errors="replace")
        if out is not None:
            stdout.seek(0)
            out.append(stdout.read().decode(errors="replace"))
    peak = None
    if rss_file:
        with open(rss_file) as f:
            lines = [l for l in f.read().split() if l.isdigit()]
        os.remove(rss_file)
        peak = int(lines[-1]) * 1024 if lines else None
    if code not in ok:
        tail = (out[-1][-3000:] + "\n") if out else ""
        raise Failed(f"`{' '.join(cmd)}` exited {code}:\n{tail}{text[-3000:]}")
    return elapsed, peak, code, text


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_server(proc, log):
    """Stops a loopback server (SIGTERM, SIGKILL after 5 s) and closes its log."""
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    log.close()


def wait_for(pred, what, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if pred():
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise Failed(f"timed out waiting for {what}")


class KubeServer:
    """A Kubernetes API test server on 127.0.0.1 with its kubeconfig."""

    def __init__(self, folder):
        self.kubeconfig = os.path.join(folder, "kubeconfig")
        if os.path.exists(self.kubeconfig):
            os.remove(self.kubeconfig)
        self.log = open(os.path.join(folder, "kube.log"), "wb")
        self.proc = subprocess.Popen(
            [KUBE_SERVER, "--port", "0", "--kubeconfig", self.kubeconfig],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        wait_for(lambda: os.path.getsize(self.kubeconfig) > 0, "the kube test server")
        with open(self.kubeconfig) as f:
            self.url = next(l.split("server:", 1)[1].strip() for l in f if "server:" in l)

    def get(self, path):
        with urllib.request.urlopen(self.url + path, timeout=10) as r:
            return json.load(r)

    def stop(self):
        stop_server(self.proc, self.log)


class Moto:
    """moto server (with AWS managed IAM policies); reset() empties it, seed() adds the EKS cluster."""

    def __init__(self, folder):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(os.path.join(folder, "moto.log"), "wb")
        env = dict(os.environ, MOTO_IAM_LOAD_MANAGED_POLICIES="true")
        self.proc = subprocess.Popen(
            [os.path.join(VENV, "moto_server"), "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
        )
        wait_for(lambda: urllib.request.urlopen(self.url + "/moto-api/", timeout=2).status == 200, "moto")

    def client(self, service):
        import boto3

        return boto3.client(
            service, endpoint_url=self.url, region_name="eu-west-1",
            aws_access_key_id="bench", aws_secret_access_key="bench",
        )

    def reset(self):
        req = urllib.request.Request(self.url + "/moto-api/reset", method="POST", data=b"")
        urllib.request.urlopen(req, timeout=30).read()

    def seed(self):
        self.client("eks").create_cluster(
            name="acme-eks", roleArn=f"arn:aws:iam::{ACCOUNT}:role/eks",
            resourcesVpcConfig={"subnetIds": []},
        )

    def stop(self):
        stop_server(self.proc, self.log)


class World:
    """AWS (moto) + Kubernetes (test server) + helm homes + a scratch folder. fresh() starts over."""

    def __init__(self, name, aws=True):
        self.dir = tempfile.mkdtemp(prefix=f"bench-{name}-")
        self.moto = Moto(self.dir) if aws else None
        self.kube = None
        self.fresh()

    def fresh(self):
        if self.kube:
            self.kube.stop()
        for sub in ("helm", "work"):
            shutil.rmtree(os.path.join(self.dir, sub), ignore_errors=True)
        if self.moto:
            self.moto.reset()
            self.moto.seed()
            # moto loads the ~1,000 AWS managed policies on the first IAM call after a reset (~0.6 s):
            # pay it here, outside the timings, rather than in whichever side calls IAM first.
            self.moto.client("iam").list_policies(Scope="AWS", MaxItems=1)
        self.kube = KubeServer(self.dir)
        local = os.path.join(self.dir, "local.yaml")
        with open(local, "w") as f:
            f.write(
                "steps: {reindex: false, preflight: false}\n"
                # No Collate or Argo server runs in the bench world (nor in the guide script's): no
                # health wait or API check through the example config's svc:// URLs.
                "openmetadata: {url: \"\"}\n"
                "argo: {api_url: \"\"}\n"
                # The guide has no in-cluster ECR refresh (it refreshes by hand): compare like for like.
                "ecr: {refresh: {schedule: \"\"}}\n"
                "charts:\n"
                f"  argo_workflows: {{repo_url: \"\", chart: \"{CHARTS}/argo-workflows-0.45.23.tgz\"}}\n"
                f"  openmetadata: {{repo_url: \"\", chart: \"{CHARTS}/openmetadata-1.12.4.tgz\"}}\n"
                "  timeout: 60s\n"
            )
        self.local = local

    def env(self):
        e = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "KUBE", "HELM_"))}
        e.update(SECRETS_ENV)
        e.update(
            KUBECONFIG=self.kube.kubeconfig,
            HELM_BIN=os.path.join(TOOLS, "helm"),
            HELM_CACHE_HOME=os.path.join(self.dir, "helm", "cache"),
            HELM_CONFIG_HOME=os.path.join(self.dir, "helm", "config"),
            HELM_DATA_HOME=os.path.join(self.dir, "helm", "data"),
            CHARTS=CHARTS,
            WORK=os.path.join(self.dir, "work"),
            PATH=TOOLS + os.pathsep + e.get("PATH", ""),
        )
        if self.moto:
            e.update(
                AWS_ENDPOINT_URL=self.moto.url, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
                AWS_REGION="eu-west-1", AWS_DEFAULT_REGION="eu-west-1", AWS_EC2_METADATA_DISABLED="true",
                AWS_CONFIG_FILE=os.path.join(self.dir, "aws-config"),
                AWS_SHARED_CREDENTIALS_FILE=os.path.join(self.dir, "aws-credentials"),
            )
        return e

    def full(self, *extra):
        return [BIN, FULL, "--config", EXAMPLE, "--config", self.local, "--skip-preflight", *extra]

    def stop(self):
        if self.kube:
            self.kube.stop()
        if self.moto:
            self.moto.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


# --- end state ---------------------------------------------------------------------------------

K8S_KINDS = [
    ("/api/v1", "secrets"), ("/api/v1", "serviceaccounts"), ("/api/v1", "configmaps"),
    ("/api/v1", "services"), ("/apis/apps/v1", "deployments"),
    ("/apis/rbac.authorization.k8s.io/v1", "roles"), ("/apis/rbac.authorization.k8s.io/v1", "rolebindings"),
]
DROP_META = {"uid", "resourceVersion", "creationTimestamp", "managedFields", "generation", "selfLink"}
DROP_ANNOTATIONS = {
    "kubectl.kubernetes.io/last-applied-configuration", "deployment.kubernetes.io/revision",
    "kubernetes.io/service-account.uid",
}


def k8s_object(o):
    meta = {k: v for k, v in o.get("metadata", {}).items() if k not in DROP_META}
    ann = {k: v for k, v in (meta.get("annotations") or {}).items() if k not in DROP_ANNOTATIONS}
    if ann:
        meta["annotations"] = ann
    else:
        meta.pop("annotations", None)
    if not meta.get("labels"):
        meta.pop("labels", None)
    out = {k: v for k, v in o.items() if k not in ("metadata", "status", "apiVersion", "kind")}
    out["metadata"] = meta
    if o.get("kind") == "Secret" or "data" in out and o.get("type"):
        data = {}
        for k, v in (out.get("data") or {}).items():
            text = base64.b64decode(v).decode(errors="replace")
            if k == ".dockerconfigjson":
                text = json.loads(text)
            data[k] = text
        if out.get("type") == "kubernetes.io/service-account-token":
            data = {k: "(issued by the server)" for k in data}
        out["data"] = data
    return out


def snapshot(world):
    """The end state that matters, normalised: IAM, OIDC providers, buckets, Kubernetes objects
    in the two namespaces, helm releases with their values."""
    s = {}
    iam = world.moto.client("iam")
    roles = {}
    for r in iam.list_roles()["Roles"]:
        n = r["RoleName"]
        trust = r["AssumeRolePolicyDocument"]
        if isinstance(trust, str):
            trust = json.loads(urllib.parse.unquote(trust))
        inline = {
            p: iam.get_role_policy(RoleName=n, PolicyName=p)["PolicyDocument"]
            for p in iam.list_role_policies(RoleName=n)["PolicyNames"]
        }
        roles[n] = {
            "path": r.get("Path"),
            "trust": trust,
            "attached": sorted(p["PolicyArn"] for p in iam.list_attached_role_policies(RoleName=n)["AttachedPolicies"]),
            "inline": inline,
            "tags": {t["Key"]: t["Value"] for t in iam.list_role_tags(RoleName=n).get("Tags", [])},
        }
    s["iam roles"] = roles
    providers = {}
    for p in iam.list_open_id_connect_providers()["OpenIDConnectProviderList"]:
        d = iam.get_open_id_connect_provider(OpenIDConnectProviderArn=p["Arn"])
        providers[p["Arn"]] = {
            "url": d.get("Url"), "client_ids": sorted(d.get("ClientIDList", [])),
            "thumbprints": d.get("ThumbprintList", []), "tags": d.get("Tags", []),
        }
    s["oidc providers"] = providers
    s3 = world.moto.client("s3")
    buckets = {}
    for b in s3.list_buckets()["Buckets"]:
        n = b["Name"]
        info = {}
        try:
            info["encryption"] = s3.get_bucket_encryption(Bucket=n)["ServerSideEncryptionConfiguration"]["Rules"]
        except Exception as e:  # noqa: BLE001 - absent configuration
            info["encryption"] = type(e).__name__
        try:
            info["public_access_block"] = s3.get_public_access_block(Bucket=n)["PublicAccessBlockConfiguration"]
        except Exception as e:  # noqa: BLE001
            info["public_access_block"] = type(e).__name__
        info["location"] = s3.get_bucket_location(Bucket=n).get("LocationConstraint")
        info["versioning"] = s3.get_bucket_versioning(Bucket=n).get("Status")
        buckets[n] = info
    s["s3 buckets"] = buckets
    kube = world.kube
    s["namespaces"] = sorted(i["metadata"]["name"] for i in kube.get("/api/v1/namespaces")["items"])
    objects = {}
    for ns in ("argo-workflows", "collate"):
        for prefix, plural in K8S_KINDS:
            for o in kube.get(f"{prefix}/namespaces/{ns}/{plural}")["items"]:
                if o.get("type") == "helm.sh/release.v1":
                    continue  # helm's own revision records: compared as releases below
                objects[f"{plural}/{ns}/{o['metadata']['name']}"] = k8s_object(o)
    s["kubernetes objects"] = objects
    env = world.env()
    helm = os.path.join(TOOLS, "helm")
    rel = json.loads(subprocess.check_output([helm, "list", "-A", "-o", "json"], env=env))
    releases = {}
    for r in rel:
        values = json.loads(
            subprocess.check_output([helm, "get", "values", r["name"], "-n", r["namespace"], "-o", "json"], env=env)
        )
        releases[f"{r['namespace']}/{r['name']}"] = {
            "chart": r["chart"], "app_version": r["app_version"], "status": r["status"], "values": values,
        }
    s["helm releases"] = releases
    # The cluster's OIDC issuer id is random per moto world: name it by its role.
    issuer = world.moto.client("eks").describe_cluster(name="acme-eks")["cluster"]["identity"]["oidc"]["issuer"]
    text = json.dumps(s).replace(issuer.replace("https://", ""), "<OIDC_ISSUER>")
    return json.loads(text)


def differences(a, b, path=""):
    """Paths where a and b differ, with both sides."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            p = f"{path}.{k}" if path else str(k)
            if k not in a:
                out.append((p, "(absent)", b[k]))
            elif k not in b:
                out.append((p, a[k], "(absent)"))
            else:
                out.extend(differences(a[k], b[k], p))
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        out = []
        for i, (x, y) in enumerate(zip(a, b)):
            out.extend(differences(x, y, f"{path}[{i}]"))
        return out
    return [] if a == b else [(path, a, b)]


def summary(s):
    k = s["kubernetes objects"]
    return (
        f"{len(s['iam roles'])} IAM roles, {len(s['oidc providers'])} OIDC provider(s), "
        f"{len(s['s3 buckets'])} bucket(s), namespaces {', '.join(s['namespaces'])}; "
        f"{len(k)} Kubernetes objects in argo-workflows and collate "
        f"({sum(1 for n in k if n.startswith('secrets/'))} secrets, "
        f"{sum(1 for n in k if n.startswith('serviceaccounts/'))} service accounts, "
        f"{sum(1 for n in k if n.startswith('roles/'))} role(s), "
        f"{sum(1 for n in k if n.startswith('rolebindings/'))} role binding(s), "
        f"{sum(1 for n in k if n.startswith('deployments/'))} deployments); "
        f"helm releases {', '.join(sorted(s['helm releases']))}"
    )


# --- scenarios ---------------------------------------------------------------------------------


def fmt(seconds):
    if seconds is None:
        return "-"
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def mb(b):
    return "-" if b is None else f"{b / 1e6:.1f} MB"


def med(xs):
    return statistics.median(xs) if xs else None


def row(name, a, b, ta, tb, ma=None, mb_=None, note="", own=None):
    ra, rb = med(ta), med(tb)
    return {
        "name": name, "a": a, "b": b, "median_a": ra, "median_b": rb,
        "min_a": min(ta) if ta else None, "max_a": max(ta) if ta else None,
        "min_b": min(tb) if tb else None, "max_b": max(tb) if tb else None,
        "ratio": (rb / ra) if ra and rb else None, "runs": max(len(ta), len(tb)),
        "rss_a": max(ma) if ma else None, "rss_b": max(mb_) if mb_ else None, "note": note,
        "own_a": own or None,
    }


def scenario_startup(ctx):
    runs = ctx.runs(21)
    a, b = [BIN, "-e", "1+1"], [os.path.join(VENV, "aws"), "--version"]
    ta, tb, t0 = [], [], []
    for _ in range(runs):
        ta.append(run(a, mem=False)[0])
        tb.append(run(b, mem=False)[0])
        t0.append(run(["/bin/true"], mem=False)[0])
    ctx.spawn = med(t0)
    # Memory from separate runs (GNU time would add its own fork/exec to the timings).
    ma = [run(a)[1] for _ in range(3)]
    mb_ = [run(b)[1] for _ in range(3)]
    return [row("start-up", "collate-run -e '1+1'", "aws --version", ta, tb, ma, mb_)]


GUIDE_TIMES = {}


def guide_env(world, phase):
    """The world's environment, with guide.sh writing its per-command times to a fresh file."""
    env = world.env()
    fd, path = tempfile.mkstemp(prefix=f"bench-guide-{phase}-")
    os.close(fd)
    GUIDE_TIMES.setdefault(phase, []).append(path)
    env["GUIDE_TIMES"] = path
    return env


def guide_breakdown():
    """Per phase and tool: median over the runs of (number of commands, seconds in them)."""
    out = {}
    for phase, paths in GUIDE_TIMES.items():
        per_run = []
        for path in paths:
            tools = {}
            with open(path) as f:
                for line in f:
                    tool, start, end = line.split()
                    n, t = tools.get(tool, (0, 0.0))
                    tools[tool] = (n + 1, t + float(end) - float(start))
            os.remove(path)
            per_run.append(tools)
        names = sorted({t for r in per_run for t in r})
        out[phase] = {
            t: (int(med([r.get(t, (0, 0))[0] for r in per_run])), med([r.get(t, (0, 0.0))[1] for r in per_run]))
            for t in names
        }
    return out


def helm_share(world):
    """One diagnostic (untimed) fresh deploy and converged re-run of collate-run with HELM_BIN
    pointing at a wrapper that logs each helm command: how many helm processes, and their time."""
    wrapper = os.path.join(world.dir, "helm-logged")
    log = os.path.join(world.dir, "helm.log")
    with open(wrapper, "w") as f:
        f.write(f'#!/bin/bash\ns=$EPOCHREALTIME\n"{os.path.join(TOOLS, "helm")}" "$@"\nrc=$?\n'
                f'echo "$1 $s $EPOCHREALTIME" >>"{log}"\nexit $rc\n')
    os.chmod(wrapper, 0o755)
    out = {}
    world.fresh()
    for phase in ("deploy", "rerun"):
        if os.path.exists(log):
            os.remove(log)
        env = world.env()
        env["HELM_BIN"] = wrapper
        total = run(world.full(), env=env)[0]
        cmds = {}
        # A converged re-run may start no helm process at all (no log then).
        lines = open(log).read().splitlines() if os.path.exists(log) else []
        for line in lines:
            sub, a, b = line.split()
            n, t = cmds.get(sub, (0, 0.0))
            cmds[sub] = (n + 1, t + float(b) - float(a))
        out[phase] = (total, cmds)
    return out


def scenario_deploy(ctx):
    """Fresh deploy, converged re-run, plan on a converged world; end states compared."""
    runs = ctx.runs(5)
    wa, wb = ctx.world("a"), ctx.world("b")
    ta, tb, ma, mb_ = [], [], [], []
    own = [0]
    for i in range(runs):
        wa.fresh()
        t, m, _, _ = run(wa.full(), env=wa.env(), own=own)
        ta.append(t), ma.append(m)
        wb.fresh()
        t, m, _, _ = run(["bash", GUIDE], env=guide_env(wb, "deploy"))
        tb.append(t), mb_.append(m)
    rows = [row(
        "full deploy (fresh world)", "collate-run recipes/full.rhai", "bench/guide.sh (aws, kubectl, helm)",
        ta, tb, ma, mb_, own=own[0],
    )]
    # The end states: compare the snapshots, and let collate-run plan against the script's world.
    sa, sb = snapshot(wa), snapshot(wb)
    diffs = differences(sa, sb)
    _, _, code, _ = run(wa.full("--plan", "--detailed-exitcode"), env=wb.env(), ok=(0, 2))
    ctx.end_state = {"summary_a": summary(sa), "summary_b": summary(sb), "diffs": diffs, "plan_on_b": code}
    # Converged re-runs, on the worlds each side converged.
    runs = ctx.runs(5)
    ta, tb, ma, mb_ = [], [], [], []
    own = [0]
    for _ in range(runs):
        t, m, _, _ = run(wa.full(), env=wa.env(), own=own)
        ta.append(t), ma.append(m)
        t, m, _, _ = run(["bash", GUIDE], env=guide_env(wb, "rerun"))
        tb.append(t), mb_.append(m)
    rows.append(row(
        "converged re-run (no changes)", "collate-run recipes/full.rhai", "bench/guide.sh", ta, tb, ma, mb_,
        own=own[0],
    ))
    # --plan on a converged world (collate-run only; the script has no plan).
    tp, mp = [], []
    own = [0]
    for _ in range(runs):
        t, m, code, _ = run(wa.full("--plan", "--detailed-exitcode"), env=wa.env(), ok=(0, 2), own=own)
        if code != 0:
            raise Failed("--plan on the converged world reports changes")
        tp.append(t), mp.append(m)
    rows.append(row("--plan on a converged world", "collate-run recipes/full.rhai --plan", "-", tp, [], mp, None,
                    own=own[0]))
    ctx.guide_tools = guide_breakdown()
    ctx.helm_share = helm_share(wa)
    # Where a converged run spends its time: one run with timestamps on stderr (-v).
    return rows


class Latency:
    """bench/latency_proxy.py in front of every server of the world (the Kubernetes API test server
    and moto): env() points KUBECONFIG (so helm too) and AWS_ENDPOINT_URL at the proxies. `ms` = 0:
    no proxy. requests() reads (and resets) the proxy's per-request log: {server: count}."""

    def __init__(self, world, ms):
        self.world, self.ms, self.proc = world, ms, None
        self.kubeconfig = world.kube.kubeconfig
        self.moto_url = world.moto.url if world.moto else None
        self.log = os.path.join(world.dir, "requests.log")
        if ms:
            targets = [f"kube={world.kube.url.rsplit(':', 1)[1]}"]
            if world.moto:
                targets.append(f"aws={world.moto.port}")
            open(self.log, "w").close()
            self.proc = subprocess.Popen(
                [os.path.join(VENV, "python"), PROXY, str(ms), *targets, "--log", self.log],
                stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
            )
            ports = [self.proc.stdout.readline().decode().strip() for _ in targets]
            self.kubeconfig = os.path.join(world.dir, "kubeconfig-latency")
            with open(world.kube.kubeconfig) as f:
                text = f.read().replace(world.kube.url, f"http://127.0.0.1:{ports[0]}")
            with open(self.kubeconfig, "w") as f:
                f.write(text)
            if world.moto:
                self.moto_url = f"http://127.0.0.1:{ports[1]}"

    def env(self, env=None):
        e = env if env is not None else self.world.env()
        e["KUBECONFIG"] = self.kubeconfig
        if self.moto_url:
            e["AWS_ENDPOINT_URL"] = self.moto_url
        return e

    def requests(self):
        """{server: requests} since the last call, and "rounds": the sequential round trips, i.e.
        the requests sent at least half a delay after the round before began (requests sent
        together, or while others are in flight, share a round)."""
        counts, times = {}, []
        if self.proc:
            with open(self.log) as f:
                for line in f:
                    server, _, _, sent = line.split()
                    counts[server] = counts.get(server, 0) + 1
                    times.append(float(sent))
            open(self.log, "w").close()
        rounds, start = 0, None
        for t in sorted(times):
            if start is None or t - start >= self.ms / 2000:
                rounds, start = rounds + 1, t
        counts["rounds"] = rounds
        return counts

    def stop(self):
        if self.proc:
            self.proc.terminate()
            self.proc.wait()


def scale_plans(ctx):
    """(added ms, N, mode, runs) of the scale scenario: `sequential` (one object after the other) at
    N = 10 and 100 without added latency, the growth line; `batch` (one `k8s::apply` of all 5N
    objects) at every --sizes N, without and with +--peer-latency ms; `parallel` (`parallel([...])` of
    the ensures, 8 at a time) at N = 100 with the latency, beside batch. Slower combinations (sequential
    with latency: 5N round trips; parallel at N = 1000) are left out: the scenario stays within ~4 min."""
    ms = ctx.args.peer_latency
    plans = [(0, n, "sequential", ctx.runs(3)) for n in (10, 100)]
    plans += [(0, n, "batch", ctx.runs(3 if n <= 100 else 1)) for n in ctx.sizes]
    if ms:
        plans += [(ms, n, "batch", ctx.runs(1)) for n in ctx.sizes]
        plans += [(ms, n, "parallel", ctx.runs(1)) for n in ctx.sizes if n == 100]
    return plans


def scenario_scale(ctx):
    world = ctx.world("scale", aws=False)
    out = []
    for latency, n, mode, runs in scale_plans(ctx):
        r = {"create": [], "rerun": [], "rss_create": [], "rss_rerun": []}
        for _ in range(runs):
            world.fresh()
            lat = Latency(world, latency)
            try:
                cmd = [BIN, SCALE, "--set", f"n={n}", "--set", f"mode={mode}"]
                t, m, _, _ = run(cmd, env=lat.env())
                r["create"].append(t), r["rss_create"].append(m)
                t, m, _, _ = run(cmd, env=lat.env())
                r["rerun"].append(t), r["rss_rerun"].append(m)
            finally:
                lat.stop()
        out.append({
            "n": n, "mode": mode, "runs": runs, "latency": latency,
            "create": med(r["create"]), "rerun": med(r["rerun"]),
            "rss_create": max(r["rss_create"]), "rss_rerun": max(r["rss_rerun"]),
        })
        print(f"  N={n} {mode} (+{latency:g} ms/request): create {fmt(out[-1]['create'])}, "
              f"re-run {fmt(out[-1]['rerun'])}, peak {mb(out[-1]['rss_create'])} / "
              f"{mb(out[-1]['rss_rerun'])}", flush=True)
    ctx.scale = out
    return []


ANSIBLE_DIR = os.path.join(ROOT, "bench", "peers", "ansible")


def ansible(world, *extra):
    return [os.path.join(VENV, "ansible-playbook"), os.path.join(ANSIBLE_DIR, "deploy.yml"), *extra]


def ansible_env(env, world):
    """The world's environment for ansible-playbook: its config, and a home of its own per world."""
    env = dict(env)
    env.update(
        ANSIBLE_CONFIG=os.path.join(ANSIBLE_DIR, "ansible.cfg"),
        ANSIBLE_HOME=os.path.join(world.dir, "ansible"),
        ANSIBLE_LOCAL_TEMP=os.path.join(world.dir, "ansible", "tmp"),
        ANSIBLE_NOCOLOR="1",
        # kubernetes.core.helm (6.2) runs `helm list --all`, a flag helm 4 removed: helm 3.
        HELM_BIN=os.path.join(TOOLS, "helm3"),
        PATH=VENV + os.pathsep + env.get("PATH", ""),
    )
    return env


def recap(out):
    """`changed=N` of the play recap of ansible-playbook's stdout."""
    for line in reversed(out.splitlines()):
        if "changed=" in line and "ok=" in line:
            return int(line.split("changed=", 1)[1].split()[0])
    raise Failed("no play recap in ansible-playbook's output:\n" + out[-2000:])


def run_ansible(world, *extra, env=None):
    """One ansible-playbook run: (seconds, peak RSS, changed count)."""
    out = []
    t, m, _, _ = run(ansible(world, *extra), env=ansible_env(env or world.env(), world), cwd=ANSIBLE_DIR, out=out)
    return t, m, recap(out[-1])


def scenario_peers(ctx):
    """collate-run vs the Ansible playbook (bench/peers/ansible): fresh deploy, converged re-run and
    the preview (--plan vs --check --diff), alternating; end states compared."""
    runs = ctx.runs(3)
    wa, wc = ctx.world("a"), ctx.world("ansible")
    rows = []
    ta, tc, ma, mc = [], [], [], []
    for _ in range(runs):
        wa.fresh()
        t, m, _, _ = run(wa.full(), env=wa.env())
        ta.append(t), ma.append(m)
        wc.fresh()
        t, m, _ = run_ansible(wc)
        tc.append(t), mc.append(m)
    rows.append(row("peer: full deploy (fresh world)", "collate-run recipes/full.rhai",
                    "ansible-playbook deploy.yml", ta, tc, ma, mc))
    sa, sc = snapshot(wa), snapshot(wc)
    _, _, code, _ = run(wa.full("--plan", "--detailed-exitcode"), env=wc.env(), ok=(0, 2))
    ctx.peer_state = {"summary_a": summary(sa), "summary_b": summary(sc), "diffs": differences(sa, sc),
                      "plan_on_b": code}
    ta, tc, ma, mc, changed = [], [], [], [], []
    for _ in range(runs):
        t, m, _, _ = run(wa.full(), env=wa.env())
        ta.append(t), ma.append(m)
        t, m, n = run_ansible(wc)
        tc.append(t), mc.append(m), changed.append(n)
    ctx.peer_rerun_changed = max(changed)
    rows.append(row("peer: converged re-run", "collate-run recipes/full.rhai", "ansible-playbook deploy.yml",
                    ta, tc, ma, mc))
    ta, tc, ma, mc, changed = [], [], [], [], []
    for _ in range(runs):
        t, m, code, _ = run(wa.full("--plan", "--detailed-exitcode"), env=wa.env(), ok=(0, 2))
        if code != 0:
            raise Failed("--plan on the converged world reports changes")
        ta.append(t), ma.append(m)
        t, m, n = run_ansible(wc, "--check", "--diff")
        tc.append(t), mc.append(m), changed.append(n)
    ctx.peer_check_changed = max(changed)
    rows.append(row("peer: preview of a converged world", "collate-run recipes/full.rhai --plan",
                    "ansible-playbook deploy.yml --check --diff", ta, tc, ma, mc))
    fidelity(ctx, wa, wc)
    return rows


DRIFTS = [
    # (name, what the preview must name: collate-run's journal / the playbook's task and item)
    ("trust policy of collate-ingestion-role (sub condition)", "collate-ingestion-role",
     ("IAM roles", "collate-ingestion-role")),
    ("Secret key: db-credentials `password`", "db-credentials", ("Database and search credentials", None)),
    ("ServiceAccount annotation: om-role's role-arn", "om-role", ("Ingestion service account", "ServiceAccount/om-role")),
    ("helm value: openmetadata `replicaCount` 2", "openmetadata", ("Collate (OpenMetadata) release", None)),
    ("deleted Role om-argo-role", "om-argo-role", ("Ingestion service account", "Role/om-argo-role")),
]
DRIFT_SECRET = "drifted-db-password"


def kube_call(world, method, path, body=None, ctype="application/merge-patch+json"):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(world.kube.url + path, method=method, data=data,
                                 headers={"Content-Type": ctype} if data else {})
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.read()


def drift(world, helm):
    """The five drifts of DRIFTS, made behind the tool's back on a converged world."""
    iam = world.moto.client("iam")
    role = "collate-ingestion-role"
    doc = iam.get_role(RoleName=role)["Role"]["AssumeRolePolicyDocument"]
    if isinstance(doc, str):
        doc = json.loads(urllib.parse.unquote(doc))
    cond = doc["Statement"][0]["Condition"]["StringEquals"]
    key = next(k for k in cond if k.endswith(":sub"))
    cond[key] = "system:serviceaccount:collate:someone-else"
    iam.update_assume_role_policy(RoleName=role, PolicyDocument=json.dumps(doc))
    kube_call(world, "PATCH", "/api/v1/namespaces/collate/secrets/db-credentials",
              {"data": {"password": base64.b64encode(DRIFT_SECRET.encode()).decode()}})
    kube_call(world, "PATCH", "/api/v1/namespaces/collate/serviceaccounts/om-role",
              {"metadata": {"annotations": {"eks.amazonaws.com/role-arn": f"arn:aws:iam::{ACCOUNT}:role/other"}}})
    kube_call(world, "DELETE", "/apis/rbac.authorization.k8s.io/v1/namespaces/collate/roles/om-argo-role")
    env = world.env()
    subprocess.run([helm, "upgrade", "openmetadata", os.path.join(CHARTS, "openmetadata-1.12.4.tgz"), "-n", "collate",
                    "--reuse-values", "--set", "replicaCount=2"], env=env, check=True, capture_output=True)


def secrets_shown(text):
    """The bench's secret values (and the drifted one), plain or base64, found in a preview's output."""
    values = list(SECRETS_ENV.values()) + [DRIFT_SECRET]
    return sorted({v for v in values if v in text or base64.b64encode(v.encode()).decode() in text})


def collate_found(text):
    """Which DRIFTS collate-run's `--plan -o json` lists as a change."""
    changed = []
    for line in text.splitlines():
        try:
            e = json.loads(line)
        except ValueError:
            continue
        if isinstance(e, dict) and e.get("type") not in ("summary", "log", "step_start", "step_end", "progress",
                                                         "report") and e.get("action", e.get("changed")) not in (
                                                             None, "unchanged", False):
            changed.append(json.dumps(e))
    return [any(name in c for c in changed) for _, name, _ in DRIFTS], changed


def ansible_found(text):
    """Which DRIFTS `ansible-playbook --check --diff` reports as changed (task, and item when it names one)."""
    tasks, task = {}, None
    for line in text.splitlines():
        if line.startswith("TASK ["):
            task = line[6:line.index("]")]
            tasks[task] = []
        elif task and line.startswith("changed:"):
            tasks[task].append(line)
    out = []
    for _, _, (t, item) in DRIFTS:
        lines = next((v for k, v in tasks.items() if k.startswith(t)), [])
        out.append(bool(lines) if item is None else any(f"item={item}" in l for l in lines))
    return out


def fidelity(ctx, wa, wc):
    """Plan fidelity: the five DRIFTS on both converged worlds; which preview reports each, and
    whether it prints a secret value."""
    drift(wa, os.path.join(TOOLS, "helm"))
    drift(wc, os.path.join(TOOLS, "helm3"))
    out = []
    run(wa.full("--plan", "-o", "json"), env=wa.env(), ok=(0, 2), out=out)
    found_a, _ = collate_found(out[0])
    _, _, _, err = run(wa.full("--plan"), env=wa.env(), ok=(0, 2), out=out)
    shown_a = secrets_shown(out[0] + out[1] + err)
    out = []
    run(ansible(wc, "--check", "--diff"), env=ansible_env(wc.env(), wc), cwd=ANSIBLE_DIR, out=out)
    found_c, shown_c = ansible_found(out[0]), secrets_shown(out[0])
    ctx.fidelity = {"found_a": found_a, "found_b": found_c, "shown_a": shown_a, "shown_b": shown_c}


STEPS = ("prereqs", "argo", "collate")

# The fewest sequential rounds the dependency graph allows a converged re-run (and a plan), per
# step run alone and for the whole run, given what each request needs from an earlier answer:
# - prereqs: every read needs only the config (STS, EKS's issuer, each role with its policy lists
#   and its named inline policy, each bucket's HEAD and settings, the ECR token, the namespaces);
#   the pull secrets' server-side dry-run needs the token's answer, and the OIDC provider's ARN
#   needs the account and the issuer: 2.
# - argo: the namespaces, the archive Secret's dry-run and the release's record (helm) need only
#   the config; helm's own diff of the release needs its stored record first: 2.
# - collate: the same shape (Secrets, service account, Role, its token, the release's record);
#   the values need the role ARNs (the account: STS) before helm can diff them: 2.
# - whole run: all of the above reads in one round, the dry-runs that need an answer in the
#   next, helm's diffs after their records: 3.
# Process start (kubeconfig, credentials) and helm's own requests are inside these figures.
GRAPH_MIN = {"collate-run": 3, "collate-run prereqs": 2, "collate-run argo": 2, "collate-run collate": 2}


def steps_config(world, only):
    """A config overlay running only the step `only` (None: every step but reindex/preflight)."""
    path = os.path.join(world.dir, f"steps-{only or 'all'}.yaml")
    with open(path, "w") as f:
        f.write("steps: {" + ", ".join(f"{s}: {'true' if only in (None, s) else 'false'}" for s in STEPS) + "}\n")
    return ["--config", path]


def scenario_latency(ctx):
    """+N ms on every request to every server (moto, the Kubernetes API test server; helm goes through
    the fronted kubeconfig): deploy, converged re-run and preview of collate-run, guide.sh and the
    playbook, with the requests per server; collate-run also step by step."""
    # One run of each: at +30 ms a request the latency, not the machine's noise, sets the figures.
    ms = ctx.args.peer_latency
    out = {}

    def measure(tool, phase, world, fn):
        lat = Latency(world, ms)
        try:
            t = fn(lat)
            reqs = lat.requests()
        finally:
            lat.stop()
        out[(tool, phase)] = {"time": t, "requests": reqs}
        print(f"  +{ms:g} ms {tool} {phase}: {fmt(t)} {reqs}", flush=True)

    # collate-run, whole and step by step.
    w = ctx.world("a")
    w.fresh()
    measure("collate-run", "deploy", w, lambda lat: run(w.full(), env=lat.env())[0])
    measure("collate-run", "rerun", w, lambda lat: run(w.full(), env=lat.env())[0])
    measure("collate-run", "plan", w,
            lambda lat: run(w.full("--plan", "--detailed-exitcode"), env=lat.env())[0])
    w.fresh()
    for phase in ("deploy", "rerun", "plan"):
        for step in STEPS:
            extra = steps_config(w, step) + (["--plan", "--detailed-exitcode"] if phase == "plan" else [])
            measure(f"collate-run {step}", phase, w, lambda lat, extra=extra: run(w.full(*extra), env=lat.env())[0])
    # guide.sh (no preview: it has none).
    w = ctx.world("b")
    w.fresh()
    times = {}

    def guide(lat, phase):
        env = lat.env()
        fd, path = tempfile.mkstemp(prefix="bench-guide-latency-")
        os.close(fd)
        env["GUIDE_TIMES"] = path
        t = run(["bash", GUIDE], env=env)[0]
        helm = 0.0
        with open(path) as f:
            for line in f:
                tool, a, b = line.split()
                if tool == "helm":
                    helm += float(b) - float(a)
        os.remove(path)
        times[phase] = helm
        return t

    measure("guide.sh", "deploy", w, lambda lat: guide(lat, "deploy"))
    measure("guide.sh", "rerun", w, lambda lat: guide(lat, "rerun"))
    ctx.helm_floor = times["deploy"]
    # The playbook.
    w = ctx.world("ansible")
    w.fresh()
    measure("ansible", "deploy", w, lambda lat: run_ansible(w, env=lat.env())[0])
    measure("ansible", "rerun", w, lambda lat: run_ansible(w, env=lat.env())[0])
    measure("ansible", "plan", w, lambda lat: run_ansible(w, "--check", "--diff", env=lat.env())[0])
    ctx.latency_results = out
    return []


SCENARIOS = {"startup": scenario_startup, "deploy": scenario_deploy, "peers": scenario_peers,
             "latency": scenario_latency, "scale": scenario_scale}


class Context:
    def __init__(self, args):
        self.args = args
        self.sizes = args.sizes
        self.worlds = {}
        self.end_state = None
        self.scale = None
        self.spawn = None
        self.guide_tools = None
        self.peer_state = None
        self.fidelity = None
        self.load = os.getloadavg()[1]
        self.latency_results = None
        self.helm_floor = None

    def runs(self, default):
        return self.args.runs or default

    def world(self, name, aws=True):
        if name not in self.worlds:
            self.worlds[name] = World(name, aws=aws)
        return self.worlds[name]

    def close(self):
        for w in self.worlds.values():
            w.stop()


# --- report ------------------------------------------------------------------------------------


def machine():
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            kb = int(f.readline().split()[1])
            mem = f", {kb / 1e6:.1f} GB RAM"
    except (OSError, ValueError, IndexError):
        pass
    return f"{platform.system()} {platform.release()} {platform.machine()}, {os.cpu_count()} cores, {cpu}{mem}"


def versions():
    out = []
    for cmd in ([os.path.join(VENV, "aws"), "--version"], [os.path.join(TOOLS, "kubectl"), "version", "--client"],
                [os.path.join(TOOLS, "helm"), "version", "--short"], [BIN, "--version"]):
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
            out.append((p.stdout or p.stderr).strip().splitlines()[0])
        except (OSError, subprocess.TimeoutExpired, IndexError):
            pass
    return "; ".join(out)


def verdict(ok):
    return "**met**" if ok else "**missed**"


def end_state_lines(w, e, other, where):
    """The end-state comparison of collate-run's world with `other`'s, and what --plan says on it."""
    w(f"- collate-run: {e['summary_a']}")
    w(f"- {other}: {e['summary_b']}")
    if e["diffs"]:
        w(f"- **{len(e['diffs'])} difference(s)** (path: collate-run / {other}):")
        for p, a, b in e["diffs"][:40]:
            w(f"  - `{p}`: `{json.dumps(a)[:200]}` / `{json.dumps(b)[:200]}`")
    else:
        w("- **identical**: same IAM roles (trust policies, attached policies, no inline policies), OIDC "
          "provider, bucket (encryption, public access block), namespaces, secrets, service accounts and "
          "annotations, Role/RoleBinding, helm releases with the same values.")
    w(f"- `collate-run recipes/full.rhai --plan --detailed-exitcode` against {where}: exit "
      f"{e['plan_on_b']} ({'no changes' if e['plan_on_b'] == 0 else 'changes'}).")


def write(path, ctx, rows, elapsed):
    by = {r["name"]: r for r in rows}
    L = []
    w = L.append
    w("# Benchmark results\n")
    w(f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC")
    w(f"- machine: {machine()}")
    w(f"- load: 5-minute load average {ctx.load:.1f} at the start, {os.getloadavg()[1]:.1f} at the end"
      + (" (other work shared the cores: absolute figures are noisy; the A/B pairs alternate)"
         if max(ctx.load, os.getloadavg()[1]) > 1.5 else ""))
    w(f"- tools: {versions()}")
    w(f"- binaries: `target/{PROFILE}` (cargo `--release`)")
    w("- method: A and B alternate; medians of the runs (min-max in brackets); ratio = median B / median A "
      "(higher: collate-run faster). Peak memory: maximum RSS from `/usr/bin/time -f %M` around the one child (for the bash "
      "script: its largest process; for collate-run that includes the helm processes it runs, and \"own\" is "
      "collate-run's own VmHWM, polled from /proc). Every server listens on 127.0.0.1.")
    w(f"- command: `bench/run.sh` (whole run: {elapsed / 60:.1f} min)\n")
    w("| scenario | A | median A | B | median B | B / A | runs | peak mem A | peak mem B |")
    w("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        rng = lambda lo, hi: f" ({fmt(lo)}-{fmt(hi)})" if lo is not None and r["runs"] > 1 else ""
        ratio = f"{r['ratio']:.1f}x" if r["ratio"] else "-"
        w(f"| {r['name']} | `{r['a']}` | {fmt(r['median_a'])}{rng(r['min_a'], r['max_a'])} | "
          + (f"`{r['b']}`" if r["b"] != "-" else "-")
          + f" | {fmt(r['median_b'])}{rng(r['min_b'], r['max_b'])} | {ratio} | {r['runs']} | "
          f"{mb(r['rss_a'])}{' (own ' + mb(r['own_a']) + ')' if r['own_a'] else ''} | {mb(r['rss_b'])} |")
    w("")
    if ctx.end_state:
        e = ctx.end_state
        w("## End states (full deploy)\n")
        w("The two worlds after a fresh deploy, read back with boto3, the Kubernetes API and `helm get values`, "
          "normalised (server-set metadata, `status`, kubectl's last-applied annotation and helm's revision "
          "secrets dropped; Secret data decoded; service-account token values are issued by the server and not "
          "compared):\n")
        end_state_lines(w, e, "guide.sh", "the script's world")
        w("")
    if ctx.guide_tools:
        w("## Where the bash script spends its time\n")
        w("Median per run, from `GUIDE_TIMES` (guide.sh times each command):\n")
        w("| phase | aws | kubectl | helm |")
        w("|---|---|---|---|")
        for phase, tools in ctx.guide_tools.items():
            cell = lambda t: f"{tools[t][0]} commands, {fmt(tools[t][1])}" if t in tools else "-"
            w(f"| {phase} | {cell('aws')} | {cell('kubectl')} | {cell('helm')} |")
        w("")
    if getattr(ctx, "helm_share", None):
        w("collate-run's own helm processes (one untimed diagnostic run with a logging `HELM_BIN` wrapper):\n")
        for phase, (total, cmds) in ctx.helm_share.items():
            n = sum(c[0] for c in cmds.values())
            t = sum(c[1] for c in cmds.values())
            parts = ", ".join(f"`helm {k}` x{c[0]} {fmt(c[1])}" for k, c in sorted(cmds.items()))
            w(f"- {phase}: {n} helm processes, {fmt(t)} of the run's {fmt(total)}" + (f" ({parts})" if parts else ""))
        w("")
    if ctx.spawn:
        w(f"Process spawn baseline of this harness (`/bin/true`, median): {fmt(ctx.spawn)}.\n")
    if ctx.scale:
        ms = ctx.args.peer_latency
        w("## Scale: bench/scale.rhai (N namespaces, each with a Secret, ServiceAccount, Role, RoleBinding)\n")
        w("Fresh Kubernetes API test server per create run; the re-run is the same command on the converged "
          "server. `sequential`: one `ensure_*` after the other; `parallel`: two dependency levels (namespaces, "
          "then the 4N objects) through `parallel([...])`, 8 jobs at a time; `batch`: one `k8s::apply([...])` of "
          "all 5N manifests, which converges each level (namespaces, then the rest) up to 32 objects side by side "
          "(64 requests in flight). The loopback server answers in well under a millisecond and shares the 2 "
          f"cores with collate-run, so the +{ms:g} ms rows put bench/latency_proxy.py in front of it (+{ms:g} ms "
          "on every request and every new connection, like a cluster in another network). Peak memory: GNU "
          "time's maximum RSS of collate-run.\n")
        w("| added latency | N | objects | mode | create | converged re-run | re-run per object | peak mem create | "
          "peak mem re-run | runs |")
        w("|---|---|---|---|---|---|---|---|---|---|")
        for x in ctx.scale:
            w(f"| {x['latency']:g} ms | {x['n']} | {5 * x['n']} | {x['mode']} | {fmt(x['create'])} | "
              f"{fmt(x['rerun'])} | {x['rerun'] / (5 * x['n']) * 1e3:.2f} ms | {mb(x['rss_create'])} | "
              f"{mb(x['rss_rerun'])} | {x['runs']} |")
        w("")
        growth = []
        for mode in ("sequential", "batch"):
            pts = [x for x in ctx.scale if x["mode"] == mode and x["latency"] == 0]
            if len(pts) >= 2:
                a, b = pts[0], pts[-1]
                growth.append(
                    f"{mode}: N x{b['n'] // a['n']} -> create time x{b['create'] / a['create']:.1f}, re-run time "
                    f"x{b['rerun'] / a['rerun']:.1f}, peak memory {mb(a['rss_create'])} -> {mb(b['rss_create'])}"
                )
        if growth:
            w("Growth from the smallest to the largest N (no added latency): " + "; ".join(growth) + ".\n")
        lat = {(x["n"], x["mode"]): x for x in ctx.scale if x["latency"]}
        speedups = [
            f"N = {n}: re-run x{lat[(n, 'parallel')]['rerun'] / lat[(n, 'batch')]['rerun']:.1f} faster "
            f"({fmt(lat[(n, 'parallel')]['rerun'])} -> {fmt(lat[(n, 'batch')]['rerun'])}), create "
            f"x{lat[(n, 'parallel')]['create'] / lat[(n, 'batch')]['create']:.1f}"
            for n in sorted({k[0] for k in lat}) if (n, "parallel") in lat and (n, "batch") in lat
        ]
        if speedups:
            w(f"`batch` against `parallel([...])` with +{ms:g} ms per request: " + "; ".join(speedups) + ".\n")
        big = lat.get((1000, "batch"))
        if big:
            w(f"### Targets (issue 18: 1000 namespaces, 5000 objects, batch, +{ms:g} ms)\n")
            w("| target | figure | |")
            w("|---|---|---|")
            w(f"| converged re-run < 10 s | {fmt(big['rerun'])} | {verdict(big['rerun'] < 10)} |")
            w(f"| converged re-run's peak memory <= 64 MB | {mb(big['rss_rerun'])} = "
              f"{big['rss_rerun'] / 2**20:.1f} MiB (the create: {mb(big['rss_create'])}) | "
              f"{verdict(big['rss_rerun'] <= 64e6)} (read as 10^6 bytes; as MiB: "
              f"{verdict(big['rss_rerun'] <= 64 * 2**20)}) |")
            w("")
    if ctx.peer_state:
        e = ctx.peer_state
        w("## The Ansible peer (bench/peers/ansible)\n")
        w("The `peer:` rows above: `ansible-playbook bench/peers/ansible/deploy.yml` (amazon.aws, kubernetes.core, "
          "three small boto3 modules on amazon.aws's AnsibleAWSModule where no module exists: see its README) "
          "against the same servers and charts, alternating with collate-run. End states after a fresh deploy, "
          "compared like the bash script's:\n")
        end_state_lines(w, e, "ansible-playbook", "the playbook's world")
        w(f"- The playbook's converged re-run reports changed={ctx.peer_rerun_changed}; its `--check --diff` on "
          f"the converged world changed={ctx.peer_check_changed}.")
        w("- Terraform/OpenTofu: not in the package registries this machine reaches (no `terraform`, `opentofu` "
          "or `tofu` package in Debian; PyPI's `tofu` and npm's `terraform` are unrelated projects), and its "
          "AWS, Kubernetes and Helm providers come from the Terraform registry, which is not reachable either: "
          "no Terraform peer.\n")
    if ctx.fidelity:
        f = ctx.fidelity
        w("### Plan fidelity: five drifts\n")
        w("On both converged worlds, behind the tools' backs: the trust policy of one role, a Secret key, a "
          "ServiceAccount annotation, a helm value (`helm upgrade --reuse-values --set`) and a deleted Role. "
          "Then `collate-run --plan` (`-o json`: the journal's entries that are not unchanged) and "
          "`ansible-playbook --check --diff` (the `changed:` task, and its loop item where the task names one).\n")
        w("| drift | collate-run --plan | ansible-playbook --check --diff |")
        w("|---|---|---|")
        yes = lambda b: "reported" if b else "**not reported**"
        for (name, _, _), a, b in zip(DRIFTS, f["found_a"], f["found_b"]):
            w(f"| {name} | {yes(a)} | {yes(b)} |")
        show = lambda v: ", ".join(f"`{x}`" for x in v) if v else "none"
        w(f"| secret values printed (the bench's and the drifted one, plain or base64) | {show(f['shown_a'])} | "
          f"{show(f['shown_b'])} |\n")
    if ctx.latency_results:
        L_ = ctx.latency_results
        ms = ctx.args.peer_latency
        w(f"## +{ms:g} ms on every request\n")
        w(f"bench/latency_proxy.py in front of moto and the Kubernetes API test server (helm reaches the cluster "
          f"through the same proxy): every HTTP request reaches its server {ms:g} ms after it was sent and every "
          f"new connection costs {ms:g} ms more (TCP handshake; TLS not modelled, so the tools that open many "
          "connections — a process per command or per task — are favoured). The bench world has no "
          "OpenMetadata/Argo server: the example config's API checks are off in it (`openmetadata.url` and "
          "`argo.api_url` empty), for all three tools alike, so there is no such request to delay. One run "
          "each. Requests: counted by the proxy per server; \"time / latency\" is the number of "
          f"{ms:g} ms round trips the run's wall time would hold; \"rounds\": the sequential round trips the "
          f"proxy saw (a request sent {ms / 2:g} ms or more after the current round began starts a new one; "
          "requests sent together share a round).\n")
        w("| tool | phase | time | AWS requests | Kubernetes requests | rounds | graph minimum | time / latency |")
        w("|---|---|---|---|---|---|---|---|")
        for (tool, phase), x in L_.items():
            least = GRAPH_MIN.get(tool, "") if phase in ("rerun", "plan") else ""
            w(f"| {tool} | {phase} | {fmt(x['time'])} | {x['requests'].get('aws', 0)} | "
              f"{x['requests'].get('kube', 0)} | {x['requests']['rounds']} | {least} | "
              f"{x['time'] * 1000 / ms:.0f} |")
        w("")
        w("\"graph minimum\": the fewest sequential rounds a converged re-run or plan can make, given which "
          "request needs an earlier one's answer (derived in bench.py, `GRAPH_MIN`): every read needs only the "
          "config, so they could all go in the first round; the server-side dry-runs of the pull secrets need "
          "the ECR token, the OIDC provider's ARN needs the account and the issuer, and helm diffs a release "
          "after reading its record. collate-run reads each step's objects level by level (a namespace before "
          "what is in it, a role before its inline documents, the token before the secrets), and the Argo API "
          "check waits for Collate's install: the rounds above the minimum are those levels.\n")
        get = lambda t, p: (L_.get((t, p)) or {}).get("time")
        w(f"## Targets (issue 18, at +{ms:g} ms)\n")
        w("| target | figure | |")
        w("|---|---|---|")
        r, p = get("collate-run", "rerun"), get("collate-run", "plan")
        if r is not None:
            w(f"| converged re-run < 1 s | {fmt(r)} | {verdict(r < 1)} |")
        if p is not None:
            w(f"| `--plan` < 1 s | {fmt(p)} | {verdict(p < 1)} |")
        d = get("collate-run", "deploy")
        if d is not None and ctx.helm_floor:
            w(f"| full deploy within 1.5x of helm's own two installs | {fmt(d)} vs {fmt(ctx.helm_floor)} "
              f"(the two `helm upgrade --install --wait` of guide.sh's run): {d / ctx.helm_floor:.2f}x | "
              f"{verdict(d <= 1.5 * ctx.helm_floor)} |")
        a = get("ansible", "rerun")
        if r is not None and a is not None:
            w(f"| converged re-run >= 20x faster than the playbook | {a / r:.1f}x ({fmt(r)} vs {fmt(a)}) | "
              f"{verdict(a / r >= 20)} |")
        w("")
    # Targets (of the scenarios that ran).
    if not (set(by) & {"full deploy (fresh world)", "converged re-run (no changes)", "start-up"}) and not ctx.scale:
        return finish(path, L)
    w("## Targets (issue 7)\n")
    w("| target | figure | |")
    w("|---|---|---|")
    d = by.get("full deploy (fresh world)")
    if d:
        w(f"| full deploy >= 10x faster than the bash script | {d['ratio']:.1f}x ({fmt(d['median_a'])} vs "
          f"{fmt(d['median_b'])}) | {verdict(d['ratio'] >= 10)} |")
    r = by.get("converged re-run (no changes)")
    if r:
        w(f"| converged re-run < 1 s | {fmt(r['median_a'])} | {verdict(r['median_a'] < 1)} |")
    p = by.get("--plan on a converged world")
    if p:
        w(f"| (`--plan` on a converged world, same bound) | {fmt(p['median_a'])} | {verdict(p['median_a'] < 1)} |")
    s = by.get("start-up")
    if s:
        w(f"| start-up < 10 ms | {fmt(s['median_a'])} (of which ~{fmt(ctx.spawn)} is this harness's spawn) | "
          f"{verdict(s['median_a'] < 0.010)} |")
    if ctx.scale:
        big = [x for x in ctx.scale if x["n"] == max(y["n"] for y in ctx.scale) and x["latency"] == 0]
        peak = max(max(x["rss_create"], x["rss_rerun"]) for x in big)
        each = ", ".join(f"{x['mode']} {mb(max(x['rss_create'], x['rss_rerun']))}" for x in big)
        w(f"| peak memory < 50 MB for N = {big[0]['n']} | {mb(peak)} ({each}) | {verdict(peak < 50e6)} |")
    w("")
    finish(path, L)


def finish(path, L):
    """Appends bench/notes.md (the reading of the figures) and writes the results."""
    notes = os.path.join(ROOT, "bench", "notes.md")
    if os.path.exists(notes):
        with open(notes) as f:
            L.append(f.read().rstrip() + "\n")
    with open(path, "w") as f:
        f.write("\n".join(L))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("scenarios", nargs="*", help=f"some of: {', '.join(SCENARIOS)} (default: all)")
    ap.add_argument("--runs", type=int, default=0, help="runs per side (default: per scenario)")
    ap.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], default=[10, 100, 1000],
                    help="scale sizes, comma-separated (default 10,100,1000)")
    ap.add_argument("--peer-latency", type=float, default=30,
                    help="ms added to every request to every server in the latency scenario and in the scale "
                         "scenario's latency rows (default 30; 0: none)")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results.md"))
    args = ap.parse_args()
    names = args.scenarios or list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        ap.error(f"unknown scenario(s) {unknown}; known: {', '.join(SCENARIOS)}")
    start = time.perf_counter()
    ctx = Context(args)
    rows = []
    try:
        for name in names:
            print(f"bench: {name} ...", flush=True)
            for r in SCENARIOS[name](ctx):
                ratio = f"   ratio {r['ratio']:.1f}x" if r["ratio"] else ""
                print(f"  {r['a']}: {fmt(r['median_a'])}   {r['b']}: {fmt(r['median_b'])}{ratio}", flush=True)
                rows.append(r)
        if ctx.end_state:
            n = len(ctx.end_state["diffs"])
            print(f"  end states: {'identical' if n == 0 else f'{n} difference(s)'}; "
                  f"plan on the script's world exits {ctx.end_state['plan_on_b']}")
    except Failed as e:
        sys.exit(f"bench: {e}")
    finally:
        ctx.close()
    write(args.out, ctx, rows, time.perf_counter() - start)
    print(f"bench: wrote {os.path.relpath(args.out, ROOT)}")


if __name__ == "__main__":
    main()
