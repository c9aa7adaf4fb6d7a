// AgentService: ferry-agent's /agent/v1 API (docs/control-plane.md, "Agent API") and its job
// registry.
//
// Requests are authenticated with the configured bearer token (401 otherwise). Inventory, VM,
// XML and check endpoints go through HostOps (libvirt); shares, VM descriptions and exports
// (cold migrations, docs/plans.md) through src/sources and the ExportRegistry. Migration jobs
// are started by POST /agent/v1/jobs: each runs the JobRunner (RunMigrationJob in production)
// on its own thread with a JobContext that records progress and events and carries the cancel
// flag.
//
// Persistence: every job is kept in memory and as state_dir/jobs/<id>.json (written to a
// temporary file, fsynced, renamed, directory fsynced) whenever its state changes: start, a
// cancel request, the end; events are written along, at most once a second. Progress alone
// is not written (it changes every poll and means nothing once the agent is gone). At Start()
// the registry reloads these files; a job that was still running when the agent died reads
// back as failed with code io, "agent restarted during the job" (its libvirt calls died with
// the process).
//
// Ownership: the service owns its HTTP server, its HostOps and its job threads.
// Thread-safety: request handlers run concurrently on the HTTP server's threads; the public
// methods are thread-safe. Start() must be called once, before any request.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "agent/agent_config.h"
#include "agent/export_registry.h"
#include "agent/host_ops.h"
#include "agent/migration_job.h"
#include "api/agent_json.h"
#include "api/http.h"
#include "common/status.h"

namespace ferry::agent {

// RunMigrationJob's signature; tests inject a fake.
using JobRunner = std::function<Result<JobResult>(const MigrationJobSpec&, JobContext&)>;

struct AgentServiceOptions {
  AgentConfig config;
  JobRunner runner;
  std::unique_ptr<HostOps> host;
  // Wall clock, milliseconds since the Unix epoch (nullptr = the system clock).
  std::function<int64_t()> now_ms;
  // Events kept per job; older ones are dropped.
  size_t max_events = api::kMaxJobEvents;
  // Where log lines go (nullptr = stderr).
  std::function<void(const std::string&)> log;
  // Cold-migration exports (POST /agent/v1/exports ...). nullptr: the service makes one from
  // the config (state_dir, shares, data_address) over NewLibvirtExportHost(libvirt_uri).
  std::unique_ptr<ExportRegistry> exports;
};

class AgentService {
 public:
  explicit AgentService(AgentServiceOptions options);
  // Stops serving, asks running jobs to cancel and waits for them.
  ~AgentService();
  AgentService(const AgentService&) = delete;
  AgentService& operator=(const AgentService&) = delete;

  // Creates state_dir/jobs, reloads the jobs kept there and the exports (ExportRegistry::
  // Start), connects to libvirt (a failure is logged, not fatal: requests retry) and serves on
  // config.listen. kIo if a state folder cannot be made or the address cannot be bound.
  Status Start();
  // The port served on (after Start; useful with "HOST:0").
  int port() const;
  // Stops the HTTP server (running jobs go on).
  void StopServing();
  // Jobs still running.
  size_t RunningJobs() const;

  // --- The operations behind the job endpoints ----------------------------------------------
  // Starts `spec` (source_uri is set to this host's libvirt URI). If a job with this id
  // exists: the same spec returns it (*existed = true), another spec is kAlreadyExists.
  // kIo if the job cannot be persisted (then it is not started).
  Result<api::AgentJob> StartJob(MigrationJobSpec spec, bool* existed);
  Result<api::AgentJob> GetJob(const std::string& id) const;
  std::vector<api::AgentJob> ListJobs() const;  // by start time, then id
  // Sets the job's cancel flag (the runner stops at its next check); a final job is returned
  // unchanged. kNotFound for an unknown id.
  Result<api::AgentJob> CancelJob(const std::string& id);
  // A cold job waiting in awaiting-deploy goes on (JobContext::proceed_requested turns true);
  // a final job is returned unchanged; a job of another kind is kFailedPrecondition.
  // kNotFound for an unknown id.
  Result<api::AgentJob> ProceedJob(const std::string& id);
  // The entries of a storage pool's folder (GET /agent/v1/pools/{name}/files): kNotFound for
  // an unknown pool, kUnsupported for a pool without a folder.
  Result<api::PoolFiles> ListPoolFiles(const std::string& pool) const;

  // --- Cold migrations' source side (docs/plans.md, "Agent API additions") -----------------
  ExportRegistry& exports() { return *exports_; }
  // The configured shares; `writable`: this agent may write into the folder.
  std::vector<api::ShareInfo> ListShares() const;
  Result<api::ShareListing> ListShareVms(const std::string& share) const;  // kNotFound
  // A libvirt VM of this host described for a cold migration (its inactive definition).
  Result<sources::VmDescription> DescribeVm(const std::string& name) const;

 private:
  struct Job;
  class Context;

  void RegisterRoutes();
  Status LoadJobs();
  void RunJob(Job* job);
  // REQUIRES: mu_ held.
  void AddEventLocked(Job& job, std::string_view kind, std::string_view message);
  // Writes the job's file if its state changed since the last write; errors are logged.
  Status Persist(Job& job);
  Status NotFoundJob(const std::string& id) const;
  void Log(const std::string& line) const;

  AgentConfig config_;
  JobRunner runner_;
  std::unique_ptr<HostOps> host_;
  std::function<int64_t()> now_ms_;
  size_t max_events_;
  std::function<void(const std::string&)> log_;
  std::string jobs_dir_;
  std::unique_ptr<ExportRegistry> exports_;
  api::HttpServer server_;

  mutable std::mutex mu_;
  std::map<std::string, std::unique_ptr<Job>> jobs_;  // GUARDED_BY(mu_)
};

// The <cpu> element of a domain XML, serialized alone ("" if the domain has none); kCorrupt
// if `domain_xml` is not well-formed XML.
Result<std::string> ExtractCpuXml(const std::string& domain_xml);

}  // namespace ferry::agent
