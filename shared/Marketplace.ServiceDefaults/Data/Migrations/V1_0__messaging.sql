-- Reliable-messaging tables every service has in its own schema.

-- Transactional outbox: written in the same transaction as the state change, relayed after commit.
CREATE TABLE outbox (
    id           bigserial PRIMARY KEY,
    message_id   uuid        NOT NULL UNIQUE,
    message_type text        NOT NULL,
    body         jsonb       NOT NULL,
    trace_parent text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    attempts     int         NOT NULL DEFAULT 0,
    last_error   text
);

-- Inbox: one row per (message, consumer) that had an effect; a redelivery finds its row and is skipped.
CREATE TABLE inbox (
    message_id  uuid        NOT NULL,
    consumer    text        NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (message_id, consumer)
);

-- Work due at a time (lease start and end, hold expiry), polled with FOR UPDATE SKIP LOCKED.
CREATE TABLE due_work (
    id         bigserial PRIMARY KEY,
    kind       text        NOT NULL,
    key        text        NOT NULL,
    due_at     timestamptz NOT NULL,
    payload    jsonb       NOT NULL DEFAULT '{}',
    attempts   int         NOT NULL DEFAULT 0,
    last_error text,
    done_at    timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (kind, key)
);
CREATE INDEX due_work_pending ON due_work (due_at) WHERE done_at IS NULL;
