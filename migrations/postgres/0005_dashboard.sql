-- What the operator's dashboard shows beyond the order row itself.

-- The provider's service an order was placed under (the catalogue may change later), when the
-- provider reported it done, when verification saw the target count, and how many calls to
-- the provider failed for it. Orders placed before this migration have none of these.
ALTER TABLE orders ADD COLUMN upstream_service BIGINT;
ALTER TABLE orders ADD COLUMN provider_done_at BIGINT;
ALTER TABLE orders ADD COLUMN target_seen_at BIGINT;
ALTER TABLE orders ADD COLUMN provider_failures BIGINT NOT NULL DEFAULT 0;

-- Play-count readings and provider calls, written in the same transaction as the worker's save
-- that acts on them (or the insert at `add`, for the count read there).
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
-- Charges and refunds move in the same statements as the balance; ended orders are counted
-- by a trigger, like the status history, so no code path can end an order uncounted.
ALTER TABLE api_keys ADD COLUMN charged BIGINT NOT NULL DEFAULT 0;
ALTER TABLE api_keys ADD COLUMN refunded BIGINT NOT NULL DEFAULT 0;
ALTER TABLE api_keys ADD COLUMN orders_completed BIGINT NOT NULL DEFAULT 0;
ALTER TABLE api_keys ADD COLUMN orders_partial BIGINT NOT NULL DEFAULT 0;
ALTER TABLE api_keys ADD COLUMN orders_canceled BIGINT NOT NULL DEFAULT 0;

UPDATE api_keys SET
    charged = COALESCE((SELECT -SUM(amount) FROM ledger
                        WHERE ledger.key_id = api_keys.id AND kind = 'charge'), 0),
    refunded = COALESCE((SELECT SUM(amount) FROM ledger
                         WHERE ledger.key_id = api_keys.id AND kind = 'refund'), 0),
    orders_completed = (SELECT COUNT(*) FROM orders WHERE orders.key_id = api_keys.id
                        AND kind IN ('order', 'drip') AND phase = 'done' AND status = 'Completed'),
    orders_partial = (SELECT COUNT(*) FROM orders WHERE orders.key_id = api_keys.id
                      AND kind IN ('order', 'drip') AND phase = 'done' AND status = 'Partial'),
    orders_canceled = (SELECT COUNT(*) FROM orders WHERE orders.key_id = api_keys.id
                       AND kind IN ('order', 'drip') AND phase = 'done' AND status = 'Canceled');

CREATE FUNCTION count_ended_order() RETURNS trigger AS $$
BEGIN
    UPDATE api_keys SET
        orders_completed = orders_completed + (NEW.status = 'Completed')::int,
        orders_partial = orders_partial + (NEW.status = 'Partial')::int,
        orders_canceled = orders_canceled + (NEW.status = 'Canceled')::int
    WHERE id = NEW.key_id;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER order_ended_counted AFTER UPDATE OF phase ON orders
FOR EACH ROW
WHEN (OLD.phase <> 'done' AND NEW.phase = 'done' AND NEW.kind IN ('order', 'drip'))
EXECUTE FUNCTION count_ended_order();
