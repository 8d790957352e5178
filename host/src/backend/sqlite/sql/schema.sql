-- The current SQLite schema, read from a freshly migrated database.
-- Written by scripts/dump-schema.sh; edit the migrations, never this file.

CREATE TABLE api_keys (
    key_id        BLOB PRIMARY KEY,
    tenant_id     BLOB NOT NULL REFERENCES tenants (tenant_id),
    name          TEXT NOT NULL,
    secret_sha256 BLOB NOT NULL,
    created_at    INTEGER NOT NULL,
    revoked_at    INTEGER
) STRICT;

CREATE TABLE attempts (
    tenant_id       BLOB NOT NULL,
    execution_id    BLOB NOT NULL,
    attempt_index   INTEGER NOT NULL,
    attempt_type    TEXT NOT NULL,
    lease_id        BLOB NOT NULL,
    lease_epoch     INTEGER NOT NULL,
    worker_id       TEXT NOT NULL,
    worker_instance TEXT NOT NULL,
    state           TEXT NOT NULL,
    failure         TEXT,
    started_at      INTEGER NOT NULL,
    ended_at        INTEGER,
    -- Usage reported by the attempt, per dimension (applied reports only).
    usage           TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (tenant_id, execution_id, attempt_index),
    FOREIGN KEY (tenant_id, execution_id) REFERENCES executions (tenant_id, execution_id)
        ON DELETE CASCADE
) STRICT;

CREATE TABLE budget_adjustments (
    adjustment_id  INTEGER PRIMARY KEY,
    tenant_id      BLOB NOT NULL,
    budget_id      BLOB NOT NULL,
    dimension      TEXT NOT NULL,
    delta          INTEGER NOT NULL,
    used_after     INTEGER NOT NULL,
    reason         TEXT NOT NULL,
    created_at     INTEGER NOT NULL,
    FOREIGN KEY (tenant_id, budget_id) REFERENCES budgets (tenant_id, budget_id)
        ON DELETE CASCADE
) STRICT;

CREATE TABLE budget_dimensions (
    tenant_id   BLOB NOT NULL,
    budget_id   BLOB NOT NULL,
    dimension   TEXT NOT NULL,
    soft_limit  INTEGER CHECK (soft_limit >= 0),
    hard_limit  INTEGER CHECK (hard_limit >= 0),
    used        INTEGER NOT NULL DEFAULT 0,
    -- The hard limit was reached or a report refused for crossing it: claims
    -- block what the budget covers until it is reset.
    exhausted   INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, budget_id, dimension),
    FOREIGN KEY (tenant_id, budget_id) REFERENCES budgets (tenant_id, budget_id)
        ON DELETE CASCADE,
    CHECK (soft_limit IS NOT NULL OR hard_limit IS NOT NULL)
) STRICT;

CREATE TABLE budgets (
    tenant_id          BLOB NOT NULL REFERENCES tenants (tenant_id),
    budget_id          BLOB NOT NULL,
    name               TEXT NOT NULL,
    scope              TEXT NOT NULL CHECK (scope IN ('tenant', 'flow', 'execution', 'lane')),
    -- The flow or execution id, or the lane name; '' for the tenant.
    scope_key          TEXT NOT NULL,
    on_hard_limit      TEXT NOT NULL CHECK (on_hard_limit IN ('fail', 'suspend')),
    reset_interval_ms  INTEGER CHECK (reset_interval_ms > 0),
    next_reset_at      INTEGER,
    created_at         INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, budget_id)
) STRICT;

CREATE TABLE capability_ceilings (
    tenant_id   BLOB PRIMARY KEY REFERENCES tenants (tenant_id) ON DELETE CASCADE,
    ceiling     TEXT NOT NULL,
    updated_at  INTEGER NOT NULL
) STRICT;

CREATE TABLE completion_events (
    event_id      INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id     BLOB NOT NULL,
    execution_id  BLOB NOT NULL,
    attempt_index INTEGER NOT NULL,
    outcome       TEXT NOT NULL,
    created_at    INTEGER NOT NULL
);

CREATE TABLE component_blobs (
    tenant_id BLOB NOT NULL,
    digest    TEXT NOT NULL,
    wasm      BLOB NOT NULL,
    PRIMARY KEY (tenant_id, digest)
) STRICT;

CREATE TABLE component_grants (
    tenant_id   BLOB NOT NULL REFERENCES tenants (tenant_id) ON DELETE CASCADE,
    kind        TEXT NOT NULL CHECK (length(kind) BETWEEN 1 AND 128),
    grant_spec  TEXT NOT NULL,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, kind)
) STRICT;

CREATE TABLE components (
    tenant_id  BLOB NOT NULL REFERENCES tenants (tenant_id),
    kind       TEXT NOT NULL,
    version    INTEGER NOT NULL,
    digest     TEXT NOT NULL,
    size_bytes INTEGER NOT NULL,
    deprecated INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL, imports TEXT,
    PRIMARY KEY (tenant_id, kind, version)
) STRICT;

CREATE TABLE concurrency_limits (
    tenant_id   BLOB NOT NULL REFERENCES tenants (tenant_id) ON DELETE CASCADE,
    scope       TEXT NOT NULL CHECK (scope IN ('kind', 'lane')),
    name        TEXT NOT NULL,
    max_running INTEGER NOT NULL CHECK (max_running BETWEEN 1 AND 100000),
    max_starts  INTEGER CHECK (max_starts BETWEEN 1 AND 100000),
    window_ms   INTEGER CHECK (window_ms BETWEEN 100 AND 86400000),
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, scope, name)
) STRICT;

CREATE TABLE concurrency_slots (
    tenant_id         BLOB NOT NULL REFERENCES tenants (tenant_id) ON DELETE CASCADE,
    scope             TEXT NOT NULL,
    name              TEXT NOT NULL,
    key               TEXT NOT NULL,
    window_started_at INTEGER,
    window_starts     INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, scope, name, key)
) STRICT;

CREATE TABLE config_values (
    tenant_id   BLOB NOT NULL REFERENCES tenants (tenant_id) ON DELETE CASCADE,
    name        TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 128),
    secret      INTEGER NOT NULL CHECK (secret IN (0, 1)),
    key_id      TEXT NOT NULL,
    nonce       BLOB NOT NULL,
    ciphertext  BLOB NOT NULL,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, name)
) STRICT;

CREATE TABLE executions (
    tenant_id             BLOB NOT NULL REFERENCES tenants (tenant_id),
    execution_id          BLOB NOT NULL,
    kind                  TEXT NOT NULL,
    lane                  TEXT NOT NULL,
    priority              INTEGER NOT NULL,
    required_capabilities TEXT NOT NULL,
    tags                  TEXT NOT NULL,
    input                 BLOB NOT NULL,
    policy                TEXT NOT NULL,
    idempotency_key       TEXT,

    lifecycle_phase   TEXT NOT NULL CHECK (lifecycle_phase IN
                          ('submitted', 'runnable', 'active', 'suspended', 'terminal')),
    ownership_state   TEXT NOT NULL,
    eligibility_state TEXT NOT NULL,
    blocking_reason   TEXT,
    terminal_outcome  TEXT,
    attempt_state     TEXT NOT NULL,
    attempt_index      INTEGER NOT NULL,
    lease_epoch        INTEGER NOT NULL,
    lease_id           BLOB,
    lease_expires_at   INTEGER,
    attempt_timeout_at INTEGER,
    retry_count        INTEGER NOT NULL,
    reclaim_count      INTEGER NOT NULL,
    replay_count       INTEGER NOT NULL,

    eligible_at  INTEGER NOT NULL,
    deadline_at  INTEGER,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    started_at   INTEGER,
    finished_at  INTEGER,

    result              BLOB,
    last_failure        TEXT,
    cancellation_reason TEXT,
    progress_percent    INTEGER,
    progress_message    TEXT,
    frame_seq           INTEGER NOT NULL,

    flow_id   BLOB,
    flow_key  TEXT,
    parent_id BLOB,

    -- Counts suspensions; signals consumed by a resume carry the number.
    suspension_seq        INTEGER NOT NULL,
    -- The live suspension: {condition, on_timeout}.
    suspension            TEXT,
    suspension_timeout_at INTEGER, frame_bytes INTEGER NOT NULL DEFAULT 0, public_state TEXT GENERATED ALWAYS AS (
    CASE lifecycle_phase
        WHEN 'terminal' THEN
            CASE terminal_outcome
                WHEN 'success' THEN 'completed'
                ELSE coalesce(terminal_outcome, 'failed')
            END
        WHEN 'active' THEN 'active'
        WHEN 'suspended' THEN 'suspended'
        ELSE
            CASE eligibility_state
                WHEN 'not_eligible_until_time' THEN 'delayed'
                WHEN 'blocked_by_dependencies' THEN 'waiting_children'
                WHEN 'blocked_by_budget' THEN 'rate_limited'
                WHEN 'blocked_by_quota' THEN 'rate_limited'
                ELSE 'waiting'
            END
    END
) VIRTUAL, concurrency_key TEXT
    CHECK (concurrency_key IS NULL OR length(CAST(concurrency_key AS BLOB)) BETWEEN 1 AND 256), concurrency_held TEXT
    CHECK (concurrency_held IN ('kind', 'lane')),

    PRIMARY KEY (tenant_id, execution_id),
    CHECK ((lifecycle_phase = 'active') = (lease_id IS NOT NULL))
) STRICT;

CREATE TABLE flow_edges (
    tenant_id      BLOB NOT NULL,
    upstream_id    BLOB NOT NULL,
    downstream_id  BLOB NOT NULL,
    flow_id        BLOB NOT NULL,
    pass_result    INTEGER NOT NULL DEFAULT 0,
    state          TEXT NOT NULL DEFAULT 'pending'
                       CHECK (state IN ('pending', 'satisfied', 'unsatisfied')),
    created_at     INTEGER NOT NULL,
    -- Resolution walks edges out of an upstream: this key's prefix.
    PRIMARY KEY (tenant_id, upstream_id, downstream_id),
    FOREIGN KEY (tenant_id, downstream_id) REFERENCES flow_groups (tenant_id, downstream_id)
        ON DELETE CASCADE,
    CHECK (upstream_id <> downstream_id)
) STRICT;

CREATE TABLE flow_groups (
    tenant_id      BLOB NOT NULL,
    downstream_id  BLOB NOT NULL,
    flow_id        BLOB NOT NULL,
    policy         TEXT NOT NULL CHECK (policy IN ('all_of', 'any_of', 'quorum')),
    k              INTEGER CHECK (k >= 1),
    on_satisfied   TEXT NOT NULL CHECK (on_satisfied IN ('cancel_remaining', 'let_run')),
    total          INTEGER NOT NULL DEFAULT 0,
    succeeded      INTEGER NOT NULL DEFAULT 0,
    unsatisfied    INTEGER NOT NULL DEFAULT 0,
    state          TEXT NOT NULL DEFAULT 'pending'
                       CHECK (state IN ('pending', 'satisfied', 'impossible')),
    PRIMARY KEY (tenant_id, downstream_id),
    FOREIGN KEY (tenant_id, downstream_id) REFERENCES executions (tenant_id, execution_id)
        ON DELETE CASCADE
) STRICT;

CREATE TABLE flows (
    tenant_id           BLOB NOT NULL REFERENCES tenants (tenant_id),
    flow_id             BLOB NOT NULL,
    name                TEXT NOT NULL,
    tags                TEXT NOT NULL,
    -- Bumped by every change to the graph (optimistic concurrency).
    graph_revision      INTEGER NOT NULL DEFAULT 0,
    cancelled_at        INTEGER,
    cancellation_reason TEXT,
    created_at          INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, flow_id)
) STRICT;

CREATE TABLE frames (
    tenant_id     BLOB NOT NULL,
    execution_id  BLOB NOT NULL,
    attempt_index INTEGER NOT NULL,
    seq           INTEGER NOT NULL,
    frame_type    TEXT NOT NULL,
    mode          TEXT NOT NULL,
    payload       BLOB NOT NULL,
    created_at    INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, execution_id, attempt_index, seq)
) STRICT;

CREATE TABLE idempotency_keys (
    tenant_id     BLOB NOT NULL,
    key           TEXT NOT NULL,
    execution_id  BLOB NOT NULL,
    expires_at    INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, key)
) STRICT;

CREATE TABLE lease_events (
    event_id         INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id        BLOB NOT NULL,
    execution_id     BLOB NOT NULL,
    attempt_index    INTEGER NOT NULL,
    lease_epoch      INTEGER NOT NULL,
    kind             TEXT NOT NULL,
    lease_expires_at INTEGER,
    phase            TEXT NOT NULL,
    created_at       INTEGER NOT NULL
);

CREATE TABLE schedules (
    tenant_id         BLOB NOT NULL REFERENCES tenants (tenant_id) ON DELETE CASCADE,
    schedule_id       BLOB NOT NULL,
    name              TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 128),
    spec              TEXT NOT NULL,
    input             BLOB NOT NULL,
    paused            INTEGER NOT NULL DEFAULT 0 CHECK (paused IN (0, 1)),
    next_fire_at      INTEGER NOT NULL,
    last_fire_at      INTEGER,
    last_execution_id BLOB,
    created_at        INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, schedule_id),
    UNIQUE (tenant_id, name)
) STRICT;

CREATE TABLE signal_events (
    event_id      INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id     BLOB NOT NULL,
    execution_id  BLOB NOT NULL,
    waitpoint_id  BLOB NOT NULL,
    signal_id     BLOB NOT NULL,
    name          TEXT NOT NULL,
    effect        TEXT NOT NULL,
    created_at    INTEGER NOT NULL
);

CREATE TABLE signals (
    tenant_id        BLOB NOT NULL,
    execution_id     BLOB NOT NULL,
    signal_id        BLOB NOT NULL,
    waitpoint_id     BLOB NOT NULL,
    waitpoint_key    TEXT NOT NULL,
    name             TEXT NOT NULL,
    payload          BLOB NOT NULL,
    idempotency_key  TEXT,
    -- The suspension whose resume consumed it; NULL while buffered.
    consumed_in      INTEGER,
    created_at       INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, execution_id, signal_id),
    FOREIGN KEY (tenant_id, execution_id) REFERENCES executions (tenant_id, execution_id)
        ON DELETE CASCADE
) STRICT;

CREATE TABLE steps (
    tenant_id     BLOB NOT NULL,
    execution_id  BLOB NOT NULL,
    step_index    INTEGER NOT NULL CHECK (step_index >= 0),
    name          TEXT NOT NULL CHECK (length(CAST(name AS BLOB)) BETWEEN 1 AND 128),
    kind          TEXT NOT NULL CHECK (kind IN ('completed', 'failed', 'sleep')),
    output        BLOB,
    error         TEXT,
    wake_at       INTEGER,
    size          INTEGER NOT NULL CHECK (size >= 0),
    attempt_index INTEGER NOT NULL,
    duration_ms   INTEGER NOT NULL CHECK (duration_ms >= 0),
    recorded_at   INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, execution_id, step_index),
    FOREIGN KEY (tenant_id, execution_id) REFERENCES executions (tenant_id, execution_id)
        ON DELETE CASCADE,
    CHECK ((kind = 'completed') = (output IS NOT NULL)),
    CHECK ((kind = 'failed') = (error IS NOT NULL)),
    CHECK ((kind = 'sleep') = (wake_at IS NOT NULL))
) STRICT;

CREATE TABLE stream_summaries (
    tenant_id        BLOB NOT NULL,
    execution_id     BLOB NOT NULL,
    attempt_index    INTEGER NOT NULL,
    document         TEXT NOT NULL,
    version          INTEGER NOT NULL,
    first_applied_at INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, execution_id, attempt_index)
) STRICT;

CREATE TABLE tenants (
    tenant_id   BLOB PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 128),
    created_at  INTEGER NOT NULL,
    limits      TEXT NOT NULL DEFAULT '{}'
) STRICT;

CREATE TABLE usage_reports (
    tenant_id     BLOB NOT NULL,
    execution_id  BLOB NOT NULL,
    dedup_key     TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, execution_id, dedup_key),
    FOREIGN KEY (tenant_id, execution_id) REFERENCES executions (tenant_id, execution_id)
        ON DELETE CASCADE
) STRICT;

CREATE TABLE waitpoint_keys (
    kid           TEXT PRIMARY KEY,
    sealed_by     TEXT NOT NULL,
    nonce         BLOB NOT NULL,
    ciphertext    BLOB NOT NULL,
    created_at    INTEGER NOT NULL,
    activates_at  INTEGER NOT NULL,
    retires_at    INTEGER
) STRICT;

CREATE TABLE waitpoints (
    tenant_id      BLOB NOT NULL,
    execution_id   BLOB NOT NULL,
    waitpoint_id   BLOB NOT NULL,
    waitpoint_key  TEXT NOT NULL,
    state          TEXT NOT NULL CHECK (state IN ('pending', 'active', 'closed')),
    expires_at     INTEGER,
    created_at     INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, execution_id, waitpoint_id),
    FOREIGN KEY (tenant_id, execution_id) REFERENCES executions (tenant_id, execution_id)
        ON DELETE CASCADE
) STRICT;

CREATE INDEX api_keys_tenant_idx ON api_keys (tenant_id, created_at);

CREATE INDEX attempts_started_idx ON attempts (tenant_id, started_at);

CREATE INDEX budget_adjustments_budget_idx
    ON budget_adjustments (tenant_id, budget_id, adjustment_id);

CREATE INDEX budget_dimensions_exhausted_idx ON budget_dimensions (tenant_id, budget_id)
    WHERE exhausted;

CREATE INDEX budgets_reset_idx ON budgets (next_reset_at) WHERE next_reset_at IS NOT NULL;

CREATE INDEX budgets_scope_idx ON budgets (tenant_id, scope, scope_key);

CREATE INDEX completion_events_tenant_idx ON completion_events (tenant_id, event_id);

CREATE INDEX executions_active_idx ON executions (tenant_id, lease_expires_at)
    WHERE lifecycle_phase = 'active';

CREATE INDEX executions_attempt_timeout_idx ON executions (attempt_timeout_at)
    WHERE lifecycle_phase = 'active' AND attempt_timeout_at IS NOT NULL;

CREATE INDEX executions_budget_blocked_idx ON executions (tenant_id, execution_id)
    WHERE eligibility_state = 'blocked_by_budget';

CREATE INDEX executions_children_idx ON executions (tenant_id, parent_id)
    WHERE parent_id IS NOT NULL;

CREATE INDEX executions_claim_idx ON executions (tenant_id, lane, priority DESC, eligible_at, execution_id)
    WHERE lifecycle_phase = 'runnable' AND eligibility_state = 'eligible_now';

CREATE INDEX executions_concurrency_blocked_idx ON executions
    (tenant_id, concurrency_key, priority DESC, eligible_at, execution_id)
    WHERE eligibility_state = 'blocked_by_concurrency_key';

CREATE INDEX executions_concurrency_held_groups_idx ON executions
    (tenant_id, concurrency_key, kind, lane, priority DESC, eligible_at, execution_id)
    WHERE eligibility_state = 'blocked_by_concurrency_key';

CREATE INDEX executions_concurrency_key_idx ON executions
    (tenant_id, concurrency_key, priority DESC, eligible_at, execution_id)
    WHERE concurrency_key IS NOT NULL AND lifecycle_phase = 'runnable'
      AND eligibility_state = 'eligible_now';

CREATE INDEX executions_concurrency_running_idx ON executions
    (tenant_id, concurrency_key, concurrency_held)
    WHERE concurrency_held IS NOT NULL AND lifecycle_phase = 'active';

CREATE INDEX executions_deadline_idx ON executions (deadline_at)
    WHERE lifecycle_phase <> 'terminal' AND deadline_at IS NOT NULL;

CREATE INDEX executions_delayed_idx ON executions (eligible_at)
    WHERE lifecycle_phase = 'runnable' AND eligibility_state = 'not_eligible_until_time';

CREATE UNIQUE INDEX executions_flow_key_idx ON executions (tenant_id, flow_id, flow_key)
    WHERE flow_id IS NOT NULL;

CREATE INDEX executions_state_idx ON executions (tenant_id, public_state, execution_id);

CREATE INDEX executions_suspension_timeout_idx ON executions (suspension_timeout_at)
    WHERE lifecycle_phase = 'suspended' AND suspension_timeout_at IS NOT NULL;

CREATE INDEX flow_edges_downstream_idx ON flow_edges (tenant_id, downstream_id);

CREATE INDEX flow_edges_flow_idx ON flow_edges (tenant_id, flow_id);

CREATE INDEX lease_events_execution_idx ON lease_events (tenant_id, execution_id, event_id);

CREATE INDEX lease_events_tenant_idx ON lease_events (tenant_id, event_id);

CREATE INDEX schedules_due_idx ON schedules (next_fire_at) WHERE paused = 0;

CREATE INDEX signal_events_tenant_idx ON signal_events (tenant_id, event_id);

CREATE INDEX signals_consumed_idx ON signals (tenant_id, execution_id, consumed_in);

CREATE UNIQUE INDEX signals_idempotency_idx ON signals (tenant_id, execution_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

CREATE UNIQUE INDEX waitpoints_open_key_idx ON waitpoints (tenant_id, execution_id, waitpoint_key)
    WHERE state <> 'closed';

CREATE TRIGGER component_blobs_digest_insert BEFORE INSERT ON component_blobs
WHEN length(NEW.digest) <> 64 OR NEW.digest GLOB '*[^0-9a-f]*'
BEGIN
    SELECT RAISE(ABORT, 'CHECK constraint failed: component_blobs digest');
END;

CREATE TRIGGER component_blobs_digest_update BEFORE UPDATE OF digest ON component_blobs
WHEN length(NEW.digest) <> 64 OR NEW.digest GLOB '*[^0-9a-f]*'
BEGIN
    SELECT RAISE(ABORT, 'CHECK constraint failed: component_blobs digest');
END;
