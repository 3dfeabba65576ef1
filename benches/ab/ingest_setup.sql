-- Setup of the ingest A/B (benches/round_trips_ab.sh with SCRIPT=benches/ab/ingest.sql):
-- the shape of `make bench`'s ingest, a table feeding an aggregate view and a join view.
CREATE TABLE t (id BIGINT, k INT, v INT);
CREATE TABLE dim (k INT PRIMARY KEY, name TEXT);
INSERT INTO dim SELECT CAST(value AS INT), 'n' || CAST(value AS TEXT) FROM generate_series(0, 99);
CREATE MATERIALIZED VIEW agg AS SELECT k, count(*) AS n, sum(v) AS s FROM t GROUP BY k;
CREATE MATERIALIZED VIEW joined AS SELECT t.id, d.name, t.v FROM t JOIN dim d ON t.k = d.k;
