-- Keys, balances and orders. Money is stored as whole units of 0.00001; times as milliseconds
-- since the Unix epoch, always taken from the database's clock.

CREATE TABLE api_keys (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    key_hash    TEXT    NOT NULL UNIQUE,
    balance     INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER
);

-- The order row is also the worker's job: phase, lease and schedule live on it.
CREATE TABLE orders (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    key_id          INTEGER NOT NULL REFERENCES api_keys (id),
    service_id      INTEGER NOT NULL,
    video_id        TEXT    NOT NULL,
    link            TEXT    NOT NULL,
    quantity        INTEGER NOT NULL,
    charge          INTEGER NOT NULL,
    refund          INTEGER NOT NULL DEFAULT 0,
    status          TEXT    NOT NULL,
    phase           TEXT    NOT NULL,
    start_count     INTEGER,
    last_count      INTEGER,
    remains         INTEGER NOT NULL,
    provider_order  TEXT,
    attempts        INTEGER NOT NULL DEFAULT 0,
    checks          INTEGER NOT NULL DEFAULT 0,
    claim           INTEGER NOT NULL DEFAULT 0,
    lease_owner     TEXT,
    lease_until     INTEGER,
    next_run_at     INTEGER NOT NULL,
    deadline_at     INTEGER,
    last_error      TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);

CREATE INDEX orders_by_key ON orders (key_id, id);
CREATE INDEX orders_due ON orders (next_run_at) WHERE phase <> 'done';
-- At most one open order per video: verification counts views on the video, so two open
-- orders would each count the other's deliveries.
CREATE UNIQUE INDEX orders_one_open_per_video ON orders (video_id) WHERE phase <> 'done';
