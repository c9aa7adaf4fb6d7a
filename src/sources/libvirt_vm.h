// Describes a VM of a KVM host for a cold migration: the agent's GET
// /agent/v1/vms/{name}/description and the export of a KVM source (docs/plans.md, "Sources").
//
// Thread-safety: pure functions.
#pragma once

#include <string>

#include "common/status.h"
#include "hypervisor/inventory.h"
#include "sources/vm_description.h"

namespace ferry::sources {

// The description of a libvirt VM from its inactive domain XML (VIR_DOMAIN_XML_INACTIVE: the
// configuration it boots with) and what the host's inventory says of it now (`info`): running
// = info.state is running, blocked, paused, shutting down or pm-suspended; each disk's
// datastore = its storage pool (info.disks[].pool, matched by target), capacity and
// allocation from info, a volume disk's file = info's source path. Only device=disk
// file-backed disks are described; the others are problem lines ("vdb: network disk cannot
// be moved cold", "hdc: cdrom is not moved"). platform kvm, descriptor "".
// Errors: kCorrupt / kTooLarge naming the domain when the XML is malformed or over a cap.
Result<VmDescription> DescribeLibvirtVm(const std::string& inactive_domain_xml,
                                        const hypervisor::VmInfo& info);

}  // namespace ferry::sources
