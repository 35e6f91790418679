-- POST /v1/offers takes an Idempotency-Key: a provider whose request was cut off resends it with the same key and gets
-- the offer it created (the same body), never a second one; the key with another body is refused (422).
ALTER TABLE offers ADD COLUMN idempotency_key text, ADD COLUMN request_hash text;
CREATE UNIQUE INDEX offers_idempotency ON offers (provider_org_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
