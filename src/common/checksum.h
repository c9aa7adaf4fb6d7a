// Checksums and digests used by on-disk formats and manifests.
//
// Sha256 wraps OpenSSL's SHA-256 so that its intermediate state can be saved in a checkpoint
// journal and restored after a crash (the whole-disk digest must survive a resume).
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>
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

}  // namespace ferry
