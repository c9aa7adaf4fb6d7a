// Checksums and digests used by on-disk formats and manifests.
//
// Sha256 wraps OpenSSL's SHA-256 so that its intermediate state can be saved in a checkpoint
// journal and restored after a crash (the whole-disk digest must survive a resume).
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace ferry {

// CRC-32C (Castagnoli), as used by VHDX. `crc` chains calls; start with 0.
uint32_t Crc32c(std::span<const uint8_t> data, uint32_t crc = 0);
// CRC-32 (ISO-HDLC, zlib's), as used by the checkpoint journal.
uint32_t Crc32(std::span<const uint8_t> data, uint32_t crc = 0);

using Sha256Digest = std::array<uint8_t, 32>;

class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;

  void Update(std::span<const uint8_t> data);
  // Feeds `count` zero bytes.
  void UpdateZeros(uint64_t count);
  Sha256Digest Finish();

  // Opaque, versioned bytes of the intermediate state, and the inverse.
  std::vector<uint8_t> SaveState() const;
  Status RestoreState(std::span<const uint8_t> state);

  static Sha256Digest Of(std::span<const uint8_t> data);

 private:
  struct Impl;
  Impl* impl_;
};

std::string ToHex(std::span<const uint8_t> bytes);

// The digest of one chunk of a disk, by one of two algorithms:
//   sha256    SHA-256, 32 bytes: manifests (`ferry convert --manifest`), and a cold migration's
//             verification when the plan asks for it;
//   xxh3-128  XXH3's 128-bit hash (xxHash 0.8, as `xxhsum -H2` prints it), 16 bytes in the
//             first half of the array, the rest zero: a cold migration's default verification.
//             It catches any accidental change (corruption in transit, on storage, a bug) and is
//             ~20x cheaper than SHA-256, but it is not a cryptographic hash: someone who can
//             rewrite the NBD stream could forge a chunk that matches it.
enum class ChunkHashAlgorithm : uint8_t { kSha256, kXxh3_128 };
using ChunkDigest = std::array<uint8_t, 32>;

std::string_view ChunkHashAlgorithmName(ChunkHashAlgorithm a);  // "sha256", "xxh3-128"
bool ChunkHashAlgorithmFromName(std::string_view name, ChunkHashAlgorithm* out);
size_t ChunkDigestSize(ChunkHashAlgorithm a);  // 32, 16
// The digest's significant bytes as hex: 64 or 32 digits.
std::string ChunkDigestHex(const ChunkDigest& d, ChunkHashAlgorithm a);

class ChunkHasher {
 public:
  explicit ChunkHasher(ChunkHashAlgorithm a);
  ~ChunkHasher();
  ChunkHasher(const ChunkHasher&) = delete;
  ChunkHasher& operator=(const ChunkHasher&) = delete;

  void Update(std::span<const uint8_t> data);
  void UpdateZeros(uint64_t count);  // feeds `count` zero bytes
  ChunkDigest Finish();

 private:
  std::unique_ptr<Sha256> sha_;  // set for sha256
  void* xxh_ = nullptr;  // XXH3_state_t (kept inside checksum.cc)
};

}  // namespace ferry
