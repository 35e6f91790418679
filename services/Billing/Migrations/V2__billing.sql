-- Billing schema. Versions 1.x are the shared messaging tables (outbox, inbox, due_work).
-- Balances are never stored: they are SUM(amount) over ledger_entries per (account, currency).

CREATE TABLE ledger_transactions (
    id              uuid        PRIMARY KEY,
    idempotency_key text        NOT NULL UNIQUE,
    kind            text        NOT NULL,
    created_at      timestamptz NOT NULL
);

CREATE TABLE ledger_entries (
    id             bigserial PRIMARY KEY,
    transaction_id uuid      NOT NULL REFERENCES ledger_transactions (id),
    account        text      NOT NULL,
    currency       char(3)   NOT NULL,
    amount         bigint    NOT NULL CHECK (amount <> 0)
);
CREATE INDEX ledger_entries_by_account ON ledger_entries (account, currency);
CREATE INDEX ledger_entries_by_transaction ON ledger_entries (transaction_id);

-- Defence in depth behind the C# constructor: at commit, every transaction touched must sum to zero per currency.
CREATE FUNCTION ledger_transaction_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM ledger_entries WHERE transaction_id = NEW.transaction_id
               GROUP BY currency HAVING SUM(amount) <> 0) THEN
        RAISE EXCEPTION 'ledger transaction % does not sum to zero', NEW.transaction_id;
    END IF;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER ledger_entries_balanced AFTER INSERT OR UPDATE ON ledger_entries
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION ledger_transaction_balanced();

-- Local copy of Scheduling's leases, from LeaseScheduled.
CREATE TABLE leases (
    lease_id          uuid        PRIMARY KEY,
    order_id          uuid        NOT NULL,
    renter_org_id     uuid        NOT NULL,
    provider_org_id   uuid        NOT NULL,
    accelerator_model text        NOT NULL,
    accelerator_count int         NOT NULL,
    start_at          timestamptz NOT NULL,
    end_at            timestamptz NOT NULL,
    price_per_hour    bigint      NOT NULL,
    currency          char(3)     NOT NULL,
    scheduled_at      timestamptz NOT NULL
);

CREATE TABLE holds (
    id            uuid        PRIMARY KEY,
    lease_id      uuid        NOT NULL UNIQUE REFERENCES leases (lease_id),
    renter_org_id uuid        NOT NULL,
    amount        bigint      NOT NULL CHECK (amount >= 0),
    currency      char(3)     NOT NULL,
    status        text        NOT NULL CHECK (status IN ('pending', 'posted', 'voided')),
    created_at    timestamptz NOT NULL,
    settled_at    timestamptz
);

-- Metered usage per lease, from LeaseStarted / LeaseEnded. No started_at means the lease never ran.
CREATE TABLE usage (
    lease_id   uuid PRIMARY KEY,
    started_at timestamptz,
    ended_at   timestamptz,
    end_status text,
    end_reason text
);
CREATE INDEX usage_by_end ON usage (ended_at);

CREATE TABLE top_ups (
    id                uuid        PRIMARY KEY,
    renter_org_id     uuid        NOT NULL,
    idempotency_key   text        NOT NULL,
    amount            bigint      NOT NULL CHECK (amount > 0),
    currency          char(3)     NOT NULL,
    status            text        NOT NULL CHECK (status IN ('pending', 'succeeded')),
    payment_intent_id text        UNIQUE,
    client_secret     text,
    created_at        timestamptz NOT NULL,
    succeeded_at      timestamptz,
    UNIQUE (renter_org_id, idempotency_key)
);

CREATE TABLE stripe_events (
    event_id    text        PRIMARY KEY,
    type        text        NOT NULL,
    received_at timestamptz NOT NULL
);

CREATE TABLE billing_runs (
    period       text        PRIMARY KEY,
    first_run_at timestamptz NOT NULL,
    last_run_at  timestamptz NOT NULL,
    runs         int         NOT NULL
);

-- One invoice per renter, period and currency (a renter paying in two currencies gets two).
CREATE TABLE invoices (
    id            uuid        PRIMARY KEY,
    renter_org_id uuid        NOT NULL,
    period        text        NOT NULL,
    currency      char(3)     NOT NULL,
    total         bigint      NOT NULL,
    created_at    timestamptz NOT NULL,
    UNIQUE (renter_org_id, period, currency)
);

CREATE TABLE statements (
    id              uuid        PRIMARY KEY,
    provider_org_id uuid        NOT NULL,
    period          text        NOT NULL,
    currency        char(3)     NOT NULL,
    gross           bigint      NOT NULL,
    platform_fee    bigint      NOT NULL,
    sla_credits     bigint      NOT NULL DEFAULT 0,
    net             bigint      NOT NULL,
    created_at      timestamptz NOT NULL,
    UNIQUE (provider_org_id, period, currency)
);

-- A lease is invoiced once, ever (UNIQUE lease_id), whichever period run picks it up first.
CREATE TABLE invoice_lines (
    id                uuid        PRIMARY KEY,
    invoice_id        uuid        NOT NULL REFERENCES invoices (id),
    statement_id      uuid        NOT NULL REFERENCES statements (id),
    lease_id          uuid        NOT NULL UNIQUE REFERENCES leases (lease_id),
    provider_org_id   uuid        NOT NULL,
    accelerator_model text        NOT NULL,
    accelerator_count int         NOT NULL,
    started_at        timestamptz NOT NULL,
    ended_at          timestamptz NOT NULL,
    seconds           bigint      NOT NULL,
    unit_price        bigint      NOT NULL,
    amount            bigint      NOT NULL,
    platform_fee      bigint      NOT NULL,
    currency          char(3)     NOT NULL
);
CREATE INDEX invoice_lines_by_invoice ON invoice_lines (invoice_id);
CREATE INDEX invoice_lines_by_statement ON invoice_lines (statement_id);

-- What is still owed on a statement is paid by a new payout (sequence 0, 1, ...), each one Stripe Transfer.
CREATE TABLE payouts (
    id           uuid        PRIMARY KEY,
    statement_id uuid        NOT NULL REFERENCES statements (id),
    sequence     int         NOT NULL,
    amount       bigint      NOT NULL CHECK (amount > 0),
    currency     char(3)     NOT NULL,
    destination  text        NOT NULL,
    status       text        NOT NULL CHECK (status IN ('pending', 'paid')),
    transfer_id  text,
    last_error   text,
    created_at   timestamptz NOT NULL,
    paid_at      timestamptz,
    UNIQUE (statement_id, sequence)
);
