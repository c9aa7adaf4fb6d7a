#include "disk/raw/raw.h"

#include <algorithm>

#include "common/bytes.h"

namespace ferry {
namespace {

constexpr uint32_t kRawGranularity = 4096;

class RawSource final : public BlockSource {
 public:
  RawSource(std::unique_ptr<File> file, uint64_t size) : file_(std::move(file)), size_(size) {}

  uint64_t size() const override { return size_; }

  ImageInfo info() const override {
    ImageInfo info;
    info.format = "raw";
    info.virtual_size = size_;
    info.file_size = size_;
    std::vector<std::pair<uint64_t, uint64_t>> ranges;
    if (file_->DataRanges(0, size_, &ranges).ok()) {
      for (auto& [a, b] : ranges) info.allocated_bytes += b - a;
    }
    info.files = {file_->path()};
    return info;
  }

  Status Extents(uint64_t offset, uint64_t length, std::vector<Extent>* out) override {
    std::vector<std::pair<uint64_t, uint64_t>> ranges;
    FERRY_TRY(file_->DataRanges(offset, length, &ranges));
    uint64_t pos = offset;
    for (auto [a, b] : ranges) {
      a = std::max(a, offset);
      b = std::min(b, offset + length);
      if (a >= b) continue;
      if (a > pos) out->push_back({pos, a - pos, ExtentKind::kHole});
      out->push_back({a, b - a, ExtentKind::kData});
      pos = b;
    }
    if (pos < offset + length) out->push_back({pos, offset + length - pos, ExtentKind::kHole});
    return Status::Ok();
  }

  Status Read(uint64_t offset, std::span<uint8_t> buf) override {
    return file_->ReadAt(offset, buf);
  }

 private:
  std::unique_ptr<File> file_;
  uint64_t size_;
};

class RawSink final : public BlockSink {
 public:
  RawSink(std::unique_ptr<File> file, uint64_t size, bool zero_initialized)
      : file_(std::move(file)), write_behind_(file_.get()), size_(size),
        zero_initialized_(zero_initialized) {}

  uint64_t size() const override { return size_; }
  uint32_t granularity() const override { return kRawGranularity; }
  bool zero_initialized() const override { return zero_initialized_; }

  Status Write(uint64_t offset, std::span<const uint8_t> data) override {
    FERRY_TRY(file_->WriteAt(offset, data));
    write_behind_.Wrote(offset, data.size());
    return Status::Ok();
  }
  Status WriteZeroes(uint64_t offset, uint64_t length) override {
    return file_->PunchHole(offset, length);
  }
  Result<std::vector<uint8_t>> Checkpoint() override {
    FERRY_TRY(file_->Sync());
    return std::vector<uint8_t>{};
  }
  Status Finalize() override { return file_->Sync(); }

 private:
  std::unique_ptr<File> file_;
  WriteBehind write_behind_;
  uint64_t size_;
  bool zero_initialized_;
};

Result<std::unique_ptr<BlockSink>> OpenRawSink(const std::string& path,
                                               const CreateOptions& options, OpenMode mode,
                                               bool zero_initialized) {
  FERRY_ASSIGN_OR_RETURN(auto file, options.env->Open(path, mode));
  if (mode == OpenMode::kReadWrite) {
    FERRY_ASSIGN_OR_RETURN(uint64_t existing, file->Size());
    if (existing < options.size) FERRY_TRY(file->Truncate(options.size));
  } else {
    FERRY_TRY(file->Truncate(options.size));
  }
  if (options.preallocate) FERRY_TRY(file->Allocate(0, options.size));
  return std::unique_ptr<BlockSink>(
      std::make_unique<RawSink>(std::move(file), options.size, zero_initialized));
}

}  // namespace

std::unique_ptr<BlockSource> NewRawSource(std::unique_ptr<File> file, uint64_t size) {
  return std::make_unique<RawSource>(std::move(file), size);
}

Result<std::unique_ptr<BlockSource>> OpenRaw(const OpenContext&, std::unique_ptr<File> file) {
  FERRY_ASSIGN_OR_RETURN(uint64_t size, file->Size());
  return NewRawSource(std::move(file), size);
}

Result<std::unique_ptr<BlockSink>> CreateRaw(const std::string& path,
                                             const CreateOptions& options) {
  return OpenRawSink(path, options, OpenMode::kCreateTruncate, !options.preallocate);
}

Result<std::unique_ptr<BlockSink>> ResumeRaw(const std::string& path,
                                             const CreateOptions& options,
                                             std::span<const uint8_t>) {
  // Everything past the checkpoint is rewritten, zero ranges included: after a crash the
  // file may hold data there that must become zeros.
  return OpenRawSink(path, options, OpenMode::kReadWrite, /*zero_initialized=*/false);
}

Result<std::unique_ptr<BlockSink>> OpenRawForUpdate(const std::string& path,
                                                    const CreateOptions& options) {
  return OpenRawSink(path, options, OpenMode::kReadWrite, /*zero_initialized=*/false);
}

}  // namespace ferry
