// Fuzz target: the input is everything an NBD client sends to Ferry's server (handshake,
// options, requests, write payloads). The session runs over an in-memory stream on a small
// source whose extents mix data, zero and hole blocks and with one unreadable block, so the
// structured read, block status and error paths all get exercised. Replies are discarded.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <vector>

#include "nbd/nbd_session.h"

namespace {

using ferry::BlockSource;
using ferry::Extent;
using ferry::ExtentKind;
using ferry::Status;

constexpr uint64_t kSourceSize = 256 * 1024;
constexpr uint64_t kBlock = 4096;
constexpr uint64_t kBadBlock = 10;  // Read() fails here
constexpr size_t kMaxOutput = 64u << 20;

ExtentKind KindOf(uint64_t block) {
  switch (block % 5) {
    case 1:
      return ExtentKind::kZero;
    case 2:
    case 3:
      return ExtentKind::kHole;
    default:
      return ExtentKind::kData;
  }
}

class PatternSource final : public BlockSource {
 public:
  uint64_t size() const override { return kSourceSize; }
  ferry::ImageInfo info() const override { return {}; }
  Status Extents(uint64_t offset, uint64_t length, std::vector<Extent>* out) override {
    uint64_t pos = offset;
    const uint64_t end = offset + length;
    while (pos < end) {
      const uint64_t block = pos / kBlock;
      const uint64_t n = std::min(end, (block + 1) * kBlock) - pos;
      const ExtentKind k = KindOf(block);
      if (!out->empty() && out->back().kind == k) {
        out->back().length += n;
      } else {
        out->push_back({pos, n, k});
      }
      pos += n;
    }
    return Status::Ok();
  }
  Status Read(uint64_t offset, std::span<uint8_t> buf) override {
    for (size_t i = 0; i < buf.size(); ++i) {
      const uint64_t at = offset + i;
      if (at / kBlock == kBadBlock) return Status::Io("injected read error at " + ferry::Hex(at));
      buf[i] = KindOf(at / kBlock) == ExtentKind::kData ? static_cast<uint8_t>(at * 7 + 1) : 0;
    }
    return Status::Ok();
  }
};

class MemoryStream final : public ferry::NbdStream {
 public:
  MemoryStream(const uint8_t* data, size_t size) : in_(data, size) {}
  Status ReadFull(std::span<uint8_t> buf, ferry::NbdDeadline) override {
    if (shut_ || in_.size() - pos_ < buf.size()) {
      pos_ = in_.size();
      return Status::Io("end of input");
    }
    if (!buf.empty()) std::memcpy(buf.data(), in_.data() + pos_, buf.size());
    pos_ += buf.size();
    return Status::Ok();
  }
  bool WaitReadable(ferry::NbdDeadline) override { return true; }
  Status Write(std::span<const std::span<const uint8_t>> pieces) override {
    if (shut_) return Status::Io("shut down");
    for (auto p : pieces) written_ += p.size();
    if (written_ > kMaxOutput) return Status::Io("too much output");
    return Status::Ok();
  }
  void Shutdown() override { shut_ = true; }

 private:
  std::span<const uint8_t> in_;
  size_t pos_ = 0;
  size_t written_ = 0;
  bool shut_ = false;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static ferry::NbdExportTable* exports = [] {
    static ferry::NbdExportTable table;
    auto source = std::make_shared<PatternSource>();
    (void)table.Add({"disk", "fuzz disk", source});
    (void)table.Add({"second", "", source});
    return &table;
  }();
  ferry::NbdSessionOptions options;
  options.handshake_timeout = std::chrono::milliseconds(0);
  options.workers = 0;  // serve requests inline: deterministic
  options.max_request_bytes = 128 * 1024;
  MemoryStream stream(data, size);
  (void)ferry::RunNbdSession(stream, *exports, options);
  return 0;
}
