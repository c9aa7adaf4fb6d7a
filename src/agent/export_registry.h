// ExportRegistry: the source side of a cold migration (docs/plans.md, "Agent API additions").
// An export makes a VM's disks readable over NBD for a target agent: a libvirt VM on this host
// is shut down first (graceful, then forced if allowed), a share VM's files are opened as they
// are. Each disk is served read-only through Ferry's readers (NbdServer) under an export name
// that carries a random token, and hashed in the background (HashChunks) so the target can
// verify what it wrote.
//
// Persistence: state_dir/exports/<id>.json holds the spec, was_running and state (written to a
// temporary file, fsynced, renamed). Start() reloads them: exports that were preparing or
// serving are prepared again (the VM is already off: no shutdown needed) and served on a new
// port; closed and failed ones are kept for GET.
//
// Safety: the source's files are only ever opened read-only. Close(restore_power=true) starts
// the libvirt VM again if was_running and it is shut off now; Close never deletes anything.
//
// Ownership: owns its NBD server(s) and hashing threads. Thread-safety: every method is
// thread-safe.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "agent/cold_spec.h"
#include "common/status.h"
#include "hypervisor/inventory.h"

namespace ferry::agent {

// What the registry needs of this host's libvirtd (a fake in unit tests).
class ExportHost {
 public:
  virtual ~ExportHost() = default;
  // The VM's inactive domain XML and whether it runs now (kNotFound if no such VM).
  virtual Result<std::string> DomainXml(const std::string& vm) = 0;
  virtual Result<bool> IsRunning(const std::string& vm) = 0;
  virtual Status Shutdown(const std::string& vm) = 0;  // ACPI request, returns at once
  virtual Status Destroy(const std::string& vm) = 0;   // power off
  virtual Status Start(const std::string& vm) = 0;
  // The VM as the host's inventory reports it: state, disks with their files (a volume disk's
  // resolved path), pools and sizes (kNotFound if no such VM). DescribeLibvirtVm needs it for
  // each disk's datastore and for volume disks.
  virtual Result<hypervisor::VmInfo> GetVm(const std::string& vm) = 0;
};
std::unique_ptr<ExportHost> NewLibvirtExportHost(std::string libvirt_uri);

struct ExportRegistryOptions {
  std::string state_dir;
  std::string data_address;                                 // NBD listen host, e.g. "127.0.0.11"
  std::vector<std::pair<std::string, std::string>> shares;  // name -> folder
  std::unique_ptr<ExportHost> host;  // nullptr: libvirt VMs cannot be exported (kUnsupported)
  std::function<int64_t()> now_ms;   // nullptr = system clock
  std::function<void(const std::string&)> log;  // nullptr = stderr
  int hash_workers = 2;  // HashChunks threads per export (reads compete with NBD clients)
};

class ExportRegistry {
 public:
  explicit ExportRegistry(ExportRegistryOptions options);
  ~ExportRegistry();  // stops serving and hashing
  ExportRegistry(const ExportRegistry&) = delete;
  ExportRegistry& operator=(const ExportRegistry&) = delete;

  Status Start();  // creates state_dir/exports, reloads
  // Creates (or, same id and spec, returns) an export; preparation (shutdown, opening,
  // serving, hashing) goes on in the background: poll Get(). Same id, other spec:
  // kAlreadyExists. A closed export with the same id and spec is opened again.
  Result<ExportInfo> Create(const ExportSpec& spec, bool* existed);
  Result<ExportInfo> Get(const std::string& id) const;  // kNotFound
  std::vector<ExportInfo> List() const;
  // Stops serving and hashing (an export still preparing stops where it is: a shutdown in
  // progress is not waited for) and marks it closed. restore_power: a libvirt VM that ran
  // before the export and is shut off now is started again (also when the export was already
  // closed, so a retried close can finish what a failed start left). kNotFound for an unknown
  // id; an error starting the VM is returned after the export is closed.
  Result<ExportInfo> Close(const std::string& id, bool restore_power);

 private:
  struct Entry;

  Status Load();
  void StartWorker(Entry& entry);
  void RunWorker(Entry* entry);
  Status Prepare(Entry& entry);
  Status ShutDownVm(Entry& entry);
  void HashDisks(Entry& entry);
  // Writes the entry's file; errors are returned and logged.
  Status Persist(Entry& entry);
  ExportInfo Snapshot(const Entry& entry) const;  // REQUIRES: mu_ held
  void Log(const std::string& line) const;

  ExportRegistryOptions options_;
  std::string dir_;  // state_dir/exports
  mutable std::mutex mu_;
  std::map<std::string, std::unique_ptr<Entry>> exports_;  // GUARDED_BY(mu_)
};

}  // namespace ferry::agent
