#include "server/planning.h"

#include <nlohmann/json.hpp>

#include "common/units.h"

namespace ferry::server {
namespace {

using hypervisor::VmInfo;
using hypervisor::VmState;
using nlohmann::json;

constexpr uint64_t kPerDiskOverhead = 1 << 20;  // qcow2 header + tables, rounded up

bool IsRunning(const VmInfo& vm) {
  return vm.state == VmState::kRunning || vm.state == VmState::kPaused ||
         vm.state == VmState::kBlocked;
}

bool IsCopyDisk(const hypervisor::VmDisk& d) {
  return d.device == "disk" && !d.source_path.empty();
}

std::string Mib(uint64_t bytes) { return std::to_string(bytes >> 20) + " MiB"; }

}  // namespace

bool MigrationPlan::ok() const {
  if (type.empty()) return false;
  for (const Check& c : checks) {
    if (!c.ok) return false;
  }
  return true;
}

std::string MigrationPlan::FailureSummary() const {
  std::string out;
  for (const Check& c : checks) {
    if (c.ok) continue;
    if (!out.empty()) out += "; ";
    out += c.name + ": " + c.message;
  }
  return out;
}

bool IsKnownType(const std::string& type) {
  return type == "auto" || type == "live" || type == "live-storage" || type == "live-vsm" ||
         type == "quick" || type == "reregister";
}

const hypervisor::PoolInfo* PoolHolding(const hypervisor::Inventory& host,
                                        const std::string& path) {
  for (const hypervisor::PoolInfo& p : host.pools) {
    if (p.path.empty()) continue;
    std::string dir = p.path;
    if (dir.back() != '/') dir += '/';
    if (path.size() > dir.size() && path.compare(0, dir.size(), dir) == 0) return &p;
  }
  return nullptr;
}

MigrationPlan PlanMigration(const PlanInput& in) {
  const VmInfo& vm = *in.vm;
  const MigrationRequest& req = *in.request;
  const hypervisor::Inventory& tinv = in.target->inventory;
  MigrationPlan plan;
  plan.vm = vm.name;
  plan.vm_uuid = vm.uuid;
  plan.source = in.source->id;
  plan.target = in.target->id;
  auto add = [&](std::string name, bool ok, std::string message) {
    plan.checks.push_back(Check{std::move(name), ok, std::move(message)});
  };

  add("target_reachable", in.target->reachable,
      in.target->reachable ? "agent and libvirtd of " + in.target->id + " answered"
                           : in.target->id + ": " + in.target->error);
  if (!in.target->reachable) return plan;

  const bool running = IsRunning(vm);
  const bool shutoff = vm.state == VmState::kShutoff;
  const bool same_host = in.source->id == in.target->id;

  // Which disks the target sees (a pool of its own holds the file).
  std::string invisible;
  for (const hypervisor::VmDisk& d : vm.disks) {
    if (!IsCopyDisk(d)) continue;
    if (PoolHolding(tinv, d.source_path) == nullptr) {
      if (!invisible.empty()) invisible += ", ";
      invisible += d.target + " (" + d.source_path + ")";
    }
  }
  const bool disks_visible = invisible.empty();
  const bool cpu_ok = in.cpu.has_value() &&
                      (in.cpu->result == hypervisor::CpuCompatibility::kIdentical ||
                       in.cpu->result == hypervisor::CpuCompatibility::kSuperset);

  // The transfer type.
  std::string type = req.type;
  std::string why_none;
  if (type == "auto") {
    type.clear();
    if (running) {
      if (!req.storage.empty()) {
        type = same_host ? "live-storage" : "live-vsm";
      } else if (same_host) {
        why_none = "the VM is already on " + in.target->id + " and no --storage was given";
      } else if (disks_visible) {
        type = (in.cpu.has_value() && !cpu_ok) ? "quick" : "live";
      } else {
        why_none = "disks " + invisible + " are on storage " + in.target->id +
                   " does not see; give a target pool (--storage) for a live VSM move";
      }
    } else if (shutoff) {
      if (!same_host && disks_visible && req.storage.empty()) {
        type = "reregister";
      } else {
        why_none = "a shut-off VM whose disks must be copied needs a cold migration, which "
                   "this server does not run yet";
      }
    } else {
      why_none = "the VM is " + std::string(hypervisor::VmStateName(vm.state)) +
                 "; only running or shut-off VMs can move";
    }
  }
  plan.type = type;

  if (type.empty()) {
    add("type_applicable", false, why_none);
    return plan;
  }
  // Is the (chosen or asked) type applicable?
  std::string not_applicable;
  const bool live_kind = type == "live" || type == "live-vsm" || type == "quick" ||
                         type == "live-storage";
  if (live_kind && !running) {
    not_applicable = type + " needs a running VM; " + vm.name + " is " +
                     std::string(hypervisor::VmStateName(vm.state));
  } else if (type == "reregister" && !shutoff) {
    not_applicable = "reregister needs a shut-off VM; " + vm.name + " is " +
                     std::string(hypervisor::VmStateName(vm.state));
  } else if ((type == "live-storage" || type == "live-vsm") && req.storage.empty()) {
    not_applicable = type + " needs a target pool (--storage)";
  } else if ((type == "live" || type == "quick" || type == "reregister") &&
             !req.storage.empty()) {
    not_applicable = type + " keeps the disks where they are; drop --storage or use live-vsm";
  }
  add("type_applicable", not_applicable.empty(),
      not_applicable.empty() ? "transfer type " + type : not_applicable);

  if (type == "live-storage") {
    add("not_same_host", same_host,
        same_host ? "storage moves on " + in.source->id
                  : "live-storage keeps the VM on its host; use live-vsm to move both");
  } else {
    add("not_same_host", !same_host,
        same_host ? vm.name + " is already on " + in.target->id
                  : in.source->id + " -> " + in.target->id);
  }

  if (type != "live-storage") {
    if (in.cpu.has_value()) {
      add("cpu_compatible", cpu_ok,
          cpu_ok ? "the guest CPU runs on " + in.target->id
                 : "the guest CPU does not run on " + in.target->id + ": " + in.cpu->message);
    } else {
      add("cpu_compatible", false, "could not compare CPUs: " + in.agent_error);
    }
    if (running) {
      bool mem_ok = tinv.host.free_memory_bytes >= vm.memory_bytes;
      add("memory", mem_ok,
          Mib(vm.memory_bytes) + " needed, " + Mib(tinv.host.free_memory_bytes) + " free on " +
              in.target->id);
    }
    bool name_free = true;
    bool uuid_free = true;
    for (const VmInfo& other : tinv.vms) {
      if (other.name == vm.name) name_free = false;
      if (!vm.uuid.empty() && other.uuid == vm.uuid) uuid_free = false;
    }
    add("name_clash", name_free,
        name_free ? "no VM named " + vm.name + " on " + in.target->id
                  : in.target->id + " already has a VM named " + vm.name);
    add("uuid_clash", uuid_free,
        uuid_free ? "UUID free on " + in.target->id
                  : in.target->id + " already has a VM with UUID " + vm.uuid);
    if (in.platform.has_value()) {
      add("machine_type", in.platform->machine_ok,
          in.platform->machine_ok ? "machine " + vm.machine_type + " supported"
                                  : in.platform->message);
      add("firmware", in.platform->firmware_ok,
          in.platform->firmware_ok
              ? std::string(hypervisor::FirmwareName(vm.firmware)) + " firmware available"
              : in.platform->message);
    } else {
      add("machine_type", false, "could not check the platform: " + in.agent_error);
    }
  }

  if (type == "live" || type == "quick" || type == "reregister") {
    add("storage_visible", disks_visible,
        disks_visible ? "every disk is on storage " + in.target->id + " sees"
                      : in.target->id + " does not see " + invisible);
  }

  if (type == "live-storage" || type == "live-vsm") {
    const hypervisor::PoolInfo* pool = nullptr;
    for (const hypervisor::PoolInfo& p : tinv.pools) {
      if (p.name == req.storage) pool = &p;
    }
    if (pool == nullptr || !pool->active) {
      add("pool_capacity", false,
          "pool " + req.storage + (pool == nullptr ? " does not exist" : " is not active") +
              " on " + in.target->id);
    } else {
      uint64_t needed = 0;
      std::string already;
      for (const hypervisor::VmDisk& d : vm.disks) {
        if (!IsCopyDisk(d)) continue;
        const hypervisor::PoolInfo* holder = PoolHolding(tinv, d.source_path);
        if (same_host && holder != nullptr && holder->name == pool->name) {
          already += (already.empty() ? "" : ", ") + d.target;
        }
        uint64_t size = d.format == "raw" || d.allocation_bytes == 0 ? d.capacity_bytes
                                                                       : d.allocation_bytes;
        needed += size + kPerDiskOverhead;
      }
      bool ok = pool->available_bytes >= needed && already.empty();
      add("pool_capacity", ok,
          !already.empty() ? "disks " + already + " are already in pool " + pool->name
                           : Mib(needed) + " needed, " + Mib(pool->available_bytes) +
                                 " available in pool " + pool->name + " on " + in.target->id);
    }
  }

  // Networks: every NIC's network must exist and be active on the target.
  std::string missing;
  for (const hypervisor::VmNic& nic : vm.nics) {
    bool found = false;
    if (nic.type == "network") {
      for (const hypervisor::NetworkInfo& n : tinv.networks) {
        if (n.name == nic.network && n.active) found = true;
      }
    } else if (nic.type == "bridge") {
      for (const hypervisor::NetworkInfo& n : tinv.networks) {
        if (!n.bridge.empty() && n.bridge == nic.network && n.active) found = true;
      }
    } else {
      found = true;  // user-mode and direct NICs need nothing on the target's side
    }
    if (!found) {
      if (!missing.empty()) missing += ", ";
      missing += nic.mac + " on " + nic.type + " " + nic.network;
    }
  }
  add("networks", missing.empty(),
      missing.empty() ? "every NIC's network exists on " + in.target->id
                      : in.target->id + " lacks the network of NIC " + missing);
  return plan;
}

std::string PlanToJson(const MigrationPlan& plan) {
  json checks = json::array();
  for (const Check& c : plan.checks) {
    checks.push_back({{"name", c.name}, {"ok", c.ok}, {"message", c.message}});
  }
  return json{{"vm", plan.vm},       {"source", plan.source}, {"target", plan.target},
              {"type", plan.type},   {"ok", plan.ok()},       {"checks", checks}}
      .dump();
}

Result<MigrationRequest> ParseMigrationRequest(const std::string& json_text) {
  json j = json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return Status::InvalidArgument("request body: not a JSON object");
  }
  MigrationRequest r;
  auto str = [&](const char* key, std::string* out) -> Status {
    if (!j.contains(key) || j[key].is_null()) return Status::Ok();
    if (!j[key].is_string()) return Status::InvalidArgument(std::string(key) + ": expected a string");
    *out = j[key].get<std::string>();
    if (out->size() > 256) return Status::InvalidArgument(std::string(key) + ": too long");
    return Status::Ok();
  };
  FERRY_TRY(str("evacuate", &r.evacuate));
  FERRY_TRY(str("source", &r.source));
  FERRY_TRY(str("to", &r.to));
  FERRY_TRY(str("storage", &r.storage));
  FERRY_TRY(str("type", &r.type));
  if (r.type.empty()) r.type = "auto";
  if (!IsKnownType(r.type)) {
    return Status::InvalidArgument("type: \"" + r.type +
                                   "\" is not one of auto, live, live-storage, live-vsm, "
                                   "quick, reregister");
  }
  if (j.contains("vms")) {
    if (!j["vms"].is_array()) return Status::InvalidArgument("vms: expected an array of names");
    if (j["vms"].size() > 1000) return Status::InvalidArgument("vms: more than 1000 VMs");
    for (size_t i = 0; i < j["vms"].size(); ++i) {
      if (!j["vms"][i].is_string() || j["vms"][i].get<std::string>().empty()) {
        return Status::InvalidArgument("vms[" + std::to_string(i) + "]: expected a VM name");
      }
      r.vms.push_back(j["vms"][i].get<std::string>());
    }
  }
  if (r.vms.empty() == r.evacuate.empty()) {
    return Status::InvalidArgument("give either vms (a list of names) or evacuate (a host)");
  }
  auto integer = [&](const char* key, int64_t min, int64_t max, int64_t* out) -> Status {
    if (!j.contains(key) || j[key].is_null()) return Status::Ok();
    if (!j[key].is_number_integer() || j[key].get<int64_t>() < min || j[key].get<int64_t>() > max) {
      return Status::InvalidArgument(std::string(key) + ": expected an integer in [" +
                                     std::to_string(min) + ", " + std::to_string(max) + "]");
    }
    *out = j[key].get<int64_t>();
    return Status::Ok();
  };
  FERRY_TRY(integer("max_downtime_ms", 1, 600000, &r.max_downtime_ms));
  int64_t bw = 0;
  FERRY_TRY(integer("bandwidth", 0, int64_t{1} << 50, &bw));
  r.bandwidth = static_cast<uint64_t>(bw);
  int64_t prio = 0;
  FERRY_TRY(integer("priority", -1000, 1000, &prio));
  r.priority = static_cast<int>(prio);
  if (j.contains("allow_postcopy")) {
    if (!j["allow_postcopy"].is_boolean()) {
      return Status::InvalidArgument("allow_postcopy: expected true or false");
    }
    r.allow_postcopy = j["allow_postcopy"].get<bool>();
  }
  return r;
}

std::string MigrationRequestToJson(const MigrationRequest& r) {
  json j = {{"type", r.type},
            {"max_downtime_ms", r.max_downtime_ms},
            {"bandwidth", r.bandwidth},
            {"allow_postcopy", r.allow_postcopy},
            {"priority", r.priority}};
  if (!r.vms.empty()) j["vms"] = r.vms;
  if (!r.evacuate.empty()) j["evacuate"] = r.evacuate;
  if (!r.source.empty()) j["source"] = r.source;
  if (!r.to.empty()) j["to"] = r.to;
  if (!r.storage.empty()) j["storage"] = r.storage;
  return j.dump();
}

}  // namespace ferry::server
