// ferry-agent's API and job registry (see agent_service.h).
#include "agent/agent_service.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <pugixml.hpp>
#include <sstream>
#include <thread>
#include <utility>

#include "agent/state_file.h"
#include "sources/libvirt_vm.h"
#include "sources/share.h"

namespace ferry::agent {

namespace {

using api::AgentJob;
using api::AgentJobState;
using api::HttpRequest;
using api::HttpResponse;

#ifndef FERRY_VERSION
#define FERRY_VERSION "0.0.0"
#endif

constexpr char kRestartedMessage[] = "agent restarted during the job";
constexpr size_t kMaxJobFileBytes = 8 << 20;
constexpr char kJobSuffix[] = ".json";
constexpr const char* kTempSuffix = kStateTempSuffix;
constexpr int64_t kEventPersistMs = 1000;

int64_t SystemNowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

HttpResponse Reply(const Status& s) { return HttpResponse::Error(s); }

template <typename T>
HttpResponse Reply(const Result<T>& r, int status = 200) {
  if (!r.ok()) return HttpResponse::Error(r.status());
  return HttpResponse::Json(api::ToJson(*r), status);
}

}  // namespace

// One job of the registry. `record` and `version` are guarded by AgentService::mu_.
struct AgentService::Job {
  api::AgentJobRecord record;
  uint64_t version = 1;  // bumped on every change that must reach the job's file
  int64_t events_persisted_at_ms = 0;
  std::atomic<bool> cancel_requested{false};
  std::atomic<bool> proceed_requested{false};  // a cold job waiting in awaiting-deploy goes on
  std::thread thread;

  std::mutex persist_mu;           // orders writes of the job's file
  uint64_t persisted_version = 0;  // GUARDED_BY(persist_mu)
};

// The JobContext a runner gets: records progress and events into its job.
class AgentService::Context final : public JobContext {
 public:
  Context(AgentService& service, Job& job) : service_(service), job_(job) {}

  bool cancelled() const override { return job_.cancel_requested.load(); }
  bool proceed_requested() const override { return job_.proceed_requested.load(); }

  void Progress(const JobProgress& progress) override {
    std::lock_guard<std::mutex> lock(service_.mu_);
    job_.record.job.progress = progress;
  }

  // Events reach the job's file at most once per kEventPersistMs (a chatty job must not
  // fsync per event); the next state change writes whatever is left.
  void Event(std::string_view kind, std::string_view message) override {
    bool write = false;
    {
      std::lock_guard<std::mutex> lock(service_.mu_);
      service_.AddEventLocked(job_, kind, message);
      const int64_t now = service_.now_ms_();
      if (now - job_.events_persisted_at_ms >= kEventPersistMs) {
        job_.events_persisted_at_ms = now;
        write = true;
      }
    }
    if (write) (void)service_.Persist(job_);
  }

 private:
  AgentService& service_;
  Job& job_;
};

AgentService::AgentService(AgentServiceOptions options)
    : config_(std::move(options.config)),
      runner_(std::move(options.runner)),
      host_(std::move(options.host)),
      now_ms_(options.now_ms ? std::move(options.now_ms) : SystemNowMs),
      max_events_(std::max<size_t>(options.max_events, 1)),
      log_(std::move(options.log)),
      jobs_dir_(config_.state_dir + "/jobs"),
      exports_(std::move(options.exports)),
      server_(config_.token) {
  if (exports_ == nullptr) {
    ExportRegistryOptions eo;
    eo.state_dir = config_.state_dir;
    eo.data_address =
        config_.data_address.empty() ? ListenHost(config_.listen) : config_.data_address;
    eo.shares = config_.shares;
    eo.host = NewLibvirtExportHost(config_.libvirt_uri);
    eo.now_ms = now_ms_;
    eo.log = [this](const std::string& line) { Log(line); };
    exports_ = std::make_unique<ExportRegistry>(std::move(eo));
  }
}

AgentService::~AgentService() {
  StopServing();
  std::vector<Job*> all;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [id, job] : jobs_) {
      job->cancel_requested = true;
      all.push_back(job.get());
    }
  }
  for (Job* job : all) {
    if (job->thread.joinable()) job->thread.join();
  }
}

void AgentService::Log(const std::string& line) const {
  if (log_) {
    log_(line);
  } else {
    std::fprintf(stderr, "ferry-agent %s: %s\n", config_.host_id.c_str(), line.c_str());
  }
}

Status AgentService::Start() {
  std::error_code ec;
  std::filesystem::create_directories(jobs_dir_, ec);
  if (ec) return Status::Io("create " + jobs_dir_ + ": " + ec.message());
  FERRY_TRY(LoadJobs());
  FERRY_TRY(exports_->Start());
  if (host_ != nullptr) {
    Status c = host_->Connect();
    if (!c.ok()) Log("libvirt not reachable yet (requests will retry): " + c.ToString());
  }
  RegisterRoutes();
  FERRY_TRY(server_.Start(config_.listen));
  Log("serving /agent/v1 on " + config_.listen + " (libvirt " + config_.libvirt_uri + ")");
  return Status::Ok();
}

int AgentService::port() const { return server_.port(); }

void AgentService::StopServing() { server_.Stop(); }

size_t AgentService::RunningJobs() const {
  std::lock_guard<std::mutex> lock(mu_);
  size_t n = 0;
  for (const auto& [id, job] : jobs_) n += job->record.job.state == AgentJobState::kRunning;
  return n;
}

Status AgentService::LoadJobs() {
  std::error_code ec;
  std::filesystem::directory_iterator it(jobs_dir_, ec);
  if (ec) return Status::Io("list " + jobs_dir_ + ": " + ec.message());
  std::vector<std::string> names;
  for (const auto& entry : it) names.push_back(entry.path().filename().string());
  std::sort(names.begin(), names.end());
  for (const std::string& name : names) {
    const std::string path = jobs_dir_ + "/" + name;
    if (EndsWith(name, kTempSuffix)) {  // a write the last run did not finish
      ::unlink(path.c_str());
      continue;
    }
    if (!EndsWith(name, kJobSuffix)) continue;
    Result<std::string> text = ReadSmallFile(path, kMaxJobFileBytes);
    auto job = std::make_unique<Job>();
    Status s = text.ok() ? api::FromJson(*text, &job->record) : text.status();
    if (s.ok() && name != job->record.job.id + kJobSuffix) {
      s = Status::Corrupt("holds job \"" + job->record.job.id + "\"");
    }
    if (!s.ok()) {
      Log("ignoring job file " + path + ": " + s.ToString());
      continue;
    }
    job->record.job.events.erase(
        job->record.job.events.begin(),
        job->record.job.events.end() - std::min(job->record.job.events.size(), max_events_));
    bool interrupted = job->record.job.state == AgentJobState::kRunning;
    if (interrupted) {
      AgentJob& j = job->record.job;
      j.state = AgentJobState::kFailed;
      j.error = Status::Io(kRestartedMessage);
      j.finished_at_ms = now_ms_();
      AddEventLocked(*job, "error", kRestartedMessage);
      Log("job " + j.id + " (" + std::string(api::MigrationKindWireName(j.kind)) + " " + j.vm +
          ") was running when the agent stopped: now failed");
    }
    Job* raw = job.get();
    {
      std::lock_guard<std::mutex> lock(mu_);
      jobs_[raw->record.job.id] = std::move(job);
    }
    if (interrupted) FERRY_TRY(Persist(*raw));
  }
  return Status::Ok();
}

void AgentService::AddEventLocked(Job& job, std::string_view kind, std::string_view message) {
  std::vector<api::AgentJobEvent>& events = job.record.job.events;
  events.push_back({now_ms_(), std::string(kind), std::string(message)});
  if (events.size() > max_events_) {
    events.erase(events.begin(), events.begin() + (events.size() - max_events_));
  }
  ++job.version;
}

Status AgentService::Persist(Job& job) {
  std::string text;
  uint64_t version = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    text = api::ToJson(job.record);
    version = job.version;
  }
  std::lock_guard<std::mutex> lock(job.persist_mu);
  if (version <= job.persisted_version) return Status::Ok();  // a newer state is on disk
  Status s = WriteFileAtomic(jobs_dir_, job.record.spec.id + kJobSuffix, text);
  if (!s.ok()) {
    Log("cannot save job " + job.record.spec.id + ": " + s.ToString());
    return s;
  }
  job.persisted_version = version;
  return Status::Ok();
}

Status AgentService::NotFoundJob(const std::string& id) const {
  return Status::NotFound("job " + id + " not found on " + config_.host_id);
}

Result<AgentJob> AgentService::StartJob(MigrationJobSpec spec, bool* existed) {
  *existed = false;
  spec.source_uri = config_.libvirt_uri;
  if (!api::IsValidJobId(spec.id)) {
    return Status::InvalidArgument("id: must be 1-128 characters of [A-Za-z0-9._-]");
  }
  Job* job = nullptr;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = jobs_.find(spec.id);
    if (it != jobs_.end()) {
      if (api::ToJson(it->second->record.spec) != api::ToJson(spec)) {
        return Status::AlreadyExists("job " + spec.id + " already exists on " + config_.host_id +
                                     " with a different spec");
      }
      *existed = true;
      return it->second->record.job;
    }
    auto fresh = std::make_unique<Job>();
    AgentJob& j = fresh->record.job;
    j.id = spec.id;
    j.kind = spec.kind;
    j.vm = spec.vm;
    j.state = AgentJobState::kRunning;
    j.started_at_ms = now_ms_();
    fresh->record.spec = spec;
    std::string what = std::string(api::MigrationKindWireName(spec.kind)) + " " + spec.vm;
    if (!spec.target_uri.empty()) what += " to " + spec.target_uri;
    if (!spec.target_pool.empty()) what += " (pool " + spec.target_pool + ")";
    AddEventLocked(*fresh, "state", "started: " + what);
    job = fresh.get();
    jobs_[spec.id] = std::move(fresh);
  }
  Status saved = Persist(*job);
  std::lock_guard<std::mutex> lock(mu_);
  if (!saved.ok()) {
    jobs_.erase(spec.id);
    return saved.WithContext("job " + spec.id + " not started");
  }
  Log("job " + spec.id + ": " + job->record.job.events.back().message);
  job->thread = std::thread([this, job] { RunJob(job); });
  return job->record.job;
}

void AgentService::RunJob(Job* job) {
  Context ctx(*this, *job);
  Result<JobResult> result = runner_ ? runner_(job->record.spec, ctx)
                                     : Result<JobResult>(Status::Internal("no job runner"));
  std::string line;
  {
    std::lock_guard<std::mutex> lock(mu_);
    AgentJob& j = job->record.job;
    j.finished_at_ms = now_ms_();
    const std::string took = " after " + std::to_string(j.finished_at_ms - j.started_at_ms) + " ms";
    if (result.ok()) {
      j.state = AgentJobState::kSucceeded;
      j.result = *result;
      AddEventLocked(*job, "state", "succeeded" + took);
    } else if (result.status().code() == ErrorCode::kCancelled) {
      j.state = AgentJobState::kCancelled;
      j.error = result.status();
      AddEventLocked(*job, "state", "cancelled" + took + ": " + result.status().message());
    } else {
      j.state = AgentJobState::kFailed;
      j.error = result.status();
      AddEventLocked(*job, "state", "failed" + took + ": " + result.status().ToString());
    }
    line = "job " + j.id + ": " + j.events.back().message;
  }
  Log(line);
  (void)Persist(*job);
}

Result<AgentJob> AgentService::GetJob(const std::string& id) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return NotFoundJob(id);
  return it->second->record.job;
}

std::vector<AgentJob> AgentService::ListJobs() const {
  std::vector<AgentJob> out;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [id, job] : jobs_) out.push_back(job->record.job);
  }
  std::stable_sort(out.begin(), out.end(), [](const AgentJob& a, const AgentJob& b) {
    return a.started_at_ms < b.started_at_ms;
  });
  return out;
}

Result<AgentJob> AgentService::CancelJob(const std::string& id) {
  Job* job = nullptr;
  AgentJob snapshot;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = jobs_.find(id);
    if (it == jobs_.end()) return NotFoundJob(id);
    job = it->second.get();
    if (job->record.job.state != AgentJobState::kRunning || job->cancel_requested) {
      return job->record.job;
    }
    job->cancel_requested = true;
    AddEventLocked(*job, "info", "cancel requested");
    snapshot = job->record.job;
  }
  Log("job " + id + ": cancel requested");
  (void)Persist(*job);
  return snapshot;
}

std::vector<api::ShareInfo> AgentService::ListShares() const {
  std::vector<api::ShareInfo> out;
  for (const auto& [name, folder] : config_.shares) {
    out.push_back({name, folder, ::access(folder.c_str(), W_OK) == 0});
  }
  return out;
}

Result<api::ShareListing> AgentService::ListShareVms(const std::string& share) const {
  for (const auto& [name, folder] : config_.shares) {
    if (name != share) continue;
    FERRY_ASSIGN_OR_RETURN(sources::ShareScan scan, sources::ScanShare(name, folder));
    return api::ShareListing{std::move(scan.vms), std::move(scan.problems)};
  }
  return Status::NotFound("share " + share + " is not configured on " + config_.host_id);
}

Result<sources::VmDescription> AgentService::DescribeVm(const std::string& name) const {
  if (host_ == nullptr) return Status::Unsupported("no libvirt host configured");
  FERRY_ASSIGN_OR_RETURN(hypervisor::VmInfo info, host_->GetVm(name));
  FERRY_ASSIGN_OR_RETURN(std::string xml,
                         host_->DomainXml(name, /*inactive=*/true, /*migratable=*/false));
  return sources::DescribeLibvirtVm(xml, info);
}

Result<AgentJob> AgentService::ProceedJob(const std::string& id) {
  Job* job = nullptr;
  AgentJob snapshot;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = jobs_.find(id);
    if (it == jobs_.end()) return NotFoundJob(id);
    job = it->second.get();
    if (job->record.job.state != AgentJobState::kRunning || job->proceed_requested) {
      return job->record.job;
    }
    if (job->record.spec.kind != MigrationKind::kCold) {
      return Status::FailedPrecondition(
          "job " + id + " is a " + std::string(api::MigrationKindWireName(job->record.spec.kind)) +
          " job: only cold jobs wait for proceed");
    }
    job->proceed_requested = true;
    AddEventLocked(*job, "info", "proceed requested");
    snapshot = job->record.job;
  }
  Log("job " + id + ": proceed requested");
  (void)Persist(*job);
  return snapshot;
}

Result<std::string> ExtractCpuXml(const std::string& domain_xml) {
  pugi::xml_document doc;
  pugi::xml_parse_result parsed = doc.load_buffer(domain_xml.data(), domain_xml.size());
  if (!parsed) {
    return Status::Corrupt(std::string("domain XML: ") + parsed.description() + " at offset " +
                           std::to_string(parsed.offset));
  }
  pugi::xml_node cpu = doc.child("domain").child("cpu");
  if (!cpu) return std::string();
  std::ostringstream out;
  cpu.print(out, "", pugi::format_raw);
  return out.str();
}

Result<api::PoolFiles> AgentService::ListPoolFiles(const std::string& pool) const {
  FERRY_ASSIGN_OR_RETURN(hypervisor::Inventory inv, host_->Inventory());
  const hypervisor::PoolInfo* found = nullptr;
  for (const hypervisor::PoolInfo& p : inv.pools) {
    if (p.name == pool) found = &p;
  }
  if (found == nullptr)
    return Status::NotFound("no storage pool " + pool + " on " + config_.host_id);
  if (found->path.empty()) {
    return Status::Unsupported("pool " + pool + " has no folder (type " + found->type + ")");
  }
  api::PoolFiles out;
  out.pool = pool;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(found->path, ec)) {
    if (out.files.size() >= api::kMaxJsonListItems) {
      return Status::TooLarge("pool " + pool + ": more than " +
                              std::to_string(api::kMaxJsonListItems) + " entries");
    }
    out.files.push_back(entry.path().filename().string());
  }
  if (ec) return Status::Io("pool " + pool + ": " + found->path + ": " + ec.message());
  std::sort(out.files.begin(), out.files.end());
  return out;
}

void AgentService::RegisterRoutes() {
  const std::string p = "/agent/v1";

  server_.Route("GET " + p + "/health", [this](const HttpRequest&) {
    api::AgentHealth h{config_.host_id, FERRY_VERSION, config_.libvirt_uri, config_.migration_uri};
    return HttpResponse::Json(api::ToJson(h));
  });

  server_.Route("GET " + p + "/inventory", [this](const HttpRequest&) {
    if (host_ == nullptr) return Reply(Status::Unsupported("no libvirt host configured"));
    Result<hypervisor::Inventory> inv = host_->Inventory();
    if (!inv.ok()) return Reply(inv.status());
    return HttpResponse::Json(api::ToJson(api::AgentInventory{*inv, config_.migration_uri}));
  });

  server_.Route("GET " + p + "/vms/{name}", [this](const HttpRequest& r) {
    if (host_ == nullptr) return Reply(Status::Unsupported("no libvirt host configured"));
    return Reply(host_->GetVm(r.Param("name")));
  });

  server_.Route("GET " + p + "/vms/{name}/xml", [this](const HttpRequest& r) {
    if (host_ == nullptr) return Reply(Status::Unsupported("no libvirt host configured"));
    const std::string& name = r.Param("name");
    Result<std::string> xml = host_->DomainXml(name, /*inactive=*/false, /*migratable=*/true);
    if (!xml.ok()) return Reply(xml.status());
    Result<std::string> cpu = ExtractCpuXml(*xml);
    if (!cpu.ok()) return Reply(cpu.status().WithContext("vm " + name));
    return HttpResponse::Json(api::ToJson(api::VmXml{*xml, *cpu}));
  });

  server_.Route("POST " + p + "/checks/cpu", [this](const HttpRequest& r) {
    if (host_ == nullptr) return Reply(Status::Unsupported("no libvirt host configured"));
    api::CpuCheckRequest req;
    Status s = api::FromJson(r.body, &req);
    if (!s.ok()) return Reply(s);
    return Reply(host_->CompareCpu(req.cpu_xml, req.target));
  });

  server_.Route("POST " + p + "/checks/platform", [this](const HttpRequest& r) {
    if (host_ == nullptr) return Reply(Status::Unsupported("no libvirt host configured"));
    api::PlatformCheckRequest req;
    Status s = api::FromJson(r.body, &req);
    if (!s.ok()) return Reply(s);
    Result<std::vector<std::string>> machines = host_->MachineTypes(req.arch);
    if (!machines.ok()) return Reply(machines.status());
    api::PlatformCheck check;
    check.machine_ok =
        std::find(machines->begin(), machines->end(), req.machine) != machines->end();
    std::vector<std::string> problems;
    if (!check.machine_ok) {
      std::string list;
      for (const std::string& m : *machines) list += (list.empty() ? "" : ", ") + m;
      problems.push_back("machine type " + req.machine + " is not supported for " + req.arch +
                         " on " + config_.host_id + " (supported: " + list + ")");
    }
    if (req.firmware == hypervisor::Firmware::kUefi) {
      Result<bool> uefi = host_->SupportsUefi(req.arch, req.machine);
      if (!uefi.ok()) return Reply(uefi.status());
      check.firmware_ok = *uefi;
      if (!check.firmware_ok) {
        problems.push_back("no UEFI firmware for " + req.arch + "/" + req.machine + " on " +
                           config_.host_id);
      }
    } else {
      check.firmware_ok = true;  // BIOS comes with every x86 QEMU (SeaBIOS)
    }
    for (const std::string& m : problems) check.message += (check.message.empty() ? "" : "; ") + m;
    return HttpResponse::Json(api::ToJson(check));
  });

  // The entries of a pool's folder, for ferryd's name_clash check of plans (docs/plans.md).
  server_.Route("GET " + p + "/pools/{name}/files", [this](const HttpRequest& r) {
    if (host_ == nullptr) return Reply(Status::Unsupported("no libvirt host configured"));
    return Reply(ListPoolFiles(r.Param("name")));
  });

  server_.Route("POST " + p + "/jobs", [this](const HttpRequest& r) {
    MigrationJobSpec spec;
    Status s = api::FromJson(r.body, &spec);
    if (!s.ok()) return Reply(s);
    bool existed = false;
    Result<AgentJob> job = StartJob(std::move(spec), &existed);
    return Reply(job, existed ? 200 : 202);
  });

  server_.Route("GET " + p + "/jobs",
                [this](const HttpRequest&) { return HttpResponse::Json(api::ToJson(ListJobs())); });

  server_.Route("GET " + p + "/jobs/{id}",
                [this](const HttpRequest& r) { return Reply(GetJob(r.Param("id"))); });

  server_.Route("POST " + p + "/jobs/{id}/cancel",
                [this](const HttpRequest& r) { return Reply(CancelJob(r.Param("id"))); });

  // Cold migrations' source side (docs/plans.md, "Agent API additions").
  server_.Route("GET " + p + "/shares", [this](const HttpRequest&) {
    return HttpResponse::Json(api::ToJson(ListShares()));
  });

  server_.Route("GET " + p + "/shares/{name}/vms",
                [this](const HttpRequest& r) { return Reply(ListShareVms(r.Param("name"))); });

  server_.Route("GET " + p + "/vms/{name}/description", [this](const HttpRequest& r) {
    Result<sources::VmDescription> vm = DescribeVm(r.Param("name"));
    if (!vm.ok()) return Reply(vm.status());
    return HttpResponse::Json(sources::ToJson(*vm));
  });

  server_.Route("POST " + p + "/exports", [this](const HttpRequest& r) {
    ExportSpec spec;
    Status s = api::FromJson(r.body, &spec);
    if (!s.ok()) return Reply(s);
    bool existed = false;
    Result<ExportInfo> info = exports_->Create(spec, &existed);
    return Reply(info, existed ? 200 : 201);
  });

  server_.Route("GET " + p + "/exports/{id}",
                [this](const HttpRequest& r) { return Reply(exports_->Get(r.Param("id"))); });

  server_.Route("DELETE " + p + "/exports/{id}", [this](const HttpRequest& r) {
    const std::string restore = r.Query("restore_power", "0");
    if (restore != "0" && restore != "1" && restore != "true" && restore != "false") {
      return Reply(Status::InvalidArgument("restore_power: expected 0 or 1, got \"" +
                                           restore.substr(0, 32) + "\""));
    }
    return Reply(exports_->Close(r.Param("id"), restore == "1" || restore == "true"));
  });

  server_.Route("POST " + p + "/jobs/{id}/proceed",
                [this](const HttpRequest& r) { return Reply(ProceedJob(r.Param("id"))); });
}

}  // namespace ferry::agent
