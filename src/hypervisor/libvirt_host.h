// LibvirtHost: one connection to one libvirtd, through the libvirt C API, and the read side
// the agent needs: host facts, VMs (state, vCPUs, memory, firmware, machine type, disks with
// format, bus, size and pool, NICs), storage pools and networks. See docs/hypervisor.md for
// which libvirt call fills which field.
//
// No libvirt type appears in this header; the connection lives behind a private Impl.
//
// Ownership: the object owns its connection and closes it when destroyed.
// Thread-safety: every method is const-safe and may be called from several threads at once on
// the same object: libvirt connections are thread-safe, the object holds no mutable state of
// its own, and libvirt's last-error slot is thread-local. The first Connect() in a process
// calls virInitialize() and installs a no-op libvirt error handler (libvirt otherwise prints
// every error to stderr); errors are reported as Status values instead.
#pragma once

#include <memory>
#include <string>

#include "common/status.h"
#include "hypervisor/inventory.h"

namespace ferry::hypervisor {

class LibvirtHost {
  struct Impl;

 public:
  // Opens a read-write connection to `uri` ("qemu:///system", "qemu+tcp://127.0.0.11/system").
  // kIo with libvirt's message and the URI if the daemon cannot be reached.
  static Result<std::unique_ptr<LibvirtHost>> Connect(const std::string& uri);

  explicit LibvirtHost(std::unique_ptr<Impl> impl);
  ~LibvirtHost();
  LibvirtHost(const LibvirtHost&) = delete;
  LibvirtHost& operator=(const LibvirtHost&) = delete;

  const std::string& uri() const;

  // Everything at once: facts, all VMs (running and defined), pools, networks.
  Result<hypervisor::Inventory> Inventory() const;
  // One VM by name; kNotFound if the host has no such domain.
  Result<VmInfo> GetVm(const std::string& name) const;
  Result<HostFacts> Facts() const;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace ferry::hypervisor
