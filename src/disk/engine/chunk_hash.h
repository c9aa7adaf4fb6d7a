// HashChunks: the digest (SHA-256 or XXH3-128, common/checksum.h) of every chunk of a disk's virtual contents, the unit a cold migration
// verifies with (docs/plans.md, "Verification"): the source agent hashes what it exports, the
// target agent hashes what it wrote, and the lists must be equal.
//
// Chunk i covers [i*chunk_size, min((i+1)*chunk_size, size)). Its digest is the hash of
// those bytes as the disk reads them: identical to CopyResult::chunk_hashes for the same chunk
// size. Ranges the source reports as holes or zero extents are not read; a chunk that is all
// zero gets the (cached) digest of that many zero bytes without hashing them again.
//
// Thread-safety: runs `workers` threads over `source` (which must allow concurrent reads).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <mutex>
#include <utility>
#include <vector>

#include "common/checksum.h"
#include "common/status.h"
#include "disk/block_source.h"

namespace ferry {

// The digest of `length` zero bytes, computed once per distinct length (a disk has at most
// two: the chunk size and its tail), so that the chunks of a sparse disk's holes cost nothing
// to hash. Returned by value: a reference into the cache would be read after the lock is
// released, and the next new length may reallocate the cache (that race once gave a chunk of
// zeros a garbage digest and failed a cold migration's verify). Thread-safe.
class ZeroDigests {
 public:
  explicit ZeroDigests(ChunkHashAlgorithm algorithm = ChunkHashAlgorithm::kSha256)
      : algorithm_(algorithm) {}
  ChunkDigest Of(uint64_t length);

 private:
  const ChunkHashAlgorithm algorithm_;
  std::mutex mu_;
  std::vector<std::pair<uint64_t, ChunkDigest>> cache_;  // GUARDED_BY(mu_); never shrinks
};

struct HashChunksOptions {
  ChunkHashAlgorithm algorithm = ChunkHashAlgorithm::kSha256;
  int workers = 4;
  const std::atomic<bool>* cancel = nullptr;
  // Called now and then with the bytes of virtual disk hashed so far (any thread).
  std::function<void(uint64_t)> on_progress;
};

Result<std::vector<ChunkDigest>> HashChunks(BlockSource& source, uint64_t chunk_size,
                                            const HashChunksOptions& options = {});

// 64 (sha256) or 32 (xxh3-128) hex digits, as ChunkDigestHex writes them, back to a digest;
// kCorrupt naming `where` if malformed or of the other algorithm's length.
Result<ChunkDigest> DigestFromHex(std::string_view hex, const std::string& where,
                                  ChunkHashAlgorithm algorithm = ChunkHashAlgorithm::kSha256);

}  // namespace ferry
