#!/usr/bin/env python3
"""collate-run benchmarks: each scenario runs A and B alternately, several times, and reports
medians and the ratio B/A, so machine noise hits both sides alike. Results go to
bench/results.md (machine, date, medians, ratios)."""

import argparse
import datetime
import os
import platform
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "collate-run")
VENV = os.path.join(ROOT, ".venv-test", "bin")


def timed(cmd, env=None, cwd=None):
    """Wall time of one run of cmd, in seconds; fails loudly when the command fails."""
    start = time.perf_counter()
    p = subprocess.run(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - start
    if p.returncode != 0:
        sys.exit(f"bench: {' '.join(cmd)} failed ({p.returncode}): {p.stderr.decode()[-2000:]}")
    return elapsed


def alternate(a, b, runs):
    """Runs a() and b() alternately `runs` times each; returns their time lists."""
    ta, tb = [], []
    for _ in range(runs):
        ta.append(a())
        tb.append(b())
    return ta, tb


def fmt(seconds):
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def scenario_startup(runs):
    """Start-up: `collate-run -e '1+1'` vs `aws --version` (the cost of one CLI process)."""
    aws = os.path.join(VENV, "aws")
    a = lambda: timed([BIN, "-e", "1+1"])
    b = lambda: timed([aws, "--version"])
    ta, tb = alternate(a, b, runs)
    ma, mb = statistics.median(ta), statistics.median(tb)
    return {
        "name": "start-up",
        "a": "collate-run -e '1+1'",
        "b": "aws --version",
        "median_a": ma,
        "median_b": mb,
        "ratio": mb / ma,
        "runs": runs,
    }


SCENARIOS = {"startup": scenario_startup}


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
    return f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores, {cpu}"


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("scenarios", nargs="*", help=f"some of: {', '.join(SCENARIOS)} (default: all)")
    ap.add_argument("--runs", type=int, default=21)
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results.md"))
    args = ap.parse_args()
    names = args.scenarios or list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        ap.error(f"unknown scenario(s) {unknown}; known: {', '.join(SCENARIOS)}")
    results = []
    for name in names:
        print(f"bench: {name} ...", flush=True)
        r = SCENARIOS[name](args.runs)
        print(f"  {r['a']}: {fmt(r['median_a'])}   {r['b']}: {fmt(r['median_b'])}   ratio {r['ratio']:.1f}x")
        results.append(r)
    with open(args.out, "w") as f:
        f.write("# Benchmark results\n\n")
        f.write(f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC\n")
        f.write(f"- machine: {machine()}\n")
        f.write("- method: A and B alternate, medians of the runs; ratio = B / A (higher: collate-run faster)\n")
        f.write("- command: `bench/run.sh`\n\n")
        f.write("| scenario | A | median A | B | median B | B / A | runs |\n|---|---|---|---|---|---|---|\n")
        for r in results:
            f.write(
                f"| {r['name']} | `{r['a']}` | {fmt(r['median_a'])} | `{r['b']}` | {fmt(r['median_b'])} "
                f"| {r['ratio']:.1f}x | {r['runs']} |\n"
            )
    print(f"bench: wrote {os.path.relpath(args.out, ROOT)}")


if __name__ == "__main__":
    main()
