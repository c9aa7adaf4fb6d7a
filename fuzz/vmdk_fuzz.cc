// Fuzz target for the VMDK reader: sparse/stream headers, grain tables, compressed grains and
// descriptor files. Referenced files (extents, parents) are never found: the Env is empty.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "fuzz_support.h"
#include "disk/vmdk/vmdk.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static ferry::fuzz::EmptyEnv env;
  ferry::OpenOptions options;
  options.env = &env;
  auto src =
      ferry::OpenVmdk(ferry::OpenContext(options),
                      ferry::NewMemoryFile(std::vector<uint8_t>(data, data + size), "fuzz.vmdk"));
  if (src.ok()) ferry::fuzz::ExerciseSource(**src);
  return 0;
}
