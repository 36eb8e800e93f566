-- The value columns of serving.encoding.FIGURE_COLUMNS added with the CLV rework: forecast revenue over
-- the horizon, one-year value, probability alive, the value basis and the whole clv object (JSON text).
ALTER TABLE churnguard.scores
    ADD COLUMN expected_revenue_90d double precision,
    ADD COLUMN value_1y double precision,
    ADD COLUMN p_alive double precision,
    ADD COLUMN value_basis text,
    ADD COLUMN clv_detail text;
