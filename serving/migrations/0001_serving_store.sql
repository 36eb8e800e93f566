-- The PostgreSQL serving store, first version.
-- Scores are kept per refresh ("score set"): a refresh writes a new set and moves the one-row pointer
-- current_set to it in the same transaction, so every statement sees the old set or the new one.
-- Columns follow serving.encoding.STORE_COLUMNS (tests/serving/test_pg_store.py checks they agree).

CREATE TABLE churnguard.score_sets (
    id            bigserial PRIMARY KEY,
    created_at    timestamptz NOT NULL DEFAULT now(),
    meta          text NOT NULL,          -- json.dumps(meta), kept byte for byte
    shared_model  text,                   -- json.dumps(meta["model"]): rows whose model is NULL share it
    feature_names text                    -- json.dumps(meta["feature_names"]): the order of array inputs
);

CREATE TABLE churnguard.current_set (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    set_id   bigint REFERENCES churnguard.score_sets (id) ON DELETE SET NULL
);
INSERT INTO churnguard.current_set (only_row, set_id) VALUES (true, NULL);

CREATE TABLE churnguard.scores (
    set_id             bigint NOT NULL,
    customer_id        text COLLATE "C" NOT NULL,   -- byte order, as SQLite sorts
    as_of              text,
    churn_probability  double precision,
    risk_tier          text,
    clv                double precision,
    value_at_risk      double precision,
    segment            text,
    action_name        text,
    expected_net_value double precision,
    reasons            text,
    action             text,
    model              text,
    features           text,
    history            text,
    PRIMARY KEY (set_id, customer_id)
);
-- The dashboard's filters and sort orders (NULLS FIRST: SQLite's order, so both stores page alike).
CREATE INDEX scores_value_at_risk ON churnguard.scores (set_id, value_at_risk NULLS FIRST);
CREATE INDEX scores_churn_probability ON churnguard.scores (set_id, churn_probability NULLS FIRST);
CREATE INDEX scores_clv ON churnguard.scores (set_id, clv NULLS FIRST);
CREATE INDEX scores_expected_net_value ON churnguard.scores (set_id, expected_net_value NULLS FIRST);
CREATE INDEX scores_segment ON churnguard.scores (set_id, segment, value_at_risk NULLS FIRST);
CREATE INDEX scores_risk_tier ON churnguard.scores (set_id, risk_tier, value_at_risk NULLS FIRST);
CREATE INDEX scores_action_name ON churnguard.scores (set_id, action_name, value_at_risk NULLS FIRST);

-- API keys (SHA-256 hashes only) shared by every replica.
CREATE TABLE churnguard.api_keys (
    key_id     text PRIMARY KEY,
    name       text NOT NULL,
    sha256     text NOT NULL,
    created_at text NOT NULL
);

-- Dashboard sessions signed out before they expired, and the secret that signs sessions.
CREATE TABLE churnguard.ended_sessions (
    digest  text PRIMARY KEY,   -- sha256 of the session nonce
    expires bigint NOT NULL
);
CREATE INDEX ended_sessions_expires ON churnguard.ended_sessions (expires);

CREATE TABLE churnguard.secrets (
    name  text PRIMARY KEY,
    value text NOT NULL
);
