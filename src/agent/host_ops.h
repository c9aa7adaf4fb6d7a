// HostOps: what ferry-agent's request handlers ask of the host's libvirtd (inventory, a VM,
// its XML, CPU and platform checks). In production NewLibvirtHostOps wraps one
// hypervisor::LibvirtHost connection; unit tests of the service pass a fake.
//
// Thread-safety: implementations are called from several request threads at once and must be
// thread-safe.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "hypervisor/inventory.h"
#include "hypervisor/operations.h"

namespace ferry::agent {

class HostOps {
 public:
  virtual ~HostOps() = default;
  // Makes sure there is a connection (the service calls it once at start to report early).
  virtual Status Connect() = 0;
  virtual Result<hypervisor::Inventory> Inventory() = 0;
  virtual Result<hypervisor::VmInfo> GetVm(const std::string& name) = 0;
  virtual Result<std::string> DomainXml(const std::string& name, bool inactive,
                                        bool migratable) = 0;
  virtual Result<hypervisor::CpuCheck> CompareCpu(const std::string& cpu_xml,
                                                  const hypervisor::CpuTarget& target) = 0;
  virtual Result<std::vector<std::string>> MachineTypes(const std::string& arch) = 0;
  virtual Result<bool> SupportsUefi(const std::string& arch, const std::string& machine) = 0;
};

// One libvirt connection to `uri`, opened on first use (or by Connect()). A call that fails
// with kIo drops the connection and is retried once on a fresh one, so a restarted libvirtd
// is picked up again without restarting the agent.
std::unique_ptr<HostOps> NewLibvirtHostOps(std::string uri);

}  // namespace ferry::agent
