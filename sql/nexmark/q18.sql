-- The last bid of each bidder on each auction. Adapted: ties in time are
-- broken by price and extra, so that the result is deterministic.
SELECT auction, bidder, price, channel, url, date_time, extra
FROM (
    SELECT *, row_number() OVER (PARTITION BY bidder, auction ORDER BY date_time DESC, price DESC, extra) AS rank_number
    FROM bid
) ranked
WHERE rank_number <= 1
