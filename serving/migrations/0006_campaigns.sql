-- Planned campaigns, their assignments and their latest reports (serving.campaign_store), the same three
-- tables as in the SQLite store, so every replica's API and dashboard see a campaign planned on any host.
-- Times are ISO text and the plan and report JSON text (a report may hold Infinity, which jsonb refuses),
-- stored as written so both stores read back alike. customer_id orders bytewise, as SQLite's BINARY.
CREATE TABLE churnguard.campaigns (
    campaign   text PRIMARY KEY,          -- a name is used once: this key refuses the second planner
    created_at text NOT NULL,
    plan       text NOT NULL
);

CREATE TABLE churnguard.campaign_contacts (
    campaign               text NOT NULL REFERENCES churnguard.campaigns (campaign) ON DELETE CASCADE,
    customer_id            text COLLATE "C" NOT NULL,
    action                 text,
    grp                    text,          -- treatment or control
    assignment_probability double precision,
    assigned_at            text,
    expected_net_value     double precision,
    why                    text,
    PRIMARY KEY (campaign, customer_id)
);

CREATE TABLE churnguard.campaign_reports (
    campaign    text PRIMARY KEY,         -- no foreign key: a campaign may be measured without being planned here
    computed_at text NOT NULL,
    report      text NOT NULL
);
