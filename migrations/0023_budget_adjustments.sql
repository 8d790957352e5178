-- Usage corrected by hand, without a lease (`report_usage_admin`): each
-- adjustment of a budget dimension, with its reason and the usage it left,
-- kept as the budget's audit trail. Listed newest first by this key.
CREATE TABLE budget_adjustments (
    tenant_id      uuid NOT NULL,
    budget_id      uuid NOT NULL,
    adjustment_id  bigint GENERATED ALWAYS AS IDENTITY,
    dimension      text NOT NULL,
    delta          bigint NOT NULL,
    used_after     bigint NOT NULL,
    reason         text NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, budget_id, adjustment_id),
    FOREIGN KEY (tenant_id, budget_id) REFERENCES budgets (tenant_id, budget_id)
        ON DELETE CASCADE
);
