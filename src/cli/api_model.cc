// JSON mapping of ferryd's answers (see api_model.h). Every field goes through Reader, which
// checks its type and range and remembers the first problem with the field's full path.
#include "cli/api_model.h"

#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>

namespace ferry::cli {

namespace {

using Json = nlohmann::json;

std::string TypeName(const Json& j) { return j.type_name(); }

// Compact JSON; invalid UTF-8 (only possible in strings we built, not parsed) is replaced.
std::string Dump(const Json& j) { return j.dump(-1, ' ', false, Json::error_handler_t::replace); }

// Reads fields of one JSON object; the first failure sticks and later reads return defaults.
class Reader {
 public:
  Reader(const Json& object, std::string path, Status* error)
      : j_(object), path_(std::move(path)), error_(error) {
    if (!j_.is_object()) {
      Fail(path_.empty() ? "the answer" : path_, "expected an object, got " + TypeName(j_));
    }
  }

  std::string Path(const std::string& key) const { return path_.empty() ? key : path_ + "." + key; }

  // Null or absent: nullptr (an error if required).
  const Json* Field(const std::string& key, bool required) {
    if (!error_->ok() || !j_.is_object()) return nullptr;
    auto it = j_.find(key);
    if (it == j_.end() || it->is_null()) {
      if (required) Fail(Path(key), "missing");
      return nullptr;
    }
    return &*it;
  }

  std::string Str(const std::string& key, bool required = false) {
    const Json* f = Field(key, required);
    if (f == nullptr) return "";
    if (!f->is_string()) {
      Fail(Path(key), "expected a string, got " + TypeName(*f));
      return "";
    }
    return f->get<std::string>();
  }

  // Any integer (within int64); `min` is the smallest accepted value.
  int64_t Int(const std::string& key, int64_t fallback, int64_t min = 0, bool required = false) {
    const Json* f = Field(key, required);
    if (f == nullptr) return fallback;
    if (f->is_number_unsigned()) {
      uint64_t v = f->get<uint64_t>();
      if (v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        Fail(Path(key), "integer out of range");
        return fallback;
      }
      return static_cast<int64_t>(v);
    }
    if (!f->is_number_integer()) {
      Fail(Path(key), "expected an integer, got " + TypeName(*f));
      return fallback;
    }
    int64_t v = f->get<int64_t>();
    if (v < min) {
      Fail(Path(key), "must be at least " + std::to_string(min) + ", got " + std::to_string(v));
      return fallback;
    }
    return v;
  }

  uint64_t Uint(const std::string& key, bool required = false) {
    const Json* f = Field(key, required);
    if (f == nullptr) return 0;
    if (f->is_number_unsigned()) return f->get<uint64_t>();
    if (f->is_number_integer()) {
      Fail(Path(key), "expected a non-negative integer, got " + Dump(*f));
    } else {
      Fail(Path(key), "expected a non-negative integer, got " + TypeName(*f));
    }
    return 0;
  }

  std::optional<double> Number(const std::string& key, double min, double max) {
    const Json* f = Field(key, false);
    if (f == nullptr) return std::nullopt;
    if (!f->is_number()) {
      Fail(Path(key), "expected a number, got " + TypeName(*f));
      return std::nullopt;
    }
    double v = f->get<double>();
    if (!std::isfinite(v) || v < min || v > max) {
      Fail(Path(key), "out of range: " + Dump(*f));
      return std::nullopt;
    }
    return v;
  }

  bool Bool(const std::string& key, bool required = false) {
    const Json* f = Field(key, required);
    if (f == nullptr) return false;
    if (!f->is_boolean()) {
      Fail(Path(key), "expected true or false, got " + TypeName(*f));
      return false;
    }
    return f->get<bool>();
  }

  const Json* Object(const std::string& key, bool required = false) {
    const Json* f = Field(key, required);
    if (f == nullptr) return nullptr;
    if (!f->is_object()) {
      Fail(Path(key), "expected an object, got " + TypeName(*f));
      return nullptr;
    }
    return f;
  }

  const Json* Array(const std::string& key, bool required = false) {
    const Json* f = Field(key, required);
    if (f == nullptr) return nullptr;
    if (!f->is_array()) {
      Fail(Path(key), "expected an array, got " + TypeName(*f));
      return nullptr;
    }
    return f;
  }

  // A value from a closed set of names.
  std::string OneOf(const std::string& key, const std::vector<std::string_view>& allowed,
                    bool required) {
    std::string v = Str(key, required);
    if (v.empty() || !error_->ok()) return v;
    for (std::string_view a : allowed) {
      if (a == v) return v;
    }
    Fail(Path(key), "unknown value \"" + v.substr(0, 64) + "\"");
    return "";
  }

  bool ok() const { return error_->ok(); }

 private:
  void Fail(const std::string& where, const std::string& what) {
    if (error_->ok()) *error_ = Status::Corrupt("ferryd answer: " + where + ": " + what);
  }

  const Json& j_;
  std::string path_;
  Status* error_;
};

std::string Index(const std::string& path, size_t i) {
  return path + "[" + std::to_string(i) + "]";
}

// A list of strings (nullptr: none).
std::vector<std::string> ReadStrings(const Json* array, const std::string& path, Status* error) {
  std::vector<std::string> out;
  if (array == nullptr) return out;
  for (size_t i = 0; i < array->size() && error->ok(); ++i) {
    if (!(*array)[i].is_string()) {
      *error = Status::Corrupt("ferryd answer: " + Index(path, i) + ": expected a string, got " +
                               TypeName((*array)[i]));
      break;
    }
    out.push_back((*array)[i].get<std::string>());
  }
  return out;
}

// Parses `body`; a non-JSON answer is kCorrupt quoting its start.
Result<Json> ParseBody(const std::string& body) {
  Json j = Json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    return Status::Corrupt("ferryd answer is not JSON: \"" + body.substr(0, 80) + "\"");
  }
  return j;
}

constexpr std::string_view kHostStatuses[] = {"up", "down"};
constexpr std::string_view kMigrationStates[] = {"pending",    "validating", "queued", "running",
                                                 "cancelling", "completed",  "failed", "cancelled"};

HostRecord ReadHost(const Json& j, const std::string& path, Status* error) {
  HostRecord h;
  Reader r(j, path, error);
  h.id = r.Str("id", true);
  h.name = r.Str("name");
  h.cluster = r.Str("cluster");
  h.agent_url = r.Str("agent_url");
  h.status = r.OneOf("status", {std::begin(kHostStatuses), std::end(kHostStatuses)}, true);
  h.last_seen_at_ms = r.Int("last_seen_at_ms", 0);
  h.vm_count = r.Int("vm_count", 0);
  h.error = r.Str("error");
  if (const Json* facts = r.Object("facts"); facts != nullptr && !facts->empty()) {
    Reader f(*facts, r.Path("facts"), error);
    h.has_facts = true;
    h.facts.hostname = f.Str("hostname");
    h.facts.uri = f.Str("uri");
    h.facts.cpu_model = f.Str("cpu_model");
    h.facts.cpu_arch = f.Str("cpu_arch");
    h.facts.cpus = f.Int("cpus", 0);
    h.facts.memory_bytes = f.Uint("memory_bytes");
    h.facts.free_memory_bytes = f.Uint("free_memory_bytes");
    h.facts.libvirt_version = f.Str("libvirt_version");
    h.facts.hypervisor = f.Str("hypervisor");
    h.facts.migration_uri = f.Str("migration_uri");
  }
  if (error->ok()) h.json = Dump(j);
  return h;
}

VmRecord ReadVm(const Json& j, const std::string& path, Status* error) {
  VmRecord v;
  Reader r(j, path, error);
  v.host = r.Str("host");
  v.name = r.Str("name", true);
  v.uuid = r.Str("uuid");
  v.state = r.Str("state", true);
  v.firmware = r.Str("firmware");
  v.machine_type = r.Str("machine_type");
  v.vcpus = r.Int("vcpus", 0);
  v.memory_bytes = r.Uint("memory_bytes");
  if (const Json* disks = r.Array("disks")) {
    for (size_t i = 0; i < disks->size() && error->ok(); ++i) {
      Reader d((*disks)[i], Index(r.Path("disks"), i), error);
      DiskRecord disk;
      disk.target = d.Str("target");
      disk.device = d.Str("device");
      disk.format = d.Str("format");
      disk.source_path = d.Str("source_path");
      disk.pool = d.Str("pool");
      disk.capacity_bytes = d.Uint("capacity_bytes");
      disk.allocation_bytes = d.Uint("allocation_bytes");
      v.disks.push_back(std::move(disk));
    }
  }
  if (const Json* nics = r.Array("nics")) v.nic_count = nics->size();
  if (error->ok()) v.json = Dump(j);
  return v;
}

ProgressRecord ReadProgress(const Json& j, const std::string& path, Status* error) {
  Reader pr(j, path, error);
  ProgressRecord g;
  g.phase = pr.Str("phase");
  g.bytes_total = pr.Uint("bytes_total");
  g.bytes_done = pr.Uint("bytes_done");
  g.bytes_remaining = pr.Uint("bytes_remaining");
  g.rate = pr.Uint("rate");
  g.dirty_rate = pr.Uint("dirty_rate");
  g.iteration = pr.Uint("iteration");
  g.eta_ms = pr.Int("eta_ms", -1, -1);
  g.downtime_limit_ms = pr.Int("downtime_limit_ms", 0);
  g.throttle_percent = pr.Int("throttle_percent", 0);
  g.postcopy = pr.Bool("postcopy");
  g.percent = pr.Number("percent", 0.0, 100.0);
  return g;
}

ResultRecord ReadResult(const Json& j, const std::string& path, Status* error) {
  Reader rr(j, path, error);
  ResultRecord out;
  out.total_ms = rr.Int("total_ms", 0);
  out.bytes_sent = rr.Uint("bytes_sent");
  out.qemu_downtime_ms = rr.Int("qemu_downtime_ms", -1, -1);
  out.guest_downtime_ms = rr.Int("guest_downtime_ms", -1, -1);
  out.notes = ReadStrings(rr.Array("notes"), rr.Path("notes"), error);
  out.defined_vm = rr.Str("defined_vm");
  if (const Json* boot = rr.Object("boot")) {
    Reader br(*boot, rr.Path("boot"), error);
    BootCheckRecord b;
    b.checked = br.Bool("checked");
    b.ok = br.Bool("ok");
    b.elapsed_ms = br.Int("elapsed_ms", -1, -1);
    b.message = br.Str("message");
    out.boot = std::move(b);
  }
  return out;
}

ErrorRecord ReadError(const Json& j, const std::string& path, Status* error) {
  Reader er(j, path, error);
  ErrorRecord out;
  out.code = er.Str("code", true);
  out.message = er.Str("message");
  return out;
}

constexpr std::string_view kPlanStates[] = {"ready",  "running",   "completed",
                                            "failed", "cancelled", "partial"};

PlanVmRecord ReadPlanVm(const Json& j, const std::string& path, Status* error) {
  PlanVmRecord v;
  Reader r(j, path, error);
  v.vm = r.Str("vm", true);
  v.target_name = r.Str("target_name");
  v.migration = r.Str("migration");
  v.state = r.Str("state");
  v.phase = r.Str("phase");
  if (const Json* p = r.Object("progress"))
    v.progress = ReadProgress(*p, r.Path("progress"), error);
  if (const Json* res = r.Object("result")) v.result = ReadResult(*res, r.Path("result"), error);
  if (const Json* e = r.Object("error")) v.error = ReadError(*e, r.Path("error"), error);
  return v;
}

PlanStatusRecord ReadPlanStatus(const Json& j, const std::string& path, Status* error) {
  PlanStatusRecord p;
  Reader r(j, path, error);
  p.id = r.Str("id", true);
  p.name = r.Str("name", true);
  p.state = r.OneOf("state", {std::begin(kPlanStates), std::end(kPlanStates)}, true);
  p.created_at_ms = r.Int("created_at_ms", 0);
  p.updated_at_ms = r.Int("updated_at_ms", 0);
  r.Object("document");  // type-checked only: the CLI prints it with --output json
  if (const Json* vms = r.Array("vms")) {
    for (size_t i = 0; i < vms->size() && error->ok(); ++i) {
      p.vms.push_back(ReadPlanVm((*vms)[i], Index(r.Path("vms"), i), error));
    }
  }
  if (error->ok()) p.json = Dump(j);
  return p;
}

// GET /api/v1/shares: ShareVm ({"id", "share", "vm": VmDescription}) + "host".
ShareVmRecord ReadShareVm(const Json& j, const std::string& path, Status* error) {
  ShareVmRecord s;
  Reader r(j, path, error);
  s.host = r.Str("host");
  s.id = r.Str("id", true);
  s.share = r.Str("share");
  if (const Json* vm = r.Object("vm", true)) {
    Reader v(*vm, r.Path("vm"), error);
    s.name = v.Str("name");
    s.platform = v.Str("platform");
    s.vcpus = v.Int("vcpus", 0);
    s.memory_bytes = v.Uint("memory_bytes");
    s.firmware = v.Str("firmware");
    if (const Json* disks = v.Array("disks")) {
      for (size_t i = 0; i < disks->size() && error->ok(); ++i) {
        Reader d((*disks)[i], Index(v.Path("disks"), i), error);
        s.disk_bytes += d.Uint("capacity_bytes");
        ++s.disk_count;
      }
    }
    if (const Json* nics = v.Array("nics")) s.nic_count = nics->size();
    s.missing = ReadStrings(v.Array("missing"), v.Path("missing"), error);
  }
  if (error->ok()) s.json = Dump(j);
  return s;
}

MigrationRecord ReadMigration(const Json& j, const std::string& path, Status* error) {
  MigrationRecord m;
  Reader r(j, path, error);
  m.id = r.Str("id", true);
  m.vm = r.Str("vm", true);
  m.vm_uuid = r.Str("vm_uuid");
  m.source = r.Str("source");
  m.target = r.Str("target");
  m.type = r.Str("type", true);
  m.state = r.OneOf("state", {std::begin(kMigrationStates), std::end(kMigrationStates)}, true);
  m.phase = r.Str("phase");
  m.priority = r.Int("priority", 0, std::numeric_limits<int64_t>::min());
  m.created_at_ms = r.Int("created_at_ms", 0);
  m.updated_at_ms = r.Int("updated_at_ms", 0);
  if (const Json* p = r.Object("progress"))
    m.progress = ReadProgress(*p, r.Path("progress"), error);
  if (const Json* res = r.Object("result")) m.result = ReadResult(*res, r.Path("result"), error);
  if (const Json* e = r.Object("error")) m.error = ReadError(*e, r.Path("error"), error);
  if (error->ok()) m.json = Dump(j);
  return m;
}

EventRecord ReadEvent(const Json& j, const std::string& path, Status* error) {
  EventRecord e;
  Reader r(j, path, error);
  e.seq = r.Int("seq", 0, 0, true);
  e.at_ms = r.Int("at_ms", 0);
  e.kind = r.Str("kind", true);
  e.message = r.Str("message");
  if (error->ok()) e.json = Dump(j);
  return e;
}

std::vector<CheckRecord> ReadChecks(const Json& array, const std::string& path,
                                    const std::string& vm, Status* error) {
  std::vector<CheckRecord> checks;
  for (size_t i = 0; i < array.size() && error->ok(); ++i) {
    Reader r(array[i], Index(path, i), error);
    CheckRecord c;
    c.vm = r.Str("vm");
    if (c.vm.empty()) c.vm = vm;
    c.name = r.Str("name", true);
    c.ok = r.Bool("ok", true);
    c.message = r.Str("message");
    checks.push_back(std::move(c));
  }
  return checks;
}

std::vector<PlanRecord> ReadPlans(const Json& array, const std::string& path, Status* error) {
  std::vector<PlanRecord> plans;
  for (size_t i = 0; i < array.size() && error->ok(); ++i) {
    Reader r(array[i], Index(path, i), error);
    PlanRecord p;
    p.vm = r.Str("vm");
    p.type = r.Str("type");
    if (const Json* checks = r.Array("checks", true)) {
      p.checks = ReadChecks(*checks, r.Path("checks"), p.vm, error);
    }
    plans.push_back(std::move(p));
  }
  return plans;
}

// {"<key>": [items]} -> items read by `read`.
template <typename T, typename ReadFn>
Result<std::vector<T>> ReadList(const std::string& body, const std::string& key, ReadFn read) {
  FERRY_ASSIGN_OR_RETURN(Json j, ParseBody(body));
  Status error;
  Reader r(j, "", &error);
  const Json* items = r.Array(key, true);
  std::vector<T> out;
  if (items != nullptr) {
    for (size_t i = 0; i < items->size() && error.ok(); ++i) {
      out.push_back(read((*items)[i], Index(key, i), &error));
    }
  }
  if (!error.ok()) return error;
  return out;
}

template <typename T, typename ReadFn>
Result<T> ReadOne(const std::string& body, ReadFn read) {
  FERRY_ASSIGN_OR_RETURN(Json j, ParseBody(body));
  Status error;
  T out = read(j, "", &error);
  if (!error.ok()) return error;
  return out;
}

}  // namespace

bool MigrationRecord::IsFinal() const {
  return state == "completed" || state == "failed" || state == "cancelled";
}

bool PlanStatusRecord::IsFinal() const {
  return state == "completed" || state == "failed" || state == "cancelled" || state == "partial";
}

Result<std::vector<PlanStatusRecord>> ParsePlanList(const std::string& body) {
  return ReadList<PlanStatusRecord>(body, "plans", ReadPlanStatus);
}

Result<PlanStatusRecord> ParsePlanStatus(const std::string& body) {
  return ReadOne<PlanStatusRecord>(body, ReadPlanStatus);
}

Result<ValidationRecord> ParsePlanValidation(const std::string& body) {
  FERRY_ASSIGN_OR_RETURN(Json j, ParseBody(body));
  Status error;
  Reader r(j, "", &error);
  ValidationRecord v;
  if (const Json* vms = r.Array("vms", true)) v.plans = ReadPlans(*vms, "vms", &error);
  v.ok = true;
  for (const PlanRecord& p : v.plans) {
    for (const CheckRecord& c : p.checks) v.ok = v.ok && c.ok;
  }
  if (r.Field("ok", false) != nullptr) v.ok = r.Bool("ok") && v.ok;
  if (!error.ok()) return error;
  v.json = Dump(j);
  return v;
}

Result<std::vector<ShareVmRecord>> ParseShareVmList(const std::string& body) {
  return ReadList<ShareVmRecord>(body, "vms", ReadShareVm);
}

Result<std::vector<HostRecord>> ParseHostList(const std::string& body) {
  return ReadList<HostRecord>(body, "hosts", ReadHost);
}

Result<HostRecord> ParseHost(const std::string& body) {
  return ReadOne<HostRecord>(body, ReadHost);
}

Result<std::vector<VmRecord>> ParseVmList(const std::string& body) {
  return ReadList<VmRecord>(body, "vms", ReadVm);
}

Result<std::vector<HostRecord>> ParseVmListHosts(const std::string& body) {
  FERRY_ASSIGN_OR_RETURN(Json j, ParseBody(body));
  if (!j.is_object() || !j.contains("hosts") || j["hosts"].is_null()) {
    return std::vector<HostRecord>{};
  }
  return ReadList<HostRecord>(body, "hosts", ReadHost);
}

Result<std::vector<MigrationRecord>> ParseMigrationList(const std::string& body) {
  return ReadList<MigrationRecord>(body, "migrations", ReadMigration);
}

Result<MigrationRecord> ParseMigration(const std::string& body) {
  return ReadOne<MigrationRecord>(body, ReadMigration);
}

Result<std::vector<EventRecord>> ParseEventList(const std::string& body) {
  return ReadList<EventRecord>(body, "events", ReadEvent);
}

Result<ValidationRecord> ParseValidation(const std::string& body) {
  FERRY_ASSIGN_OR_RETURN(Json j, ParseBody(body));
  Status error;
  Reader r(j, "", &error);
  ValidationRecord v;
  v.ok = r.Bool("ok", true);
  if (const Json* plans = r.Array("plans", true)) v.plans = ReadPlans(*plans, "plans", &error);
  if (!error.ok()) return error;
  v.json = Dump(j);
  return v;
}

Result<std::vector<CheckRecord>> ParseValidationDetails(const std::string& details_json) {
  FERRY_ASSIGN_OR_RETURN(Json j, ParseBody(details_json));
  Status error;
  Reader r(j, "error.details", &error);
  std::vector<CheckRecord> out;
  if (const Json* checks = r.Array("checks")) {
    out = ReadChecks(*checks, r.Path("checks"), "", &error);
  } else if (const Json* plans = r.Array("plans")) {
    for (PlanRecord& p : ReadPlans(*plans, r.Path("plans"), &error)) {
      for (CheckRecord& c : p.checks) out.push_back(std::move(c));
    }
  } else if (const Json* vms = r.Array("vms")) {  // a plan's: {"vms": [{"vm", "checks"}]}
    for (PlanRecord& p : ReadPlans(*vms, r.Path("vms"), &error)) {
      for (CheckRecord& c : p.checks) out.push_back(std::move(c));
    }
  } else if (error.ok()) {
    error = Status::Corrupt("ferryd answer: error.details.checks: missing");
  }
  if (!error.ok()) return error;
  return out;
}

std::string MigrationRequestJson(const MigrationRequest& request) {
  Json j = Json::object();
  if (!request.evacuate.empty()) {
    j["evacuate"] = request.evacuate;
  } else {
    j["vms"] = request.vms;
  }
  if (!request.to.empty()) j["to"] = request.to;
  if (!request.storage.empty()) j["storage"] = request.storage;
  if (!request.type.empty()) j["type"] = request.type;
  if (!request.source.empty()) j["source"] = request.source;
  if (request.max_downtime_ms) j["max_downtime_ms"] = *request.max_downtime_ms;
  if (request.bandwidth) j["bandwidth"] = *request.bandwidth;
  if (request.allow_postcopy) j["allow_postcopy"] = true;
  if (request.priority) j["priority"] = *request.priority;
  return Dump(j);
}

std::string HostCreateJson(const std::string& id, const std::string& name,
                           const std::string& cluster, const std::string& agent_url,
                           const std::string& agent_token) {
  Json j = {{"id", id}, {"agent_url", agent_url}, {"agent_token", agent_token}};
  if (!name.empty()) j["name"] = name;
  if (!cluster.empty()) j["cluster"] = cluster;
  return Dump(j);
}

std::string JsonArray(const std::vector<std::string>& items) {
  std::string out = "[";
  for (size_t i = 0; i < items.size(); ++i) {
    if (i > 0) out += ',';
    out += items[i];
  }
  return out + "]";
}

std::string JsonObject(const std::vector<std::pair<std::string, std::string>>& members) {
  std::string out = "{";
  for (size_t i = 0; i < members.size(); ++i) {
    if (i > 0) out += ',';
    out += JsonString(members[i].first) + ":" + members[i].second;
  }
  return out + "}";
}

std::string JsonString(const std::string& text) {
  // Replace invalid UTF-8 rather than throwing.
  return Dump(Json(text));
}

std::string PrettyJson(const std::string& json) {
  Json j = Json::parse(json, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return json;
  return j.dump(2, ' ', false, Json::error_handler_t::replace);
}

}  // namespace ferry::cli
