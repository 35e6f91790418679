-- Listings schema: the accelerator catalog, providers' clusters, nodes and their GPU slots, and capacity offers.
-- Versions 1.x are the shared messaging tables (outbox, inbox, due_work).

-- The catalog of accelerator models. bf16_tflops is the vendor's dense (non-sparse) BF16 tensor figure,
-- rounded; NULL where the vendor publishes none (the card is then rated by its FP16 figure in `notes`).
CREATE TABLE accelerators (
    id           text    PRIMARY KEY CHECK (id ~ '^[a-z0-9]+(-[a-z0-9]+)*$'),
    vendor       text    NOT NULL,
    name         text    NOT NULL,
    memory_gb    int     NOT NULL CHECK (memory_gb > 0),
    bf16_tflops  numeric CHECK (bf16_tflops > 0),
    interconnect text    NOT NULL,
    notes        text
);

INSERT INTO accelerators (id, vendor, name, memory_gb, bf16_tflops, interconnect, notes) VALUES
    ('h100-sxm',    'NVIDIA',    'H100 SXM5 80GB',          80,  989,  'nvlink4',         NULL),
    ('h100-pcie',   'NVIDIA',    'H100 PCIe 80GB',          80,  756,  'pcie5',           NULL),
    ('h200',        'NVIDIA',    'H200 SXM 141GB',          141, 989,  'nvlink4',         NULL),
    ('a100-80gb',   'NVIDIA',    'A100 SXM4 80GB',          80,  312,  'nvlink3',         NULL),
    ('l40s',        'NVIDIA',    'L40S 48GB',               48,  362,  'pcie4',           NULL),
    ('rtx-4090',    'NVIDIA',    'GeForce RTX 4090 24GB',   24,  165,  'pcie4',           NULL),
    ('mi300x',      'AMD',       'Instinct MI300X 192GB',   192, 1307, 'infinity-fabric', NULL),
    ('ascend-910b', 'Huawei',    'Ascend 910B 64GB',        64,  320,  'hccs',            'BF16 figure approximate (varies by 910B bin)'),
    ('kunlun-r200', 'Baidu',     'Kunlunxin R200 32GB',     32,  NULL, 'pcie4',           '128 TFLOPS FP16'),
    ('mlu370',      'Cambricon', 'MLU370-X8 48GB',          48,  96,   'mlu-link',        NULL),
    ('dcu-z100',    'Hygon',     'DCU Z100 32GB',           32,  NULL, 'xgmi',            'no published BF16 figure');

CREATE TABLE clusters (
    id              uuid        PRIMARY KEY,
    provider_org_id uuid        NOT NULL,
    name            text        NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    region          text        NOT NULL CHECK (region ~ '^[a-z0-9]+(-[a-z0-9]+)*$'),
    jurisdiction    text        NOT NULL CHECK (jurisdiction ~ '^[A-Z]{2}$'),
    created_at      timestamptz NOT NULL
);
CREATE INDEX clusters_provider ON clusters (provider_org_id);

CREATE TABLE nodes (
    id                uuid        PRIMARY KEY,
    cluster_id        uuid        NOT NULL REFERENCES clusters,
    hostname          text        NOT NULL,
    accelerator_model text        NOT NULL REFERENCES accelerators,
    accelerator_count int         NOT NULL CHECK (accelerator_count BETWEEN 1 AND 16),
    created_at        timestamptz NOT NULL,
    -- Hostnames are case-insensitive; the service stores them lower-cased.
    CONSTRAINT nodes_hostname_unique UNIQUE (cluster_id, hostname)
);

-- One row per physical accelerator: what Scheduling books by time.
CREATE TABLE gpu_slots (
    id      uuid PRIMARY KEY,
    node_id uuid NOT NULL REFERENCES nodes,
    index   int  NOT NULL CHECK (index BETWEEN 0 AND 15),
    UNIQUE (node_id, index)
);

CREATE TABLE offers (
    id                    uuid        PRIMARY KEY,
    provider_org_id       uuid        NOT NULL,
    cluster_id            uuid        NOT NULL REFERENCES clusters,
    -- In the order the provider gave them; offer_nodes holds the same set for the overlap constraint.
    node_ids              uuid[]      NOT NULL CHECK (cardinality(node_ids) > 0),
    accelerator_model     text        NOT NULL REFERENCES accelerators,
    region                text        NOT NULL,
    jurisdiction          text        NOT NULL,
    accelerator_count     int         NOT NULL CHECK (accelerator_count > 0),
    window_start          timestamptz NOT NULL,
    window_end            timestamptz NOT NULL,
    ask_amount            bigint      NOT NULL CHECK (ask_amount > 0),
    ask_currency          text        NOT NULL CHECK (ask_currency ~ '^[A-Z]{3}$'),
    min_lease_seconds     int         NOT NULL CHECK (min_lease_seconds > 0),
    interruptible_allowed boolean     NOT NULL,
    status                text        NOT NULL CHECK (status IN ('active', 'withdrawn')),
    created_at            timestamptz NOT NULL,
    withdrawn_at          timestamptz,
    CHECK (window_end > window_start),
    CHECK ((status = 'withdrawn') = (withdrawn_at IS NOT NULL))
);
CREATE INDEX offers_provider ON offers (provider_org_id);
-- Search: newest first (default) and cheapest first within a model and currency, over active offers only.
CREATE INDEX offers_active_recent ON offers (created_at DESC, id DESC) WHERE status = 'active';
CREATE INDEX offers_active_price ON offers (accelerator_model, ask_currency, ask_amount, id) WHERE status = 'active';
CREATE INDEX offers_active_place ON offers (region, jurisdiction) WHERE status = 'active';

-- A node is offered by at most one active offer at any instant, whatever the application does.
-- Rows live while their offer is active; withdrawing the offer deletes them.
CREATE TABLE offer_nodes (
    offer_id uuid      NOT NULL REFERENCES offers,
    node_id  uuid      NOT NULL REFERENCES nodes,
    during   tstzrange NOT NULL,
    PRIMARY KEY (offer_id, node_id),
    CONSTRAINT offer_nodes_no_overlap EXCLUDE USING gist (node_id WITH =, during WITH &&)
);
