// JSON mapping of the agent API's types (see agent_json.h). nlohmann::json stays in this file.
#include "api/agent_json.h"

#include <functional>
#include <limits>
#include <nlohmann/json.hpp>
#include <utility>

#include "api/errors.h"
#include "disk/engine/chunk_hash.h"
#include "sources/vm_description.h"

namespace ferry::api {

namespace {

using Json = nlohmann::json;             // parsed input (find / type checks)
using OutJson = nlohmann::ordered_json;  // output keeps the documented field order

using agent::JobProgress;
using agent::JobResult;
using agent::MigrationJobSpec;
using agent::MigrationKind;
using hypervisor::CpuCheck;
using hypervisor::CpuCompatibility;
using hypervisor::Firmware;
using hypervisor::HostFacts;
using hypervisor::NetworkInfo;
using hypervisor::PoolInfo;
using hypervisor::VmDisk;
using hypervisor::VmInfo;
using hypervisor::VmNic;
using hypervisor::VmState;

// Ranges for numbers that come from peers: anything outside is an error, not a clamp.
constexpr int64_t kMaxDurationMs = int64_t{366} * 24 * 3600 * 1000;  // a year
constexpr int64_t kMaxTimestampMs = 32503680000000;                  // year 3000
constexpr int kMaxCpus = 1 << 20;
constexpr int kMaxVcpus = 1 << 14;
constexpr size_t kMaxDevices = 1024;  // disks or NICs of one VM, moved disks of a job
constexpr size_t kMaxNotes = 1000;
constexpr size_t kMaxSmallList = 64;  // domain types
constexpr int kMaxNestingDepth = 64;
constexpr int kRecordVersion = 1;

struct KindName {
  MigrationKind kind;
  std::string_view name;
};
constexpr KindName kKindNames[] = {
    {MigrationKind::kLive, "live"},
    {MigrationKind::kLiveStorage, "live-storage"},
    {MigrationKind::kLiveVsm, "live-vsm"},
    {MigrationKind::kQuick, "quick"},
    {MigrationKind::kReregister, "reregister"},
    {MigrationKind::kCold, "cold"},
};

constexpr MigrationKind kKinds[] = {MigrationKind::kLive,       MigrationKind::kLiveStorage,
                                    MigrationKind::kLiveVsm,    MigrationKind::kQuick,
                                    MigrationKind::kReregister, MigrationKind::kCold};
constexpr VmState kVmStates[] = {VmState::kNoState, VmState::kRunning,     VmState::kBlocked,
                                 VmState::kPaused,  VmState::kShutdown,    VmState::kShutoff,
                                 VmState::kCrashed, VmState::kPmSuspended, VmState::kUnknown};
constexpr AgentJobState kJobStates[] = {AgentJobState::kRunning, AgentJobState::kSucceeded,
                                        AgentJobState::kFailed, AgentJobState::kCancelled};
constexpr CpuCompatibility kCpuResults[] = {
    CpuCompatibility::kIdentical, CpuCompatibility::kSuperset, CpuCompatibility::kIncompatible,
    CpuCompatibility::kError};

// ---- Reading ---------------------------------------------------------------------------

enum class Need { kRequired, kOptional };

std::string Join(const std::string& path, std::string_view key) {
  return path.empty() ? std::string(key) : path + "." + std::string(key);
}
std::string Index(const std::string& path, size_t i) {
  return path + "[" + std::to_string(i) + "]";
}
Status Bad(const std::string& path, std::string_view what) {
  return Status::InvalidArgument((path.empty() ? std::string("(document)") : path) + ": " +
                                 std::string(what));
}

// Nesting depth of brackets outside strings; nlohmann parses iteratively, but a depth cap
// keeps every later walk (and error message) cheap and bounded.
bool NestingWithin(std::string_view text, int max_depth) {
  int depth = 0;
  bool in_string = false;
  bool escaped = false;
  for (char c : text) {
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > max_depth) return false;
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return true;
}

Status Parse(std::string_view text, Json* out) {
  if (!NestingWithin(text, kMaxNestingDepth)) {
    return Bad("", "nested deeper than " + std::to_string(kMaxNestingDepth) + " levels");
  }
  try {
    *out = Json::parse(text.begin(), text.end());
  } catch (const Json::exception& e) {
    return Status::InvalidArgument(std::string("not valid JSON: ") + e.what());
  }
  if (!out->is_object()) return Bad("", "expected a JSON object");
  return Status::Ok();
}

// The member `key` of object `obj`, or nullptr if it is absent or null and optional.
Result<const Json*> Member(const Json& obj, const std::string& path, std::string_view key,
                           Need need) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) {
    if (need == Need::kRequired) return Bad(Join(path, key), "missing required field");
    return static_cast<const Json*>(nullptr);
  }
  return &*it;
}

Status ReadString(const Json& obj, const std::string& path, std::string_view key, std::string* out,
                  Need need = Need::kOptional) {
  FERRY_ASSIGN_OR_RETURN(const Json* j, Member(obj, path, key, need));
  if (j == nullptr) return Status::Ok();
  if (!j->is_string()) return Bad(Join(path, key), "expected a string");
  *out = j->get<std::string>();
  return Status::Ok();
}

Status ReadBool(const Json& obj, const std::string& path, std::string_view key, bool* out,
                Need need = Need::kOptional) {
  FERRY_ASSIGN_OR_RETURN(const Json* j, Member(obj, path, key, need));
  if (j == nullptr) return Status::Ok();
  if (!j->is_boolean()) return Bad(Join(path, key), "expected true or false");
  *out = j->get<bool>();
  return Status::Ok();
}

Status ReadU64(const Json& obj, const std::string& path, std::string_view key, uint64_t* out,
               Need need = Need::kOptional) {
  FERRY_ASSIGN_OR_RETURN(const Json* j, Member(obj, path, key, need));
  if (j == nullptr) return Status::Ok();
  if (!j->is_number_unsigned()) return Bad(Join(path, key), "expected an unsigned integer");
  *out = j->get<uint64_t>();
  return Status::Ok();
}

Status ReadI64(const Json& obj, const std::string& path, std::string_view key, int64_t* out,
               int64_t min, int64_t max, Need need = Need::kOptional) {
  FERRY_ASSIGN_OR_RETURN(const Json* j, Member(obj, path, key, need));
  if (j == nullptr) return Status::Ok();
  if (!j->is_number_integer()) return Bad(Join(path, key), "expected an integer");
  bool in_range;
  int64_t value = 0;
  if (j->is_number_unsigned()) {
    const uint64_t u = j->get<uint64_t>();
    in_range = u <= static_cast<uint64_t>(max);
    value = in_range ? static_cast<int64_t>(u) : 0;
  } else {
    value = j->get<int64_t>();
    in_range = value >= min && value <= max;
  }
  if (!in_range) {
    return Bad(Join(path, key),
               "out of range (" + std::to_string(min) + " to " + std::to_string(max) + ")");
  }
  *out = value;
  return Status::Ok();
}

Status ReadInt(const Json& obj, const std::string& path, std::string_view key, int* out, int min,
               int max, Need need = Need::kOptional) {
  int64_t v = *out;
  FERRY_TRY(ReadI64(obj, path, key, &v, min, max, need));
  *out = static_cast<int>(v);
  return Status::Ok();
}

using ItemReader = std::function<Status(const Json& item, const std::string& item_path)>;

// Calls `read` for each element of the array `key` (absent + optional = no elements).
Status ReadArray(const Json& obj, const std::string& path, std::string_view key, size_t max_items,
                 const ItemReader& read, Need need = Need::kOptional) {
  FERRY_ASSIGN_OR_RETURN(const Json* j, Member(obj, path, key, need));
  if (j == nullptr) return Status::Ok();
  const std::string here = Join(path, key);
  if (!j->is_array()) return Bad(here, "expected an array");
  if (j->size() > max_items) {
    return Bad(here, "too many items (" + std::to_string(j->size()) + ", at most " +
                         std::to_string(max_items) + ")");
  }
  for (size_t i = 0; i < j->size(); ++i) FERRY_TRY(read((*j)[i], Index(here, i)));
  return Status::Ok();
}

// Calls `read` on the object `key` (absent + optional = not called).
Status ReadObject(const Json& obj, const std::string& path, std::string_view key,
                  const ItemReader& read, Need need = Need::kOptional, bool* present = nullptr) {
  FERRY_ASSIGN_OR_RETURN(const Json* j, Member(obj, path, key, need));
  if (present != nullptr) *present = j != nullptr;
  if (j == nullptr) return Status::Ok();
  const std::string here = Join(path, key);
  if (!j->is_object()) return Bad(here, "expected an object");
  return read(*j, here);
}

Status ExpectObject(const Json& j, const std::string& path) {
  if (!j.is_object()) return Bad(path, "expected an object");
  return Status::Ok();
}

Status ReadStringList(const Json& obj, const std::string& path, std::string_view key,
                      size_t max_items, std::vector<std::string>* out) {
  out->clear();
  return ReadArray(obj, path, key, max_items, [&](const Json& item, const std::string& p) {
    if (!item.is_string()) return Bad(p, "expected a string");
    out->push_back(item.get<std::string>());
    return Status::Ok();
  });
}

// Reads an enum by name; `names` lists every value with its wire name.
template <typename E, typename NameFn, size_t N>
Status ReadEnum(const Json& obj, const std::string& path, std::string_view key, E* out,
                const E (&values)[N], NameFn name_of, Need need) {
  std::string text;
  bool had = false;
  {
    FERRY_ASSIGN_OR_RETURN(const Json* j, Member(obj, path, key, need));
    had = j != nullptr;
  }
  if (!had) return Status::Ok();
  FERRY_TRY(ReadString(obj, path, key, &text, need));
  std::string allowed;
  for (E v : values) {
    if (name_of(v) == text) {
      *out = v;
      return Status::Ok();
    }
    if (!allowed.empty()) allowed += ", ";
    allowed += std::string(name_of(v));
  }
  return Bad(Join(path, key),
             "unknown value \"" + text.substr(0, 64) + "\" (expected one of " + allowed + ")");
}

// ---- The types: writing ----------------------------------------------------------------

OutJson J(const HostFacts& f) {
  return {{"hostname", f.hostname},
          {"uri", f.uri},
          {"cpu_model", f.cpu_model},
          {"cpu_arch", f.cpu_arch},
          {"cpus", f.cpus},
          {"memory_bytes", f.memory_bytes},
          {"free_memory_bytes", f.free_memory_bytes},
          {"libvirt_version", f.libvirt_version},
          {"hypervisor", f.hypervisor},
          {"domain_types", f.domain_types}};
}

OutJson J(const VmDisk& d) {
  return {{"target", d.target},
          {"bus", d.bus},
          {"device", d.device},
          {"type", d.type},
          {"format", d.format},
          {"source_path", d.source_path},
          {"pool", d.pool},
          {"volume", d.volume},
          {"capacity_bytes", d.capacity_bytes},
          {"allocation_bytes", d.allocation_bytes}};
}

OutJson J(const VmNic& n) {
  return {{"mac", n.mac},
          {"model", n.model},
          {"network", n.network},
          {"type", n.type},
          {"bridge", n.bridge}};
}

OutJson J(const VmInfo& vm) {
  OutJson disks = OutJson::array();
  for (const VmDisk& d : vm.disks) disks.push_back(J(d));
  OutJson nics = OutJson::array();
  for (const VmNic& n : vm.nics) nics.push_back(J(n));
  return {{"name", vm.name},
          {"uuid", vm.uuid},
          {"state", std::string(hypervisor::VmStateName(vm.state))},
          {"persistent", vm.persistent},
          {"vcpus", vm.vcpus},
          {"max_vcpus", vm.max_vcpus},
          {"memory_bytes", vm.memory_bytes},
          {"machine_type", vm.machine_type},
          {"arch", vm.arch},
          {"firmware", std::string(hypervisor::FirmwareName(vm.firmware))},
          {"domain_type", vm.domain_type},
          {"disks", std::move(disks)},
          {"nics", std::move(nics)}};
}

OutJson J(const PoolInfo& p) {
  return {{"name", p.name},
          {"type", p.type},
          {"path", p.path},
          {"capacity_bytes", p.capacity_bytes},
          {"allocation_bytes", p.allocation_bytes},
          {"available_bytes", p.available_bytes},
          {"active", p.active}};
}

OutJson J(const NetworkInfo& n) {
  return {{"name", n.name},
          {"active", n.active},
          {"bridge", n.bridge},
          {"forward_mode", n.forward_mode}};
}

// Defined with the export types below; a cold job spec embeds its export's spec.
OutJson J(const agent::ExportSpec& s);
Status Read(const Json& o, const std::string& p, agent::ExportSpec* s);

OutJson J(const plan::TargetVm& vm) {
  OutJson disks = OutJson::array();
  for (const plan::TargetDisk& d : vm.disks) {
    disks.push_back({{"source_id", d.source_id},
                     {"pool", d.pool},
                     {"file_name", d.file_name},
                     {"format", d.format},
                     {"subformat", d.subformat},
                     {"capacity_bytes", d.capacity_bytes},
                     {"bus", d.bus},
                     {"dev", d.dev}});
  }
  OutJson nics = OutJson::array();
  for (const plan::TargetNic& n : vm.nics) {
    nics.push_back(
        {{"source_id", n.source_id}, {"network", n.network}, {"mac", n.mac}, {"model", n.model}});
  }
  return {
      {"name", vm.name},
      {"vcpus", vm.vcpus},
      {"memory_bytes", vm.memory_bytes},
      {"machine", vm.machine},
      {"firmware", vm.firmware},
      {"arch", vm.arch},
      {"direct_boot",
       {{"kernel", vm.direct_boot.kernel},
        {"initrd", vm.direct_boot.initrd},
        {"cmdline", vm.direct_boot.cmdline}}},
      {"disks", std::move(disks)},
      {"nics", std::move(nics)},
      {"start", vm.start},
      {"delete_disks_with_vm", vm.delete_disks_with_vm},
      {"boot_check", {{"marker", vm.boot_check.marker}, {"timeout_ms", vm.boot_check.timeout_ms}}}};
}

std::string_view EndpointTypeName(plan::EndpointType t) {
  return t == plan::EndpointType::kShare ? "share" : "kvm";
}
constexpr plan::EndpointType kEndpointTypes[] = {plan::EndpointType::kKvm,
                                                 plan::EndpointType::kShare};

OutJson J(const agent::ColdJobSpec& c) {
  return {
      {"source", {{"host_id", c.source.host_id}, {"url", c.source.url}, {"token", c.source.token}}},
      {"export_spec", J(c.export_spec)},
      {"target_type", std::string(EndpointTypeName(c.target_type))},
      {"target_share", c.target_share},
      {"vm", J(c.vm)},
      {"plan_name", c.plan_name},
      {"verify", std::string(plan::VerifyModeName(c.verify))},
      {"deploy_auto", c.deploy_auto},
      {"checkpoint_bytes", c.checkpoint_bytes},
      {"source_retry_timeout_ms", c.source_retry_timeout_ms},
      {"domain_type", c.domain_type}};
}

OutJson J(const MigrationJobSpec& s) {
  OutJson out = {{"id", s.id},
                 {"kind", std::string(MigrationKindWireName(s.kind))},
                 {"vm", s.vm},
                 {"source_uri", s.source_uri},
                 {"target_uri", s.target_uri},
                 {"target_migration_uri", s.target_migration_uri},
                 {"target_pool", s.target_pool},
                 {"target_format", s.target_format},
                 {"max_downtime_ms", s.max_downtime_ms},
                 {"bandwidth", s.bandwidth},
                 {"allow_postcopy", s.allow_postcopy},
                 {"allow_auto_converge", s.allow_auto_converge},
                 {"timeout_ms", s.timeout_ms}};
  if (s.kind == MigrationKind::kCold) out["cold"] = J(s.cold);
  return out;
}

OutJson J(const JobProgress& p) {
  OutJson disks = OutJson::array();
  for (const agent::DiskProgress& d : p.disks) {
    disks.push_back({{"id", d.id},
                     {"state", d.state},
                     {"bytes_total", d.bytes_total},
                     {"bytes_done", d.bytes_done},
                     {"checkpointed", d.checkpointed},
                     {"read_bytes", d.read_bytes}});
  }
  return {{"phase", p.phase},
          {"bytes_total", p.bytes_total},
          {"bytes_done", p.bytes_done},
          {"bytes_remaining", p.bytes_remaining},
          {"rate", p.rate},
          {"eta_ms", p.eta_ms},
          {"dirty_rate", p.dirty_rate},
          {"iteration", p.iteration},
          {"downtime_limit_ms", p.downtime_limit_ms},
          {"throttle_percent", p.throttle_percent},
          {"postcopy", p.postcopy},
          {"disks", std::move(disks)}};
}

OutJson J(const JobResult& r) {
  OutJson disks = OutJson::array();
  for (const JobResult::MovedDisk& d : r.disks) {
    disks.push_back({{"disk", d.disk},
                     {"from", d.from},
                     {"to", d.to},
                     {"verified", d.verified},
                     {"bytes_read", d.bytes_read},
                     {"resumed_from", d.resumed_from},
                     {"recopied_bytes", d.recopied_bytes}});
  }
  return {{"total_ms", r.total_ms},
          {"bytes_sent", r.bytes_sent},
          {"qemu_downtime_ms", r.qemu_downtime_ms},
          {"guest_downtime_ms", r.guest_downtime_ms},
          {"notes", r.notes},
          {"disks", std::move(disks)},
          {"defined_vm", r.defined_vm},
          {"boot",
           {{"checked", r.boot.checked},
            {"ok", r.boot.ok},
            {"elapsed_ms", r.boot.elapsed_ms},
            {"message", r.boot.message}}}};
}

OutJson J(const AgentJob& job) {
  OutJson events = OutJson::array();
  for (const AgentJobEvent& e : job.events) {
    events.push_back({{"at_ms", e.at_ms}, {"kind", e.kind}, {"message", e.message}});
  }
  OutJson error = nullptr;
  if (!job.error.ok()) {
    error = {{"code", std::string(ErrorCodeWireName(job.error.code()))},
             {"message", job.error.message()}};
  }
  return {{"id", job.id},
          {"kind", std::string(MigrationKindWireName(job.kind))},
          {"vm", job.vm},
          {"state", std::string(AgentJobStateName(job.state))},
          {"progress", J(job.progress)},
          {"result", job.result ? J(*job.result) : OutJson(nullptr)},
          {"error", std::move(error)},
          {"events", std::move(events)},
          {"started_at_ms", job.started_at_ms},
          {"finished_at_ms", job.finished_at_ms}};
}

// ---- The types: reading ----------------------------------------------------------------

Status Read(const Json& o, const std::string& p, HostFacts* f) {
  FERRY_TRY(ExpectObject(o, p));
  FERRY_TRY(ReadString(o, p, "hostname", &f->hostname, Need::kRequired));
  FERRY_TRY(ReadString(o, p, "uri", &f->uri));
  FERRY_TRY(ReadString(o, p, "cpu_model", &f->cpu_model));
  FERRY_TRY(ReadString(o, p, "cpu_arch", &f->cpu_arch));
  FERRY_TRY(ReadInt(o, p, "cpus", &f->cpus, 0, kMaxCpus));
  FERRY_TRY(ReadU64(o, p, "memory_bytes", &f->memory_bytes));
  FERRY_TRY(ReadU64(o, p, "free_memory_bytes", &f->free_memory_bytes));
  FERRY_TRY(ReadString(o, p, "libvirt_version", &f->libvirt_version));
  FERRY_TRY(ReadString(o, p, "hypervisor", &f->hypervisor));
  return ReadStringList(o, p, "domain_types", kMaxSmallList, &f->domain_types);
}

Status Read(const Json& o, const std::string& p, VmDisk* d) {
  FERRY_TRY(ExpectObject(o, p));
  FERRY_TRY(ReadString(o, p, "target", &d->target, Need::kRequired));
  FERRY_TRY(ReadString(o, p, "bus", &d->bus));
  FERRY_TRY(ReadString(o, p, "device", &d->device));
  FERRY_TRY(ReadString(o, p, "type", &d->type));
  FERRY_TRY(ReadString(o, p, "format", &d->format));
  FERRY_TRY(ReadString(o, p, "source_path", &d->source_path));
  FERRY_TRY(ReadString(o, p, "pool", &d->pool));
  FERRY_TRY(ReadString(o, p, "volume", &d->volume));
  FERRY_TRY(ReadU64(o, p, "capacity_bytes", &d->capacity_bytes));
  return ReadU64(o, p, "allocation_bytes", &d->allocation_bytes);
}

Status Read(const Json& o, const std::string& p, VmNic* n) {
  FERRY_TRY(ExpectObject(o, p));
  FERRY_TRY(ReadString(o, p, "mac", &n->mac, Need::kRequired));
  FERRY_TRY(ReadString(o, p, "model", &n->model));
  FERRY_TRY(ReadString(o, p, "network", &n->network));
  FERRY_TRY(ReadString(o, p, "type", &n->type));
  return ReadString(o, p, "bridge", &n->bridge);
}

constexpr Firmware kFirmwares[] = {Firmware::kBios, Firmware::kUefi};

Status Read(const Json& o, const std::string& p, VmInfo* vm) {
  FERRY_TRY(ExpectObject(o, p));
  FERRY_TRY(ReadString(o, p, "name", &vm->name, Need::kRequired));
  FERRY_TRY(ReadString(o, p, "uuid", &vm->uuid));
  FERRY_TRY(
      ReadEnum(o, p, "state", &vm->state, kVmStates, hypervisor::VmStateName, Need::kRequired));
  FERRY_TRY(ReadBool(o, p, "persistent", &vm->persistent));
  FERRY_TRY(ReadInt(o, p, "vcpus", &vm->vcpus, 0, kMaxVcpus));
  FERRY_TRY(ReadInt(o, p, "max_vcpus", &vm->max_vcpus, 0, kMaxVcpus));
  FERRY_TRY(ReadU64(o, p, "memory_bytes", &vm->memory_bytes));
  FERRY_TRY(ReadString(o, p, "machine_type", &vm->machine_type));
  FERRY_TRY(ReadString(o, p, "arch", &vm->arch));
  FERRY_TRY(ReadEnum(o, p, "firmware", &vm->firmware, kFirmwares, hypervisor::FirmwareName,
                     Need::kOptional));
  FERRY_TRY(ReadString(o, p, "domain_type", &vm->domain_type));
  vm->disks.clear();
  FERRY_TRY(ReadArray(o, p, "disks", kMaxDevices, [&](const Json& item, const std::string& ip) {
    VmDisk d;
    FERRY_TRY(Read(item, ip, &d));
    vm->disks.push_back(std::move(d));
    return Status::Ok();
  }));
  vm->nics.clear();
  return ReadArray(o, p, "nics", kMaxDevices, [&](const Json& item, const std::string& ip) {
    VmNic n;
    FERRY_TRY(Read(item, ip, &n));
    vm->nics.push_back(std::move(n));
    return Status::Ok();
  });
}

Status Read(const Json& o, const std::string& p, PoolInfo* pool) {
  FERRY_TRY(ExpectObject(o, p));
  FERRY_TRY(ReadString(o, p, "name", &pool->name, Need::kRequired));
  FERRY_TRY(ReadString(o, p, "type", &pool->type));
  FERRY_TRY(ReadString(o, p, "path", &pool->path));
  FERRY_TRY(ReadU64(o, p, "capacity_bytes", &pool->capacity_bytes));
  FERRY_TRY(ReadU64(o, p, "allocation_bytes", &pool->allocation_bytes));
  FERRY_TRY(ReadU64(o, p, "available_bytes", &pool->available_bytes));
  return ReadBool(o, p, "active", &pool->active);
}

Status Read(const Json& o, const std::string& p, NetworkInfo* n) {
  FERRY_TRY(ExpectObject(o, p));
  FERRY_TRY(ReadString(o, p, "name", &n->name, Need::kRequired));
  FERRY_TRY(ReadBool(o, p, "active", &n->active));
  FERRY_TRY(ReadString(o, p, "bridge", &n->bridge));
  return ReadString(o, p, "forward_mode", &n->forward_mode);
}

Status Read(const Json& o, const std::string& p, AgentInventory* out) {
  hypervisor::Inventory& inv = out->inventory;
  FERRY_TRY(ReadObject(
      o, p, "host",
      [&](const Json& h, const std::string& hp) {
        FERRY_TRY(ReadString(h, hp, "migration_uri", &out->migration_uri));
        return Read(h, hp, &inv.host);
      },
      Need::kRequired));
  inv.vms.clear();
  FERRY_TRY(ReadArray(o, p, "vms", kMaxJsonListItems, [&](const Json& i, const std::string& ip) {
    VmInfo vm;
    FERRY_TRY(Read(i, ip, &vm));
    inv.vms.push_back(std::move(vm));
    return Status::Ok();
  }));
  inv.pools.clear();
  FERRY_TRY(ReadArray(o, p, "pools", kMaxJsonListItems, [&](const Json& i, const std::string& ip) {
    PoolInfo pool;
    FERRY_TRY(Read(i, ip, &pool));
    inv.pools.push_back(std::move(pool));
    return Status::Ok();
  }));
  inv.networks.clear();
  return ReadArray(o, p, "networks", kMaxJsonListItems, [&](const Json& i, const std::string& ip) {
    NetworkInfo n;
    FERRY_TRY(Read(i, ip, &n));
    inv.networks.push_back(std::move(n));
    return Status::Ok();
  });
}

Status Read(const Json& o, const std::string& p, plan::TargetVm* vm) {
  FERRY_TRY(ExpectObject(o, p));
  FERRY_TRY(ReadString(o, p, "name", &vm->name, Need::kRequired));
  if (vm->name.empty()) return Bad(Join(p, "name"), "must not be empty");
  FERRY_TRY(ReadInt(o, p, "vcpus", &vm->vcpus, 0, kMaxVcpus));
  FERRY_TRY(ReadU64(o, p, "memory_bytes", &vm->memory_bytes));
  FERRY_TRY(ReadString(o, p, "machine", &vm->machine));
  FERRY_TRY(ReadString(o, p, "firmware", &vm->firmware));
  if (!vm->firmware.empty() && vm->firmware != "bios" && vm->firmware != "uefi") {
    return Bad(Join(p, "firmware"),
               "unknown value \"" + vm->firmware.substr(0, 64) + "\" (expected bios or uefi)");
  }
  FERRY_TRY(ReadString(o, p, "arch", &vm->arch));
  vm->direct_boot = {};
  FERRY_TRY(ReadObject(o, p, "direct_boot", [&](const Json& b, const std::string& bp) {
    FERRY_TRY(ReadString(b, bp, "kernel", &vm->direct_boot.kernel));
    FERRY_TRY(ReadString(b, bp, "initrd", &vm->direct_boot.initrd));
    return ReadString(b, bp, "cmdline", &vm->direct_boot.cmdline);
  }));
  vm->disks.clear();
  FERRY_TRY(ReadArray(o, p, "disks", kMaxDevices, [&](const Json& item, const std::string& ip) {
    FERRY_TRY(ExpectObject(item, ip));
    plan::TargetDisk d;
    FERRY_TRY(ReadString(item, ip, "source_id", &d.source_id, Need::kRequired));
    FERRY_TRY(ReadString(item, ip, "pool", &d.pool));
    FERRY_TRY(ReadString(item, ip, "file_name", &d.file_name, Need::kRequired));
    if (d.file_name.empty() || d.file_name[0] == '.' ||
        d.file_name.find('/') != std::string::npos) {
      return Bad(Join(ip, "file_name"),
                 "must be a plain file name (no '/', not starting with '.')");
    }
    FERRY_TRY(ReadString(item, ip, "format", &d.format));
    if (d.format != "qcow2" && d.format != "raw" && d.format != "vhdx" && d.format != "vhd") {
      return Bad(Join(ip, "format"), "unknown value \"" + d.format.substr(0, 64) +
                                         "\" (expected qcow2, raw, vhdx or vhd)");
    }
    FERRY_TRY(ReadString(item, ip, "subformat", &d.subformat));
    FERRY_TRY(ReadU64(item, ip, "capacity_bytes", &d.capacity_bytes));
    FERRY_TRY(ReadString(item, ip, "bus", &d.bus));
    FERRY_TRY(ReadString(item, ip, "dev", &d.dev));
    vm->disks.push_back(std::move(d));
    return Status::Ok();
  }));
  vm->nics.clear();
  FERRY_TRY(ReadArray(o, p, "nics", kMaxDevices, [&](const Json& item, const std::string& ip) {
    FERRY_TRY(ExpectObject(item, ip));
    plan::TargetNic n;
    FERRY_TRY(ReadString(item, ip, "source_id", &n.source_id));
    FERRY_TRY(ReadString(item, ip, "network", &n.network, Need::kRequired));
    FERRY_TRY(ReadString(item, ip, "mac", &n.mac));
    FERRY_TRY(ReadString(item, ip, "model", &n.model));
    vm->nics.push_back(std::move(n));
    return Status::Ok();
  }));
  FERRY_TRY(ReadBool(o, p, "start", &vm->start));
  FERRY_TRY(ReadBool(o, p, "delete_disks_with_vm", &vm->delete_disks_with_vm));
  return ReadObject(o, p, "boot_check", [&](const Json& b, const std::string& bp) {
    FERRY_TRY(ReadString(b, bp, "marker", &vm->boot_check.marker));
    return ReadI64(b, bp, "timeout_ms", &vm->boot_check.timeout_ms, 0, kMaxDurationMs);
  });
}

Status Read(const Json& o, const std::string& p, agent::ColdJobSpec* c) {
  FERRY_TRY(ExpectObject(o, p));
  FERRY_TRY(ReadObject(
      o, p, "source",
      [&](const Json& s, const std::string& sp) {
        FERRY_TRY(ReadString(s, sp, "host_id", &c->source.host_id));
        FERRY_TRY(ReadString(s, sp, "url", &c->source.url, Need::kRequired));
        if (c->source.url.rfind("http://", 0) != 0 && c->source.url.rfind("https://", 0) != 0) {
          return Bad(Join(sp, "url"), "expected an http:// or https:// URL");
        }
        return ReadString(s, sp, "token", &c->source.token);
      },
      Need::kRequired));
  FERRY_TRY(ReadObject(
      o, p, "export_spec",
      [&](const Json& e, const std::string& ep) { return Read(e, ep, &c->export_spec); },
      Need::kRequired));
  FERRY_TRY(ReadEnum(o, p, "target_type", &c->target_type, kEndpointTypes, EndpointTypeName,
                     Need::kOptional));
  FERRY_TRY(ReadString(o, p, "target_share", &c->target_share));
  if (c->target_type == plan::EndpointType::kShare && c->target_share.empty()) {
    return Bad(Join(p, "target_share"), "required when target_type is share");
  }
  FERRY_TRY(ReadObject(
      o, p, "vm", [&](const Json& v, const std::string& vp) { return Read(v, vp, &c->vm); },
      Need::kRequired));
  FERRY_TRY(ReadString(o, p, "plan_name", &c->plan_name));
  if (auto v = o.find("verify"); v != o.end() && v->is_boolean()) {
    // A ferryd from before the verify modes sends a boolean.
    c->verify = v->get<bool>() ? plan::VerifyMode::kStream : plan::VerifyMode::kOff;
  } else {
    std::string mode(plan::VerifyModeName(c->verify));
    FERRY_TRY(ReadString(o, p, "verify", &mode));
    std::optional<plan::VerifyMode> m = plan::VerifyModeFromName(mode);
    if (!m) return Bad(Join(p, "verify"), "expected stream, readback or off");
    c->verify = *m;
  }
  FERRY_TRY(ReadBool(o, p, "deploy_auto", &c->deploy_auto));
  FERRY_TRY(ReadU64(o, p, "checkpoint_bytes", &c->checkpoint_bytes));
  if (c->checkpoint_bytes == 0) return Bad(Join(p, "checkpoint_bytes"), "must not be zero");
  FERRY_TRY(
      ReadI64(o, p, "source_retry_timeout_ms", &c->source_retry_timeout_ms, 0, kMaxDurationMs));
  FERRY_TRY(ReadString(o, p, "domain_type", &c->domain_type));
  if (!c->domain_type.empty() && c->domain_type != "kvm" && c->domain_type != "qemu") {
    return Bad(Join(p, "domain_type"), "unknown value \"" + c->domain_type.substr(0, 64) +
                                           "\" (expected \"\", kvm or qemu)");
  }
  return Status::Ok();
}

Status Read(const Json& o, const std::string& p, MigrationJobSpec* s) {
  FERRY_TRY(ExpectObject(o, p));
  FERRY_TRY(ReadString(o, p, "id", &s->id, Need::kRequired));
  if (!IsValidJobId(s->id)) {
    return Bad(Join(p, "id"), "must be 1-128 characters of [A-Za-z0-9._-], not starting with '.'");
  }
  FERRY_TRY(ReadEnum(o, p, "kind", &s->kind, kKinds, MigrationKindWireName, Need::kRequired));
  FERRY_TRY(ReadString(o, p, "vm", &s->vm, Need::kRequired));
  if (s->vm.empty()) return Bad(Join(p, "vm"), "must not be empty");
  FERRY_TRY(ReadString(o, p, "source_uri", &s->source_uri));
  FERRY_TRY(ReadString(o, p, "target_uri", &s->target_uri));
  FERRY_TRY(ReadString(o, p, "target_migration_uri", &s->target_migration_uri));
  FERRY_TRY(ReadString(o, p, "target_pool", &s->target_pool));
  FERRY_TRY(ReadString(o, p, "target_format", &s->target_format));
  if (!s->target_format.empty() && s->target_format != "qcow2" && s->target_format != "raw") {
    return Bad(Join(p, "target_format"), "unknown value \"" + s->target_format.substr(0, 64) +
                                             "\" (expected \"\", qcow2 or raw)");
  }
  FERRY_TRY(ReadI64(o, p, "max_downtime_ms", &s->max_downtime_ms, 0, kMaxDurationMs));
  FERRY_TRY(ReadU64(o, p, "bandwidth", &s->bandwidth));
  FERRY_TRY(ReadBool(o, p, "allow_postcopy", &s->allow_postcopy));
  FERRY_TRY(ReadBool(o, p, "allow_auto_converge", &s->allow_auto_converge));
  FERRY_TRY(ReadI64(o, p, "timeout_ms", &s->timeout_ms, 0, kMaxDurationMs));
  s->cold = agent::ColdJobSpec();
  if (s->kind != MigrationKind::kCold) return Status::Ok();
  return ReadObject(
      o, p, "cold", [&](const Json& c, const std::string& cp) { return Read(c, cp, &s->cold); },
      Need::kRequired);
}

Status Read(const Json& o, const std::string& p, JobProgress* g) {
  FERRY_TRY(ExpectObject(o, p));
  FERRY_TRY(ReadString(o, p, "phase", &g->phase));
  FERRY_TRY(ReadU64(o, p, "bytes_total", &g->bytes_total));
  FERRY_TRY(ReadU64(o, p, "bytes_done", &g->bytes_done));
  FERRY_TRY(ReadU64(o, p, "bytes_remaining", &g->bytes_remaining));
  FERRY_TRY(ReadU64(o, p, "rate", &g->rate));
  FERRY_TRY(ReadI64(o, p, "eta_ms", &g->eta_ms, -1, kMaxDurationMs));
  FERRY_TRY(ReadU64(o, p, "dirty_rate", &g->dirty_rate));
  FERRY_TRY(ReadU64(o, p, "iteration", &g->iteration));
  FERRY_TRY(ReadI64(o, p, "downtime_limit_ms", &g->downtime_limit_ms, 0, kMaxDurationMs));
  FERRY_TRY(ReadInt(o, p, "throttle_percent", &g->throttle_percent, 0, 100));
  FERRY_TRY(ReadBool(o, p, "postcopy", &g->postcopy));
  g->disks.clear();
  return ReadArray(o, p, "disks", kMaxDevices, [&](const Json& item, const std::string& ip) {
    FERRY_TRY(ExpectObject(item, ip));
    agent::DiskProgress d;
    FERRY_TRY(ReadString(item, ip, "id", &d.id, Need::kRequired));
    FERRY_TRY(ReadString(item, ip, "state", &d.state));
    FERRY_TRY(ReadU64(item, ip, "bytes_total", &d.bytes_total));
    FERRY_TRY(ReadU64(item, ip, "bytes_done", &d.bytes_done));
    FERRY_TRY(ReadU64(item, ip, "checkpointed", &d.checkpointed));
    FERRY_TRY(ReadU64(item, ip, "read_bytes", &d.read_bytes));
    g->disks.push_back(std::move(d));
    return Status::Ok();
  });
}

Status Read(const Json& o, const std::string& p, JobResult* r) {
  FERRY_TRY(ExpectObject(o, p));
  FERRY_TRY(ReadI64(o, p, "total_ms", &r->total_ms, 0, kMaxDurationMs));
  FERRY_TRY(ReadU64(o, p, "bytes_sent", &r->bytes_sent));
  FERRY_TRY(ReadI64(o, p, "qemu_downtime_ms", &r->qemu_downtime_ms, -1, kMaxDurationMs));
  FERRY_TRY(ReadI64(o, p, "guest_downtime_ms", &r->guest_downtime_ms, -1, kMaxDurationMs));
  FERRY_TRY(ReadStringList(o, p, "notes", kMaxNotes, &r->notes));
  r->disks.clear();
  FERRY_TRY(ReadArray(o, p, "disks", kMaxDevices, [&](const Json& item, const std::string& ip) {
    FERRY_TRY(ExpectObject(item, ip));
    JobResult::MovedDisk d;
    FERRY_TRY(ReadString(item, ip, "disk", &d.disk, Need::kRequired));
    FERRY_TRY(ReadString(item, ip, "from", &d.from));
    FERRY_TRY(ReadString(item, ip, "to", &d.to));
    FERRY_TRY(ReadBool(item, ip, "verified", &d.verified));
    FERRY_TRY(ReadU64(item, ip, "bytes_read", &d.bytes_read));
    FERRY_TRY(ReadU64(item, ip, "resumed_from", &d.resumed_from));
    FERRY_TRY(ReadU64(item, ip, "recopied_bytes", &d.recopied_bytes));
    r->disks.push_back(std::move(d));
    return Status::Ok();
  }));
  FERRY_TRY(ReadString(o, p, "defined_vm", &r->defined_vm));
  r->boot = {};
  return ReadObject(o, p, "boot", [&](const Json& b, const std::string& bp) {
    FERRY_TRY(ReadBool(b, bp, "checked", &r->boot.checked));
    FERRY_TRY(ReadBool(b, bp, "ok", &r->boot.ok));
    FERRY_TRY(ReadI64(b, bp, "elapsed_ms", &r->boot.elapsed_ms, -1, kMaxDurationMs));
    return ReadString(b, bp, "message", &r->boot.message);
  });
}

Status ReadError(const Json& o, const std::string& p, Status* out) {
  FERRY_TRY(ExpectObject(o, p));
  std::string code;
  std::string message;
  FERRY_TRY(ReadString(o, p, "code", &code, Need::kRequired));
  FERRY_TRY(ReadString(o, p, "message", &message));
  const ErrorCode ec = ErrorCodeFromWireName(code);
  if (ec == ErrorCode::kOk || ErrorCodeWireName(ec) != code) {
    return Bad(Join(p, "code"), "unknown error code \"" + code.substr(0, 64) + "\"");
  }
  *out = Status(ec, std::move(message));
  return Status::Ok();
}

Status Read(const Json& o, const std::string& p, AgentJob* job) {
  FERRY_TRY(ExpectObject(o, p));
  FERRY_TRY(ReadString(o, p, "id", &job->id, Need::kRequired));
  if (!IsValidJobId(job->id)) {
    return Bad(Join(p, "id"), "must be 1-128 characters of [A-Za-z0-9._-], not starting with '.'");
  }
  FERRY_TRY(ReadEnum(o, p, "kind", &job->kind, kKinds, MigrationKindWireName, Need::kRequired));
  FERRY_TRY(ReadString(o, p, "vm", &job->vm, Need::kRequired));
  FERRY_TRY(ReadEnum(o, p, "state", &job->state, kJobStates, AgentJobStateName, Need::kRequired));
  job->progress = JobProgress();
  FERRY_TRY(ReadObject(o, p, "progress", [&](const Json& g, const std::string& gp) {
    return Read(g, gp, &job->progress);
  }));
  job->result.reset();
  FERRY_TRY(ReadObject(o, p, "result", [&](const Json& r, const std::string& rp) {
    JobResult result;
    FERRY_TRY(Read(r, rp, &result));
    job->result = std::move(result);
    return Status::Ok();
  }));
  job->error = Status::Ok();
  FERRY_TRY(ReadObject(o, p, "error", [&](const Json& e, const std::string& ep) {
    return ReadError(e, ep, &job->error);
  }));
  job->events.clear();
  FERRY_TRY(ReadArray(o, p, "events", kMaxJobEvents, [&](const Json& e, const std::string& ep) {
    FERRY_TRY(ExpectObject(e, ep));
    AgentJobEvent ev;
    FERRY_TRY(ReadI64(e, ep, "at_ms", &ev.at_ms, 0, kMaxTimestampMs, Need::kRequired));
    FERRY_TRY(ReadString(e, ep, "kind", &ev.kind, Need::kRequired));
    FERRY_TRY(ReadString(e, ep, "message", &ev.message));
    job->events.push_back(std::move(ev));
    return Status::Ok();
  }));
  FERRY_TRY(
      ReadI64(o, p, "started_at_ms", &job->started_at_ms, 0, kMaxTimestampMs, Need::kRequired));
  return ReadI64(o, p, "finished_at_ms", &job->finished_at_ms, 0, kMaxTimestampMs);
}

// ---- Cold migrations: shares, exports ---------------------------------------------------

using agent::ExportDisk;
using agent::ExportInfo;
using agent::ExportSpec;
using agent::ExportState;
using agent::HashState;

// A 16 TiB disk in 4 MiB chunks: the longest chunk hash list an export can carry.
constexpr size_t kMaxChunkHashes = (16ull << 40) / (4ull << 20);
constexpr ChunkHashAlgorithm kChunkHashAlgorithms[] = {ChunkHashAlgorithm::kSha256,
                                                       ChunkHashAlgorithm::kXxh3_128};
constexpr size_t kMaxExportDisks = 64;  // as many as a VmDescription may have
constexpr int64_t kMaxShutdownTimeoutMs = int64_t{24} * 3600 * 1000;
constexpr uint64_t kMinHashChunk = 4096;
constexpr uint64_t kMaxHashChunk = 256ull << 20;

constexpr ExportState kExportStates[] = {ExportState::kPreparing, ExportState::kShuttingDown,
                                         ExportState::kServing, ExportState::kFailed,
                                         ExportState::kClosed};
constexpr HashState kHashStates[] = {HashState::kNone, HashState::kRunning, HashState::kDone,
                                     HashState::kFailed};

// The VmDescription travels in src/sources' own JSON form (one mapping of it), embedded as an
// object. An unnamed description (an export still preparing) is null.
OutJson J(const sources::VmDescription& vm) {
  if (vm.name.empty()) return nullptr;
  return OutJson::parse(sources::ToJson(vm));
}

Status ReadVmDescription(const Json& o, const std::string& p, std::string_view key,
                         sources::VmDescription* out, Need need) {
  FERRY_ASSIGN_OR_RETURN(const Json* j, Member(o, p, key, need));
  *out = sources::VmDescription();
  if (j == nullptr) return Status::Ok();
  const std::string here = Join(p, key);
  if (!j->is_object()) return Bad(here, "expected an object");
  Result<sources::VmDescription> vm = sources::VmDescriptionFromJson(j->dump(), here);
  // The description's parser names `here` and the field; the API's code for bad input is
  // invalid_argument whatever the parser calls it.
  if (!vm.ok()) return Status::InvalidArgument(vm.status().message());
  *out = std::move(*vm);
  return Status::Ok();
}

OutJson J(const sources::ShareVm& vm) {
  return {{"id", vm.id}, {"share", vm.share}, {"vm", J(vm.vm)}};
}

Status Read(const Json& o, const std::string& p, sources::ShareVm* vm) {
  FERRY_TRY(ExpectObject(o, p));
  FERRY_TRY(ReadString(o, p, "id", &vm->id, Need::kRequired));
  if (vm->id.empty()) return Bad(Join(p, "id"), "must not be empty");
  FERRY_TRY(ReadString(o, p, "share", &vm->share, Need::kRequired));
  return ReadVmDescription(o, p, "vm", &vm->vm, Need::kRequired);
}

OutJson J(const ExportSpec& s) {
  OutJson out = {{"id", s.id}};
  if (!s.vm.empty()) out["vm"] = s.vm;
  if (!s.share.empty()) out["share"] = s.share;
  if (!s.share_vm.empty()) out["share_vm"] = s.share_vm;
  out["shutdown"] = {
      {"enabled", s.shutdown}, {"timeout_ms", s.shutdown_timeout_ms}, {"force", s.force_shutdown}};
  out["hash_chunk_size"] = s.hash_chunk_size;
  out["hash_algorithm"] = std::string(ChunkHashAlgorithmName(s.hash_algorithm));
  return out;
}

Status Read(const Json& o, const std::string& p, ExportSpec* s) {
  FERRY_TRY(ExpectObject(o, p));
  *s = ExportSpec();
  FERRY_TRY(ReadString(o, p, "id", &s->id, Need::kRequired));
  if (!IsValidJobId(s->id)) {
    return Bad(Join(p, "id"), "must be 1-128 characters of [A-Za-z0-9._-], not starting with '.'");
  }
  FERRY_TRY(ReadString(o, p, "vm", &s->vm));
  FERRY_TRY(ReadString(o, p, "share", &s->share));
  FERRY_TRY(ReadString(o, p, "share_vm", &s->share_vm));
  const bool is_share = !s->share.empty() || !s->share_vm.empty();
  if (s->vm.empty() == !is_share) {
    return Bad(p.empty() ? "vm" : Join(p, "vm"),
               "exactly one of vm or share + share_vm must be given");
  }
  if (is_share && s->share.empty()) return Bad(Join(p, "share"), "missing (share_vm is given)");
  if (is_share && s->share_vm.empty()) {
    return Bad(Join(p, "share_vm"), "missing (share is given)");
  }
  FERRY_TRY(ReadObject(o, p, "shutdown", [&](const Json& d, const std::string& dp) {
    FERRY_TRY(ReadBool(d, dp, "enabled", &s->shutdown));
    FERRY_TRY(ReadI64(d, dp, "timeout_ms", &s->shutdown_timeout_ms, 0, kMaxShutdownTimeoutMs));
    return ReadBool(d, dp, "force", &s->force_shutdown);
  }));
  FERRY_TRY(ReadU64(o, p, "hash_chunk_size", &s->hash_chunk_size));
  if (s->hash_chunk_size != 0 &&
      (s->hash_chunk_size < kMinHashChunk || s->hash_chunk_size > kMaxHashChunk ||
       s->hash_chunk_size % kMinHashChunk != 0)) {
    return Bad(Join(p, "hash_chunk_size"),
               "expected 0 (no hashing) or a multiple of 4096 from 4096 to 268435456");
  }
  return ReadEnum(o, p, "hash_algorithm", &s->hash_algorithm, kChunkHashAlgorithms,
                  ChunkHashAlgorithmName, Need::kOptional);
}

OutJson ErrorJson(const Status& error) {
  if (error.ok()) return nullptr;
  return {{"code", std::string(ErrorCodeWireName(error.code()))}, {"message", error.message()}};
}

OutJson J(const ExportDisk& d, ChunkHashAlgorithm algorithm) {
  OutJson hashes = OutJson::array();
  for (const ChunkDigest& h : d.chunk_hashes) hashes.push_back(ChunkDigestHex(h, algorithm));
  return {{"id", d.id},
          {"uri", d.uri},
          {"size", d.size},
          {"format", d.format},
          {"allocated_bytes", d.allocated_bytes},
          {"hash_state", std::string(agent::HashStateName(d.hash_state))},
          {"hashed_bytes", d.hashed_bytes},
          {"chunk_hashes", std::move(hashes)}};
}

Status Read(const Json& o, const std::string& p, ExportDisk* d, ChunkHashAlgorithm algorithm) {
  FERRY_TRY(ExpectObject(o, p));
  FERRY_TRY(ReadString(o, p, "id", &d->id, Need::kRequired));
  if (d->id.empty()) return Bad(Join(p, "id"), "must not be empty");
  FERRY_TRY(ReadString(o, p, "uri", &d->uri));
  FERRY_TRY(ReadU64(o, p, "size", &d->size));
  FERRY_TRY(ReadString(o, p, "format", &d->format));
  FERRY_TRY(ReadU64(o, p, "allocated_bytes", &d->allocated_bytes));
  FERRY_TRY(ReadEnum(o, p, "hash_state", &d->hash_state, kHashStates, agent::HashStateName,
                     Need::kOptional));
  FERRY_TRY(ReadU64(o, p, "hashed_bytes", &d->hashed_bytes));
  d->chunk_hashes.clear();
  return ReadArray(
      o, p, "chunk_hashes", kMaxChunkHashes, [&](const Json& item, const std::string& ip) {
        if (!item.is_string()) return Bad(ip, "expected a string");
        Result<ChunkDigest> digest =
            DigestFromHex(item.get_ref<const std::string&>(), ip, algorithm);
        if (!digest.ok()) return Status::InvalidArgument(digest.status().message());
        d->chunk_hashes.push_back(*digest);
        return Status::Ok();
      });
}

OutJson J(const ExportInfo& e) {
  OutJson disks = OutJson::array();
  for (const ExportDisk& d : e.disks) disks.push_back(J(d, e.spec.hash_algorithm));
  return {{"id", e.id},
          {"state", std::string(agent::ExportStateName(e.state))},
          {"spec", e.spec.id.empty() ? OutJson(nullptr) : J(e.spec)},
          {"vm", J(e.vm)},
          {"disks", std::move(disks)},
          {"was_running", e.was_running},
          {"bytes_served", e.bytes_served},
          {"error", ErrorJson(e.error)},
          {"created_at_ms", e.created_at_ms}};
}

Status Read(const Json& o, const std::string& p, ExportInfo* e) {
  FERRY_TRY(ExpectObject(o, p));
  *e = ExportInfo();
  FERRY_TRY(ReadString(o, p, "id", &e->id, Need::kRequired));
  if (!IsValidJobId(e->id)) {
    return Bad(Join(p, "id"), "must be 1-128 characters of [A-Za-z0-9._-], not starting with '.'");
  }
  FERRY_TRY(
      ReadEnum(o, p, "state", &e->state, kExportStates, agent::ExportStateName, Need::kRequired));
  bool has_spec = false;
  FERRY_TRY(ReadObject(
      o, p, "spec", [&](const Json& s, const std::string& sp) { return Read(s, sp, &e->spec); },
      Need::kOptional, &has_spec));
  if (has_spec && e->spec.id != e->id) return Bad(Join(p, "spec.id"), "differs from id");
  FERRY_TRY(ReadVmDescription(o, p, "vm", &e->vm, Need::kOptional));
  FERRY_TRY(ReadArray(o, p, "disks", kMaxExportDisks, [&](const Json& item, const std::string& ip) {
    ExportDisk d;
    FERRY_TRY(Read(item, ip, &d, e->spec.hash_algorithm));
    e->disks.push_back(std::move(d));
    return Status::Ok();
  }));
  FERRY_TRY(ReadBool(o, p, "was_running", &e->was_running));
  FERRY_TRY(ReadU64(o, p, "bytes_served", &e->bytes_served));
  FERRY_TRY(ReadObject(o, p, "error", [&](const Json& x, const std::string& xp) {
    return ReadError(x, xp, &e->error);
  }));
  if (e->state == ExportState::kFailed && e->error.ok()) {
    return Bad(Join(p, "error"), "missing (state is failed)");
  }
  return ReadI64(o, p, "created_at_ms", &e->created_at_ms, 0, kMaxTimestampMs);
}

OutJson J(const ShareInfo& s) {
  return {{"name", s.name}, {"path", s.path}, {"writable", s.writable}};
}

Status Read(const Json& o, const std::string& p, ShareInfo* s) {
  FERRY_TRY(ExpectObject(o, p));
  FERRY_TRY(ReadString(o, p, "name", &s->name, Need::kRequired));
  if (s->name.empty()) return Bad(Join(p, "name"), "must not be empty");
  FERRY_TRY(ReadString(o, p, "path", &s->path));
  return ReadBool(o, p, "writable", &s->writable);
}

// Parses `json` as an object and reads it into *out with Read().
template <typename T>
Status ParseInto(std::string_view json, T* out) {
  Json j;
  FERRY_TRY(Parse(json, &j));
  return Read(j, "", out);
}

}  // namespace

std::string_view AgentJobStateName(AgentJobState state) {
  switch (state) {
    case AgentJobState::kRunning: return "running";
    case AgentJobState::kSucceeded: return "succeeded";
    case AgentJobState::kFailed: return "failed";
    case AgentJobState::kCancelled: return "cancelled";
  }
  return "failed";
}

bool IsFinal(AgentJobState state) { return state != AgentJobState::kRunning; }

bool IsValidJobId(std::string_view id) {
  constexpr size_t kMaxIdLength = 128;
  if (id.empty() || id.size() > kMaxIdLength || id[0] == '.') return false;
  for (char c : id) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

std::string_view MigrationKindWireName(MigrationKind kind) {
  for (const KindName& k : kKindNames) {
    if (k.kind == kind) return k.name;
  }
  return "live";
}

Result<MigrationKind> MigrationKindFromWireName(std::string_view name) {
  for (const KindName& k : kKindNames) {
    if (k.name == name) return k.kind;
  }
  return Status::InvalidArgument("unknown migration kind \"" + std::string(name.substr(0, 64)) +
                                 "\"");
}

}  // namespace ferry::api

namespace ferry::agent {

std::string_view ExportStateName(ExportState s) {
  switch (s) {
    case ExportState::kPreparing: return "preparing";
    case ExportState::kShuttingDown: return "shutting-down";
    case ExportState::kServing: return "serving";
    case ExportState::kFailed: return "failed";
    case ExportState::kClosed: return "closed";
  }
  return "failed";
}

std::string_view HashStateName(HashState s) {
  switch (s) {
    case HashState::kNone: return "none";
    case HashState::kRunning: return "running";
    case HashState::kDone: return "done";
    case HashState::kFailed: return "failed";
  }
  return "failed";
}

}  // namespace ferry::agent

namespace ferry::api {

std::string_view CpuCompatibilityName(CpuCompatibility c) {
  switch (c) {
    case CpuCompatibility::kIdentical: return "identical";
    case CpuCompatibility::kSuperset: return "superset";
    case CpuCompatibility::kIncompatible: return "incompatible";
    case CpuCompatibility::kError: return "error";
  }
  return "error";
}

// ---- ToJson ------------------------------------------------------------------------------

std::string ToJson(const AgentHealth& h) {
  return OutJson{{"host_id", h.host_id},
                 {"version", h.version},
                 {"libvirt_uri", h.libvirt_uri},
                 {"migration_uri", h.migration_uri}}
      .dump();
}

std::string ToJson(const AgentInventory& inventory) {
  const hypervisor::Inventory& inv = inventory.inventory;
  OutJson host = J(inv.host);
  host["migration_uri"] = inventory.migration_uri;
  OutJson vms = OutJson::array();
  for (const VmInfo& vm : inv.vms) vms.push_back(J(vm));
  OutJson pools = OutJson::array();
  for (const PoolInfo& p : inv.pools) pools.push_back(J(p));
  OutJson networks = OutJson::array();
  for (const NetworkInfo& n : inv.networks) networks.push_back(J(n));
  return OutJson{{"host", std::move(host)},
                 {"vms", std::move(vms)},
                 {"pools", std::move(pools)},
                 {"networks", std::move(networks)}}
      .dump();
}

std::string ToJson(const HostFacts& facts) { return J(facts).dump(); }
std::string ToJson(const VmInfo& vm) { return J(vm).dump(); }
std::string ToJson(const PoolInfo& pool) { return J(pool).dump(); }
std::string ToJson(const NetworkInfo& network) { return J(network).dump(); }

std::string ToJson(const VmXml& xml) {
  return OutJson{{"xml", xml.xml}, {"cpu_xml", xml.cpu_xml}}.dump();
}

std::string ToJson(const CpuCheck& check) {
  const bool compatible =
      check.result == CpuCompatibility::kIdentical || check.result == CpuCompatibility::kSuperset;
  return OutJson{{"compatible", compatible},
                 {"result", std::string(CpuCompatibilityName(check.result))},
                 {"message", check.message}}
      .dump();
}

std::string ToJson(const PlatformCheckRequest& r) {
  return OutJson{{"arch", r.arch},
                 {"machine", r.machine},
                 {"firmware", std::string(hypervisor::FirmwareName(r.firmware))}}
      .dump();
}

std::string ToJson(const PlatformCheck& c) {
  return OutJson{
      {"machine_ok", c.machine_ok}, {"firmware_ok", c.firmware_ok}, {"message", c.message}}
      .dump();
}

std::string ToJson(const MigrationJobSpec& spec) { return J(spec).dump(); }
std::string ToJson(const plan::TargetVm& vm) { return J(vm).dump(); }
std::string ToJson(const JobProgress& progress) { return J(progress).dump(); }
std::string ToJson(const JobResult& result) { return J(result).dump(); }
std::string ToJson(const AgentJob& job) { return J(job).dump(); }

std::string ToJson(const AgentJobRecord& record) {
  return OutJson{{"version", kRecordVersion}, {"spec", J(record.spec)}, {"job", J(record.job)}}
      .dump();
}

std::string ToJson(const std::vector<AgentJob>& jobs) {
  OutJson list = OutJson::array();
  for (const AgentJob& job : jobs) list.push_back(J(job));
  return OutJson{{"jobs", std::move(list)}}.dump();
}

std::string ToJson(const CpuCheckRequest& r) {
  return OutJson{{"cpu_xml", r.cpu_xml},
                 {"virttype", r.target.virttype},
                 {"arch", r.target.arch},
                 {"machine", r.target.machine}}
      .dump();
}

std::string ToJson(const std::vector<ShareInfo>& shares) {
  OutJson list = OutJson::array();
  for (const ShareInfo& s : shares) list.push_back(J(s));
  return OutJson{{"shares", std::move(list)}}.dump();
}

std::string ToJson(const ShareListing& listing) {
  OutJson vms = OutJson::array();
  for (const sources::ShareVm& vm : listing.vms) vms.push_back(J(vm));
  return OutJson{{"vms", std::move(vms)}, {"problems", listing.problems}}.dump();
}

std::string ToJson(const sources::ShareVm& vm) { return J(vm).dump(); }
std::string ToJson(const agent::ExportSpec& spec) { return J(spec).dump(); }
std::string ToJson(const agent::ExportInfo& info) { return J(info).dump(); }

// ---- FromJson ----------------------------------------------------------------------------

Status FromJson(std::string_view json, AgentHealth* out) {
  Json j;
  FERRY_TRY(Parse(json, &j));
  FERRY_TRY(ReadString(j, "", "host_id", &out->host_id, Need::kRequired));
  FERRY_TRY(ReadString(j, "", "version", &out->version));
  FERRY_TRY(ReadString(j, "", "libvirt_uri", &out->libvirt_uri));
  return ReadString(j, "", "migration_uri", &out->migration_uri);
}

Status FromJson(std::string_view json, AgentInventory* out) { return ParseInto(json, out); }
Status FromJson(std::string_view json, HostFacts* out) { return ParseInto(json, out); }
Status FromJson(std::string_view json, VmInfo* out) { return ParseInto(json, out); }
Status FromJson(std::string_view json, PoolInfo* out) { return ParseInto(json, out); }
Status FromJson(std::string_view json, NetworkInfo* out) { return ParseInto(json, out); }

Status FromJson(std::string_view json, VmXml* out) {
  Json j;
  FERRY_TRY(Parse(json, &j));
  FERRY_TRY(ReadString(j, "", "xml", &out->xml, Need::kRequired));
  return ReadString(j, "", "cpu_xml", &out->cpu_xml);
}

Status FromJson(std::string_view json, CpuCheck* out) {
  Json j;
  FERRY_TRY(Parse(json, &j));
  FERRY_TRY(
      ReadEnum(j, "", "result", &out->result, kCpuResults, CpuCompatibilityName, Need::kRequired));
  FERRY_TRY(ReadString(j, "", "message", &out->message));
  bool compatible = false;
  const bool has_compatible = j.contains("compatible") && !j.at("compatible").is_null();
  FERRY_TRY(ReadBool(j, "", "compatible", &compatible));
  const bool by_result =
      out->result == CpuCompatibility::kIdentical || out->result == CpuCompatibility::kSuperset;
  if (has_compatible && compatible != by_result) {
    return Bad("compatible",
               "contradicts result \"" + std::string(CpuCompatibilityName(out->result)) + "\"");
  }
  return Status::Ok();
}

Status FromJson(std::string_view json, PlatformCheckRequest* out) {
  Json j;
  FERRY_TRY(Parse(json, &j));
  FERRY_TRY(ReadString(j, "", "arch", &out->arch, Need::kRequired));
  if (out->arch.empty()) return Bad("arch", "must not be empty");
  FERRY_TRY(ReadString(j, "", "machine", &out->machine, Need::kRequired));
  if (out->machine.empty()) return Bad("machine", "must not be empty");
  return ReadEnum(j, "", "firmware", &out->firmware, kFirmwares, hypervisor::FirmwareName,
                  Need::kRequired);
}

Status FromJson(std::string_view json, PlatformCheck* out) {
  Json j;
  FERRY_TRY(Parse(json, &j));
  FERRY_TRY(ReadBool(j, "", "machine_ok", &out->machine_ok, Need::kRequired));
  FERRY_TRY(ReadBool(j, "", "firmware_ok", &out->firmware_ok, Need::kRequired));
  return ReadString(j, "", "message", &out->message);
}

Status FromJson(std::string_view json, MigrationJobSpec* out) { return ParseInto(json, out); }
Status FromJson(std::string_view json, plan::TargetVm* out) { return ParseInto(json, out); }
Status FromJson(std::string_view json, JobProgress* out) { return ParseInto(json, out); }
Status FromJson(std::string_view json, JobResult* out) { return ParseInto(json, out); }
Status FromJson(std::string_view json, AgentJob* out) { return ParseInto(json, out); }

Status FromJson(std::string_view json, AgentJobRecord* out) {
  Json j;
  FERRY_TRY(Parse(json, &j));
  int64_t version = 0;
  FERRY_TRY(
      ReadI64(j, "", "version", &version, 0, std::numeric_limits<int32_t>::max(), Need::kRequired));
  if (version != kRecordVersion) {
    return Bad("version", "unsupported record version " + std::to_string(version) +
                              " (this agent reads " + std::to_string(kRecordVersion) + ")");
  }
  FERRY_TRY(ReadObject(
      j, "", "spec", [&](const Json& s, const std::string& sp) { return Read(s, sp, &out->spec); },
      Need::kRequired));
  FERRY_TRY(ReadObject(
      j, "", "job", [&](const Json& s, const std::string& sp) { return Read(s, sp, &out->job); },
      Need::kRequired));
  if (out->spec.id != out->job.id) return Bad("job.id", "differs from spec.id");
  return Status::Ok();
}

Status FromJson(std::string_view json, std::vector<AgentJob>* out) {
  Json j;
  FERRY_TRY(Parse(json, &j));
  out->clear();
  return ReadArray(
      j, "", "jobs", kMaxJsonListItems,
      [&](const Json& item, const std::string& ip) {
        AgentJob job;
        FERRY_TRY(Read(item, ip, &job));
        out->push_back(std::move(job));
        return Status::Ok();
      },
      Need::kRequired);
}

Status FromJson(std::string_view json, CpuCheckRequest* out) {
  Json j;
  FERRY_TRY(Parse(json, &j));
  FERRY_TRY(ReadString(j, "", "cpu_xml", &out->cpu_xml, Need::kRequired));
  if (out->cpu_xml.empty()) return Bad("cpu_xml", "must not be empty");
  FERRY_TRY(ReadString(j, "", "virttype", &out->target.virttype));
  FERRY_TRY(ReadString(j, "", "arch", &out->target.arch));
  return ReadString(j, "", "machine", &out->target.machine);
}

Status FromJson(std::string_view json, std::vector<ShareInfo>* out) {
  Json j;
  FERRY_TRY(Parse(json, &j));
  out->clear();
  return ReadArray(
      j, "", "shares", kMaxJsonListItems,
      [&](const Json& item, const std::string& ip) {
        ShareInfo share;
        FERRY_TRY(Read(item, ip, &share));
        out->push_back(std::move(share));
        return Status::Ok();
      },
      Need::kRequired);
}

Status FromJson(std::string_view json, ShareListing* out) {
  Json j;
  FERRY_TRY(Parse(json, &j));
  out->vms.clear();
  FERRY_TRY(ReadArray(
      j, "", "vms", kMaxJsonListItems,
      [&](const Json& item, const std::string& ip) {
        sources::ShareVm vm;
        FERRY_TRY(Read(item, ip, &vm));
        out->vms.push_back(std::move(vm));
        return Status::Ok();
      },
      Need::kRequired));
  return ReadStringList(j, "", "problems", kMaxJsonListItems, &out->problems);
}

Status FromJson(std::string_view json, sources::ShareVm* out) { return ParseInto(json, out); }
Status FromJson(std::string_view json, agent::ExportSpec* out) { return ParseInto(json, out); }
Status FromJson(std::string_view json, agent::ExportInfo* out) { return ParseInto(json, out); }

std::string ToJson(const PoolFiles& files) {
  return OutJson{{"pool", files.pool}, {"files", files.files}}.dump();
}

Status FromJson(std::string_view json, PoolFiles* out) {
  Json j;
  FERRY_TRY(Parse(json, &j));
  FERRY_TRY(ReadString(j, "", "pool", &out->pool, Need::kRequired));
  if (!j.contains("files")) return Bad("files", "missing");
  return ReadStringList(j, "", "files", kMaxJsonListItems, &out->files);
}

}  // namespace ferry::api
