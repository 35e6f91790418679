-- Round 2: the rest of the catalog, cluster fabric and compliance, node inventory and health, maintenance windows,
-- offer terms (several windows, interruptible floor, preemption notice, SLA) and what search filters on.

INSERT INTO accelerators (id, vendor, name, memory_gb, bf16_tflops, interconnect, notes) VALUES
    ('a100-40gb', 'NVIDIA', 'A100 SXM4 40GB', 40,  312,  'nvlink3', NULL),
    ('b200',      'NVIDIA', 'B200 SXM 180GB', 180, 2250, 'nvlink5', NULL);

-- Retired models stay (nodes reference them) but providers can no longer register new nodes of them.
ALTER TABLE accelerators ADD COLUMN retired boolean NOT NULL DEFAULT false;

ALTER TABLE clusters
    ADD COLUMN fabric          text NOT NULL DEFAULT 'ethernet' CHECK (fabric IN ('infiniband', 'roce', 'ethernet')),
    ADD COLUMN fabric_gbps     int  NOT NULL DEFAULT 0 CHECK (fabric_gbps BETWEEN 0 AND 12800),
    ADD COLUMN datacenter_tier int  CHECK (datacenter_tier BETWEEN 1 AND 4),
    -- Healthy node-time / observed node-time over the rolling 30 days, in millionths; NULL until observed.
    ADD COLUMN reliability_ppm int  CHECK (reliability_ppm BETWEEN 0 AND 1000000);

-- Compliance attestations; one counts only until it expires. level is China's MLPS level (1-5), only for mlps.
CREATE TABLE cluster_attestations (
    cluster_id   uuid        NOT NULL REFERENCES clusters,
    kind         text        NOT NULL CHECK (kind IN ('data-residency', 'iso27001', 'mlps', 'soc2')),
    level        int         CHECK (level BETWEEN 1 AND 5),
    evidence_ref text        NOT NULL CHECK (length(evidence_ref) BETWEEN 1 AND 500),
    expires_at   timestamptz NOT NULL,
    PRIMARY KEY (cluster_id, kind),
    CHECK ((kind = 'mlps') = (level IS NOT NULL))
);
CREATE INDEX cluster_attestations_kind ON cluster_attestations (kind, expires_at, level);

ALTER TABLE nodes
    ADD COLUMN gpu_memory_gb     int,
    ADD COLUMN cpu_cores         int  CHECK (cpu_cores BETWEEN 1 AND 4096),
    ADD COLUMN ram_gb            int  CHECK (ram_gb BETWEEN 1 AND 1048576),
    ADD COLUMN disk_gb           int  CHECK (disk_gb BETWEEN 1 AND 10485760),
    -- Nodes of one cluster with the same label share an NVLink/NVSwitch domain (an NVL72 rack); NULL: the node alone.
    ADD COLUMN nvlink_domain     text CHECK (length(nvlink_domain) BETWEEN 1 AND 100),
    -- unknown until the node's agent first reports.
    ADD COLUMN health            text NOT NULL DEFAULT 'unknown' CHECK (health IN ('unknown', 'healthy', 'unhealthy')),
    -- True while the agent's observed inventory equals the declared one.
    ADD COLUMN verified          boolean NOT NULL DEFAULT false,
    ADD COLUMN status_reason     text,
    ADD COLUMN last_heartbeat_at timestamptz,
    ADD COLUMN observed          jsonb,
    ADD COLUMN reliability_ppm   int CHECK (reliability_ppm BETWEEN 0 AND 1000000);
UPDATE nodes n SET gpu_memory_gb = a.memory_gb FROM accelerators a WHERE a.id = n.accelerator_model;
ALTER TABLE nodes ALTER COLUMN gpu_memory_gb SET NOT NULL;
-- The heartbeat sweep looks only at healthy nodes, oldest heartbeat first.
CREATE INDEX nodes_healthy_heartbeat ON nodes (last_heartbeat_at) WHERE health = 'healthy';
CREATE INDEX nodes_cluster ON nodes (cluster_id);

-- Which accelerators of a node share an NVLink (or HCCS, Infinity Fabric ...) island; NULL: PCIe only.
ALTER TABLE gpu_slots ADD COLUMN nvlink_island int CHECK (nvlink_island >= 0);

-- Health intervals, the ground truth of reliability: one open period per node at most.
CREATE TABLE node_health_periods (
    node_id    uuid        NOT NULL REFERENCES nodes,
    healthy    boolean     NOT NULL,
    started_at timestamptz NOT NULL,
    ended_at   timestamptz,
    PRIMARY KEY (node_id, started_at),
    CHECK (ended_at >= started_at)
);
CREATE UNIQUE INDEX node_health_periods_open ON node_health_periods (node_id) WHERE ended_at IS NULL;

CREATE TABLE node_maintenance (
    id           uuid        PRIMARY KEY,
    node_id      uuid        NOT NULL REFERENCES nodes,
    during       tstzrange   NOT NULL CHECK (NOT isempty(during)),
    reason       text        CHECK (length(reason) <= 500),
    created_at   timestamptz NOT NULL,
    cancelled_at timestamptz
);
CREATE INDEX node_maintenance_active ON node_maintenance USING gist (node_id, during) WHERE cancelled_at IS NULL;

ALTER TABLE offers
    -- The availability windows inside [window_start, window_end) (one window when the provider gave none).
    ADD COLUMN windows                    tstzmultirange,
    ADD COLUMN interruptible_floor_amount bigint CHECK (interruptible_floor_amount > 0),
    ADD COLUMN preemption_notice_seconds  int  NOT NULL DEFAULT 0 CHECK (preemption_notice_seconds BETWEEN 0 AND 86400),
    ADD COLUMN sla_level                  text NOT NULL DEFAULT 'standard' CHECK (sla_level IN ('none', 'standard', 'premium')),
    -- Copied from the nodes and the cluster at publication (neither changes afterwards): the gang shape search filters on.
    ADD COLUMN node_count                 int,
    ADD COLUMN per_node                   int,
    ADD COLUMN fabric                     text,
    ADD COLUMN fabric_gbps                int,
    -- Kept current by the health monitor: every node verified and healthy; healthy time / observed time of its nodes.
    ADD COLUMN ready                      boolean NOT NULL DEFAULT false,
    ADD COLUMN reliability_ppm            int CHECK (reliability_ppm BETWEEN 0 AND 1000000),
    ADD COLUMN updated_at                 timestamptz;
UPDATE offers o SET windows = tstzmultirange(tstzrange(o.window_start, o.window_end)),
                    node_count = cardinality(o.node_ids),
                    per_node = (SELECT min(n.accelerator_count) FROM nodes n WHERE n.id = ANY(o.node_ids)),
                    fabric = c.fabric, fabric_gbps = c.fabric_gbps
FROM clusters c WHERE c.id = o.cluster_id;
ALTER TABLE offers
    ALTER COLUMN windows SET NOT NULL, ALTER COLUMN node_count SET NOT NULL, ALTER COLUMN per_node SET NOT NULL,
    ALTER COLUMN fabric SET NOT NULL, ALTER COLUMN fabric_gbps SET NOT NULL,
    ADD CHECK (window_start = lower(windows) AND window_end = upper(windows)),
    ADD CHECK (interruptible_floor_amount IS NULL OR (interruptible_allowed AND interruptible_floor_amount <= ask_amount));

-- Several windows of one offer: one row per node and window (the exclusion constraint still keeps a node in one
-- active offer at any instant, including two windows of the same offer).
ALTER TABLE offer_nodes DROP CONSTRAINT offer_nodes_pkey;
CREATE INDEX offer_nodes_offer ON offer_nodes (offer_id);

-- Search within a market (a model in a region), cheapest first; by reliability (best first); by gang shape.
CREATE INDEX offers_active_market ON offers (accelerator_model, region, ask_currency, ask_amount, id) WHERE status = 'active';
CREATE INDEX offers_active_reliability ON offers ((coalesce(reliability_ppm, -1)) DESC, id DESC) WHERE status = 'active';
CREATE INDEX offers_active_shape ON offers (accelerator_model, per_node, fabric) WHERE status = 'active';
