-- Budgets (limits on usage guests report) and the start-rate quota.
--
-- A budget applies to a scope: the whole tenant, one flow, one execution or one
-- lane. Each of its dimensions (free-form names: `input_tokens`, `cost_micros`…)
-- has a soft limit (crossing it is reported, the usage is applied) and/or a hard
-- limit (usage that would cross it is not applied, and the execution is failed
-- or suspended as the budget says), checked and applied in the transaction of
-- the report, under the execution's lease. Lock order: the execution, then the
-- matching dimension rows in budget id order.

CREATE TABLE budgets (
    tenant_id          uuid NOT NULL REFERENCES tenants (tenant_id),
    budget_id          uuid NOT NULL,
    name               text NOT NULL,
    scope              text NOT NULL CHECK (scope IN ('tenant', 'flow', 'execution', 'lane')),
    -- The flow or execution id, or the lane name; '' for the tenant.
    scope_key          text NOT NULL,
    on_hard_limit      text NOT NULL CHECK (on_hard_limit IN ('fail', 'suspend')),
    reset_interval_ms  bigint CHECK (reset_interval_ms > 0),
    next_reset_at      timestamptz,
    created_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, budget_id)
);
-- A report finds the budgets of its execution's scopes.
CREATE INDEX budgets_scope_idx ON budgets (tenant_id, scope, scope_key);
-- The reset scanner.
CREATE INDEX budgets_reset_idx ON budgets (next_reset_at) WHERE next_reset_at IS NOT NULL;

CREATE TABLE budget_dimensions (
    tenant_id   uuid NOT NULL,
    budget_id   uuid NOT NULL,
    dimension   text NOT NULL,
    soft_limit  bigint CHECK (soft_limit >= 0),
    hard_limit  bigint CHECK (hard_limit >= 0),
    used        bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, budget_id, dimension),
    FOREIGN KEY (tenant_id, budget_id) REFERENCES budgets (tenant_id, budget_id)
        ON DELETE CASCADE,
    CHECK (soft_limit IS NOT NULL OR hard_limit IS NOT NULL)
);

-- Reports already applied, by the guest's dedup key: a replayed report is
-- answered `already_applied` and changes nothing.
CREATE TABLE usage_reports (
    tenant_id     uuid NOT NULL,
    execution_id  uuid NOT NULL,
    dedup_key     text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, execution_id, dedup_key),
    FOREIGN KEY (tenant_id, execution_id) REFERENCES executions (tenant_id, execution_id)
        ON DELETE CASCADE
);

-- Usage reported by each attempt, per dimension (applied reports only).
ALTER TABLE attempts ADD COLUMN usage jsonb NOT NULL DEFAULT '{}';

-- Start-rate quota: at most `max_starts_per_window` attempts of the tenant may
-- start within any `start_window_ms`; the claim counts them off this index.
ALTER TABLE tenants
    ADD COLUMN max_starts_per_window integer CHECK (max_starts_per_window > 0),
    ADD COLUMN start_window_ms bigint CHECK (start_window_ms > 0);
CREATE INDEX attempts_started_idx ON attempts (tenant_id, started_at);
