-- The payment list (`GET /v1/payments`): newest first, keyset pagination on
-- (created_at, id), filters. Every index here leads with `merchant_id` (a
-- list never crosses merchants) and ends with `created_at DESC, id DESC`, so
-- a page is one index range read in list order, with no sort and no OFFSET,
-- however many payments the merchant has and however deep the cursor.
--
-- Additive: indexes only, plus dropping the one the first index supersedes.
-- `IF NOT EXISTS`: on a large existing table, CREATE INDEX blocks writes to
-- `payments` while it runs (measured: about 3 to 6 s per index per million
-- rows). An operator who cannot pause payments that long creates the same
-- indexes beforehand with `CREATE INDEX CONCURRENTLY` under these names (see
-- the README); this migration then only records itself.

-- The list itself, with or without a created[...] range and a cursor:
-- `merchant_id = $1 AND (created_at, id) < ($2, $3) ORDER BY created_at DESC,
-- id DESC LIMIT n` is one index range scan.
CREATE INDEX IF NOT EXISTS payments_list_idx
    ON payments (merchant_id, created_at DESC, id DESC);

-- Superseded: same leading columns, so anything it served (the list, the
-- foreign key from merchants) the index above serves.
DROP INDEX IF EXISTS payments_merchant_created_idx;

-- Equality filters that can match few of a merchant's payments. Without
-- these, a filter matching nothing would walk every payment of the merchant
-- (measured at 1,000,000 payments: 0.3 to 1.5 s); with them it is the same
-- index range scan as the plain list.
--
-- `status`: a rare status (`processing`, `pending`, `failed`) among millions
-- of `succeeded`.
CREATE INDEX IF NOT EXISTS payments_list_status_idx
    ON payments (merchant_id, status, created_at DESC, id DESC);

-- Customers, orders and invoices: a handful of payments each. Partial: a
-- payment without one is never looked up by it. `created_at, id` stay in the
-- key so a merchant that reuses one id for many payments still pages without
-- a sort.
CREATE INDEX IF NOT EXISTS payments_list_customer_idx
    ON payments (merchant_id, customer_id, created_at DESC, id DESC)
    WHERE customer_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS payments_list_order_idx
    ON payments (merchant_id, order_id, created_at DESC, id DESC)
    WHERE order_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS payments_list_invoice_idx
    ON payments (merchant_id, invoice_id, created_at DESC, id DESC)
    WHERE invoice_id IS NOT NULL;

-- Deliberately not indexed: `currency` and `amount[gte|lte]`. They are served
-- by payments_list_idx with a filter, which reads rows in list order until a
-- page is full: fast while the filter matches a fair share of the payments
-- (1 % of them: under a millisecond), slow only when it matches almost none
-- (a currency the merchant never charged in). No index can give an amount
-- range in created order, and every index on `payments` is paid for on each
-- insert and on each status change of every payment (no update of a payment
-- is HOT: `due_at` is indexed and changes with the status). Add them here if
-- merchants come to rely on those filters.
