// Fuzz target for ParseHyperVConfig: a Hyper-V export's `Virtual Machines/<GUID>.xml` (UTF-8
// or UTF-16). What it returns must be a valid description (it serializes and parses back).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "sources/share.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto vm = ferry::sources::ParseHyperVConfig(text, "fuzz.xml");
  if (!vm.ok()) return 0;
  for (auto& disk : vm->disks) disk.file = "placeholder";  // resolved by the share scan
  if (!ferry::sources::VmDescriptionFromJson(ferry::sources::ToJson(*vm), "fuzz").ok()) {
    std::abort();
  }
  return 0;
}
