-- Bounded side input join: each bid with the side table's value for its
-- auction id modulo 10,000.
-- Adapted: the side input is the table side_input (tables.sql fills it with
-- 10,000 keys) joined on the key; Flink's FOR SYSTEM_TIME AS OF lookup is
-- a join whose side does not change here.
SELECT b.auction, b.bidder, b.price, b.date_time, s.value
FROM bid b JOIN side_input s ON b.auction % 10000 = s.key
