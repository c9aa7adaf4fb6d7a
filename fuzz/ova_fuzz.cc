// Fuzz target for the OVA reader: the tar index, the OVF (pugixml), the manifest and
// the VMDK opened through a slice. Referenced files are never found: the Env is empty.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "fuzz_support.h"
#include "disk/ova/ova.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static ferry::fuzz::EmptyEnv env;
  ferry::OpenOptions options;
  options.env = &env;
  auto src =
      ferry::OpenOva(ferry::OpenContext(options),
                     ferry::NewMemoryFile(std::vector<uint8_t>(data, data + size), "fuzz.ova"));
  if (src.ok()) ferry::fuzz::ExerciseSource(**src);
  return 0;
}
