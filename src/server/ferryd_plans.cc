// ferryd's migration plans and their cold and stage migrations (docs/plans.md): the plan API,
// the validation of every VM against the source and target agents, starting plans (now, on
// request or when their time comes), following cold jobs on the TARGET host's agent with
// retries as new attempts, closing the source's export when a migration ends without
// success, and the plan state derived from its migrations. See ferryd.h for the threads.
#include <algorithm>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "api/agent_json.h"
#include "common/poll_pacer.h"
#include "api/errors.h"
#include "server/ferryd.h"
#include "server/ferryd_util.h"
#include "server/limits.h"

namespace ferry::server {
namespace {

using nlohmann::json;

json ParseOr(const std::string& text, json fallback) {
  if (text.empty()) return fallback;
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  return j.is_discarded() ? fallback : j;
}

std::string StateName(MigrationState s) { return std::string(MigrationStateName(s)); }

std::string EntryLabel(const plan::PlanVm& e) { return e.name.empty() ? e.id : e.name; }

json CheckJson(const plan::Check& c) {
  return {{"name", c.name}, {"ok", c.ok}, {"message", c.message}};
}

json VmChecksJson(const std::string& label, const plan::Resolution& r,
                  const std::vector<plan::Check>& extra) {
  json checks = json::array();
  bool ok = r.ok();
  for (const plan::Check& c : r.checks) checks.push_back(CheckJson(c));
  for (const plan::Check& c : extra) {
    checks.push_back(CheckJson(c));
    ok = ok && c.ok;
  }
  return {{"vm", label}, {"target_name", r.vm.name}, {"ok", ok}, {"checks", checks}};
}

// The key under which a VM being moved is known, to refuse moving it twice at once.
std::string SourceKey(const std::string& host, const std::string& share,
                      const std::string& vm_or_id) {
  return host + "/" + (share.empty() ? "" : "share:" + share + "/") + vm_or_id;
}

// Before the target VM is defined: the source VM may be powered on again.
bool BeforeDefine(const std::string& phase) {
  return CopiesInPhase(phase) || phase == "awaiting-deploy";
}

bool IsTrue(const std::string& v) { return v == "1" || v == "true"; }

// A job is started again within this time when the agent does not know it yet (the start
// request may have been lost), as for live jobs.
constexpr int64_t kColdStartRetryMs = 30000;

}  // namespace

bool Ferryd::ResolvedVm::ok() const {
  if (!resolution.ok()) return false;
  for (const plan::Check& c : extra) {
    if (!c.ok) return false;
  }
  return true;
}

std::string Ferryd::ResolvedVm::FailureSummary() const {
  std::string out = resolution.FailureSummary();
  for (const plan::Check& c : extra) {
    if (c.ok) continue;
    out += (out.empty() ? "" : "; ") + c.name + ": " + c.message;
  }
  return out;
}

std::string Ferryd::ResolvedVmsJson(const std::vector<ResolvedVm>& vms) {
  json list = json::array();
  bool ok = true;
  for (const ResolvedVm& v : vms) {
    list.push_back(VmChecksJson(v.label, v.resolution, v.extra));
    ok = ok && v.ok();
  }
  return json{{"ok", ok}, {"vms", list}}.dump();
}

// ---------------------------------------------------------------------------------------------
// Validation

std::vector<Ferryd::ResolvedVm> Ferryd::ResolvePlanVms(
    const plan::PlanDocument& doc, const std::vector<const plan::PlanVm*>& entries,
    const std::string& skip_migration) {
  const bool kvm_target = doc.target.type == plan::EndpointType::kKvm;
  const bool share_source = doc.source.type == plan::EndpointType::kShare;
  const std::string& shost = doc.source.host;
  const std::string& thost = doc.target.host;

  // The source: reachable, and for a share its listing (read once for every VM).
  std::optional<HostState> src = HostSnapshot(shost);
  std::string source_down;
  std::shared_ptr<AgentLink> slink = src ? src->link : nullptr;
  if (!src) source_down = "host " + shost + " is not registered";
  std::optional<api::ShareListing> listing;
  if (slink && share_source) {
    Result<api::ShareListing> l = slink->ListShareVms(doc.source.share);
    if (l.ok()) {
      listing = std::move(*l);
    } else {
      source_down = shost + ": share " + doc.source.share + ": " + l.status().ToString();
    }
  }

  // The target: its inventory now (kvm), or its share.
  if (HostSnapshot(thost)) RefreshHost(thost);
  std::optional<HostState> dst = HostSnapshot(thost);
  std::shared_ptr<AgentLink> tlink = dst ? dst->link : nullptr;
  std::string target_down;
  hypervisor::Inventory target_inv;
  bool share_writable = false;
  std::vector<std::string> share_entries;
  if (!dst) {
    target_down = "host " + thost + " is not registered";
  } else if (kvm_target) {
    if (dst->view.reachable) {
      target_inv = dst->view.inventory;
    } else {
      target_down = thost + ": " + dst->view.error;
    }
  } else {
    Result<std::vector<api::ShareInfo>> shares = tlink->ListShares();
    if (!shares.ok()) {
      target_down = thost + ": " + shares.status().ToString();
    } else {
      for (const api::ShareInfo& s : *shares) {
        if (s.name == doc.target.share) share_writable = s.writable;
      }
      // What the share holds: the top folder (or file) of every VM in it.
      Result<api::ShareListing> held = tlink->ListShareVms(doc.target.share);
      if (held.ok()) {
        std::set<std::string> tops;
        for (const sources::ShareVm& v : held->vms) tops.insert(v.id.substr(0, v.id.find('/')));
        share_entries.assign(tops.begin(), tops.end());
      }
    }
  }

  // What active migrations already claim: their sources, and on this target their VM names
  // and disk files (not there yet, but they will be).
  std::map<std::string, std::string> moving;  // SourceKey -> migration id
  std::vector<std::string> taken_names;       // by other migrations (siblings: claimed_names)
  std::map<std::string, std::vector<std::string>> taken_files;  // pool -> file names
  Result<std::vector<MigrationRecord>> active = store_->ListMigrations(true);
  if (active.ok()) {
    for (const MigrationRecord& m : *active) {
      if (m.id == skip_migration) continue;
      if (!IsColdType(m.type)) {
        moving[SourceKey(m.source_host, "", m.vm_name)] = m.id;
        continue;
      }
      Result<ColdOptions> o = ParseColdOptions(m.options_json);
      if (!o.ok()) continue;
      moving[SourceKey(m.source_host, o->source_share,
                       o->source_share.empty() ? m.vm_name : o->source_share_vm)] = m.id;
      if (m.target_host != thost || o->target_type != doc.target.type ||
          o->target_share != (kvm_target ? "" : doc.target.share)) {
        continue;
      }
      taken_names.push_back(o->vm.name);
      for (const plan::TargetDisk& d : o->vm.disks) taken_files[d.pool].push_back(d.file_name);
    }
  }

  std::vector<std::pair<std::string, std::pair<uint64_t, uint64_t>>> claims;
  std::vector<std::string> claimed_names;  // by the plan's VMs before this one
  std::map<std::string, Result<std::vector<std::string>>> pool_files;
  std::vector<ResolvedVm> out;
  for (const plan::PlanVm* entry : entries) {
    ResolvedVm rv;
    rv.label = EntryLabel(*entry);
    std::string source_error = source_down;
    bool source_reachable = source_down.empty();
    if (source_error.empty() && !share_source) {
      const std::string& name = entry->name.empty() ? entry->id : entry->name;
      Result<sources::VmDescription> d = slink->DescribeVm(name);
      if (d.ok()) {
        rv.source = std::move(*d);
      } else if (d.status().code() == ErrorCode::kNotFound) {
        source_error = "no VM named " + name + " on " + shost + " (" + d.status().message() + ")";
      } else {
        source_error = shost + ": " + d.status().ToString();
        source_reachable = false;
      }
    } else if (source_error.empty()) {
      std::vector<const sources::ShareVm*> found;
      for (const sources::ShareVm& v : listing->vms) {
        if (entry->id.empty() ? v.vm.name == entry->name : v.id == entry->id) found.push_back(&v);
      }
      std::string where = " in share " + doc.source.share + " on " + shost;
      if (found.empty()) {
        source_error = "no VM " +
                       (entry->id.empty() ? "named " + entry->name : "with id " + entry->id) +
                       where;
      } else if (found.size() > 1) {
        std::string ids;
        for (const sources::ShareVm* v : found) ids += (ids.empty() ? "" : ", ") + v->id;
        source_error = std::to_string(found.size()) + " VMs are named " + entry->name + where +
                       " (" + ids + "): name it by id";
      } else {
        rv.source = found[0]->vm;
        rv.share_vm_id = found[0]->id;
      }
    }
    const sources::VmDescription* vm = rv.source.name.empty() ? nullptr : &rv.source;
    if (vm != nullptr) {
      std::string key = SourceKey(shost, share_source ? doc.source.share : "",
                                  share_source ? rv.share_vm_id : vm->name);
      auto it = moving.find(key);
      if (it != moving.end()) {
        rv.extra.push_back({"not_moving", false,
                            it->second.empty()
                                ? rv.label + " is named twice in the plan"
                                : rv.label + " is already being moved by migration " + it->second});
      } else {
        rv.extra.push_back({"not_moving", true, rv.label + " is not being moved"});
        moving[key] = "";
      }
    }

    // Names other migrations take on the target (not defined there yet).
    hypervisor::Inventory inv = target_inv;
    for (const std::string& n : taken_names) {
      hypervisor::VmInfo planned;
      planned.name = n;
      planned.uuid = "planned-" + n;  // never equal to a real UUID
      planned.state = hypervisor::VmState::kShutoff;
      inv.vms.push_back(planned);
    }
    plan::ResolveInput in;
    in.plan = &doc;
    in.entry = entry;
    in.vm = vm;
    in.source_error = source_error;
    in.source_reachable = source_reachable;
    in.claimed_names = claimed_names;
    in.pool_claims = claims;
    if (kvm_target) {
      if (target_down.empty()) {
        in.target = &inv;
      } else {
        in.target_error = target_down;
      }
    } else {
      in.target_error = target_down;
      in.share_writable = share_writable;
      in.share_entries = share_entries;
      in.share_entries.insert(in.share_entries.end(), taken_names.begin(), taken_names.end());
    }
    // A first pass says what the VM would be (machine, firmware, pools); the platform check
    // and the pools' files need that.
    rv.resolution = plan::ResolvePlanVm(in);
    if (kvm_target && vm != nullptr && target_down.empty()) {
      const plan::TargetVm& t = rv.resolution.vm;
      if (!t.machine.empty()) {
        Result<api::PlatformCheck> pc = tlink->CheckPlatform(api::PlatformCheckRequest{
            t.arch, t.machine,
            t.firmware == "uefi" ? hypervisor::Firmware::kUefi : hypervisor::Firmware::kBios});
        if (pc.ok()) {
          in.machine_ok = pc->machine_ok;
          in.firmware_ok = pc->firmware_ok;
          in.platform_message = pc->message;
        } else {
          in.target_error = thost + ": platform check: " + pc.status().ToString();
        }
      }
      std::set<std::string> pools;
      for (const plan::TargetDisk& d : t.disks) {
        if (!d.pool.empty()) pools.insert(d.pool);
      }
      for (const std::string& pool : pools) {
        auto it = pool_files.find(pool);
        if (it == pool_files.end()) it = pool_files.emplace(pool, tlink->ListPoolFiles(pool)).first;
        if (!it->second.ok()) {
          rv.extra.push_back({"name_clash", false,
                              "cannot list the files of pool " + pool + " on " + thost + ": " +
                                  it->second.status().ToString()});
          continue;
        }
        std::vector<std::string> files = *it->second;
        const std::vector<std::string>& more = taken_files[pool];
        files.insert(files.end(), more.begin(), more.end());
        in.pool_files.push_back({pool, std::move(files)});
      }
      rv.resolution = plan::ResolvePlanVm(in);
    }

    // What this VM takes, for the VMs after it.
    if (vm != nullptr) {
      const plan::TargetVm& t = rv.resolution.vm;
      if (!t.name.empty()) claimed_names.push_back(t.name);
      plan::AddPoolClaims(rv.resolution, *vm, &claims);
      for (const plan::TargetDisk& d : t.disks) taken_files[d.pool].push_back(d.file_name);
    }
    out.push_back(std::move(rv));
  }
  return out;
}

std::vector<MigrationRecord> Ferryd::PlanMigrations(const std::string& plan_id,
                                                    const plan::PlanDocument& doc,
                                                    const std::vector<ResolvedVm>& vms) {
  std::vector<MigrationRecord> out;
  for (size_t i = 0; i < vms.size() && i < doc.vms.size(); ++i) {
    const ResolvedVm& v = vms[i];
    MigrationRecord m;
    m.id = NewRecordId("m");
    m.vm_name = v.source.name;
    m.vm_uuid = v.source.uuid;
    m.source_host = doc.source.host;
    m.target_host = doc.target.host;
    m.type = ColdMigrationType(doc.target.type);
    m.state = MigrationState::kQueued;
    m.priority = doc.options.priority;
    m.options_json =
        ToJson(MakeColdOptions(plan_id, doc, doc.vms[i], v.share_vm_id, v.resolution.vm));
    m.progress_json = "{}";
    m.created_ms = m.updated_ms = NowMs();
    out.push_back(std::move(m));
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Plans

Status Ferryd::StartPlanLocked(PlanRecord* plan, const plan::PlanDocument& doc,
                               std::string* details_json) {
  std::vector<const plan::PlanVm*> entries;
  for (const plan::PlanVm& e : doc.vms) entries.push_back(&e);
  std::vector<ResolvedVm> vms = ResolvePlanVms(doc, entries, "");
  std::string summary;
  for (const ResolvedVm& v : vms) {
    if (!v.ok()) summary += (summary.empty() ? "" : "; ") + v.label + ": " + v.FailureSummary();
  }
  if (!summary.empty()) {
    *details_json = ResolvedVmsJson(vms);
    return Status::FailedPrecondition("plan " + doc.name + ": validation failed: " + summary);
  }
  std::vector<MigrationRecord> ms = PlanMigrations(plan->id, doc, vms);
  {
    std::lock_guard<std::mutex> lock(plan_mu_);
    plan->state = PlanState::kRunning;
    plan->error_message.clear();
    plan->updated_ms = NowMs();
    if (plan->version == 0) {
      FERRY_TRY(store_->CreatePlan(plan, &ms));
    } else {
      FERRY_TRY(store_->UpdatePlan(plan, &ms));
    }
  }
  for (size_t i = 0; i < ms.size(); ++i) {
    EventRecord e = MakeEvent("state",
                              "queued: plan " + doc.name + ", " +
                                  std::to_string(vms[i].resolution.checks.size()) +
                                  " checks passed, type " + ms[i].type,
                              VmChecksJson(vms[i].label, vms[i].resolution, vms[i].extra).dump());
    e.migration_id = ms[i].id;
    (void)store_->AppendEvent(&e);
  }
  Wake();
  return Status::Ok();
}

void Ferryd::StartDuePlans() {
  Result<std::vector<PlanRecord>> plans = store_->ListPlans();
  if (!plans.ok()) return;
  for (const PlanRecord& listed : *plans) {
    if (listed.state != PlanState::kReady) continue;
    Result<plan::PlanDocument> doc = plan::ParsePlan(listed.document_json);
    if (!doc.ok() || doc->options.start != plan::StartMode::kAt ||
        doc->options.start_at_ms > NowMs()) {
      continue;
    }
    std::lock_guard<std::mutex> create_lock(create_mu_);
    Result<PlanRecord> p = store_->GetPlan(listed.id);
    if (!p.ok() || p->state != PlanState::kReady) continue;
    Result<std::vector<MigrationRecord>> existing = store_->ListPlanMigrations(p->id);
    if (!existing.ok() || !existing->empty()) continue;
    std::string details;
    Status s = StartPlanLocked(&*p, *doc, &details);
    if (!s.ok()) {
      std::lock_guard<std::mutex> lock(plan_mu_);
      Result<PlanRecord> fresh = store_->GetPlan(listed.id);
      if (!fresh.ok()) continue;
      fresh->state = PlanState::kFailed;
      fresh->error_message = "scheduled start: " + s.message();
      fresh->updated_ms = NowMs();
      (void)store_->UpdatePlan(&*fresh, nullptr);
    }
  }
}

Status Ferryd::RefreshPlanState(const std::string& plan_id) {
  std::lock_guard<std::mutex> lock(plan_mu_);
  FERRY_ASSIGN_OR_RETURN(PlanRecord p, store_->GetPlan(plan_id));
  FERRY_ASSIGN_OR_RETURN(std::vector<MigrationRecord> ms, store_->ListPlanMigrations(p.id));
  if (ms.empty()) return Status::Ok();
  std::vector<MigrationState> states;
  for (const MigrationRecord& m : ms) states.push_back(m.state);
  PlanState derived = DerivePlanState(states);
  if (derived == p.state) return Status::Ok();
  p.state = derived;
  p.updated_ms = NowMs();
  return store_->UpdatePlan(&p, nullptr);
}

void Ferryd::UpdatePlanStates() {
  Result<std::vector<PlanRecord>> plans = store_->ListPlans();
  if (!plans.ok()) return;
  for (const PlanRecord& p : *plans) {
    if (p.state == PlanState::kRunning) (void)RefreshPlanState(p.id);
  }
}

std::string Ferryd::PlanJson(const PlanRecord& p) {
  json vms = json::array();
  Result<std::vector<MigrationRecord>> ms = store_->ListPlanMigrations(p.id);
  if (ms.ok() && !ms->empty()) {
    for (const MigrationRecord& m : *ms) {
      json mj = ParseOr(MigrationJson(m), json::object());
      Result<ColdOptions> o = ParseColdOptions(m.options_json);
      json v = {{"vm", m.vm_name},
                {"target_name", o.ok() ? o->vm.name : ""},
                {"migration", m.id},
                {"state", StateName(m.state)},
                {"phase", m.phase},
                {"progress", mj.value("progress", json::object())},
                {"result", mj.value("result", json(nullptr))},
                {"error", mj.value("error", json(nullptr))}};
      for (const char* key : {"waiting_for", "attempt"}) {
        if (mj.contains(key)) v[key] = mj[key];
      }
      vms.push_back(v);
    }
  } else {
    Result<plan::PlanDocument> doc = plan::ParsePlan(p.document_json);
    if (doc.ok()) {
      for (const plan::PlanVm& e : doc->vms) {
        vms.push_back({{"vm", EntryLabel(e)},
                       {"target_name", e.target.name.value_or(e.name)},
                       {"migration", nullptr},
                       {"state", PlanStateName(p.state)},
                       {"phase", ""},
                       {"progress", json::object()},
                       {"result", nullptr},
                       {"error", nullptr}});
      }
    }
  }
  json j = {{"id", p.id},
            {"name", p.name},
            {"state", PlanStateName(p.state)},
            {"document", ParseOr(p.document_json, json::object())},
            {"created_at_ms", p.created_ms},
            {"updated_at_ms", p.updated_ms},
            {"error", p.error_message.empty() ? json(nullptr) : json(p.error_message)},
            {"vms", vms}};
  return j.dump();
}

api::HttpResponse Ferryd::CreatePlan(const api::HttpRequest& r) {
  const bool validate_only = IsTrue(r.Query("validate_only"));
  Result<plan::PlanDocument> doc = plan::ParsePlan(r.body);
  if (!doc.ok()) return api::HttpResponse::Error(doc.status().WithContext("plan"));
  std::lock_guard<std::mutex> create_lock(create_mu_);
  if (validate_only) {
    std::vector<const plan::PlanVm*> entries;
    for (const plan::PlanVm& e : doc->vms) entries.push_back(&e);
    return api::HttpResponse::Json(ResolvedVmsJson(ResolvePlanVms(*doc, entries, "")));
  }
  if (store_->GetPlan(doc->name).ok()) {
    return api::HttpResponse::Error(
        Status::AlreadyExists("a plan named " + doc->name + " already exists"));
  }
  PlanRecord p;
  p.id = NewRecordId("p");
  p.name = doc->name;
  p.document_json = plan::PlanToJson(*doc);
  p.state = PlanState::kReady;
  p.created_ms = p.updated_ms = NowMs();
  const bool start_now =
      doc->options.start == plan::StartMode::kNow ||
      (doc->options.start == plan::StartMode::kAt && doc->options.start_at_ms <= NowMs());
  if (start_now) {
    std::string details;
    Status s = StartPlanLocked(&p, *doc, &details);
    if (!s.ok()) {
      if (s.code() == ErrorCode::kFailedPrecondition) {
        s = Status::FailedPrecondition(s.message() + "; nothing was stored");
      }
      return api::HttpResponse::Error(s, details);
    }
  } else {
    // Not started: validated anyway, so that a plan that cannot run is refused now.
    std::vector<const plan::PlanVm*> entries;
    for (const plan::PlanVm& e : doc->vms) entries.push_back(&e);
    std::vector<ResolvedVm> vms = ResolvePlanVms(*doc, entries, "");
    std::string summary;
    for (const ResolvedVm& v : vms) {
      if (!v.ok()) summary += (summary.empty() ? "" : "; ") + v.label + ": " + v.FailureSummary();
    }
    if (!summary.empty()) {
      return api::HttpResponse::Error(
          Status::FailedPrecondition("plan " + doc->name + ": validation failed: " + summary +
                                     "; nothing was stored"),
          ResolvedVmsJson(vms));
    }
    std::lock_guard<std::mutex> lock(plan_mu_);
    Status s = store_->CreatePlan(&p, nullptr);
    if (!s.ok()) return api::HttpResponse::Error(s);
  }
  Result<PlanRecord> stored = store_->GetPlan(p.id);
  if (!stored.ok()) return api::HttpResponse::Error(stored.status());
  return api::HttpResponse::Json(PlanJson(*stored), 201);
}

api::HttpResponse Ferryd::ListPlans(const api::HttpRequest&) {
  Result<std::vector<PlanRecord>> plans = store_->ListPlans();
  if (!plans.ok()) return api::HttpResponse::Error(plans.status());
  json list = json::array();
  for (const PlanRecord& p : *plans) list.push_back(ParseOr(PlanJson(p), json::object()));
  return api::HttpResponse::Json(json{{"plans", list}}.dump());
}

api::HttpResponse Ferryd::GetPlan(const api::HttpRequest& r) {
  Result<PlanRecord> p = store_->GetPlan(r.Param("id"));
  if (!p.ok()) return api::HttpResponse::Error(p.status());
  return api::HttpResponse::Json(PlanJson(*p));
}

api::HttpResponse Ferryd::StartPlan(const api::HttpRequest& r) {
  std::lock_guard<std::mutex> create_lock(create_mu_);
  Result<PlanRecord> p = store_->GetPlan(r.Param("id"));
  if (!p.ok()) return api::HttpResponse::Error(p.status());
  Result<std::vector<MigrationRecord>> ms = store_->ListPlanMigrations(p->id);
  if (!ms.ok()) return api::HttpResponse::Error(ms.status());
  if (p->state != PlanState::kReady || !ms->empty()) {
    return api::HttpResponse::Error(Status::FailedPrecondition(
        "plan " + p->name + " is " + std::string(PlanStateName(p->state)) +
        (ms->empty() ? "" : " (already started)") + "; only a ready plan can be started"));
  }
  Result<plan::PlanDocument> doc = plan::ParsePlan(p->document_json);
  if (!doc.ok()) {
    return api::HttpResponse::Error(
        Status::Internal("stored plan " + p->name + ": " + doc.status().ToString()));
  }
  std::string details;
  Status s = StartPlanLocked(&*p, *doc, &details);
  if (!s.ok()) return api::HttpResponse::Error(s, details);
  Result<PlanRecord> now = store_->GetPlan(p->id);
  if (!now.ok()) return api::HttpResponse::Error(now.status());
  return api::HttpResponse::Json(PlanJson(*now));
}

api::HttpResponse Ferryd::CancelPlan(const api::HttpRequest& r) {
  Result<PlanRecord> p = store_->GetPlan(r.Param("id"));
  if (!p.ok()) return api::HttpResponse::Error(p.status());
  Result<std::vector<MigrationRecord>> ms = store_->ListPlanMigrations(p->id);
  if (!ms.ok()) return api::HttpResponse::Error(ms.status());
  if (ms->empty()) {
    std::lock_guard<std::mutex> create_lock(create_mu_);  // not while it starts
    std::lock_guard<std::mutex> lock(plan_mu_);
    Result<PlanRecord> fresh = store_->GetPlan(p->id);
    if (!fresh.ok()) return api::HttpResponse::Error(fresh.status());
    if (fresh->state != PlanState::kReady) {
      return api::HttpResponse::Error(Status::FailedPrecondition(
          "plan " + p->name + " already ended (" + std::string(PlanStateName(p->state)) + ")"));
    }
    fresh->state = PlanState::kCancelled;
    fresh->updated_ms = NowMs();
    Status s = store_->UpdatePlan(&*fresh, nullptr);
    if (!s.ok()) return api::HttpResponse::Error(s);
    return api::HttpResponse::Json(PlanJson(*fresh));
  }
  // Those not started first: a slot that a running one frees while it is being cancelled must
  // not start the next.
  int cancelled = 0;
  for (bool running : {false, true}) {
    for (const MigrationRecord& m : *ms) {
      bool started = m.state == MigrationState::kRunning || m.state == MigrationState::kCancelling;
      if (IsFinal(m.state) || started != running) continue;
      Result<MigrationRecord> c = CancelOne(m.id);
      if (c.ok()) {
        ++cancelled;
      } else if (c.status().code() != ErrorCode::kFailedPrecondition) {  // ended meanwhile
        return api::HttpResponse::Error(c.status().WithContext("cancel " + m.id));
      }
    }
  }
  if (cancelled == 0) {
    return api::HttpResponse::Error(Status::FailedPrecondition(
        "plan " + p->name + " already ended (" + std::string(PlanStateName(p->state)) + ")"));
  }
  (void)RefreshPlanState(p->id);
  Result<PlanRecord> now = store_->GetPlan(p->id);
  if (!now.ok()) return api::HttpResponse::Error(now.status());
  return api::HttpResponse::Json(PlanJson(*now));
}

api::HttpResponse Ferryd::DeployPlan(const api::HttpRequest& r) {
  Result<PlanRecord> p = store_->GetPlan(r.Param("id"));
  if (!p.ok()) return api::HttpResponse::Error(p.status());
  Result<std::vector<MigrationRecord>> ms = store_->ListPlanMigrations(p->id);
  if (!ms.ok()) return api::HttpResponse::Error(ms.status());
  int active = 0;
  for (const MigrationRecord& m : *ms) {
    if (IsFinal(m.state) || m.state == MigrationState::kCancelling) continue;
    ++active;
    // Recorded first: a migration still copying goes on by itself when it gets there, and a
    // later attempt of its job does not wait again.
    (void)Mutate(m.id, [](MigrationRecord& rec) -> std::optional<EventRecord> {
      json pj = ParseOr(rec.progress_json, json::object());
      if (pj.value("deploy_requested", false)) return std::nullopt;
      pj["deploy_requested"] = true;
      rec.progress_json = pj.dump();
      return MakeEvent("info", "deploy requested");
    });
    if (m.state == MigrationState::kRunning && m.phase == "awaiting-deploy") {
      std::string job = ParseOr(m.progress_json, json::object()).value("job_id", m.id);
      if (std::shared_ptr<AgentLink> link = LinkFor(m.target_host)) {
        Result<api::AgentJob> j = link->ProceedJob(job);
        if (!j.ok()) {
          EventRecord e =
              MakeEvent("warning", "deploy: " + m.target_host + " did not take it yet (" +
                                       j.status().ToString() + "); asking again");
          e.migration_id = m.id;
          (void)store_->AppendEvent(&e);
        }
      }
    }
  }
  if (active == 0) {
    return api::HttpResponse::Error(
        Status::FailedPrecondition("plan " + p->name + " has no migration that can be deployed (" +
                                   std::string(PlanStateName(p->state)) + ")"));
  }
  Wake();
  Result<PlanRecord> now = store_->GetPlan(p->id);
  if (!now.ok()) return api::HttpResponse::Error(now.status());
  return api::HttpResponse::Json(PlanJson(*now));
}

api::HttpResponse Ferryd::DeletePlan(const api::HttpRequest& r) {
  std::lock_guard<std::mutex> create_lock(create_mu_);
  Result<PlanRecord> p = store_->GetPlan(r.Param("id"));
  if (!p.ok()) return api::HttpResponse::Error(p.status());
  std::lock_guard<std::mutex> lock(plan_mu_);
  Status s = store_->DeletePlan(p->id);
  if (!s.ok()) return api::HttpResponse::Error(s);
  return api::HttpResponse::NoContent();
}

api::HttpResponse Ferryd::ListShares(const api::HttpRequest& r) {
  std::string only = r.Query("host");
  if (!only.empty() && !HostSnapshot(only)) {
    return api::HttpResponse::Error(Status::NotFound("no host " + only));
  }
  json vms = json::array();
  json problems = json::array();
  for (const HostState& h : HostSnapshots()) {
    if (!only.empty() && h.record.id != only) continue;
    Result<std::vector<api::ShareInfo>> shares = h.link->ListShares();
    if (!shares.ok()) {
      if (!only.empty()) return api::HttpResponse::Error(shares.status().WithContext(only));
      if (shares.status().code() != ErrorCode::kUnsupported) {
        problems.push_back(h.record.id + ": " + shares.status().ToString());
      }
      continue;
    }
    for (const api::ShareInfo& s : *shares) {
      Result<api::ShareListing> listing = h.link->ListShareVms(s.name);
      if (!listing.ok()) {
        problems.push_back(h.record.id + ": share " + s.name + ": " + listing.status().ToString());
        continue;
      }
      for (const sources::ShareVm& v : listing->vms) {
        json j = ParseOr(api::ToJson(v), json::object());
        j["host"] = h.record.id;
        vms.push_back(j);
      }
      for (const std::string& p : listing->problems) {
        problems.push_back(h.record.id + ": share " + s.name + ": " + p);
      }
    }
  }
  return api::HttpResponse::Json(json{{"vms", vms}, {"problems", problems}}.dump());
}

// ---------------------------------------------------------------------------------------------
// Cold and stage migrations

std::optional<agent::SourceAgentRef> Ferryd::SourceRef(const std::string& host_id) {
  std::optional<HostState> h = HostSnapshot(host_id);
  if (!h) return std::nullopt;
  return agent::SourceAgentRef{h->record.id, h->record.agent_url, h->record.agent_token};
}

agent::MigrationJobSpec Ferryd::ColdSpecOf(const MigrationRecord& m, const ColdOptions& o) {
  json p = ParseOr(m.progress_json, json::object());
  int attempt = p.value("attempt", 1);
  agent::SourceAgentRef source = SourceRef(m.source_host).value_or(agent::SourceAgentRef{});
  return ColdJobSpecFor(m.id, attempt, m.vm_name, o, source, p.value("deploy_requested", false));
}

void Ferryd::StartQueuedCold(const MigrationRecord& m) {
  auto fail = [&](ErrorCode code, const std::string& why, const std::string& data) {
    (void)Mutate(m.id, [&](MigrationRecord& r) -> std::optional<EventRecord> {
      if (r.state != MigrationState::kQueued) return std::nullopt;
      r.state = MigrationState::kFailed;
      r.error_code = std::string(api::ErrorCodeWireName(code));
      r.error_message = why;
      return MakeEvent("error", why, data);
    });
    if (!m.plan_id.empty()) (void)RefreshPlanState(m.plan_id);
  };
  Result<ColdOptions> o = ParseColdOptions(m.options_json);
  if (!o.ok()) return fail(ErrorCode::kInternal, o.status().ToString(), "{}");
  Result<PlanRecord> p = store_->GetPlan(o->plan_id);
  if (!p.ok()) return fail(ErrorCode::kInternal, "plan: " + p.status().ToString(), "{}");
  Result<plan::PlanDocument> doc = plan::ParsePlan(p->document_json);
  if (!doc.ok()) {
    return fail(ErrorCode::kInternal, "stored plan " + p->name + ": " + doc.status().ToString(),
                "{}");
  }
  const plan::PlanVm* entry = nullptr;
  for (const plan::PlanVm& e : doc->vms) {
    if (e.name == o->entry_name && e.id == o->entry_id) entry = &e;
  }
  if (entry == nullptr) {
    return fail(ErrorCode::kInternal, "plan " + p->name + " has no VM " + o->entry_name, "{}");
  }
  // Conditions may have changed while it waited: check again.
  std::vector<ResolvedVm> rv = ResolvePlanVms(*doc, {entry}, m.id);
  if (!rv[0].ok()) {
    return fail(ErrorCode::kFailedPrecondition,
                "validation before start failed: " + rv[0].FailureSummary(),
                VmChecksJson(rv[0].label, rv[0].resolution, rv[0].extra).dump());
  }
  ColdOptions fresh =
      MakeColdOptions(o->plan_id, *doc, *entry, rv[0].share_vm_id, rv[0].resolution.vm);
  Status s = Mutate(m.id, [&](MigrationRecord& r) -> std::optional<EventRecord> {
    if (r.state != MigrationState::kQueued) return std::nullopt;
    r.state = MigrationState::kRunning;
    r.options_json = ToJson(fresh);
    json pj = ParseOr(r.progress_json, json::object());
    pj.erase("waiting_for");
    r.progress_json = pj.dump();
    return MakeEvent("state", "running: the job runs on the target host " + r.target_host +
                                  ", pulling from " + r.source_host);
  });
  if (!s.ok()) return;
  Result<MigrationRecord> now = store_->GetMigration(m.id);
  if (!now.ok() || now->state != MigrationState::kRunning) return;
  StartColdAttempt(m.id, 1);
}

void Ferryd::StartColdAttempt(const std::string& id, int attempt) {
  std::string job_id = ColdJobId(id, attempt);
  Status s = Mutate(id, [&](MigrationRecord& r) -> std::optional<EventRecord> {
    if (r.state != MigrationState::kRunning) return std::nullopt;
    json pj = ParseOr(r.progress_json, json::object());
    pj["attempt"] = attempt;
    pj["job_id"] = job_id;
    pj["started_at_ms"] = NowMs();
    pj["agent_events_seen"] = 0;
    pj.erase("retry_at_ms");
    r.progress_json = pj.dump();
    r.phase = "starting";
    return MakeEvent("info", attempt == 1
                                 ? "starting job " + job_id + " on " + r.target_host
                                 : "attempt " + std::to_string(attempt) + ": starting job " +
                                       job_id + " on " + r.target_host +
                                       " (it resumes from the disks' journals)");
  });
  if (!s.ok()) return;
  Result<MigrationRecord> m = store_->GetMigration(id);
  if (!m.ok() || m->state != MigrationState::kRunning) return;
  SendColdStart(*m);
}

void Ferryd::SendColdStart(const MigrationRecord& m) {
  Result<ColdOptions> o = ParseColdOptions(m.options_json);
  if (!o.ok()) return FinishCold(m.id, MigrationState::kFailed, o.status(), true);
  if (!SourceRef(m.source_host)) {
    return FinishCold(m.id, MigrationState::kFailed,
                      Status::FailedPrecondition("host " + m.source_host + " is not registered"),
                      true);
  }
  std::shared_ptr<AgentLink> link = LinkFor(m.target_host);
  if (!link) {
    return FinishCold(m.id, MigrationState::kFailed,
                      Status::FailedPrecondition("host " + m.target_host + " is not registered"),
                      true);
  }
  Result<api::AgentJob> job = link->StartJob(ColdSpecOf(m, *o));
  if (!job.ok() && job.status().code() != ErrorCode::kIo) {
    Status err = job.status();
    FinishCold(m.id, MigrationState::kFailed,
               Status(err.code(), m.target_host + " refused the job: " + err.message()), true);
  }
  // kIo: the agent may or may not have it; FollowCold asks again (StartJob is idempotent).
}

void Ferryd::FollowCold(const MigrationRecord& m) {
  json p = ParseOr(m.progress_json, json::object());
  const int attempt = p.value("attempt", 1);
  const std::string job_id = p.value("job_id", ColdJobId(m.id, attempt));
  if (p.contains("retry_at_ms")) {  // between two attempts
    if (m.state == MigrationState::kCancelling) {
      return FinishCold(m.id, MigrationState::kCancelled,
                        Status::Cancelled("cancelled by the user between two attempts"), true);
    }
    if (NowMs() < p.value("retry_at_ms", int64_t{0})) return;
    return StartColdAttempt(m.id, attempt + 1);
  }
  std::shared_ptr<AgentLink> link = LinkFor(m.target_host);
  if (!link) {
    return FinishCold(m.id, MigrationState::kFailed,
                      Status::Io("host " + m.target_host + " is no longer registered"),
                      BeforeDefine(m.phase));
  }
  Result<api::AgentJob> job = link->GetJob(job_id);
  if (!job.ok() && job.status().code() == ErrorCode::kNotFound) {
    if (m.state == MigrationState::kCancelling) {
      return FinishCold(
          m.id, MigrationState::kCancelled,
          Status::Cancelled("cancelled by the user; " + m.target_host + " has no job " + job_id),
          BeforeDefine(m.phase));
    }
    int64_t started = p.value("started_at_ms", int64_t{0});
    if (m.phase == "starting" && NowMs() - started < kColdStartRetryMs) {
      return SendColdStart(m);
    }
    return ColdAttemptFailed(
        m.id, Status::Io(m.target_host + "'s agent has no record of job " + job_id), m.phase);
  }
  if (!job.ok()) {
    std::string err = job.status().ToString();
    if (m.state == MigrationState::kCancelling && job.status().code() == ErrorCode::kIo &&
        BeforeDefine(m.phase)) {
      return FinishCold(m.id, MigrationState::kCancelled,
                        Status::Cancelled("cancelled by the user; " + m.target_host +
                                          "'s agent cannot be reached (" + err + ")"),
                        true);
    }
    if (p.value("agent_error", "") != err) {
      (void)Mutate(m.id, [&](MigrationRecord& r) -> std::optional<EventRecord> {
        json pj = ParseOr(r.progress_json, json::object());
        pj["agent_error"] = err;
        r.progress_json = pj.dump();
        return MakeEvent("warning", "cannot reach " + m.target_host + "'s agent: " + err);
      });
    }
    return;
  }
  if (m.state == MigrationState::kCancelling && job->state == api::AgentJobState::kRunning) {
    Result<api::AgentJob> c = link->CancelJob(job_id);
    if (c.ok()) job = c;
  }
  const api::AgentJob& j = *job;
  bool proceed = false;
  bool current = false;
  Status s = Mutate(m.id, [&](MigrationRecord& r) -> std::optional<EventRecord> {
    if (r.state != MigrationState::kRunning && r.state != MigrationState::kCancelling) {
      return std::nullopt;
    }
    json pj = ParseOr(r.progress_json, json::object());
    if (pj.value("job_id", job_id) != j.id || pj.contains("retry_at_ms")) {
      return std::nullopt;  // moved on to another attempt meanwhile
    }
    current = true;
    pj.erase("agent_error");
    // A copy about to end: its verify and deploy follow within tens of milliseconds, so the
    // loop follows it closely (LoopMain).
    if (j.state == api::AgentJobState::kRunning &&
        (j.progress.phase == "copying" || j.progress.phase == "verifying") &&
        PollPacer::EtaIsClose(j.progress.eta_ms, config_.poll_ms)) {
      follow_closely_ = true;
    }
    json prog = ParseOr(api::ToJson(j.progress), json::object());
    if (j.progress.bytes_total > 0) {
      prog["percent"] = std::min(100.0, 100.0 * static_cast<double>(j.progress.bytes_done) /
                                            static_cast<double>(j.progress.bytes_total));
    }
    pj["progress"] = prog;
    if (j.result.has_value()) pj["result"] = ParseOr(api::ToJson(*j.result), json::object());
    size_t seen = pj.value("agent_events_seen", size_t{0});
    for (size_t i = seen; i < j.events.size(); ++i) {
      EventRecord e = MakeEvent(j.events[i].kind, j.events[i].message);
      e.at_ms = j.events[i].at_ms;
      e.migration_id = r.id;
      (void)store_->AppendEvent(&e);
    }
    pj["agent_events_seen"] = j.events.size();
    std::optional<EventRecord> event;
    if (!j.progress.phase.empty() && j.progress.phase != r.phase &&
        j.state == api::AgentJobState::kRunning) {
      event = MakeEvent("phase", j.progress.phase);
      r.phase = j.progress.phase;
      follow_closely_ = true;
    }
    if (j.state == api::AgentJobState::kRunning && r.phase == "awaiting-deploy" &&
        pj.value("deploy_requested", false) && r.state == MigrationState::kRunning) {
      proceed = true;
    }
    if (j.state == api::AgentJobState::kSucceeded) {
      r.state = MigrationState::kCompleted;
      r.phase = "done";
      pj["location"] = r.target_host;
      std::string summary = "completed";
      if (j.result) {
        summary += " in " + std::to_string(j.result->total_ms) + " ms";
        if (!j.result->defined_vm.empty()) summary += ", " + j.result->defined_vm + " defined";
        if (j.result->boot.checked) summary += ", boot check: " + j.result->boot.message;
      }
      if (attempt > 1) summary += " (attempt " + std::to_string(attempt) + ")";
      event = MakeEvent("state", summary, j.result ? api::ToJson(*j.result) : "{}");
    }
    r.progress_json = pj.dump();
    return event;
  });
  if (!s.ok() || !current) return;
  if (proceed) {
    Result<api::AgentJob> pr = link->ProceedJob(j.id);
    if (!pr.ok()) {
      EventRecord e = MakeEvent("warning", "deploy: " + m.target_host + " did not take it yet (" +
                                               pr.status().ToString() + "); asking again");
      e.migration_id = m.id;
      (void)store_->AppendEvent(&e);
    }
  }
  const std::string phase = j.progress.phase.empty() ? m.phase : j.progress.phase;
  switch (j.state) {
    case api::AgentJobState::kRunning: return;
    case api::AgentJobState::kSucceeded:
      RefreshHost(m.target_host);
      if (!m.plan_id.empty()) (void)RefreshPlanState(m.plan_id);
      Wake();
      return;
    case api::AgentJobState::kCancelled:
      return FinishCold(m.id, MigrationState::kCancelled,
                        Status::Cancelled(j.error.ok() ? "cancelled" : j.error.message()),
                        ColdRestorePowerAfter(phase));
    case api::AgentJobState::kFailed:
      return ColdAttemptFailed(m.id, j.error.ok() ? Status::Internal("failed") : j.error, phase);
  }
}

void Ferryd::ColdAttemptFailed(const std::string& id, const Status& error,
                               const std::string& phase) {
  bool retry = false;
  int attempt = 1;
  bool cancelling = false;
  Status s = Mutate(id, [&](MigrationRecord& r) -> std::optional<EventRecord> {
    if (r.state != MigrationState::kRunning && r.state != MigrationState::kCancelling) {
      return std::nullopt;
    }
    json pj = ParseOr(r.progress_json, json::object());
    attempt = pj.value("attempt", 1);
    cancelling = r.state == MigrationState::kCancelling;
    if (cancelling || attempt >= kColdMaxAttempts || !ColdFailureIsRetryable(error.code(), phase)) {
      return std::nullopt;
    }
    retry = true;
    int64_t delay = config_.cold_retry_delay_ms;
    pj["retry_at_ms"] = NowMs() + delay;
    r.progress_json = pj.dump();
    r.phase = "retrying";
    return MakeEvent("warning", "attempt " + std::to_string(attempt) + " failed in " +
                                    (phase.empty() ? "starting" : phase) + ": " + error.ToString() +
                                    "; attempt " + std::to_string(attempt + 1) + " in " +
                                    std::to_string(delay / 1000) + " s");
  });
  if (!s.ok() || retry) return;
  std::string why = error.message();
  if (attempt > 1)
    why = "attempt " + std::to_string(attempt) + " of " + std::to_string(kColdMaxAttempts) + ": " +
          why;
  // A job that ends (however) after the user asked to cancel ends the migration cancelled;
  // the message says how the job ended.
  FinishCold(id, cancelling ? MigrationState::kCancelled : MigrationState::kFailed,
             Status(cancelling ? ErrorCode::kCancelled : error.code(), why),
             ColdRestorePowerAfter(phase));
}

void Ferryd::FinishCold(const std::string& id, MigrationState state, const Status& why,
                        bool restore_power) {
  std::string plan_id;
  std::string target;
  bool ended_now = false;
  Status s = Mutate(id, [&](MigrationRecord& r) -> std::optional<EventRecord> {
    if (IsFinal(r.state)) return std::nullopt;  // someone else ended it (or it completed)
    ended_now = true;
    plan_id = r.plan_id;
    target = r.target_host;
    r.state = state;
    r.error_code = std::string(api::ErrorCodeWireName(why.code()));
    r.error_message = why.message();
    json pj = ParseOr(r.progress_json, json::object());
    pj.erase("retry_at_ms");
    pj["export_close"] = {{"restore_power", restore_power}, {"done", false}};
    pj["location"] = restore_power ? r.source_host : r.target_host;
    r.progress_json = pj.dump();
    std::string what = state == MigrationState::kCancelled ? "cancelled: " : "failed: ";
    return MakeEvent(state == MigrationState::kCancelled ? "state" : "error",
                     what + why.message() +
                         (restore_power ? "; the source VM is powered on again if it ran"
                                        : "; the source VM stays shut off (the target VM may "
                                          "have started)"));
  });
  if (!s.ok() || !ended_now) return;
  {
    std::lock_guard<std::mutex> lock(closes_mu_);
    pending_closes_.insert(id);
  }
  CloseExportNow(id);
  if (!target.empty()) RefreshHost(target);
  if (!plan_id.empty()) (void)RefreshPlanState(plan_id);
  Wake();
}

bool Ferryd::CloseExportNow(const std::string& id) {
  std::lock_guard<std::mutex> call_lock(close_call_mu_);
  auto done = [&] {
    std::lock_guard<std::mutex> lock(closes_mu_);
    pending_closes_.erase(id);
    return true;
  };
  Result<MigrationRecord> m = store_->GetMigration(id);
  if (!m.ok()) return done();
  json close = ParseOr(m->progress_json, json::object()).value("export_close", json());
  // Only a migration that ended without success has an export to close (a completed one's
  // job closed it, and restoring power there would run the VM twice).
  if (!IsFinal(m->state) || m->state == MigrationState::kCompleted || !close.is_object() ||
      !close.contains("restore_power") || close.value("done", false)) {
    return done();
  }
  const bool restore = close.value("restore_power", false);
  std::shared_ptr<AgentLink> link = LinkFor(m->source_host);
  Result<agent::ExportInfo> r = link ? link->CloseExport(id, restore)
                                     : Result<agent::ExportInfo>(Status::NotFound(
                                           "host " + m->source_host + " is no longer registered"));
  if (r.ok() || r.status().code() == ErrorCode::kNotFound) {
    std::string what =
        r.ok() ? "export " + id + " closed on " + m->source_host +
                     (restore ? " (the source VM is started again if it ran before)" : "")
               : "no export to close on " + m->source_host + " (" + r.status().message() + ")";
    (void)Mutate(id, [&](MigrationRecord& rec) -> std::optional<EventRecord> {
      json pj = ParseOr(rec.progress_json, json::object());
      pj["export_close"]["done"] = true;
      pj["export_close"].erase("error");
      rec.progress_json = pj.dump();
      return MakeEvent("info", what);
    });
    return done();
  }
  std::string err = r.status().ToString();
  if (close.value("error", "") != err) {
    (void)Mutate(id, [&](MigrationRecord& rec) -> std::optional<EventRecord> {
      json pj = ParseOr(rec.progress_json, json::object());
      pj["export_close"]["error"] = err;
      rec.progress_json = pj.dump();
      return MakeEvent("warning", "closing export " + id + " on " + rec.source_host +
                                      " failed: " + err + "; trying again");
    });
  }
  return false;
}

void Ferryd::CloseExports() {
  std::set<std::string> ids;
  {
    std::lock_guard<std::mutex> lock(closes_mu_);
    ids = pending_closes_;
  }
  for (const std::string& id : ids) CloseExportNow(id);
}

Result<MigrationRecord> Ferryd::CancelCold(const MigrationRecord& m) {
  FERRY_TRY(Mutate(m.id, [](MigrationRecord& r) -> std::optional<EventRecord> {
    if (r.state != MigrationState::kRunning) return std::nullopt;
    r.state = MigrationState::kCancelling;
    return MakeEvent("state", "cancelling");
  }));
  FERRY_ASSIGN_OR_RETURN(MigrationRecord now, store_->GetMigration(m.id));
  if (now.state != MigrationState::kCancelling) return now;
  json p = ParseOr(now.progress_json, json::object());
  if (p.contains("retry_at_ms")) {
    FinishCold(m.id, MigrationState::kCancelled,
               Status::Cancelled("cancelled by the user between two attempts"), true);
    return store_->GetMigration(m.id);
  }
  std::string job_id = p.value("job_id", m.id);
  std::shared_ptr<AgentLink> link = LinkFor(now.target_host);
  Result<api::AgentJob> c =
      link ? link->CancelJob(job_id) : Result<api::AgentJob>(Status::Io("no link"));
  if (!c.ok() && c.status().code() == ErrorCode::kIo && BeforeDefine(now.phase)) {
    // The target agent cannot be asked: the source is made whole now; the job, if it still
    // runs, loses its export and ends.
    FinishCold(m.id, MigrationState::kCancelled,
               Status::Cancelled("cancelled by the user; " + now.target_host +
                                 "'s agent cannot be reached (" + c.status().ToString() + ")"),
               true);
  }
  Wake();
  return store_->GetMigration(m.id);
}

}  // namespace ferry::server
