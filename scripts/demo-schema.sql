-- The demo's sales star schema (scripts/demo.sh, `pgshift bench e2e`): psql -v rows=N -f scripts/demo-schema.sql
CREATE SCHEMA sales;
CREATE TYPE sales.status AS ENUM ('new', 'paid', 'shipped');
-- Dimensions: a UUID-keyed one, an integer-keyed one, a small one, a date dimension.
CREATE TABLE sales.customers (id uuid PRIMARY KEY, name text NOT NULL, country char(2) NOT NULL, since date NOT NULL);
INSERT INTO sales.customers SELECT md5('c' || g)::uuid, 'customer ' || g, (ARRAY['DE','FR','US','JP'])[g % 4 + 1],
       DATE '2015-01-01' + g % 3000 FROM generate_series(1, 200000) g;
CREATE TABLE sales.products (id int4 PRIMARY KEY, title text NOT NULL, price numeric(10,2) NOT NULL, weight_kg float4);
INSERT INTO sales.products SELECT g, 'product ' || g, (g % 500) + 0.99, (g % 97) / 10.0 FROM generate_series(1, 20000) g;
CREATE TABLE sales.stores (id int2 PRIMARY KEY, city text NOT NULL, opened timestamptz NOT NULL);
INSERT INTO sales.stores SELECT g, 'city ' || g, TIMESTAMPTZ '2010-01-01' + g * INTERVAL '40 days' FROM generate_series(1, 60) g;
CREATE TABLE sales.days (day date PRIMARY KEY, weekday int2 NOT NULL, holiday bool NOT NULL);
INSERT INTO sales.days SELECT d::date, extract(isodow FROM d)::int2, extract(doy FROM d) IN (1, 359, 360)
FROM generate_series(DATE '2020-01-01', DATE '2026-12-31', INTERVAL '1 day') d;
-- The fact table, with a skewed key: 90% of the ids in a dense band, the rest spread thinly up to ~1e12, so an even
-- stride between min and max would put nearly every row in its first part.
CREATE TABLE sales.orders (
  id bigint PRIMARY KEY, customer uuid NOT NULL, product int4 NOT NULL, store int2 NOT NULL, day date NOT NULL,
  amount numeric(12,2) NOT NULL, discount float8, status sales.status NOT NULL, note text, placed_at timestamptz NOT NULL,
  tags text[], attrs jsonb);
INSERT INTO sales.orders
SELECT CASE WHEN g % 10 < 9 THEN g ELSE 1000000000 + g::int8 * 333331 END, md5('c' || g % 200000 + 1)::uuid,
       g % 20000 + 1, (g % 60 + 1)::int2, DATE '2020-01-01' + g % 2500, (g % 100000) / 100.0,
       CASE WHEN g % 10 = 0 THEN NULL ELSE (g % 30) / 100.0 END,
       (ARRAY['new','paid','shipped']::sales.status[])[g % 3 + 1], CASE WHEN g % 7 = 0 THEN 'gift ' || g END,
       TIMESTAMPTZ '2020-01-01' + g * INTERVAL '61 seconds', ARRAY['t' || g % 4], jsonb_build_object('n', g % 9)
FROM generate_series(1, :rows) g;
VACUUM ANALYZE;
