// libFuzzer target for the qcow2 reader: opens the input as an image and, if it opens, walks
// its extents and reads a few ranges. Work is capped so each input runs in milliseconds.
#include <algorithm>
#include <cstdint>
#include <vector>

#include "common/file.h"
#include "disk/image.h"
#include "disk/qcow2/qcow2.h"

namespace {

constexpr uint64_t kMaxVirtualSizeToWalk = 1ull << 30;  // skip Extents over larger images
constexpr uint64_t kReadChunk = 256 * 1024;
constexpr int kMaxDataReads = 8;

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ferry;
  OpenContext ctx{OpenOptions{}};
  auto src = OpenQcow2(ctx, NewMemoryFile(std::vector<uint8_t>(data, data + size), "fuzz.qcow2"));
  if (!src.ok()) return 0;
  BlockSource& s = **src;
  (void)s.info();
  const uint64_t vsize = s.size();
  std::vector<uint8_t> buf;
  auto read = [&](uint64_t off, uint64_t len) {
    len = std::min(len, vsize - std::min(off, vsize));
    if (len == 0) return;
    buf.resize(len);
    (void)s.Read(off, buf);
  };
  read(0, kReadChunk);
  read(vsize / 2, kReadChunk);
  if (vsize > kMaxVirtualSizeToWalk) return 0;
  std::vector<Extent> extents;
  if (!s.Extents(0, vsize, &extents).ok()) return 0;
  int reads = 0;
  for (const Extent& e : extents) {
    if (e.kind != ExtentKind::kData) continue;
    if (reads++ == kMaxDataReads) break;
    read(e.offset, std::min<uint64_t>(e.length, kReadChunk));
  }
  return 0;
}
