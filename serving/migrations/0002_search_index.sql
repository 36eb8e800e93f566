-- Substring search on customer ids (the dashboard's search box, ILIKE '%…%') through a trigram index.
-- pg_trgm ships with PostgreSQL; where the role may not create it, search still works by scanning.
DO $$
BEGIN
    CREATE EXTENSION IF NOT EXISTS pg_trgm;
    EXECUTE 'CREATE INDEX scores_customer_id_trgm ON churnguard.scores USING gin (customer_id gin_trgm_ops)';
EXCEPTION WHEN insufficient_privilege OR undefined_file OR feature_not_supported THEN
    RAISE NOTICE 'pg_trgm unavailable (%): customer search scans the current set', SQLERRM;
END
$$;
