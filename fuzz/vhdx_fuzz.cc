// Fuzz target for the VHDX reader (headers, log replay, region table, metadata, BAT).
//
// A VHDX keeps its structures at 1 MiB-aligned offsets, so even the smallest valid image is
// several MiB, mostly zeros. To keep seeds small the input is one of:
//   - a whole image, starting with "vhdxfile";
//   - a sparse image: "FVXS", then records {u32 LE file offset, u16 LE length, bytes}; the
//     file is zeros elsewhere and ends at the end of the last record (capped at 32 MiB).
// See docs/formats/vhdx.md ("Fuzzing").
#include <cstdint>
#include <cstring>
#include <vector>

#include "common/bytes.h"
#include "common/file.h"
#include "disk/image.h"
#include "disk/vhdx/vhdx.h"

namespace {

constexpr size_t kMaxSparseFile = 32u << 20;
constexpr uint64_t kMaxExtentsSpan = 1ull << 30;
constexpr size_t kReadSize = 256u << 10;

std::vector<uint8_t> Expand(const uint8_t* data, size_t size) {
  if (size >= 8 && std::memcmp(data, "vhdxfile", 8) == 0) {
    return std::vector<uint8_t>(data, data + size);
  }
  std::vector<uint8_t> file;
  if (size < 4 || std::memcmp(data, "FVXS", 4) != 0) return file;
  size_t p = 4;
  while (p + 6 <= size) {
    uint64_t off = ferry::LoadLE32(data + p);
    size_t len = ferry::LoadLE16(data + p + 4);
    p += 6;
    len = std::min(len, size - p);
    if (off + len > kMaxSparseFile) break;
    if (file.size() < off + len) file.resize(off + len, 0);
    if (len > 0) std::memcpy(file.data() + off, data + p, len);
    p += len;
  }
  return file;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<uint8_t> bytes = Expand(data, size);
  if (bytes.empty()) return 0;
  ferry::OpenOptions options;
  ferry::OpenContext ctx(options);
  auto src = ferry::OpenVhdx(ctx, ferry::NewMemoryFile(std::move(bytes), "fuzz.vhdx"));
  if (!src.ok()) return 0;
  ferry::BlockSource& s = **src;
  (void)s.info();
  const uint64_t vsize = s.size();
  std::vector<ferry::Extent> extents;
  (void)s.Extents(0, std::min(vsize, kMaxExtentsSpan), &extents);
  std::vector<uint8_t> buf(kReadSize);
  const uint64_t starts[] = {0, vsize / 2, vsize > kReadSize ? vsize - kReadSize : 0, 12345};
  for (uint64_t at : starts) {
    if (at >= vsize) continue;
    uint64_t n = std::min<uint64_t>(kReadSize, vsize - at);
    (void)s.Read(at, std::span<uint8_t>(buf.data(), n));
  }
  return 0;
}
