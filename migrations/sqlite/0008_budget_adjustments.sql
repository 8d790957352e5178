-- Usage corrected by hand, without a lease (`report_usage_admin`): each
-- adjustment of a budget dimension, with its reason and the usage it left,
-- kept as the budget's audit trail. Listed newest first by the index.
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
CREATE INDEX budget_adjustments_budget_idx
    ON budget_adjustments (tenant_id, budget_id, adjustment_id);
