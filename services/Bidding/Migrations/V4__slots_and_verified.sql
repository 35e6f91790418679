-- Round 3: offers of part of their nodes carry their slot ids; orders may ask for verified capacity only.

-- The offered accelerator slots when the offer is part of its nodes; null means whole nodes (every slot of node_ids).
ALTER TABLE offers ADD COLUMN slot_ids uuid[];

-- The renter's wish that Scheduling place the order on verified nodes only (Bidding passes it on in OrderMatched).
ALTER TABLE orders ADD COLUMN verified_only boolean NOT NULL DEFAULT false;
