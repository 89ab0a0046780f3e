-- A refill is an order row of its own kind: it runs through the same worker steps (start
-- count, placement, delivery, verification) for the views an order has lost since it ended.
ALTER TABLE orders ADD COLUMN kind TEXT NOT NULL DEFAULT 'order';
ALTER TABLE orders ADD COLUMN refill_of INTEGER REFERENCES orders (id);
CREATE INDEX orders_refills ON orders (refill_of) WHERE refill_of IS NOT NULL;
