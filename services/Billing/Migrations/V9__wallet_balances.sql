-- The renters' wallet balances kept beside the journal. Until now a balance was SUM(amount) over the account's entries,
-- and a hold reads the renter's available funds, under the wallet lock, on every booking: that read grew with the
-- account's history, one entry per booking, so a renter with 50 000 bookings paid about 40 ms per booking for it
-- (docs/performance.md, Billing, "Wallet balances kept beside the journal"). wallet_balances holds the same sum for
-- every renter account (renter:<org>:available and renter:<org>:held), kept by the database itself: the statement that
-- adds entries adds them to these balances (one upsert per account and currency, in account order, so two postings
-- that share accounts lock their rows in the same order), in the same transaction, so a balance is never ahead of or
-- behind the entries that make it. Only the wallets: the platform's and the providers' accounts are read as sums, by
-- finance, and keeping theirs would make every billing-run batch and every top-up queue on the same few rows. The
-- entries stay the record: they are append-only, and the trial balance compares the two.
CREATE TABLE wallet_balances (
    account  text    NOT NULL,
    currency char(3) NOT NULL,
    balance  bigint  NOT NULL,
    PRIMARY KEY (account, currency),
    CHECK (account LIKE 'renter:%')
) WITH (fillfactor = 70); -- room on the page for the new version: a balance update is then HOT (no index entry)

-- No entry may land between the sums and the trigger (another instance still on the old version, say).
LOCK TABLE ledger_entries IN SHARE MODE;
INSERT INTO wallet_balances (account, currency, balance)
SELECT account, currency, SUM(amount) FROM ledger_entries WHERE account LIKE 'renter:%' GROUP BY account, currency;

CREATE FUNCTION ledger_entries_to_wallet_balances() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO wallet_balances AS b (account, currency, balance)
    SELECT account, currency, SUM(amount) FROM new_rows WHERE account LIKE 'renter:%'
    GROUP BY account, currency ORDER BY account, currency
    ON CONFLICT (account, currency) DO UPDATE SET balance = b.balance + excluded.balance;
    RETURN NULL;
END $$;

CREATE TRIGGER ledger_entries_to_wallet_balances AFTER INSERT ON ledger_entries
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION ledger_entries_to_wallet_balances();
