#include "server/ferryd.h"

#include <sys/random.h>

#include <algorithm>
#include <chrono>
#include <nlohmann/json.hpp>

#include "api/agent_json.h"
#include "api/errors.h"
#include "common/poll_pacer.h"
#include "server/ferryd_util.h"
#include "server/limits.h"

namespace ferry::server {

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

EventRecord MakeEvent(std::string kind, std::string message, std::string data) {
  EventRecord e;
  e.at_ms = NowMs();
  e.kind = std::move(kind);
  e.message = std::move(message);
  e.data_json = std::move(data);
  return e;
}

std::string NewRecordId(const char* prefix) {
  unsigned char rnd[3] = {0, 0, 0};
  if (getrandom(rnd, sizeof(rnd), 0) != sizeof(rnd)) rnd[0] = static_cast<unsigned char>(NowMs());
  char buf[48];
  snprintf(buf, sizeof(buf), "%s-%011llx%02x%02x%02x", prefix,
           static_cast<unsigned long long>(NowMs()), rnd[0], rnd[1], rnd[2]);
  return buf;
}

namespace {

using nlohmann::json;

json ParseOr(const std::string& text, json fallback) {
  if (text.empty()) return fallback;
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  return j.is_discarded() ? fallback : j;
}

std::string NewMigrationId() { return NewRecordId("m"); }

std::string StateName(MigrationState s) { return std::string(MigrationStateName(s)); }

bool SameVm(const hypervisor::VmInfo& vm, const MigrationRecord& m) {
  return vm.name == m.vm_name && (m.vm_uuid.empty() || vm.uuid == m.vm_uuid);
}

bool IsRunningState(hypervisor::VmState s) {
  return s == hypervisor::VmState::kRunning || s == hypervisor::VmState::kPaused ||
         s == hypervisor::VmState::kBlocked;
}

constexpr int64_t kStartRetryMs = 30000;  // give up starting a job after this long

}  // namespace

Ferryd::Ferryd(ServerConfig config, std::unique_ptr<Store> store, AgentLinkFactory links)
    : config_(std::move(config)),
      store_(std::move(store)),
      make_link_(std::move(links)),
      http_(config_.token) {}

Ferryd::~Ferryd() { Stop(); }

Status Ferryd::Start() {
  for (const HostEntry& h : config_.hosts) {
    HostRecord r;
    r.id = h.id;
    r.name = h.name;
    r.cluster = h.cluster;
    r.agent_url = h.agent_url;
    r.agent_token = h.agent_token;
    r.created_ms = NowMs();
    Result<HostRecord> old = store_->GetHost(h.id);
    if (old.ok()) {
      r.created_ms = old->created_ms;
      r.facts_json = old->facts_json;
      r.last_seen_ms = old->last_seen_ms;
    }
    FERRY_TRY(store_->PutHost(r));
  }
  FERRY_ASSIGN_OR_RETURN(std::vector<HostRecord> hosts, store_->ListHosts());
  for (const HostRecord& r : hosts) FERRY_TRY(RegisterHost(r));
  for (const HostRecord& r : hosts) RefreshHost(r.id);

  // Migrations that ferryd left inside a create: nothing had been started for them.
  FERRY_ASSIGN_OR_RETURN(std::vector<MigrationRecord> active, store_->ListMigrations(true));
  for (const MigrationRecord& m : active) {
    if (m.state != MigrationState::kPending && m.state != MigrationState::kValidating) continue;
    Status s = Mutate(m.id, [](MigrationRecord& r) -> std::optional<EventRecord> {
      if (r.state == MigrationState::kPending) r.state = MigrationState::kValidating;
      r.state = MigrationState::kFailed;
      r.error_code = "failed_precondition";
      r.error_message = "ferryd restarted during validation; nothing was moved";
      return MakeEvent("state", "failed: " + r.error_message);
    });
    if (!s.ok()) return s.WithContext("recover migration " + m.id);
  }

  // Cold migrations that ended while their source export could not be closed yet.
  FERRY_ASSIGN_OR_RETURN(std::vector<MigrationRecord> all, store_->ListMigrations(false));
  for (const MigrationRecord& m : all) {
    if (!IsColdType(m.type) || !IsFinal(m.state)) continue;
    json close = ParseOr(m.progress_json, json::object()).value("export_close", json::object());
    if (close.is_object() && close.contains("restore_power") && !close.value("done", false)) {
      std::lock_guard<std::mutex> lock(closes_mu_);
      pending_closes_.insert(m.id);
    }
  }

  Routes();
  FERRY_TRY(http_.Start(config_.listen));
  loop_thread_ = std::thread([this] { LoopMain(); });
  inventory_thread_ = std::thread([this] { InventoryMain(); });
  return Status::Ok();
}

void Ferryd::Stop() {
  {
    std::lock_guard<std::mutex> lock(loop_mu_);
    if (stop_) return;
    stop_ = true;
  }
  loop_cv_.notify_all();
  http_.Stop();
  if (loop_thread_.joinable()) loop_thread_.join();
  if (inventory_thread_.joinable()) inventory_thread_.join();
}

void Ferryd::Wake() {
  {
    std::lock_guard<std::mutex> lock(loop_mu_);
    woken_ = true;
  }
  loop_cv_.notify_all();
}

// ---------------------------------------------------------------------------------------------
// Hosts and inventory

Status Ferryd::RegisterHost(const HostRecord& record) {
  HostState st;
  st.record = record;
  st.link = std::shared_ptr<AgentLink>(make_link_(record.agent_url, record.agent_token));
  st.view.id = record.id;
  st.view.error = "not read yet";
  std::lock_guard<std::mutex> lock(hosts_mu_);
  hosts_[record.id] = std::move(st);
  return Status::Ok();
}

std::shared_ptr<AgentLink> Ferryd::LinkFor(const std::string& host_id) {
  std::lock_guard<std::mutex> lock(hosts_mu_);
  auto it = hosts_.find(host_id);
  return it == hosts_.end() ? nullptr : it->second.link;
}

void Ferryd::RefreshHost(const std::string& host_id) {
  std::shared_ptr<AgentLink> link = LinkFor(host_id);
  if (!link) return;
  Result<api::AgentHealth> health = link->Health();
  Result<hypervisor::Inventory> inv =
      health.ok() ? link->Inventory() : Result<hypervisor::Inventory>(health.status());
  std::lock_guard<std::mutex> lock(hosts_mu_);
  auto it = hosts_.find(host_id);
  if (it == hosts_.end()) return;
  HostState& st = it->second;
  st.refreshed_ms = NowMs();
  if (inv.ok()) {
    st.health = *health;
    st.view.reachable = true;
    st.view.error.clear();
    st.view.inventory = std::move(*inv);
    st.record.last_seen_ms = st.refreshed_ms;
    st.record.facts_json = api::ToJson(st.view.inventory.host);
    (void)store_->PutHost(st.record);  // the cache is still right if the store write fails
  } else {
    st.view.reachable = false;
    st.view.error = inv.status().ToString();
  }
}

void Ferryd::RefreshHosts(const std::vector<std::string>& host_ids) {
  if (host_ids.size() == 1) return RefreshHost(host_ids[0]);
  std::vector<std::thread> readers;
  readers.reserve(host_ids.size());
  for (const std::string& id : host_ids) readers.emplace_back([this, id] { RefreshHost(id); });
  for (std::thread& t : readers) t.join();
}

// A user asking for hosts or VMs wants what they are now: a guest started or moved, an agent
// come up, since the last periodic refresh (inventory_refresh_ms) must show. So these answers
// read the hosts concerned, unless the caller settles for the cache.
Status Ferryd::RefreshForRequest(const api::HttpRequest& r, const std::string& only_host) {
  const std::string cached = r.Query("cached", "false");
  if (cached == "true") return Status::Ok();
  if (cached != "false") return Status::InvalidArgument("cached: expected true or false");
  std::vector<std::string> ids;
  for (const HostState& h : HostSnapshots()) {
    if (only_host.empty() || h.record.id == only_host) ids.push_back(h.record.id);
  }
  RefreshHosts(ids);
  return Status::Ok();
}

std::optional<Ferryd::HostState> Ferryd::HostSnapshot(const std::string& host_id) {
  std::lock_guard<std::mutex> lock(hosts_mu_);
  auto it = hosts_.find(host_id);
  if (it == hosts_.end()) return std::nullopt;
  return it->second;
}

std::vector<Ferryd::HostState> Ferryd::HostSnapshots() {
  std::lock_guard<std::mutex> lock(hosts_mu_);
  std::vector<HostState> out;
  for (const auto& [id, st] : hosts_) out.push_back(st);
  return out;
}

std::string Ferryd::FindVmHost(const std::string& vm, const std::string& hint) {
  std::lock_guard<std::mutex> lock(hosts_mu_);
  for (const auto& [id, st] : hosts_) {
    if (!hint.empty() && id != hint) continue;
    for (const hypervisor::VmInfo& v : st.view.inventory.vms) {
      // A VM defined on two hosts (e.g. shut off on one, running on another) is taken where
      // it runs.
      if (v.name == vm && IsRunningState(v.state)) return id;
    }
  }
  for (const auto& [id, st] : hosts_) {
    if (!hint.empty() && id != hint) continue;
    for (const hypervisor::VmInfo& v : st.view.inventory.vms) {
      if (v.name == vm) return id;
    }
  }
  return "";
}

void Ferryd::InventoryMain() {
  std::unique_lock<std::mutex> lock(loop_mu_);
  while (!stop_) {
    loop_cv_.wait_for(lock, std::chrono::milliseconds(config_.inventory_refresh_ms),
                      [this] { return stop_; });
    if (stop_) break;
    lock.unlock();
    for (const HostState& h : HostSnapshots()) RefreshHost(h.record.id);
    lock.lock();
  }
}

// ---------------------------------------------------------------------------------------------
// Planning

MigrationPlan Ferryd::PlanOne(const std::string& vm_name, const std::string& source,
                              const std::string& target, const MigrationRequest& request) {
  std::optional<HostState> src = HostSnapshot(source);
  std::optional<HostState> dst = HostSnapshot(target);
  MigrationPlan fail;
  fail.vm = vm_name;
  fail.source = source;
  fail.target = target;
  if (!src || !dst) {
    fail.checks.push_back(
        {"target_reachable", false, "host " + (!src ? source : target) + " is not registered"});
    return fail;
  }
  const hypervisor::VmInfo* vm = nullptr;
  for (const hypervisor::VmInfo& v : src->view.inventory.vms) {
    if (v.name == vm_name) vm = &v;
  }
  if (vm == nullptr) {
    fail.checks.push_back({"vm_found", false, "no VM " + vm_name + " on " + source});
    return fail;
  }
  PlanInput in;
  in.source = &src->view;
  in.target = &dst->view;
  in.vm = vm;
  in.request = &request;
  if (dst->view.reachable && source != target) {
    std::shared_ptr<AgentLink> slink = src->link;
    std::shared_ptr<AgentLink> tlink = dst->link;
    Result<api::VmXml> xml = slink->GetVmXml(vm_name);
    if (!xml.ok()) {
      in.agent_error = source + ": " + xml.status().ToString();
    } else {
      Result<hypervisor::CpuCheck> cpu = tlink->CheckCpu(
          xml->cpu_xml, hypervisor::CpuTarget{vm->domain_type, vm->arch, vm->machine_type});
      if (cpu.ok()) {
        in.cpu = *cpu;
      } else {
        in.agent_error = target + ": " + cpu.status().ToString();
      }
    }
    Result<api::PlatformCheck> platform =
        tlink->CheckPlatform(api::PlatformCheckRequest{vm->arch, vm->machine_type, vm->firmware});
    if (platform.ok()) {
      in.platform = *platform;
    } else if (in.agent_error.empty()) {
      in.agent_error = target + ": " + platform.status().ToString();
    }
  }
  MigrationPlan plan = PlanMigration(in);
  return plan;
}

Ferryd::PlanResult Ferryd::Plan(const MigrationRequest& request) {
  PlanResult out;
  // Fresh inventories for every host involved, so the checks see the present.
  std::vector<std::string> names = request.vms;
  if (!request.evacuate.empty()) {
    if (!HostSnapshot(request.evacuate)) {
      out.status = Status::NotFound("host " + request.evacuate + " is not registered");
      return out;
    }
  }
  std::vector<std::string> ids;
  for (const HostState& h : HostSnapshots()) ids.push_back(h.record.id);
  RefreshHosts(ids);
  if (!request.to.empty() && !HostSnapshot(request.to)) {
    out.status = Status::NotFound("target host " + request.to + " is not registered");
    return out;
  }
  if (!request.evacuate.empty()) {
    std::optional<HostState> src = HostSnapshot(request.evacuate);
    if (!src->view.reachable) {
      out.status = Status::Io("host " + request.evacuate + " cannot be read: " + src->view.error);
      return out;
    }
    for (const hypervisor::VmInfo& v : src->view.inventory.vms) names.push_back(v.name);
    if (names.empty()) {
      out.status = Status::NotFound("host " + request.evacuate + " has no VMs to evacuate");
      return out;
    }
  }
  for (const std::string& vm : names) {
    std::string source =
        request.evacuate.empty() ? FindVmHost(vm, request.source) : request.evacuate;
    if (source.empty()) {
      out.status =
          Status::NotFound("no registered host has a VM named " + vm +
                           (request.source.empty() ? "" : " (looked on " + request.source + ")"));
      return out;
    }
    std::string target = request.to.empty() ? source : request.to;
    out.plans.push_back(PlanOne(vm, source, target, request));
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Migrations

Status Ferryd::Mutate(const std::string& id, const Mutation& fn) {
  std::lock_guard<std::mutex> lock(mig_mu_);
  for (int attempt = 0; attempt < 2; ++attempt) {
    FERRY_ASSIGN_OR_RETURN(MigrationRecord m, store_->GetMigration(id));
    MigrationState before = m.state;
    std::optional<EventRecord> event = fn(m);
    m.updated_ms = NowMs();
    if (event) {
      event->migration_id = id;
      if (m.state != before && event->kind != "state") {
        // Log the state change itself too.
        EventRecord st = MakeEvent("state", StateName(before) + " -> " + StateName(m.state));
        st.migration_id = id;
        FERRY_TRY(store_->AppendEvent(&st));
      }
    }
    Status s = store_->UpdateMigration(&m, event);
    if (s.code() == ErrorCode::kMismatch && attempt == 0) continue;
    return s;
  }
  return Status::Internal("unreachable");
}

agent::MigrationJobSpec Ferryd::SpecFor(const MigrationRecord& m, const MigrationRequest& request) {
  agent::MigrationJobSpec spec;
  spec.id = m.id;
  Result<agent::MigrationKind> kind = api::MigrationKindFromWireName(m.type);
  spec.kind = kind.ok() ? *kind : agent::MigrationKind::kLive;
  spec.vm = m.vm_name;
  std::optional<HostState> target = HostSnapshot(m.target_host);
  if (target && m.target_host != m.source_host) {
    spec.target_uri = target->health.libvirt_uri;
    spec.target_migration_uri = target->health.migration_uri;
  }
  spec.target_pool = request.storage;
  spec.max_downtime_ms = request.max_downtime_ms;
  spec.bandwidth = request.bandwidth;
  spec.allow_postcopy = request.allow_postcopy;
  return spec;
}

void Ferryd::LoopMain() {
  // The end of a migration comes as a burst of phase changes, so after a change, or while a
  // cold copy's ETA is close, the loop looks again sooner (PollPacer).
  PollPacer pacer(config_.poll_ms);
  std::unique_lock<std::mutex> lock(loop_mu_);
  while (!stop_) {
    lock.unlock();
    follow_closely_ = false;
    Tick();
    lock.lock();
    const int64_t wait_ms = pacer.Next(follow_closely_.load(), /*eta_ms=*/-1);
    loop_cv_.wait_for(lock, std::chrono::milliseconds(wait_ms),
                      [this] { return stop_ || woken_; });
    woken_ = false;
  }
}

namespace {

// What `m` takes of the limits now.
SlotUse SlotUseOf(const MigrationRecord& m) {
  SlotUse use{m.type, m.source_host, m.target_host};
  if (IsColdType(m.type)) {
    Result<ColdOptions> o = ParseColdOptions(m.options_json);
    if (o.ok()) use.copy_pools = o->copy_pools;
    use.copying = m.state == MigrationState::kQueued || CopiesInPhase(m.phase);
  }
  return use;
}

}  // namespace

void Ferryd::Tick() {
  StartDuePlans();
  Result<std::vector<MigrationRecord>> active = store_->ListMigrations(true);
  if (!active.ok()) return;
  std::vector<MigrationRecord> queued;
  for (const MigrationRecord& m : *active) {
    if (m.state == MigrationState::kRunning || m.state == MigrationState::kCancelling) {
      if (IsColdType(m.type)) {
        FollowCold(m);
      } else {
        Follow(m);
      }
    } else if (m.state == MigrationState::kQueued) {
      queued.push_back(m);
    }
  }
  CloseExports();
  // Slots of the migrations that just ended (or stopped copying) are free again.
  std::vector<SlotUse> running;
  Result<std::vector<MigrationRecord>> now = store_->ListMigrations(true);
  if (!now.ok()) return;
  for (const MigrationRecord& m : *now) {
    if (m.state == MigrationState::kRunning || m.state == MigrationState::kCancelling) {
      running.push_back(SlotUseOf(m));
    }
  }
  std::stable_sort(
      queued.begin(), queued.end(),
      [](const MigrationRecord& a, const MigrationRecord& b) { return a.priority > b.priority; });
  for (const MigrationRecord& m : queued) {
    SlotUse use = SlotUseOf(m);
    std::optional<std::string> blocked = BlockedBy(use, running, config_.limits);
    if (blocked) {
      json p = ParseOr(m.progress_json, json::object());
      if (p.value("waiting_for", "") != *blocked) {
        std::string why = *blocked;
        (void)Mutate(m.id, [why](MigrationRecord& r) -> std::optional<EventRecord> {
          if (r.state != MigrationState::kQueued) return std::nullopt;
          json pj = ParseOr(r.progress_json, json::object());
          pj["waiting_for"] = why;
          r.progress_json = pj.dump();
          return MakeEvent("info", "queued: waiting for a slot (" + why + ")");
        });
      }
      continue;
    }
    if (IsColdType(m.type)) {
      StartQueuedCold(m);
    } else {
      StartQueued(m);
    }
    running.push_back(use);
  }
  UpdatePlanStates();
}

void Ferryd::StartQueued(const MigrationRecord& m) {
  Result<MigrationRequest> request = ParseMigrationRequest(m.options_json);
  if (!request.ok()) {
    (void)Mutate(m.id, [&](MigrationRecord& r) -> std::optional<EventRecord> {
      r.state = MigrationState::kFailed;
      r.error_code = "internal";
      r.error_message = "stored options unreadable: " + request.status().message();
      return MakeEvent("error", r.error_message);
    });
    return;
  }
  // Conditions may have changed while it waited: check again.
  MigrationRequest req = *request;
  req.type = m.type;
  MigrationPlan plan = PlanOne(m.vm_name, m.source_host, m.target_host, req);
  if (!plan.ok()) {
    std::string why = plan.FailureSummary();
    (void)Mutate(m.id, [&](MigrationRecord& r) -> std::optional<EventRecord> {
      if (r.state != MigrationState::kQueued) return std::nullopt;
      r.state = MigrationState::kFailed;
      r.error_code = "failed_precondition";
      r.error_message = "validation before start failed: " + why;
      return MakeEvent("error", r.error_message, PlanToJson(plan));
    });
    return;
  }
  Status s = Mutate(m.id, [](MigrationRecord& r) -> std::optional<EventRecord> {
    if (r.state != MigrationState::kQueued) return std::nullopt;
    r.state = MigrationState::kRunning;
    r.phase = "starting";
    json pj = ParseOr(r.progress_json, json::object());
    pj.erase("waiting_for");
    pj["started_at_ms"] = NowMs();
    r.progress_json = pj.dump();
    return MakeEvent("state", "running: starting the job on " + r.source_host);
  });
  if (!s.ok()) return;
  Result<MigrationRecord> fresh = store_->GetMigration(m.id);
  if (!fresh.ok() || fresh->state != MigrationState::kRunning) return;
  std::shared_ptr<AgentLink> link = LinkFor(m.source_host);
  if (!link) return;
  Result<api::AgentJob> job = link->StartJob(SpecFor(*fresh, req));
  if (!job.ok() && job.status().code() != ErrorCode::kIo) {
    Status err = job.status();
    (void)Mutate(m.id, [&](MigrationRecord& r) -> std::optional<EventRecord> {
      if (r.state != MigrationState::kRunning) return std::nullopt;
      r.state = MigrationState::kFailed;
      r.error_code = std::string(api::ErrorCodeWireName(err.code()));
      r.error_message = m.source_host + " refused the job: " + err.message();
      return MakeEvent("error", r.error_message);
    });
  }
  // kIo: the agent may or may not have it; Follow() asks again (StartJob is idempotent).
}

void Ferryd::Follow(const MigrationRecord& m) {
  std::shared_ptr<AgentLink> link = LinkFor(m.source_host);
  if (!link) {
    FinishFromLocation(m, "host " + m.source_host + " is no longer registered");
    return;
  }
  Result<api::AgentJob> job = link->GetJob(m.id);
  if (!job.ok() && job.status().code() == ErrorCode::kNotFound) {
    json pj = ParseOr(m.progress_json, json::object());
    int64_t started = pj.value("started_at_ms", int64_t{0});
    if (m.phase == "starting" && m.state == MigrationState::kRunning &&
        NowMs() - started < kStartRetryMs) {
      Result<MigrationRequest> req = ParseMigrationRequest(m.options_json);
      if (req.ok()) job = link->StartJob(SpecFor(m, *req));
    } else {
      FinishFromLocation(m, m.source_host + "'s agent has no record of the job");
      return;
    }
  }
  if (!job.ok()) {
    json pj = ParseOr(m.progress_json, json::object());
    std::string err = job.status().ToString();
    if (pj.value("agent_error", "") != err) {
      (void)Mutate(m.id, [&](MigrationRecord& r) -> std::optional<EventRecord> {
        json p = ParseOr(r.progress_json, json::object());
        p["agent_error"] = err;
        r.progress_json = p.dump();
        return MakeEvent("warning", "cannot reach " + m.source_host + "'s agent: " + err);
      });
    }
    return;
  }
  if (m.state == MigrationState::kCancelling && job->state == api::AgentJobState::kRunning) {
    Result<api::AgentJob> c = link->CancelJob(m.id);
    if (c.ok()) job = c;
  }
  const api::AgentJob& j = *job;
  (void)Mutate(m.id, [&](MigrationRecord& r) -> std::optional<EventRecord> {
    if (r.state != MigrationState::kRunning && r.state != MigrationState::kCancelling) {
      return std::nullopt;
    }
    json p = ParseOr(r.progress_json, json::object());
    p.erase("agent_error");
    json prog = ParseOr(api::ToJson(j.progress), json::object());
    uint64_t total = j.progress.bytes_total;
    if (total > 0) {
      prog["percent"] = std::min(100.0, 100.0 * static_cast<double>(j.progress.bytes_done) / total);
    }
    p["progress"] = prog;
    if (j.result.has_value()) p["result"] = ParseOr(api::ToJson(*j.result), json::object());
    // New agent events become migration events.
    size_t seen = p.value("agent_events_seen", size_t{0});
    std::optional<EventRecord> event;
    std::vector<EventRecord> extra;
    for (size_t i = seen; i < j.events.size(); ++i) {
      EventRecord e = MakeEvent(j.events[i].kind, j.events[i].message);
      e.at_ms = j.events[i].at_ms;
      e.migration_id = r.id;
      extra.push_back(e);
    }
    p["agent_events_seen"] = j.events.size();
    for (EventRecord& e : extra) (void)store_->AppendEvent(&e);
    if (!j.progress.phase.empty() && j.progress.phase != r.phase) {
      event = MakeEvent("phase", j.progress.phase);
      r.phase = j.progress.phase;
      follow_closely_ = true;
    }
    switch (j.state) {
      case api::AgentJobState::kRunning: break;
      case api::AgentJobState::kSucceeded: {
        r.state = MigrationState::kCompleted;
        r.phase = "done";
        std::string summary = "completed";
        if (j.result) {
          summary += " in " + std::to_string(j.result->total_ms) + " ms";
          if (j.result->qemu_downtime_ms >= 0) {
            summary += ", QEMU downtime " + std::to_string(j.result->qemu_downtime_ms) + " ms";
          }
          if (j.result->guest_downtime_ms >= 0) {
            summary +=
                ", guest-observed downtime " + std::to_string(j.result->guest_downtime_ms) + " ms";
          }
        }
        p["location"] = r.target_host;
        event = MakeEvent("state", summary, j.result ? api::ToJson(*j.result) : "{}");
        break;
      }
      case api::AgentJobState::kCancelled:
        if (r.state == MigrationState::kRunning) r.state = MigrationState::kCancelling;
        r.state = MigrationState::kCancelled;
        r.error_code = "cancelled";
        r.error_message = j.error.message();
        p["location"] = r.source_host;
        event = MakeEvent("state",
                          "cancelled: " + j.error.message() + "; the VM stays on " + r.source_host);
        break;
      case api::AgentJobState::kFailed:
        r.state = MigrationState::kFailed;
        r.error_code = std::string(api::ErrorCodeWireName(j.error.code()));
        r.error_message = j.error.message();
        event = MakeEvent("error", "failed: " + j.error.message());
        break;
    }
    r.progress_json = p.dump();
    return event;
  });
  if (j.state == api::AgentJobState::kFailed) {
    // Say where the VM is now, from the hosts themselves.
    std::string where = LocateVm(m);
    (void)Mutate(m.id, [&](MigrationRecord& r) -> std::optional<EventRecord> {
      json p = ParseOr(r.progress_json, json::object());
      p["location"] = where;
      r.progress_json = p.dump();
      return MakeEvent("info",
                       where.empty() ? "the VM runs on no host now" : "the VM runs on " + where);
    });
  }
  if (j.state != api::AgentJobState::kRunning) {
    RefreshHost(m.source_host);
    if (m.target_host != m.source_host) RefreshHost(m.target_host);
    Wake();
  }
}

std::string Ferryd::LocateVm(const MigrationRecord& m) {
  RefreshHost(m.source_host);
  if (m.target_host != m.source_host) RefreshHost(m.target_host);
  std::string where;
  for (const std::string& h : {m.source_host, m.target_host}) {
    std::optional<HostState> st = HostSnapshot(h);
    if (!st || !st->view.reachable) continue;
    for (const hypervisor::VmInfo& v : st->view.inventory.vms) {
      if (SameVm(v, m) && IsRunningState(v.state)) {
        if (where.empty())
          where = h;
        else if (where != h)
          where += "," + h;
      }
    }
  }
  return where;
}

// The agent lost the job (or the host is gone): decide from where the VM is.
void Ferryd::FinishFromLocation(const MigrationRecord& m, const std::string& why) {
  std::string where = LocateVm(m);
  bool moved_host = m.target_host != m.source_host && where == m.target_host;
  (void)Mutate(m.id, [&](MigrationRecord& r) -> std::optional<EventRecord> {
    if (r.state != MigrationState::kRunning && r.state != MigrationState::kCancelling) {
      return std::nullopt;
    }
    json p = ParseOr(r.progress_json, json::object());
    p["location"] = where;
    r.progress_json = p.dump();
    if (moved_host) {
      r.state = MigrationState::kCompleted;
      r.phase = "done";
      return MakeEvent("state",
                       "completed (reconciled: " + why + "; the VM runs on " + where + ")");
    }
    r.state = MigrationState::kFailed;
    r.error_code = "io";
    r.error_message =
        why + "; the VM " + (where.empty() ? std::string("runs on no host") : "runs on " + where);
    return MakeEvent("error", r.error_message);
  });
}

// ---------------------------------------------------------------------------------------------
// API

void Ferryd::Routes() {
  using api::HttpRequest;
  using api::HttpResponse;
  http_.Route("GET /api/v1/health", [this](const HttpRequest&) {
    return HttpResponse::Json(
        json{{"version", "0.1.0"}, {"schema_version", store_->SchemaVersion()}}.dump());
  });
  http_.Route("GET /api/v1/hosts", [this](const HttpRequest& r) { return ListHosts(r); });
  http_.Route("POST /api/v1/hosts", [this](const HttpRequest& r) { return AddHost(r); });
  http_.Route("GET /api/v1/hosts/{id}", [this](const HttpRequest& r) { return GetHost(r); });
  http_.Route("DELETE /api/v1/hosts/{id}", [this](const HttpRequest& r) { return DeleteHost(r); });
  http_.Route("POST /api/v1/hosts/{id}/refresh",
              [this](const HttpRequest& r) { return RefreshHostApi(r); });
  http_.Route("GET /api/v1/vms", [this](const HttpRequest& r) { return ListVms(r); });
  http_.Route("POST /api/v1/migrations",
              [this](const HttpRequest& r) { return CreateMigrations(r, false); });
  http_.Route("POST /api/v1/migrations/validate",
              [this](const HttpRequest& r) { return CreateMigrations(r, true); });
  http_.Route("GET /api/v1/migrations", [this](const HttpRequest& r) { return ListMigrations(r); });
  http_.Route("GET /api/v1/migrations/{id}",
              [this](const HttpRequest& r) { return GetMigration(r); });
  http_.Route("GET /api/v1/migrations/{id}/events",
              [this](const HttpRequest& r) { return ListEvents(r); });
  http_.Route("POST /api/v1/migrations/{id}/cancel",
              [this](const HttpRequest& r) { return CancelMigration(r); });
  http_.Route("GET /metrics", [this](const HttpRequest& r) { return Metrics(r); });
  http_.Route("POST /api/v1/plans", [this](const HttpRequest& r) { return CreatePlan(r); });
  http_.Route("GET /api/v1/plans", [this](const HttpRequest& r) { return ListPlans(r); });
  http_.Route("GET /api/v1/plans/{id}", [this](const HttpRequest& r) { return GetPlan(r); });
  http_.Route("POST /api/v1/plans/{id}/start",
              [this](const HttpRequest& r) { return StartPlan(r); });
  http_.Route("POST /api/v1/plans/{id}/cancel",
              [this](const HttpRequest& r) { return CancelPlan(r); });
  http_.Route("POST /api/v1/plans/{id}/deploy",
              [this](const HttpRequest& r) { return DeployPlan(r); });
  http_.Route("DELETE /api/v1/plans/{id}", [this](const HttpRequest& r) { return DeletePlan(r); });
  http_.Route("GET /api/v1/shares", [this](const HttpRequest& r) { return ListShares(r); });
}

std::string Ferryd::HostJson(const HostState& h) {
  json facts = h.view.reachable ? ParseOr(api::ToJson(h.view.inventory.host), json::object())
                                : ParseOr(h.record.facts_json, json::object());
  json j = {{"id", h.record.id},
            {"name", h.record.name},
            {"cluster", h.record.cluster},
            {"agent_url", h.record.agent_url},
            {"status", h.view.reachable ? "up" : "down"},
            {"last_seen_at_ms", h.record.last_seen_ms},
            {"facts", facts},
            {"vm_count", h.view.inventory.vms.size()}};
  if (!h.view.reachable) j["error"] = h.view.error;
  return j.dump();
}

api::HttpResponse Ferryd::ListHosts(const api::HttpRequest& r) {
  if (Status s = RefreshForRequest(r, ""); !s.ok()) return api::HttpResponse::Error(s);
  json list = json::array();
  for (const HostState& h : HostSnapshots()) list.push_back(json::parse(HostJson(h)));
  return api::HttpResponse::Json(json{{"hosts", list}}.dump());
}

api::HttpResponse Ferryd::GetHost(const api::HttpRequest& r) {
  if (!HostSnapshot(r.Param("id"))) {
    return api::HttpResponse::Error(Status::NotFound("no host " + r.Param("id")));
  }
  if (Status s = RefreshForRequest(r, r.Param("id")); !s.ok()) return api::HttpResponse::Error(s);
  std::optional<HostState> h = HostSnapshot(r.Param("id"));
  if (!h) return api::HttpResponse::Error(Status::NotFound("no host " + r.Param("id")));
  return api::HttpResponse::Json(HostJson(*h));
}

api::HttpResponse Ferryd::AddHost(const api::HttpRequest& r) {
  json j = json::parse(r.body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return api::HttpResponse::Error(Status::InvalidArgument("request body: not a JSON object"));
  }
  HostRecord rec;
  for (auto [key, out, required] :
       {std::tuple<const char*, std::string*, bool>{"id", &rec.id, true},
        {"name", &rec.name, false},
        {"cluster", &rec.cluster, false},
        {"agent_url", &rec.agent_url, true},
        {"agent_token", &rec.agent_token, false}}) {
    if (!j.contains(key)) {
      if (required) {
        return api::HttpResponse::Error(Status::InvalidArgument(std::string(key) + ": missing"));
      }
      continue;
    }
    if (!j[key].is_string() || j[key].get<std::string>().size() > 512) {
      return api::HttpResponse::Error(
          Status::InvalidArgument(std::string(key) + ": expected a string (at most 512 bytes)"));
    }
    *out = j[key].get<std::string>();
  }
  if (rec.id.empty() || rec.id.find_first_of("/ ?#") != std::string::npos) {
    return api::HttpResponse::Error(
        Status::InvalidArgument("id: must be non-empty without '/', ' ', '?', '#'"));
  }
  if (rec.agent_url.rfind("http://", 0) != 0 && rec.agent_url.rfind("https://", 0) != 0) {
    return api::HttpResponse::Error(
        Status::InvalidArgument("agent_url: expected http://HOST:PORT"));
  }
  if (rec.name.empty()) rec.name = rec.id;
  if (HostSnapshot(rec.id)) {
    return api::HttpResponse::Error(Status::AlreadyExists("host " + rec.id + " is registered"));
  }
  rec.created_ms = NowMs();
  Status s = store_->PutHost(rec);
  if (s.ok()) s = RegisterHost(rec);
  if (!s.ok()) return api::HttpResponse::Error(s);
  RefreshHost(rec.id);
  return api::HttpResponse::Json(HostJson(*HostSnapshot(rec.id)), 201);
}

api::HttpResponse Ferryd::DeleteHost(const api::HttpRequest& r) {
  std::string id = r.Param("id");
  if (!HostSnapshot(id)) return api::HttpResponse::Error(Status::NotFound("no host " + id));
  Result<std::vector<MigrationRecord>> active = store_->ListMigrations(true);
  if (!active.ok()) return api::HttpResponse::Error(active.status());
  for (const MigrationRecord& m : *active) {
    if (m.source_host == id || m.target_host == id) {
      return api::HttpResponse::Error(
          Status::FailedPrecondition("host " + id + " takes part in active migration " + m.id));
    }
  }
  Status s = store_->DeleteHost(id);
  if (!s.ok()) return api::HttpResponse::Error(s);
  std::lock_guard<std::mutex> lock(hosts_mu_);
  hosts_.erase(id);
  return api::HttpResponse::NoContent();
}

api::HttpResponse Ferryd::RefreshHostApi(const api::HttpRequest& r) {
  std::string id = r.Param("id");
  if (!HostSnapshot(id)) return api::HttpResponse::Error(Status::NotFound("no host " + id));
  RefreshHost(id);
  return api::HttpResponse::Json(HostJson(*HostSnapshot(id)));
}

api::HttpResponse Ferryd::ListVms(const api::HttpRequest& r) {
  std::string host = r.Query("host");
  if (!host.empty() && !HostSnapshot(host)) {
    return api::HttpResponse::Error(Status::NotFound("no host " + host));
  }
  if (Status s = RefreshForRequest(r, host); !s.ok()) return api::HttpResponse::Error(s);
  json list = json::array();
  json hosts = json::array();
  for (const HostState& h : HostSnapshots()) {
    if (!host.empty() && h.record.id != host) continue;
    hosts.push_back(json::parse(HostJson(h)));
    for (const hypervisor::VmInfo& vm : h.view.inventory.vms) {
      json v = ParseOr(api::ToJson(vm), json::object());
      v["host"] = h.record.id;
      list.push_back(v);
    }
  }
  return api::HttpResponse::Json(json{{"vms", list}, {"hosts", hosts}}.dump());
}

api::HttpResponse Ferryd::CreateMigrations(const api::HttpRequest& r, bool validate_only) {
  Result<MigrationRequest> request = ParseMigrationRequest(r.body);
  if (!request.ok()) return api::HttpResponse::Error(request.status());
  std::lock_guard<std::mutex> create_lock(create_mu_);
  PlanResult planned = Plan(*request);
  if (!planned.status.ok()) return api::HttpResponse::Error(planned.status);
  // Two requests for one VM at once would race: refuse a VM already moving.
  Result<std::vector<MigrationRecord>> active = store_->ListMigrations(true);
  if (!active.ok()) return api::HttpResponse::Error(active.status());
  for (MigrationPlan& plan : planned.plans) {
    for (const MigrationRecord& m : *active) {
      if (m.vm_name == plan.vm) {
        plan.checks.push_back(
            {"not_moving", false,
             plan.vm + " is already being moved by " + m.id + " (" + StateName(m.state) + ")"});
      }
    }
  }
  json plans = json::array();
  bool all_ok = true;
  std::string summary;
  for (const MigrationPlan& plan : planned.plans) {
    plans.push_back(json::parse(PlanToJson(plan)));
    if (!plan.ok()) {
      all_ok = false;
      summary += (summary.empty() ? "" : "; ") + plan.vm + ": " + plan.FailureSummary();
    }
  }
  if (validate_only) {
    return api::HttpResponse::Json(json{{"ok", all_ok}, {"plans", plans}}.dump());
  }
  if (!all_ok) {
    return api::HttpResponse::Error(
        Status::FailedPrecondition("validation failed, nothing was changed: " + summary),
        json{{"plans", plans}}.dump());
  }
  json created = json::array();
  for (const MigrationPlan& plan : planned.plans) {
    MigrationRequest one = *request;
    one.vms = {plan.vm};
    one.evacuate.clear();
    one.source = plan.source;
    one.to = plan.target;
    one.type = plan.type;
    MigrationRecord m;
    m.id = NewMigrationId();
    m.vm_name = plan.vm;
    m.vm_uuid = plan.vm_uuid;
    m.source_host = plan.source;
    m.target_host = plan.target;
    m.type = plan.type;
    m.state = MigrationState::kPending;
    m.priority = request->priority;
    m.options_json = MigrationRequestToJson(one);
    m.progress_json = "{}";
    m.created_ms = m.updated_ms = NowMs();
    Status s = store_->CreateMigration(&m);
    if (s.ok()) {
      std::string checks = PlanToJson(plan);
      s = Mutate(m.id, [&](MigrationRecord& rec) -> std::optional<EventRecord> {
        rec.state = MigrationState::kValidating;
        return MakeEvent("state", "validating", checks);
      });
    }
    if (s.ok()) {
      size_t n = plan.checks.size();
      s = Mutate(m.id, [&](MigrationRecord& rec) -> std::optional<EventRecord> {
        rec.state = MigrationState::kQueued;
        return MakeEvent("state",
                         "queued: " + std::to_string(n) + " checks passed, type " + rec.type);
      });
    }
    if (!s.ok()) return api::HttpResponse::Error(s);
    Result<MigrationRecord> stored = store_->GetMigration(m.id);
    if (stored.ok()) created.push_back(json::parse(MigrationJson(*stored)));
  }
  Wake();
  return api::HttpResponse::Json(json{{"migrations", created}}.dump(), 201);
}

std::string Ferryd::MigrationJson(const MigrationRecord& m) {
  json p = ParseOr(m.progress_json, json::object());
  json j = {{"id", m.id},
            {"vm", m.vm_name},
            {"vm_uuid", m.vm_uuid},
            {"source", m.source_host},
            {"target", m.target_host},
            {"type", m.type},
            {"state", StateName(m.state)},
            {"phase", m.phase},
            {"priority", m.priority},
            {"options", ParseOr(m.options_json, json::object())},
            {"progress", p.value("progress", json::object())},
            {"result", p.contains("result") ? p["result"] : json(nullptr)},
            {"created_at_ms", m.created_ms},
            {"updated_at_ms", m.updated_ms}};
  if (!m.plan_id.empty()) j["plan_id"] = m.plan_id;
  for (const char* key : {"job_id", "attempt", "retry_at_ms", "export_close"}) {
    if (p.contains(key)) j[key] = p[key];
  }
  if (p.contains("waiting_for")) j["waiting_for"] = p["waiting_for"];
  if (p.contains("location")) j["location"] = p["location"];
  if (p.contains("agent_error")) j["agent_error"] = p["agent_error"];
  if (m.error_code.empty()) {
    j["error"] = nullptr;
  } else {
    j["error"] = {{"code", m.error_code}, {"message", m.error_message}};
  }
  return j.dump();
}

api::HttpResponse Ferryd::ListMigrations(const api::HttpRequest& r) {
  bool active = r.Query("active", "false") == "true";
  Result<std::vector<MigrationRecord>> list = store_->ListMigrations(active);
  if (!list.ok()) return api::HttpResponse::Error(list.status());
  json out = json::array();
  for (const MigrationRecord& m : *list) out.push_back(json::parse(MigrationJson(m)));
  return api::HttpResponse::Json(json{{"migrations", out}}.dump());
}

api::HttpResponse Ferryd::GetMigration(const api::HttpRequest& r) {
  Result<MigrationRecord> m = store_->GetMigration(r.Param("id"));
  if (!m.ok()) return api::HttpResponse::Error(m.status());
  return api::HttpResponse::Json(MigrationJson(*m));
}

api::HttpResponse Ferryd::ListEvents(const api::HttpRequest& r) {
  std::string after_text = r.Query("after", "0");
  int64_t after = 0;
  for (char c : after_text) {
    if (c < '0' || c > '9' || after > (int64_t{1} << 50)) {
      return api::HttpResponse::Error(
          Status::InvalidArgument("after: expected a non-negative integer"));
    }
    after = after * 10 + (c - '0');
  }
  if (!store_->GetMigration(r.Param("id")).ok()) {
    return api::HttpResponse::Error(Status::NotFound("no migration " + r.Param("id")));
  }
  Result<std::vector<EventRecord>> events = store_->ListEvents(r.Param("id"), after);
  if (!events.ok()) return api::HttpResponse::Error(events.status());
  json out = json::array();
  for (const EventRecord& e : *events) {
    out.push_back({{"seq", e.seq},
                   {"at_ms", e.at_ms},
                   {"kind", e.kind},
                   {"message", e.message},
                   {"data", ParseOr(e.data_json, json::object())}});
  }
  return api::HttpResponse::Json(json{{"events", out}}.dump());
}

Result<MigrationRecord> Ferryd::CancelOne(const std::string& id) {
  FERRY_ASSIGN_OR_RETURN(MigrationRecord m, store_->GetMigration(id));
  if (IsFinal(m.state)) {
    return Status::FailedPrecondition("migration " + id + " already ended (" + StateName(m.state) +
                                      ")");
  }
  if (IsColdType(m.type) && m.state == MigrationState::kRunning) return CancelCold(m);
  bool ask_agent = false;
  FERRY_TRY(Mutate(id, [&](MigrationRecord& rec) -> std::optional<EventRecord> {
    switch (rec.state) {
      case MigrationState::kPending:
      case MigrationState::kValidating:
      case MigrationState::kQueued:
        rec.state = MigrationState::kCancelled;
        rec.error_code = "cancelled";
        rec.error_message = "cancelled by the user before it started";
        return MakeEvent("state", "cancelled before it started");
      case MigrationState::kRunning:
        rec.state = MigrationState::kCancelling;
        ask_agent = true;
        return MakeEvent("state", "cancelling");
      default: return std::nullopt;
    }
  }));
  if (ask_agent) {
    if (std::shared_ptr<AgentLink> link = LinkFor(m.source_host)) (void)link->CancelJob(id);
    Wake();
  }
  return store_->GetMigration(id);
}

api::HttpResponse Ferryd::CancelMigration(const api::HttpRequest& r) {
  Result<MigrationRecord> m = CancelOne(r.Param("id"));
  if (!m.ok()) return api::HttpResponse::Error(m.status());
  if (!m->plan_id.empty()) (void)RefreshPlanState(m->plan_id);
  return api::HttpResponse::Json(MigrationJson(*m));
}

api::HttpResponse Ferryd::Metrics(const api::HttpRequest&) {
  std::string out;
  out += "# HELP ferry_hosts_up Registered hosts whose agent answered the last refresh.\n";
  out += "# TYPE ferry_hosts_up gauge\n";
  int up = 0;
  std::vector<HostState> hosts = HostSnapshots();
  for (const HostState& h : hosts) up += h.view.reachable ? 1 : 0;
  out += "ferry_hosts_up " + std::to_string(up) + "\n";
  out += "# HELP ferry_hosts Registered hosts.\n# TYPE ferry_hosts gauge\n";
  out += "ferry_hosts " + std::to_string(hosts.size()) + "\n";
  std::map<std::string, int> by_state;
  for (std::string_view s : {"pending", "validating", "queued", "running", "cancelling",
                             "completed", "failed", "cancelled"}) {
    by_state[std::string(s)] = 0;
  }
  Result<std::vector<MigrationRecord>> all = store_->ListMigrations(false);
  if (all.ok()) {
    for (const MigrationRecord& m : *all) ++by_state[StateName(m.state)];
  }
  out += "# HELP ferry_migrations Migrations by state.\n# TYPE ferry_migrations gauge\n";
  for (const auto& [state, n] : by_state) {
    out += "ferry_migrations{state=\"" + state + "\"} " + std::to_string(n) + "\n";
  }
  out += "# HELP ferry_migration_bytes_done Bytes moved by each running migration.\n";
  out += "# TYPE ferry_migration_bytes_done gauge\n";
  if (all.ok()) {
    for (const MigrationRecord& m : *all) {
      if (m.state != MigrationState::kRunning) continue;
      json p = ParseOr(m.progress_json, json::object()).value("progress", json::object());
      out += "ferry_migration_bytes_done{id=\"" + m.id + "\",vm=\"" + m.vm_name + "\"} " +
             std::to_string(p.value("bytes_done", uint64_t{0})) + "\n";
    }
  }
  return api::HttpResponse::Text(out, "text/plain; version=0.0.4");
}

}  // namespace ferry::server
