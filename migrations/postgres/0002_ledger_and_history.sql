-- Every balance change as a row, written in the same transaction as its cause, and every
-- change of an order's status with its time and cause.

CREATE TABLE ledger (
    id          BIGSERIAL PRIMARY KEY,
    key_id      BIGINT NOT NULL REFERENCES api_keys (id),
    order_id    BIGINT REFERENCES orders (id),
    kind        TEXT   NOT NULL,
    amount      BIGINT NOT NULL,
    note        TEXT,
    created_at  BIGINT NOT NULL
);
CREATE INDEX ledger_by_key ON ledger (key_id, id);
CREATE INDEX ledger_by_order ON ledger (order_id) WHERE order_id IS NOT NULL;

-- Balances from before the ledger enter it as one opening adjustment each.
INSERT INTO ledger (key_id, kind, amount, note, created_at)
SELECT id, 'adjustment', balance, 'balance when the ledger started',
       (extract(epoch from clock_timestamp()) * 1000)::bigint
FROM api_keys WHERE balance <> 0;

ALTER TABLE orders ADD COLUMN cancel_requested BIGINT NOT NULL DEFAULT 0;
ALTER TABLE orders ADD COLUMN status_cause TEXT;

CREATE TABLE order_events (
    id           BIGSERIAL PRIMARY KEY,
    order_id     BIGINT NOT NULL REFERENCES orders (id),
    at           BIGINT NOT NULL,
    from_status  TEXT,
    to_status    TEXT   NOT NULL,
    cause        TEXT
);
CREATE INDEX order_events_by_order ON order_events (order_id, id);

-- Triggers, so that no code path can change a status without leaving a trace.
CREATE FUNCTION record_order_event() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO order_events (order_id, at, from_status, to_status, cause)
        VALUES (NEW.id, NEW.created_at, NULL, NEW.status, 'order accepted');
    ELSIF OLD.status <> NEW.status THEN
        INSERT INTO order_events (order_id, at, from_status, to_status, cause)
        VALUES (NEW.id, NEW.updated_at, OLD.status, NEW.status, NEW.status_cause);
    END IF;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER order_events AFTER INSERT OR UPDATE OF status ON orders
FOR EACH ROW EXECUTE FUNCTION record_order_event();
