// Fuzz target for the VMDK reader: sparse/stream headers, grain tables, compressed grains and
// descriptor files. Referenced files (extents, parents) are never found: the Env is empty.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "empty_env.h"
#include "disk/vmdk/vmdk.h"

namespace {

constexpr uint64_t kMaxReadBytes = 4 << 20;

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static ferry::fuzz::EmptyEnv env;
  ferry::OpenOptions options;
  options.env = &env;
  auto src =
      ferry::OpenVmdk(ferry::OpenContext(options),
                      ferry::NewMemoryFile(std::vector<uint8_t>(data, data + size), "fuzz.vmdk"));
  if (!src.ok()) return 0;
  ferry::BlockSource& s = **src;
  (void)s.info();
  std::vector<ferry::Extent> extents;
  if (!s.Extents(0, s.size(), &extents).ok()) return 0;
  // Read the first bytes of a few data extents.
  uint64_t budget = kMaxReadBytes;
  std::vector<uint8_t> buf;
  for (const ferry::Extent& e : extents) {
    if (budget == 0) break;
    const uint64_t n = std::min<uint64_t>({e.length, budget, 1 << 20});
    buf.resize(n);
    (void)s.Read(e.offset, buf);
    budget -= n;
  }
  return 0;
}
