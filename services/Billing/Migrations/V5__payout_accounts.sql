-- Payout destinations: each provider org's Stripe Connect account, created through our API and onboarded at Stripe.
-- What Stripe says about it (payouts_enabled, ...) comes only from signed account.updated webhooks; the newest event
-- wins (stripe_updated_at), so an event delivered late cannot undo a newer one.
CREATE TABLE payout_accounts (
    id                uuid        PRIMARY KEY,
    provider_org_id   uuid        NOT NULL UNIQUE,
    stripe_account_id text        NOT NULL UNIQUE,
    idempotency_key   text        NOT NULL,
    country           char(2)     NOT NULL,
    email             text,
    payouts_enabled   boolean     NOT NULL DEFAULT false,
    charges_enabled   boolean     NOT NULL DEFAULT false,
    details_submitted boolean     NOT NULL DEFAULT false,
    disabled_reason   text,
    stripe_updated_at timestamptz,
    created_at        timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL
);

-- A payout waits ('held', with the reason, no destination) until its provider has an account that can receive payouts;
-- a later run sends it. Sent payouts keep their idempotency key payout:{statement}:{sequence}.
ALTER TABLE payouts ALTER COLUMN destination DROP NOT NULL;
ALTER TABLE payouts DROP CONSTRAINT payouts_status_check;
ALTER TABLE payouts ADD CONSTRAINT payouts_status_check CHECK (status IN ('held', 'pending', 'paid'));
ALTER TABLE payouts ADD COLUMN held_reason text;
ALTER TABLE payouts ADD CONSTRAINT payouts_destination_when_sendable CHECK (status = 'held' OR destination IS NOT NULL);
CREATE INDEX payouts_unpaid ON payouts (statement_id) WHERE status <> 'paid';
