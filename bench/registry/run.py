"""The registry benchmark: `amora feature-store plan` / `apply` beside `feast apply`
of the same definitions (2 and 1,000 feature views), in one run. Reports the median
wall time and peak memory (max RSS) of each command, and the ratios.

Usage: python run.py AMORA_BIN FEAST_BIN [--sizes 2,1000] [--repeat 5] [--feast-repeat 3]
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from measure import measure  # noqa: E402


def fresh_registry(root):
    shutil.rmtree(os.path.join(root, "data"), ignore_errors=True)


def run_size(n, amora_bin, feast_bin, repeat, feast_repeat, work):
    out = os.path.join(work, f"n{n}")
    subprocess.run([sys.executable, os.path.join(HERE, "gen_project.py"), str(n), out], check=True)
    a, f = os.path.join(out, "amora"), os.path.join(out, "feast")
    rows = {}

    def series(name, cmd, cwd, times, reset):
        samples = []
        for _ in range(times):
            if reset:
                fresh_registry(cwd)
            samples.append(measure(cmd, cwd)[:2])
        rows[name] = (statistics.median(s[0] for s in samples), max(s[1] for s in samples))

    series("amora plan (empty registry)", [amora_bin, "feature-store", "plan"], a, repeat, True)
    series("amora apply (empty registry)", [amora_bin, "feature-store", "apply"], a, repeat, True)
    series("amora plan (no change)", [amora_bin, "feature-store", "plan"], a, repeat, False)
    series("feast apply (empty registry)", [feast_bin, "apply"], f, feast_repeat, True)
    series("feast plan (no change)", [feast_bin, "plan"], f, 1, False)
    return rows


def main():
    p = argparse.ArgumentParser()
    p.add_argument("amora")
    p.add_argument("feast")
    p.add_argument("--sizes", default="2,1000")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--feast-repeat", type=int, default=3)
    args = p.parse_args()
    work = tempfile.mkdtemp(prefix="amora-bench-registry-")
    print(f"registry benchmark (median of {args.repeat} amora runs, {args.feast_repeat} feast apply runs; peak RSS)")
    for n in [int(s) for s in args.sizes.split(",")]:
        rows = run_size(n, os.path.abspath(args.amora), os.path.abspath(args.feast), args.repeat, args.feast_repeat, work)
        print(f"\n{n} feature views")
        print(f"  {'command':34} {'seconds':>9} {'peak MB':>9}")
        for name, (sec, mb) in rows.items():
            print(f"  {name:34} {sec:9.3f} {mb:9.1f}")
        fa = rows["feast apply (empty registry)"][0]
        aa = rows["amora apply (empty registry)"][0]
        fp = rows["feast plan (no change)"][0]
        ap = rows["amora plan (no change)"][0]
        print(f"  ratio apply amora/feast: {aa / fa:.4f}  ({fa / aa:.0f}x faster)")
        print(f"  ratio plan  amora/feast: {ap / fp:.4f}  ({fp / ap:.0f}x faster)")
        print(f"  ratio peak memory apply amora/feast: {rows['amora apply (empty registry)'][1] / rows['feast apply (empty registry)'][1]:.3f}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
