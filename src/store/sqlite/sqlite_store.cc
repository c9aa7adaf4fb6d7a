// SQLite implementation of Store: one connection in serialized mode guarded by a mutex
// (ferryd's write rate is tiny), WAL journal so readers never block the writer, every
// statement parameterized.
#include <sqlite3.h>

#include <mutex>

#include "store/schema.h"
#include "store/store.h"

namespace ferry {
namespace {

class Statement {
 public:
  Statement(sqlite3* db, const char* sql) : db_(db) {
    rc_ = sqlite3_prepare_v2(db, sql, -1, &stmt_, nullptr);
  }
  ~Statement() { sqlite3_finalize(stmt_); }
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;

  Status prepared() const {
    if (rc_ == SQLITE_OK) return Status::Ok();
    return Status::Io(std::string("sqlite prepare: ") + sqlite3_errmsg(db_));
  }
  Statement& Bind(int i, const std::string& v) {
    sqlite3_bind_text(stmt_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
    return *this;
  }
  Statement& Bind(int i, int64_t v) {
    sqlite3_bind_int64(stmt_, i, v);
    return *this;
  }
  // SQLITE_ROW, SQLITE_DONE, or an error code.
  int Step() { return sqlite3_step(stmt_); }
  std::string Text(int col) const {
    const unsigned char* t = sqlite3_column_text(stmt_, col);
    return t ? std::string(reinterpret_cast<const char*>(t),
                           static_cast<size_t>(sqlite3_column_bytes(stmt_, col)))
             : std::string();
  }
  int64_t Int(int col) const { return sqlite3_column_int64(stmt_, col); }

 private:
  sqlite3* db_;
  sqlite3_stmt* stmt_ = nullptr;
  int rc_;
};

constexpr const char* kMigrationColumns =
    "id, vm_name, vm_uuid, source_host, target_host, type, state, phase, priority, "
    "options_json, progress_json, error_code, error_message, created_ms, updated_ms, version, "
    "plan_id";

constexpr const char* kPlanColumns =
    "id, name, document_json, state, error_message, created_ms, updated_ms, version";

class SqliteStore final : public Store {
 public:
  explicit SqliteStore(sqlite3* db) : db_(db) {}
  ~SqliteStore() override { sqlite3_close(db_); }

  Status Init() {
    FERRY_TRY(Exec("PRAGMA journal_mode=WAL"));
    FERRY_TRY(Exec("PRAGMA foreign_keys=ON"));
    FERRY_TRY(Exec("PRAGMA synchronous=FULL"));
    sqlite3_busy_timeout(db_, 10000);
    FERRY_TRY(Exec("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)"));
    int current = 0;
    {
      Statement s(db_, "SELECT COALESCE(MAX(version), 0) FROM schema_version");
      FERRY_TRY(s.prepared());
      if (s.Step() == SQLITE_ROW) current = static_cast<int>(s.Int(0));
    }
    const auto& all = SchemaMigrations();
    if (!all.empty() && current > all.back().version) {
      return Status::Unsupported("database schema version " + std::to_string(current) +
                                 " is newer than this ferryd (" +
                                 std::to_string(all.back().version) + ")");
    }
    for (const auto& m : all) {
      if (m.version <= current) continue;
      FERRY_TRY(Exec("BEGIN IMMEDIATE"));
      Status s = Exec(std::string(m.sql));
      if (s.ok()) {
        Statement ins(db_, "INSERT INTO schema_version(version) VALUES (?1)");
        s = ins.prepared();
        if (s.ok()) {
          ins.Bind(1, static_cast<int64_t>(m.version));
          if (ins.Step() != SQLITE_DONE) s = Error("record schema version");
        }
      }
      if (!s.ok()) {
        (void)Exec("ROLLBACK");
        return s.WithContext("schema migration " + std::string(m.name));
      }
      FERRY_TRY(Exec("COMMIT"));
      current = m.version;
    }
    version_ = current;
    return Status::Ok();
  }

  int SchemaVersion() const override { return version_; }

  Status PutHost(const HostRecord& h) override {
    std::lock_guard<std::mutex> l(mu_);
    Statement s(db_,
                "INSERT INTO hosts(id, name, cluster, agent_url, agent_token, facts_json, "
                "created_ms, last_seen_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) "
                "ON CONFLICT(id) DO UPDATE SET name=?2, cluster=?3, agent_url=?4, "
                "agent_token=?5, facts_json=?6, last_seen_ms=?8");
    FERRY_TRY(s.prepared());
    s.Bind(1, h.id).Bind(2, h.name).Bind(3, h.cluster).Bind(4, h.agent_url);
    s.Bind(5, h.agent_token).Bind(6, h.facts_json).Bind(7, h.created_ms).Bind(8, h.last_seen_ms);
    if (s.Step() != SQLITE_DONE) return Error("put host " + h.id);
    return Status::Ok();
  }

  Result<HostRecord> GetHost(const std::string& id) override {
    std::lock_guard<std::mutex> l(mu_);
    Statement s(db_,
                "SELECT id, name, cluster, agent_url, agent_token, facts_json, created_ms, "
                "last_seen_ms FROM hosts WHERE id = ?1");
    FERRY_TRY(s.prepared());
    s.Bind(1, id);
    int rc = s.Step();
    if (rc == SQLITE_DONE) return Status::NotFound("host '" + id + "' is not registered");
    if (rc != SQLITE_ROW) return Error("get host " + id);
    return ReadHost(s);
  }

  Result<std::vector<HostRecord>> ListHosts() override {
    std::lock_guard<std::mutex> l(mu_);
    Statement s(db_,
                "SELECT id, name, cluster, agent_url, agent_token, facts_json, created_ms, "
                "last_seen_ms FROM hosts ORDER BY id");
    FERRY_TRY(s.prepared());
    std::vector<HostRecord> out;
    int rc;
    while ((rc = s.Step()) == SQLITE_ROW) out.push_back(ReadHost(s));
    if (rc != SQLITE_DONE) return Error("list hosts");
    return out;
  }

  Status DeleteHost(const std::string& id) override {
    std::lock_guard<std::mutex> l(mu_);
    Statement s(db_, "DELETE FROM hosts WHERE id = ?1");
    FERRY_TRY(s.prepared());
    s.Bind(1, id);
    if (s.Step() != SQLITE_DONE) return Error("delete host " + id);
    if (sqlite3_changes(db_) == 0) return Status::NotFound("host '" + id + "' is not registered");
    return Status::Ok();
  }

  Status CreateMigration(MigrationRecord* m) override {
    std::lock_guard<std::mutex> l(mu_);
    return CreateMigrationLocked(m);
  }

  Result<MigrationRecord> GetMigration(const std::string& id) override {
    std::lock_guard<std::mutex> l(mu_);
    return GetMigrationLocked(id);
  }

  Result<std::vector<MigrationRecord>> ListMigrations(bool active_only) override {
    std::lock_guard<std::mutex> l(mu_);
    std::string sql =
        std::string("SELECT ") + kMigrationColumns + " FROM migrations" +
        (active_only ? " WHERE state NOT IN ('completed','failed','cancelled')" : "") +
        " ORDER BY created_order";
    Statement s(db_, sql.c_str());
    FERRY_TRY(s.prepared());
    std::vector<MigrationRecord> out;
    int rc;
    while ((rc = s.Step()) == SQLITE_ROW) {
      FERRY_ASSIGN_OR_RETURN(MigrationRecord m, ReadMigration(s));
      out.push_back(std::move(m));
    }
    if (rc != SQLITE_DONE) return Error("list migrations");
    return out;
  }

  Status UpdateMigration(MigrationRecord* m, const std::optional<EventRecord>& event) override {
    std::lock_guard<std::mutex> l(mu_);
    FERRY_TRY(Exec("BEGIN IMMEDIATE"));
    Status s = UpdateLocked(m, event);
    if (!s.ok()) {
      (void)Exec("ROLLBACK");
      return s;
    }
    FERRY_TRY(Exec("COMMIT"));
    ++m->version;
    return Status::Ok();
  }

  Status CreatePlan(PlanRecord* p, std::vector<MigrationRecord>* migrations) override {
    std::lock_guard<std::mutex> l(mu_);
    FERRY_TRY(Exec("BEGIN IMMEDIATE"));
    Status s = CreatePlanLocked(p, migrations);
    if (!s.ok()) {
      (void)Exec("ROLLBACK");
      return s;
    }
    return Exec("COMMIT");
  }

  Result<PlanRecord> GetPlan(const std::string& id_or_name) override {
    std::lock_guard<std::mutex> l(mu_);
    return GetPlanLocked(id_or_name);
  }

  Result<std::vector<PlanRecord>> ListPlans() override {
    std::lock_guard<std::mutex> l(mu_);
    std::string sql = std::string("SELECT ") + kPlanColumns + " FROM plans ORDER BY created_order";
    Statement s(db_, sql.c_str());
    FERRY_TRY(s.prepared());
    std::vector<PlanRecord> out;
    int rc;
    while ((rc = s.Step()) == SQLITE_ROW) {
      FERRY_ASSIGN_OR_RETURN(PlanRecord p, ReadPlan(s));
      out.push_back(std::move(p));
    }
    if (rc != SQLITE_DONE) return Error("list plans");
    return out;
  }

  Status UpdatePlan(PlanRecord* p, std::vector<MigrationRecord>* new_migrations) override {
    std::lock_guard<std::mutex> l(mu_);
    FERRY_TRY(Exec("BEGIN IMMEDIATE"));
    Status s = UpdatePlanLocked(p, new_migrations);
    if (!s.ok()) {
      (void)Exec("ROLLBACK");
      return s;
    }
    FERRY_TRY(Exec("COMMIT"));
    ++p->version;
    return Status::Ok();
  }

  Status DeletePlan(const std::string& id) override {
    std::lock_guard<std::mutex> l(mu_);
    FERRY_TRY(Exec("BEGIN IMMEDIATE"));
    Status s = DeletePlanLocked(id);
    if (!s.ok()) {
      (void)Exec("ROLLBACK");
      return s;
    }
    return Exec("COMMIT");
  }

  Result<std::vector<MigrationRecord>> ListPlanMigrations(const std::string& plan_id) override {
    std::lock_guard<std::mutex> l(mu_);
    return ListPlanMigrationsLocked(plan_id);
  }

  Status AppendEvent(EventRecord* e) override {
    std::lock_guard<std::mutex> l(mu_);
    return AppendEventLocked(e);
  }

  Result<std::vector<EventRecord>> ListEvents(const std::string& migration_id,
                                              int64_t after_seq) override {
    std::lock_guard<std::mutex> l(mu_);
    Statement s(db_,
                "SELECT seq, migration_id, at_ms, kind, message, data_json FROM "
                "migration_events WHERE migration_id = ?1 AND seq > ?2 ORDER BY seq");
    FERRY_TRY(s.prepared());
    s.Bind(1, migration_id).Bind(2, after_seq);
    std::vector<EventRecord> out;
    int rc;
    while ((rc = s.Step()) == SQLITE_ROW) {
      out.push_back({s.Int(0), s.Text(1), s.Int(2), s.Text(3), s.Text(4), s.Text(5)});
    }
    if (rc != SQLITE_DONE) return Error("list events");
    return out;
  }

 private:
  Status Exec(const std::string& sql) {
    char* err = nullptr;
    if (sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &err) != SQLITE_OK) {
      std::string m = err ? err : "unknown";
      sqlite3_free(err);
      return Status::Io("sqlite: " + m);
    }
    return Status::Ok();
  }

  Status Error(const std::string& what) {
    return Status::Io("sqlite: " + what + ": " + sqlite3_errmsg(db_));
  }

  static HostRecord ReadHost(const Statement& s) {
    return {s.Text(0), s.Text(1), s.Text(2), s.Text(3), s.Text(4), s.Text(5), s.Int(6), s.Int(7)};
  }

  Status CreateMigrationLocked(MigrationRecord* m) {
    m->version = 1;
    Statement s(db_,
                "INSERT INTO migrations(id, vm_name, vm_uuid, source_host, target_host, type, "
                "state, phase, priority, options_json, progress_json, error_code, error_message, "
                "created_ms, updated_ms, version, plan_id, created_order) VALUES (?1, ?2, ?3, ?4, "
                "?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, "
                "(SELECT COALESCE(MAX(created_order), 0) + 1 FROM migrations))");
    FERRY_TRY(s.prepared());
    BindMigration(s, *m);
    int rc = s.Step();
    if (rc == SQLITE_CONSTRAINT) {
      return Status::AlreadyExists("migration '" + m->id + "' already exists");
    }
    if (rc != SQLITE_DONE) return Error("create migration " + m->id);
    return Status::Ok();
  }

  Status CreatePlanLocked(PlanRecord* p, std::vector<MigrationRecord>* migrations) {
    {
      Statement dup(db_, "SELECT id FROM plans WHERE id = ?1 OR name = ?2");
      FERRY_TRY(dup.prepared());
      dup.Bind(1, p->id).Bind(2, p->name);
      int rc = dup.Step();
      if (rc == SQLITE_ROW) {
        return Status::AlreadyExists(dup.Text(0) == p->id
                                         ? "plan '" + p->id + "' already exists"
                                         : "a plan named '" + p->name + "' already exists");
      }
      if (rc != SQLITE_DONE) return Error("create plan " + p->name);
    }
    Statement s(db_,
                "INSERT INTO plans(id, name, document_json, state, error_message, created_ms, "
                "updated_ms, version, created_order) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 1, "
                "(SELECT COALESCE(MAX(created_order), 0) + 1 FROM plans))");
    FERRY_TRY(s.prepared());
    s.Bind(1, p->id).Bind(2, p->name).Bind(3, p->document_json);
    s.Bind(4, std::string(PlanStateName(p->state))).Bind(5, p->error_message);
    s.Bind(6, p->created_ms).Bind(7, p->updated_ms);
    int rc = s.Step();
    if (rc == SQLITE_CONSTRAINT) return Status::AlreadyExists("plan '" + p->name + "' exists");
    if (rc != SQLITE_DONE) return Error("create plan " + p->name);
    FERRY_TRY(CreatePlanMigrationsLocked(p->id, migrations));
    p->version = 1;
    return Status::Ok();
  }

  Status CreatePlanMigrationsLocked(const std::string& plan_id,
                                    std::vector<MigrationRecord>* migrations) {
    if (migrations == nullptr) return Status::Ok();
    for (MigrationRecord& m : *migrations) {
      m.plan_id = plan_id;
      FERRY_TRY(CreateMigrationLocked(&m));
    }
    return Status::Ok();
  }

  Result<PlanRecord> GetPlanLocked(const std::string& id_or_name) {
    std::string sql = std::string("SELECT ") + kPlanColumns +
                      " FROM plans WHERE id = ?1 OR name = ?1 ORDER BY id = ?1 DESC LIMIT 1";
    Statement s(db_, sql.c_str());
    FERRY_TRY(s.prepared());
    s.Bind(1, id_or_name);
    int rc = s.Step();
    if (rc == SQLITE_DONE) return Status::NotFound("plan '" + id_or_name + "' does not exist");
    if (rc != SQLITE_ROW) return Error("get plan " + id_or_name);
    return ReadPlan(s);
  }

  Status UpdatePlanLocked(PlanRecord* p, std::vector<MigrationRecord>* new_migrations) {
    FERRY_ASSIGN_OR_RETURN(PlanRecord stored, GetPlanLocked(p->id));
    if (stored.id != p->id) return Status::NotFound("plan '" + p->id + "' does not exist");
    if (stored.version != p->version) {
      return Status::Mismatch("plan '" + p->id + "' was updated concurrently (version " +
                              std::to_string(stored.version) + ", expected " +
                              std::to_string(p->version) + ")");
    }
    Statement s(db_,
                "UPDATE plans SET name=?2, document_json=?3, state=?4, error_message=?5, "
                "created_ms=?6, updated_ms=?7, version=?8 + 1 WHERE id=?1 AND version=?8");
    FERRY_TRY(s.prepared());
    s.Bind(1, p->id).Bind(2, p->name).Bind(3, p->document_json);
    s.Bind(4, std::string(PlanStateName(p->state))).Bind(5, p->error_message);
    s.Bind(6, p->created_ms).Bind(7, p->updated_ms).Bind(8, p->version);
    int rc = s.Step();
    if (rc == SQLITE_CONSTRAINT) {
      return Status::AlreadyExists("a plan named '" + p->name + "' already exists");
    }
    if (rc != SQLITE_DONE) return Error("update plan " + p->id);
    return CreatePlanMigrationsLocked(p->id, new_migrations);
  }

  Status DeletePlanLocked(const std::string& id) {
    FERRY_ASSIGN_OR_RETURN(PlanRecord stored, GetPlanLocked(id));
    if (stored.id != id) return Status::NotFound("plan '" + id + "' does not exist");
    FERRY_ASSIGN_OR_RETURN(std::vector<MigrationRecord> migrations, ListPlanMigrationsLocked(id));
    for (const MigrationRecord& m : migrations) {
      if (!IsFinal(m.state)) {
        return Status::FailedPrecondition("plan '" + stored.name + "' has an active migration " +
                                          m.id + " (" + std::string(MigrationStateName(m.state)) +
                                          ")");
      }
    }
    Statement dm(db_, "DELETE FROM migrations WHERE plan_id = ?1");
    FERRY_TRY(dm.prepared());
    dm.Bind(1, id);
    if (dm.Step() != SQLITE_DONE) return Error("delete migrations of plan " + id);
    Statement dp(db_, "DELETE FROM plans WHERE id = ?1");
    FERRY_TRY(dp.prepared());
    dp.Bind(1, id);
    if (dp.Step() != SQLITE_DONE) return Error("delete plan " + id);
    return Status::Ok();
  }

  Result<std::vector<MigrationRecord>> ListPlanMigrationsLocked(const std::string& plan_id) {
    std::string sql = std::string("SELECT ") + kMigrationColumns +
                      " FROM migrations WHERE plan_id = ?1 ORDER BY created_order";
    Statement s(db_, sql.c_str());
    FERRY_TRY(s.prepared());
    s.Bind(1, plan_id);
    std::vector<MigrationRecord> out;
    int rc;
    while ((rc = s.Step()) == SQLITE_ROW) {
      FERRY_ASSIGN_OR_RETURN(MigrationRecord m, ReadMigration(s));
      out.push_back(std::move(m));
    }
    if (rc != SQLITE_DONE) return Error("list migrations of plan " + plan_id);
    return out;
  }

  static Result<PlanRecord> ReadPlan(const Statement& s) {
    PlanRecord p;
    p.id = s.Text(0);
    p.name = s.Text(1);
    p.document_json = s.Text(2);
    auto state = ParsePlanState(s.Text(3));
    if (!state) return Status::Corrupt("plan '" + p.id + "' has unknown state '" + s.Text(3) + "'");
    p.state = *state;
    p.error_message = s.Text(4);
    p.created_ms = s.Int(5);
    p.updated_ms = s.Int(6);
    p.version = s.Int(7);
    return p;
  }

  static void BindMigration(Statement& s, const MigrationRecord& m) {
    s.Bind(17, m.plan_id);
    s.Bind(1, m.id).Bind(2, m.vm_name).Bind(3, m.vm_uuid).Bind(4, m.source_host);
    s.Bind(5, m.target_host).Bind(6, m.type).Bind(7, std::string(MigrationStateName(m.state)));
    s.Bind(8, m.phase).Bind(9, static_cast<int64_t>(m.priority)).Bind(10, m.options_json);
    s.Bind(11, m.progress_json).Bind(12, m.error_code).Bind(13, m.error_message);
    s.Bind(14, m.created_ms).Bind(15, m.updated_ms).Bind(16, m.version);
  }

  static Result<MigrationRecord> ReadMigration(const Statement& s) {
    MigrationRecord m;
    m.id = s.Text(0);
    m.vm_name = s.Text(1);
    m.vm_uuid = s.Text(2);
    m.source_host = s.Text(3);
    m.target_host = s.Text(4);
    m.type = s.Text(5);
    auto state = ParseMigrationState(s.Text(6));
    if (!state) {
      return Status::Corrupt("migration '" + m.id + "' has unknown state '" + s.Text(6) + "'");
    }
    m.state = *state;
    m.phase = s.Text(7);
    m.priority = static_cast<int>(s.Int(8));
    m.options_json = s.Text(9);
    m.progress_json = s.Text(10);
    m.error_code = s.Text(11);
    m.error_message = s.Text(12);
    m.created_ms = s.Int(13);
    m.updated_ms = s.Int(14);
    m.version = s.Int(15);
    m.plan_id = s.Text(16);
    return m;
  }

  Result<MigrationRecord> GetMigrationLocked(const std::string& id) {
    std::string sql = std::string("SELECT ") + kMigrationColumns + " FROM migrations WHERE id = ?1";
    Statement s(db_, sql.c_str());
    FERRY_TRY(s.prepared());
    s.Bind(1, id);
    int rc = s.Step();
    if (rc == SQLITE_DONE) return Status::NotFound("migration '" + id + "' does not exist");
    if (rc != SQLITE_ROW) return Error("get migration " + id);
    return ReadMigration(s);
  }

  Status UpdateLocked(MigrationRecord* m, const std::optional<EventRecord>& event) {
    FERRY_ASSIGN_OR_RETURN(MigrationRecord stored, GetMigrationLocked(m->id));
    if (stored.version != m->version) {
      return Status::Mismatch("migration '" + m->id + "' was updated concurrently (version " +
                              std::to_string(stored.version) + ", expected " +
                              std::to_string(m->version) + ")");
    }
    if (stored.state != m->state) FERRY_TRY(CheckTransition(stored.state, m->state));
    Statement s(db_,
                "UPDATE migrations SET vm_name=?2, vm_uuid=?3, source_host=?4, target_host=?5, "
                "type=?6, state=?7, phase=?8, priority=?9, options_json=?10, progress_json=?11, "
                "error_code=?12, error_message=?13, created_ms=?14, updated_ms=?15, "
                "version=?16 + 1, plan_id=?17 WHERE id=?1 AND version=?16");
    FERRY_TRY(s.prepared());
    BindMigration(s, *m);
    if (s.Step() != SQLITE_DONE) return Error("update migration " + m->id);
    if (event) {
      EventRecord e = *event;
      e.migration_id = m->id;
      FERRY_TRY(AppendEventLocked(&e));
    }
    return Status::Ok();
  }

  Status AppendEventLocked(EventRecord* e) {
    Statement s(db_,
                "INSERT INTO migration_events(migration_id, at_ms, kind, message, data_json) "
                "VALUES (?1, ?2, ?3, ?4, ?5)");
    FERRY_TRY(s.prepared());
    s.Bind(1, e->migration_id).Bind(2, e->at_ms).Bind(3, e->kind).Bind(4, e->message);
    s.Bind(5, e->data_json.empty() ? std::string("{}") : e->data_json);
    int rc = s.Step();
    if (rc == SQLITE_CONSTRAINT) {
      return Status::NotFound("event for unknown migration '" + e->migration_id + "'");
    }
    if (rc != SQLITE_DONE) return Error("append event");
    e->seq = sqlite3_last_insert_rowid(db_);
    return Status::Ok();
  }

  sqlite3* db_;
  std::mutex mu_;
  int version_ = 0;
};

}  // namespace

Result<std::unique_ptr<Store>> OpenSqliteStore(const std::string& path) {
  sqlite3* db = nullptr;
  int rc =
      sqlite3_open_v2(path.c_str(), &db,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    std::string m = db ? sqlite3_errmsg(db) : "out of memory";
    sqlite3_close(db);
    return Status::Io(path + ": open database: " + m);
  }
  auto store = std::make_unique<SqliteStore>(db);
  FERRY_TRY_CTX(store->Init(), path);
  return std::unique_ptr<Store>(std::move(store));
}

}  // namespace ferry
