-- The upstream database of the demo: orders read by Freshet through CDC,
-- and the table Freshet's Postgres sink writes revenue into.
CREATE TABLE orders (id BIGINT PRIMARY KEY, customer TEXT NOT NULL, amount NUMERIC(12,2), placed TIMESTAMPTZ DEFAULT now());
INSERT INTO orders (id, customer, amount) SELECT n, 'customer' || (n % 20), (n % 97) + 0.5 FROM generate_series(1, 1000) n;
CREATE TABLE revenue (customer TEXT PRIMARY KEY, orders BIGINT, total NUMERIC, clicks BIGINT);
