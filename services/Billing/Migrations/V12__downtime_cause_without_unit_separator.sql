-- The billing run reads each lease's downtime causes as one text, joined by the unit separator (U+001F), and splits it
-- again (BillingRunner.Texts: one string per distinct cause instead of one per interval). A cause is one word from a
-- closed set (renter, provider, platform, market; or empty for a resume that came first), and the consumer that writes
-- them replaces the separator; this check keeps the split exact whoever writes the row.
ALTER TABLE downtime ADD CONSTRAINT downtime_cause_has_no_unit_separator CHECK (strpos(cause, chr(31)) = 0);
