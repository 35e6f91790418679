-- Scheduling schema. Versions 1.x are the shared messaging tables (outbox, inbox, due_work).

-- Local copy of Listings' nodes and their accelerator slots, built from NodeRegistered.
CREATE TABLE nodes (
    id                uuid        PRIMARY KEY,
    cluster_id        uuid        NOT NULL,
    provider_org_id   uuid        NOT NULL,
    region            text        NOT NULL,
    jurisdiction      text        NOT NULL,
    accelerator_model text        NOT NULL,
    registered_at     timestamptz NOT NULL
);

CREATE TABLE gpu_slots (
    id      uuid PRIMARY KEY,
    node_id uuid NOT NULL REFERENCES nodes (id),
    index   int  NOT NULL CHECK (index >= 0),
    UNIQUE (node_id, index)
);

CREATE TABLE leases (
    id                uuid        PRIMARY KEY,
    order_id          uuid        NOT NULL UNIQUE,
    match_id          uuid        NOT NULL UNIQUE,
    renter_org_id     uuid        NOT NULL,
    provider_org_id   uuid        NOT NULL,
    accelerator_model text        NOT NULL,
    accelerator_count int         NOT NULL CHECK (accelerator_count > 0),
    start_at          timestamptz NOT NULL,
    end_at            timestamptz NOT NULL,
    price_amount      bigint      NOT NULL CHECK (price_amount >= 0),
    price_currency    text        NOT NULL CHECK (price_currency ~ '^[A-Z]{3}$'),
    status            text        NOT NULL
        CHECK (status IN ('scheduled', 'active', 'completed', 'cancelled', 'failed', 'preempted')),
    status_reason     text,
    cause             text        CHECK (cause IN ('renter', 'provider', 'platform', 'market')),
    started_at        timestamptz,
    ended_at          timestamptz,
    created_at        timestamptz NOT NULL,
    CHECK (end_at > start_at),
    -- A terminal lease always says when and why it ended.
    CHECK (status IN ('scheduled', 'active') OR (ended_at IS NOT NULL AND status_reason IS NOT NULL AND cause IS NOT NULL))
);
CREATE INDEX leases_renter_page ON leases (renter_org_id, created_at DESC, id DESC);
CREATE INDEX leases_provider_page ON leases (provider_org_id, created_at DESC, id DESC);

-- The invariant: one slot is never booked twice for overlapping time, whatever the application does.
-- Released bookings are shrunk (to empty before the start), never deleted, so a lease keeps its slot list;
-- an empty range overlaps nothing.
CREATE TABLE bookings (
    lease_id uuid      NOT NULL REFERENCES leases (id),
    slot_id  uuid      NOT NULL REFERENCES gpu_slots (id),
    during   tstzrange NOT NULL,
    PRIMARY KEY (lease_id, slot_id),
    CONSTRAINT bookings_no_overlap EXCLUDE USING gist (slot_id WITH =, during WITH &&)
);
