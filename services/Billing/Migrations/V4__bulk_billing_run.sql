-- Round 3: a billing run writes its invoice lines and ledger entries in bulk (binary COPY). Integrity checks that ran
-- once per row become set-based checks once per statement, over the statement's new rows (transition tables).

-- Invoice lines: the per-row checks (the "invoice is final" trigger and three foreign keys: one query and one row lock
-- each, per line) were most of the cost of writing a run's lines. They become one check per INSERT (or COPY) statement
-- over its new rows: every line goes to an existing DRAFT invoice, an existing statement and a known lease. Only a
-- billing run finalizes invoices, and runs take turns (an advisory lock), so a draft cannot be finalized between this
-- check and the batch's commit. Invoices, statements and leases are never deleted (triggers below), so a line cannot
-- lose what it refers to later. Changing or deleting a line of a finalized invoice stays refused row by row.
ALTER TABLE invoice_lines
    DROP CONSTRAINT invoice_lines_invoice_id_fkey,
    DROP CONSTRAINT invoice_lines_statement_id_fkey,
    DROP CONSTRAINT invoice_lines_lease_id_fkey;
DROP TRIGGER invoice_lines_final ON invoice_lines;
CREATE TRIGGER invoice_lines_final BEFORE UPDATE OR DELETE ON invoice_lines
    FOR EACH ROW EXECUTE FUNCTION invoice_lines_immutable_when_final();

CREATE FUNCTION invoice_lines_checked() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE bad uuid;
BEGIN
    SELECT n.invoice_id INTO bad FROM (SELECT DISTINCT invoice_id FROM new_rows) n
    WHERE NOT EXISTS (SELECT 1 FROM invoices i WHERE i.id = n.invoice_id AND i.status = 'draft')
    LIMIT 1;
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'invoice % is finalized or does not exist; lines go to a draft invoice', bad;
    END IF;
    SELECT n.statement_id INTO bad FROM (SELECT DISTINCT statement_id FROM new_rows) n
    WHERE NOT EXISTS (SELECT 1 FROM statements s WHERE s.id = n.statement_id)
    LIMIT 1;
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'statement % does not exist', bad;
    END IF;
    SELECT n.lease_id INTO bad FROM new_rows n
    WHERE NOT EXISTS (SELECT 1 FROM leases l WHERE l.lease_id = n.lease_id)
    LIMIT 1;
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'lease % is not known to billing', bad;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER invoice_lines_checked AFTER INSERT ON invoice_lines
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION invoice_lines_checked();

CREATE FUNCTION never_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% rows are never deleted', TG_TABLE_NAME;
END $$;
CREATE TRIGGER invoices_never_deleted BEFORE DELETE OR TRUNCATE ON invoices FOR EACH STATEMENT EXECUTE FUNCTION never_deleted();
CREATE TRIGGER statements_never_deleted BEFORE DELETE OR TRUNCATE ON statements FOR EACH STATEMENT EXECUTE FUNCTION never_deleted();
CREATE TRIGGER leases_never_deleted BEFORE DELETE OR TRUNCATE ON leases FOR EACH STATEMENT EXECUTE FUNCTION never_deleted();

-- The journal's checks, set-based per statement. The foreign key from entries to their transaction was one lookup and
-- one row lock per entry (half the cost of posting a run); the same guarantee is now part of the statement check:
-- every new entry belongs to an existing transaction. Transactions can never be deleted (ledger_append_only), so an
-- entry cannot lose its transaction later.
-- Balance: the entries a statement adds to each transaction must sum to zero per currency. Entries are never updated
-- or deleted, so every transaction is the sum of balanced additions and stays balanced; checking only the new rows
-- is the same guarantee as summing the whole transaction, without reading it back.
ALTER TABLE ledger_entries DROP CONSTRAINT ledger_entries_transaction_id_fkey;
CREATE OR REPLACE FUNCTION ledger_transactions_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE bad uuid;
BEGIN
    SELECT n.transaction_id INTO bad FROM new_rows n
    GROUP BY n.transaction_id, n.currency HAVING SUM(n.amount) <> 0
    LIMIT 1;
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'ledger transaction % does not sum to zero', bad;
    END IF;
    SELECT n.transaction_id INTO bad FROM (SELECT DISTINCT transaction_id FROM new_rows) n
    WHERE NOT EXISTS (SELECT 1 FROM ledger_transactions t WHERE t.id = n.transaction_id)
    LIMIT 1;
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'ledger entries refer to transaction %, which does not exist', bad;
    END IF;
    RETURN NULL;
END $$;

-- A billing run posts one journal transaction per batch of leases (summed per account; the invoice lines are the
-- per-lease detail). Each settled hold names the journal transaction that settled it.
ALTER TABLE holds ADD COLUMN settled_by uuid;
