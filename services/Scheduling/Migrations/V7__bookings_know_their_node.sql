-- A placement reads the bookings of the offered nodes over the match's window. Through the slots, that was one probe of
-- the exclusion constraint's GiST index per slot (272 for an offer of 34 nodes of 8), 3.4 ms a placement at 18 orders/s
-- and the largest statement of the order path. A booking now names its node, and a btree index over (node, end) finds
-- a node's bookings that end after a moment in one range scan, however many ended before (bookings are never deleted).
-- The node is the slot's: the foreign key is on the pair, so it cannot say otherwise.
ALTER TABLE gpu_slots ADD CONSTRAINT gpu_slots_id_node UNIQUE (id, node_id);
ALTER TABLE bookings ADD COLUMN node_id uuid;
UPDATE bookings b SET node_id = s.node_id FROM gpu_slots s WHERE s.id = b.slot_id;
ALTER TABLE bookings ALTER COLUMN node_id SET NOT NULL;
ALTER TABLE bookings
    DROP CONSTRAINT bookings_slot_id_fkey,
    ADD CONSTRAINT bookings_slot_of_node FOREIGN KEY (slot_id, node_id) REFERENCES gpu_slots (id, node_id);
CREATE INDEX bookings_node_end ON bookings (node_id, upper(during));
