-- Bidding keeps each model's active matches in memory between clearings (Orders/ActiveMatches.cs) and reads only the
-- matches changed since its copy. Every insert and update of a match records the model it belongs to and the id of the
-- transaction that wrote it; a reader that knows the oldest transaction still running when it last read (the xmin of
-- its snapshot) reads again exactly the matches written by that one or later ones. A trigger, so no writer can forget it.
ALTER TABLE matches
    ADD COLUMN model       text,
    ADD COLUMN changed_xid bigint;
UPDATE matches m SET model = o.accelerator_model FROM offers o WHERE o.offer_id = m.offer_id;

-- The schema's own offers, whatever the writer's search_path.
CREATE FUNCTION matches_record_change() RETURNS trigger LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        NEW.model := (SELECT accelerator_model FROM offers WHERE offer_id = NEW.offer_id);
    ELSE
        NEW.model := OLD.model;
    END IF;
    NEW.changed_xid := pg_current_xact_id()::text::bigint;
    RETURN NEW;
END $$;
CREATE TRIGGER matches_changes BEFORE INSERT OR UPDATE ON matches FOR EACH ROW EXECUTE FUNCTION matches_record_change();

CREATE INDEX matches_model_changes ON matches (model, changed_xid);
CREATE INDEX matches_model_active ON matches (model, end_at) WHERE state = 'active';
