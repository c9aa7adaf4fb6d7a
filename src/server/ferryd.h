// Ferryd: the management server. It keeps hosts and migrations in the Store, caches each
// host's inventory from its agent, validates and plans migrations (planning.h), queues them
// under the limits (limits.h), starts each as a job on the source host's agent, follows the
// job until it ends, and answers the REST API (docs/control-plane.md).
//
// Threads:
//   - the HTTP server's pool runs the API handlers;
//   - the loop thread, every poll_ms: follows running and cancelling migrations (GetJob,
//     progress, events, final state), starts queued ones as slots free, in priority then
//     creation order;
//   - the inventory thread refreshes every host's inventory every inventory_refresh_ms.
// Every change of a migration record goes through Mutate() under mig_mu_, with the store's
// version check as a second guard; calls to agents are made without holding any lock.
//
// Restart: nothing is kept in memory that the store does not have. At start, migrations in
// running/cancelling are followed again (the agent still has the job, or reports it failed
// because it restarted, or does not know it: then the VM's location decides); pending or
// validating ones (ferryd died inside a create) are failed, since nothing had moved.
//
// Ownership: owns the store, the agent links and the threads. Stop() joins everything.
#pragma once

#include <atomic>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "api/http.h"
#include "server/agent_link.h"
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
    HostView view;            // last inventory read (view.reachable false if it failed)
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
  MigrationPlan PlanOne(const std::string& vm, const std::string& source,
                        const std::string& target, const MigrationRequest& request);

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
  std::string HostJson(const HostState& host);
  std::string MigrationJson(const MigrationRecord& m);

  const ServerConfig config_;
  std::unique_ptr<Store> store_;
  AgentLinkFactory make_link_;
  api::HttpServer http_;

  std::mutex hosts_mu_;
  std::map<std::string, HostState> hosts_;  // GUARDED_BY(hosts_mu_)

  std::mutex mig_mu_;  // serializes migration record changes
  std::mutex create_mu_;  // one create request at a time (plans see each other's effects)

  std::mutex loop_mu_;
  std::condition_variable loop_cv_;
  bool stop_ = false;   // GUARDED_BY(loop_mu_)
  bool woken_ = false;  // GUARDED_BY(loop_mu_)
  std::thread loop_thread_;
  std::thread inventory_thread_;
  std::atomic<uint64_t> next_id_{0};
};

}  // namespace ferry::server
