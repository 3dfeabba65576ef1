-- The ten highest bids of each auction. Adapted: ties in price are broken
-- by time and extra, so that the result is deterministic.
SELECT auction, bidder, price, channel, url, date_time, extra, rank_number
FROM (
    SELECT *, row_number() OVER (PARTITION BY auction ORDER BY price DESC, date_time, extra) AS rank_number
    FROM bid
) ranked
WHERE rank_number <= 10
