// Fuzz target: ParsePlan (src/plan/plan.h) on arbitrary bytes, YAML or JSON. It must return a
// Status, never crash, hang or blow up on aliases; whatever parses must serialize to canonical
// JSON that parses back to the same document.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "plan/plan.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto plan = ferry::plan::ParsePlan(text);
  if (!plan.ok()) return 0;
  auto again = ferry::plan::ParsePlan(ferry::plan::PlanToJson(*plan));
  if (!again.ok() || !(*again == *plan)) std::abort();
  return 0;
}
