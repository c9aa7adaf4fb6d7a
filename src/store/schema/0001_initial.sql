-- 0001: hosts, migrations and their event log.
CREATE TABLE hosts (
  id           TEXT PRIMARY KEY,
  name         TEXT NOT NULL,
  cluster      TEXT NOT NULL DEFAULT '',
  agent_url    TEXT NOT NULL,
  agent_token  TEXT NOT NULL DEFAULT '',
  facts_json   TEXT NOT NULL DEFAULT '{}',
  created_ms   BIGINT NOT NULL,
  last_seen_ms BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE migrations (
  id            TEXT PRIMARY KEY,
  vm_name       TEXT NOT NULL,
  vm_uuid       TEXT NOT NULL DEFAULT '',
  source_host   TEXT NOT NULL,
  target_host   TEXT NOT NULL,
  type          TEXT NOT NULL,
  state         TEXT NOT NULL,
  phase         TEXT NOT NULL DEFAULT '',
  priority      INTEGER NOT NULL DEFAULT 0,
  options_json  TEXT NOT NULL DEFAULT '{}',
  progress_json TEXT NOT NULL DEFAULT '{}',
  error_code    TEXT NOT NULL DEFAULT '',
  error_message TEXT NOT NULL DEFAULT '',
  created_ms    BIGINT NOT NULL,
  updated_ms    BIGINT NOT NULL,
  version       BIGINT NOT NULL,
  created_order INTEGER NOT NULL
);
CREATE INDEX migrations_state ON migrations(state);

CREATE TABLE migration_events (
  seq          INTEGER PRIMARY KEY,
  migration_id TEXT NOT NULL REFERENCES migrations(id) ON DELETE CASCADE,
  at_ms        BIGINT NOT NULL,
  kind         TEXT NOT NULL,
  message      TEXT NOT NULL,
  data_json    TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX migration_events_by_migration ON migration_events(migration_id, seq);
