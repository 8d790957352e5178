CREATE OR REPLACE FUNCTION public.flowfabric_key_room_taken()
 RETURNS boolean
 LANGUAGE plpgsql
AS $function$
BEGIN
    RAISE EXCEPTION 'a concurrency key''s room was taken by a concurrent claim'
        USING ERRCODE = 'serialization_failure';
END
$function$
