// libvirt domain XML -> VmDescription: ParseLibvirtDomain (share.h, libvirt exports) and
// DescribeLibvirtVm (libvirt_vm.h, a KVM host's VM). The domain's static parts come from
// hypervisor::ParseDomainXml; direct kernel boot is read here.
#include "sources/libvirt_vm.h"

#include <pugixml.hpp>
#include <string>

#include "disk/image.h"
#include "hypervisor/domain_xml.h"
#include "sources/limits.h"
#include "sources/share.h"

namespace ferry::sources {
namespace {

std::string Trim(std::string_view s) {
  constexpr std::string_view kSpace = " \t\r\n";
  const size_t b = s.find_first_not_of(kSpace);
  if (b == std::string_view::npos) return {};
  const size_t e = s.find_last_not_of(kSpace);
  return std::string(s.substr(b, e - b + 1));
}

std::string Lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// <os><kernel>, <initrd>, <cmdline> (the hypervisor parser does not read them).
Result<DirectBoot> ParseDirectBoot(std::string_view xml, const std::string& where) {
  pugi::xml_document doc;
  const pugi::xml_parse_result r =
      doc.load_buffer(xml.data(), xml.size(), pugi::parse_default, pugi::encoding_utf8);
  if (!r) {
    return Status::Corrupt(where + ": domain XML: malformed XML at byte " +
                           std::to_string(r.offset) + ": " + r.description());
  }
  const pugi::xml_node os = doc.document_element().child("os");
  DirectBoot boot;
  boot.kernel = Trim(os.child_value("kernel"));
  boot.initrd = Trim(os.child_value("initrd"));
  boot.cmdline = Trim(os.child_value("cmdline"));
  for (const std::string* s : {&boot.kernel, &boot.initrd, &boot.cmdline}) {
    if (s->size() > kMaxStringBytes) {
      return Status::Corrupt(where + ": domain XML: <os> direct boot value of " +
                             std::to_string(s->size()) + " bytes, more than the cap of " +
                             std::to_string(kMaxStringBytes));
    }
  }
  if (boot.kernel.empty() && (!boot.initrd.empty() || !boot.cmdline.empty())) {
    return Status::Corrupt(where + ": domain XML: <os> has <initrd> or <cmdline> but no <kernel>");
  }
  return boot;
}

std::string KnownBus(const std::string& bus) {
  for (const char* known : {"virtio", "scsi", "sata", "ide"}) {
    if (bus == known) return bus;
  }
  return "";
}

std::string DiskTypeNoun(const std::string& type) {
  if (type == "block") return "block device";
  if (type == "network") return "network disk";
  if (type == "volume") return "storage volume disk";
  if (type == "dir") return "directory disk";
  return "'" + type.substr(0, 32) + "' disk";
}

// `live` (may be null): the inventory's view, which resolves volume disks to files.
Result<VmDescription> Describe(std::string_view xml, const std::string& where,
                               const hypervisor::VmInfo* live) {
  auto parsed = hypervisor::ParseDomainXml(xml);
  if (!parsed.ok()) return parsed.status().WithContext(where);
  const hypervisor::VmInfo& dom = *parsed;
  FERRY_ASSIGN_OR_RETURN(const DirectBoot boot, ParseDirectBoot(xml, where));

  VmDescription vm;
  vm.platform = Platform::kKvm;
  vm.name = dom.name;
  vm.uuid = Lower(dom.uuid);
  if (vm.name.size() > kMaxStringBytes) {
    return Status::Corrupt(where + ": domain XML: <name> longer than " +
                           std::to_string(kMaxStringBytes) + " bytes");
  }
  vm.vcpus = dom.vcpus;
  if (vm.vcpus > 4096) {
    return Status::Corrupt(where + ": domain XML: <vcpu>: " + std::to_string(vm.vcpus) +
                           " vCPUs, more than 4096");
  }
  vm.memory_bytes = dom.memory_bytes;
  if (vm.memory_bytes > kMaxMemoryBytes) {
    return Status::Corrupt(where + ": domain XML: <memory>: " + std::to_string(vm.memory_bytes) +
                           " bytes, more than 16 TiB");
  }
  vm.firmware = std::string(hypervisor::FirmwareName(dom.firmware));
  vm.machine = dom.machine_type;
  if (!dom.arch.empty()) vm.arch = dom.arch;
  vm.direct_boot = boot;

  for (const hypervisor::VmDisk& d : dom.disks) {
    if (d.device != "disk") {
      AddProblem(vm, d.target + ": " + d.device + " is not moved");
      continue;
    }
    std::string file = d.source_path;
    const hypervisor::VmDisk* known = nullptr;
    if (live != nullptr) {
      for (const hypervisor::VmDisk& l : live->disks) {
        if (l.target == d.target) known = &l;
      }
    }
    const bool volume_with_file = d.type == "volume" && known != nullptr &&
                                  !known->source_path.empty() && known->type != "block";
    if (d.type != "file" && !volume_with_file) {
      AddProblem(vm, d.target + ": " + DiskTypeNoun(d.type) + " cannot be moved cold");
      continue;
    }
    if (volume_with_file) file = known->source_path;
    if (file.empty()) {
      AddProblem(vm, d.target + ": no source file (empty drive) is not moved");
      continue;
    }
    if (vm.disks.size() >= kMaxDisks) {
      return Status::TooLarge(where + ": domain XML: more than " + std::to_string(kMaxDisks) +
                              " disks to move");
    }
    DiskDescription disk;
    disk.id = "disk" + std::to_string(vm.disks.size());
    disk.file = file;
    if (!d.format.empty()) {
      auto format = ParseImageFormat(d.format);
      disk.format = format.ok() ? std::string(FormatName(*format)) : Lower(d.format);
    }
    disk.bus = KnownBus(d.bus);
    disk.source_ref = d.target;
    if (known != nullptr) {
      disk.datastore = known->pool;
      disk.capacity_bytes = known->capacity_bytes;
      disk.allocated_bytes = known->allocation_bytes;
    } else if (!d.pool.empty()) {
      disk.datastore = d.pool;
    }
    vm.disks.push_back(std::move(disk));
  }

  for (const hypervisor::VmNic& n : dom.nics) {
    if (vm.nics.size() >= kMaxNics) {
      return Status::TooLarge(where + ": domain XML: more than " + std::to_string(kMaxNics) +
                              " interfaces");
    }
    NicDescription nic;
    nic.id = "nic" + std::to_string(vm.nics.size());
    nic.network = n.network;
    nic.model = n.model;
    if (!n.mac.empty()) {
      auto mac = NormalizeMac(n.mac);
      if (mac.ok()) {
        nic.mac = *mac;
      } else {
        AddProblem(vm, nic.id + ": " + mac.status().message() + " (no MAC kept)");
      }
    }
    vm.nics.push_back(std::move(nic));
  }
  ComputeMissing(vm);
  FERRY_TRY(CheckDescriptionLimits(vm, where + ": domain XML"));
  return vm;
}

}  // namespace

Result<VmDescription> ParseLibvirtDomain(std::string_view xml, const std::string& where) {
  return Describe(xml, where, nullptr);
}

Result<VmDescription> DescribeLibvirtVm(const std::string& inactive_domain_xml,
                                        const hypervisor::VmInfo& info) {
  FERRY_ASSIGN_OR_RETURN(VmDescription vm,
                         Describe(inactive_domain_xml, "domain " + info.name, &info));
  using hypervisor::VmState;
  vm.running = info.state == VmState::kRunning || info.state == VmState::kBlocked ||
               info.state == VmState::kPaused || info.state == VmState::kShutdown ||
               info.state == VmState::kPmSuspended;
  if (vm.uuid.empty()) vm.uuid = Lower(info.uuid);
  vm.descriptor.clear();
  return vm;
}

}  // namespace ferry::sources
