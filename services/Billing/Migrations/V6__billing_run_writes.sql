-- Round 5: settling a hold is a HOT update (heap-only tuple: no new index entries).
-- A billing run changes status, charged, settled_at and settled_by of every hold it closes. The partial index
-- holds_pending (lease_id) WHERE status = 'pending' made each of those updates non-HOT (a column in an index predicate
-- counts as indexed), so every settled hold added entries to all four indexes of the table. The run does not need it:
-- it reads the period's holds by joining usage's end times (hash joins over the period), and per lease the
-- lease_id unique index serves. With room left on every page (fillfactor 50: a hold changes about once, pending to
-- posted or voided, plus an extension now and then), the new version fits beside the old one and no index is touched.
DROP INDEX holds_pending;
ALTER TABLE holds SET (fillfactor = 50);

-- The invoice-line check's "every line goes to a draft invoice" ran as a nested loop over ALL the period's drafts for
-- each distinct invoice of the batch: the drafts are created during the run, after the table was last analyzed, so
-- the planner took the partial index invoices_one_draft for one row (4.4 s for a batch of 20 000 lines to 9 000
-- invoices). Looking each invoice up by its primary key and checking the status after is one probe per invoice
-- whatever the statistics say.
CREATE OR REPLACE FUNCTION invoice_lines_checked() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE bad uuid;
BEGIN
    SELECT n.invoice_id INTO bad FROM (SELECT DISTINCT invoice_id FROM new_rows) n
    LEFT JOIN invoices i ON i.id = n.invoice_id
    WHERE i.id IS NULL OR i.status <> 'draft'
    LIMIT 1;
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'invoice % is finalized or does not exist; lines go to a draft invoice', bad;
    END IF;
    SELECT n.statement_id INTO bad FROM (SELECT DISTINCT statement_id FROM new_rows) n
    LEFT JOIN statements s ON s.id = n.statement_id
    WHERE s.id IS NULL
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
