-- Webhooks (DESIGN.md §10): endpoints, events, deliveries and every attempt.
--
-- An event is written by a trigger on the status-history tables (and on a
-- payment's capture), so it is part of the very transaction that changes
-- the status: no status change without its event, no event without its
-- change, whatever crashes. The trigger keeps a snapshot of the rows as they
-- are at that moment; the API renders it exactly as `GET` renders the live
-- rows (the object "as GET shows it at that moment") and stores the body
-- that is sent, so every retry sends the same bytes.

-- The API request behind a status change, for the event's `request`
-- field; NULL for changes the worker makes.
ALTER TABLE payment_status_history
    ADD COLUMN request_id text,
    ADD COLUMN idempotency_key text;
ALTER TABLE operation_status_history
    ADD COLUMN request_id text,
    ADD COLUMN idempotency_key text;

CREATE TABLE webhook_endpoints (
    id                         uuid        PRIMARY KEY,
    merchant_id                uuid        NOT NULL REFERENCES merchants (id),
    url                        text        NOT NULL CHECK (char_length(url) <= 2048),
    -- Event types, or `*` for all.
    events                     text[]      NOT NULL CHECK (cardinality(events) BETWEEN 1 AND 16),
    description                text        CHECK (char_length(description) <= 1000),
    status                     text        NOT NULL DEFAULT 'enabled'
        CONSTRAINT webhook_endpoints_status_check CHECK (status IN ('enabled', 'disabled')),
    -- Why it was disabled (`410 Gone` from the receiver).
    disabled_reason            text,
    -- `whsec_…`. Needed in the clear to sign; never logged, shown once.
    secret                     text        NOT NULL,
    -- The secret before the last rotation, still signed with until it expires.
    previous_secret            text,
    previous_secret_expires_at timestamptz,
    created_at                 timestamptz NOT NULL DEFAULT now(),
    updated_at                 timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX webhook_endpoints_merchant_idx ON webhook_endpoints (merchant_id, created_at DESC, id DESC);

CREATE TABLE events (
    id             uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    -- Order of writing: the list's cursor.
    seq            bigint      GENERATED ALWAYS AS IDENTITY UNIQUE,
    merchant_id    uuid        NOT NULL REFERENCES merchants (id),
    type           text        NOT NULL,
    payment_id     uuid        REFERENCES payments (id),
    operation_id   uuid        REFERENCES operations (id),
    -- The rows as they were when the event happened (never the card token).
    snapshot       jsonb       NOT NULL,
    request_id     text,
    idempotency_key text,
    -- The body sent to endpoints, rendered once by the API's event relay;
    -- NULL until then.
    body           text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    -- When the relay rendered it and published its deliveries; events of a
    -- merchant with no endpoint for them need neither and are born done.
    dispatched_at  timestamptz
);

CREATE INDEX events_merchant_idx ON events (merchant_id, seq DESC);
CREATE INDEX events_merchant_type_idx ON events (merchant_id, type, seq DESC);
CREATE INDEX events_undispatched_idx ON events (seq) WHERE dispatched_at IS NULL;

-- One event to one endpoint, retried until delivered, disabled or dead.
CREATE TABLE webhook_deliveries (
    id             uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    event_id       uuid        NOT NULL REFERENCES events (id),
    endpoint_id    uuid        NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    status         text        NOT NULL DEFAULT 'pending'
        CONSTRAINT webhook_deliveries_status_check
        CHECK (status IN ('pending', 'delivered', 'failed', 'dead')),
    attempts       integer     NOT NULL DEFAULT 0,
    -- While a worker sends it: no other worker takes it before this.
    claimed_until  timestamptz,
    -- When its message is late and the worker's rescuer publishes it again.
    due_at         timestamptz,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    finished_at    timestamptz
);

CREATE INDEX webhook_deliveries_event_idx ON webhook_deliveries (event_id);
CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (due_at)
    WHERE status = 'pending';

-- Every attempt, for `GET /v1/webhook_endpoints/:id/deliveries`. Nothing of
-- the receiver's answer but its status code is kept.
CREATE TABLE webhook_attempts (
    id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    delivery_id  uuid        NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    endpoint_id  uuid        NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    event_id     uuid        NOT NULL REFERENCES events (id),
    attempt      integer     NOT NULL,
    -- `delivered`, `failed` (an answer that is not 2xx), `gone` (410),
    -- `timeout`, `connection_error`, `blocked` (a private address).
    outcome      text        NOT NULL,
    status_code  integer,
    error        text,
    duration_ms  integer     NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX webhook_attempts_endpoint_idx ON webhook_attempts (endpoint_id, id DESC);

-- Writes one event of `kind` for the payment or operation, with its
-- deliveries to the merchant's enabled endpoints that want it.
CREATE FUNCTION write_event(kind text, merchant uuid, payment uuid, operation uuid, snap jsonb,
                            request text, idem_key text)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    event_id uuid := gen_random_uuid();
    wanted boolean;
BEGIN
    SELECT EXISTS (
        SELECT 1 FROM webhook_endpoints e
        WHERE e.merchant_id = merchant AND e.status = 'enabled'
          AND (kind = ANY (e.events) OR '*' = ANY (e.events))
    ) INTO wanted;
    INSERT INTO events (id, merchant_id, type, payment_id, operation_id, snapshot,
                        request_id, idempotency_key, dispatched_at)
    VALUES (event_id, merchant, kind, payment, operation, snap, request, idem_key,
            CASE WHEN wanted THEN NULL ELSE now() END);
    IF wanted THEN
        -- Due in a minute: the API's relay publishes them long before; the
        -- worker's rescuer publishes them if it did not.
        INSERT INTO webhook_deliveries (event_id, endpoint_id, due_at)
        SELECT event_id, e.id, now() + interval '1 minute'
        FROM webhook_endpoints e
        WHERE e.merchant_id = merchant AND e.status = 'enabled'
          AND (kind = ANY (e.events) OR '*' = ANY (e.events));
    END IF;
END
$$;

-- The payment and its latest refunds (one more than `GET` embeds, so the
-- rendering knows whether there are more), the card token left out.
CREATE FUNCTION payment_snapshot(p payments) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'payment', to_jsonb(p) - 'card_token',
        'refunds', COALESCE((
            SELECT jsonb_agg(to_jsonb(o) ORDER BY o.created_at DESC, o.id DESC)
            FROM (SELECT * FROM operations
                  WHERE payment_id = p.id AND kind = 'refund'
                  ORDER BY created_at DESC, id DESC LIMIT 11) o), '[]'::jsonb))
$$;

CREATE FUNCTION payment_history_event() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    kind text;
    pay payments%ROWTYPE;
BEGIN
    kind := CASE
        WHEN NEW.from_status IS NULL AND NEW.to_status = 'pending' THEN 'payment.created'
        WHEN NEW.from_status IS DISTINCT FROM NEW.to_status THEN
            CASE NEW.to_status
                WHEN 'succeeded' THEN 'payment.succeeded'
                WHEN 'failed' THEN 'payment.failed'
                WHEN 'cancelled' THEN 'payment.cancelled'
            END
    END;
    IF kind IS NOT NULL THEN
        -- One read of the row: its merchant and its snapshot.
        SELECT * INTO pay FROM payments WHERE id = NEW.payment_id;
        PERFORM write_event(kind, pay.merchant_id, pay.id, NULL, payment_snapshot(pay),
                            NEW.request_id, NEW.idempotency_key);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER payment_status_history_event
    AFTER INSERT ON payment_status_history
    FOR EACH ROW EXECUTE FUNCTION payment_history_event();

-- A capture keeps the status `succeeded`: the flag is the change.
CREATE FUNCTION payment_captured_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM write_event('payment.captured', NEW.merchant_id, NEW.id, NULL, payment_snapshot(NEW),
                        NULL, NULL);
    RETURN NULL;
END
$$;

CREATE TRIGGER payments_captured_event
    AFTER UPDATE OF captured ON payments
    FOR EACH ROW
    WHEN (OLD.status = 'succeeded' AND NEW.status = 'succeeded' AND NOT OLD.captured AND NEW.captured)
    EXECUTE FUNCTION payment_captured_event();

CREATE FUNCTION refund_history_event() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    kind text;
    op operations%ROWTYPE;
BEGIN
    kind := CASE
        WHEN NEW.from_status IS NULL THEN 'refund.created'
        WHEN NEW.from_status IS DISTINCT FROM NEW.to_status THEN
            CASE NEW.to_status
                WHEN 'succeeded' THEN 'refund.succeeded'
                WHEN 'failed' THEN 'refund.failed'
            END
    END;
    -- Claims, retries and holds report nothing: the row is read only for
    -- the changes that are events, and only refunds have events of their own.
    IF kind IS NULL THEN
        RETURN NULL;
    END IF;
    SELECT * INTO op FROM operations WHERE id = NEW.operation_id;
    IF op.kind = 'refund' THEN
        PERFORM write_event(kind, op.merchant_id, op.payment_id, op.id,
                             jsonb_build_object('refund', to_jsonb(op)),
                             NEW.request_id, NEW.idempotency_key);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER operation_status_history_event
    AFTER INSERT ON operation_status_history
    FOR EACH ROW EXECUTE FUNCTION refund_history_event();
