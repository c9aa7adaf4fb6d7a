// libFuzzer target for the VHD reader: footer, dynamic header, BAT, sector bitmaps and
// parent locators are all parsed from the input. Seed corpus: fuzz/corpus/vhd_fuzz/.
#include <algorithm>
#include <cstdint>
#include <vector>

#include "common/file.h"
#include "disk/image.h"
#include "disk/vhd/vhd.h"

namespace {

constexpr uint64_t kMaxExtentsSpan = 256ull << 20;
constexpr uint64_t kMaxRead = 1ull << 20;

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ferry;
  OpenOptions options;
  options.max_chain_depth = 2;
  OpenContext ctx(options);
  auto src = OpenVhd(ctx, NewMemoryFile(std::vector<uint8_t>(data, data + size), "fuzz.vhd"));
  if (!src.ok()) return 0;
  BlockSource& s = **src;
  (void)s.info();
  const uint64_t disk = s.size();
  std::vector<Extent> extents;
  (void)s.Extents(0, std::min(disk, kMaxExtentsSpan), &extents);
  // A few reads: start, an unaligned middle, the end.
  const uint64_t starts[] = {0, disk / 2 + 123, disk > kMaxRead ? disk - kMaxRead : 0};
  std::vector<uint8_t> buf;
  for (uint64_t start : starts) {
    if (start >= disk) continue;
    buf.resize(static_cast<size_t>(std::min(kMaxRead, disk - start)));
    (void)s.Read(start, buf);
  }
  return 0;
}
