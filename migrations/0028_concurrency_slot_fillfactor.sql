-- A key's slot is updated twice per execution (counted up by the claim,
-- down when the run ends). Packed pages have no room for the new version,
-- so each update went to another page and added a primary-key entry; with
-- half of each page free, updates stay on the page (HOT) and the index is
-- left alone. Applies to pages written from now on.
ALTER TABLE concurrency_slots SET (fillfactor = 50);
