-- Setup of the point-read A/B (SCRIPT=benches/ab/point_read.sql): 100,000 keyed rows and a view over them.
CREATE TABLE big (id BIGINT PRIMARY KEY, k INT, v INT);
INSERT INTO big SELECT value AS id, CAST(value % 100 AS INT) AS k, CAST(value AS INT) AS v FROM generate_series(1, 100000);
CREATE MATERIALIZED VIEW big_view AS SELECT id, k, v + 1 AS v1 FROM big;
