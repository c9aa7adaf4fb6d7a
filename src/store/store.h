// Store: ferryd's persistent state (hosts, migration plans, migrations, their event logs) behind
// one interface, so that SQLite (the embedded default) and PostgreSQL (several ferryd on one
// database) are interchangeable. Both run the same numbered schema migrations at open
// (src/store/schema/NNNN_*.sql).
//
// Thread-safety: every method may be called from any thread.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "store/migration_state.h"
#include "store/plan_state.h"

namespace ferry {

struct HostRecord {
  std::string id;  // stable id, e.g. "host1"
  std::string name;
  std::string cluster;
  std::string agent_url;  // http://127.0.0.2:7801
  std::string agent_token;
  std::string facts_json;  // last inventory summary from the agent
  int64_t created_ms = 0;
  int64_t last_seen_ms = 0;
};

struct MigrationRecord {
  std::string id;
  std::string vm_name;
  std::string vm_uuid;
  std::string source_host;
  std::string target_host;
  std::string type;  // live, live-storage, live-vsm, quick, reregister, cold, ...
  MigrationState state = MigrationState::kPending;
  std::string phase;
  int priority = 0;           // higher first within the queue
  std::string options_json;   // what the user asked for
  std::string progress_json;  // bytes, rate, ETA, downtime ...
  std::string error_code;
  std::string error_message;
  int64_t created_ms = 0;
  int64_t updated_ms = 0;
  int64_t version = 0;  // optimistic concurrency: bumped by every update
  std::string plan_id;  // the plan that made it ("" = POST /api/v1/migrations)
};

// A migration plan (docs/plans.md): the document as given (canonical JSON) and the state
// derived from its migrations (plan_state.h).
struct PlanRecord {
  std::string id;             // "p-..."
  std::string name;           // unique among plans
  std::string document_json;  // plan::PlanToJson of the parsed document
  PlanState state = PlanState::kReady;
  std::string error_message;  // why a scheduled start failed ("" = none)
  int64_t created_ms = 0;
  int64_t updated_ms = 0;
  int64_t version = 0;  // optimistic concurrency: bumped by every update
};

struct EventRecord {
  int64_t seq = 0;  // assigned by the store, increasing
  std::string migration_id;
  int64_t at_ms = 0;
  std::string kind;  // state, phase, progress, warning, error, info
  std::string message;
  std::string data_json;
};

class Store {
 public:
  virtual ~Store() = default;

  // Inserts or replaces a host by id.
  virtual Status PutHost(const HostRecord& host) = 0;
  virtual Result<HostRecord> GetHost(const std::string& id) = 0;  // kNotFound
  virtual Result<std::vector<HostRecord>> ListHosts() = 0;
  virtual Status DeleteHost(const std::string& id) = 0;

  // kAlreadyExists if the id is taken. Sets record.version to 1.
  virtual Status CreateMigration(MigrationRecord* record) = 0;
  virtual Result<MigrationRecord> GetMigration(const std::string& id) = 0;  // kNotFound
  // In creation order; active_only: not in a final state.
  virtual Result<std::vector<MigrationRecord>> ListMigrations(bool active_only) = 0;
  // Writes `record` if the stored version equals record->version (else kMismatch: someone
  // else updated it), checking the state transition against the stored state, and appends
  // `event` in the same transaction. Bumps record->version.
  virtual Status UpdateMigration(MigrationRecord* record,
                                 const std::optional<EventRecord>& event) = 0;

  // Plans. CreatePlan stores `plan` and `migrations` (their plan_id set to plan->id) in one
  // transaction, so a plan is never seen with part of its migrations: kAlreadyExists if the
  // plan's id or name, or a migration's id, is taken (then nothing is stored). Sets the
  // versions to 1.
  virtual Status CreatePlan(PlanRecord* plan, std::vector<MigrationRecord>* migrations) = 0;
  // By id, else by name. kNotFound.
  virtual Result<PlanRecord> GetPlan(const std::string& id_or_name) = 0;
  virtual Result<std::vector<PlanRecord>> ListPlans() = 0;  // in creation order
  // Writes `plan` if the stored version equals plan->version (else kMismatch) and creates
  // `new_migrations` (plan_id set) in the same transaction (starting a plan). Bumps
  // plan->version.
  virtual Status UpdatePlan(PlanRecord* plan, std::vector<MigrationRecord>* new_migrations) = 0;
  // Deletes the plan and its migrations (with their events). kNotFound;
  // kFailedPrecondition if one of its migrations is not final.
  virtual Status DeletePlan(const std::string& id) = 0;
  // A plan's migrations in creation order.
  virtual Result<std::vector<MigrationRecord>> ListPlanMigrations(const std::string& plan_id) = 0;

  virtual Status AppendEvent(EventRecord* event) = 0;
  // Events of a migration with seq > after_seq, oldest first.
  virtual Result<std::vector<EventRecord>> ListEvents(const std::string& migration_id,
                                                      int64_t after_seq) = 0;

  // The schema version after migrations ran.
  virtual int SchemaVersion() const = 0;
};

// Opens (creating if needed) a SQLite store at `path`: WAL journal, foreign keys on,
// schema migrations applied.
Result<std::unique_ptr<Store>> OpenSqliteStore(const std::string& path);

}  // namespace ferry
