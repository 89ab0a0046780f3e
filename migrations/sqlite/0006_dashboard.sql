-- What the operator's dashboard shows beyond the order row itself.

-- The provider's service an order was placed under (the catalogue may change later), when the
-- provider reported it done, when verification saw the target count, and how many calls to
-- the provider failed for it. Orders placed before this migration have none of these.
ALTER TABLE orders ADD COLUMN upstream_service INTEGER;
ALTER TABLE orders ADD COLUMN provider_done_at INTEGER;
ALTER TABLE orders ADD COLUMN target_seen_at INTEGER;
ALTER TABLE orders ADD COLUMN provider_failures INTEGER NOT NULL DEFAULT 0;

-- The play count read at `add`, kept on the order row (no extra row or round trip per order)
-- and shown as the first reading of the order's history.
ALTER TABLE orders ADD COLUMN add_count INTEGER;

-- Play-count readings and provider calls, written in the same transaction as the worker's save
-- that acts on them. A plain rowid table:
-- it is only appended to and read by order.
CREATE TABLE order_activity (
    id        INTEGER PRIMARY KEY,
    order_id  INTEGER NOT NULL REFERENCES orders (id),
    at        INTEGER NOT NULL,
    kind      TEXT    NOT NULL,
    outcome   TEXT    NOT NULL,
    count     INTEGER,
    detail    TEXT
);
CREATE INDEX order_activity_by_order ON order_activity (order_id, id);

-- The dashboard's order list, newest first, filtered by status or by video (by key uses
-- orders_by_key); open orders per key. (The latest orders placed with a provider are read
-- from the table itself backwards by id: SQLite keeps rows in id order, so an index of placed
-- ids would add nothing.)
CREATE INDEX orders_by_status ON orders (status, id);
CREATE INDEX orders_by_video ON orders (video_id, id);
CREATE INDEX orders_open_by_key ON orders (key_id, status) WHERE phase <> 'done';

-- Running totals per key, so that the keys page reads no ledger and counts no ended orders.
-- Charges and refunds move in the same statements as the balance. Ended orders are counted by
-- a trigger, like the status history, so no code path can end an order uncounted; the counts
-- live in rows of their own, spread over 16 shards by order id, because a count on the key's
-- own row made every order's end wait for the key's `add`s (and each other) on that one row.
ALTER TABLE api_keys ADD COLUMN charged INTEGER NOT NULL DEFAULT 0;
ALTER TABLE api_keys ADD COLUMN refunded INTEGER NOT NULL DEFAULT 0;

UPDATE api_keys SET
    charged = COALESCE((SELECT -SUM(amount) FROM ledger
                        WHERE ledger.key_id = api_keys.id AND kind = 'charge'), 0),
    refunded = COALESCE((SELECT SUM(amount) FROM ledger
                         WHERE ledger.key_id = api_keys.id AND kind = 'refund'), 0);

CREATE TABLE key_order_counts (
    key_id  INTEGER NOT NULL REFERENCES api_keys (id),
    status  TEXT   NOT NULL,
    shard   INTEGER NOT NULL,
    n       INTEGER NOT NULL,
    PRIMARY KEY (key_id, status, shard)
);

INSERT INTO key_order_counts (key_id, status, shard, n)
SELECT key_id, status, id % 16, COUNT(*) FROM orders
WHERE kind IN ('order', 'drip') AND phase = 'done'
GROUP BY key_id, status, id % 16;

CREATE TRIGGER order_ended_counted AFTER UPDATE OF phase ON orders
WHEN OLD.phase <> 'done' AND NEW.phase = 'done' AND NEW.kind IN ('order', 'drip')
BEGIN
    INSERT INTO key_order_counts (key_id, status, shard, n)
    VALUES (NEW.key_id, NEW.status, NEW.id % 16, 1)
    ON CONFLICT (key_id, status, shard) DO UPDATE SET n = n + 1;
END;
