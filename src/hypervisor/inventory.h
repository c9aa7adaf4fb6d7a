// Plain value types describing a libvirt host and what it holds: host facts, VMs with their
// disks and NICs, storage pools and networks. The hypervisor wrapper (libvirt_host.h) fills
// them; the agent serializes them into its inventory reports. No libvirt type appears here.
//
// Sizes are bytes. Strings are as libvirt reports them unless a field says otherwise; an empty
// string means "not known / not present".
//
// Thread-safety: plain values; distinct objects may be used from different threads freely.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace ferry::hypervisor {

struct HostFacts {
  std::string hostname;
  std::string uri;        // the libvirt URI the facts were read through
  std::string cpu_model;  // host CPU model from the capabilities XML, e.g. "Skylake-Client-IBRS"
  std::string cpu_arch;   // e.g. "x86_64"
  int cpus = 0;           // active logical CPUs (virNodeGetInfo)
  uint64_t memory_bytes = 0;
  uint64_t free_memory_bytes = 0;
  std::string libvirt_version;            // the daemon's libvirt, "9.0.0"
  std::string hypervisor;                 // driver name, lower case: "qemu"
  std::vector<std::string> domain_types;  // <domain type=...> the host can run: "qemu", "kvm"
};

// libvirt's virDomainState, named.
enum class VmState {
  kNoState,
  kRunning,
  kBlocked,
  kPaused,
  kShutdown,  // shutting down
  kShutoff,
  kCrashed,
  kPmSuspended,
  kUnknown,
};
// "running", "paused", "shutoff", ...
std::string_view VmStateName(VmState state);

enum class Firmware { kBios, kUefi };
// "bios" or "uefi".
std::string_view FirmwareName(Firmware firmware);

struct VmDisk {
  std::string target;             // guest device name: "vda", "sda", "hdc"
  std::string bus;                // "virtio", "sata", "scsi", "ide", ...
  std::string device;             // "disk", "cdrom", "floppy", "lun"
  std::string type;               // <disk type=...>: "file", "block", "volume", "network"
  std::string format;             // <driver type=...>: "qcow2", "raw", ...
  std::string source_path;        // file or block device ("" for an empty cdrom or a network disk)
  std::string pool;               // storage pool holding it, if any
  std::string volume;             // volume name within `pool`, if known
  uint64_t capacity_bytes = 0;    // virtual size (0 = not known)
  uint64_t allocation_bytes = 0;  // space used on the host (0 = not known)
};

struct VmNic {
  std::string mac;
  std::string model;    // "virtio", "e1000", ...
  std::string network;  // network name for type "network", bridge for "bridge", device for "direct"
  std::string type;     // <interface type=...>: "network", "bridge", "direct", "user", ...
  std::string bridge;   // the Linux bridge it is plugged into, when libvirt says ("" if not)
};

struct VmInfo {
  std::string name;
  std::string uuid;
  VmState state = VmState::kUnknown;
  bool persistent = false;  // defined (survives shut-off), not only transient
  int vcpus = 0;            // current vCPUs
  int max_vcpus = 0;
  uint64_t memory_bytes = 0;  // <memory>: the maximum the guest is given
  std::string machine_type;   // e.g. "pc-i440fx-7.2", "q35"
  std::string arch;           // e.g. "x86_64"
  Firmware firmware = Firmware::kBios;
  std::string domain_type;  // "qemu" (TCG) or "kvm"
  std::vector<VmDisk> disks;
  std::vector<VmNic> nics;
};

struct PoolInfo {
  std::string name;
  std::string type;  // "dir", "netfs", "logical", ...
  std::string path;  // target path ("" if the pool has none)
  uint64_t capacity_bytes = 0;
  uint64_t allocation_bytes = 0;
  uint64_t available_bytes = 0;
  bool active = false;
};

struct NetworkInfo {
  std::string name;
  bool active = false;
  std::string bridge;        // Linux bridge name ("" if none)
  std::string forward_mode;  // "nat", "route", "bridge", "open", ...; "isolated" without <forward>
};

struct Inventory {
  HostFacts host;
  std::vector<VmInfo> vms;
  std::vector<PoolInfo> pools;
  std::vector<NetworkInfo> networks;
};

}  // namespace ferry::hypervisor
