// DomainBuilder: the libvirt domain XML for a VM Ferry creates on a KVM host (a cold migration's
// deploy step, docs/plans.md). Pure: the caller supplies every path; nothing is looked up.
//
// What it writes: <domain type=domain_type> with name, uuid, vcpus, memory, <os> (machine,
// arch; firmware='efi' for uefi; kernel/initrd/cmdline for direct boot, else boot from the
// first disk), features acpi/apic, cpu mode host-model for kvm (none for qemu/TCG), clock utc,
// on_poweroff destroy / on_reboot restart / on_crash destroy, every disk as a file disk with
// driver type and cache='none', io native off; bus virtio|scsi (with one virtio-scsi
// controller)|sata|ide and the given dev names; every NIC as type='network' with its model and
// MAC; a serial console (pty) whose output is logged to console_log, and a Ferry metadata
// element <ferry:migration xmlns:ferry="https://ferry.dev/xmlns/libvirt/1"> with the given
// key/values.
//
// Thread-safety: pure function.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "common/status.h"

namespace ferry::hypervisor {

struct DomainDiskSpec {
  std::string path;    // image file on the host
  std::string format;  // "qcow2" | "raw"
  std::string bus;     // "virtio" | "scsi" | "sata" | "ide"
  std::string dev;     // "vda", "sda", "hda"
};

struct DomainNicSpec {
  std::string network;  // libvirt network name
  std::string mac;      // "" = libvirt chooses
  std::string model;    // "virtio", "e1000", "e1000e", "rtl8139"
};

struct DomainSpec {
  std::string name;
  std::string uuid;              // "" = libvirt generates one
  std::string domain_type = "kvm";  // "kvm" or "qemu" (TCG)
  int vcpus = 1;
  uint64_t memory_bytes = 0;     // rounded up to KiB
  std::string arch = "x86_64";
  std::string machine = "pc";
  std::string firmware = "bios";  // "bios" | "uefi"
  std::string kernel, initrd, cmdline;  // direct boot when kernel is set
  std::vector<DomainDiskSpec> disks;
  std::vector<DomainNicSpec> nics;
  std::string console_log;       // file the serial console is logged to ("" = no log)
  std::vector<std::pair<std::string, std::string>> metadata;  // Ferry metadata attributes
};

// kInvalidArgument naming the field for an empty name, zero memory or vCPUs, an unknown bus,
// format, firmware or domain type, a duplicate dev, or text that cannot be put into XML.
Result<std::string> BuildDomainXml(const DomainSpec& spec);

}  // namespace ferry::hypervisor
