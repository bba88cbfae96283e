-- Lookups by key whatever the statistics say (issue 20).
--
-- A plan is made once and kept: PL/pgSQL keeps a trigger's plans for the
-- life of the connection, and PostgreSQL keeps a prepared statement's
-- generic plan, until the table is analyzed again. Made while `payments`
-- was small (a new database, or the first minute of a new deployment,
-- before autovacuum analyzes it), a plan that hashes the whole table beats
-- one index lookup per row, and it stays after the table has grown: every
-- statement then read every payment. Seen in the benchmark, whose every
-- scenario starts with a new database: the events trigger's join of the
-- statement's history rows with `payments` was a hash join over a
-- sequential scan of the table, as were the batched claims and approvals
-- (fixed in their statements, in `common/src/db`). Looking payments up by
-- key cut PostgreSQL's CPU per payment by 13 to 31 % with one worker
-- (docs/optimizations.md).
--
-- The trigger below is the one of `20261204000100`, but for the lookup of
-- each new history row's payment: a LATERAL sub-query with `OFFSET 0` (so
-- it is not flattened into a join) is a nested loop over the history rows
-- with an index scan of `payments_pkey` each, the only plan it can have.

CREATE OR REPLACE FUNCTION payment_history_events() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    WITH kinds AS (
        SELECT h.id AS history_id, h.payment_id, h.request_id, h.idempotency_key,
               CASE
                   WHEN h.from_status IS NULL AND h.to_status = 'pending' THEN 'payment.created'
                   WHEN h.from_status IS DISTINCT FROM h.to_status THEN
                       CASE h.to_status
                           WHEN 'succeeded' THEN 'payment.succeeded'
                           WHEN 'failed' THEN 'payment.failed'
                           WHEN 'cancelled' THEN 'payment.cancelled'
                       END
               END AS kind
        FROM changes h
    ), written AS (
        INSERT INTO events (merchant_id, type, payment_id, snapshot, request_id,
                            idempotency_key, dispatched_at)
        SELECT p.merchant_id, k.kind, p.id,
               -- `payment_snapshot(p)`, written out: a SQL function with a
               -- sub-query is never inlined, and planning it on every call
               -- cost more than the rest of the event (measured).
               jsonb_build_object(
                   'payment', to_jsonb(p) - 'card_token',
                   'refunds', CASE WHEN NOT p.captured THEN '[]'::jsonb ELSE COALESCE((
                       SELECT jsonb_agg(to_jsonb(o) ORDER BY o.created_at DESC, o.id DESC)
                       FROM (SELECT * FROM operations
                             WHERE payment_id = p.id AND kind = 'refund'
                             ORDER BY created_at DESC, id DESC LIMIT 11) o), '[]'::jsonb) END),
               k.request_id,
               k.idempotency_key,
               CASE WHEN EXISTS (
                   SELECT 1 FROM webhook_endpoints e
                   WHERE e.merchant_id = p.merchant_id AND e.status = 'enabled'
                     AND (k.kind = ANY (e.events) OR '*' = ANY (e.events))
               ) THEN NULL ELSE now() END
        -- Each payment by its key, one at a time: a join would let the
        -- planner hash the whole table, and PL/pgSQL keeps the plan it made
        -- at the first call, when the table was small (see the header).
        FROM kinds k
        CROSS JOIN LATERAL (SELECT * FROM payments WHERE id = k.payment_id OFFSET 0) p
        WHERE k.kind IS NOT NULL
        ORDER BY k.history_id
        RETURNING id, merchant_id, type, dispatched_at
    )
    INSERT INTO webhook_deliveries (event_id, endpoint_id, due_at)
    SELECT w.id, e.id, now() + interval '1 minute'
    FROM written w JOIN webhook_endpoints e
        ON e.merchant_id = w.merchant_id AND e.status = 'enabled'
       AND (w.type = ANY (e.events) OR '*' = ANY (e.events))
    WHERE w.dispatched_at IS NULL;
    RETURN NULL;
END
$$;
