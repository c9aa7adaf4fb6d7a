-- 0002: migration plans (docs/plans.md). A plan's migrations carry its id in plan_id ('' for
-- migrations made by POST /api/v1/migrations).
CREATE TABLE plans (
  id            TEXT PRIMARY KEY,
  name          TEXT NOT NULL UNIQUE,
  document_json TEXT NOT NULL,
  state         TEXT NOT NULL,
  error_message TEXT NOT NULL DEFAULT '',
  created_ms    BIGINT NOT NULL,
  updated_ms    BIGINT NOT NULL,
  version       BIGINT NOT NULL,
  created_order INTEGER NOT NULL
);

ALTER TABLE migrations ADD COLUMN plan_id TEXT NOT NULL DEFAULT '';
CREATE INDEX migrations_by_plan ON migrations(plan_id);
