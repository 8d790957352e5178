-- The keys that sign waitpoint tokens. Each secret is sealed under the
-- operator's key `sealed_by`. A key signs from `activates_at` (the latest
-- activated live key signs) and verifies until `retires_at`. A handful of
-- rows: read whole.
CREATE TABLE waitpoint_keys (
    kid           TEXT PRIMARY KEY,
    sealed_by     TEXT NOT NULL,
    nonce         BLOB NOT NULL,
    ciphertext    BLOB NOT NULL,
    created_at    INTEGER NOT NULL,
    activates_at  INTEGER NOT NULL,
    retires_at    INTEGER
) STRICT;
