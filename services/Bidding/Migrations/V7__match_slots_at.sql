-- When Scheduling said which accelerators a match holds (LeaseScheduled.At, or LeaseSlotsMoved.At after a node failure
-- moved its lease): of two slot sets for one match, the later one wins, whichever event is consumed first.
ALTER TABLE matches ADD COLUMN slot_ids_at timestamptz;
