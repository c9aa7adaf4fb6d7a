// Export shares: folders on an agent's host that hold VMs exported from other platforms
// (VMware OVA/OVF, Hyper-V export folders, libvirt domain XML + disks, Ferry's vm.json +
// disks, bare disk images). ScanShare finds every VM in one and describes it; see
// docs/plans.md ("Sources") for the layouts recognized.
//
// Everything in a share is UNTRUSTED: descriptors are parsed with caps, disk references must
// stay inside the share (after resolving symlinks), a file that cannot be understood is
// reported in ShareScan::problems and skipped, never fatal for the rest of the share.
// Disk capacities and allocations come from opening each image through the image registry
// (src/disk/image.h), headers only: scanning never reads guest data.
//
// Thread-safety: pure functions over the filesystem; concurrent scans are fine.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"
#include "sources/vm_description.h"

namespace ferry::sources {

struct ShareVm {
  std::string id;     // descriptor path relative to the share root: "web1.ova", "db1/vm.json"
  std::string share;  // the share's name
  VmDescription vm;   // disks[].datastore = the share's name; disks[].file absolute
};

struct ShareScan {
  std::vector<ShareVm> vms;           // ordered by id
  std::vector<std::string> problems;  // "odd.ovf: OVF: ... (skipped)", sorted (by file)
};

struct ScanOptions {
  int max_depth = 4;          // folder levels below the root that are looked into
  size_t max_entries = 100000;  // files looked at, in all
  size_t max_descriptor_bytes = 16 << 20;
};

// Scans the share `name` at folder `root`. kNotFound if root is not a folder; everything else
// is a problem entry.
Result<ShareScan> ScanShare(const std::string& name, const std::string& root,
                            const ScanOptions& options = {});

// Reads one VM of a share by its id (the descriptor's relative path), as ScanShare would
// describe it. kNotFound if there is no such descriptor; kCorrupt/kUnsupported naming the file
// if it cannot be read; kPermissionDenied if the id or a disk escapes the share.
Result<ShareVm> ReadShareVm(const std::string& name, const std::string& root,
                            const std::string& id, const ScanOptions& options = {});

// Parses a Hyper-V virtual machine configuration XML (the pre-2016 export format, `Virtual
// Machines/<GUID>.xml`): name, vCPUs, memory, generation (2 = uefi), disks (their Windows
// paths in source_ref; `file` resolved by the caller against `Virtual Hard Disks/`), NICs
// (switch name, static MAC). `where` names the file in errors.
Result<VmDescription> ParseHyperVConfig(std::string_view xml, const std::string& where);

// Describes a libvirt domain XML (from a libvirt export folder): name, uuid, vCPUs, memory,
// machine, firmware, arch, disks (source files as written, bus), NICs (network or bridge, MAC,
// model), direct boot. Paths are returned as written; the caller resolves and polices them.
Result<VmDescription> ParseLibvirtDomain(std::string_view xml, const std::string& where);

}  // namespace ferry::sources
