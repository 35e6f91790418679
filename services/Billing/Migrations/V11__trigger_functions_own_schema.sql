-- The trigger functions that read or write other tables named them without a schema, so they resolved them through the
-- search_path of whoever wrote the row. The service's own connections have it set to this schema; a person correcting
-- something from psql, who names the tables with their schema (billing.ledger_entries) and has the default search_path,
-- got "relation ... does not exist" from the trigger instead of the check. Each function now runs with the search_path
-- it was created under (this schema), as Bidding's matches_record_change does (Bidding V8).
ALTER FUNCTION invoice_lines_immutable_when_final() SET search_path FROM CURRENT;
ALTER FUNCTION invoice_lines_checked() SET search_path FROM CURRENT;
ALTER FUNCTION ledger_transactions_balanced() SET search_path FROM CURRENT;
ALTER FUNCTION ledger_entries_to_wallet_balances() SET search_path FROM CURRENT;
