-- Round 3: a preempted or revoked order's quantity returns to the book as a new standing order (docs/market.md).

ALTER TABLE orders
    -- The requeued order may not start before its predecessor's capacity is taken back.
    ADD COLUMN not_before    timestamptz,
    ADD COLUMN requeued_from uuid REFERENCES orders (id),
    ADD COLUMN requeued_as   uuid;
CREATE UNIQUE INDEX orders_requeued_once ON orders (requeued_from) WHERE requeued_from IS NOT NULL;
