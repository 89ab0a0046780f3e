-- Keys, balances and orders. Money is stored as whole units of 0.00001; times as milliseconds
-- since the Unix epoch, always taken from the database's clock. Every integer is BIGINT so
-- rows decode the same way as on SQLite.

CREATE TABLE api_keys (
    id          BIGSERIAL PRIMARY KEY,
    key_hash    TEXT   NOT NULL UNIQUE,
    balance     BIGINT NOT NULL,
    created_at  BIGINT NOT NULL,
    revoked_at  BIGINT
);

-- The order row is also the worker's job: phase, lease and schedule live on it.
CREATE TABLE orders (
    id              BIGSERIAL PRIMARY KEY,
    key_id          BIGINT NOT NULL REFERENCES api_keys (id),
    service_id      BIGINT NOT NULL,
    video_id        TEXT   NOT NULL,
    link            TEXT   NOT NULL,
    quantity        BIGINT NOT NULL,
    charge          BIGINT NOT NULL,
    refund          BIGINT NOT NULL DEFAULT 0,
    status          TEXT   NOT NULL,
    phase           TEXT   NOT NULL,
    start_count     BIGINT,
    last_count      BIGINT,
    remains         BIGINT NOT NULL,
    provider_order  TEXT,
    attempts        BIGINT NOT NULL DEFAULT 0,
    checks          BIGINT NOT NULL DEFAULT 0,
    claim           BIGINT NOT NULL DEFAULT 0,
    lease_owner     TEXT,
    lease_until     BIGINT,
    next_run_at     BIGINT NOT NULL,
    deadline_at     BIGINT,
    last_error      TEXT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);

CREATE INDEX orders_by_key ON orders (key_id, id);
CREATE INDEX orders_due ON orders (next_run_at) WHERE phase <> 'done';
-- Finds the order at the head of each video's queue.
CREATE INDEX orders_open_by_video ON orders (video_id, id) WHERE phase <> 'done';
