-- Initial schema of the payment processor.
--
-- PostgreSQL is the source of truth for every payment; RabbitMQ only carries
-- work. Migrations are never edited once merged: add a new file instead
-- (expand, then contract).

-- A merchant owns API keys and payments. Names are unique so the CLI can
-- address a merchant by name (`api keys create --merchant NAME`).
CREATE TABLE merchants (
    id          uuid        PRIMARY KEY,
    name        text        NOT NULL CONSTRAINT merchants_name_key UNIQUE
                            CONSTRAINT merchants_name_length CHECK (char_length(name) BETWEEN 1 AND 255),
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- API keys are stored only as SHA-256 hashes of the secret. The secret has
-- 256 bits of entropy, so a fast hash is the right tool (a slow password hash
-- protects low-entropy secrets and would only add latency to every request).
-- `prefix` keeps the first characters of the secret so an operator can tell
-- keys apart without the secret.
CREATE TABLE api_keys (
    id           uuid        PRIMARY KEY,
    merchant_id  uuid        NOT NULL REFERENCES merchants (id),
    name         text        NOT NULL,
    prefix       text        NOT NULL,
    secret_hash  bytea       NOT NULL CONSTRAINT api_keys_secret_hash_key UNIQUE,
    scopes       text[]      NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz
);

-- Receipt numbers are sequential so they are unique and short.
CREATE SEQUENCE receipt_numbers;

CREATE TABLE payments (
    id                    uuid        PRIMARY KEY,
    merchant_id           uuid        NOT NULL REFERENCES merchants (id),
    status                text        NOT NULL
        CONSTRAINT payments_status_check CHECK (status IN ('pending', 'processing', 'succeeded', 'failed')),
    amount                bigint      NOT NULL
        CONSTRAINT payments_amount_check CHECK (amount BETWEEN 1 AND 99999999),
    currency              text        NOT NULL
        CONSTRAINT payments_currency_check CHECK (currency ~ '^[A-Z]{3}$'),
    capture               boolean     NOT NULL,
    captured              boolean     NOT NULL DEFAULT false,
    -- The processor's token for the card, needed to charge it. It is never
    -- returned by the API nor logged.
    card_token            text        NOT NULL,
    order_id              text,
    invoice_id            text,
    customer_id           text,
    customer_email        text,
    customer_name         text,
    description           text,
    statement_descriptor  text,
    billing_address       jsonb,
    metadata              jsonb       NOT NULL DEFAULT '{}'::jsonb,
    receipt_number        bigint      NOT NULL DEFAULT nextval('receipt_numbers'),
    -- Filled from the processor's answer.
    card                  jsonb,
    processor_response    jsonb,
    failure_code          text,
    failure_message       text,
    -- Processing bookkeeping: how many times a worker claimed the payment
    -- (never reset: it is also the fencing token of the current claim), the
    -- count at the last operator replay (attempts since then are what
    -- MAX_ATTEMPTS bounds), the last transient error, when the next attempt
    -- is due, and the worker's lease.
    attempts              integer     NOT NULL DEFAULT 0,
    replayed_attempts     integer     NOT NULL DEFAULT 0,
    last_error            text,
    next_attempt_at       timestamptz,
    lease_expires_at      timestamptz,
    -- When the next thing should happen to this non-terminal payment: its
    -- message delivered (pending) or its lease end (processing). The rescuer
    -- re-enqueues payments overdue by more than its grace period, so none
    -- can be stuck. NULL once terminal.
    due_at                timestamptz,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    finished_at           timestamptz
);

CREATE INDEX payments_merchant_created_idx ON payments (merchant_id, created_at DESC);
-- The rescuer scans only non-terminal payments.
CREATE INDEX payments_due_idx ON payments (due_at) WHERE due_at IS NOT NULL;

-- Wakes API requests waiting with `Prefer: wait=N` when a payment becomes
-- terminal. A trigger, so no code path that finishes a payment can forget it.
CREATE FUNCTION notify_payment_finished() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('payment_finished', NEW.id::text);
    RETURN NULL;
END;
$$;

CREATE TRIGGER payments_notify_finished
    AFTER UPDATE OF status ON payments
    FOR EACH ROW
    WHEN (NEW.status IN ('succeeded', 'failed') AND OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION notify_payment_finished();

-- Every status change, with who made it and why.
CREATE TABLE payment_status_history (
    id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    payment_id   uuid        NOT NULL REFERENCES payments (id),
    from_status  text,
    to_status    text        NOT NULL,
    actor        text        NOT NULL,
    reason       text,
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX payment_status_history_payment_idx ON payment_status_history (payment_id, id);

-- Transactional outbox: a row is written in the same transaction as the
-- payment and deleted once the broker confirmed the message. The relay
-- publishes rows whose `available_at` passed (the fast path missed them).
CREATE TABLE outbox (
    id            bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    payment_id    uuid        NOT NULL REFERENCES payments (id),
    message       jsonb       NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    available_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX outbox_available_idx ON outbox (available_at);

-- Idempotency keys, scoped per merchant. A row is `in_flight` while the first
-- request runs and `completed` with the response once it committed.
CREATE TABLE idempotency_keys (
    merchant_id       uuid        NOT NULL REFERENCES merchants (id),
    key               text        NOT NULL,
    request_hash      bytea       NOT NULL,
    state             text        NOT NULL
        CONSTRAINT idempotency_keys_state_check CHECK (state IN ('in_flight', 'completed')),
    response_status   smallint,
    response_body     jsonb,
    payment_id        uuid        REFERENCES payments (id),
    locked_until      timestamptz NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT idempotency_keys_pkey PRIMARY KEY (merchant_id, key)
);

CREATE INDEX idempotency_keys_created_idx ON idempotency_keys (created_at);
