-- The current Postgres schema, read from a freshly migrated database.
-- Written by scripts/dump-schema.sh; edit the migrations, never this file.

CREATE TABLE api_keys (
    key_id uuid NOT NULL,
    tenant_id uuid NOT NULL,
    name text NOT NULL,
    secret_sha256 bytea NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    revoked_at timestamp with time zone,
    CONSTRAINT api_keys_name_check CHECK (((length(name) >= 1) AND (length(name) <= 128))),
    CONSTRAINT api_keys_pkey PRIMARY KEY (key_id),
    CONSTRAINT api_keys_secret_sha256_check CHECK ((length(secret_sha256) = 32)),
    CONSTRAINT api_keys_tenant_id_fkey FOREIGN KEY (tenant_id) REFERENCES tenants(tenant_id)
);

CREATE TABLE attempts (
    tenant_id uuid NOT NULL,
    execution_id uuid NOT NULL,
    attempt_index integer NOT NULL,
    attempt_type text NOT NULL,
    lease_id uuid NOT NULL,
    lease_epoch bigint NOT NULL,
    worker_id text NOT NULL,
    worker_instance text NOT NULL,
    state text NOT NULL,
    failure jsonb,
    started_at timestamp with time zone DEFAULT now() NOT NULL,
    ended_at timestamp with time zone,
    usage jsonb DEFAULT '{}'::jsonb NOT NULL,
    CONSTRAINT attempts_attempt_type_check CHECK ((attempt_type = ANY (ARRAY['initial'::text, 'retry'::text, 'reclaim'::text, 'replay'::text, 'delayed'::text]))),
    CONSTRAINT attempts_pkey PRIMARY KEY (tenant_id, execution_id, attempt_index),
    CONSTRAINT attempts_state_check CHECK ((state = ANY (ARRAY['running'::text, 'suspended'::text, 'succeeded'::text, 'failed'::text, 'cancelled'::text, 'delayed'::text, 'lease_expired'::text, 'expired'::text, 'revoked'::text])))
) WITH (fillfactor=50);

CREATE TABLE budget_adjustments (
    tenant_id uuid NOT NULL,
    budget_id uuid NOT NULL,
    adjustment_id bigint NOT NULL,
    dimension text NOT NULL,
    delta bigint NOT NULL,
    used_after bigint NOT NULL,
    reason text NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT budget_adjustments_pkey PRIMARY KEY (tenant_id, budget_id, adjustment_id),
    CONSTRAINT budget_adjustments_tenant_id_budget_id_fkey FOREIGN KEY (tenant_id, budget_id) REFERENCES budgets(tenant_id, budget_id) ON DELETE CASCADE
);

CREATE TABLE budget_dimensions (
    tenant_id uuid NOT NULL,
    budget_id uuid NOT NULL,
    dimension text NOT NULL,
    soft_limit bigint,
    hard_limit bigint,
    used bigint DEFAULT 0 NOT NULL,
    exhausted boolean DEFAULT false NOT NULL,
    CONSTRAINT budget_dimensions_check CHECK (((soft_limit IS NOT NULL) OR (hard_limit IS NOT NULL))),
    CONSTRAINT budget_dimensions_hard_limit_check CHECK ((hard_limit >= 0)),
    CONSTRAINT budget_dimensions_pkey PRIMARY KEY (tenant_id, budget_id, dimension),
    CONSTRAINT budget_dimensions_soft_limit_check CHECK ((soft_limit >= 0)),
    CONSTRAINT budget_dimensions_tenant_id_budget_id_fkey FOREIGN KEY (tenant_id, budget_id) REFERENCES budgets(tenant_id, budget_id) ON DELETE CASCADE
);

CREATE TABLE budgets (
    tenant_id uuid NOT NULL,
    budget_id uuid NOT NULL,
    name text NOT NULL,
    scope text NOT NULL,
    scope_key text NOT NULL,
    on_hard_limit text NOT NULL,
    reset_interval_ms bigint,
    next_reset_at timestamp with time zone,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT budgets_on_hard_limit_check CHECK ((on_hard_limit = ANY (ARRAY['fail'::text, 'suspend'::text]))),
    CONSTRAINT budgets_pkey PRIMARY KEY (tenant_id, budget_id),
    CONSTRAINT budgets_reset_interval_ms_check CHECK ((reset_interval_ms > 0)),
    CONSTRAINT budgets_scope_check CHECK ((scope = ANY (ARRAY['tenant'::text, 'flow'::text, 'execution'::text, 'lane'::text]))),
    CONSTRAINT budgets_tenant_id_fkey FOREIGN KEY (tenant_id) REFERENCES tenants(tenant_id)
);

CREATE TABLE capability_ceilings (
    tenant_id uuid NOT NULL,
    ceiling jsonb NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT capability_ceilings_pkey PRIMARY KEY (tenant_id),
    CONSTRAINT capability_ceilings_tenant_id_fkey FOREIGN KEY (tenant_id) REFERENCES tenants(tenant_id) ON DELETE CASCADE
);

CREATE TABLE completion_event_batches (
    tenant_id uuid NOT NULL,
    event_id bigint DEFAULT (nextval('completion_event_batch_seq'::regclass) * 1048576) NOT NULL,
    txid bigint DEFAULT ((pg_current_xact_id())::text)::bigint NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    execution_ids uuid[] NOT NULL,
    attempt_indexes integer[] NOT NULL,
    outcomes "char"[] NOT NULL,
    linked boolean[] NOT NULL,
    CONSTRAINT completion_event_batches_check CHECK ((((cardinality(execution_ids) >= 1) AND (cardinality(execution_ids) <= 1048575)) AND (cardinality(attempt_indexes) = cardinality(execution_ids)) AND (cardinality(outcomes) = cardinality(execution_ids)) AND (cardinality(linked) = cardinality(execution_ids)))),
    CONSTRAINT completion_event_batches_outcomes_check CHECK ((outcomes <@ '{s,f,c,e,k}'::"char"[])),
    CONSTRAINT completion_event_batches_pkey PRIMARY KEY (tenant_id, txid, event_id)
) WITH (toast_tuple_target=8160);

CREATE TABLE completion_events (
    tenant_id uuid NOT NULL,
    event_id bigint NOT NULL,
    execution_id uuid NOT NULL,
    attempt_index integer NOT NULL,
    outcome text NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    txid bigint DEFAULT ((pg_current_xact_id())::text)::bigint NOT NULL,
    linked boolean,
    CONSTRAINT completion_events_pkey PRIMARY KEY (tenant_id, txid, event_id)
);

CREATE TABLE component_blobs (
    tenant_id uuid NOT NULL,
    digest text NOT NULL,
    wasm bytea NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT component_blobs_digest_check CHECK ((digest ~ '^[0-9a-f]{64}$'::text)),
    CONSTRAINT component_blobs_pkey PRIMARY KEY (tenant_id, digest),
    CONSTRAINT component_blobs_tenant_id_fkey FOREIGN KEY (tenant_id) REFERENCES tenants(tenant_id)
);

CREATE TABLE component_grants (
    tenant_id uuid NOT NULL,
    kind text NOT NULL,
    grant_spec jsonb NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT component_grants_kind_check CHECK (((length(kind) >= 1) AND (length(kind) <= 128))),
    CONSTRAINT component_grants_pkey PRIMARY KEY (tenant_id, kind),
    CONSTRAINT component_grants_tenant_id_fkey FOREIGN KEY (tenant_id) REFERENCES tenants(tenant_id) ON DELETE CASCADE
);

CREATE TABLE components (
    tenant_id uuid NOT NULL,
    kind text NOT NULL,
    version integer NOT NULL,
    digest text NOT NULL,
    size_bytes integer NOT NULL,
    deprecated boolean DEFAULT false NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    imports jsonb,
    CONSTRAINT components_pkey PRIMARY KEY (tenant_id, kind, version),
    CONSTRAINT components_tenant_id_digest_fkey FOREIGN KEY (tenant_id, digest) REFERENCES component_blobs(tenant_id, digest),
    CONSTRAINT components_version_check CHECK ((version > 0))
);

CREATE TABLE concurrency_limits (
    tenant_id uuid NOT NULL,
    scope text NOT NULL,
    name text NOT NULL,
    max_running integer NOT NULL,
    max_starts integer,
    window_ms bigint,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT concurrency_limits_max_running_check CHECK (((max_running >= 1) AND (max_running <= 100000))),
    CONSTRAINT concurrency_limits_max_starts_check CHECK (((max_starts >= 1) AND (max_starts <= 100000))),
    CONSTRAINT concurrency_limits_pkey PRIMARY KEY (tenant_id, scope, name),
    CONSTRAINT concurrency_limits_scope_check CHECK ((scope = ANY (ARRAY['kind'::text, 'lane'::text]))),
    CONSTRAINT concurrency_limits_tenant_id_fkey FOREIGN KEY (tenant_id) REFERENCES tenants(tenant_id) ON DELETE CASCADE,
    CONSTRAINT concurrency_limits_window_ms_check CHECK (((window_ms >= 100) AND (window_ms <= 86400000)))
);

CREATE TABLE concurrency_slots (
    tenant_id uuid NOT NULL,
    scope text NOT NULL,
    name text NOT NULL,
    key text NOT NULL,
    running integer DEFAULT 0 NOT NULL,
    window_started_at timestamp with time zone,
    window_starts integer DEFAULT 0 NOT NULL,
    CONSTRAINT concurrency_slots_pkey PRIMARY KEY (tenant_id, scope, name, key),
    CONSTRAINT concurrency_slots_tenant_id_fkey FOREIGN KEY (tenant_id) REFERENCES tenants(tenant_id) ON DELETE CASCADE
) WITH (fillfactor=50);

CREATE TABLE config_values (
    tenant_id uuid NOT NULL,
    name text NOT NULL,
    secret boolean NOT NULL,
    key_id text NOT NULL,
    nonce bytea NOT NULL,
    ciphertext bytea NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT config_values_name_check CHECK (((length(name) >= 1) AND (length(name) <= 128))),
    CONSTRAINT config_values_pkey PRIMARY KEY (tenant_id, name),
    CONSTRAINT config_values_tenant_id_fkey FOREIGN KEY (tenant_id) REFERENCES tenants(tenant_id) ON DELETE CASCADE
);

CREATE TABLE execution_counters (
    tenant_id uuid NOT NULL,
    execution_id uuid NOT NULL,
    attempt_index integer NOT NULL,
    frame_seq bigint DEFAULT 0 NOT NULL,
    frame_bytes bigint DEFAULT 0 NOT NULL,
    step_count integer DEFAULT 0 NOT NULL,
    step_bytes bigint DEFAULT 0 NOT NULL,
    CONSTRAINT execution_counters_pkey PRIMARY KEY (tenant_id, execution_id),
    CONSTRAINT execution_counters_tenant_id_execution_id_fkey FOREIGN KEY (tenant_id, execution_id) REFERENCES executions(tenant_id, execution_id) ON DELETE CASCADE
) WITH (fillfactor=50);

CREATE TABLE executions (
    tenant_id uuid NOT NULL,
    execution_id uuid NOT NULL,
    kind text NOT NULL,
    lane text NOT NULL,
    priority integer NOT NULL,
    required_capabilities text[] DEFAULT '{}'::text[] NOT NULL,
    tags jsonb DEFAULT '{}'::jsonb NOT NULL,
    input bytea NOT NULL,
    policy jsonb NOT NULL,
    idempotency_key text,
    flow_id uuid,
    flow_key text,
    parent_id uuid,
    concurrency_key text,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    eligible_at timestamp with time zone NOT NULL,
    deadline_at timestamp with time zone,
    retry_count integer DEFAULT 0 NOT NULL,
    reclaim_count integer DEFAULT 0 NOT NULL,
    attempt_index integer DEFAULT 0 NOT NULL,
    lease_epoch bigint DEFAULT 0 NOT NULL,
    started_at timestamp with time zone,
    lifecycle_phase text NOT NULL,
    ownership_state text NOT NULL,
    eligibility_state text NOT NULL,
    blocking_reason text,
    attempt_state text NOT NULL,
    public_state text GENERATED ALWAYS AS (
CASE lifecycle_phase
    WHEN 'terminal'::text THEN
    CASE terminal_outcome
        WHEN 'success'::text THEN 'completed'::text
        ELSE COALESCE(terminal_outcome, 'failed'::text)
    END
    WHEN 'active'::text THEN 'active'::text
    WHEN 'suspended'::text THEN 'suspended'::text
    ELSE
    CASE eligibility_state
        WHEN 'not_eligible_until_time'::text THEN 'delayed'::text
        WHEN 'blocked_by_dependencies'::text THEN 'waiting_children'::text
        WHEN 'blocked_by_budget'::text THEN 'rate_limited'::text
        WHEN 'blocked_by_quota'::text THEN 'rate_limited'::text
        ELSE 'waiting'::text
    END
END) STORED,
    lease_id uuid,
    lease_expires_at timestamp with time zone,
    attempt_timeout_at timestamp with time zone,
    concurrency_held text,
    progress_percent smallint,
    progress_message text,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    terminal_outcome text,
    finished_at timestamp with time zone,
    result bytea,
    last_failure jsonb,
    cancellation_reason text,
    replay_count integer DEFAULT 0 NOT NULL,
    suspension_seq integer DEFAULT 0 NOT NULL,
    suspension jsonb,
    suspension_timeout_at timestamp with time zone,
    frame_seq bigint DEFAULT 0 NOT NULL,
    frame_bytes bigint DEFAULT 0 NOT NULL,
    step_bytes bigint DEFAULT 0 NOT NULL,
    step_count integer DEFAULT 0 NOT NULL,
    CONSTRAINT executions_attempt_state_check CHECK ((attempt_state = ANY (ARRAY['pending_first_attempt'::text, 'running_attempt'::text, 'attempt_interrupted'::text, 'pending_retry_attempt'::text, 'pending_replay_attempt'::text, 'pending_delayed_attempt'::text, 'attempt_suspended'::text, 'pending_resume_attempt'::text, 'attempt_terminal'::text]))),
    CONSTRAINT executions_check CHECK (((lifecycle_phase = 'active'::text) = (lease_id IS NOT NULL))),
    CONSTRAINT executions_concurrency_held_check CHECK ((concurrency_held = ANY (ARRAY['kind'::text, 'lane'::text]))),
    CONSTRAINT executions_concurrency_key_check CHECK (((concurrency_key IS NULL) OR ((octet_length(concurrency_key) >= 1) AND (octet_length(concurrency_key) <= 256)))),
    CONSTRAINT executions_eligibility_state_check CHECK ((eligibility_state = ANY (ARRAY['eligible_now'::text, 'not_eligible_until_time'::text, 'blocked_by_dependencies'::text, 'blocked_by_budget'::text, 'blocked_by_quota'::text, 'blocked_by_operator'::text, 'blocked_by_concurrency_key'::text, 'not_applicable'::text]))),
    CONSTRAINT executions_flow_fk FOREIGN KEY (tenant_id, flow_id) REFERENCES flows(tenant_id, flow_id),
    CONSTRAINT executions_flow_key_check CHECK (((flow_id IS NULL) = (flow_key IS NULL))),
    CONSTRAINT executions_lifecycle_phase_check CHECK ((lifecycle_phase = ANY (ARRAY['submitted'::text, 'runnable'::text, 'active'::text, 'suspended'::text, 'terminal'::text]))),
    CONSTRAINT executions_ownership_state_check CHECK ((ownership_state = ANY (ARRAY['unowned'::text, 'leased'::text, 'lease_expired_reclaimable'::text, 'lease_revoked'::text]))),
    CONSTRAINT executions_pkey PRIMARY KEY (tenant_id, execution_id),
    CONSTRAINT executions_tenant_id_fkey FOREIGN KEY (tenant_id) REFERENCES tenants(tenant_id),
    CONSTRAINT executions_terminal_outcome_check CHECK ((terminal_outcome = ANY (ARRAY['success'::text, 'failed'::text, 'cancelled'::text, 'expired'::text, 'skipped'::text])))
) WITH (fillfactor=50);

CREATE TABLE flow_edges (
    tenant_id uuid NOT NULL,
    upstream_id uuid NOT NULL,
    downstream_id uuid NOT NULL,
    flow_id uuid NOT NULL,
    pass_result boolean DEFAULT false NOT NULL,
    state text DEFAULT 'pending'::text NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT flow_edges_check CHECK ((upstream_id <> downstream_id)),
    CONSTRAINT flow_edges_pkey PRIMARY KEY (tenant_id, upstream_id, downstream_id),
    CONSTRAINT flow_edges_state_check CHECK ((state = ANY (ARRAY['pending'::text, 'satisfied'::text, 'unsatisfied'::text]))),
    CONSTRAINT flow_edges_tenant_id_downstream_id_fkey FOREIGN KEY (tenant_id, downstream_id) REFERENCES flow_groups(tenant_id, downstream_id) ON DELETE CASCADE
);

CREATE TABLE flow_groups (
    tenant_id uuid NOT NULL,
    downstream_id uuid NOT NULL,
    flow_id uuid NOT NULL,
    policy text NOT NULL,
    k integer,
    on_satisfied text NOT NULL,
    total integer DEFAULT 0 NOT NULL,
    succeeded integer DEFAULT 0 NOT NULL,
    unsatisfied integer DEFAULT 0 NOT NULL,
    state text DEFAULT 'pending'::text NOT NULL,
    cancel_pending boolean DEFAULT false NOT NULL,
    CONSTRAINT flow_groups_k_check CHECK ((k >= 1)),
    CONSTRAINT flow_groups_on_satisfied_check CHECK ((on_satisfied = ANY (ARRAY['cancel_remaining'::text, 'let_run'::text]))),
    CONSTRAINT flow_groups_pkey PRIMARY KEY (tenant_id, downstream_id),
    CONSTRAINT flow_groups_policy_check CHECK ((policy = ANY (ARRAY['all_of'::text, 'any_of'::text, 'quorum'::text]))),
    CONSTRAINT flow_groups_state_check CHECK ((state = ANY (ARRAY['pending'::text, 'satisfied'::text, 'impossible'::text]))),
    CONSTRAINT flow_groups_tenant_id_downstream_id_fkey FOREIGN KEY (tenant_id, downstream_id) REFERENCES executions(tenant_id, execution_id) ON DELETE CASCADE
);

CREATE TABLE flows (
    tenant_id uuid NOT NULL,
    flow_id uuid NOT NULL,
    name text NOT NULL,
    tags jsonb DEFAULT '{}'::jsonb NOT NULL,
    graph_revision integer DEFAULT 0 NOT NULL,
    cancelled_at timestamp with time zone,
    cancellation_reason text,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    cancel_phases text[],
    CONSTRAINT flows_pkey PRIMARY KEY (tenant_id, flow_id),
    CONSTRAINT flows_tenant_id_fkey FOREIGN KEY (tenant_id) REFERENCES tenants(tenant_id)
);

CREATE TABLE followed_executions (
    tenant_id uuid NOT NULL,
    execution_id uuid NOT NULL,
    until timestamp with time zone NOT NULL,
    CONSTRAINT followed_executions_pkey PRIMARY KEY (tenant_id, execution_id)
);

CREATE TABLE frames (
    tenant_id uuid NOT NULL,
    execution_id uuid NOT NULL,
    attempt_index integer NOT NULL,
    seq bigint NOT NULL,
    frame_type text NOT NULL,
    mode text NOT NULL,
    payload bytea NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT frames_mode_check CHECK ((mode = ANY (ARRAY['durable'::text, 'summary'::text, 'best_effort'::text]))),
    CONSTRAINT frames_pkey PRIMARY KEY (tenant_id, execution_id, attempt_index, seq),
    CONSTRAINT frames_tenant_id_execution_id_fkey FOREIGN KEY (tenant_id, execution_id) REFERENCES executions(tenant_id, execution_id) ON DELETE CASCADE
);

CREATE TABLE idempotency_keys (
    tenant_id uuid NOT NULL,
    key text NOT NULL,
    execution_id uuid NOT NULL,
    expires_at timestamp with time zone NOT NULL,
    CONSTRAINT idempotency_keys_pkey PRIMARY KEY (tenant_id, key)
);

CREATE TABLE lease_event_batches (
    tenant_id uuid NOT NULL,
    event_id bigint DEFAULT (nextval('lease_event_batch_seq'::regclass) * 1048576) NOT NULL,
    txid bigint DEFAULT ((pg_current_xact_id())::text)::bigint NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    execution_ids uuid[] NOT NULL,
    attempt_indexes integer[] NOT NULL,
    lease_epochs bigint[] NOT NULL,
    kinds "char"[] NOT NULL,
    lease_expires_ats timestamp with time zone[] NOT NULL,
    phases "char"[] NOT NULL,
    CONSTRAINT lease_event_batches_check CHECK ((((cardinality(execution_ids) >= 1) AND (cardinality(execution_ids) <= 1048575)) AND (cardinality(attempt_indexes) = cardinality(execution_ids)) AND (cardinality(lease_epochs) = cardinality(execution_ids)) AND (cardinality(kinds) = cardinality(execution_ids)) AND (cardinality(lease_expires_ats) = cardinality(execution_ids)) AND (cardinality(phases) = cardinality(execution_ids)))),
    CONSTRAINT lease_event_batches_kinds_check CHECK ((kinds <@ '{a,c,n,r,e,v}'::"char"[])),
    CONSTRAINT lease_event_batches_phases_check CHECK ((phases <@ '{u,r,a,s,t}'::"char"[])),
    CONSTRAINT lease_event_batches_pkey PRIMARY KEY (tenant_id, txid, event_id)
) WITH (toast_tuple_target=8160);

CREATE TABLE lease_events (
    tenant_id uuid NOT NULL,
    event_id bigint NOT NULL,
    txid bigint DEFAULT ((pg_current_xact_id())::text)::bigint NOT NULL,
    execution_id uuid NOT NULL,
    attempt_index integer NOT NULL,
    lease_epoch bigint NOT NULL,
    kind text NOT NULL,
    lease_expires_at timestamp with time zone,
    phase text NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT lease_events_kind_check CHECK ((kind = ANY (ARRAY['acquired'::text, 'reclaimed'::text, 'renewed'::text, 'released'::text, 'expired'::text, 'revoked'::text]))),
    CONSTRAINT lease_events_pkey PRIMARY KEY (tenant_id, txid, event_id)
);

CREATE TABLE schedules (
    tenant_id uuid NOT NULL,
    schedule_id uuid NOT NULL,
    name text NOT NULL,
    spec jsonb NOT NULL,
    input bytea NOT NULL,
    paused boolean DEFAULT false NOT NULL,
    next_fire_at timestamp with time zone NOT NULL,
    last_fire_at timestamp with time zone,
    last_execution_id uuid,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT schedules_name_check CHECK (((length(name) >= 1) AND (length(name) <= 128))),
    CONSTRAINT schedules_pkey PRIMARY KEY (tenant_id, schedule_id),
    CONSTRAINT schedules_tenant_id_fkey FOREIGN KEY (tenant_id) REFERENCES tenants(tenant_id) ON DELETE CASCADE,
    CONSTRAINT schedules_tenant_id_name_key UNIQUE (tenant_id, name)
);

CREATE TABLE signal_events (
    tenant_id uuid NOT NULL,
    event_id bigint NOT NULL,
    txid bigint DEFAULT ((pg_current_xact_id())::text)::bigint NOT NULL,
    execution_id uuid NOT NULL,
    waitpoint_id uuid NOT NULL,
    signal_id uuid NOT NULL,
    name text NOT NULL,
    effect text NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT signal_events_effect_check CHECK ((effect = ANY (ARRAY['resumed'::text, 'buffered'::text, 'duplicate'::text]))),
    CONSTRAINT signal_events_pkey PRIMARY KEY (tenant_id, txid, event_id)
);

CREATE TABLE signals (
    tenant_id uuid NOT NULL,
    execution_id uuid NOT NULL,
    signal_id uuid NOT NULL,
    waitpoint_id uuid NOT NULL,
    waitpoint_key text NOT NULL,
    name text NOT NULL,
    payload bytea NOT NULL,
    idempotency_key text,
    consumed_in integer,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT signals_pkey PRIMARY KEY (tenant_id, execution_id, signal_id),
    CONSTRAINT signals_tenant_id_execution_id_fkey FOREIGN KEY (tenant_id, execution_id) REFERENCES executions(tenant_id, execution_id) ON DELETE CASCADE
);

CREATE TABLE steps (
    tenant_id uuid NOT NULL,
    execution_id uuid NOT NULL,
    step_index integer NOT NULL,
    name text NOT NULL,
    kind text NOT NULL,
    output bytea,
    error text,
    wake_at timestamp with time zone,
    size bigint NOT NULL,
    attempt_index integer NOT NULL,
    duration_ms bigint NOT NULL,
    recorded_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT steps_check CHECK (((kind = 'completed'::text) = (output IS NOT NULL))),
    CONSTRAINT steps_check1 CHECK (((kind = 'failed'::text) = (error IS NOT NULL))),
    CONSTRAINT steps_check2 CHECK (((kind = 'sleep'::text) = (wake_at IS NOT NULL))),
    CONSTRAINT steps_duration_ms_check CHECK ((duration_ms >= 0)),
    CONSTRAINT steps_kind_check CHECK ((kind = ANY (ARRAY['completed'::text, 'failed'::text, 'sleep'::text]))),
    CONSTRAINT steps_name_check CHECK (((octet_length(name) >= 1) AND (octet_length(name) <= 128))),
    CONSTRAINT steps_pkey PRIMARY KEY (tenant_id, execution_id, step_index),
    CONSTRAINT steps_size_check CHECK ((size >= 0)),
    CONSTRAINT steps_step_index_check CHECK ((step_index >= 0)),
    CONSTRAINT steps_tenant_id_execution_id_fkey FOREIGN KEY (tenant_id, execution_id) REFERENCES executions(tenant_id, execution_id) ON DELETE CASCADE
);

CREATE TABLE stream_summaries (
    tenant_id uuid NOT NULL,
    execution_id uuid NOT NULL,
    attempt_index integer NOT NULL,
    document jsonb NOT NULL,
    version bigint NOT NULL,
    first_applied_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT stream_summaries_pkey PRIMARY KEY (tenant_id, execution_id, attempt_index),
    CONSTRAINT stream_summaries_tenant_id_execution_id_fkey FOREIGN KEY (tenant_id, execution_id) REFERENCES executions(tenant_id, execution_id) ON DELETE CASCADE
);

CREATE TABLE tenants (
    tenant_id uuid NOT NULL,
    name text NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    max_running integer,
    max_queued integer,
    max_input_bytes integer,
    max_component_bytes integer,
    max_task_timeout_ms bigint,
    max_memory_mib integer,
    max_starts_per_window integer,
    start_window_ms bigint,
    max_result_bytes integer,
    max_frame_bytes_per_attempt bigint,
    max_children_per_execution integer,
    max_flow_members integer,
    max_waitpoints_per_execution integer,
    max_stored_bytes bigint,
    CONSTRAINT tenants_max_children_per_execution_check CHECK ((max_children_per_execution > 0)),
    CONSTRAINT tenants_max_component_bytes_check CHECK ((max_component_bytes > 0)),
    CONSTRAINT tenants_max_flow_members_check CHECK ((max_flow_members > 0)),
    CONSTRAINT tenants_max_frame_bytes_per_attempt_check CHECK ((max_frame_bytes_per_attempt > 0)),
    CONSTRAINT tenants_max_input_bytes_check CHECK ((max_input_bytes > 0)),
    CONSTRAINT tenants_max_memory_mib_check CHECK ((max_memory_mib > 0)),
    CONSTRAINT tenants_max_queued_check CHECK ((max_queued > 0)),
    CONSTRAINT tenants_max_result_bytes_check CHECK ((max_result_bytes > 0)),
    CONSTRAINT tenants_max_running_check CHECK ((max_running > 0)),
    CONSTRAINT tenants_max_starts_per_window_check CHECK ((max_starts_per_window > 0)),
    CONSTRAINT tenants_max_stored_bytes_check CHECK ((max_stored_bytes > 0)),
    CONSTRAINT tenants_max_task_timeout_ms_check CHECK ((max_task_timeout_ms > 0)),
    CONSTRAINT tenants_max_waitpoints_per_execution_check CHECK ((max_waitpoints_per_execution > 0)),
    CONSTRAINT tenants_name_check CHECK (((length(name) >= 1) AND (length(name) <= 128))),
    CONSTRAINT tenants_name_key UNIQUE (name),
    CONSTRAINT tenants_pkey PRIMARY KEY (tenant_id),
    CONSTRAINT tenants_start_window_ms_check CHECK ((start_window_ms > 0))
);

CREATE TABLE usage_reports (
    tenant_id uuid NOT NULL,
    execution_id uuid NOT NULL,
    dedup_key text NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT usage_reports_pkey PRIMARY KEY (tenant_id, execution_id, dedup_key),
    CONSTRAINT usage_reports_tenant_id_execution_id_fkey FOREIGN KEY (tenant_id, execution_id) REFERENCES executions(tenant_id, execution_id) ON DELETE CASCADE
);

CREATE TABLE waitpoint_keys (
    kid text NOT NULL,
    sealed_by text NOT NULL,
    nonce bytea NOT NULL,
    ciphertext bytea NOT NULL,
    created_at timestamp with time zone NOT NULL,
    activates_at timestamp with time zone NOT NULL,
    retires_at timestamp with time zone,
    CONSTRAINT waitpoint_keys_pkey PRIMARY KEY (kid)
);

CREATE TABLE waitpoints (
    tenant_id uuid NOT NULL,
    execution_id uuid NOT NULL,
    waitpoint_id uuid NOT NULL,
    waitpoint_key text NOT NULL,
    state text NOT NULL,
    expires_at timestamp with time zone,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT waitpoints_pkey PRIMARY KEY (tenant_id, execution_id, waitpoint_id),
    CONSTRAINT waitpoints_state_check CHECK ((state = ANY (ARRAY['pending'::text, 'active'::text, 'closed'::text]))),
    CONSTRAINT waitpoints_tenant_id_execution_id_fkey FOREIGN KEY (tenant_id, execution_id) REFERENCES executions(tenant_id, execution_id) ON DELETE CASCADE
);

-- Indexes
CREATE INDEX api_keys_tenant_idx ON public.api_keys USING btree (tenant_id, created_at);
CREATE INDEX attempts_started_idx ON public.attempts USING btree (tenant_id, started_at) WHERE (started_at IS NOT NULL);
CREATE INDEX budget_dimensions_exhausted_idx ON public.budget_dimensions USING btree (tenant_id, budget_id) WHERE exhausted;
CREATE INDEX budgets_reset_idx ON public.budgets USING btree (next_reset_at) WHERE (next_reset_at IS NOT NULL);
CREATE INDEX budgets_scope_idx ON public.budgets USING btree (tenant_id, scope, scope_key);
CREATE INDEX completion_event_batches_txid_idx ON public.completion_event_batches USING btree (txid, event_id);
CREATE INDEX completion_events_txid_idx ON public.completion_events USING btree (txid, event_id);
CREATE INDEX executions_attempt_timeout_idx ON public.executions USING btree (tenant_id, attempt_timeout_at) WHERE ((lifecycle_phase = 'active'::text) AND (attempt_timeout_at IS NOT NULL));
CREATE INDEX executions_budget_blocked_idx ON public.executions USING btree (tenant_id, execution_id) WHERE (eligibility_state = 'blocked_by_budget'::text);
CREATE INDEX executions_children_idx ON public.executions USING btree (tenant_id, parent_id, lifecycle_phase) WHERE (parent_id IS NOT NULL);
CREATE INDEX executions_claim_idx ON public.executions USING btree (tenant_id, lane, priority DESC, eligible_at, execution_id) WHERE ((lifecycle_phase = 'runnable'::text) AND (eligibility_state = 'eligible_now'::text));
CREATE INDEX executions_concurrency_blocked_idx ON public.executions USING btree (tenant_id, concurrency_key, priority DESC, eligible_at, execution_id) WHERE (eligibility_state = 'blocked_by_concurrency_key'::text);
CREATE INDEX executions_concurrency_held_groups_idx ON public.executions USING btree (tenant_id, concurrency_key, kind, lane, priority DESC, eligible_at, execution_id) WHERE (eligibility_state = 'blocked_by_concurrency_key'::text);
CREATE INDEX executions_concurrency_key_idx ON public.executions USING btree (tenant_id, concurrency_key, priority DESC, eligible_at, execution_id) WHERE ((concurrency_key IS NOT NULL) AND (lifecycle_phase = 'runnable'::text) AND (eligibility_state = 'eligible_now'::text));
CREATE INDEX executions_deadline_idx ON public.executions USING btree (tenant_id, deadline_at) WHERE ((lifecycle_phase <> 'terminal'::text) AND (deadline_at IS NOT NULL));
CREATE INDEX executions_delayed_idx ON public.executions USING btree (tenant_id, eligible_at) WHERE ((lifecycle_phase = 'runnable'::text) AND (eligibility_state = 'not_eligible_until_time'::text));
CREATE UNIQUE INDEX executions_flow_key_idx ON public.executions USING btree (tenant_id, flow_id, flow_key) WHERE (flow_id IS NOT NULL);
CREATE INDEX executions_lease_expiry_idx ON public.executions USING btree (tenant_id, lease_expires_at) WHERE (lifecycle_phase = 'active'::text);
CREATE INDEX executions_state_idx ON public.executions USING btree (tenant_id, public_state DESC, execution_id) WHERE (public_state <> 'active'::text);
CREATE INDEX executions_suspension_timeout_idx ON public.executions USING btree (tenant_id, suspension_timeout_at) WHERE ((lifecycle_phase = 'suspended'::text) AND (suspension_timeout_at IS NOT NULL));
CREATE INDEX executions_waiting_children_idx ON public.executions USING btree (tenant_id, execution_id) WHERE ((lifecycle_phase = 'suspended'::text) AND (blocking_reason = 'waiting_for_children'::text));
CREATE INDEX flow_edges_downstream_idx ON public.flow_edges USING btree (tenant_id, downstream_id);
CREATE INDEX flow_edges_flow_idx ON public.flow_edges USING btree (tenant_id, flow_id);
CREATE UNIQUE INDEX flow_edges_one_input_idx ON public.flow_edges USING btree (tenant_id, downstream_id) WHERE pass_result;
CREATE INDEX flow_groups_cancel_pending_idx ON public.flow_groups USING btree (tenant_id, downstream_id) WHERE cancel_pending;
CREATE INDEX flows_cancel_unfinished_idx ON public.flows USING btree (tenant_id, flow_id) WHERE (cancel_phases IS NOT NULL);
CREATE INDEX frames_best_effort_idx ON public.frames USING btree (tenant_id, execution_id, attempt_index, seq) WHERE (mode = 'best_effort'::text);
CREATE INDEX lease_event_batches_moment_idx ON public.lease_event_batches USING gin (flowfabric_execution_moments(tenant_id, execution_ids)) WITH (gin_pending_list_limit='256');
CREATE INDEX lease_events_execution_idx ON public.lease_events USING btree (tenant_id, execution_id, event_id);
CREATE INDEX schedules_due_idx ON public.schedules USING btree (next_fire_at) WHERE (NOT paused);
CREATE INDEX signals_buffered_idx ON public.signals USING btree (tenant_id, execution_id, waitpoint_id) WHERE (consumed_in IS NULL);
CREATE INDEX signals_consumed_idx ON public.signals USING btree (tenant_id, execution_id, consumed_in) WHERE (consumed_in IS NOT NULL);
CREATE UNIQUE INDEX signals_idempotency_idx ON public.signals USING btree (tenant_id, execution_id, idempotency_key) WHERE (idempotency_key IS NOT NULL);
CREATE INDEX tenants_admission_limited_idx ON public.tenants USING btree (tenant_id) WHERE ((max_running IS NOT NULL) OR (max_starts_per_window IS NOT NULL));
CREATE UNIQUE INDEX waitpoints_open_key_idx ON public.waitpoints USING btree (tenant_id, execution_id, waitpoint_key) WHERE (state <> 'closed'::text);

-- Triggers
CREATE TRIGGER completion_event_batches_resolve_flows AFTER INSERT ON public.completion_event_batches REFERENCING NEW TABLE AS finished FOR EACH STATEMENT EXECUTE FUNCTION flowfabric_on_completion_batch();
CREATE TRIGGER completion_events_resolve_flows AFTER INSERT ON public.completion_events REFERENCING NEW TABLE AS finished FOR EACH STATEMENT EXECUTE FUNCTION flowfabric_on_completion();
CREATE TRIGGER executions_lease_events AFTER UPDATE ON public.executions REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION flowfabric_lease_events();
CREATE TRIGGER executions_release_concurrency_slots AFTER UPDATE ON public.executions REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION flowfabric_release_concurrency_slots();
