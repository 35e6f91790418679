-- What the match sold: the offer, its nodes and (for an offer of part of its nodes) its slots, and whether the renter
-- asked for verified capacity only. Placement stays inside it; replacement looks there first and honours the same wish.
-- Leases placed before this version have no offer recorded (NULL): their replacement skips the offer tier.
ALTER TABLE leases
    ADD COLUMN offer_id         uuid,
    ADD COLUMN offered_node_ids uuid[],
    ADD COLUMN offered_slot_ids uuid[],
    ADD COLUMN verified_only    boolean NOT NULL DEFAULT false;
