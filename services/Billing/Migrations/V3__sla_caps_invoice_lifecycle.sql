-- Round 2: SLA levels and downtime, extensions, spend caps and low-balance thresholds, invoice lifecycle and credit
-- notes, resumable billing runs, an immutable journal checked per statement.

ALTER TABLE leases
    ADD COLUMN interruptible boolean NOT NULL DEFAULT false,
    ADD COLUMN sla_level     text    NOT NULL DEFAULT 'standard' CHECK (sla_level IN ('none', 'standard', 'premium'));

-- Downtime intervals from LeaseInterrupted / LeaseResumed. ended_at NULL = still down (until the lease ends).
CREATE TABLE downtime (
    lease_id   uuid        NOT NULL,
    started_at timestamptz NOT NULL,
    ended_at   timestamptz,
    cause      text        NOT NULL,
    reason     text        NOT NULL,
    PRIMARY KEY (lease_id, started_at)
);

-- What the hold finally charged (posted), so a monthly spend cap counts real spend, not reservations that were voided.
ALTER TABLE holds ADD COLUMN charged bigint NOT NULL DEFAULT 0;
CREATE INDEX holds_by_renter_month ON holds (renter_org_id, currency, created_at);

-- Per renter org and currency; NULL = no cap / the configured default threshold.
CREATE TABLE wallet_settings (
    renter_org_id          uuid    NOT NULL,
    currency               char(3) NOT NULL,
    spend_cap              bigint  CHECK (spend_cap >= 0),
    per_order_cap          bigint  CHECK (per_order_cap >= 0),
    low_balance_threshold  bigint  CHECK (low_balance_threshold >= 0),
    updated_at             timestamptz NOT NULL,
    PRIMARY KEY (renter_org_id, currency)
);

-- Invoices: draft while a run adds lines, finalized (immutable) at the end of the run. A lease that ends in a period
-- whose invoice is already final goes on a new invoice of that period: at most one draft per renter × period × currency.
ALTER TABLE invoices DROP CONSTRAINT invoices_renter_org_id_period_currency_key;
ALTER TABLE invoices
    ADD COLUMN status       text   NOT NULL DEFAULT 'draft' CHECK (status IN ('draft', 'finalized')),
    ADD COLUMN subtotal     bigint NOT NULL DEFAULT 0,
    ADD COLUMN sla_credits  bigint NOT NULL DEFAULT 0,
    ADD COLUMN finalized_at timestamptz;
CREATE UNIQUE INDEX invoices_one_draft ON invoices (renter_org_id, period, currency) WHERE status = 'draft';

ALTER TABLE invoice_lines
    ADD COLUMN downtime_seconds      bigint NOT NULL DEFAULT 0,
    ADD COLUMN availability_ppm      int    NOT NULL DEFAULT 1000000,
    ADD COLUMN sla_level             text   NOT NULL DEFAULT 'none',
    ADD COLUMN sla_credit_bp         int    NOT NULL DEFAULT 0,
    ADD COLUMN sla_credit            bigint NOT NULL DEFAULT 0,
    ADD COLUMN end_status            text,
    ADD COLUMN end_cause             text;

-- A finalized invoice never changes; a line of a finalized invoice neither.
CREATE FUNCTION invoices_immutable_when_final() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.status = 'finalized' THEN
        RAISE EXCEPTION 'invoice % is finalized; issue a credit note instead', OLD.id;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER invoices_final BEFORE UPDATE OR DELETE ON invoices FOR EACH ROW EXECUTE FUNCTION invoices_immutable_when_final();

CREATE FUNCTION invoice_lines_immutable_when_final() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM invoices WHERE id = COALESCE(NEW.invoice_id, OLD.invoice_id) AND status = 'finalized') THEN
        RAISE EXCEPTION 'invoice % is finalized; its lines cannot change', COALESCE(NEW.invoice_id, OLD.invoice_id);
    END IF;
    RETURN COALESCE(NEW, OLD);
END $$;
CREATE TRIGGER invoice_lines_final BEFORE INSERT OR UPDATE OR DELETE ON invoice_lines
    FOR EACH ROW EXECUTE FUNCTION invoice_lines_immutable_when_final();

CREATE TABLE credit_notes (
    id              uuid        PRIMARY KEY,
    invoice_id      uuid        NOT NULL REFERENCES invoices (id),
    idempotency_key text        NOT NULL,
    amount          bigint      NOT NULL CHECK (amount > 0),
    currency        char(3)     NOT NULL,
    reason          text        NOT NULL,
    created_by      uuid        NOT NULL,
    created_at      timestamptz NOT NULL,
    UNIQUE (invoice_id, idempotency_key)
);

-- A run's progress: state, how many leases it found and how many are done. Per-lease work is idempotent, so a run
-- that died resumes where the rows say it stopped.
ALTER TABLE billing_runs
    ADD COLUMN state        text NOT NULL DEFAULT 'completed' CHECK (state IN ('running', 'completed')),
    ADD COLUMN leases_total int  NOT NULL DEFAULT 0,
    ADD COLUMN leases_done  int  NOT NULL DEFAULT 0,
    ADD COLUMN completed_at timestamptz;

ALTER TABLE statements ADD COLUMN updated_at timestamptz;

-- The journal is append-only.
CREATE FUNCTION ledger_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the ledger is append-only: % on % is refused', TG_OP, TG_TABLE_NAME;
END $$;
CREATE TRIGGER ledger_entries_append_only BEFORE UPDATE OR DELETE ON ledger_entries
    FOR EACH ROW EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER ledger_transactions_append_only BEFORE UPDATE OR DELETE ON ledger_transactions
    FOR EACH ROW EXECUTE FUNCTION ledger_append_only();

-- The balance check per INSERT statement instead of per row at commit: a billing run posts thousands of transactions in
-- one statement, and one set-based check over them is far cheaper than one query per entry. Entries of a transaction
-- are always inserted by one statement (LedgerStore), and this check sums everything the transaction has.
DROP TRIGGER ledger_entries_balanced ON ledger_entries;
DROP FUNCTION ledger_transaction_balanced();
CREATE FUNCTION ledger_transactions_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE bad uuid;
BEGIN
    SELECT e.transaction_id INTO bad
    FROM ledger_entries e
    WHERE e.transaction_id IN (SELECT DISTINCT transaction_id FROM new_rows)
    GROUP BY e.transaction_id, e.currency HAVING SUM(e.amount) <> 0
    LIMIT 1;
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'ledger transaction % does not sum to zero', bad;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER ledger_entries_balanced AFTER INSERT ON ledger_entries
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION ledger_transactions_balanced();

ALTER TABLE usage ADD COLUMN end_cause text;
-- The billing run walks pending holds in lease order.
CREATE INDEX holds_pending ON holds (lease_id) WHERE status = 'pending';
