-- A claim that counted a concurrency key's room off its snapshot, without
-- locking the key's slot, checks the room again as it counts its runs into
-- the slot (the row as last committed). Should another claim have taken the
-- room in between, the claim stops here: its statement fails with
-- `serialization_failure` and nothing it did stays, and it claims again
-- locking every key's slot. A function, because a statement has no other way
-- to fail on a condition it finds.
CREATE OR REPLACE FUNCTION flowfabric_key_room_taken()
RETURNS boolean LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    RAISE EXCEPTION 'a concurrency key''s room was taken by a concurrent claim'
        USING ERRCODE = 'serialization_failure';
END
$$;
