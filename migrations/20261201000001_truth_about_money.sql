-- Never lie about money: unknown outcomes, held jobs, live claims.
--
-- Additive only: new columns with NULL defaults and a new table, so a
-- worker of the previous release keeps working against this schema while
-- a deploy rolls.

-- When the outcome of the latest processor call for this payment became
-- unknown (a timeout, a connection cut after sending, a worker that died
-- mid-call). While set, the payment is never failed for running out of
-- attempts: the worker asks the processor what happened (a lookup by the
-- idempotency key) until it gets a definitive answer. NULL when the outcome
-- of every call so far is known.
ALTER TABLE payments ADD COLUMN outcome_unknown_since timestamptz;

-- Set while the job waits for an operator: the card processor refused our
-- request itself (a wrong PROCESSOR_URL, a bad credential), so retrying
-- cannot help until the configuration is fixed. The payment stays
-- `pending` (nothing happened to the card), its job is in the dead-letter
-- queue, and a replay clears this.
ALTER TABLE payments ADD COLUMN held_at timestamptz;

-- The worker holding the current claim. A claim is void once its lease
-- ends or its worker stops proving that it is alive (see `workers`).
ALTER TABLE payments ADD COLUMN claimed_by text;

-- Payments whose outcome is unknown, for the reconciliation metrics.
CREATE INDEX payments_outcome_unknown_idx ON payments (outcome_unknown_since)
    WHERE outcome_unknown_since IS NOT NULL;

-- Live workers. Each running worker writes its heartbeat every second or
-- so; a worker whose heartbeat is older than WORKER_DEAD_AFTER is dead and
-- its claims are void, so its payments are claimed again within seconds
-- instead of waiting out a lease. A worker deletes its row when it stops.
CREATE TABLE workers (
    id            text        PRIMARY KEY,
    started_at    timestamptz NOT NULL DEFAULT now(),
    heartbeat_at  timestamptz NOT NULL DEFAULT now()
);

-- The request that holds an idempotency key: completing or abandoning the
-- key is conditional on this token, so a request that outlived its lock can
-- never complete a key another request has taken over.
ALTER TABLE idempotency_keys ADD COLUMN owner uuid;
