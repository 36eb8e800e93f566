-- Score history for monitoring (serving.store: HISTORY_COLUMNS): one compact snapshot per batch run,
-- probabilities in millionths and money in cents as the SQLite store keeps them, so both read back alike.
CREATE TABLE churnguard.runs (
    run_id        bigserial PRIMARY KEY,
    as_of         text NOT NULL,
    scored_at     text,
    model_version text,
    model         text,
    customers     integer,
    summary       text
);

CREATE TABLE churnguard.score_history (
    run_id        bigint NOT NULL,
    customer_id   text COLLATE "C" NOT NULL,
    churn_ppm     integer,
    revenue_cents bigint,
    clv_cents     bigint,
    risk_cents    bigint,
    segment       text,
    action        text,
    PRIMARY KEY (run_id, customer_id)
);
CREATE INDEX score_history_customer ON churnguard.score_history (customer_id);

CREATE TABLE churnguard.run_reports (
    run_id bigint NOT NULL,
    kind   text NOT NULL,
    body   text,
    PRIMARY KEY (run_id, kind)
);
