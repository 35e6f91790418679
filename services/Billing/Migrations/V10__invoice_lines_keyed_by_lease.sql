-- An invoice line's key is its lease. A lease is invoiced once, ever, so lease_id was already unique and not null; the
-- line's own id (sequential, shown in the API) is never looked up: invoices read their lines through
-- invoice_lines_by_invoice. The id's primary-key index was one of three btree insertions per line a billing run writes:
-- measured, inserting the benchmark period's 100 000 lines took 1.26-1.41 s with the three indexes and 0.94-0.98 s with
-- the lease as the key and the invoice index (docs/performance.md, Billing, "The lease is the line's key"). The
-- uniqueness of a lease's line, the guard against invoicing it twice, is now the primary key's.
ALTER TABLE invoice_lines DROP CONSTRAINT invoice_lines_pkey;
ALTER TABLE invoice_lines DROP CONSTRAINT invoice_lines_lease_id_key;
ALTER TABLE invoice_lines ADD CONSTRAINT invoice_lines_pkey PRIMARY KEY (lease_id);
