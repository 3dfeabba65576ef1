-- Winning bids: each auction with its highest bid during the auction.
-- Adapted: ties are broken by the bid's extra column and bidder as well as
-- its time, so that exactly one bid wins and the result is deterministic.
SELECT id, item_name, description, initial_bid, reserve, date_time, expires, seller, category,
       auction, bidder, price, bid_date_time
FROM (
    SELECT a.id, a.item_name, a.description, a.initial_bid, a.reserve, a.date_time, a.expires,
           a.seller, a.category, b.auction, b.bidder, b.price, b.date_time AS bid_date_time,
           row_number() OVER (PARTITION BY a.id ORDER BY b.price DESC, b.date_time ASC, b.bidder, b.extra) AS rownum
    FROM auction a, bid b
    WHERE a.id = b.auction AND b.date_time BETWEEN a.date_time AND a.expires
) winners
WHERE rownum <= 1
