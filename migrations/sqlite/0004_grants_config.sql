-- Capability grants and tenant config values (see the Postgres migration
-- of the same name): ceilings and grants are JSON documents read whole;
-- config values arrive sealed by the engine.
CREATE TABLE capability_ceilings (
    tenant_id   BLOB PRIMARY KEY REFERENCES tenants (tenant_id) ON DELETE CASCADE,
    ceiling     TEXT NOT NULL,
    updated_at  INTEGER NOT NULL
) STRICT;

CREATE TABLE component_grants (
    tenant_id   BLOB NOT NULL REFERENCES tenants (tenant_id) ON DELETE CASCADE,
    kind        TEXT NOT NULL CHECK (length(kind) BETWEEN 1 AND 128),
    grant_spec  TEXT NOT NULL,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, kind)
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
