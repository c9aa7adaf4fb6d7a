// Fuzz target for VmDescriptionFromJson: a share's vm.json or an agent's answer. A parsed
// description must serialize and parse back to the same JSON.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "sources/vm_description.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto vm = ferry::sources::VmDescriptionFromJson(text, "fuzz/vm.json");
  if (!vm.ok()) return 0;
  const std::string json = ferry::sources::ToJson(*vm);
  auto back = ferry::sources::VmDescriptionFromJson(json, "round trip");
  // ToJson replaces invalid UTF-8, so only a valid-UTF-8 description must come back equal.
  if (back.ok() && ferry::sources::ToJson(*back) != json) std::abort();
  return 0;
}
