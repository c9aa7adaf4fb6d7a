// Shared pieces of the fuzz targets: an Env with no files, and the walk every image reader
// gets once it has opened an input.
#pragma once

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/file.h"
#include "disk/block_source.h"

namespace ferry::fuzz {

// Every reference an image makes (extents, parents, backing files) resolves to NotFound, so
// a fuzzed input can never reach the host's filesystem.
class EmptyEnv final : public Env {
 public:
  Result<std::unique_ptr<File>> Open(const std::string& path, OpenMode) override {
    return Status::NotFound(path);
  }
  bool Exists(const std::string&) override { return false; }
  Status Remove(const std::string& path) override { return Status::NotFound(path); }
  Status Rename(const std::string& from, const std::string&) override {
    return Status::NotFound(from);
  }
  Result<std::string> RealPath(const std::string& path) override { return Status::NotFound(path); }
  Result<int64_t> ModifiedTimeNanos(const std::string& path) override {
    return Status::NotFound(path);
  }
};

// Asks for the info, the extents of the whole disk, and reads the start of the data extents,
// at most `budget` bytes in all.
inline void ExerciseSource(BlockSource& s, uint64_t budget = 4ull << 20) {
  (void)s.info();
  std::vector<Extent> extents;
  if (!s.Extents(0, s.size(), &extents).ok()) return;
  std::vector<uint8_t> buf;
  for (const Extent& e : extents) {
    if (budget == 0) break;
    const uint64_t n = std::min<uint64_t>({e.length, budget, 1 << 20});
    buf.resize(n);
    (void)s.Read(e.offset, buf);
    budget -= n;
  }
}

}  // namespace ferry::fuzz
