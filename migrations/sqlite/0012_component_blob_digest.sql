-- A component blob's digest is its SHA-256 as 64 lowercase hex digits, as
-- Postgres's component_blobs_digest_check says. SQLite cannot add a CHECK to
-- a table that exists (it would have to rebuild it, with the components that
-- reference it), so two triggers refuse what the CHECK would.
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
