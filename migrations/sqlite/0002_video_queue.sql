-- Orders on a video that already has an open order now wait their turn instead of being
-- refused, so the one-open-order-per-video index gives way to a plain one used to find the
-- order at the head of each video's queue.
DROP INDEX orders_one_open_per_video;
CREATE INDEX orders_open_by_video ON orders (video_id, id) WHERE phase <> 'done';
