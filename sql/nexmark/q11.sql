-- User sessions: bids per bidder per session, a session ending after 10 s
-- without a bid (window_end = last bid + 10 s, as Flink's session windows).
SELECT bidder, count(*) AS bid_count, window_start AS starttime, window_end AS endtime
FROM SESSION(bid, date_time, INTERVAL '10' SECOND, bidder)
GROUP BY bidder, window_start, window_end
