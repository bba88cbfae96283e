-- Operators and merchants are different principals.
--
-- Before: every key belonged to a merchant, and any merchant's key could be
-- created with the `admin` scope, which lists and replays every merchant's
-- dead letters. Now:
--   * an operator key belongs to no merchant (`merchant_id` NULL) and carries
--     exactly `{admin}`; it is made by `api keys create-operator` and reaches
--     only the operator endpoints;
--   * a merchant key never carries `admin`.
-- The check constraint holds the rule for every writer, not only the CLI.
--
-- Existing merchant keys lose `admin` (fail closed: a merchant may hold such
-- a key). A key left with no scope at all can do nothing, so it is revoked
-- (401 instead of a confusing 403). After upgrading, operators make their
-- keys with `api keys create-operator --name N` (README, runbook).

ALTER TABLE api_keys ALTER COLUMN merchant_id DROP NOT NULL;

UPDATE api_keys
   SET scopes = array_remove(scopes, 'admin'),
       revoked_at = CASE
           WHEN cardinality(array_remove(scopes, 'admin')) = 0 THEN coalesce(revoked_at, now())
           ELSE revoked_at
       END
 WHERE 'admin' = ANY (scopes);

ALTER TABLE api_keys ADD CONSTRAINT api_keys_principal_check CHECK (
    CASE
        WHEN merchant_id IS NULL THEN scopes = ARRAY['admin']::text[]
        ELSE NOT ('admin' = ANY (scopes))
    END
);
