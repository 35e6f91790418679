-- Bidding schema. Versions 1.x are the shared messaging tables (outbox, inbox, due_work).

-- Local copy of Listings' offers, built from OfferPublished / OfferWithdrawn.
CREATE TABLE offers (
    offer_id              uuid        PRIMARY KEY,
    provider_org_id       uuid        NOT NULL,
    cluster_id            uuid        NOT NULL,
    node_ids              uuid[]      NOT NULL,
    accelerator_model     text        NOT NULL,
    region                text        NOT NULL,
    jurisdiction          text        NOT NULL,
    accelerator_count     int         NOT NULL CHECK (accelerator_count > 0),
    window_start          timestamptz NOT NULL,
    window_end            timestamptz NOT NULL CHECK (window_end > window_start),
    ask_amount            bigint      NOT NULL CHECK (ask_amount > 0),
    ask_currency          text        NOT NULL,
    min_lease_seconds     int         NOT NULL,
    interruptible_allowed boolean     NOT NULL,
    status                text        NOT NULL CHECK (status IN ('active', 'withdrawn')),
    published_at          timestamptz NOT NULL,
    withdrawn_at          timestamptz
);
CREATE INDEX offers_market ON offers (accelerator_model, ask_amount) WHERE status = 'active';

-- A withdrawal that overtook its publication (no ordering across queues): the offer arrives already withdrawn.
CREATE TABLE offer_withdrawals (
    offer_id     uuid        PRIMARY KEY,
    withdrawn_at timestamptz NOT NULL
);

CREATE TABLE orders (
    id                 uuid        PRIMARY KEY,
    renter_org_id      uuid        NOT NULL,
    idempotency_key    text        NOT NULL,
    request_hash       text        NOT NULL,
    type               text        NOT NULL CHECK (type IN ('on_demand', 'reserved', 'interruptible')),
    time_in_force      text        NOT NULL CHECK (time_in_force IN ('gtc', 'ioc')),
    status             text        NOT NULL CHECK (status IN ('open', 'matched', 'filled', 'cancelled')),
    status_reason      text,
    accelerator_model  text        NOT NULL,
    accelerator_count  int         NOT NULL CHECK (accelerator_count BETWEEN 1 AND 64),
    duration_seconds   int         NOT NULL CHECK (duration_seconds > 0),
    max_price_amount   bigint      NOT NULL CHECK (max_price_amount > 0),
    max_price_currency text        NOT NULL CHECK (max_price_currency ~ '^[A-Z]{3}$'),
    region             text,
    jurisdiction       text,
    created_at         timestamptz NOT NULL,
    updated_at         timestamptz NOT NULL,
    lease_id           uuid,
    UNIQUE (renter_org_id, idempotency_key)
);
-- The standing book of one market, in time priority.
CREATE INDEX orders_book ON orders (accelerator_model, created_at) WHERE status = 'open';

-- A match holds `accelerator_count` of an offer's capacity over [start_at, end_at) while active.
CREATE TABLE matches (
    id                uuid        PRIMARY KEY,
    order_id          uuid        NOT NULL REFERENCES orders (id),
    offer_id          uuid        NOT NULL REFERENCES offers (offer_id),
    accelerator_count int         NOT NULL CHECK (accelerator_count > 0),
    start_at          timestamptz NOT NULL,
    end_at            timestamptz NOT NULL CHECK (end_at > start_at),
    price_amount      bigint      NOT NULL CHECK (price_amount > 0),
    price_currency    text        NOT NULL,
    state             text        NOT NULL CHECK (state IN ('active', 'released')),
    release_reason    text,
    created_at        timestamptz NOT NULL,
    released_at       timestamptz
);
CREATE UNIQUE INDEX matches_one_active_per_order ON matches (order_id) WHERE state = 'active';
CREATE INDEX matches_offer_active ON matches (offer_id, end_at) WHERE state = 'active';
CREATE INDEX matches_order ON matches (order_id, created_at);
