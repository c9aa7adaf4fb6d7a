// The specs of a cold migration's two halves (docs/plans.md): the export a source agent makes
// of a VM's disks (ExportSpec, ExportInfo) and the cold job a target agent runs (ColdJobSpec,
// carried in MigrationJobSpec::cold when kind == kCold). Plain values; their JSON mapping is
// in src/api/agent_json.h.
//
// Thread-safety: plain values.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/checksum.h"
#include "common/status.h"
#include "plan/plan.h"
#include "sources/vm_description.h"

namespace ferry::agent {

// What the source agent exports. Exactly one of `vm` (a libvirt domain on the source host) or
// `share` + `share_vm` (a VM of an export share, by id) is set.
struct ExportSpec {
  std::string id;        // the migration id: also a file name (api::IsValidJobId)
  std::string vm;
  std::string share;
  std::string share_vm;
  bool shutdown = true;  // a running libvirt VM is shut down first (else: kFailedPrecondition)
  int64_t shutdown_timeout_ms = 120000;  // graceful ACPI shutdown, then:
  bool force_shutdown = true;            // power it off (else fail, VM left running)
  uint64_t hash_chunk_size = 4ull << 20;  // HashChunks unit; 0 = do not hash
  // The chunk digests' algorithm. sha256 when a stored spec does not name one (the only one
  // before xxh3-128); ferryd asks for the plan's `verify_hash` (default xxh3-128).
  ChunkHashAlgorithm hash_algorithm = ChunkHashAlgorithm::kSha256;
  bool operator==(const ExportSpec&) const = default;
};

enum class ExportState { kPreparing, kShuttingDown, kServing, kFailed, kClosed };
std::string_view ExportStateName(ExportState s);  // "preparing", "shutting-down", ...

enum class HashState { kNone, kRunning, kDone, kFailed };
std::string_view HashStateName(HashState s);  // "none", "running", "done", "failed"

struct ExportDisk {
  std::string id;        // DiskDescription::id
  std::string uri;       // nbd://HOST:PORT/<token>-<id>
  uint64_t size = 0;     // virtual size
  std::string format;    // the source image's format
  uint64_t allocated_bytes = 0;
  HashState hash_state = HashState::kNone;
  uint64_t hashed_bytes = 0;
  std::vector<ChunkDigest> chunk_hashes;  // spec.hash_algorithm; complete when kDone
};

struct ExportInfo {
  std::string id;
  ExportSpec spec;
  ExportState state = ExportState::kPreparing;
  sources::VmDescription vm;  // as read when the export was made
  std::vector<ExportDisk> disks;
  bool was_running = false;   // the libvirt VM ran before the export shut it down
  uint64_t bytes_served = 0;  // NBD payload bytes sent since the export (re)started serving
  Status error;               // state kFailed
  int64_t created_at_ms = 0;
};

struct SourceAgentRef {
  std::string host_id;
  std::string url;    // "http://127.0.0.11:7801"
  std::string token;
  bool operator==(const SourceAgentRef&) const = default;
};

// The target agent's half: copy every disk of the export into place, verify it against the
// source's chunk hashes, then deploy (kvm target) or write vm.json (share target).
struct ColdJobSpec {
  SourceAgentRef source;
  ExportSpec export_spec;
  plan::EndpointType target_type = plan::EndpointType::kKvm;
  std::string target_share;  // target_type kShare: the share (on this agent) to stage into
  plan::TargetVm vm;         // resolved by ferryd (names, pools, formats, buses, NICs)
  std::string plan_name;
  plan::VerifyMode verify = plan::VerifyMode::kStream;
  bool deploy_auto = true;   // false: wait in phase awaiting-deploy for POST .../proceed
  uint64_t checkpoint_bytes = 256ull << 20;
  int64_t source_retry_timeout_ms = 300000;  // keep asking a lost source for this long
  std::string domain_type;   // "" = the agent's configured default ("kvm" or "qemu")
};

}  // namespace ferry::agent
