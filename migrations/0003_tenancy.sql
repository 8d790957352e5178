-- Enforced tenancy: API keys and per-tenant limits.

-- A key is `ffk_<key_id>_<secret>`. Only sha256(secret) is stored: the secret is
-- 256 random bits, so a fast hash is enough (nothing to brute-force), and the
-- key id makes the lookup one primary-key probe before the tenant is known.
CREATE TABLE api_keys (
    key_id         uuid PRIMARY KEY,
    tenant_id      uuid NOT NULL REFERENCES tenants (tenant_id),
    name           text NOT NULL CHECK (length(name) BETWEEN 1 AND 128),
    secret_sha256  bytea NOT NULL CHECK (length(secret_sha256) = 32),
    created_at     timestamptz NOT NULL DEFAULT now(),
    revoked_at     timestamptz
);
CREATE INDEX api_keys_tenant_idx ON api_keys (tenant_id, created_at);

-- Limits; NULL means the installation's default applies.
ALTER TABLE tenants
    ADD COLUMN max_running         integer CHECK (max_running > 0),
    ADD COLUMN max_queued          integer CHECK (max_queued > 0),
    ADD COLUMN max_input_bytes     integer CHECK (max_input_bytes > 0),
    ADD COLUMN max_component_bytes integer CHECK (max_component_bytes > 0),
    ADD COLUMN max_task_timeout_ms bigint  CHECK (max_task_timeout_ms > 0),
    ADD COLUMN max_memory_mib      integer CHECK (max_memory_mib > 0);

-- `max_running` counts off executions_lease_expiry_idx (active rows) and
-- `max_queued` off executions_state_idx, each bounded by the limit itself.

-- The process-wide completion dispatcher reads new events across tenants by id.
CREATE INDEX completion_events_id_idx ON completion_events (event_id);
