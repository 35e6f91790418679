-- Offers of part of a node: an offer claims accelerator slots, not whole nodes. A whole-node offer claims every slot of
-- its nodes; an offer of part of a node claims the slots Listings chose for it. A slot is in at most one active offer at
-- any instant, whatever the application does (the exclusion constraint that offer_nodes kept per node, now per slot).

-- The offered slots of an offer of part of its nodes (node by node in the offer's order, then by index); NULL: whole nodes.
ALTER TABLE offers ADD COLUMN slot_ids uuid[] CHECK (slot_ids IS NULL OR cardinality(slot_ids) = accelerator_count);

-- One row per slot and window while the offer is active; withdrawing the offer deletes them.
CREATE TABLE offer_slots (
    offer_id uuid      NOT NULL REFERENCES offers,
    node_id  uuid      NOT NULL REFERENCES nodes,
    slot_id  uuid      NOT NULL REFERENCES gpu_slots,
    during   tstzrange NOT NULL,
    CONSTRAINT offer_slots_no_overlap EXCLUDE USING gist (slot_id WITH =, during WITH &&)
);
CREATE INDEX offer_slots_offer ON offer_slots (offer_id);
-- A node's health changes the readiness of every active offer on it; a new offer looks up what is taken on its nodes.
CREATE INDEX offer_slots_node ON offer_slots (node_id);

INSERT INTO offer_slots (offer_id, node_id, slot_id, during)
SELECT n.offer_id, n.node_id, s.id, n.during FROM offer_nodes n JOIN gpu_slots s ON s.node_id = n.node_id;
DROP TABLE offer_nodes;
