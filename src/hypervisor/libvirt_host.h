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
#include "hypervisor/operations.h"

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

  // --- Domain definitions and power ---------------------------------------------------
  // The domain's XML: flags none (live), or inactive=true for the persistent definition,
  // migratable=true for the form fit for another host (VIR_DOMAIN_XML_MIGRATABLE).
  Result<std::string> DomainXml(const std::string& name, bool inactive = false,
                                bool migratable = false) const;
  Status DefineXml(const std::string& xml) const;        // persistent definition
  Status Undefine(const std::string& name) const;        // also removes NVRAM, if any
  Status Start(const std::string& name) const;
  Status Destroy(const std::string& name) const;         // hard power-off
  Status Shutdown(const std::string& name) const;        // ACPI request, returns at once
  Status Suspend(const std::string& name) const;
  Status Resume(const std::string& name) const;
  Result<VmState> State(const std::string& name) const;  // kNotFound if no such domain

  // --- Live migration (this connection is the source) ---------------------------------
  // Blocks until the migration finished (OK), failed or was aborted (kIo / kCancelled with
  // libvirt's message). Run it on its own thread; the calls below may be made meanwhile
  // from other threads to watch and steer it (Migrate, Save and Restore run on a connection
  // of their own: libvirt 9.0's client stalls other calls on a connection that is waiting
  // for a migration).
  Status Migrate(const std::string& name, const MigrateParams& params) const;
  // Statistics of the domain's current job (completed=true: of the last finished job).
  Result<JobStats> GetJobStats(const std::string& name, bool completed = false) const;
  Status AbortJob(const std::string& name) const;
  Status SetMaxDowntime(const std::string& name, int64_t ms) const;
  Status SetMaxSpeed(const std::string& name, uint64_t bytes_per_s) const;  // 0 = no cap
  // Switches a running migration started with allow_postcopy to post-copy.
  Status StartPostCopy(const std::string& name) const;
  // Measures the guest's memory dirty rate over `seconds` (virDomainStartDirtyRateCalc,
  // then virConnectGetAllDomainStats DIRTYRATE); bytes/s. Blocks for about `seconds`.
  Result<uint64_t> MeasureDirtyRate(const std::string& name, int seconds) const;

  // --- Save / restore (quick migration) -------------------------------------------------
  // Saves the running domain's memory to `path` (virDomainSave; the domain stops, its
  // definition stays).
  Status Save(const std::string& name, const std::string& path) const;
  // Restores a saved domain on this host (virDomainRestoreFlags; it runs again, transient
  // unless a domain of that name is defined here). dest_xml != "" replaces the definition
  // stored in the file (same guest ABI, e.g. other disk paths).
  Status Restore(const std::string& path, const std::string& dest_xml = "") const;

  // --- Block copy (live storage migration) ----------------------------------------------
  // Starts mirroring `params.disk` to a file (virDomainBlockCopy, returns at once; watch it
  // with GetBlockJob). Works on persistent domains: libvirt 9.0 refuses a block copy on a
  // persistent domain unless VIR_DOMAIN_BLOCK_COPY_TRANSIENT_JOB is given, so it always is
  // (the job does not survive a libvirtd restart; a restarted daemon leaves the source disk
  // in use and the copy abandoned).
  Status BlockCopy(const std::string& name, const BlockCopyParams& params) const;
  Result<BlockJob> GetBlockJob(const std::string& name, const std::string& disk) const;
  // Ends a ready copy job switching the domain to the copy (pivot=true) or abandoning it;
  // waits until libvirt finished. After a pivot libvirt 9.0 also rewrites the persistent
  // definition's disk source (as <disk type='file'> with the copy's path and format).
  Status BlockJobAbort(const std::string& name, const std::string& disk, bool pivot) const;

  // --- Validation and storage -----------------------------------------------------------
  // Can a guest with this <cpu> (or whole domain) XML run on this host?
  // (virConnectCompareHypervisorCPU). A domain XML gives its <cpu>, domain type, arch and
  // machine (fields of `target` override them); a domain without <cpu> is kIdentical (it
  // gets the hypervisor's default model). kInvalidArgument for XML that is neither.
  Result<CpuCheck> CompareCpu(const std::string& xml, const CpuTarget& target = {}) const;
  // Machine types this host's emulator accepts for `arch` ("pc-i440fx-7.2", "pc", "q35", ...).
  Result<std::vector<std::string>> MachineTypes(const std::string& arch) const;
  // Whether UEFI firmware is available for `arch`/`machine` (domain capabilities loader).
  Result<bool> SupportsUefi(const std::string& arch, const std::string& machine) const;
  // Creates a volume in `pool`; returns its path. kAlreadyExists if the name is taken.
  Result<std::string> CreateVolume(const std::string& pool, const std::string& name,
                                   uint64_t capacity, const std::string& format) const;
  // Deletes the volume at `path` (looked up by path; kNotFound if no pool holds it).
  Status DeleteVolume(const std::string& path) const;
  Status RefreshPool(const std::string& pool) const;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace ferry::hypervisor
