-- The key function of lease history's index (migration 0042), the same keys
-- for a fraction of the server's CPU.
--
-- Postgres evaluates an index expression for every row inserted: here once
-- a claim's or an end's row of events. As an SQL function with a subquery
-- it was planned afresh by every statement that inserted a row, and its
-- `DISTINCT` sorted the keys through the executor; a profile of the worker
-- pool's run put about 6 % of the server's CPU there. In PL/pgSQL its plan
-- is kept for the session, and the keys go to the index as they are: GIN
-- sorts and deduplicates a row's keys itself, and `@>` compares sets, so the
-- index holds the same entries and a timeline read finds the same rows.
-- The tenant's part of the key is computed once a row, not once an event.
--
-- Only built-in functions in the body, as before: maintenance may evaluate
-- it with a search path of `pg_catalog` alone.
CREATE OR REPLACE FUNCTION flowfabric_execution_moments(tenant uuid, executions uuid[])
RETURNS bigint[] LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
    tenant_bits bigint := ('x' || right(tenant::text, 8))::bit(32)::bigint << 32;
BEGIN
    RETURN array(
        SELECT tenant_bits
            | ((('x' || translate(left(e::text, 13), '-', ''))::bit(48)::bigint >> 4) & 4294967295)
        FROM unnest(executions) e);
END
$$;
