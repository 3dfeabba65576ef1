-- A primary-key read of the table and one of the view (benches/ab/point_read_setup.sql).
\set id random(1, 100000)
SELECT id, k, v FROM big WHERE id = :id;
SELECT id, k, v1 FROM big_view WHERE id = :id;
