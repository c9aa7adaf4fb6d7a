#include "disk/engine/chunk_hash.h"

#include <gtest/gtest.h>

#include <cstring>
#include <mutex>
#include <random>

#include "common/bytes.h"
#include "disk/engine/copy_engine.h"
#include "disk/image.h"
#include "test_util.h"

namespace ferry {
namespace {

// An in-memory disk with declared extents; counts reads that touch non-data extents.
class DeclaredSource final : public BlockSource {
 public:
  DeclaredSource(std::vector<uint8_t> bytes, std::vector<Extent> extents)
      : bytes_(std::move(bytes)), extents_(std::move(extents)) {}
  uint64_t size() const override { return bytes_.size(); }
  ImageInfo info() const override { return {}; }
  Status Extents(uint64_t offset, uint64_t length, std::vector<Extent>* out) override {
    for (const auto& e : extents_) {
      const uint64_t a = std::max(e.offset, offset);
      const uint64_t b = std::min(e.offset + e.length, offset + length);
      if (a < b) out->push_back({a, b - a, e.kind});
    }
    return Status::Ok();
  }
  Status Read(uint64_t offset, std::span<uint8_t> buf) override {
    std::lock_guard<std::mutex> l(mu_);
    for (const auto& e : extents_) {
      const uint64_t a = std::max(e.offset, offset);
      const uint64_t b = std::min(e.offset + e.length, offset + buf.size());
      if (a < b && e.kind != ExtentKind::kData) non_data_reads += b - a;
    }
    if (fail_reads) return Status::Io("injected read failure");
    reads += buf.size();
    std::memcpy(buf.data(), bytes_.data() + offset, buf.size());
    return Status::Ok();
  }
  uint64_t non_data_reads = 0, reads = 0;
  bool fail_reads = false;

 private:
  std::vector<uint8_t> bytes_;
  std::vector<Extent> extents_;
  std::mutex mu_;
};

// Accepts everything (CopyDisk needs a sink to produce its chunk hashes).
class DiscardSink final : public BlockSink {
 public:
  explicit DiscardSink(uint64_t size) : size_(size) {}
  uint64_t size() const override { return size_; }
  uint32_t granularity() const override { return 512; }
  bool zero_initialized() const override { return true; }
  Status Write(uint64_t, std::span<const uint8_t>) override { return Status::Ok(); }
  Status WriteZeroes(uint64_t, uint64_t) override { return Status::Ok(); }
  Result<std::vector<uint8_t>> Checkpoint() override { return std::vector<uint8_t>{}; }
  Status Finalize() override { return Status::Ok(); }

 private:
  uint64_t size_;
};

// 64 KiB blocks of random data, zero-filled data, declared zeros and holes; a short tail.
DeclaredSource MakeDisk(uint64_t size, uint32_t seed) {
  std::vector<uint8_t> bytes(size, 0);
  std::vector<Extent> extents;
  std::mt19937 rng(seed);
  const uint64_t block = 64 * 1024;
  for (uint64_t off = 0; off < size; off += block) {
    const uint64_t len = std::min(block, size - off);
    const int k = static_cast<int>(rng() % 4);
    ExtentKind kind = k <= 1 ? ExtentKind::kData : k == 2 ? ExtentKind::kZero : ExtentKind::kHole;
    if (k == 0) {
      for (uint64_t i = 0; i < len; ++i) bytes[off + i] = static_cast<uint8_t>(rng());
    }
    extents.push_back({off, len, kind});
  }
  return DeclaredSource(std::move(bytes), std::move(extents));
}

std::vector<ChunkDigest> CopyDiskHashes(BlockSource& source, uint64_t chunk,
                                        ChunkHashAlgorithm algorithm = ChunkHashAlgorithm::kSha256) {
  DiscardSink sink(source.size());
  CopyOptions opts;
  opts.chunk_size = chunk;
  opts.hash = true;
  opts.chunk_hash = algorithm;
  Result<CopyResult> r = CopyDisk(source, sink, opts);
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  return r.ok() ? r->chunk_hashes : std::vector<Sha256Digest>{};
}

TEST(ChunkHashTest, EqualsCopyDiskChunkHashesAndNeverReadsHoles) {
  DeclaredSource disk = MakeDisk(45 * 64 * 1024 + 4096, 7);
  for (uint64_t chunk : {uint64_t{128} << 10, uint64_t{1} << 20, uint64_t{4} << 20}) {
    HashChunksOptions opts;
    opts.workers = 3;
    disk.non_data_reads = 0;
    Result<std::vector<Sha256Digest>> hashes = HashChunks(disk, chunk, opts);
    ASSERT_TRUE(hashes.ok()) << hashes.status().ToString();
    EXPECT_EQ(disk.non_data_reads, 0u) << "chunk " << chunk;
    ASSERT_EQ(hashes->size(), DivRoundUp(disk.size(), chunk));
    EXPECT_EQ(*hashes, CopyDiskHashes(disk, chunk)) << "chunk " << chunk;
  }
}

// The cold migration's default: the target's copy engine and the source's HashChunks must
// agree on XXH3-128 too, holes and all, and differ from the SHA-256 digests.
TEST(ChunkHashTest, Xxh3DigestsEqualCopyDiskAndTheirOwnBytes) {
  DeclaredSource disk = MakeDisk(45 * 64 * 1024 + 4096, 7);
  const uint64_t chunk = 128 << 10;
  HashChunksOptions opts;
  opts.workers = 3;
  opts.algorithm = ChunkHashAlgorithm::kXxh3_128;
  Result<std::vector<ChunkDigest>> hashes = HashChunks(disk, chunk, opts);
  ASSERT_TRUE(hashes.ok()) << hashes.status().ToString();
  EXPECT_EQ(*hashes, CopyDiskHashes(disk, chunk, ChunkHashAlgorithm::kXxh3_128));
  EXPECT_NE(*hashes, CopyDiskHashes(disk, chunk));
  std::vector<uint8_t> all(disk.size());
  ASSERT_TRUE(disk.Read(0, all).ok());
  for (size_t i = 0; i < hashes->size(); ++i) {
    const uint64_t off = i * chunk, len = std::min<uint64_t>(chunk, all.size() - off);
    ChunkHasher h(ChunkHashAlgorithm::kXxh3_128);
    h.Update(std::span(all).subspan(off, len));
    EXPECT_EQ((*hashes)[i], h.Finish()) << "chunk " << i;
  }
  // Hex of the other algorithm's length is refused, naming the algorithm.
  const std::string hex = ChunkDigestHex((*hashes)[0], ChunkHashAlgorithm::kXxh3_128);
  EXPECT_EQ(hex.size(), 32u);
  EXPECT_EQ(*DigestFromHex(hex, "h", ChunkHashAlgorithm::kXxh3_128), (*hashes)[0]);
  Result<ChunkDigest> wrong = DigestFromHex(hex, "d[0]", ChunkHashAlgorithm::kSha256);
  ASSERT_FALSE(wrong.ok());
  EXPECT_EQ(wrong.status().message(), "d[0]: expected 64 hex digits (sha256), got 32 characters");
}

TEST(ChunkHashTest, EachDigestIsTheSha256OfItsChunk) {
  DeclaredSource disk = MakeDisk(10 * 64 * 1024 + 512, 3);
  std::vector<uint8_t> all(disk.size());
  ASSERT_TRUE(disk.Read(0, all).ok());
  const uint64_t chunk = 192 * 1024;
  Result<std::vector<Sha256Digest>> hashes = HashChunks(disk, chunk);
  ASSERT_TRUE(hashes.ok());
  ASSERT_EQ(hashes->size(), 4u);
  for (size_t i = 0; i < hashes->size(); ++i) {
    const uint64_t off = i * chunk;
    const uint64_t len = std::min<uint64_t>(chunk, all.size() - off);
    EXPECT_EQ((*hashes)[i], Sha256::Of(std::span(all).subspan(off, len))) << "chunk " << i;
  }
}

TEST(ChunkHashTest, AllZeroChunksGetTheDigestOfZeros) {
  // One chunk of holes, one declared zero, one of data that reads as zeros, and a short tail.
  const uint64_t chunk = 64 * 1024;
  std::vector<uint8_t> bytes(3 * chunk + 1000, 0);
  DeclaredSource disk(bytes, {{0, chunk, ExtentKind::kHole},
                              {chunk, chunk, ExtentKind::kZero},
                              {2 * chunk, chunk + 1000, ExtentKind::kData}});
  Result<std::vector<Sha256Digest>> hashes = HashChunks(disk, chunk);
  ASSERT_TRUE(hashes.ok());
  const std::vector<uint8_t> zeros(chunk, 0);
  for (int i = 0; i < 3; ++i) EXPECT_EQ((*hashes)[i], Sha256::Of(zeros));
  EXPECT_EQ((*hashes)[3], Sha256::Of(std::span(zeros).subspan(0, 1000)));
  EXPECT_EQ(disk.reads, chunk + 1000);  // only the data extent was read
}

TEST(ChunkHashTest, ZeroDigestsStayRightWithManyWorkersAndATail) {
  // Regression: the digest of zeros was handed out by reference into a cache that the tail's
  // length reallocates, so a worker could copy freed memory (ASan saw it; a cold migration's
  // verify once failed on it). Many workers, only zero chunks, a short tail, many runs.
  const uint64_t chunk = 4096;
  const uint64_t size = 512 * chunk + 100;
  DeclaredSource disk(std::vector<uint8_t>(size, 0), {{0, size, ExtentKind::kHole}});
  const Sha256Digest full = Sha256::Of(std::vector<uint8_t>(chunk, 0));
  const Sha256Digest tail = Sha256::Of(std::vector<uint8_t>(100, 0));
  HashChunksOptions opts;
  opts.workers = 16;
  for (int run = 0; run < 50; ++run) {
    Result<std::vector<Sha256Digest>> hashes = HashChunks(disk, chunk, opts);
    ASSERT_TRUE(hashes.ok());
    ASSERT_EQ(hashes->size(), 513u);
    for (size_t i = 0; i + 1 < hashes->size(); ++i) ASSERT_EQ((*hashes)[i], full) << i;
    ASSERT_EQ(hashes->back(), tail);
  }
}

TEST(ChunkHashTest, ReportsProgressUpToTheDiskSize) {
  DeclaredSource disk = MakeDisk(33 * 64 * 1024, 5);
  std::atomic<uint64_t> most{0};
  std::atomic<int> calls{0};
  HashChunksOptions opts;
  opts.on_progress = [&](uint64_t done) {
    uint64_t seen = most.load();
    while (done > seen && !most.compare_exchange_weak(seen, done)) {
    }
    ++calls;
  };
  ASSERT_TRUE(HashChunks(disk, 128 * 1024, opts).ok());
  EXPECT_EQ(most.load(), disk.size());
  EXPECT_EQ(calls.load(), static_cast<int>(DivRoundUp(disk.size(), 128 * 1024)));
}

TEST(ChunkHashTest, EmptyDiskHasNoChunks) {
  DeclaredSource disk({}, {});
  Result<std::vector<Sha256Digest>> hashes = HashChunks(disk, 4 << 20);
  ASSERT_TRUE(hashes.ok());
  EXPECT_TRUE(hashes->empty());
}

TEST(ChunkHashTest, ErrorsNameTheChunk) {
  DeclaredSource disk = MakeDisk(8 * 64 * 1024, 9);
  disk.fail_reads = true;
  Result<std::vector<Sha256Digest>> hashes = HashChunks(disk, 64 * 1024);
  ASSERT_FALSE(hashes.ok());
  EXPECT_EQ(hashes.status().code(), ErrorCode::kIo);
  EXPECT_NE(hashes.status().message().find("chunk "), std::string::npos)
      << hashes.status().message();

  std::atomic<bool> cancel{true};
  HashChunksOptions opts;
  opts.cancel = &cancel;
  EXPECT_EQ(HashChunks(disk, 64 * 1024, opts).status().code(), ErrorCode::kCancelled);

  EXPECT_EQ(HashChunks(disk, 0).status().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(HashChunks(disk, uint64_t{1} << 30).status().code(), ErrorCode::kInvalidArgument);

  DeclaredSource bitmap(std::vector<uint8_t>(65536), {{0, 65536, ExtentKind::kSkip}});
  EXPECT_EQ(HashChunks(bitmap, 65536).status().code(), ErrorCode::kInvalidArgument);
}

TEST(ChunkHashTest, RawImageFileEqualsCopyDiskAt4MiB) {
  testing::TempDir dir;
  const std::string path = dir.Join("disk.raw");
  testing::PatternSpec spec;
  spec.size = (24ull << 20) + 3 * 65536;  // 6 chunks and a partial one
  ASSERT_TRUE(testing::WritePatternRaw(path, spec));
  Result<std::unique_ptr<BlockSource>> src = OpenImage(path);
  ASSERT_TRUE(src.ok()) << src.status().ToString();
  Result<std::vector<Sha256Digest>> hashes = HashChunks(**src, 4 << 20);
  ASSERT_TRUE(hashes.ok()) << hashes.status().ToString();
  EXPECT_EQ(hashes->size(), 7u);
  EXPECT_EQ(*hashes, CopyDiskHashes(**src, 4 << 20));
  const std::vector<uint8_t> bytes = testing::ReadFileBytes(path);
  EXPECT_EQ(hashes->back(), Sha256::Of(std::span(bytes).subspan(24ull << 20)));
}

TEST(ChunkHashTest, DigestFromHexRoundTrips) {
  const Sha256Digest d = Sha256::Of(std::vector<uint8_t>{1, 2, 3});
  Result<Sha256Digest> back = DigestFromHex(ToHex(d), "x");
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, d);
  std::string upper = ToHex(d);
  for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  EXPECT_EQ(*DigestFromHex(upper, "x"), d);

  Result<Sha256Digest> short_one = DigestFromHex("abcd", "disks[0].chunk_hashes[3]");
  EXPECT_EQ(short_one.status().code(), ErrorCode::kCorrupt);
  EXPECT_EQ(short_one.status().message(),
            "disks[0].chunk_hashes[3]: expected 64 hex digits (sha256), got 4 characters");
  std::string bad = ToHex(d);
  bad[10] = 'g';
  EXPECT_EQ(DigestFromHex(bad, "h").status().message(), "h: not a hex digit at position 10");
}

}  // namespace
}  // namespace ferry
