// An Env with no files, for fuzz targets: every reference an image makes (extents,
// parents, backing files) resolves to NotFound, so a fuzzed input can never reach the
// host's filesystem.
#pragma once

#include <memory>
#include <string>

#include "common/file.h"

namespace ferry::fuzz {

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

}  // namespace ferry::fuzz
