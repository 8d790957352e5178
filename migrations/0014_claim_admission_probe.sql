-- The claim statement comes in two shapes. Most installations have no tenant
-- with a concurrency or start-rate limit and no exhausted budget; for them the
-- claim leaves out the admission subqueries, which cost more to plan than the
-- whole claim takes to run. One probe per claim picks the shape, answered off
-- this index and `budget_dimensions_exhausted_idx` without reading the tables.
CREATE INDEX tenants_admission_limited_idx ON tenants (tenant_id)
    WHERE max_running IS NOT NULL OR max_starts_per_window IS NOT NULL;
