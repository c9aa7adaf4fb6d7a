// Parsers for the libvirt XML documents the hypervisor wrapper reads: domain XML (a VM's
// static description), storage pool XML, network XML and the host capabilities XML.
//
// The XML comes from a libvirtd we do not control (and, for domains, from users), so it is
// treated as untrusted: size and count caps, checked number parsing, and errors as
// Status::Corrupt naming the element ("domain XML: <memory>: 'abc' is not a number"). Elements
// Ferry does not need are ignored. No libvirt is needed: these are unit-tested on samples.
//
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <string_view>

#include "common/status.h"
#include "hypervisor/inventory.h"

namespace ferry::hypervisor {

// Caps on untrusted XML.
inline constexpr size_t kMaxXmlBytes = 16 << 20;
inline constexpr size_t kMaxDevices = 1024;  // disks, interfaces per domain
inline constexpr int kMaxVcpus = 16384;      // above libvirt's own limit for QEMU

// A domain XML's static parts: name, uuid, domain type, vCPUs, memory (with units), os type
// machine/arch, firmware (bios/uefi), disks (target, bus, device, type, format, source path or
// pool/volume) and interfaces (MAC, model, network/bridge, type). Leaves state, persistent and
// disk capacity/allocation at their defaults: those come from libvirt calls.
Result<VmInfo> ParseDomainXml(std::string_view xml);

// A running domain's live XML shows an interface on a libvirt network in bridge forward mode
// as what it resolved to (type "bridge", the Linux bridge). This puts back the configured
// network (type "network", its name) from `config` (the VIR_DOMAIN_XML_INACTIVE parse),
// matching interfaces by MAC, and keeps the bridge in VmNic::bridge.
void MergeConfiguredNics(VmInfo& live, const VmInfo& config);

// A storage pool XML: name, type, target path. Capacity numbers come from virStoragePoolGetInfo.
Result<PoolInfo> ParsePoolXml(std::string_view xml);

// A network XML: name, bridge, forward mode. `active` is left false.
Result<NetworkInfo> ParseNetworkXml(std::string_view xml);

// Capabilities XML: host CPU model and arch, and the domain types any guest arch offers
// (deduplicated, in document order). Only those fields of the result are set.
Result<HostFacts> ParseCapabilitiesXml(std::string_view xml);

// "<n> <unit>" as libvirt writes memory and sizes: unit b/bytes, KB/MB/GB/TB/PB/EB (powers of
// 1000), k/KiB/M/MiB/G/GiB/T/TiB/P/PiB/E/EiB (powers of 1024); "" = `default_unit`.
// `what` names the element for errors.
Result<uint64_t> ScaleXmlSize(std::string_view number, std::string_view unit,
                              std::string_view default_unit, std::string_view what);

}  // namespace ferry::hypervisor
