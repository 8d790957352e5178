-- The keys that sign waitpoint tokens, shared by every host. Each secret is
-- sealed under the operator's key `sealed_by`. A key signs from
-- `activates_at` (the latest activated live key signs) and verifies until
-- `retires_at`. A handful of rows: read whole.
CREATE TABLE waitpoint_keys (
    kid           text PRIMARY KEY,
    sealed_by     text NOT NULL,
    nonce         bytea NOT NULL,
    ciphertext    bytea NOT NULL,
    created_at    timestamptz NOT NULL,
    activates_at  timestamptz NOT NULL,
    retires_at    timestamptz
);
