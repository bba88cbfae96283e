-- A replayed answer is the first answer, its keys in the same order
-- (issue 18): `jsonb` reorders an object's keys, `json` keeps the text as
-- it was written.
ALTER TABLE idempotency_keys ALTER COLUMN response_body TYPE json USING response_body::json;
