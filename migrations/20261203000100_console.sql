-- The operator console (issue 23): who did what through the operator API,
-- and the console's sign-in sessions.

-- Every operator action (over the JSON operator API or the console), with
-- the operator key that made it, what it did, on what, and how it ended.
-- `key_id` is NULL for a refused console sign-in (no key was recognised).
CREATE TABLE operator_audit (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    key_id      uuid        REFERENCES api_keys (id),
    action      text        NOT NULL,
    target      text        NOT NULL,
    result      text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX operator_audit_created_idx ON operator_audit (id DESC);

-- A console session: the cookie holds a random secret, this table its
-- SHA-256 (a leaked table signs nobody in), the operator key it belongs to,
-- the session's CSRF token and when it expires. Revoking the key ends its
-- sessions (the lookup joins live keys); signing out deletes the row.
CREATE TABLE console_sessions (
    token_hash  bytea       PRIMARY KEY,
    key_id      uuid        NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
    csrf_token  text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);

CREATE INDEX console_sessions_expires_idx ON console_sessions (expires_at);
