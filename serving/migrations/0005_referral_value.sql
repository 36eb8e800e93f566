-- referral_value of serving.encoding.FIGURE_COLUMNS (features.referrals): what the customers a customer
-- referred brought from the referral on, plus their discounted residual value; NULL without a referrals table.
ALTER TABLE churnguard.scores ADD COLUMN referral_value double precision;
