// Migration jobs: what a ferry-agent runs on the VM's current host to move it, one
// function per transfer type, all through the libvirt wrapper (src/hypervisor). ferryd
// validates and schedules; the source host's agent runs the job and reports progress; the
// agent connects to the target host's libvirtd itself (as libvirt's peer-to-peer migration
// does), so one job on one agent moves one VM.
//
//   live          memory pre-copy to the target host, disks stay on shared storage; the
//                 convergence policy (docs/migration.md) measures the dirty rate, sets
//                 bandwidth and downtime, escalates (downtime steps within the budget,
//                 auto-converge, post-copy if allowed) and aborts cleanly when the budget
//                 cannot be met.
//   live-storage  the VM stays; each disk is block-copied to target_pool, verified, pivoted;
//                 the old copy is deleted only after the pivot and the verification.
//   live-vsm      host and storage together: volumes are created in target_pool on the
//                 target, then a live migration with non-shared-disk copy.
//   quick         save the VM's memory to a file on shared storage, restore on the target,
//                 define it there, undefine on the source; on failure restore on the source.
//   reregister    a shut-off VM whose disks the target sees: define there, undefine here.
//   cold          (runs on the TARGET host's agent, src/agent/cold_job.h) copy a shut-off
//                 VM's or an export's disks from the source agent's NBD export, verify,
//                 define and boot (or stage them on a share); docs/plans.md.
//
// Safety rules every job keeps: a VM never runs on two hosts (the source is undefined only
// after the target runs it; libvirt's migration protocol guarantees the hand-over); a failed
// or cancelled job leaves the VM running (or as it was) on the source with its disks intact.
//
// Thread-safety: RunMigrationJob blocks; JobContext methods are called from the job's
// thread(s) and must be thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "agent/cold_spec.h"
#include "common/status.h"

namespace ferry::agent {

enum class MigrationKind { kLive, kLiveStorage, kLiveVsm, kQuick, kReregister, kCold };
std::string_view MigrationKindName(MigrationKind kind);  // "live", "live-storage", ..., "cold"
Result<MigrationKind> ParseMigrationKind(std::string_view name);

struct MigrationJobSpec {
  std::string id;  // ferryd's migration id (the agent's job id too)
  MigrationKind kind = MigrationKind::kLive;
  std::string vm;                    // domain name on this (the source) host
  std::string source_uri;            // this host's libvirt URI
  std::string target_uri;            // target host's libvirt URI ("" for live-storage)
  std::string target_migration_uri;  // QEMU stream address on the target: "tcp://127.0.0.12"
  std::string target_pool;           // live-storage, live-vsm: pool for the disks
  std::string target_format;         // "" = keep each disk's format
  int64_t max_downtime_ms = 300;     // the user's downtime budget
  uint64_t bandwidth = 0;            // bytes/s cap for the memory/disk stream; 0 = no cap
  bool allow_postcopy = false;
  bool allow_auto_converge = true;
  int64_t timeout_ms = 0;  // give up (cleanly) after this long; 0 = the policy's default
  ColdJobSpec cold;        // kind kCold only
};

// One disk of a cold job.
struct DiskProgress {
  std::string id;               // DiskDescription::id
  std::string state;            // waiting, copying, verifying, done, failed
  uint64_t bytes_total = 0;     // virtual size
  uint64_t bytes_done = 0;      // below the copy's committed frontier
  uint64_t checkpointed = 0;    // frontier of the last durable checkpoint
  uint64_t read_bytes = 0;      // data read from the source in this attempt
};

// A snapshot of a running job, sent to ferryd on every poll.
struct JobProgress {
  std::string phase;  // preparing, measuring, copying, converging, switchover, verifying,
                      // finalizing
  uint64_t bytes_total = 0;
  uint64_t bytes_done = 0;
  uint64_t bytes_remaining = 0;
  uint64_t rate = 0;        // bytes/s now
  int64_t eta_ms = -1;      // -1 = not known
  uint64_t dirty_rate = 0;  // guest memory dirty rate, bytes/s
  uint64_t iteration = 0;   // pre-copy pass
  int64_t downtime_limit_ms = 0;
  int throttle_percent = 0;  // auto-converge
  bool postcopy = false;
  std::vector<DiskProgress> disks;  // cold jobs
};

struct JobResult {
  int64_t total_ms = 0;
  uint64_t bytes_sent = 0;
  int64_t qemu_downtime_ms = -1;   // QEMU's figure; -1 = not applicable
  int64_t guest_downtime_ms = -1;  // longest heartbeat gap seen on the guest's serial log;
                                   // -1 = the guest has no heartbeat log
  std::vector<std::string> notes;  // policy decisions: "downtime limit 300 -> 600 ms", ...
  struct MovedDisk {
    std::string disk;  // "vda"
    std::string from;  // old path
    std::string to;    // new path
    bool verified = false;
    uint64_t bytes_read = 0;      // cold: data bytes read from the source, all attempts
    uint64_t resumed_from = 0;    // cold: checkpoint frontier the last attempt resumed at
    uint64_t recopied_bytes = 0;  // cold: bytes read again after a resume
  };
  std::vector<MovedDisk> disks;
  // Cold jobs with a kvm target.
  std::string defined_vm;       // the VM defined on the target ("" = none)
  struct BootCheck {
    bool checked = false;       // a marker was set and the VM was started
    bool ok = false;
    int64_t elapsed_ms = -1;    // start to marker
    std::string message;        // what was seen, or why it failed
  };
  BootCheck boot;
};

class JobContext {
 public:
  virtual ~JobContext() = default;
  virtual bool cancelled() const = 0;
  virtual void Progress(const JobProgress& progress) = 0;
  // kind: info, warning, phase.
  virtual void Event(std::string_view kind, std::string_view message) = 0;
  // Cold jobs with manual deploy: true once the user said to go on (POST .../proceed).
  virtual bool proceed_requested() const { return false; }
};

// Runs the job to its end. OK: the VM is where the spec asked, running if it was.
// kCancelled: cancelled, VM safe on the source. Other errors: failed, VM safe on the source,
// message names the step.
Result<JobResult> RunMigrationJob(const MigrationJobSpec& spec, JobContext& ctx);

}  // namespace ferry::agent
