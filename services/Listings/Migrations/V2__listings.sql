-- Listings schema. Versions 1.x are the shared messaging tables (outbox, inbox, due_work).
CREATE TABLE listings_placeholder (id int PRIMARY KEY);
