#include "disk/engine/copy_engine.h"

#include <gtest/gtest.h>

#include <cstring>
#include <map>
#include <mutex>
#include <random>

#include "common/bytes.h"
#include "test_util.h"

namespace ferry {
namespace {

// An in-memory source whose extents are declared, not derived: lets tests check that the
// engine never reads holes and treats each kind right.
class FakeSource final : public BlockSource {
 public:
  FakeSource(std::vector<uint8_t> bytes, std::vector<Extent> extents)
      : bytes_(std::move(bytes)), extents_(std::move(extents)) {}
  uint64_t size() const override { return bytes_.size(); }
  ImageInfo info() const override { return {}; }
  Status Extents(uint64_t offset, uint64_t length, std::vector<Extent>* out) override {
    for (const auto& e : extents_) {
      uint64_t a = std::max(e.offset, offset), b = std::min(e.offset + e.length, offset + length);
      if (a < b) out->push_back({a, b - a, e.kind});
    }
    return Status::Ok();
  }
  Status Read(uint64_t offset, std::span<uint8_t> buf) override {
    std::lock_guard<std::mutex> l(mu_);
    for (const auto& e : extents_) {
      uint64_t a = std::max(e.offset, offset), b = std::min(e.offset + e.length, offset + buf.size());
      if (a < b && e.kind != ExtentKind::kData) hole_reads_ += b - a;
    }
    reads_ += buf.size();
    std::memcpy(buf.data(), bytes_.data() + offset, buf.size());
    return Status::Ok();
  }
  uint64_t hole_reads_ = 0, reads_ = 0;

 private:
  std::vector<uint8_t> bytes_;
  std::vector<Extent> extents_;
  std::mutex mu_;
};

class MemorySink final : public BlockSink {
 public:
  MemorySink(uint64_t size, uint32_t gran, bool sequential)
      : bytes_(size, 0xEE), written_(size, 0), gran_(gran), sequential_(sequential) {}
  uint64_t size() const override { return bytes_.size(); }
  uint32_t granularity() const override { return gran_; }
  bool sequential() const override { return sequential_; }
  bool zero_initialized() const override { return zero_init_; }
  Status Write(uint64_t offset, std::span<const uint8_t> data) override {
    std::lock_guard<std::mutex> l(mu_);
    if (fail_after_ >= 0 && writes_ >= fail_after_) return Status::Io("injected write failure");
    ++writes_;
    EXPECT_EQ(offset % gran_, 0u);
    EXPECT_TRUE(data.size() % gran_ == 0 || offset + data.size() == bytes_.size());
    if (sequential_) {
      EXPECT_GE(offset, last_end_);
      last_end_ = offset + data.size();
    }
    std::memcpy(bytes_.data() + offset, data.data(), data.size());
    for (uint64_t i = offset; i < offset + data.size(); ++i) written_[i]++;
    return Status::Ok();
  }
  Status WriteZeroes(uint64_t offset, uint64_t length) override {
    std::lock_guard<std::mutex> l(mu_);
    zero_calls_++;
    std::memset(bytes_.data() + offset, 0, length);
    return Status::Ok();
  }
  Result<std::vector<uint8_t>> Checkpoint() override {
    checkpoints_++;
    return std::vector<uint8_t>{1, 2, 3};
  }
  Status Finalize() override { return Status::Ok(); }

  // Bytes as a reader would see them: untouched ranges of a zero-initialized sink read 0.
  std::vector<uint8_t> Content() const {
    std::vector<uint8_t> c = bytes_;
    if (zero_init_) {
      for (size_t i = 0; i < c.size(); ++i) {
        if (c[i] == 0xEE && written_[i] == 0) c[i] = 0;
      }
    }
    return c;
  }

  std::vector<uint8_t> bytes_;
  std::vector<uint8_t> written_;
  uint32_t gran_;
  bool sequential_;
  bool zero_init_ = true;
  int fail_after_ = -1;
  int writes_ = 0, zero_calls_ = 0, checkpoints_ = 0;
  uint64_t last_end_ = 0;
  std::mutex mu_;
};

struct Disk {
  std::vector<uint8_t> bytes;
  std::vector<Extent> extents;
};

// 64 KiB blocks: data, zero-filled data, declared zero, hole; partial last block.
Disk MakeDisk(uint64_t size, uint32_t seed) {
  Disk d;
  d.bytes.assign(size, 0);
  std::mt19937 rng(seed);
  const uint64_t block = 64 * 1024;
  for (uint64_t off = 0; off < size; off += block) {
    uint64_t len = std::min(block, size - off);
    int k = static_cast<int>(rng() % 4);
    ExtentKind kind = ExtentKind::kHole;
    if (k == 0 || k == 1) {
      kind = ExtentKind::kData;
      if (k == 0) {
        for (uint64_t i = 0; i < len; ++i) d.bytes[off + i] = static_cast<uint8_t>(rng());
      }
    } else if (k == 2) {
      kind = ExtentKind::kZero;
    }
    d.extents.push_back({off, len, kind});
  }
  return d;
}

TEST(CopyEngineTest, CopiesDataAndNeverReadsHoles) {
  for (bool sequential : {false, true}) {
    Disk d = MakeDisk(37 * 64 * 1024 + 4096, 7);
    FakeSource src(d.bytes, d.extents);
    MemorySink sink(d.bytes.size(), 4096, sequential);
    CopyOptions opts;
    opts.chunk_size = 256 * 1024;
    opts.workers = 3;
    auto r = CopyDisk(src, sink, opts);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(sink.Content(), d.bytes);
    EXPECT_EQ(src.hole_reads_, 0u);
    EXPECT_EQ(sink.zero_calls_, 0);  // zero-initialized: zeros are skipped
    EXPECT_EQ(r->progress.done_bytes, d.bytes.size());
    EXPECT_EQ(r->progress.read_bytes + 0, src.reads_);
    EXPECT_LT(r->progress.written_bytes, r->progress.read_bytes);  // zero data not written
  }
}

TEST(CopyEngineTest, WritesZeroesWhenTargetIsNotZeroInitialized) {
  Disk d = MakeDisk(16 * 64 * 1024, 3);
  FakeSource src(d.bytes, d.extents);
  MemorySink sink(d.bytes.size(), 65536, false);
  sink.zero_init_ = false;
  auto r = CopyDisk(src, sink, CopyOptions{});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(sink.bytes_, d.bytes);  // 0xEE everywhere else would show
  EXPECT_GT(sink.zero_calls_, 0);
}

TEST(CopyEngineTest, HashesMatchSha256OfTheVirtualDisk) {
  Disk d = MakeDisk(20 * 64 * 1024 + 512, 11);
  FakeSource src(d.bytes, d.extents);
  MemorySink sink(d.bytes.size(), 4096, false);
  CopyOptions opts;
  opts.chunk_size = 128 * 1024;
  opts.hash = true;
  auto r = CopyDisk(src, sink, opts);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r->disk_sha256, Sha256::Of(d.bytes));
  ASSERT_EQ(r->chunk_hashes.size(), DivRoundUp(d.bytes.size(), 128 * 1024));
  EXPECT_EQ(r->chunk_hashes[1], Sha256::Of(std::span(d.bytes).subspan(128 * 1024, 128 * 1024)));
}

// Chunk hashes only (what a cold migration's stream verification uses): every chunk's digest
// is the SHA-256 of its bytes, for chunks of holes, of declared zeros, of data that reads as
// zeros, of mixed data and the short tail alike; no whole-disk hash is taken.
TEST(CopyEngineTest, ChunkHashesOnlyCoverHolesZerosDataAndTheTail) {
  const uint64_t chunk = 128 * 1024;
  std::vector<uint8_t> bytes(5 * chunk + 3000, 0);
  std::mt19937 rng(9);
  for (uint64_t i = 3 * chunk; i < 4 * chunk + chunk / 2; ++i) bytes[i] = static_cast<uint8_t>(rng());
  FakeSource src(bytes, {{0, chunk, ExtentKind::kHole},
                         {chunk, chunk, ExtentKind::kZero},
                         {2 * chunk, chunk, ExtentKind::kData},  // data, all zero bytes
                         {3 * chunk, chunk + chunk / 2, ExtentKind::kData},
                         {4 * chunk + chunk / 2, chunk / 2 + 3000, ExtentKind::kHole}});
  MemorySink sink(bytes.size(), 4096, false);
  sink.zero_init_ = false;  // zero ranges must be written: 0xEE would show
  CopyOptions opts;
  opts.chunk_size = chunk;
  opts.hash = true;
  opts.hash_whole_disk = false;
  auto r = CopyDisk(src, sink, opts);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_FALSE(r->disk_sha256.has_value());
  ASSERT_EQ(r->chunk_hashes.size(), 6u);
  for (size_t i = 0; i < r->chunk_hashes.size(); ++i) {
    const uint64_t off = i * chunk;
    const uint64_t len = std::min<uint64_t>(chunk, bytes.size() - off);
    EXPECT_EQ(r->chunk_hashes[i], Sha256::Of(std::span(bytes).subspan(off, len))) << "chunk " << i;
  }
  EXPECT_EQ(sink.bytes_, bytes);
}

TEST(CopyEngineTest, ResumesFromTheLastCheckpointAfterAFailure) {
  testing::TempDir dir;
  Disk d = MakeDisk(64 * 64 * 1024, 5);
  FakeSource src(d.bytes, d.extents);
  MemorySink sink(d.bytes.size(), 4096, false);
  sink.zero_init_ = false;
  std::string jpath = dir.Join("j");
  auto journal = CheckpointJournal::Create(PosixEnv(), jpath, "copy-id");
  ASSERT_TRUE(journal.ok());
  CopyOptions opts;
  opts.chunk_size = 64 * 1024;
  opts.workers = 2;
  opts.hash = true;
  opts.checkpoint_bytes = 8 * 64 * 1024;
  opts.journal = journal->get();
  int total_writes = 0;
  {
    MemorySink dry(d.bytes.size(), 4096, false);
    ASSERT_TRUE(CopyDisk(src, dry, CopyOptions{}).ok());
    total_writes = dry.writes_;
    src.reads_ = 0;
  }
  ASSERT_GT(total_writes, 8);
  sink.fail_after_ = total_writes * 3 / 4;
  auto r1 = CopyDisk(src, sink, opts);
  ASSERT_FALSE(r1.ok());
  EXPECT_EQ(r1.status().code(), ErrorCode::kIo);
  EXPECT_NE(r1.status().message().find("injected"), std::string::npos);
  journal->reset();

  auto reopened = CheckpointJournal::Open(PosixEnv(), jpath);
  ASSERT_TRUE(reopened.ok()) << reopened.status().ToString();
  ASSERT_NE((*reopened)->last(), nullptr);
  uint64_t frontier = (*reopened)->last()->frontier;
  EXPECT_GT(frontier, 0u);
  EXPECT_EQ((*reopened)->last()->sink_state, (std::vector<uint8_t>{1, 2, 3}));
  sink.fail_after_ = -1;
  std::fill(sink.written_.begin(), sink.written_.end(), 0);
  opts.journal = reopened->get();
  uint64_t reads_before = src.reads_;
  auto r2 = CopyDisk(src, sink, opts);
  ASSERT_TRUE(r2.ok()) << r2.status().ToString();
  EXPECT_EQ(sink.bytes_, d.bytes);
  EXPECT_EQ(r2->progress.start_bytes, frontier);
  EXPECT_EQ(*r2->disk_sha256, Sha256::Of(d.bytes));
  // Nothing below the frontier was written again.
  for (uint64_t i = 0; i < frontier; ++i) ASSERT_EQ(sink.written_[i], 0) << i;
  EXPECT_LE(src.reads_ - reads_before, d.bytes.size() - frontier);
}

TEST(CopyEngineTest, SkipExtentsLeaveTheTargetAlone) {
  std::vector<uint8_t> bytes(8 * 65536, 0x11);
  FakeSource src(bytes, {{0, 65536, ExtentKind::kData},
                         {65536, 6 * 65536, ExtentKind::kSkip},
                         {7 * 65536, 65536, ExtentKind::kData}});
  MemorySink sink(bytes.size(), 65536, false);
  sink.zero_init_ = false;
  auto r = CopyDisk(src, sink, CopyOptions{});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(sink.bytes_[0], 0x11);
  EXPECT_EQ(sink.bytes_[65536], 0xEE);
  EXPECT_EQ(sink.bytes_[7 * 65536], 0x11);
  EXPECT_EQ(r->progress.skipped_bytes, 6u * 65536);
  CopyOptions hashing;
  hashing.hash = true;
  EXPECT_EQ(CopyDisk(src, sink, hashing).status().code(), ErrorCode::kInvalidArgument);
}

TEST(CopyEngineTest, CancelStopsWithCancelled) {
  Disk d = MakeDisk(32 * 65536, 9);
  FakeSource src(d.bytes, d.extents);
  MemorySink sink(d.bytes.size(), 4096, false);
  std::atomic<bool> cancel{true};
  CopyOptions opts;
  opts.cancel = &cancel;
  EXPECT_EQ(CopyDisk(src, sink, opts).status().code(), ErrorCode::kCancelled);
}

TEST(CopyEngineTest, RefusesASmallerTarget) {
  Disk d = MakeDisk(4 * 65536, 1);
  FakeSource src(d.bytes, d.extents);
  MemorySink sink(d.bytes.size() - 512, 512, false);
  EXPECT_EQ(CopyDisk(src, sink, CopyOptions{}).status().code(), ErrorCode::kInvalidArgument);
}

class FakeClock final : public Clock {
 public:
  int64_t NowNanos() override { return now_; }
  void SleepNanos(int64_t n) override {
    if (n > 0) now_ += n;
  }
  std::atomic<int64_t> now_{0};
};

TEST(CopyEngineTest, RateLimitPacesReads) {
  std::vector<uint8_t> bytes(10 << 20, 1);
  FakeSource src(bytes, {{0, bytes.size(), ExtentKind::kData}});
  MemorySink sink(bytes.size(), 65536, false);
  FakeClock clock;
  CopyOptions opts;
  opts.rate_limit = 1 << 20;  // 1 MiB/s: 10 MiB takes ~10 s of (fake) time
  opts.clock = &clock;
  opts.workers = 1;
  auto r = CopyDisk(src, sink, opts);
  ASSERT_TRUE(r.ok());
  EXPECT_GE(clock.now_.load(), 8'000'000'000);
  EXPECT_LE(clock.now_.load(), 11'000'000'000);
}

TEST(CompareTest, FindsFirstDifference) {
  Disk d = MakeDisk(40 * 65536, 2);
  std::vector<uint8_t> other = d.bytes;
  other[23 * 65536 + 77] ^= 0xFF;
  other[30 * 65536] ^= 0xFF;
  FakeSource a(d.bytes, {{0, d.bytes.size(), ExtentKind::kData}});
  FakeSource b(other, {{0, other.size(), ExtentKind::kData}});
  auto r = CompareDisks(a, b, 3);
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r->identical);
  EXPECT_EQ(r->first_difference, 23u * 65536 + 77);
  FakeSource c(d.bytes, d.extents);
  auto same = CompareDisks(a, c, 2);
  ASSERT_TRUE(same.ok());
  EXPECT_TRUE(same->identical);
}

}  // namespace
}  // namespace ferry
