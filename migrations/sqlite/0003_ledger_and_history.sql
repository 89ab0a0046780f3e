-- Every balance change as a row, written in the same transaction as its cause, and every
-- change of an order's status with its time and cause.

CREATE TABLE ledger (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    key_id      INTEGER NOT NULL REFERENCES api_keys (id),
    order_id    INTEGER REFERENCES orders (id),
    kind        TEXT    NOT NULL,
    amount      INTEGER NOT NULL,
    note        TEXT,
    created_at  INTEGER NOT NULL
);
CREATE INDEX ledger_by_key ON ledger (key_id, id);
CREATE INDEX ledger_by_order ON ledger (order_id) WHERE order_id IS NOT NULL;

-- Balances from before the ledger enter it as one opening adjustment each.
INSERT INTO ledger (key_id, kind, amount, note, created_at)
SELECT id, 'adjustment', balance, 'balance when the ledger started',
       CAST(unixepoch('subsec') * 1000 AS INTEGER)
FROM api_keys WHERE balance <> 0;

ALTER TABLE orders ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0;
ALTER TABLE orders ADD COLUMN status_cause TEXT;

CREATE TABLE order_events (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    order_id     INTEGER NOT NULL REFERENCES orders (id),
    at           INTEGER NOT NULL,
    from_status  TEXT,
    to_status    TEXT    NOT NULL,
    cause        TEXT
);
CREATE INDEX order_events_by_order ON order_events (order_id, id);

-- Triggers, so that no code path can change a status without leaving a trace.
CREATE TRIGGER order_accepted AFTER INSERT ON orders
BEGIN
    INSERT INTO order_events (order_id, at, from_status, to_status, cause)
    VALUES (NEW.id, NEW.created_at, NULL, NEW.status, 'order accepted');
END;

CREATE TRIGGER order_status_changed AFTER UPDATE OF status ON orders
WHEN OLD.status <> NEW.status
BEGIN
    INSERT INTO order_events (order_id, at, from_status, to_status, cause)
    VALUES (NEW.id, NEW.updated_at, OLD.status, NEW.status, NEW.status_cause);
END;
