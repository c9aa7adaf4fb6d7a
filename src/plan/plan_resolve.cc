// ResolvePlanVm: one source VM + the plan + what ferryd knows of the target -> the VM to
// create and the validation checks (docs/plans.md, "Validation"; see plan.h).
//
// Precedence of the target's settings, most specific first:
//   name            vms[].target.name, else the source VM's name made safe for file names
//   vcpus, memory   vms[].target, else the description's, else target_defaults
//   firmware        vms[].target, else the description's, else target_defaults, else bios
//                   (a guest installed for UEFI does not boot from BIOS, so what the
//                   descriptor says beats a plan-wide default)
//   machine         vms[].target, else target_defaults, else the source's, else pc
//   disk_bus        vms[].target, else target_defaults, else per disk the source's bus for
//                   KVM VMs (virtio/scsi/sata/ide), else sata (every OS has an AHCI driver)
//   start, delete_disks_with_vm, boot_check   vms[].target, else target_defaults, else
//                   true / false / no boot check
//   preserve_mac    vms[].target, else the plan's preserve_mac
#include <algorithm>
#include <cctype>
#include <map>
#include <set>

#include "common/units.h"
#include "plan/plan.h"

namespace ferry::plan {
namespace {

constexpr size_t kMaxTargetNameChars = 64;
constexpr size_t kMaxIdeDisks = 4;  // two IDE channels, master and slave
constexpr uint64_t kFormatOverheadPercent = 1;

constexpr std::string_view kBuses[] = {"virtio", "scsi", "sata", "ide"};
// What Ferry's image registry reads (src/disk/image.h).
constexpr std::string_view kReadableFormats[] = {"qcow2", "raw", "vmdk", "vhdx", "vhd", "ova"};
// Source NIC models KVM emulates as they are; anything else (vmxnet3, Hyper-V synthetic, ...)
// becomes virtio.
constexpr std::string_view kKeptNicModels[] = {"e1000", "e1000e", "rtl8139"};

template <size_t N>
bool In(const std::string_view (&list)[N], std::string_view v) {
  return std::find(std::begin(list), std::end(list), v) != std::end(list);
}

std::string Quoted(const std::string& s) { return "\"" + s + "\""; }

std::string JoinList(const std::vector<std::string>& items, const std::string& sep = ", ") {
  std::string out;
  for (const std::string& i : items) out += (out.empty() ? "" : sep) + i;
  return out;
}

// A source name as a target name: runs of characters outside [A-Za-z0-9._-] become one '-',
// and '.'/'-' are trimmed from the start ("Web Server (prod)" -> "Web-Server-prod").
std::string SafeTargetName(const std::string& source) {
  std::string out;
  bool pending_dash = false;
  for (char c : source) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '-';
    if (!ok) {
      pending_dash = !out.empty();
      continue;
    }
    if (pending_dash) out += '-';
    pending_dash = false;
    if (out.empty() && (c == '.' || c == '-')) continue;
    out += c;
  }
  if (out.size() > kMaxTargetNameChars) out.resize(kMaxTargetNameChars);
  while (!out.empty() && (out.back() == '-' || out.back() == '.')) out.pop_back();
  return out;
}

// 0 -> "a", 25 -> "z", 26 -> "aa" (libvirt's and Linux's disk naming).
std::string DiskLetters(size_t index) {
  std::string s;
  size_t n = index + 1;
  while (n > 0) {
    --n;
    s.insert(s.begin(), static_cast<char>('a' + n % 26));
    n /= 26;
  }
  return s;
}

std::string DevicePrefix(const std::string& bus) {
  if (bus == "virtio") return "vd";
  if (bus == "ide") return "hd";
  return "sd";  // scsi and sata share the sd namespace
}

bool IsMac(const std::string& mac) {
  if (mac.size() != 17) return false;
  for (size_t i = 0; i < mac.size(); ++i) {
    if (i % 3 == 2) {
      if (mac[i] != ':') return false;
    } else if (!std::isxdigit(static_cast<unsigned char>(mac[i]))) {
      return false;
    }
  }
  return true;
}

std::string Lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

template <typename T>
T Pick(const std::optional<T>& a, const std::optional<T>& b, const T& fallback) {
  if (a) return *a;
  if (b) return *b;
  return fallback;
}

// The storage rule for a disk: "VM/DISK_ID", then its datastore, then "*".
const StorageMapping* StorageRuleFor(const PlanDocument& plan, const std::string& vm_name,
                                     const sources::DiskDescription& disk) {
  for (const std::string& key : {vm_name + "/" + disk.id, disk.datastore, std::string("*")}) {
    if (key.empty()) continue;
    for (const StorageMapping& m : plan.storage) {
      if (m.source == key) return &m;
    }
  }
  return nullptr;
}

const NetworkMapping* NetworkRuleFor(const PlanDocument& plan, const std::string& network) {
  for (const std::string& key : {network, std::string("*")}) {
    if (key.empty()) continue;
    for (const NetworkMapping& m : plan.networks) {
      if (m.source == key) return &m;
    }
  }
  return nullptr;
}

// Allocated data of a source disk, for the capacity check: its allocation, or its capacity when
// the source does not say (a raw file, say, can be full).
uint64_t DataEstimate(const sources::DiskDescription& d) {
  return d.allocated_bytes != 0 ? d.allocated_bytes : d.capacity_bytes;
}

class Checks {
 public:
  void Add(std::string name, bool ok, std::string message) {
    out_.push_back(Check{std::move(name), ok, std::move(message)});
  }
  std::vector<Check> Take() { return std::move(out_); }

 private:
  std::vector<Check> out_;
};

}  // namespace

bool Resolution::ok() const {
  if (checks.empty()) return false;
  return std::all_of(checks.begin(), checks.end(), [](const Check& c) { return c.ok; });
}

std::string Resolution::FailureSummary() const {
  std::vector<std::string> parts;
  for (const Check& c : checks) {
    if (!c.ok) parts.push_back(c.name + ": " + c.message);
  }
  return JoinList(parts, "; ");
}

Resolution ResolvePlanVm(const ResolveInput& in) {
  Resolution res;
  Checks checks;
  if (in.plan == nullptr || in.entry == nullptr) {
    checks.Add("vm_found", false, "internal: no plan or VM entry to resolve");
    res.checks = checks.Take();
    return res;
  }
  const PlanDocument& plan = *in.plan;
  const PlanVm& entry = *in.entry;
  const bool share_source = plan.source.type == EndpointType::kShare;
  const bool share_target = plan.target.type == EndpointType::kShare;
  const std::string asked = entry.id.empty() ? entry.name : entry.id;
  std::string entry_path = "vms[]";
  for (size_t i = 0; i < plan.vms.size(); ++i) {
    if (&plan.vms[i] == &entry) entry_path = "vms[" + std::to_string(i) + "]";
  }
  const std::string source_where =
      share_source ? "share " + plan.source.share + " on " + plan.source.host : plan.source.host;
  const std::string target_where =
      share_target ? "share " + plan.target.share + " on " + plan.target.host : plan.target.host;

  // --- Reachability and the VM itself ---
  if (!in.source_reachable) {
    checks.Add("source_reachable", false,
               source_where +
                   " cannot be read: " + (in.source_error.empty() ? "no answer" : in.source_error));
  } else {
    checks.Add("source_reachable", true, source_where + " answered");
  }
  bool target_readable = false;
  if (share_target) {
    if (!in.target_error.empty()) {
      checks.Add("target_reachable", false, target_where + " cannot be read: " + in.target_error);
    } else if (!in.share_writable) {
      checks.Add("target_reachable", false,
                 target_where + " is not writable (or not a share of that agent)");
    } else {
      target_readable = true;
      checks.Add("target_reachable", true, target_where + " is writable");
    }
  } else if (in.target == nullptr) {
    checks.Add("target_reachable", false,
               target_where + " cannot be read: " +
                   (in.target_error.empty() ? "no inventory" : in.target_error));
  } else {
    target_readable = true;
    checks.Add("target_reachable", true, target_where + " answered");
  }
  if (!in.source_reachable) {
    res.checks = checks.Take();
    return res;
  }
  if (in.vm == nullptr) {
    checks.Add("vm_found", false,
               in.source_error.empty() ? "no VM " + Quoted(asked) + " in " + source_where
                                       : in.source_error);
    res.checks = checks.Take();
    return res;
  }
  const sources::VmDescription& vm = *in.vm;
  checks.Add("vm_found", true,
             Quoted(vm.name) + " in " + source_where +
                 (vm.descriptor.empty() ? "" : " (" + vm.descriptor + ")"));

  // --- The target VM ---
  TargetVm& t = res.vm;
  const TargetOptions& mine = entry.target;
  const TargetOptions& all = plan.defaults;
  t.name = mine.name ? *mine.name : SafeTargetName(vm.name);
  std::optional<int> desc_vcpus;
  if (vm.vcpus > 0) desc_vcpus = vm.vcpus;
  std::optional<uint64_t> desc_memory;
  if (vm.memory_bytes > 0) desc_memory = vm.memory_bytes;
  t.vcpus = mine.vcpus ? *mine.vcpus : Pick(desc_vcpus, all.vcpus, 0);
  t.memory_bytes =
      mine.memory_bytes ? *mine.memory_bytes : Pick(desc_memory, all.memory_bytes, uint64_t{0});
  std::optional<std::string> desc_firmware;
  if (vm.firmware == "bios" || vm.firmware == "uefi") desc_firmware = vm.firmware;
  t.firmware =
      mine.firmware ? *mine.firmware : Pick(desc_firmware, all.firmware, std::string("bios"));
  std::optional<std::string> desc_machine;
  if (!vm.machine.empty()) desc_machine = vm.machine;
  t.machine = mine.machine ? *mine.machine : Pick(all.machine, desc_machine, std::string("pc"));
  t.arch = vm.arch.empty() ? "x86_64" : vm.arch;
  t.direct_boot = vm.direct_boot;
  t.start = Pick(mine.start, all.start, true);
  t.delete_disks_with_vm = Pick(mine.delete_disks_with_vm, all.delete_disks_with_vm, false);
  t.boot_check = Pick(mine.boot_check, all.boot_check, BootCheck{});
  if (share_target) {  // a staged VM is not started; nothing boots
    t.start = false;
    t.boot_check = BootCheck{};
  }
  const bool preserve_mac = mine.preserve_mac ? *mine.preserve_mac : plan.preserve_mac;

  // Disks.
  const bool kvm_vm = vm.platform == sources::Platform::kKvm;
  const std::optional<std::string> bus_override = mine.disk_bus ? mine.disk_bus : all.disk_bus;
  std::map<std::string, size_t> per_prefix;
  std::vector<std::string> unmapped_disks;
  for (size_t i = 0; i < vm.disks.size(); ++i) {
    const sources::DiskDescription& d = vm.disks[i];
    TargetDisk td;
    td.source_id = d.id;
    td.capacity_bytes = d.capacity_bytes;
    if (bus_override) {
      td.bus = *bus_override;
    } else {
      td.bus = kvm_vm && In(kBuses, d.bus) ? d.bus : "sata";
    }
    const std::string prefix = DevicePrefix(td.bus);
    td.dev = prefix + DiskLetters(per_prefix[prefix]++);
    if (share_target) {
      td.format = plan.target.format.empty() ? "vhdx" : plan.target.format;
      if (td.format == "vhd") td.subformat = "fixed";
    } else if (const StorageMapping* rule = StorageRuleFor(plan, vm.name, d)) {
      td.pool = rule->pool;
      td.format = rule->format.empty() ? "qcow2" : rule->format;
    } else {
      unmapped_disks.push_back(d.id);
      td.format = "qcow2";
    }
    td.file_name = t.name + "-disk" + std::to_string(i) + "." + td.format;
    t.disks.push_back(std::move(td));
  }

  // NICs.
  std::vector<std::string> unmapped_nics;
  for (const sources::NicDescription& n : vm.nics) {
    TargetNic tn;
    tn.source_id = n.id;
    if (const NetworkMapping* rule = NetworkRuleFor(plan, n.network)) {
      tn.network = rule->target;
    } else {
      unmapped_nics.push_back(
          n.network.empty()
              ? "NIC " + n.id + "'s network is not known (add {source: \"*\", target: ...})"
              : "NIC " + n.id + "'s network " + Quoted(n.network) +
                    " has no mapping (add {source: " + Quoted(n.network) + ", target: ...})");
    }
    if (preserve_mac && IsMac(n.mac)) tn.mac = Lower(n.mac);
    if (share_target) {
      tn.model = n.model;
    } else {
      tn.model = In(kKeptNicModels, n.model) ? n.model : "virtio";
    }
    t.nics.push_back(std::move(tn));
  }

  // --- description_complete ---
  {
    std::vector<std::string> lacking;
    if (t.vcpus <= 0) {
      lacking.push_back("vCPUs unknown (set " + entry_path +
                        ".target.vcpus or target_defaults.vcpus)");
    }
    if (t.memory_bytes == 0) {
      lacking.push_back("memory unknown (set " + entry_path +
                        ".target.memory or target_defaults.memory)");
    }
    if (t.name.empty()) {
      lacking.push_back("the name " + Quoted(vm.name) +
                        " has no character usable for a target "
                        "name (set " +
                        entry_path + ".target.name)");
    }
    if (lacking.empty()) {
      std::string msg =
          std::to_string(t.vcpus) + " vCPUs, " + FormatBytes(t.memory_bytes) + ", " + t.firmware;
      if (!desc_firmware && !mine.firmware && !all.firmware) {
        msg += " (the source does not say; bios assumed)";
      }
      checks.Add("description_complete", true, msg);
    } else {
      checks.Add("description_complete", false, JoinList(lacking, "; "));
    }
  }

  // --- source_state (kvm sources) ---
  if (!share_source) {
    if (!vm.running) {
      checks.Add("source_state", true, vm.name + " is not running");
    } else if (!plan.options.shutdown_source) {
      checks.Add("source_state", false,
                 vm.name +
                     " is running and options.shutdown_source is false: a cold migration "
                     "needs it shut off (shut it down, or set shutdown_source: true)");
    } else {
      checks.Add("source_state", true,
                 vm.name + " is running; it is shut down at cutover" +
                     (plan.options.force_shutdown ? " (powered off if still running after the "
                                                    "shutdown timeout)"
                                                  : " (the migration fails if it does not stop "
                                                    "within the shutdown timeout)"));
    }
  }

  // --- networks_mapped ---
  if (unmapped_nics.empty()) {
    checks.Add("networks_mapped", true,
               vm.nics.empty() ? "no NICs" : "every NIC's network has a mapping");
  } else {
    checks.Add("networks_mapped", false, JoinList(unmapped_nics, "; "));
  }

  // --- target_networks (kvm target) ---
  if (!share_target && target_readable) {
    std::vector<std::string> problems;
    std::set<std::string> seen;
    for (const TargetNic& n : t.nics) {
      if (n.network.empty() || !seen.insert(n.network).second) continue;
      auto it =
          std::find_if(in.target->networks.begin(), in.target->networks.end(),
                       [&](const hypervisor::NetworkInfo& ni) { return ni.name == n.network; });
      if (it == in.target->networks.end()) {
        std::vector<std::string> names;
        for (const hypervisor::NetworkInfo& ni : in.target->networks) names.push_back(ni.name);
        problems.push_back("network " + Quoted(n.network) + " does not exist on " +
                           plan.target.host +
                           " (it has: " + (names.empty() ? "none" : JoinList(names)) + ")");
      } else if (!it->active) {
        problems.push_back("network " + Quoted(n.network) + " on " + plan.target.host +
                           " is not active");
      }
    }
    if (problems.empty()) {
      checks.Add("target_networks", true,
                 seen.empty() ? "no networks needed"
                              : "every mapped network exists on " + plan.target.host);
    } else {
      checks.Add("target_networks", false, JoinList(problems, "; "));
    }
  }

  // --- storage_mapped ---
  if (share_target) {
    checks.Add("storage_mapped", true,
               "disks go to " + plan.target.share + "/" + t.name + "/ as " +
                   (plan.target.format == "vhd" ? "fixed VHD" : "VHDX"));
  } else if (unmapped_disks.empty()) {
    checks.Add("storage_mapped", true,
               vm.disks.empty() ? "no disks" : "every disk has a storage rule");
  } else {
    std::vector<std::string> parts;
    for (const std::string& id : unmapped_disks) {
      auto d = std::find_if(vm.disks.begin(), vm.disks.end(),
                            [&](const sources::DiskDescription& x) { return x.id == id; });
      parts.push_back("disk " + id +
                      (d->datastore.empty() ? "" : " (datastore " + Quoted(d->datastore) + ")") +
                      " matches no storage rule (add {source: " +
                      Quoted(d->datastore.empty() ? "*" : d->datastore) + ", pool: ...})");
    }
    checks.Add("storage_mapped", false, JoinList(parts, "; "));
  }

  // --- pool_capacity (kvm target) ---
  if (!share_target && target_readable) {
    struct Need {
      uint64_t virtual_bytes = 0;
      uint64_t data_bytes = 0;
    };
    std::map<std::string, Need> needs;
    std::vector<std::string> problems;
    for (size_t i = 0; i < t.disks.size(); ++i) {
      const TargetDisk& td = t.disks[i];
      if (td.pool.empty()) continue;  // unmapped: storage_mapped says so
      if (vm.disks[i].capacity_bytes == 0) {
        problems.push_back("disk " + td.source_id +
                           "'s virtual size is not known (its image "
                           "could not be opened)");
        continue;
      }
      needs[td.pool].virtual_bytes += vm.disks[i].capacity_bytes;
      needs[td.pool].data_bytes += DataEstimate(vm.disks[i]);
    }
    std::vector<std::string> fine;
    for (const auto& [pool_name, need] : needs) {
      auto pool = std::find_if(in.target->pools.begin(), in.target->pools.end(),
                               [&](const hypervisor::PoolInfo& p) { return p.name == pool_name; });
      if (pool == in.target->pools.end()) {
        std::vector<std::string> names;
        for (const hypervisor::PoolInfo& p : in.target->pools) names.push_back(p.name);
        problems.push_back("pool " + pool_name + " does not exist on " + plan.target.host +
                           " (it has: " + (names.empty() ? "none" : JoinList(names)) + ")");
        continue;
      }
      if (!pool->active) {
        problems.push_back("pool " + pool_name + " on " + plan.target.host + " is not active");
        continue;
      }
      uint64_t virtual_bytes = need.virtual_bytes;
      uint64_t data_bytes = need.data_bytes;
      for (const auto& [claimed_pool, claim] : in.pool_claims) {
        if (claimed_pool != pool_name) continue;
        virtual_bytes += claim.first;
        data_bytes += claim.second;
      }
      const uint64_t with_overhead = data_bytes + (data_bytes * kFormatOverheadPercent + 99) / 100;
      if (virtual_bytes > pool->capacity_bytes) {
        problems.push_back("pool " + pool_name + " holds " + FormatBytes(pool->capacity_bytes) +
                           "; disks of this plan are " + FormatBytes(virtual_bytes) +
                           " (virtual size)");
      } else if (with_overhead > pool->available_bytes) {
        problems.push_back("pool " + pool_name + " has " + FormatBytes(pool->available_bytes) +
                           " available; disks of this plan need " + FormatBytes(with_overhead));
      } else {
        fine.push_back("pool " + pool_name + ": " + FormatBytes(with_overhead) + " needed, " +
                       FormatBytes(pool->available_bytes) + " available");
      }
    }
    if (problems.empty()) {
      checks.Add("pool_capacity", true, fine.empty() ? "no disks" : JoinList(fine, "; "));
    } else {
      checks.Add("pool_capacity", false, JoinList(problems, "; "));
    }
  }

  // --- name_clash ---
  if (target_readable && !t.name.empty()) {
    std::vector<std::string> clashes;
    if (std::find(in.claimed_names.begin(), in.claimed_names.end(), t.name) !=
        in.claimed_names.end()) {
      clashes.push_back("another VM of this plan is also named " + t.name + " on the target (set " +
                        entry_path + ".target.name)");
    }
    if (share_target) {
      if (std::find(in.share_entries.begin(), in.share_entries.end(), t.name) !=
          in.share_entries.end()) {
        clashes.push_back("folder " + t.name + " already exists in share " + plan.target.share);
      }
    } else {
      for (const hypervisor::VmInfo& v : in.target->vms) {
        if (v.name == t.name) {
          clashes.push_back(plan.target.host + " already has a VM named " + t.name);
        } else if (!vm.uuid.empty() && Lower(v.uuid) == Lower(vm.uuid)) {
          clashes.push_back(plan.target.host + " already has the source's UUID " + vm.uuid +
                            " (VM " + v.name + ")");
        }
      }
      for (const TargetDisk& td : t.disks) {
        for (const auto& [pool, files] : in.pool_files) {
          if (pool == td.pool &&
              std::find(files.begin(), files.end(), td.file_name) != files.end()) {
            clashes.push_back("file " + td.file_name + " already exists in pool " + pool);
          }
        }
      }
    }
    if (clashes.empty()) {
      checks.Add("name_clash", true, t.name + " is free on " + target_where);
    } else {
      checks.Add("name_clash", false, JoinList(clashes, "; "));
    }
  }

  // --- machine_type, firmware (kvm target: the target agent's platform check) ---
  if (!share_target && target_readable) {
    const std::string why_not_checked =
        in.platform_message.empty()
            ? (in.target_error.empty() ? "the platform check was not run" : in.target_error)
            : in.platform_message;
    if (!in.machine_ok.has_value()) {
      checks.Add("machine_type", false, "not checked: " + why_not_checked);
    } else if (!*in.machine_ok) {
      checks.Add("machine_type", false,
                 plan.target.host + " cannot run machine type " + t.machine + " for " + t.arch +
                     (in.platform_message.empty() ? "" : ": " + in.platform_message));
    } else {
      checks.Add("machine_type", true,
                 plan.target.host + " runs " + t.machine + " (" + t.arch + ")");
    }
    if (!in.firmware_ok.has_value()) {
      checks.Add("firmware", false, "not checked: " + why_not_checked);
    } else if (!*in.firmware_ok) {
      checks.Add("firmware", false,
                 plan.target.host + " cannot boot " + t.firmware + " guests" +
                     (in.platform_message.empty() ? "" : ": " + in.platform_message));
    } else {
      checks.Add("firmware", true, plan.target.host + " boots " + t.firmware + " guests");
    }
  }

  // --- disk_bus ---
  {
    std::vector<std::string> problems;
    size_t ide = 0;
    for (const TargetDisk& td : t.disks) {
      if (!In(kBuses, td.bus)) {
        problems.push_back("disk " + td.source_id + ": bus " + Quoted(td.bus) +
                           " is not virtio, scsi, sata or ide");
      }
      if (td.bus == "ide") ++ide;
    }
    if (ide > kMaxIdeDisks) {
      problems.push_back(std::to_string(ide) + " disks on ide, which takes at most " +
                         std::to_string(kMaxIdeDisks) + " (choose disk_bus sata or virtio)");
    }
    if (problems.empty()) {
      std::vector<std::string> devs;
      for (const TargetDisk& td : t.disks) devs.push_back(td.dev + " (" + td.bus + ")");
      checks.Add("disk_bus", true, devs.empty() ? "no disks" : JoinList(devs));
    } else {
      checks.Add("disk_bus", false, JoinList(problems, "; "));
    }
  }

  // --- disk_format ---
  {
    std::vector<std::string> problems;
    for (size_t i = 0; i < vm.disks.size(); ++i) {
      const sources::DiskDescription& d = vm.disks[i];
      if (!In(kReadableFormats, d.format)) {
        problems.push_back("disk " + d.id + " (" + d.file + ") is " +
                           (d.format.empty() ? "of an unknown format" : Quoted(d.format)) +
                           ", which Ferry cannot read");
      }
      const std::string& out = t.disks[i].format;
      const bool writable =
          share_target ? (out == "vhdx" || out == "vhd") : (out == "qcow2" || out == "raw");
      if (!writable) {
        problems.push_back("disk " + d.id + ": target format " + Quoted(out) + " is not " +
                           (share_target ? "vhdx or vhd" : "qcow2 or raw"));
      }
    }
    if (problems.empty()) {
      checks.Add("disk_format", true, vm.disks.empty() ? "no disks" : "every disk is readable");
    } else {
      checks.Add("disk_format", false, JoinList(problems, "; "));
    }
  }

  res.checks = checks.Take();
  return res;
}

void AddPoolClaims(const Resolution& resolution, const sources::VmDescription& vm,
                   std::vector<std::pair<std::string, std::pair<uint64_t, uint64_t>>>* claims) {
  for (size_t i = 0; i < resolution.vm.disks.size() && i < vm.disks.size(); ++i) {
    const TargetDisk& td = resolution.vm.disks[i];
    if (td.pool.empty()) continue;
    auto it = std::find_if(claims->begin(), claims->end(),
                           [&](const auto& c) { return c.first == td.pool; });
    if (it == claims->end()) {
      claims->push_back({td.pool, {0, 0}});
      it = claims->end() - 1;
    }
    it->second.first += vm.disks[i].capacity_bytes;
    it->second.second += DataEstimate(vm.disks[i]);
  }
}

}  // namespace ferry::plan
