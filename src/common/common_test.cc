#include <gtest/gtest.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <linux/magic.h>
#include <random>
#include <utility>
#include <algorithm>
#include <vector>

#include "common/bytes.h"
#include "common/poll_pacer.h"
#include "common/checksum.h"
#include "common/file.h"
#include "common/status.h"
#include "common/units.h"

namespace ferry {
namespace {

TEST(StatusTest, ContextChainsFromOutsideIn) {
  Status s = Status::Corrupt("short read").WithContext("L2 table at 0x30000").WithContext("a.qcow2");
  EXPECT_EQ(s.code(), ErrorCode::kCorrupt);
  EXPECT_EQ(s.message(), "a.qcow2: L2 table at 0x30000: short read");
  EXPECT_EQ(s.ToString(), "corrupt: a.qcow2: L2 table at 0x30000: short read");
  EXPECT_TRUE(Status::Ok().WithContext("x").ok());
}

Result<int> Half(int v) {
  if (v % 2) return Status::InvalidArgument("odd");
  return v / 2;
}

Result<int> Quarter(int v) {
  FERRY_ASSIGN_OR_RETURN(int h, Half(v));
  FERRY_ASSIGN_OR_RETURN(int q, Half(h));
  return q;
}

TEST(StatusTest, AssignOrReturnPropagates) {
  EXPECT_EQ(*Quarter(8), 2);
  EXPECT_EQ(Quarter(6).status().code(), ErrorCode::kInvalidArgument);
}

TEST(ChecksumTest, Crc32cKnownVectors) {
  const std::string s = "123456789";
  EXPECT_EQ(Crc32c({reinterpret_cast<const uint8_t*>(s.data()), s.size()}), 0xE3069283u);
  std::vector<uint8_t> zeros(32, 0);
  EXPECT_EQ(Crc32c(zeros), 0x8A9136AAu);  // RFC 3720 B.4
  EXPECT_EQ(Crc32({reinterpret_cast<const uint8_t*>(s.data()), s.size()}), 0xCBF43926u);
}

TEST(ChecksumTest, Sha256StateSurvivesSaveRestore) {
  std::vector<uint8_t> data(100000);
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>(i * 7);
  Sha256Digest whole = Sha256::Of(data);
  Sha256 a;
  a.Update(std::span(data).first(12345));
  auto state = a.SaveState();
  Sha256 b;
  ASSERT_TRUE(b.RestoreState(state).ok());
  b.Update(std::span(data).subspan(12345));
  EXPECT_EQ(b.Finish(), whole);
  EXPECT_EQ(ToHex(Sha256::Of({})),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  state[4 + 8 * 4 + 8 + 64 + 0] ^= 0;  // untouched: still valid
  EXPECT_FALSE(b.RestoreState(std::span(state).first(10)).ok());
}

TEST(ChecksumTest, UpdateZerosEqualsZeroBuffer) {
  std::vector<uint8_t> zeros(200000, 0);
  Sha256 a;
  a.UpdateZeros(zeros.size());
  EXPECT_EQ(a.Finish(), Sha256::Of(zeros));
}

// Expected values from xxhsum 0.8.1 (`xxhsum -H2`), an independent implementation's output.
TEST(ChecksumTest, ChunkHasherXxh3MatchesXxhsumAndSha256MatchesSha256) {
  const std::vector<uint8_t> abc = {'a', 'b', 'c'};
  ChunkHasher x(ChunkHashAlgorithm::kXxh3_128);
  x.Update(abc);
  ChunkDigest d = x.Finish();
  EXPECT_EQ(ChunkDigestHex(d, ChunkHashAlgorithm::kXxh3_128), "06b05ab6733a618578af5f94892f3950");
  EXPECT_TRUE(std::all_of(d.begin() + 16, d.end(), [](uint8_t b) { return b == 0; }));

  // One million 'x' fed in uneven pieces.
  const std::vector<uint8_t> xs(1000000, 'x');
  ChunkHasher pieces(ChunkHashAlgorithm::kXxh3_128);
  for (size_t off = 0, step = 1; off < xs.size(); off += step, step = step * 3 + 1) {
    pieces.Update(std::span(xs).subspan(off, std::min(step, xs.size() - off)));
  }
  EXPECT_EQ(ChunkDigestHex(pieces.Finish(), ChunkHashAlgorithm::kXxh3_128),
            "408b717d132ab248ef02eeb2d3625399");

  ChunkHasher s(ChunkHashAlgorithm::kSha256);
  s.Update(abc);
  EXPECT_EQ(s.Finish(), Sha256::Of(abc));
  EXPECT_EQ(ChunkDigestSize(ChunkHashAlgorithm::kSha256), 32u);

  // UpdateZeros equals hashing a zero buffer, for both.
  const std::vector<uint8_t> zeros(200000, 0);
  for (ChunkHashAlgorithm a : {ChunkHashAlgorithm::kSha256, ChunkHashAlgorithm::kXxh3_128}) {
    ChunkHasher z(a), b(a);
    z.UpdateZeros(zeros.size());
    b.Update(zeros);
    EXPECT_EQ(z.Finish(), b.Finish()) << ChunkHashAlgorithmName(a);
    ChunkHashAlgorithm back{};
    ASSERT_TRUE(ChunkHashAlgorithmFromName(ChunkHashAlgorithmName(a), &back));
    EXPECT_EQ(back, a);
  }
  ChunkHashAlgorithm none{};
  EXPECT_FALSE(ChunkHashAlgorithmFromName("md5", &none));
}

TEST(PollPacerTest, QuietMigrationsArePolledEveryPollMs) {
  PollPacer p(200);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(p.Next(false, -1), 200);
  EXPECT_EQ(p.Next(false, 60'000), 200);  // an ETA far away changes nothing
}

TEST(PollPacerTest, AChangeIsFollowedAfter25ThenDoublingUpToPollMs) {
  PollPacer p(200);
  std::vector<int64_t> delays;
  delays.push_back(p.Next(true, -1));
  for (int i = 0; i < 5; ++i) delays.push_back(p.Next(false, -1));
  EXPECT_EQ(delays, (std::vector<int64_t>{25, 50, 100, 200, 200, 200}));
  // Each new change starts again from 25 ms.
  EXPECT_EQ(p.Next(false, -1), 200);
  EXPECT_EQ(p.Next(true, -1), 25);
  EXPECT_EQ(p.Next(true, -1), 25);
}

TEST(PollPacerTest, ACopyAboutToEndIsPolledEvery25Ms) {
  PollPacer p(200);
  EXPECT_EQ(p.Next(false, 801), 200);
  EXPECT_EQ(p.Next(false, 800), 25);  // under four polls
  EXPECT_EQ(p.Next(false, 120), 25);
  EXPECT_EQ(p.Next(false, 0), 25);
  EXPECT_EQ(p.Next(false, -1), 50);  // the ETA is gone: back off again
}

TEST(PollPacerTest, ShortPollMsIsNeverExceeded) {
  PollPacer p(10);
  EXPECT_EQ(p.Next(true, -1), 10);
  EXPECT_EQ(p.Next(false, -1), 10);
}

TEST(BytesTest, IsAllZero) {
  std::vector<uint8_t> v(4096, 0);
  EXPECT_TRUE(IsAllZero(v.data(), v.size()));
  for (size_t pos : {0ul, 15ul, 16ul, 100ul, 4095ul}) {
    v[pos] = 1;
    EXPECT_FALSE(IsAllZero(v.data(), v.size())) << pos;
    v[pos] = 0;
  }
  EXPECT_TRUE(IsAllZero(v.data(), 0));
}

TEST(BytesTest, EndianRoundTrip) {
  uint8_t b[8];
  StoreBE64(b, 0x0102030405060708ull);
  EXPECT_EQ(b[0], 1);
  EXPECT_EQ(LoadBE64(b), 0x0102030405060708ull);
  StoreLE32(b, 0xAABBCCDD);
  EXPECT_EQ(b[0], 0xDD);
  EXPECT_EQ(LoadLE32(b), 0xAABBCCDDu);
}

TEST(UnitsTest, ParseSize) {
  EXPECT_EQ(*ParseSize("4096"), 4096u);
  EXPECT_EQ(*ParseSize("64K"), 65536u);
  EXPECT_EQ(*ParseSize("1.5G"), 1610612736u);
  EXPECT_EQ(*ParseSize("100MiB/s"), 104857600u);
  EXPECT_FALSE(ParseSize("12X").ok());
  EXPECT_FALSE(ParseSize("").ok());
  EXPECT_FALSE(ParseSize("-1").ok());
  EXPECT_EQ(FormatBytes(1536), "1.50 KiB");
}

// Forwards to an in-memory file and records the page-cache hints it gets.
class HintRecordingFile final : public File {
 public:
  HintRecordingFile() : base_(NewMemoryFile({}, "rec")) {}
  const std::string& path() const override { return base_->path(); }
  Status ReadAt(uint64_t o, std::span<uint8_t> b) const override { return base_->ReadAt(o, b); }
  Result<size_t> ReadSomeAt(uint64_t o, std::span<uint8_t> b) const override {
    return base_->ReadSomeAt(o, b);
  }
  Status WriteAt(uint64_t o, std::span<const uint8_t> d) override { return base_->WriteAt(o, d); }
  Result<uint64_t> Size() const override { return base_->Size(); }
  Status Truncate(uint64_t s) override { return base_->Truncate(s); }
  Status Sync() override { return base_->Sync(); }
  void StartWriteback(uint64_t o, uint64_t l) override { started.emplace_back(o, l); }
  void ReleaseWritten(uint64_t o, uint64_t l) override { released.emplace_back(o, l); }
  Status PunchHole(uint64_t o, uint64_t l) override { return base_->PunchHole(o, l); }
  Status Allocate(uint64_t o, uint64_t l) override { return base_->Allocate(o, l); }
  Status DataRanges(uint64_t o, uint64_t l,
                    std::vector<std::pair<uint64_t, uint64_t>>* out) const override {
    return base_->DataRanges(o, l, out);
  }
  std::vector<std::pair<uint64_t, uint64_t>> started, released;

 private:
  std::unique_ptr<File> base_;
};

TEST(WriteBehindTest, ReleasesTheOldestRangesOnceTheWindowIsFull) {
  HintRecordingFile f;
  WriteBehind wb(&f, 3 << 20);
  using R = std::pair<uint64_t, uint64_t>;
  const uint64_t mib = 1 << 20;
  wb.Wrote(5 * mib, mib);
  wb.Wrote(0, mib);
  wb.Wrote(9 * mib, mib);
  EXPECT_TRUE(f.released.empty()) << "3 MiB held fits a 3 MiB window";
  wb.Wrote(2 * mib, 2 * mib);  // 5 MiB held: the two oldest go
  EXPECT_EQ(f.released, (std::vector<R>{{5 * mib, mib}, {0, mib}}));
  wb.Wrote(7 * mib, 0);  // nothing written, nothing to do
  EXPECT_EQ(f.started, (std::vector<R>{{5 * mib, mib}, {0, mib}, {9 * mib, mib}, {2 * mib, 2 * mib}}));
  // A single write larger than the window is kept until the next one.
  WriteBehind small(&f, mib);
  f.released.clear();
  small.Wrote(20 * mib, 4 * mib);
  EXPECT_TRUE(f.released.empty());
  small.Wrote(30 * mib, mib);
  EXPECT_EQ(f.released, (std::vector<R>{{20 * mib, 4 * mib}}));
}

// On a real file: the data survives the dropping, and the pages written long ago have left the
// page cache (mincore) while the last window is still there.
TEST(WriteBehindTest, RealFileKeepsDataAndDropsOldPages) {
  // /var/tmp: on disk on Debian (tmpfs would have no writeback and keep every page).
  const std::string path = "/var/tmp/ferry-write-behind-" + std::to_string(::getpid());
  struct statfs fs {};
  ASSERT_EQ(::statfs("/var/tmp", &fs), 0);
  ASSERT_NE(fs.f_type, TMPFS_MAGIC) << "/var/tmp is a tmpfs: this test needs a disk filesystem";
  auto file = PosixEnv()->Open(path, OpenMode::kCreateTruncate);
  ASSERT_TRUE(file.ok()) << file.status().ToString();
  const uint64_t mib = 1 << 20, total = 32 * mib;
  std::vector<uint8_t> data(total);
  std::mt19937_64 rng(7);
  for (auto& b : data) b = static_cast<uint8_t>(rng());
  {
    WriteBehind wb(file->get(), 4 * mib);
    for (uint64_t off = 0; off < total; off += mib) {
      ASSERT_TRUE((*file)->WriteAt(off, {data.data() + off, mib}).ok());
      wb.Wrote(off, mib);
    }
  }
  std::vector<uint8_t> back(total);
  ASSERT_TRUE((*file)->ReadAt(0, back).ok());
  EXPECT_TRUE(back == data);

  // Residency right after writing: re-write, then look before reading anything back.
  auto again = PosixEnv()->Open(path, OpenMode::kReadWrite);
  ASSERT_TRUE(again.ok());
  {
    WriteBehind wb(again->get(), 4 * mib);
    for (uint64_t off = 0; off < total; off += mib) {
      ASSERT_TRUE((*again)->WriteAt(off, {data.data() + off, mib}).ok());
      wb.Wrote(off, mib);
    }
  }
  const long page = ::sysconf(_SC_PAGESIZE);
  const int fd = ::open(path.c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  void* map = ::mmap(nullptr, total, PROT_READ, MAP_SHARED, fd, 0);
  ::close(fd);
  ASSERT_NE(map, MAP_FAILED);
  std::vector<unsigned char> resident(total / static_cast<uint64_t>(page));
  ASSERT_EQ(::mincore(map, total, resident.data()), 0);
  size_t first_half = 0;
  for (size_t i = 0; i < resident.size() / 2; ++i) first_half += resident[i] & 1;
  EXPECT_EQ(first_half, 0u) << "pages of the first 16 MiB should have been dropped";
  ::munmap(map, total);
  EXPECT_TRUE(PosixEnv()->Remove(path).ok());
}

}  // namespace
}  // namespace ferry
