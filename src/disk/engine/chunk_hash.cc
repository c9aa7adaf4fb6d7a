// HashChunks and DigestFromHex (see chunk_hash.h).
#include "disk/engine/chunk_hash.h"

#include <algorithm>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>

#include "common/bytes.h"

namespace ferry {
namespace {

// A chunk is held in memory whole (one buffer per worker); past this a caller asking for
// huge chunks would make the agent hold gigabytes.
constexpr uint64_t kMaxChunkSize = 256ull << 20;
constexpr int kMaxWorkers = 64;

class HashRun {
 public:
  HashRun(BlockSource& source, uint64_t chunk_size, const HashChunksOptions& options)
      : source_(source),
        chunk_(chunk_size),
        options_(options),
        size_(source.size()),
        n_chunks_(DivRoundUp(size_, chunk_size)),
        digests_(n_chunks_) {}

  Result<std::vector<ChunkDigest>> Run() {
    const int workers = static_cast<int>(
        std::clamp<uint64_t>(static_cast<uint64_t>(std::clamp(options_.workers, 1, kMaxWorkers)), 1,
                             std::max<uint64_t>(n_chunks_, 1)));
    std::vector<std::thread> threads;
    for (int i = 1; i < workers; ++i) threads.emplace_back([this] { WorkerLoop(); });
    WorkerLoop();
    for (std::thread& t : threads) t.join();
    if (!error_.ok()) return error_;
    return std::move(digests_);
  }

 private:
  void WorkerLoop() {
    std::unique_ptr<uint8_t[]> buffer;
    std::vector<Extent> extents;
    for (;;) {
      if (failed_.load()) return;
      if (options_.cancel != nullptr && options_.cancel->load()) {
        Fail(Status::Cancelled("hashing cancelled"));
        return;
      }
      const uint64_t index = next_.fetch_add(1);
      if (index >= n_chunks_) return;
      const uint64_t off = index * chunk_;
      const uint64_t len = std::min(chunk_, size_ - off);
      Status s = HashChunk(off, len, &buffer, &extents, &digests_[index]);
      if (!s.ok()) {
        Fail(std::move(s).WithContext("chunk " + std::to_string(index) + " at " + Hex(off)));
        return;
      }
      const uint64_t done = hashed_.fetch_add(len) + len;
      if (options_.on_progress) options_.on_progress(done);
    }
  }

  Status HashChunk(uint64_t off, uint64_t len, std::unique_ptr<uint8_t[]>* buffer,
                   std::vector<Extent>* extents, ChunkDigest* out) {
    extents->clear();
    FERRY_TRY(source_.Extents(off, len, extents));
    FERRY_TRY(CheckCoverage(*extents, off, len));
    const bool any_data = std::any_of(extents->begin(), extents->end(),
                                      [](const Extent& e) { return e.kind == ExtentKind::kData; });
    if (!any_data) {
      *out = zeros_.Of(len);
      return Status::Ok();
    }
    if (*buffer == nullptr) *buffer = std::make_unique_for_overwrite<uint8_t[]>(chunk_);
    uint8_t* buf = buffer->get();
    // Read every data range first: a chunk whose data reads as zeros (a preallocated file)
    // then takes the cached digest instead of hashing megabytes of zeros.
    bool all_zero = true;
    for (const Extent& e : *extents) {
      if (e.kind != ExtentKind::kData) continue;
      uint8_t* at = buf + (e.offset - off);
      FERRY_TRY(source_.Read(e.offset, std::span<uint8_t>(at, e.length)));
      all_zero = all_zero && IsAllZero(at, e.length);
    }
    if (all_zero) {
      *out = zeros_.Of(len);
      return Status::Ok();
    }
    ChunkHasher h(options_.algorithm);
    for (const Extent& e : *extents) {
      if (e.kind == ExtentKind::kData) {
        h.Update(std::span<const uint8_t>(buf + (e.offset - off), e.length));
      } else {
        h.UpdateZeros(e.length);
      }
    }
    *out = h.Finish();
    return Status::Ok();
  }

  static Status CheckCoverage(const std::vector<Extent>& extents, uint64_t offset,
                              uint64_t length) {
    uint64_t pos = offset;
    for (const Extent& e : extents) {
      if (e.kind == ExtentKind::kSkip) {
        return Status::InvalidArgument(
            "the source leaves ranges unselected (dirty-bitmap source): it cannot be hashed");
      }
      if (e.offset != pos || e.length == 0) {
        return Status::Internal("source extents do not cover " + Hex(offset) + "+" + Hex(length) +
                                " contiguously (gap or overlap at " + Hex(pos) + ")");
      }
      pos += e.length;
    }
    if (pos != offset + length) {
      return Status::Internal("source extents cover up to " + Hex(pos) + ", expected " +
                              Hex(offset + length));
    }
    return Status::Ok();
  }

  void Fail(Status s) {
    std::lock_guard<std::mutex> lock(mu_);
    if (error_.ok()) error_ = std::move(s);
    failed_ = true;
  }

  BlockSource& source_;
  const uint64_t chunk_;
  const HashChunksOptions& options_;
  const uint64_t size_;
  const uint64_t n_chunks_;
  // Each worker writes only the slots of the indexes it took; read after every join.
  std::vector<ChunkDigest> digests_;
  ZeroDigests zeros_{options_.algorithm};
  std::atomic<uint64_t> next_{0};
  std::atomic<uint64_t> hashed_{0};
  std::atomic<bool> failed_{false};
  std::mutex mu_;
  Status error_;  // GUARDED_BY(mu_)
};

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

Result<std::vector<ChunkDigest>> HashChunks(BlockSource& source, uint64_t chunk_size,
                                            const HashChunksOptions& options) {
  if (chunk_size == 0 || chunk_size > kMaxChunkSize) {
    return Status::InvalidArgument("hash chunk size " + std::to_string(chunk_size) +
                                   ": expected 1 to " + std::to_string(kMaxChunkSize) + " bytes");
  }
  HashRun run(source, chunk_size, options);
  return run.Run();
}

ChunkDigest ZeroDigests::Of(uint64_t length) {
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [len, digest] : cache_) {
    if (len == length) return digest;
  }
  ChunkHasher h(algorithm_);
  h.UpdateZeros(length);
  cache_.emplace_back(length, h.Finish());
  return cache_.back().second;
}

Result<ChunkDigest> DigestFromHex(std::string_view hex, const std::string& where,
                                  ChunkHashAlgorithm algorithm) {
  ChunkDigest d{};
  const size_t n = ChunkDigestSize(algorithm);
  if (hex.size() != 2 * n) {
    return Status::Corrupt(where + ": expected " + std::to_string(2 * n) + " hex digits (" +
                           std::string(ChunkHashAlgorithmName(algorithm)) + "), got " +
                           std::to_string(hex.size()) + " characters");
  }
  for (size_t i = 0; i < n; ++i) {
    const int hi = HexValue(hex[2 * i]);
    const int lo = HexValue(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) {
      return Status::Corrupt(where + ": not a hex digit at position " +
                             std::to_string(hi < 0 ? 2 * i : 2 * i + 1));
    }
    d[i] = static_cast<uint8_t>(hi << 4 | lo);
  }
  return d;
}

}  // namespace ferry
