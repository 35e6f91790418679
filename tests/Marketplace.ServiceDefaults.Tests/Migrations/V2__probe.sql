-- Effects of the probe consumer and due-work handler. Deliberately no unique key: a second effect must show as a
-- second row, so the tests see what the inbox and the due-work locking prevent.
CREATE TABLE probe_effects (id bigserial PRIMARY KEY, key text NOT NULL, at timestamptz NOT NULL DEFAULT now());
