// VmDescription: what Ferry knows about a VM that is to be moved, whatever it came from: an
// OVF (VMware), a Hyper-V configuration, a libvirt domain (a KVM host or a libvirt export),
// Ferry's own vm.json (a staging share), or a bare disk. Plans resolve it against their
// mappings and target options (src/plan/plan.h); staging plans write it as vm.json.
//
// The JSON form is an on-disk and on-wire format: docs/formats/vm-description.md. Parsing
// treats the text as UNTRUSTED (a share's vm.json, an agent's answer): a wrong type, an
// unknown enum name, an absurd number or an over-long list is kCorrupt naming the file and the
// field path ("db1/vm.json: disks[0].capacity_bytes: expected an unsigned integer").
//
// Thread-safety: plain values and pure functions.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace ferry::sources {

enum class Platform { kUnknown, kKvm, kVmware, kHyperV, kFerry };
std::string_view PlatformName(Platform p);  // "unknown", "kvm", "vmware", "hyperv", "ferry"
Result<Platform> ParsePlatform(std::string_view name);

struct DiskDescription {
  std::string id;       // unique within the VM: "disk0", "disk1", ... in boot/bus order
  std::string file;     // absolute path on the source agent's host (an OVA: the .ova itself)
  std::string format;   // FormatName(): "qcow2", "raw", "vmdk", "vhdx", "vhd", "ova"
  int ova_disk_index = -1;     // format "ova": which OVF disk (OpenOptions::ova_disk_index)
  uint64_t capacity_bytes = 0;   // virtual size (0 = unknown until the image is opened)
  uint64_t allocated_bytes = 0;  // guest data stored (0 = unknown)
  std::string bus;        // the source's controller: "virtio", "scsi", "sata", "ide", "" unknown
  std::string datastore;  // storage mapping key: a KVM pool, a VMware datastore, a share name
  std::string source_ref; // the source's own name for it ("vda", OVF diskId, Hyper-V path)
};

struct NicDescription {
  std::string id;       // "nic0", ...
  std::string network;  // source network / port group / virtual switch name ("" unknown)
  std::string mac;      // "52:54:00:fe:00:01" lower case, colon separated ("" = none)
  std::string model;    // source adapter: "virtio", "e1000", "vmxnet3", "hyperv-synthetic" ...
};

// Direct kernel boot (libvirt <os><kernel>), only KVM sources have it. Paths on the source host.
struct DirectBoot {
  std::string kernel;
  std::string initrd;
  std::string cmdline;
  bool operator==(const DirectBoot&) const = default;
};

struct VmDescription {
  std::string name;
  std::string uuid;  // the source's UUID, lower case ("" unknown)
  Platform platform = Platform::kUnknown;
  int vcpus = 0;              // 0 = unknown
  uint64_t memory_bytes = 0;  // 0 = unknown
  std::string firmware;       // "bios", "uefi", "" = unknown
  std::string machine;        // "pc", "q35", a libvirt machine type, "" = unknown
  std::string arch = "x86_64";
  std::string os;             // free text hint ("ubuntu64Guest", "windows2019srv_64Guest")
  bool running = false;       // KVM sources: the VM runs now
  DirectBoot direct_boot;     // empty kernel = boots from its disks
  std::vector<DiskDescription> disks;
  std::vector<NicDescription> nics;
  // What the descriptor does not say and a plan must supply: "vcpus", "memory", "firmware".
  std::vector<std::string> missing;
  // Deviations that did not stop reading ("OVF: unknown ResourceType 23 ignored").
  std::vector<std::string> problems;
  std::string descriptor;  // the file it was read from ("" for a libvirt inventory)
};

// JSON (docs/formats/vm-description.md). `where` names the text in error messages.
std::string ToJson(const VmDescription& vm);
Result<VmDescription> VmDescriptionFromJson(std::string_view json, const std::string& where);

// "00155D0A0B0C", "00-15-5D-0A-0B-0C", "00:15:5D:0A:0B:0C" -> "00:15:5d:0a:0b:0c". kCorrupt if
// `text` is not 12 hex digits with optional ':' '-' '.' separators.
Result<std::string> NormalizeMac(std::string_view text);

// Fills `missing` from the fields that are still unknown (vcpus, memory, firmware).
void ComputeMissing(VmDescription& vm);

}  // namespace ferry::sources
