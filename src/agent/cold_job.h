// The cold job (docs/plans.md): what the TARGET host's agent runs to move one VM whose disks
// are exported by a source agent. Steps, each reported as a phase:
//   exporting   POST the ExportSpec to the source agent (idempotent by id), wait for `serving`
//   copying     each disk: RunConvert from the export's NBD URI into the target pool (kvm) or
//               the staging folder (share), target format per TargetDisk, checkpoint journal
//               beside the file, resumed when a journal is there; a lost source (kIo) is asked
//               again every 2 s for up to source_retry_timeout_ms, then the copy resumes
//   verifying   read each finished disk back through Ferry's reader, HashChunks, compare with
//               the export's chunk hashes (waiting for the source to finish hashing)
//   awaiting-deploy  (deploy_auto false) until JobContext::proceed_requested()
//   defining    kvm: BuildDomainXml + define + pool refresh; share: vm.json, folder rename
//   booting     kvm with start: start, wait for the boot marker on the console log
//   finalizing  DELETE the export (restore_power=0)
// MigrationJobSpec::bandwidth caps the bytes/s read from the source (0 = no cap).
// Progress: JobProgress.disks per disk, bytes_total/bytes_done over all disks, rate, ETA.
//
// State kept across attempts: state_dir/cold/<export id>.json (per disk: done and verified,
// final path, size, mtime), so a new attempt skips finished disks; the copy journals resume the
// rest.
//
// Failure or cancel: nothing is defined on the target (or the definition is removed again);
// files of disks that failed verification are deleted; unfinished disks keep their
// .ferry-part + journal for a later attempt unless the job was cancelled (then they are
// deleted); the export is closed with restore_power=1, so the source runs again if it ran.
// Exception: a failed boot check leaves the defined VM in place (docs/plans.md).
//
// Thread-safety: RunColdJob blocks; see JobContext.
#pragma once

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "agent/migration_job.h"
#include "common/status.h"

namespace ferry::agent {

// Where this agent keeps things and how it reaches its own libvirtd and shares.
struct ColdJobEnv {
  std::string libvirt_uri;                                  // this (the target) host's libvirtd
  std::string state_dir;                                    // the agent's state_dir
  std::string default_domain_type = "kvm";                  // when ColdJobSpec::domain_type is ""
  std::vector<std::pair<std::string, std::string>> shares;  // name -> folder
  int copy_workers = 4;
  // Test hooks, nullptr in production. before_copy: with each disk's id once the export
  // serves and before the disk is copied (tests change the source there, after it was hashed).
  // before_verify: with each disk's id and final path after it is copied and before it is
  // verified (tests corrupt the file here).
  std::function<void(const std::string& disk_id)> before_copy;
  std::function<void(const std::string& disk_id, const std::string& path)> before_verify;
};

Result<JobResult> RunColdJob(const MigrationJobSpec& spec, const ColdJobEnv& env, JobContext& ctx);

}  // namespace ferry::agent
