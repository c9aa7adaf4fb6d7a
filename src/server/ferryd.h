// Ferryd: the management server. It keeps hosts, plans and migrations in the Store, caches
// each host's inventory from its agent, validates and plans migrations (planning.h) and
// migration plans (plan/plan.h), queues them under the limits (limits.h), starts each as a
// job (live types: on the source host's agent; cold and stage migrations of plans: on the
// target host's agent, cold_migration.h), follows the job until it ends, and answers the
// REST API (docs/control-plane.md, docs/plans.md).
//
// Threads:
//   - the HTTP server's pool runs the API handlers;
//   - the loop thread, every poll_ms (sooner right after a phase change, see LoopMain):
//     follows running and cancelling migrations (GetJob,
//     progress, events, final state; cold jobs that failed with io are started again as a
//     new attempt), starts plans whose start time has come, starts queued migrations as
//     slots free, in priority then creation order, closes the source exports of cold
//     migrations that failed (until the source agent answers), stores each running plan's
//     state as derived from its migrations;
//   - the inventory thread refreshes every host's inventory every inventory_refresh_ms.
// Every change of a migration record goes through Mutate() under mig_mu_, with the store's
// version check as a second guard; calls to agents are made without holding any lock.
//
// Restart: nothing is kept in memory that the store does not have. At start, migrations in
// running/cancelling are followed again (the agent still has the job, or reports it failed
// because it restarted, or does not know it: then the VM's location decides; a cold job the
// target agent does not know is started again as the next attempt); pending or validating
// ones (ferryd died inside a create) are failed, since nothing had moved; export closes that
// had not worked yet are tried again.
//
// Ownership: owns the store, the agent links and the threads. Stop() joins everything.
#pragma once

#include <atomic>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "api/http.h"
#include "plan/plan.h"
#include "server/agent_link.h"
#include "server/cold_migration.h"
#include "server/config.h"
#include "server/planning.h"
#include "store/store.h"

namespace ferry::server {

class Ferryd {
 public:
  Ferryd(ServerConfig config, std::unique_ptr<Store> store, AgentLinkFactory links);
  ~Ferryd();
  Ferryd(const Ferryd&) = delete;
  Ferryd& operator=(const Ferryd&) = delete;

  // Registers the config's hosts, reads every inventory once, starts the threads and the
  // HTTP server.
  Status Start();
  void Stop();
  int port() const { return http_.port(); }

 private:
  struct HostState {
    HostRecord record;
    std::shared_ptr<AgentLink> link;
    HostView view;  // last inventory read (view.reachable false if it failed)
    api::AgentHealth health;
    int64_t refreshed_ms = 0;
  };

  // --- hosts and inventory
  Status RegisterHost(const HostRecord& record);
  std::shared_ptr<AgentLink> LinkFor(const std::string& host_id);
  // Reads host's health + inventory now and stores it in the cache.
  void RefreshHost(const std::string& host_id);
  // RefreshHost for each of `host_ids` at once (one thread per host), so asking many hosts
  // costs the slowest agent's answer, not the sum.
  void RefreshHosts(const std::vector<std::string>& host_ids);
  // For the read-only host and VM answers: reads the hosts concerned (`only_host`, or all) now
  // unless the request says ?cached=true. kInvalidArgument for another value of `cached`.
  Status RefreshForRequest(const api::HttpRequest& r, const std::string& only_host);
  std::optional<HostState> HostSnapshot(const std::string& host_id);
  std::vector<HostState> HostSnapshots();
  // The host whose inventory holds `vm` ("" if none).
  std::string FindVmHost(const std::string& vm, const std::string& hint);

  // --- planning
  struct PlanResult {
    std::vector<MigrationPlan> plans;
    Status status;  // non-OK: the request could not even be planned (unknown VM, host)
  };
  PlanResult Plan(const MigrationRequest& request);
  MigrationPlan PlanOne(const std::string& vm, const std::string& source, const std::string& target,
                        const MigrationRequest& request);

  // --- migrations
  using Mutation = std::function<std::optional<EventRecord>(MigrationRecord&)>;
  // Reads the record, applies `fn` (which may change state, phase, progress, error and returns
  // the event to log), writes it. Retries once on a version clash.
  Status Mutate(const std::string& id, const Mutation& fn);
  void LoopMain();
  void InventoryMain();
  void Tick();
  void Follow(const MigrationRecord& m);
  void StartQueued(const MigrationRecord& m);
  // Where the VM runs now, from fresh inventories of the migration's hosts.
  std::string LocateVm(const MigrationRecord& m);
  void FinishFromLocation(const MigrationRecord& m, const std::string& why);
  agent::MigrationJobSpec SpecFor(const MigrationRecord& m, const MigrationRequest& request);
  void Wake();
  // Cancels one migration (API or plan cancel): queued ones at once, running ones through
  // their agent. Returns the record after the change.
  Result<MigrationRecord> CancelOne(const std::string& id);

  // --- plans (ferryd_plans.cc)
  // One VM of a plan, resolved against the source and target as they are now.
  struct ResolvedVm {
    std::string label;              // the plan entry's name (or id)
    sources::VmDescription source;  // found: source.name non-empty
    std::string share_vm_id;        // share sources: the VM's id in the share
    plan::Resolution resolution;
    std::vector<plan::Check> extra;  // ferryd's own checks (not_moving, file listings)
    bool ok() const;
    std::string FailureSummary() const;
  };
  // Resolves every VM of `doc` (the checks of docs/plans.md): sibling VMs' names, files and
  // pool usage are counted against each other. `skip_migration`: an active migration not to
  // count as taking names (the one being re-validated at its start).
  std::vector<ResolvedVm> ResolvePlanVms(const plan::PlanDocument& doc,
                                         const std::vector<const plan::PlanVm*>& entries,
                                         const std::string& skip_migration);
  static std::string ResolvedVmsJson(const std::vector<ResolvedVm>& vms);
  // The queued migrations of a validated plan.
  std::vector<MigrationRecord> PlanMigrations(const std::string& plan_id,
                                              const plan::PlanDocument& doc,
                                              const std::vector<ResolvedVm>& vms);
  // Validates a stored ready plan and creates its migrations. kFailedPrecondition (details:
  // *details_json) if a check failed; the plan then stays as it was.
  Status StartPlanLocked(PlanRecord* plan, const plan::PlanDocument& doc,
                         std::string* details_json);
  void StartDuePlans();
  void UpdatePlanStates();
  Status RefreshPlanState(const std::string& plan_id);
  std::string PlanJson(const PlanRecord& plan);

  // --- cold and stage migrations (ferryd_plans.cc)
  void StartQueuedCold(const MigrationRecord& m);
  void FollowCold(const MigrationRecord& m);
  // Starts attempt `attempt` of `m`'s cold job on the target agent (the record says so first).
  void StartColdAttempt(const std::string& id, int attempt);
  // Sends the start of the record's current attempt (idempotent on the agent).
  void SendColdStart(const MigrationRecord& m);
  agent::MigrationJobSpec ColdSpecOf(const MigrationRecord& m, const ColdOptions& options);
  // The current attempt failed with `error` in `phase`: another attempt in
  // cold_retry_delay_ms, or the end.
  void ColdAttemptFailed(const std::string& id, const Status& error, const std::string& phase);
  // Ends `m` (failed or cancelled) and closes its export on the source host.
  void FinishCold(const std::string& id, MigrationState state, const Status& why,
                  bool restore_power);
  // Tries to close the export of every ended cold migration whose close has not worked yet.
  void CloseExports();
  bool CloseExportNow(const std::string& id);
  Result<MigrationRecord> CancelCold(const MigrationRecord& m);
  std::optional<agent::SourceAgentRef> SourceRef(const std::string& host_id);

  // --- API
  void Routes();
  api::HttpResponse ListHosts(const api::HttpRequest& r);
  api::HttpResponse AddHost(const api::HttpRequest& r);
  api::HttpResponse GetHost(const api::HttpRequest& r);
  api::HttpResponse DeleteHost(const api::HttpRequest& r);
  api::HttpResponse RefreshHostApi(const api::HttpRequest& r);
  api::HttpResponse ListVms(const api::HttpRequest& r);
  api::HttpResponse CreateMigrations(const api::HttpRequest& r, bool validate_only);
  api::HttpResponse ListMigrations(const api::HttpRequest& r);
  api::HttpResponse GetMigration(const api::HttpRequest& r);
  api::HttpResponse ListEvents(const api::HttpRequest& r);
  api::HttpResponse CancelMigration(const api::HttpRequest& r);
  api::HttpResponse Metrics(const api::HttpRequest& r);
  api::HttpResponse CreatePlan(const api::HttpRequest& r);
  api::HttpResponse ListPlans(const api::HttpRequest& r);
  api::HttpResponse GetPlan(const api::HttpRequest& r);
  api::HttpResponse StartPlan(const api::HttpRequest& r);
  api::HttpResponse CancelPlan(const api::HttpRequest& r);
  api::HttpResponse DeployPlan(const api::HttpRequest& r);
  api::HttpResponse DeletePlan(const api::HttpRequest& r);
  api::HttpResponse ListShares(const api::HttpRequest& r);
  std::string HostJson(const HostState& host);
  std::string MigrationJson(const MigrationRecord& m);

  const ServerConfig config_;
  std::unique_ptr<Store> store_;
  AgentLinkFactory make_link_;
  api::HttpServer http_;

  std::mutex hosts_mu_;
  std::map<std::string, HostState> hosts_;  // GUARDED_BY(hosts_mu_)

  std::mutex mig_mu_;  // serializes migration record changes
  // One create request at a time (plans see each other's effects); plan starts too.
  std::mutex create_mu_;
  std::mutex plan_mu_;  // serializes plan record changes (the store's version check guards too)

  std::mutex closes_mu_;
  std::set<std::string> pending_closes_;  // GUARDED_BY(closes_mu_): migration ids
  std::mutex close_call_mu_;  // one CloseExportNow at a time (the loop's and an API call's)

  std::mutex loop_mu_;
  std::condition_variable loop_cv_;
  bool stop_ = false;   // GUARDED_BY(loop_mu_)
  bool woken_ = false;  // GUARDED_BY(loop_mu_)
  // Set during a Tick (the loop thread's) when a followed migration's phase changed or a cold
  // copy is about to end: the loop then polls sooner (LoopMain).
  std::atomic<bool> follow_closely_{false};
  std::thread loop_thread_;
  std::thread inventory_thread_;
  std::atomic<uint64_t> next_id_{0};
};

}  // namespace ferry::server
