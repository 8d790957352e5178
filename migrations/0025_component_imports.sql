-- What each component version imports, recorded at upload (JSON array of
-- interface names), so it can be shown and checked against grants without
-- compiling the component. NULL for versions stored before this migration;
-- uploading the same bytes again records it.
ALTER TABLE components ADD COLUMN imports jsonb;
