-- Every POST that creates (clusters, nodes, offers) takes an optional Idempotency-Key: one table for all of them, so the
-- rule lives in one place (Idempotency.cs). A key belongs to an organisation and a kind of object; it remembers the
-- fingerprint of the request that used it first and the object that request created.
CREATE TABLE idempotency_keys (
    org_id       uuid        NOT NULL,
    scope        text        NOT NULL CHECK (scope IN ('clusters', 'nodes', 'offers')),
    key          text        NOT NULL,
    request_hash text        NOT NULL,
    object_id    uuid        NOT NULL,
    created_at   timestamptz NOT NULL,
    PRIMARY KEY (org_id, scope, key)
);

-- The offers' keys (V6) move here; a retry of an offer sent before this migration still finds its offer.
INSERT INTO idempotency_keys (org_id, scope, key, request_hash, object_id, created_at)
SELECT provider_org_id, 'offers', idempotency_key, request_hash, id, created_at FROM offers WHERE idempotency_key IS NOT NULL;
DROP INDEX offers_idempotency;
ALTER TABLE offers DROP COLUMN idempotency_key, DROP COLUMN request_hash;
