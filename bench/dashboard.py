#!/usr/bin/env python3
"""Times the operator dashboard's pages with 1,000,000 orders stored, on SQLite and PostgreSQL.

Fills a fresh SQLite file and a fresh PostgreSQL database with a million orders of 100 keys
(mostly ended: Completed, Partial, Canceled; a few open), two activity rows and the status
history row per order, then starts `playpanel serve --no-worker` on each with an operator
token and times every page with curl: the median of five requests (and the first request, for
the providers page, whose sums are then reused for five seconds). Prints the query plans too.

    cargo build --release
    python3 bench/dashboard.py [--orders 1000000] [--binary target/release/playpanel]

Needs `psql` and the local PostgreSQL (user postgres); everything stays on 127.0.0.1.
"""

import argparse
import os
import re
import shutil
import sqlite3
import statistics
import subprocess
import tempfile
import time

TOKEN = "dashboard-bench-token-0123456789"
KEYS = 100
PG_ADMIN = "postgres://postgres@127.0.0.1:5432/postgres"
PG_NAME = "playpanel_dashboard_bench"

# One order in 1000 is open (Pending or In progress); the rest ended: 60% Completed, 30%
# Partial, 10% Canceled. Service 2's orders are the short ones.
ORDER_SELECT = """
SELECT {key}, {service}, CAST(7000000000000000000 + (n % 300000) AS TEXT), 'x', 1000,
       90000, {status}, {phase}, 100000 + n, {last}, {remains}, {upstream},
       {done_at}, {seen_at}, (n % 97 = 0), 0, 1796000000000 + n * 1000,
       1796000000000 + n * 1000 + 60000
"""
COLUMNS = ("key_id, service_id, video_id, link, quantity, charge, status, phase, start_count, "
           "last_count, remains, upstream_service, provider_done_at, target_seen_at, "
           "provider_failures, next_run_at, created_at, updated_at")
CASES = dict(
    key="1 + n % 100",
    service="CASE WHEN n % 10 < 6 THEN 1 WHEN n % 10 < 9 THEN 2 ELSE 3 END",
    status="CASE WHEN n % 1000 = 0 THEN 'Pending' WHEN n % 1000 = 1 THEN 'In progress' "
           "WHEN n % 10 < 6 THEN 'Completed' WHEN n % 10 < 9 THEN 'Partial' ELSE 'Canceled' END",
    phase="CASE WHEN n % 1000 = 0 THEN 'start' WHEN n % 1000 = 1 THEN 'deliver' ELSE 'done' END",
    last="CASE WHEN n % 10 < 6 THEN 100000 + n + 1000 WHEN n % 10 < 9 THEN 100000 + n + 800 "
         "ELSE NULL END",
    remains="CASE WHEN n % 10 < 6 THEN 0 WHEN n % 10 < 9 THEN 200 ELSE 1000 END",
    upstream="CASE WHEN n % 10 < 6 THEN 1 WHEN n % 10 < 9 THEN 2 ELSE 99 END",
    done_at="CASE WHEN n % 10 < 9 THEN 1796000000000 + n * 1000 + 30000 ELSE NULL END",
    seen_at="CASE WHEN n % 10 < 6 THEN 1796000000000 + n * 1000 + 31000 + n % 5000 ELSE NULL END",
)


def sh(*args, **kw):
    return subprocess.run(args, check=True, capture_output=True, text=True, **kw).stdout


def psql(url, sql):
    return sh("psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", url, "-c", sql)


def fill_sqlite(path, n):
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=OFF")
    for k in range(KEYS):
        db.execute("INSERT INTO api_keys (key_hash, balance, created_at) VALUES (?, 100000000, 0)",
                   (f"bench-{k}",))
    select = ORDER_SELECT.format(**CASES)
    db.execute(f"WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < {n}) "
               f"INSERT INTO orders ({COLUMNS}) {select} FROM g")
    fill_rest(db.execute)
    db.commit()
    db.execute("ANALYZE")
    db.commit()
    db.close()


def fill_rest(execute):
    execute("INSERT INTO order_activity (order_id, at, kind, outcome, count, detail) "
            "SELECT id, created_at, 'reading', 'ok', start_count, 'read at add' FROM orders")
    execute("INSERT INTO order_activity (order_id, at, kind, outcome, count, detail) "
            "SELECT id, created_at + 10, 'placement', 'placed', NULL, CAST(id AS TEXT) FROM orders")
    execute("UPDATE api_keys SET "
            "charged = (SELECT COALESCE(SUM(charge), 0) FROM orders WHERE key_id = api_keys.id)")
    execute("INSERT INTO key_order_counts (key_id, status, shard, n) "
            "SELECT key_id, status, id % 16, COUNT(*) FROM orders WHERE phase = 'done' "
            "GROUP BY key_id, status, id % 16")


def fill_postgres(url, n):
    keys = ", ".join(f"('bench-{k}', 100000000, 0)" for k in range(KEYS))
    psql(url, f"INSERT INTO api_keys (key_hash, balance, created_at) VALUES {keys}")
    select = ORDER_SELECT.format(**CASES).replace("(n % 97 = 0)", "(n % 97 = 0)::int")
    psql(url, f"INSERT INTO orders ({COLUMNS}) {select} FROM generate_series(1, {n}) AS n")
    statements = []
    fill_rest(statements.append)
    for sql in statements:
        psql(url, sql)
    psql(url, "VACUUM ANALYZE")


def serve(binary, database, workdir):
    process = subprocess.Popen(
        [binary, "serve", "--no-worker", "--sandbox", "--listen", "127.0.0.1:0",
         "--database", database],
        env={**os.environ, "PLAYPANEL_ADMIN_TOKEN": TOKEN, "RUST_LOG": "warn"},
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=workdir)
    for line in process.stdout:
        m = re.match(r"operator dashboard at (http://\S+)/admin", line)
        if m:
            return process, m.group(1)
    raise SystemExit("the server did not start")


def timed(url):
    out = sh("curl", "-s", "-o", "/dev/null", "-w", "%{http_code} %{time_total}",
             "-H", f"Authorization: Bearer {TOKEN}", url)
    code, seconds = out.split()
    if code != "200":
        raise SystemExit(f"{url} answered {code}")
    return float(seconds) * 1000


PAGES = [
    ("orders, newest 50", "/admin"),
    ("orders, status Pending (1 in 1000)", "/admin?status=Pending"),
    ("orders, status Partial", "/admin?status=Partial"),
    ("orders, one key", "/admin?key=42"),
    ("orders, one video", "/admin?video=7000000000000123456"),
    ("orders, key and status Canceled", "/admin?key=42&status=Canceled"),
    ("orders, page at id 500,000", "/admin?before=500000"),
    ("one order", "/admin/orders/765432"),
    ("keys, first 100", "/admin/keys"),
]


def time_pages(base):
    rows = []
    for name, path in PAGES:
        timed(base + path)  # warm the connection pool and the page cache
        rows.append((name, path, statistics.median(timed(base + path) for _ in range(5))))
    time.sleep(5.5)  # let the providers cache expire
    first = timed(base + "/admin/providers")
    cached = statistics.median(timed(base + "/admin/providers") for _ in range(5))
    rows.append(("providers, sums computed", "/admin/providers", first))
    rows.append(("providers, sums reused", "/admin/providers", cached))
    return rows


PLANS = {
    "orders, newest": "SELECT id FROM orders ORDER BY id DESC LIMIT 51",
    "orders by status": "SELECT id FROM orders WHERE status = 'Pending' ORDER BY id DESC LIMIT 51",
    "orders by key": "SELECT id FROM orders WHERE key_id = 42 ORDER BY id DESC LIMIT 51",
    "orders by video": "SELECT id FROM orders WHERE video_id = '7000000000000123456' "
                       "ORDER BY id DESC LIMIT 51",
    "activity": "SELECT at FROM order_activity WHERE order_id = 765432 ORDER BY id",
    "placed window": "SELECT service_id, remains FROM orders WHERE upstream_service IS NOT NULL "
                     "ORDER BY id DESC LIMIT 10000",
    "open per key": "SELECT key_id, status, COUNT(*) FROM orders WHERE phase <> 'done' "
                    "AND key_id >= 1 AND key_id <= 100 AND kind IN ('order', 'drip') "
                    "GROUP BY key_id, status",
}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--orders", type=int, default=1_000_000)
    parser.add_argument("--binary", default=os.path.join(
        os.environ.get("CARGO_TARGET_DIR", "target"), "release", "playpanel"))
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="playpanel-dashboard-bench-")
    results = {}
    try:
        path = os.path.join(work, "bench.db")
        sh(args.binary, "migrate", "--database", f"sqlite://{path}")
        started = time.time()
        fill_sqlite(path, args.orders)
        print(f"sqlite: {args.orders:,} orders filled in {time.time() - started:.0f} s")
        db = sqlite3.connect(path)
        for name, sql in PLANS.items():
            plan = "; ".join(r[3] for r in db.execute("EXPLAIN QUERY PLAN " + sql))
            print(f"  plan, {name}: {plan}")
        db.close()
        process, base = serve(args.binary, f"sqlite://{path}", work)
        try:
            results["SQLite"] = time_pages(base)
        finally:
            process.terminate()
            process.wait()

        psql(PG_ADMIN, f"DROP DATABASE IF EXISTS {PG_NAME} WITH (FORCE)")
        psql(PG_ADMIN, f"CREATE DATABASE {PG_NAME}")
        url = PG_ADMIN.rsplit("/", 1)[0] + "/" + PG_NAME
        sh(args.binary, "migrate", "--database", url)
        started = time.time()
        fill_postgres(url, args.orders)
        print(f"postgres: {args.orders:,} orders filled in {time.time() - started:.0f} s")
        for name, sql in PLANS.items():
            plan = " / ".join(line.strip() for line in psql(url, "EXPLAIN " + sql).splitlines()
                              if "cost" in line)
            print(f"  plan, {name}: {plan}")
        process, base = serve(args.binary, url, work)
        try:
            results["PostgreSQL"] = time_pages(base)
        finally:
            process.terminate()
            process.wait()
        psql(PG_ADMIN, f"DROP DATABASE IF EXISTS {PG_NAME} WITH (FORCE)")
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"\n| page ({args.orders:,} orders) | path | SQLite | PostgreSQL |")
    print("| --- | --- | --- | --- |")
    for i, (name, path, ms) in enumerate(results["SQLite"]):
        pg = results["PostgreSQL"][i][2]
        print(f"| {name} | `{path}` | {ms:.1f} ms | {pg:.1f} ms |")


if __name__ == "__main__":
    main()
