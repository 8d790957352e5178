-- Components (uploaded wasm) and per-attempt output: frames and progress.

-- Wasm bytes, once per tenant and content digest (sha256, hex).
CREATE TABLE component_blobs (
    tenant_id   uuid NOT NULL REFERENCES tenants (tenant_id),
    digest      text NOT NULL CHECK (digest ~ '^[0-9a-f]{64}$'),
    wasm        bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, digest)
);

-- Versions of a kind; the newest non-deprecated version runs new attempts.
CREATE TABLE components (
    tenant_id   uuid NOT NULL,
    kind        text NOT NULL,
    version     integer NOT NULL CHECK (version > 0),
    digest      text NOT NULL,
    size_bytes  integer NOT NULL,
    deprecated  boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, kind, version),
    FOREIGN KEY (tenant_id, digest) REFERENCES component_blobs (tenant_id, digest)
);

-- Frames of an attempt, sequenced 1, 2, 3… by the execution row's counter, which
-- the fenced append increments (so the lease check and the sequence are one write).
CREATE TABLE frames (
    tenant_id     uuid NOT NULL,
    execution_id  uuid NOT NULL,
    attempt_index integer NOT NULL,
    seq           bigint NOT NULL,
    frame_type    text NOT NULL,
    mode          text NOT NULL CHECK (mode IN ('durable', 'summary', 'best_effort')),
    payload       bytea NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, execution_id, attempt_index, seq),
    FOREIGN KEY (tenant_id, execution_id) REFERENCES executions (tenant_id, execution_id)
        ON DELETE CASCADE
);

ALTER TABLE executions
    ADD COLUMN frame_seq bigint NOT NULL DEFAULT 0,
    ADD COLUMN progress_percent smallint,
    ADD COLUMN progress_message text;
