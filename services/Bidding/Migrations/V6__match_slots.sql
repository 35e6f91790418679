-- The accelerators Scheduling booked for a match (LeaseScheduled.SlotIds); NULL while the match is in flight.
-- A placed match blocks exactly these accelerators for its whole window (docs/market.md, known issue 8).
ALTER TABLE matches ADD COLUMN slot_ids uuid[];
