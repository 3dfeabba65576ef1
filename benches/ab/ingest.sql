-- 1,000 rows per transaction into t (benches/ab/ingest_setup.sql); rows/s = tps * 1000.
\set base random(1, 1000000)
INSERT INTO t SELECT :base * 1000 + value, CAST(value % 100 AS INT), CAST(value AS INT) FROM generate_series(1, 1000);
