-- Topology, health and maintenance of the node copy; provisioning, preemption, extension and downtime of leases.

ALTER TABLE nodes
    ADD COLUMN nvlink_domain text,
    ADD COLUMN fabric        text,
    ADD COLUMN fabric_gbps   int         NOT NULL DEFAULT 0,
    ADD COLUMN health        text        NOT NULL DEFAULT 'healthy' CHECK (health IN ('healthy', 'unhealthy')),
    ADD COLUMN verified      boolean     NOT NULL DEFAULT true,
    ADD COLUMN health_reason text,
    -- The time of the last health event applied: an older one arriving late changes nothing.
    ADD COLUMN health_at     timestamptz;

CREATE TABLE node_maintenance (
    id           uuid        PRIMARY KEY,
    node_id      uuid        NOT NULL,
    during       tstzrange   NOT NULL,
    cancelled_at timestamptz
);
CREATE INDEX node_maintenance_node ON node_maintenance USING gist (node_id, during) WHERE cancelled_at IS NULL;

ALTER TABLE leases DROP CONSTRAINT leases_status_check;
ALTER TABLE leases DROP CONSTRAINT leases_check1;
ALTER TABLE leases
    ADD CONSTRAINT leases_status_check
        CHECK (status IN ('scheduled', 'provisioning', 'active', 'completed', 'cancelled', 'failed', 'preempted')),
    -- A terminal lease always says when and why it ended.
    ADD CONSTRAINT leases_terminal_has_reason
        CHECK (status IN ('scheduled', 'provisioning', 'active')
               OR (ended_at IS NOT NULL AND status_reason IS NOT NULL AND cause IS NOT NULL)),
    ADD COLUMN interruptible             boolean NOT NULL DEFAULT false,
    ADD COLUMN preemption_notice_seconds int     NOT NULL DEFAULT 0,
    ADD COLUMN sla_level                 text    NOT NULL DEFAULT 'standard',
    ADD COLUMN preempt_at                timestamptz,
    ADD COLUMN ssh_public_key            text,
    ADD COLUMN container_image           text;

-- A replacement moves a lease to other slots mid-window: the old booking is shrunk to the moment of the move and
-- marked released, a new one is added; a lease may come back to a slot later, so (lease, slot) is no longer unique.
ALTER TABLE bookings DROP CONSTRAINT bookings_pkey;
ALTER TABLE bookings ADD COLUMN id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY;
ALTER TABLE bookings ADD COLUMN released boolean NOT NULL DEFAULT false;
CREATE INDEX bookings_lease ON bookings (lease_id);

-- Time a running lease could not be used (a node failed until replacement capacity ran, or until the lease ended).
CREATE TABLE lease_downtime (
    id       bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    lease_id uuid        NOT NULL REFERENCES leases (id),
    node_id  uuid        NOT NULL,
    start_at timestamptz NOT NULL,
    end_at   timestamptz,
    reason   text        NOT NULL,
    cause    text        NOT NULL CHECK (cause IN ('renter', 'provider', 'platform', 'market')),
    CHECK (end_at IS NULL OR end_at >= start_at)
);
CREATE INDEX lease_downtime_lease ON lease_downtime (lease_id);

-- Start/stop instructions for node agents, acknowledged by them (Scheduling:RequireAgentAck).
CREATE TABLE assignments (
    id          uuid        PRIMARY KEY,
    lease_id    uuid        NOT NULL REFERENCES leases (id),
    node_id     uuid        NOT NULL,
    action      text        NOT NULL CHECK (action IN ('start', 'stop')),
    slot_ids    uuid[]      NOT NULL,
    status      text        NOT NULL CHECK (status IN ('pending', 'running', 'failed', 'stopped', 'superseded')),
    created_at  timestamptz NOT NULL,
    acked_at    timestamptz,
    ack_detail  text
);
CREATE INDEX assignments_node_pending ON assignments (node_id, created_at) WHERE acked_at IS NULL;
CREATE INDEX assignments_lease ON assignments (lease_id);
