#!/usr/bin/env python3
"""Benchmarks playpanel as users meet it and writes bench/RESULTS.md.

    python3 bench/run.py [--quick]

Builds the release binary, then for SQLite and for PostgreSQL (this machine's, at
PLAYPANEL_BENCH_POSTGRES, default postgres://postgres@127.0.0.1:5432/postgres) starts the
sandbox and `playpanel serve`, and measures with wrk (Debian's `wrk`, installed if missing):

  1. `status` of one order, beside `/healthz` (a fixed answer) on the same server;
  2. `status` with 100 ids, in orders per second, beside scenario 1;
  3. `add` with TikTok pages answering after 200 ms, 1,000 clients at once, beside the 200 ms
     floor; and 1,000 adds for one video, counting the page fetches they cause;
  4. 10,000 orders from `add` to their end through the sandbox's fast provider: orders per
     second, database writes per order (PostgreSQL's counters), peak memory of the server;
  5. `status` p99 with 1,000,000 orders in the database beside 1,000 orders.

Scenario 6, the page reader on the saved real page, is `cargo bench --bench page_reader`.
Every figure is printed beside its reference from the same run: this machine is shared.
"""

import concurrent.futures
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "bench")
QUICK = "--quick" in sys.argv
DURATION = "3s" if QUICK else "10s"
E2E_ORDERS = 1000 if QUICK else 10000
BIG = 100_000 if QUICK else 1_000_000
PG_ADMIN = os.environ.get("PLAYPANEL_BENCH_POSTGRES", "postgres://postgres@127.0.0.1:5432/postgres")


def sh(*args, **kw):
    return subprocess.run(args, check=True, capture_output=True, text=True, **kw).stdout


def ensure_tools():
    if shutil.which("wrk") is None:
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True)
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    return os.path.join(target, "release", "playpanel")


class Server:
    """A playpanel (or sandbox) process and what it printed on start."""

    def __init__(self, binary, args, wanted):
        self.proc = subprocess.Popen([binary] + args, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True)
        self.found = []
        for prefix in wanted:
            while True:
                line = self.proc.stdout.readline()
                if not line:
                    raise RuntimeError(f"{args[0]} exited early")
                if line.startswith(prefix):
                    self.found.append(line[len(prefix):].strip())
                    break

    def peak_memory_mb(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self):
        self.proc.kill()
        self.proc.wait()


def post(url, fields, timeout=60):
    data = urllib.parse.urlencode(fields).encode()
    with urllib.request.urlopen(url, data=data, timeout=timeout) as r:
        return json.loads(r.read())


def get(url):
    with urllib.request.urlopen(url, timeout=60) as r:
        return json.loads(r.read())


def wrk(url, connections, lua=None, env=None, duration=None):
    """Runs wrk and returns (requests per second, p50 ms, p99 ms, non-2xx or errors)."""
    args = ["wrk", "-t2", f"-c{connections}", f"-d{duration or DURATION}", "--latency",
            "--timeout", "30s"]
    if lua:
        args += ["-s", os.path.join(BENCH, lua)]
    out = subprocess.run(args + [url], check=True, capture_output=True, text=True,
                         env={**os.environ, **(env or {})}).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))

    def ms(label):
        m = re.search(rf"\s{label}%\s+([\d.]+)(us|ms|s)\b", out)
        value, unit = float(m.group(1)), m.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: .*", out)
    return rps, ms("50"), ms("99"), (int(bad.group(1)) if bad else 0), errors.group(0) if errors else ""


class Backend:
    def __init__(self, name):
        self.name = name
        self.tmp = tempfile.mkdtemp(prefix="playpanel-bench-")
        if name == "sqlite":
            self.url = f"sqlite://{self.tmp}/bench.db"
            self.pg_name = None
        else:
            self.pg_name = f"playpanel_bench_{os.getpid()}"
            self.psql(f"DROP DATABASE IF EXISTS {self.pg_name}")
            self.psql(f"CREATE DATABASE {self.pg_name}")
            self.url = PG_ADMIN.rsplit("/", 1)[0] + "/" + self.pg_name

    def psql(self, sql, db=None):
        url = PG_ADMIN if db is None else self.url
        return sh("psql", url, "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-c", sql).strip()

    def sql(self, statement):
        if self.pg_name:
            return self.psql(statement, db=True)
        import sqlite3
        conn = sqlite3.connect(self.url[len("sqlite://"):], timeout=60)
        with conn:
            rows = conn.execute(statement).fetchall()
        conn.close()
        return rows

    def writes(self):
        """Committed transactions and rows written so far (PostgreSQL only)."""
        if not self.pg_name:
            return None
        row = self.psql("SELECT xact_commit, tup_inserted + tup_updated + tup_deleted "
                        f"FROM pg_stat_database WHERE datname = '{self.pg_name}'")
        return tuple(int(x) for x in row.split("|"))

    def close(self):
        if self.pg_name:
            self.psql(f"DROP DATABASE IF EXISTS {self.pg_name} WITH (FORCE)")
        shutil.rmtree(self.tmp, ignore_errors=True)


def wait_terminal(api, key, ids, limit):
    deadline = time.time() + limit
    pending = list(ids)
    while pending:
        if time.time() > deadline:
            raise RuntimeError(f"{len(pending)} orders still open")
        still = []
        for i in range(0, len(pending), 100):
            chunk = pending[i:i + 100]
            answer = post(api, {"key": key, "action": "status", "orders": ",".join(chunk)})
            still += [o for o in chunk
                      if answer[o].get("status") not in ("Completed", "Partial", "Canceled")]
        pending = still
        if pending:
            time.sleep(0.2)


def add_many(api, key, links, workers=32):
    def one(link):
        return post(api, {"key": key, "action": "add", "service": "1", "link": link,
                          "quantity": "100"})["order"]
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        return list(pool.map(one, links))


def run_backend(binary, name, rows):
    backend = Backend(name)
    procs = []
    try:
        sandbox = Server(binary, ["sandbox", "--listen", "127.0.0.1:0", "--views-per-second", "0"],
                         ["sandbox listening on "])
        procs.append(sandbox)
        sandbox_url = sandbox.found[0] + "/"
        common = ["--database", backend.url, "--tiktok-rate", "1000000", "--key-rate", "0",
                  "--progress-interval", "0.05", "--verify-grace", "0"]
        server = Server(binary, ["serve", "--listen", "127.0.0.1:0", "--sandbox-url", sandbox_url]
                        + common, ["playpanel listening on "])
        procs.append(server)
        api = server.found[0]
        root = api[: -len("/api/v2")]
        key = sh(binary, "keys", "create", "--database", backend.url,
                 "--balance", "100000000").strip().splitlines()[-1]

        # 1 and 2: status reads.
        ids = add_many(api, key, [f"https://www.tiktok.com/@b/video/{1000 + n}" for n in range(1000)])
        wait_terminal(api, key, ids, 300)
        one = f"key={key}&action=status&order={ids[0]}"
        hundred = f"key={key}&action=status&orders={','.join(ids[:100])}"
        ref = wrk(f"{root}/healthz", 64)
        s1 = wrk(api, 64, "status.lua", {"BODY": one})
        s2 = wrk(api, 64, "status.lua", {"BODY": hundred})
        rows.append((name, "1", "healthz (reference)", f"{ref[0]:,.0f} req/s", f"p50 {ref[1]:.2f} ms, p99 {ref[2]:.2f} ms", ""))
        rows.append((name, "1", "status, one order", f"{s1[0]:,.0f} req/s",
                     f"p50 {s1[1]:.2f} ms, p99 {s1[2]:.2f} ms", f"{s1[0] / ref[0]:.0%} of reference"))
        rows.append((name, "2", "status, 100 orders", f"{s2[0] * 100:,.0f} orders/s",
                     f"p50 {s2[1]:.2f} ms, p99 {s2[2]:.2f} ms", f"{s2[0] * 100 / s1[0]:.1f}x scenario 1"))

        # 5: status p99 with many orders beside 1,000.
        next_id = int(backend.sql("SELECT max(id) FROM orders")[0][0] if not backend.pg_name
                      else backend.sql("SELECT max(id) FROM orders")) + 1
        fill = BIG - 1000
        if backend.pg_name:
            backend.sql(
                "INSERT INTO orders (key_id, service_id, video_id, link, quantity, charge, status, "
                "phase, start_count, remains, next_run_at, created_at, updated_at) "
                f"SELECT 1, 1, (900000000 + g)::text, 'x', 100, 9000, 'Completed', 'done', 5, 0, 0, 0, 0 "
                f"FROM generate_series(1, {fill}) AS g")
            backend.sql("ANALYZE orders")
        else:
            backend.sql(
                "WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < "
                f"{fill}) INSERT INTO orders (key_id, service_id, video_id, link, quantity, charge, "
                "status, phase, start_count, remains, next_run_at, created_at, updated_at) "
                "SELECT 1, 1, CAST(900000000 + n AS TEXT), 'x', 100, 9000, 'Completed', 'done', 5, "
                "0, 0, 0, 0 FROM g")
        key_id = backend.sql(f"SELECT id FROM api_keys ORDER BY id DESC LIMIT 1")
        key_id = key_id[0][0] if not backend.pg_name else key_id
        backend.sql(f"UPDATE orders SET key_id = {key_id} WHERE id >= {next_id}")
        last = str(next_id + fill - 1)
        big = wrk(api, 64, "status.lua", {"BODY": f"key={key}&action=status&order={last}"})
        rows.append((name, "5", f"status, one order, {BIG:,} orders stored", f"{big[0]:,.0f} req/s",
                     f"p50 {big[1]:.2f} ms, p99 {big[2]:.2f} ms",
                     f"p99 {big[2] / s1[2]:.2f}x of 1,000 orders"))

        # 4: end to end.
        before = backend.writes()
        start = time.time()
        links = [f"https://www.tiktok.com/@e/video/{2_000_000_000 + n}" for n in range(E2E_ORDERS)]
        e2e = add_many(api, key, links)
        wait_terminal(api, key, e2e, 900)
        elapsed = time.time() - start
        after = backend.writes()
        writes = ""
        if before and after:
            writes = (f"{(after[0] - before[0]) / E2E_ORDERS:.1f} commits and "
                      f"{(after[1] - before[1]) / E2E_ORDERS:.1f} rows written per order")
        rows.append((name, "4", f"{E2E_ORDERS:,} orders, add to Completed",
                     f"{E2E_ORDERS / elapsed:,.0f} orders/s",
                     f"peak RSS {server.peak_memory_mb():.0f} MB", writes or "writes: PostgreSQL only"))
        server.stop()
        sandbox.stop()

        # 3: adds while TikTok pages take 200 ms.
        slow = Server(binary, ["sandbox", "--listen", "127.0.0.1:0", "--views-per-second", "0",
                               "--page-delay-ms", "200"], ["sandbox listening on "])
        procs.append(slow)
        slow_url = slow.found[0] + "/"
        server = Server(binary, ["serve", "--no-worker", "--listen", "127.0.0.1:0",
                                 "--sandbox-url", slow_url] + common, ["playpanel listening on "])
        procs.append(server)
        api = server.found[0]
        s3 = wrk(api, 1000, "add.lua", {"KEY": key, "BASE": "3000000000"})
        rows.append((name, "3", "add, pages answer in 200 ms, 1,000 clients", f"{s3[0]:,.0f} req/s",
                     f"p50 {s3[1]:.0f} ms, p99 {s3[2]:.0f} ms",
                     f"p99 {s3[2] - 200:+.0f} ms from the 200 ms floor; {s3[3]} non-2xx {s3[4]}"))
        fetched = get(slow_url + "sandbox/stats")["page_requests"]
        same = ["https://www.tiktok.com/@s/video/4242424242"] * 1000
        add_many(api, key, same, workers=200)
        fetched = get(slow_url + "sandbox/stats")["page_requests"] - fetched
        rows.append((name, "3", "1,000 adds for one video", f"{fetched} page fetches", "", "target: 1"))
    finally:
        for p in procs:
            p.stop()
        backend.close()


def main():
    binary = ensure_tools()
    rows = []
    for name in ("sqlite", "postgres"):
        run_backend(binary, name, rows)
    machine = f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}"
    commit = sh("git", "-C", ROOT, "rev-parse", "--short", "HEAD").strip()
    header = "| backend | scenario | what | figure | latency / memory | beside its reference |"
    lines = [header, "| --- | --- | --- | --- | --- | --- |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    table = "\n".join(lines)
    print(table)
    with open(os.path.join(BENCH, "RESULTS.md"), "w") as f:
        f.write(f"# Benchmark results\n\nMeasured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} "
                f"on {machine}, commit {commit}, with `python3 bench/run.py"
                f"{' --quick' if QUICK else ''}`.\n\n{table}\n")


if __name__ == "__main__":
    main()
