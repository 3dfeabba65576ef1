CREATE TABLE person (id BIGINT, name TEXT, email_address TEXT, credit_card TEXT, city TEXT, state TEXT, date_time TIMESTAMP, extra TEXT);
CREATE TABLE auction (id BIGINT, item_name TEXT, description TEXT, initial_bid BIGINT, reserve BIGINT, date_time TIMESTAMP, expires TIMESTAMP, seller BIGINT, category BIGINT, extra TEXT);
CREATE TABLE bid (auction BIGINT, bidder BIGINT, price BIGINT, channel TEXT, url TEXT, date_time TIMESTAMP, extra TEXT);
CREATE TABLE side_input (key BIGINT PRIMARY KEY, value TEXT);
INSERT INTO side_input SELECT value, 'side-' || CAST(value AS TEXT) FROM generate_series(0, 9999) AS g(value);
