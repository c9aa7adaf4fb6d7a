#include "common/checksum.h"

// The low-level SHA256_* API is the only OpenSSL interface whose state can be saved and
// restored; it is deprecated in 3.0 but present. Keep its use inside this file.
#define OPENSSL_SUPPRESS_DEPRECATED 1
#include <openssl/sha.h>
#include <xxhash.h>
#include <zlib.h>

#include <algorithm>
#include <cstring>
#include <new>

namespace ferry {
namespace {

struct Crc32cTable {
  uint32_t t[8][256];
  Crc32cTable() {
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
      t[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; ++i) {
      for (int s = 1; s < 8; ++s) t[s][i] = (t[s - 1][i] >> 8) ^ t[0][t[s - 1][i] & 0xff];
    }
  }
};

const Crc32cTable& Table() {
  static const Crc32cTable table;
  return table;
}

constexpr uint32_t kShaStateVersion = 1;

// Hands `count` zero bytes to `feed(pointer, length)` in pieces of a static zero buffer.
template <typename Feed>
void FeedZeros(uint64_t count, Feed feed) {
  static const uint8_t zeros[1 << 16] = {};
  while (count > 0) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(count, sizeof zeros));
    feed(zeros, n);
    count -= n;
  }
}

}  // namespace

uint32_t Crc32c(std::span<const uint8_t> data, uint32_t crc) {
  const auto& t = Table().t;
  uint32_t c = ~crc;
  const uint8_t* p = data.data();
  size_t n = data.size();
  while (n >= 8) {
    uint32_t lo, hi;
    std::memcpy(&lo, p, 4);
    std::memcpy(&hi, p + 4, 4);
    lo ^= c;
    c = t[7][lo & 0xff] ^ t[6][(lo >> 8) & 0xff] ^ t[5][(lo >> 16) & 0xff] ^ t[4][lo >> 24] ^
        t[3][hi & 0xff] ^ t[2][(hi >> 8) & 0xff] ^ t[1][(hi >> 16) & 0xff] ^ t[0][hi >> 24];
    p += 8;
    n -= 8;
  }
  while (n--) c = (c >> 8) ^ t[0][(c ^ *p++) & 0xff];
  return ~c;
}

uint32_t Crc32(std::span<const uint8_t> data, uint32_t crc) {
  uLong c = crc;
  const uint8_t* p = data.data();
  size_t n = data.size();
  while (n > 0) {
    uInt chunk = static_cast<uInt>(std::min<size_t>(n, 1u << 30));
    c = ::crc32(c, p, chunk);
    p += chunk;
    n -= chunk;
  }
  return static_cast<uint32_t>(c);
}

struct Sha256::Impl {
  SHA256_CTX ctx;
};

Sha256::Sha256() : impl_(new Impl) { SHA256_Init(&impl_->ctx); }
Sha256::~Sha256() { delete impl_; }

void Sha256::Update(std::span<const uint8_t> data) {
  SHA256_Update(&impl_->ctx, data.data(), data.size());
}

void Sha256::UpdateZeros(uint64_t count) {
  FeedZeros(count, [this](const uint8_t* zeros, size_t n) { SHA256_Update(&impl_->ctx, zeros, n); });
}

Sha256Digest Sha256::Finish() {
  Sha256Digest d;
  SHA256_Final(d.data(), &impl_->ctx);
  return d;
}

std::vector<uint8_t> Sha256::SaveState() const {
  std::vector<uint8_t> out(4 + sizeof(SHA256_CTX));
  std::memcpy(out.data(), &kShaStateVersion, 4);
  std::memcpy(out.data() + 4, &impl_->ctx, sizeof(SHA256_CTX));
  return out;
}

Status Sha256::RestoreState(std::span<const uint8_t> state) {
  uint32_t version = 0;
  if (state.size() != 4 + sizeof(SHA256_CTX)) {
    return Status::Corrupt("sha256 state: wrong length " + std::to_string(state.size()));
  }
  std::memcpy(&version, state.data(), 4);
  if (version != kShaStateVersion) {
    return Status::Corrupt("sha256 state: unknown version " + std::to_string(version));
  }
  std::memcpy(&impl_->ctx, state.data() + 4, sizeof(SHA256_CTX));
  if (impl_->ctx.num >= SHA256_CBLOCK) return Status::Corrupt("sha256 state: bad block count");
  return Status::Ok();
}

Sha256Digest Sha256::Of(std::span<const uint8_t> data) {
  Sha256 h;
  h.Update(data);
  return h.Finish();
}

std::string ToHex(std::span<const uint8_t> bytes) {
  static const char* kDigits = "0123456789abcdef";
  std::string s;
  s.reserve(bytes.size() * 2);
  for (uint8_t b : bytes) {
    s.push_back(kDigits[b >> 4]);
    s.push_back(kDigits[b & 15]);
  }
  return s;
}

std::string_view ChunkHashAlgorithmName(ChunkHashAlgorithm a) {
  return a == ChunkHashAlgorithm::kXxh3_128 ? "xxh3-128" : "sha256";
}

bool ChunkHashAlgorithmFromName(std::string_view name, ChunkHashAlgorithm* out) {
  if (name == "sha256") {
    *out = ChunkHashAlgorithm::kSha256;
  } else if (name == "xxh3-128") {
    *out = ChunkHashAlgorithm::kXxh3_128;
  } else {
    return false;
  }
  return true;
}

size_t ChunkDigestSize(ChunkHashAlgorithm a) {
  return a == ChunkHashAlgorithm::kXxh3_128 ? 16 : 32;
}

std::string ChunkDigestHex(const ChunkDigest& d, ChunkHashAlgorithm a) {
  return ToHex(std::span<const uint8_t>(d.data(), ChunkDigestSize(a)));
}

ChunkHasher::ChunkHasher(ChunkHashAlgorithm a) {
  if (a == ChunkHashAlgorithm::kSha256) {
    sha_ = std::make_unique<Sha256>();
  } else {
    XXH3_state_t* state = XXH3_createState();
    if (state == nullptr) throw std::bad_alloc();
    XXH3_128bits_reset(state);
    xxh_ = state;
  }
}

ChunkHasher::~ChunkHasher() { XXH3_freeState(static_cast<XXH3_state_t*>(xxh_)); }

void ChunkHasher::Update(std::span<const uint8_t> data) {
  if (sha_ != nullptr) {
    sha_->Update(data);
  } else {
    XXH3_128bits_update(static_cast<XXH3_state_t*>(xxh_), data.data(), data.size());
  }
}

void ChunkHasher::UpdateZeros(uint64_t count) {
  if (sha_ != nullptr) {
    sha_->UpdateZeros(count);
    return;
  }
  FeedZeros(count, [this](const uint8_t* zeros, size_t n) {
    XXH3_128bits_update(static_cast<XXH3_state_t*>(xxh_), zeros, n);
  });
}

ChunkDigest ChunkHasher::Finish() {
  if (sha_ != nullptr) return sha_->Finish();
  // XXH128_canonicalFromHash gives the big-endian bytes `xxhsum -H2` prints.
  XXH128_canonical_t canonical;
  XXH128_canonicalFromHash(&canonical, XXH3_128bits_digest(static_cast<XXH3_state_t*>(xxh_)));
  ChunkDigest d{};
  static_assert(sizeof canonical.digest == 16);
  std::memcpy(d.data(), canonical.digest, 16);
  return d;
}

}  // namespace ferry
