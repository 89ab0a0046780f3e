-- What the operator's dashboard shows beyond the order row itself.

-- The provider's service an order was placed under (the catalogue may change later), when the
-- provider reported it done, when verification saw the target count, and how many calls to
-- the provider failed for it. Orders placed before this migration have none of these.
ALTER TABLE orders ADD COLUMN upstream_service BIGINT;
ALTER TABLE orders ADD COLUMN provider_done_at BIGINT;
ALTER TABLE orders ADD COLUMN target_seen_at BIGINT;
ALTER TABLE orders ADD COLUMN provider_failures BIGINT NOT NULL DEFAULT 0;

-- The play count read at `add`, kept on the order row (no extra row or round trip per order)
-- and shown as the first reading of the order's history.
ALTER TABLE orders ADD COLUMN add_count BIGINT;

-- Play-count readings and provider calls, written in the same transaction as the worker's save
-- that acts on them.
CREATE TABLE order_activity (
    id        BIGSERIAL PRIMARY KEY,
    order_id  BIGINT NOT NULL REFERENCES orders (id),
    at        BIGINT NOT NULL,
    kind      TEXT   NOT NULL,
    outcome   TEXT   NOT NULL,
    count     BIGINT,
    detail    TEXT
);
CREATE INDEX order_activity_by_order ON order_activity (order_id, id);

-- The dashboard's order list, newest first, filtered by status or by video (by key uses
-- orders_by_key); the latest orders placed with a provider; open orders per key.
CREATE INDEX orders_by_status ON orders (status, id);
CREATE INDEX orders_by_video ON orders (video_id, id);
CREATE INDEX orders_placed ON orders (id) WHERE upstream_service IS NOT NULL;
CREATE INDEX orders_open_by_key ON orders (key_id, status) WHERE phase <> 'done';

-- Running totals per key, so that the keys page reads no ledger and counts no ended orders.
-- Charges and refunds move in the same statements as the balance. Ended orders are counted by
-- a trigger, like the status history, so no code path can end an order uncounted; the counts
-- live in rows of their own, spread over 16 shards by order id, because a count on the key's
-- own row made every order's end wait for the key's `add`s (and each other) on that one row.
ALTER TABLE api_keys ADD COLUMN charged BIGINT NOT NULL DEFAULT 0;
ALTER TABLE api_keys ADD COLUMN refunded BIGINT NOT NULL DEFAULT 0;

UPDATE api_keys SET
    charged = COALESCE((SELECT -SUM(amount) FROM ledger
                        WHERE ledger.key_id = api_keys.id AND kind = 'charge'), 0),
    refunded = COALESCE((SELECT SUM(amount) FROM ledger
                         WHERE ledger.key_id = api_keys.id AND kind = 'refund'), 0);

CREATE TABLE key_order_counts (
    key_id  BIGINT NOT NULL REFERENCES api_keys (id),
    status  TEXT   NOT NULL,
    shard   BIGINT NOT NULL,
    n       BIGINT NOT NULL,
    PRIMARY KEY (key_id, status, shard)
);

INSERT INTO key_order_counts (key_id, status, shard, n)
SELECT key_id, status, id % 16, COUNT(*) FROM orders
WHERE kind IN ('order', 'drip') AND phase = 'done'
GROUP BY key_id, status, id % 16;

CREATE FUNCTION count_ended_order() RETURNS trigger AS $$
BEGIN
    INSERT INTO key_order_counts (key_id, status, shard, n)
    VALUES (NEW.key_id, NEW.status, NEW.id % 16, 1)
    ON CONFLICT (key_id, status, shard) DO UPDATE SET n = key_order_counts.n + 1;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER order_ended_counted AFTER UPDATE OF phase ON orders
FOR EACH ROW
WHEN (OLD.phase <> 'done' AND NEW.phase = 'done' AND NEW.kind IN ('order', 'drip'))
EXECUTE FUNCTION count_ended_order();
