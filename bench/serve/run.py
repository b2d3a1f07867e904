"""The feature-server benchmark: amora's server and `feast serve` (1 worker, and one
per CPU) read the same materialized anchor data from the same private Redis, under
wrk: 1 and 100 entities x 15 features, concurrency 1 and 32. Reports requests/s,
p50/p99/p99.9, server CPU per request (and Redis's), server memory, and ratios.

Usage: python run.py AMORA_BIN DATA_DIR WORK_DIR REDIS_PORT [--duration S] [--skip-feast]
"""
import argparse
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "historical"))
from peers import FEATURES  # noqa: E402
from run import feast_repo_on_redis  # noqa: E402

START, END = "2025-01-01T00:00:00", "2025-02-01T00:00:00"
TICK = os.sysconf("SC_CLK_TCK")

LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = io.open("%s"):read("*a")
done = function(summary, latency, requests)
  io.write(string.format('{"requests": %%d, "errors": %%d, "non2xx": %%d, "p50": %%d, "p99": %%d, "p999": %%d, "seconds": %%f}\\n',
    summary.requests, summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status, latency:percentile(50), latency:percentile(99), latency:percentile(99.9), summary.duration / 1e6))
end
"""


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def cpu_by_pid(pids):
    out = {}
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                parts = f.read().rsplit(")", 1)[1].split()
            out[pid] = (int(parts[11]) + int(parts[12])) / TICK
        except OSError:
            pass
    return out


def cpu_delta(before, after):
    """CPU seconds used between two samples by the processes alive at the second
    (gunicorn replaces Feast's workers every --max-requests: a replaced worker's
    time is lost, so Feast's figure is a lower bound)."""
    return sum(t - before.get(p, 0.0) for p, t in after.items())


def children(pid):
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    pids = [int(pid)]
    for c in out:
        pids += children(int(c))
    return pids


def rss_mb(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                m = re.search(r"VmRSS:\s+(\d+) kB", f.read())
            total += int(m.group(1)) / 1024 if m else 0
        except OSError:
            pass
    return total


def wait_up(port, body, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            req = urllib.request.Request(f"http://127.0.0.1:{port}/get-online-features", data=body.encode(), headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=5) as r:
                return json.loads(r.read())
        except Exception:
            time.sleep(0.2)
    raise SystemExit(f"server on {port} did not answer")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("amora")
    p.add_argument("data")
    p.add_argument("work")
    p.add_argument("redis_port", type=int)
    p.add_argument("--duration", type=int, default=20)
    p.add_argument("--skip-feast", action="store_true")
    args = p.parse_args()
    data, work = os.path.abspath(args.data), os.path.abspath(args.work)
    repo, amora_project = feast_repo_on_redis(work, data, args.redis_port)
    subprocess.run(["redis-cli", "-p", str(args.redis_port), "FLUSHALL"], check=True, capture_output=True)
    subprocess.run([args.amora, "--project-dir", amora_project, "feature-store", "materialize", START, END, "--quiet"], check=True)
    redis_pid = int(open(os.path.join(work, "redis.pid")).read().strip())
    import pyarrow.parquet as pq
    ids = [int(x) for x in pq.read_table(f"{data}/online_ids.parquet").column(0).to_pylist()]
    bodies = {}
    for n in (1, 100):
        path = os.path.join(work, f"body_{n}.json")
        with open(path, "w") as f:
            json.dump({"features": FEATURES, "entities": {"user_id": ids[:n]}}, f)
        bodies[n] = path
    servers = {"amora": None}
    if not args.skip_feast:
        servers["feast -w 1"] = 1
        servers[f"feast -w {os.cpu_count()}"] = os.cpu_count()
    results = {}
    answers = {}
    feast = os.path.join(os.path.dirname(sys.executable), "feast")
    for name, workers in servers.items():
        port = free_port()
        if workers is None:
            cmd = [args.amora, "--project-dir", amora_project, "feature-store", "serve", "--port", str(port)]
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        else:
            cmd = [feast, "serve", "-h", "127.0.0.1", "-p", str(port), "-w", str(workers), "--no-access-log"]
            proc = subprocess.Popen(cmd, cwd=repo, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            answers[name] = wait_up(port, open(bodies[100]).read())
            for n in (1, 100):
                script = os.path.join(work, f"wrk_{n}.lua")
                with open(script, "w") as f:
                    f.write(LUA % bodies[n])
                for c in (1, 32):
                    # warm-up, then the measured run
                    subprocess.run(["wrk", "-t1", "-c", str(c), "-d2s", "-s", script, f"http://127.0.0.1:{port}/get-online-features"], capture_output=True)
                    cpu0, rcpu0 = cpu_by_pid(children(proc.pid)), cpu_by_pid([redis_pid])
                    out = subprocess.run(["wrk", "-t", str(min(c, 2)), "-c", str(c), "-d", f"{args.duration}s", "-s", script,
                                          f"http://127.0.0.1:{port}/get-online-features"], capture_output=True, text=True).stdout
                    cpu1, rcpu1 = cpu_by_pid(children(proc.pid)), cpu_by_pid([redis_pid])
                    r = json.loads(out.strip().splitlines()[-1])
                    r["rps"] = r["requests"] / r["seconds"]
                    r["cpu_us"] = cpu_delta(cpu0, cpu1) / max(r["requests"], 1) * 1e6
                    r["redis_cpu_us"] = cpu_delta(rcpu0, rcpu1) / max(r["requests"], 1) * 1e6
                    r["rss_mb"] = rss_mb(children(proc.pid))
                    results[(name, n, c)] = r
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    # Both answer the same values (feature order may differ: map by name).
    def by_name(a):
        return {n: r["values"] for n, r in zip(a["metadata"]["feature_names"], a["results"])}
    if len(answers) > 1:
        ref = by_name(answers["amora"])
        for k, a in answers.items():
            same = by_name(a) == ref
            print(f"  {k}: same values as amora for 100 entities: {same}")
    print(f"feature server, anchor data in Redis, 15 features; wrk {args.duration}s per cell")
    print(f"  {'server':14} {'entities':>8} {'conc':>4} {'req/s':>9} {'p50 us':>8} {'p99 us':>8} {'p99.9 us':>9} {'cpu us/req':>10} {'redis us/req':>12} {'RSS MB':>7} {'errors':>6}")
    for (name, n, c), r in results.items():
        print(f"  {name:14} {n:>8} {c:>4} {r['rps']:9.0f} {r['p50']:8d} {r['p99']:8d} {r['p999']:9d} {r['cpu_us']:10.1f} {r['redis_cpu_us']:12.1f} {r['rss_mb']:7.1f} {r['errors'] + r['non2xx']:>6}")
    for n in (1, 100):
        for c in (1, 32):
            a = results[("amora", n, c)]
            for name in servers:
                if name != "amora":
                    f = results[(name, n, c)]
                    print(f"  {n} entities, c={c}: amora/{name} throughput {a['rps'] / f['rps']:.1f}x, p99 {a['p99']}us vs {f['p99']}us")
    print("goals: p99 <= 1000 us (1 entity, c=1), <= 3000 us (100 entities); >= 30x Feast's throughput; server CPU/request < Redis's")


if __name__ == "__main__":
    main()
