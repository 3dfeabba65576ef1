-- Average selling price per seller: the average of each seller's winning
-- bid price over that auction and the seller's 10 auctions before it.
-- Adapted: the winning bid is chosen with deterministic tie-breakers (as in
-- q9), and the frame's ORDER BY breaks ties in time by auction id, so that
-- "the 10 before" is one set of rows. (Flink cannot run this query: its
-- OVER window does not take retractions; here it is maintained.)
SELECT seller, avg(price) OVER (PARTITION BY seller ORDER BY bid_date_time, id
                                ROWS BETWEEN 10 PRECEDING AND CURRENT ROW) AS avg_price
FROM (
    SELECT a.id, a.seller, b.price, b.date_time AS bid_date_time,
           row_number() OVER (PARTITION BY a.id ORDER BY b.price DESC, b.date_time ASC, b.bidder, b.extra) AS rownum
    FROM auction a, bid b
    WHERE a.id = b.auction AND b.date_time BETWEEN a.date_time AND a.expires
) winners
WHERE rownum <= 1
