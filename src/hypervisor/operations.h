// Plain value types for the operations LibvirtHost performs (libvirt_host.h): live
// migration parameters and job statistics, block copy jobs, CPU comparison. No libvirt type
// appears here. Sizes are bytes, rates bytes per second, times milliseconds.
//
// Thread-safety: plain values.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace ferry::hypervisor {

// One call of virDomainMigrateToURI3 (peer-to-peer: the source libvirtd talks to the
// destination's directly).
struct MigrateParams {
  std::string dest_uri;        // libvirt URI of the destination: "qemu+tcp://127.0.0.12/system"
  std::string migration_uri;   // QEMU's stream address on the destination: "tcp://127.0.0.12"
  bool live = true;            // VIR_MIGRATE_LIVE (else the VM is paused during the copy)
  bool persist_dest = true;    // VIR_MIGRATE_PERSIST_DEST
  bool undefine_source = true; // VIR_MIGRATE_UNDEFINE_SOURCE
  bool non_shared_disk = false;  // VIR_MIGRATE_NON_SHARED_DISK: copy the disks too (live VSM)
  // With non_shared_disk: only these disk targets ("vda"); empty = every writable disk.
  std::vector<std::string> migrate_disks;
  bool auto_converge = false;  // VIR_MIGRATE_AUTO_CONVERGE (QEMU throttles the guest's vCPUs)
  bool allow_postcopy = false; // VIR_MIGRATE_POSTCOPY (StartPostCopy may switch to it)
  // VIR_MIGRATE_UNSAFE: migrate although libvirt thinks the disks are not safely shared. The
  // lab needs it: its shared pools are plain folders libvirt 9.0 cannot tell are shared
  // (docs/lab.md). Never set it for real hosts without knowing why.
  bool unsafe = false;
  std::string dest_xml;        // VIR_MIGRATE_PARAM_DEST_XML ("" = the source's, unchanged)
  // VIR_MIGRATE_PARAM_PERSIST_XML: the definition persisted on the destination with
  // persist_dest ("" = the source's persistent definition, or dest_xml's live form).
  std::string persist_xml;
  std::string dest_name;       // VIR_MIGRATE_PARAM_DEST_NAME ("" = same name)
  // VIR_MIGRATE_PARAM_BANDWIDTH in bytes/s (rounded up to libvirt's MiB/s); 0 = not set:
  // libvirt then uses the domain's migration speed, unlimited unless SetMaxSpeed lowered it
  // (libvirt 9.0 lifts QEMU's own 128 MiB/s default when the migration starts).
  uint64_t bandwidth = 0;
  // Downtime limit set with virDomainMigrateSetMaxDowntime just before the migration starts
  // (libvirt 9.0 has no migration parameter for it; QEMU keeps the value for the migration);
  // 0 = leave the domain's current limit (QEMU's default 300 ms).
  int64_t max_downtime_ms = 0;
};

// virDomainGetJobStats, named. Fields libvirt did not report stay 0.
struct JobStats {
  bool active = false;        // a job is running now
  std::string type;           // "none", "bounded", "unbounded", "completed", "failed", "cancelled"
  std::string operation;      // "migration-out", "save", "restore", ...
  int64_t elapsed_ms = 0;
  uint64_t data_total = 0;       // memory + disks
  uint64_t data_processed = 0;
  uint64_t data_remaining = 0;
  uint64_t memory_total = 0;
  uint64_t memory_processed = 0;
  uint64_t memory_remaining = 0;
  uint64_t memory_bps = 0;              // current transfer rate of memory
  uint64_t memory_dirty_rate = 0;       // bytes/s the guest dirties (pages/s x page size)
  uint64_t memory_iteration = 0;        // pre-copy pass number
  uint64_t memory_postcopy_requests = 0;
  uint64_t disk_total = 0;
  uint64_t disk_processed = 0;
  uint64_t disk_remaining = 0;
  int64_t downtime_ms = 0;       // QEMU's measured (completed) or expected downtime
  bool downtime_is_expected = false;
  int auto_converge_throttle = 0;  // percent
  bool postcopy = false;           // the migration switched to post-copy
};

// virDomainGetBlockJobInfo for one disk.
struct BlockJob {
  bool exists = false;
  std::string type;  // "copy", "pull", "commit", "active-commit"
  uint64_t cur = 0;
  uint64_t end = 0;
  bool ready = false;  // the mirror caught up (cur == end and the job reported ready)
};

struct BlockCopyParams {
  std::string disk;         // the guest's disk target: "vda"
  std::string dest_path;    // file to copy to
  std::string dest_format;  // "qcow2" or "raw"
  bool reuse_existing = false;     // VIR_DOMAIN_BLOCK_COPY_REUSE_EXT (else libvirt creates it)
  bool synchronous_writes = true;  // VIR_DOMAIN_BLOCK_COPY_SYNCHRONOUS_WRITES once ready
  uint64_t bandwidth = 0;          // VIR_DOMAIN_BLOCK_COPY_BANDWIDTH, bytes/s; 0 = no cap
};

enum class CpuCompatibility { kIncompatible, kIdentical, kSuperset, kError };

// Where the guest would run, for CompareCpu: "" = taken from the domain XML if one was given,
// else libvirt's default (which picks "kvm" when /dev/kvm exists, even where KVM is unusable:
// give "qemu" for TCG guests).
struct CpuTarget {
  std::string virttype;  // "qemu" or "kvm"
  std::string arch;      // "x86_64"
  std::string machine;   // "pc-i440fx-7.2"
};

struct CpuCheck {
  CpuCompatibility result = CpuCompatibility::kError;
  std::string message;  // libvirt's explanation when incompatible
};

}  // namespace ferry::hypervisor
