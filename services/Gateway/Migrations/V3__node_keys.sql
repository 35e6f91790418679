-- A key may be scoped to one node of its org (a provider's node agent). Such a key calls only /v1/agent/**; the
-- gateway cannot see nodes, so Listings and Scheduling check that the node belongs to the key's org on every call.
ALTER TABLE api_keys ADD COLUMN node_id uuid;
