-- Round 2: markets (model × region group), reserved and interruptible orders, good-til-time, amend, preemption, market data.

-- Orders: a window for reserved orders, an expiry for gtt, the market they rest in, the alternatives of their explanation.
ALTER TABLE orders DROP CONSTRAINT orders_time_in_force_check;
ALTER TABLE orders ADD CONSTRAINT orders_time_in_force_check CHECK (time_in_force IN ('gtc', 'ioc', 'gtt'));
ALTER TABLE orders
    ADD COLUMN region_group   text,
    ADD COLUMN earliest_start timestamptz,
    ADD COLUMN latest_end     timestamptz,
    ADD COLUMN expires_at     timestamptz,
    ADD COLUMN priority_at    timestamptz,
    ADD COLUMN alternatives   text[] NOT NULL DEFAULT '{}',
    ADD CONSTRAINT orders_reserved_window CHECK (type <> 'reserved' OR (earliest_start IS NOT NULL AND latest_end IS NOT NULL
        AND latest_end >= earliest_start + make_interval(secs => duration_seconds))),
    ADD CONSTRAINT orders_gtt_expiry CHECK ((time_in_force = 'gtt') = (expires_at IS NOT NULL));
UPDATE orders SET priority_at = created_at,
                  region_group = CASE WHEN region IS NULL THEN NULL ELSE split_part(lower(region), '-', 1) END;
ALTER TABLE orders ALTER COLUMN priority_at SET NOT NULL;
DROP INDEX orders_book;
CREATE INDEX orders_book ON orders (accelerator_model, region_group, priority_at) WHERE status = 'open';

-- Offers: the interruptible and SLA terms, availability windows (null = the one window) and the region group.
ALTER TABLE offers
    ADD COLUMN interruptible_floor_amount bigint,
    ADD COLUMN preemption_notice_seconds  int  NOT NULL DEFAULT 0,
    ADD COLUMN sla_level                  text NOT NULL DEFAULT 'standard',
    ADD COLUMN windows                    jsonb,
    ADD COLUMN region_group               text,
    ADD COLUMN updated_at                 timestamptz;
UPDATE offers SET region_group = split_part(lower(region), '-', 1), updated_at = published_at;
ALTER TABLE offers ALTER COLUMN region_group SET NOT NULL;
DROP INDEX offers_market;
CREATE INDEX offers_market ON offers (accelerator_model, region_group, ask_amount) WHERE status = 'active';

-- Matches are the trades: interruptible ones carry their bid (lower bids are preempted first) and, once preempted, when.
ALTER TABLE matches
    ADD COLUMN interruptible  boolean NOT NULL DEFAULT false,
    ADD COLUMN bid_amount     bigint,
    ADD COLUMN order_type     text,
    ADD COLUMN market         text,
    ADD COLUMN preempted_at   timestamptz,
    ADD COLUMN preempt_reason text;
UPDATE matches m SET order_type = o.type FROM orders o WHERE o.id = m.order_id;
UPDATE matches m SET market = f.accelerator_model || '/' || f.region_group FROM offers f WHERE f.offer_id = m.offer_id;
CREATE INDEX matches_market_time ON matches (market, created_at);
