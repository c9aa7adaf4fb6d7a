// Cold and stage migrations as ferryd keeps them (docs/plans.md): what a plan's migration
// record stores in options_json to rebuild its job spec for every attempt (ColdOptions), the
// job ids of the attempts, and the rules that decide, when a job fails, whether to start it
// again and whether the source VM may be powered on again.
//
// Unlike the live types, a cold migration's job runs on the TARGET host's agent; it pulls
// the disks from an export on the source host's agent (same id as the migration for every
// attempt, so each attempt finds the export the previous one made).
//
// Thread-safety: plain values and pure functions.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "agent/migration_job.h"
#include "common/status.h"
#include "plan/plan.h"

namespace ferry::server {

// A cold job is started at most this many times (the first attempt and 4 retries).
constexpr int kColdMaxAttempts = 5;

// What a cold ("cold": kvm target) or stage ("stage": share target) migration's record keeps
// in options_json: everything its ColdJobSpec is made of except the source agent's URL and
// token, which are read from the host record at each start (a re-registered agent URL is
// picked up).
struct ColdOptions {
  std::string plan_id;
  std::string plan_name;
  std::string entry_name;  // the plan's vms[] entry: name or id as written
  std::string entry_id;
  plan::EndpointType source_type = plan::EndpointType::kKvm;
  std::string source_share;  // source_type kShare: the share and the VM's id in it
  std::string source_share_vm;
  plan::EndpointType target_type = plan::EndpointType::kKvm;
  std::string target_share;  // target_type kShare
  plan::TargetVm vm;         // the resolution
  bool shutdown = true;
  int64_t shutdown_timeout_ms = 120000;
  bool force_shutdown = true;
  plan::VerifyMode verify = plan::VerifyMode::kStream;
  // A stored record without it predates xxh3-128 and reads as sha256 (its export hashed so).
  ChunkHashAlgorithm verify_hash = ChunkHashAlgorithm::kXxh3_128;
  bool deploy_auto = true;
  uint64_t checkpoint_bytes = 256ull << 20;
  // The limits' pool key of each disk: "HOST/POOL", or "HOST/share:NAME" (limits.h).
  std::vector<std::string> copy_pools;
};

// The migration type for a plan's target: "cold" (kvm) or "stage" (share).
std::string ColdMigrationType(plan::EndpointType target_type);
bool IsColdType(const std::string& type);

std::string ToJson(const ColdOptions& options);
// The stored options (written by ToJson; read back as untrusted anyway: a field that is
// missing or of the wrong type is kCorrupt naming it).
Result<ColdOptions> ParseColdOptions(const std::string& json_text);

// The options of one resolved VM of a plan. `source_share_vm` is the share VM's id (share
// sources).
ColdOptions MakeColdOptions(const std::string& plan_id, const plan::PlanDocument& plan,
                            const plan::PlanVm& entry, const std::string& source_share_vm,
                            const plan::TargetVm& vm);

// Job id of an attempt: the migration id for the first, then "<id>.a2", "<id>.a3", ...
std::string ColdJobId(const std::string& migration_id, int attempt);

// The spec of one attempt. `deploy_requested`: the user already said deploy (a manual plan
// whose job is started again after that goes on without waiting a second time).
agent::MigrationJobSpec ColdJobSpecFor(const std::string& migration_id, int attempt,
                                       const std::string& vm_name, const ColdOptions& options,
                                       const agent::SourceAgentRef& source, bool deploy_requested);

// Whether a job that failed with `code` in `phase` is started again (attempts left): an io
// failure (the target agent restarted, the source was lost past the job's own retries)
// before the VM was defined and started; never one in booting or later, where the VM already
// exists on the target.
bool ColdFailureIsRetryable(ErrorCode code, const std::string& phase);

// Whether, after a job ended without success in `phase`, the source VM may be powered on
// again (the export closed with restore_power=1): not once the target VM may have started
// (booting, finalizing), since the VM must never run in two places; a failed boot check
// leaves the target VM for inspection and the source shut off (docs/plans.md).
bool ColdRestorePowerAfter(const std::string& phase);

}  // namespace ferry::server
