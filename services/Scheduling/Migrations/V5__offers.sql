-- A copy of Listings' offers, built from OfferPublished/OfferWithdrawn: which slots Bidding is selling, and when.
-- Replacement after a node failure never takes capacity that another active offer sells in the lease's remaining window.
CREATE TABLE offers (
    id              uuid           PRIMARY KEY,
    provider_org_id uuid,
    cluster_id      uuid,
    node_ids        uuid[]         NOT NULL DEFAULT '{}',
    -- NULL: every slot of node_ids (whole nodes); else the offered slots only.
    slot_ids        uuid[],
    windows         tstzmultirange NOT NULL DEFAULT '{}',
    published_at    timestamptz,
    withdrawn_at    timestamptz
);
CREATE INDEX offers_provider_active ON offers (provider_org_id) WHERE withdrawn_at IS NULL;
