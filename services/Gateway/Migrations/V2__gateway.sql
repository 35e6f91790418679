-- Organisations and their API keys. Keys are stored as SHA-256 of the secret only: the clear key is shown once.
CREATE TABLE orgs (
    id          uuid PRIMARY KEY,
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    roles       text[] NOT NULL CHECK (cardinality(roles) > 0 AND roles <@ ARRAY['renter', 'provider', 'finance', 'admin']),
    created_at  timestamptz NOT NULL
);

CREATE TABLE api_keys (
    id           uuid PRIMARY KEY,
    org_id       uuid NOT NULL REFERENCES orgs (id),
    name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    -- The public part of mk_<prefix>_<secret>: how a presented key is found without scanning hashes.
    prefix       text NOT NULL UNIQUE,
    secret_hash  bytea NOT NULL CHECK (length(secret_hash) = 32),
    created_at   timestamptz NOT NULL,
    revoked_at   timestamptz
);

CREATE INDEX api_keys_org_id ON api_keys (org_id);
