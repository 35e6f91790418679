-- A node is unverified until Listings has seen its agent report the declared inventory (NodeHealthChanged with
-- verified = true), as in Listings itself. Before, Scheduling took a newly registered node as verified, so a
-- verified-only order could be placed on a node no agent had ever reported on.
ALTER TABLE nodes ALTER COLUMN verified SET DEFAULT false;
UPDATE nodes SET verified = false WHERE health_at IS NULL;
