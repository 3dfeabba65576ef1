-- The three Nexmark streams as sources (each view reads them with its own
-- reader), unpaced, :events events in all (psql -v events=N), with the
-- watermark Flink's DDL declares in the Nexmark suite (date_time - 4 s), and
-- the side table q13 joins. Used by benches/nexmark_stream.sh.
CREATE SOURCE person (WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND) WITH (
  connector = 'nexmark', nexmark.table.type = 'person', nexmark.event.num = :events,
  nexmark.min.event.gap.in.ns = 0, nexmark.max.chunk.size = 100000);
CREATE SOURCE auction (WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND) WITH (
  connector = 'nexmark', nexmark.table.type = 'auction', nexmark.event.num = :events,
  nexmark.min.event.gap.in.ns = 0, nexmark.max.chunk.size = 100000);
CREATE SOURCE bid (WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND) WITH (
  connector = 'nexmark', nexmark.table.type = 'bid', nexmark.event.num = :events,
  nexmark.min.event.gap.in.ns = 0, nexmark.max.chunk.size = 100000);
CREATE TABLE side_input (key BIGINT PRIMARY KEY, value TEXT);
INSERT INTO side_input SELECT value, 'side-' || CAST(value AS TEXT) FROM generate_series(0, 9999) AS g(value);
