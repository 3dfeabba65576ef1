-- The connectors demo (docker/compose.yaml runs it): orders from Postgres
-- by CDC, clicks from Kafka, a view joining them, and the view going back
-- out to Postgres (upserts) and to Kafka (Debezium events).
CREATE SOURCE shop WITH (connector = 'postgres-cdc', hostname = 'postgres', port = '5432',
    username = 'postgres', password = 'postgres', database.name = 'postgres');
CREATE TABLE orders (id BIGINT, customer TEXT NOT NULL, amount NUMERIC(12,2), placed TIMESTAMPTZ,
    PRIMARY KEY (id)) FROM shop TABLE 'public.orders';

CREATE SOURCE clicks (customer TEXT, url TEXT, ts TIMESTAMP)
    WITH (connector = 'kafka', topic = 'clicks', properties.bootstrap.server = 'kafka:9092')
    FORMAT PLAIN ENCODE JSON;

CREATE MATERIALIZED VIEW click_counts AS SELECT customer, count(*) AS clicks FROM clicks GROUP BY customer;
CREATE MATERIALIZED VIEW revenue AS
    SELECT o.customer, count(*) AS orders, sum(o.amount) AS total, max(c.clicks) AS clicks
    FROM orders o LEFT JOIN click_counts c ON o.customer = c.customer
    GROUP BY o.customer;

CREATE SINK revenue_to_postgres FROM revenue
    WITH (connector = 'postgres', url = 'postgres://postgres:postgres@postgres:5432/postgres',
          table = 'revenue', primary_key = 'customer');
CREATE SINK revenue_to_kafka FROM revenue
    WITH (connector = 'kafka', topic = 'revenue', properties.bootstrap.server = 'kafka:9092',
          primary_key = 'customer')
    FORMAT DEBEZIUM ENCODE JSON;
