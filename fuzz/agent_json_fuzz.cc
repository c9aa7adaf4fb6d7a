// Fuzz target: the agent API's JSON parsers (src/api/agent_json.h) on arbitrary bytes. Every
// parser must return a Status, never crash; whatever parses must serialize and parse again.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "api/agent_json.h"

namespace {

template <typename T>
void RoundTrip(std::string_view text) {
  T value{};
  if (!ferry::api::FromJson(text, &value).ok()) return;
  T again{};
  if (!ferry::api::FromJson(ferry::api::ToJson(value), &again).ok()) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  RoundTrip<ferry::api::AgentInventory>(text);
  RoundTrip<ferry::hypervisor::VmInfo>(text);
  RoundTrip<ferry::api::AgentJob>(text);
  RoundTrip<std::vector<ferry::api::AgentJob>>(text);
  RoundTrip<ferry::api::AgentJobRecord>(text);
  RoundTrip<ferry::agent::MigrationJobSpec>(text);
  RoundTrip<ferry::agent::JobResult>(text);
  RoundTrip<ferry::agent::JobProgress>(text);
  RoundTrip<ferry::plan::TargetVm>(text);
  RoundTrip<ferry::hypervisor::CpuCheck>(text);
  RoundTrip<ferry::api::PlatformCheckRequest>(text);
  RoundTrip<ferry::api::AgentHealth>(text);
  RoundTrip<ferry::api::CpuCheckRequest>(text);
  RoundTrip<std::vector<ferry::api::ShareInfo>>(text);
  RoundTrip<ferry::api::ShareListing>(text);
  RoundTrip<ferry::sources::ShareVm>(text);
  RoundTrip<ferry::agent::ExportSpec>(text);
  RoundTrip<ferry::agent::ExportInfo>(text);
  RoundTrip<ferry::api::PoolFiles>(text);
  return 0;
}
