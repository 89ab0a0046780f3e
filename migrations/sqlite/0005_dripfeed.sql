-- Drip-feed: an order of kind 'drip' holds the charge for all its runs; each run is an order
-- row of kind 'run' pointing at it, scheduled `interval` apart and verified on its own.
ALTER TABLE orders ADD COLUMN run_of INTEGER REFERENCES orders (id);
ALTER TABLE orders ADD COLUMN runs INTEGER NOT NULL DEFAULT 1;
CREATE INDEX orders_runs ON orders (run_of) WHERE run_of IS NOT NULL;
-- Drip-feed orders still running, for the sweep that ends them.
CREATE INDEX orders_open_drips ON orders (id) WHERE kind = 'drip' AND phase <> 'done';
