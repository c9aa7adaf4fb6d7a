#include "server/cold_migration.h"

#include <nlohmann/json.hpp>

#include "api/agent_json.h"

namespace ferry::server {
namespace {

using nlohmann::json;

constexpr uint64_t kHashChunkSize = 4ull << 20;  // HashChunks unit (docs/plans.md)

std::string EndpointName(plan::EndpointType t) {
  return t == plan::EndpointType::kShare ? "share" : "kvm";
}

Status Bad(const std::string& field, const std::string& what) {
  return Status::Corrupt("stored cold options: " + field + ": expected " + what);
}

Status ReadString(const json& j, const char* key, std::string* out) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_string()) return Bad(key, "a string");
  *out = it->get<std::string>();
  return Status::Ok();
}

Status ReadBool(const json& j, const char* key, bool* out) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_boolean()) return Bad(key, "a boolean");
  *out = it->get<bool>();
  return Status::Ok();
}

// A mode name; records stored before the modes existed have a boolean (true: stream).
Status ReadVerify(const json& j, const char* key, plan::VerifyMode* out) {
  auto it = j.find(key);
  if (it != j.end() && it->is_boolean()) {
    *out = it->get<bool>() ? plan::VerifyMode::kStream : plan::VerifyMode::kOff;
    return Status::Ok();
  }
  std::string name;
  FERRY_TRY(ReadString(j, key, &name));
  std::optional<plan::VerifyMode> m = plan::VerifyModeFromName(name);
  if (!m) return Bad(key, "stream, readback or off");
  *out = *m;
  return Status::Ok();
}

Status ReadEndpoint(const json& j, const char* key, plan::EndpointType* out) {
  std::string name;
  FERRY_TRY(ReadString(j, key, &name));
  if (name == "kvm") {
    *out = plan::EndpointType::kKvm;
  } else if (name == "share") {
    *out = plan::EndpointType::kShare;
  } else {
    return Bad(key, "kvm or share");
  }
  return Status::Ok();
}

template <typename T>
Status ReadNumber(const json& j, const char* key, T* out) {
  auto it = j.find(key);
  bool ok =
      it != j.end() && (std::is_signed_v<T> ? it->is_number_integer() : it->is_number_unsigned());
  if (!ok) return Bad(key, std::is_signed_v<T> ? "an integer" : "an unsigned integer");
  *out = it->get<T>();
  return Status::Ok();
}

}  // namespace

std::string ColdMigrationType(plan::EndpointType target_type) {
  return target_type == plan::EndpointType::kShare ? "stage" : "cold";
}

bool IsColdType(const std::string& type) { return type == "cold" || type == "stage"; }

std::string ToJson(const ColdOptions& o) {
  json vm = json::parse(api::ToJson(o.vm), nullptr, /*allow_exceptions=*/false);
  json j = {{"plan_id", o.plan_id},
            {"plan", o.plan_name},
            {"entry_name", o.entry_name},
            {"entry_id", o.entry_id},
            {"source_type", EndpointName(o.source_type)},
            {"source_share", o.source_share},
            {"source_share_vm", o.source_share_vm},
            {"target_type", EndpointName(o.target_type)},
            {"target_share", o.target_share},
            {"target_vm", vm},
            {"shutdown", o.shutdown},
            {"shutdown_timeout_ms", o.shutdown_timeout_ms},
            {"force_shutdown", o.force_shutdown},
            {"verify", std::string(plan::VerifyModeName(o.verify))},
            {"verify_hash", std::string(ChunkHashAlgorithmName(o.verify_hash))},
            {"deploy_auto", o.deploy_auto},
            {"checkpoint_bytes", o.checkpoint_bytes},
            {"copy_pools", o.copy_pools}};
  return j.dump();
}

Result<ColdOptions> ParseColdOptions(const std::string& json_text) {
  json j = json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return Status::Corrupt("stored cold options: not a JSON object");
  }
  ColdOptions o;
  FERRY_TRY(ReadString(j, "plan_id", &o.plan_id));
  FERRY_TRY(ReadString(j, "plan", &o.plan_name));
  FERRY_TRY(ReadString(j, "entry_name", &o.entry_name));
  FERRY_TRY(ReadString(j, "entry_id", &o.entry_id));
  FERRY_TRY(ReadEndpoint(j, "source_type", &o.source_type));
  FERRY_TRY(ReadString(j, "source_share", &o.source_share));
  FERRY_TRY(ReadString(j, "source_share_vm", &o.source_share_vm));
  FERRY_TRY(ReadEndpoint(j, "target_type", &o.target_type));
  FERRY_TRY(ReadString(j, "target_share", &o.target_share));
  auto vm = j.find("target_vm");
  if (vm == j.end() || !vm->is_object()) return Bad("target_vm", "an object");
  FERRY_TRY(api::FromJson(vm->dump(), &o.vm).WithContext("stored cold options: target_vm"));
  FERRY_TRY(ReadBool(j, "shutdown", &o.shutdown));
  FERRY_TRY(ReadNumber(j, "shutdown_timeout_ms", &o.shutdown_timeout_ms));
  FERRY_TRY(ReadBool(j, "force_shutdown", &o.force_shutdown));
  FERRY_TRY(ReadVerify(j, "verify", &o.verify));
  o.verify_hash = ChunkHashAlgorithm::kSha256;  // absent: a record from before xxh3-128
  if (j.contains("verify_hash")) {
    std::string name;
    FERRY_TRY(ReadString(j, "verify_hash", &name));
    if (!ChunkHashAlgorithmFromName(name, &o.verify_hash)) return Bad("verify_hash", "xxh3-128 or sha256");
  }
  FERRY_TRY(ReadBool(j, "deploy_auto", &o.deploy_auto));
  FERRY_TRY(ReadNumber(j, "checkpoint_bytes", &o.checkpoint_bytes));
  auto pools = j.find("copy_pools");
  if (pools == j.end() || !pools->is_array()) return Bad("copy_pools", "an array");
  for (const json& p : *pools) {
    if (!p.is_string()) return Bad("copy_pools[]", "a string");
    o.copy_pools.push_back(p.get<std::string>());
  }
  return o;
}

ColdOptions MakeColdOptions(const std::string& plan_id, const plan::PlanDocument& plan,
                            const plan::PlanVm& entry, const std::string& source_share_vm,
                            const plan::TargetVm& vm) {
  ColdOptions o;
  o.plan_id = plan_id;
  o.plan_name = plan.name;
  o.entry_name = entry.name;
  o.entry_id = entry.id;
  o.source_type = plan.source.type;
  if (plan.source.type == plan::EndpointType::kShare) {
    o.source_share = plan.source.share;
    o.source_share_vm = source_share_vm;
  }
  o.target_type = plan.target.type;
  if (plan.target.type == plan::EndpointType::kShare) o.target_share = plan.target.share;
  o.vm = vm;
  o.shutdown = plan.options.shutdown_source;
  o.shutdown_timeout_ms = plan.options.shutdown_timeout_ms;
  o.force_shutdown = plan.options.force_shutdown;
  o.verify = plan.options.verify;
  o.verify_hash = plan.options.verify_hash;
  o.deploy_auto = plan.options.deploy == plan::DeployMode::kAuto;
  o.checkpoint_bytes = plan.options.checkpoint_bytes;
  for (const plan::TargetDisk& d : vm.disks) {
    o.copy_pools.push_back(
        plan.target.host + "/" +
        (plan.target.type == plan::EndpointType::kShare ? "share:" + plan.target.share : d.pool));
  }
  return o;
}

std::string ColdJobId(const std::string& migration_id, int attempt) {
  if (attempt <= 1) return migration_id;
  return migration_id + ".a" + std::to_string(attempt);
}

agent::MigrationJobSpec ColdJobSpecFor(const std::string& migration_id, int attempt,
                                       const std::string& vm_name, const ColdOptions& o,
                                       const agent::SourceAgentRef& source, bool deploy_requested) {
  agent::MigrationJobSpec spec;
  spec.id = ColdJobId(migration_id, attempt);
  spec.kind = agent::MigrationKind::kCold;
  spec.vm = vm_name;
  agent::ColdJobSpec& c = spec.cold;
  c.source = source;
  c.export_spec.id = migration_id;  // one export for every attempt
  if (o.source_type == plan::EndpointType::kShare) {
    c.export_spec.share = o.source_share;
    c.export_spec.share_vm = o.source_share_vm;
  } else {
    c.export_spec.vm = vm_name;
  }
  c.export_spec.shutdown = o.shutdown;
  c.export_spec.shutdown_timeout_ms = o.shutdown_timeout_ms;
  c.export_spec.force_shutdown = o.force_shutdown;
  // The source hashes its disks only for a verification: hashing costs a core for as long as
  // the copy runs. The verify mode is fixed for the migration, so a retried spec still equals
  // the export an earlier attempt made.
  c.export_spec.hash_chunk_size = o.verify == plan::VerifyMode::kOff ? 0 : kHashChunkSize;
  c.export_spec.hash_algorithm = o.verify_hash;
  c.target_type = o.target_type;
  c.target_share = o.target_share;
  c.vm = o.vm;
  c.plan_name = o.plan_name;
  c.verify = o.verify;
  c.deploy_auto = o.deploy_auto || deploy_requested;
  c.checkpoint_bytes = o.checkpoint_bytes;
  return spec;
}

bool ColdFailureIsRetryable(ErrorCode code, const std::string& phase) {
  return code == ErrorCode::kIo && ColdRestorePowerAfter(phase);
}

bool ColdRestorePowerAfter(const std::string& phase) {
  return phase != "booting" && phase != "finalizing" && phase != "done";
}

}  // namespace ferry::server
