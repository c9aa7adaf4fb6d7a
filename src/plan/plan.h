// Migration plans (docs/plans.md): the document a user writes (source, VMs, network and
// storage mappings, target options, migration options), its parser, and the resolution of one
// source VM against it into the VM to create on the target, with the validation checks that
// must all pass before anything is copied.
//
// ParsePlan reads YAML or JSON (JSON is YAML) as UNTRUSTED input: unknown keys, wrong types,
// bad sizes or durations and out-of-range values are kInvalidArgument naming the path
// ("vms[1].target.memory: expected a size such as 2GiB"). The YAML library stays inside
// plan_parse.cc.
//
// ResolvePlanVm is pure logic over a VmDescription, the plan, and what ferryd knows of the
// target (its inventory, or the share) and the target agent's platform check: unit-tested
// without hosts.
//
// Thread-safety: plain values and pure functions.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/checksum.h"
#include "common/status.h"
#include "hypervisor/inventory.h"
#include "sources/vm_description.h"

namespace ferry::plan {

struct BootCheck {
  std::string marker;  // "" = no boot check
  int64_t timeout_ms = 300000;
  bool operator==(const BootCheck&) const = default;
};

// Target options: plan-wide defaults and per-VM overrides (unset = not given).
struct TargetOptions {
  std::optional<std::string> name;  // per VM only
  std::optional<int> vcpus;
  std::optional<uint64_t> memory_bytes;
  std::optional<std::string> disk_bus;  // virtio | scsi | sata | ide
  std::optional<std::string> machine;   // pc | q35 | exact machine type
  std::optional<std::string> firmware;  // bios | uefi
  std::optional<bool> start;
  std::optional<bool> delete_disks_with_vm;
  std::optional<bool> preserve_mac;
  std::optional<BootCheck> boot_check;
  bool operator==(const TargetOptions&) const = default;
};

enum class EndpointType { kKvm, kShare };

struct PlanSource {
  EndpointType type = EndpointType::kKvm;
  std::string host;   // agent host id
  std::string share;  // type share: the share's name on that host
  bool operator==(const PlanSource&) const = default;
};

struct PlanTarget {
  EndpointType type = EndpointType::kKvm;
  std::string host;
  std::string share;   // type share
  std::string format;  // type share: "vhdx" (default) or "vhd" (fixed, MiB-aligned for Azure)
  bool operator==(const PlanTarget&) const = default;
};

struct PlanVm {
  std::string name;  // source VM name (KVM domain, descriptor VM name)
  std::string id;    // share VMs: the descriptor's id instead of the name
  TargetOptions target;
  bool operator==(const PlanVm&) const = default;
};

struct NetworkMapping {
  std::string source;  // source network name, or "*"
  std::string target;  // target network name
  bool operator==(const NetworkMapping&) const = default;
};

struct StorageMapping {
  std::string source;  // a datastore/pool name, "VM/DISK_ID", or "*"
  std::string pool;    // kvm target: the target pool
  std::string format;  // kvm target: "qcow2" or "raw" ("" = qcow2)
  bool operator==(const StorageMapping&) const = default;
};

enum class StartMode { kNow, kLater, kAt };
enum class DeployMode { kAuto, kManual };

// How a cold migration checks each copied disk against the source's chunk hashes
// (docs/plans.md, "Verification").
enum class VerifyMode {
  kOff,       // not checked
  kStream,    // SHA-256 of every chunk the target wrote, taken while copying: no extra I/O
  kReadBack,  // the finished disk read back from storage through Ferry's reader and hashed
};
// "off", "stream", "readback".
inline std::string_view VerifyModeName(VerifyMode mode) {
  switch (mode) {
    case VerifyMode::kOff:
      return "off";
    case VerifyMode::kStream:
      return "stream";
    case VerifyMode::kReadBack:
      return "readback";
  }
  return "stream";
}

// Those names, and "true" (stream) and "false" (off).
inline std::optional<VerifyMode> VerifyModeFromName(std::string_view name) {
  if (name == "stream" || name == "true" || name == "True" || name == "TRUE") {
    return VerifyMode::kStream;
  }
  if (name == "off" || name == "false" || name == "False" || name == "FALSE") {
    return VerifyMode::kOff;
  }
  if (name == "readback") return VerifyMode::kReadBack;
  return std::nullopt;
}

struct MigrationOptions {
  StartMode start = StartMode::kNow;
  int64_t start_at_ms = 0;  // StartMode::kAt: Unix epoch milliseconds
  bool shutdown_source = true;
  int64_t shutdown_timeout_ms = 120000;
  bool force_shutdown = true;
  DeployMode deploy = DeployMode::kAuto;
  int priority = 0;
  VerifyMode verify = VerifyMode::kStream;
  // The chunk digests the verification compares: xxh3-128 (fast; catches any accidental
  // change) or sha256 (also holds against someone who can rewrite the NBD stream).
  ChunkHashAlgorithm verify_hash = ChunkHashAlgorithm::kXxh3_128;
  uint64_t checkpoint_bytes = 256ull << 20;
  bool operator==(const MigrationOptions&) const = default;
};

struct PlanDocument {
  std::string name;
  PlanSource source;
  PlanTarget target;
  std::vector<PlanVm> vms;
  std::vector<NetworkMapping> networks;
  bool preserve_mac = true;
  TargetOptions defaults;
  std::vector<StorageMapping> storage;
  MigrationOptions options;
  bool operator==(const PlanDocument&) const = default;
};

// YAML or JSON text -> document (validated field by field, see above). Names: 1-64 of
// [A-Za-z0-9._-]; at least one VM; source and target hosts non-empty.
Result<PlanDocument> ParsePlan(std::string_view text);
// Canonical JSON of the document (what ferryd stores; ParsePlan reads it back identically).
std::string PlanToJson(const PlanDocument& plan);

// --- Resolution ---------------------------------------------------------------------------

// A disk of the VM to create.
struct TargetDisk {
  std::string source_id;  // DiskDescription::id
  std::string pool;       // kvm target: pool name; share target: "" (the staging folder)
  std::string file_name;  // "<vm>-disk<N>.<ext>" (ext: qcow2, raw, vhdx, vhd)
  std::string format;     // "qcow2" | "raw" | "vhdx" | "vhd"
  std::string subformat;  // vhd: "fixed"; otherwise ""
  uint64_t capacity_bytes = 0;
  std::string bus;  // virtio | scsi | sata | ide
  std::string dev;  // guest device name: vda, sda, hda ... in order per bus
  bool operator==(const TargetDisk&) const = default;
};

struct TargetNic {
  std::string source_id;  // NicDescription::id
  std::string network;    // mapped target network
  std::string mac;        // "" = let libvirt choose
  std::string model;      // "virtio" for KVM targets unless the source's model is e1000/rtl8139
  bool operator==(const TargetNic&) const = default;
};

// The VM to create on the target (the cold job defines it; a share target writes vm.json).
struct TargetVm {
  std::string name;
  int vcpus = 0;
  uint64_t memory_bytes = 0;
  std::string machine;   // as given ("pc", "q35", exact)
  std::string firmware;  // "bios" | "uefi"
  std::string arch = "x86_64";
  sources::DirectBoot direct_boot;
  std::vector<TargetDisk> disks;
  std::vector<TargetNic> nics;
  bool start = true;
  bool delete_disks_with_vm = false;
  BootCheck boot_check;
  bool operator==(const TargetVm&) const = default;
};

struct Check {
  std::string name;  // docs/plans.md, "Validation"
  bool ok = false;
  std::string message;
  bool operator==(const Check&) const = default;
};

// What ferryd knows when it resolves one VM.
struct ResolveInput {
  const PlanDocument* plan = nullptr;
  const PlanVm* entry = nullptr;
  // The source VM, nullptr if not found (then `source_error` says why).
  const sources::VmDescription* vm = nullptr;
  std::string source_error;
  // false: the source agent (or its libvirtd, or the share) could not be read at all; then
  // `source_error` says why and the check that fails is source_reachable, not vm_found.
  bool source_reachable = true;
  // kvm target: its inventory (nullptr if the target could not be read: `target_error`).
  const hypervisor::Inventory* target = nullptr;
  std::string target_error;
  // kvm target: the target agent's platform check for (arch, machine, firmware); nullopt if
  // not asked or it failed (`target_error`).
  std::optional<bool> machine_ok;
  std::optional<bool> firmware_ok;
  std::string platform_message;
  // share target: whether the share exists and is writable, and the folder names it holds.
  bool share_writable = false;
  std::vector<std::string> share_entries;
  // Files that already exist in each target pool (name clash check), by pool name.
  std::vector<std::pair<std::string, std::vector<std::string>>> pool_files;
  // Disks other VMs of the same plan already put into each pool (bytes of virtual size and
  // of allocated data), so that the capacity check covers the whole plan.
  std::vector<std::pair<std::string, std::pair<uint64_t, uint64_t>>> pool_claims;
  // Target names earlier VMs of the same plan resolved to (two VMs must not get one name).
  std::vector<std::string> claimed_names;
};

struct Resolution {
  TargetVm vm;                // complete when ok()
  std::vector<Check> checks;  // every check, passed or not, in the doc's order
  bool ok() const;
  std::string FailureSummary() const;  // "networks_mapped: ...; pool_capacity: ..."
};

// Resolves one VM of the plan and runs its checks (docs/plans.md "Validation"). A check that
// does not apply (target_networks, pool_capacity, machine_type, firmware for a share target;
// source_state for a share source) or whose inputs are missing because an earlier check
// failed (nothing after vm_found when the VM is not found; no target checks when the target
// could not be read) is left out; ok() is false whenever any reported check failed.
// The platform check needs the resolved (arch, machine, firmware): resolve once without
// machine_ok/firmware_ok (machine_type and firmware then fail as "not checked"), ask the
// target agent about vm.arch/vm.machine/vm.firmware, and resolve again with the answers.
// REQUIRES: in.plan and in.entry are set; in.entry points into in.plan->vms.
Resolution ResolvePlanVm(const ResolveInput& in);

// Adds what `resolution`'s disks put into each target pool (virtual size, and allocated data:
// the source disk's allocation, its capacity when unknown) to `claims`, the form
// ResolveInput::pool_claims takes for the plan's next VMs. Share targets claim nothing.
// REQUIRES: resolution came from ResolvePlanVm for `vm`.
void AddPoolClaims(const Resolution& resolution, const sources::VmDescription& vm,
                   std::vector<std::pair<std::string, std::pair<uint64_t, uint64_t>>>* claims);

}  // namespace ferry::plan
