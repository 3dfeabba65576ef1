-- Selection. Adapted as in RisingWave: the reference picks a few auction ids
-- of its own data set; a modulus selects a share of any data set.
SELECT auction, price FROM bid WHERE auction % 123 = 0
