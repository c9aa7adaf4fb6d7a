// Tests for the qcow2 reader and writer, with qemu-img/qemu-io as the truth.
#include "disk/qcow2/qcow2.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <random>
#include <thread>

#include "common/bytes.h"
#include "disk/image.h"
#include "test_util.h"

namespace ferry {
namespace {

using testing::Run;
using testing::ShellQuote;
using testing::TempDir;

constexpr uint64_t kMiB = 1 << 20;

#define ASSERT_OK(expr)                                      \
  do {                                                       \
    const ::ferry::Status s_ = (expr);                       \
    ASSERT_TRUE(s_.ok()) << #expr << ": " << s_.ToString();  \
  } while (0)

// Runs a shell command that must succeed.
void Sh(const std::string& cmd) {
  auto r = Run(cmd);
  ASSERT_EQ(r.exit_code, 0) << cmd << "\n" << r.output;
}

std::string Q(const std::string& s) { return ShellQuote(s); }

void MakeTruth(const std::string& path, uint64_t size, uint32_t seed, uint32_t block = 32 * 1024) {
  testing::PatternSpec spec;
  spec.size = size;
  spec.seed = seed;
  spec.block = block;
  spec.data_fraction = 0.4;
  spec.zero_fraction = 0.1;
  ASSERT_TRUE(testing::WritePatternRaw(path, spec));
}

std::unique_ptr<BlockSource> MustOpen(const std::string& path, OpenOptions options = {}) {
  auto src = OpenImage(path, options);
  EXPECT_TRUE(src.ok()) << path << ": " << src.status().ToString();
  return src.ok() ? std::move(*src) : nullptr;
}

std::vector<uint8_t> ReadAll(BlockSource& src) {
  std::vector<uint8_t> out(src.size());
  Status s = src.Read(0, out);
  EXPECT_TRUE(s.ok()) << s.ToString();
  return out;
}

// Extents must tile [0, size) in order, and only kData may hold non-zero bytes.
void CheckExtents(BlockSource& src, const std::vector<uint8_t>& truth) {
  std::vector<Extent> extents;
  ASSERT_OK(src.Extents(0, src.size(), &extents));
  uint64_t pos = 0;
  for (const Extent& e : extents) {
    ASSERT_EQ(e.offset, pos);
    ASSERT_GT(e.length, 0u);
    if (e.kind != ExtentKind::kData) {
      ASSERT_TRUE(IsAllZero(truth.data() + e.offset, e.length))
          << "non-zero bytes in a " << int(e.kind) << " extent at " << e.offset;
    }
    pos += e.length;
  }
  ASSERT_EQ(pos, src.size());
}

// Opens `image`, compares every byte with the raw `truth` file, and checks the extents.
void ExpectSameAsRaw(const std::string& image, const std::string& truth_path) {
  auto src = MustOpen(image);
  ASSERT_NE(src, nullptr);
  const std::vector<uint8_t> truth = testing::ReadFileBytes(truth_path);
  ASSERT_EQ(src->size(), truth.size());
  ASSERT_TRUE(ReadAll(*src) == truth) << image << " differs from " << truth_path;
  CheckExtents(*src, truth);
  // Unaligned reads crossing clusters and L2 tables.
  for (uint64_t off : {uint64_t{1}, uint64_t{12345}, truth.size() / 3 + 7}) {
    const uint64_t len = std::min<uint64_t>(300001, truth.size() - off);
    std::vector<uint8_t> buf(len);
    ASSERT_OK(src->Read(off, buf));
    ASSERT_TRUE(std::equal(buf.begin(), buf.end(), truth.begin() + off)) << "at " << off;
  }
}

// Copies [from, to) of `src` into `sink` the way the copy engine does: 4 MiB chunks, data
// granules written (consecutive ones coalesced), zero granules skipped on a zero-initialized
// sink and WriteZeroes'd otherwise. Chunks are spread over `threads` threads.
Status CopyRange(BlockSource& src, BlockSink& sink, uint64_t from, uint64_t to, int threads) {
  const uint64_t chunk = 4 * kMiB;
  const uint64_t g = sink.granularity();
  std::atomic<uint64_t> next{from};
  std::mutex mu;
  Status first_error;
  auto fail = [&](Status s) {
    std::lock_guard<std::mutex> lock(mu);
    if (first_error.ok()) first_error = s;
  };
  auto worker = [&] {
    std::vector<uint8_t> buf;
    for (;;) {
      const uint64_t c = next.fetch_add(chunk);
      if (c >= to) return;
      const uint64_t end = std::min(c + chunk, to);
      std::vector<Extent> extents;
      Status s = src.Extents(c, end - c, &extents);
      if (!s.ok()) return fail(s);
      buf.assign(end - c, 0);
      std::vector<bool> nonzero;
      for (uint64_t gs = c; gs < end; gs += g) {
        const uint64_t ge = std::min(gs + g, end);
        bool data = false;
        for (const Extent& e : extents) {
          if (e.kind == ExtentKind::kData && e.offset < ge && e.offset + e.length > gs) data = true;
        }
        std::span<uint8_t> piece(buf.data() + (gs - c), ge - gs);
        if (data) {
          s = src.Read(gs, piece);
          if (!s.ok()) return fail(s);
        }
        nonzero.push_back(data && !IsAllZero(piece.data(), piece.size()));
      }
      for (size_t i = 0; i < nonzero.size();) {
        size_t j = i;
        while (j < nonzero.size() && nonzero[j] == nonzero[i]) ++j;
        const uint64_t a = c + i * g, b = std::min(c + j * g, end);
        if (nonzero[i]) {
          s = sink.Write(a, std::span<const uint8_t>(buf.data() + (a - c), b - a));
        } else if (!sink.zero_initialized()) {
          s = sink.WriteZeroes(a, b - a);
        }
        if (!s.ok()) return fail(s);
        i = j;
      }
    }
  };
  std::vector<std::thread> pool;
  for (int i = 0; i < threads; ++i) pool.emplace_back(worker);
  for (auto& t : pool) t.join();
  return first_error;
}

// qemu-img check must find no errors and no leaks.
void ExpectQemuCheckClean(const std::string& image) {
  auto r = testing::Run("qemu-img check -f qcow2 " + Q(image));
  EXPECT_EQ(r.exit_code, 0) << r.output;
}

// ---------------------------------------------------------------------------------------
// Reader: images made by qemu-img.

struct Variant {
  std::string name;
  std::string options;  // qemu-img convert -o
  std::string extra;    // more qemu-img convert flags
};
void PrintTo(const Variant& v, std::ostream* os) { *os << v.name; }

class Qcow2ReadVariantTest : public ::testing::TestWithParam<Variant> {};

TEST_P(Qcow2ReadVariantTest, MatchesRawTruth) {
  TempDir dir;
  const std::string truth = dir.Join("truth.raw"), image = dir.Join("img.qcow2");
  MakeTruth(truth, 8 * kMiB, 7);
  Sh("qemu-img convert -f raw -O qcow2 " + GetParam().extra + " -o " + GetParam().options + " " +
     Q(truth) + " " + Q(image));
  ExpectSameAsRaw(image, truth);
  auto src = MustOpen(image);
  ASSERT_NE(src, nullptr);
  ImageInfo info = src->info();
  EXPECT_EQ(info.format, "qcow2");
  EXPECT_GT(info.allocated_bytes, 0u);
  EXPECT_LE(info.allocated_bytes, 8 * kMiB);
  EXPECT_TRUE(info.problems.empty());
}

INSTANTIATE_TEST_SUITE_P(
    QemuImages, Qcow2ReadVariantTest,
    ::testing::Values(Variant{"v2_512", "compat=0.10,cluster_size=512", ""},
                      Variant{"v2_64k", "compat=0.10,cluster_size=64k", ""},
                      Variant{"v3_512", "compat=1.1,cluster_size=512", ""},
                      Variant{"v3_4k", "compat=1.1,cluster_size=4k", ""},
                      Variant{"v3_64k", "compat=1.1,cluster_size=64k", ""},
                      Variant{"v3_2m", "compat=1.1,cluster_size=2M", ""},
                      Variant{"zlib", "compat=1.1,cluster_size=64k", "-c"},
                      Variant{"zlib_v2_4k", "compat=0.10,cluster_size=4k", "-c"},
                      Variant{"zstd", "compat=1.1,compression_type=zstd", "-c"},
                      Variant{"zstd_2m", "cluster_size=2M,compression_type=zstd", "-c"},
                      Variant{"extended_l2", "extended_l2=on,cluster_size=64k", ""},
                      Variant{"extended_l2_zlib", "extended_l2=on,cluster_size=128k", "-c"}),
    [](const auto& info) { return info.param.name; });

// Zero clusters written by qemu-io "write -z" (zero flag, with and without allocation), and
// subclusters of extended L2 entries; the same operations on a raw copy are the truth.
void CheckQemuIoOps(const std::string& create_options) {
  TempDir dir;
  const std::string truth = dir.Join("truth.raw"), image = dir.Join("img.qcow2");
  MakeTruth(truth, 8 * kMiB, 11);
  Sh("qemu-img convert -f raw -O qcow2 -o " + create_options + " " + Q(truth) + " " + Q(image));
  const std::string ops =
      "-c 'write -z 1M 256k' -c 'write -z -u 3M 64k' -c 'write -P 0x5a 5000k 4k' "
      "-c 'write -z 8k 8k' -c 'write -P 0x11 6M 1k'";
  Sh("qemu-io -f qcow2 " + ops + " " + Q(image) + " >/dev/null");
  Sh("qemu-io -f raw " + ops + " " + Q(truth) + " >/dev/null");
  ExpectSameAsRaw(image, truth);
  auto src = MustOpen(image);
  ASSERT_NE(src, nullptr);
  std::vector<Extent> extents;
  ASSERT_OK(src->Extents(1 * kMiB, 256 * 1024, &extents));
  ASSERT_EQ(extents.size(), 1u);
  EXPECT_EQ(extents[0].kind, ExtentKind::kZero);
}

TEST(Qcow2ReadTest, ZeroClusters) { CheckQemuIoOps("compat=1.1"); }
TEST(Qcow2ReadTest, ExtendedL2Subclusters) { CheckQemuIoOps("extended_l2=on,cluster_size=64k"); }

TEST(Qcow2ReadTest, BackingChainOfThree) {
  TempDir dir;
  const std::string base = dir.Join("base.raw"), mid = dir.Join("mid.qcow2"),
                    top = dir.Join("top.qcow2"), truth = dir.Join("truth.raw");
  MakeTruth(base, 6 * kMiB, 3);  // shorter than the images above it
  Sh("qemu-img create -q -f qcow2 -b base.raw -F raw " + Q(mid) + " 8M");
  Sh("qemu-io -f qcow2 -c 'write -P 0x22 1M 512k' -c 'write -P 0x23 7M 512k' -c 'write -z 4M 64k' " +
     Q(mid) + " >/dev/null");
  Sh("qemu-img create -q -f qcow2 -o compat=0.10 -b mid.qcow2 -F qcow2 " + Q(top) + " 10M");
  Sh("qemu-io -f qcow2 -c 'write -P 0x33 1280k 64k' -c 'write -z 2M 128k' "
     "-c 'write -P 0x34 9M 64k' " + Q(top) + " >/dev/null");
  Sh("qemu-img convert -O raw " + Q(top) + " " + Q(truth));
  ExpectSameAsRaw(top, truth);
  auto src = MustOpen(top);
  ASSERT_NE(src, nullptr);
  ImageInfo info = src->info();
  ASSERT_EQ(info.backing_chain.size(), 2u);
  EXPECT_NE(info.backing_chain[0].find("mid.qcow2"), std::string::npos);
  EXPECT_NE(info.backing_chain[1].find("base.raw"), std::string::npos);
  // Past every layer's data (8.5M..9M: mid ends at 8M, base at 6M) nothing is allocated.
  std::vector<Extent> extents;
  ASSERT_OK(src->Extents(8 * kMiB + 512 * 1024, 512 * 1024, &extents));
  ASSERT_EQ(extents.size(), 1u);
  EXPECT_EQ(extents[0].kind, ExtentKind::kHole);
  // Data from the base shows through both layers.
  extents.clear();
  ASSERT_OK(src->Extents(0, 1 * kMiB, &extents));
  EXPECT_TRUE(std::any_of(extents.begin(), extents.end(),
                          [](const Extent& e) { return e.kind == ExtentKind::kData; }));
}

TEST(Qcow2ReadTest, BackingFileOutsideTheFolderIsRefused) {
  TempDir dir;
  std::filesystem::create_directory(dir.Join("sub"));
  MakeTruth(dir.Join("outside.raw"), 1 * kMiB, 1);
  const std::string top = dir.Join("sub/top.qcow2");
  Sh("qemu-img create -q -f qcow2 -b ../outside.raw -F raw " + Q(top) + " 1M");
  auto src = OpenImage(top);
  ASSERT_FALSE(src.ok());
  EXPECT_EQ(src.status().code(), ErrorCode::kPermissionDenied) << src.status().ToString();
  EXPECT_NE(src.status().message().find("outside.raw"), std::string::npos);
  OpenOptions allow;
  allow.allow_outside_files = true;
  EXPECT_TRUE(OpenImage(top, allow).ok());
}

TEST(Qcow2ReadTest, BackingLoopIsCorrupt) {
  TempDir dir;
  const std::string a = dir.Join("a.qcow2"), b = dir.Join("b.qcow2");
  Sh("qemu-img create -q -f qcow2 " + Q(a) + " 1M");
  Sh("qemu-img create -q -f qcow2 -b a.qcow2 -F qcow2 " + Q(b) + " 1M");
  Sh("qemu-img rebase -u -b b.qcow2 -F qcow2 " + Q(a));
  auto src = OpenImage(a);
  ASSERT_FALSE(src.ok());
  EXPECT_EQ(src.status().code(), ErrorCode::kCorrupt) << src.status().ToString();
  EXPECT_NE(src.status().message().find("loop"), std::string::npos);
}

TEST(Qcow2ReadTest, MissingBackingIsNotFoundNamingIt) {
  TempDir dir;
  MakeTruth(dir.Join("gone.raw"), 1 * kMiB, 1);
  const std::string top = dir.Join("top.qcow2");
  Sh("qemu-img create -q -f qcow2 -b gone.raw -F raw " + Q(top) + " 1M");
  std::filesystem::remove(dir.Join("gone.raw"));
  auto src = OpenImage(top);
  ASSERT_FALSE(src.ok());
  EXPECT_EQ(src.status().code(), ErrorCode::kNotFound) << src.status().ToString();
  EXPECT_NE(src.status().message().find("gone.raw"), std::string::npos);
}

// dfvfs test images (read-only, shared): compared with qemu-img's own conversion.
std::string CorpusFile(const std::string& name) {
  std::string p = testing::SharedCorpusDir() + "/dfvfs/" + name;
  if (!std::filesystem::exists(p)) p = "/work/shared/corpus/dfvfs/" + name;  // from a worktree
  return p;
}

TEST(Qcow2ReadTest, RealWorldDfvfsImages) {
  for (const char* name : {"ext2.qcow2", "windows_volume.qcow2"}) {
    TempDir dir;
    const std::string image = CorpusFile(name), truth = dir.Join("truth.raw");
    ASSERT_TRUE(std::filesystem::exists(image)) << image;
    Sh("qemu-img convert -O raw " + Q(image) + " " + Q(truth));
    ExpectSameAsRaw(image, truth);
  }
}

// A File that counts positional reads of its inner file.
class CountingFile final : public File {
 public:
  explicit CountingFile(std::unique_ptr<File> inner) : inner_(std::move(inner)) {}
  const std::string& path() const override { return inner_->path(); }
  Status ReadAt(uint64_t offset, std::span<uint8_t> buf) const override {
    ++reads;
    return inner_->ReadAt(offset, buf);
  }
  Result<size_t> ReadSomeAt(uint64_t offset, std::span<uint8_t> buf) const override {
    ++reads;
    return inner_->ReadSomeAt(offset, buf);
  }
  Status WriteAt(uint64_t offset, std::span<const uint8_t> data) override {
    return inner_->WriteAt(offset, data);
  }
  Result<uint64_t> Size() const override { return inner_->Size(); }
  Status Truncate(uint64_t size) override { return inner_->Truncate(size); }
  Status Sync() override { return inner_->Sync(); }
  Status PunchHole(uint64_t offset, uint64_t length) override {
    return inner_->PunchHole(offset, length);
  }
  Status Allocate(uint64_t offset, uint64_t length) override {
    return inner_->Allocate(offset, length);
  }
  Status DataRanges(uint64_t offset, uint64_t length,
                    std::vector<std::pair<uint64_t, uint64_t>>* out) const override {
    return inner_->DataRanges(offset, length, out);
  }
  mutable std::atomic<int> reads{0};

 private:
  std::unique_ptr<File> inner_;
};

// Counts the preads a 4 MiB Read at 1 MiB of `image` takes once its L2 tables are cached.
int PreadsFor4MiBRead(const std::string& image, const std::vector<uint8_t>& truth) {
  auto file = PosixEnv()->Open(image, OpenMode::kRead);
  EXPECT_TRUE(file.ok());
  auto counting = std::make_unique<CountingFile>(std::move(*file));
  CountingFile* counter = counting.get();
  auto src = OpenQcow2(OpenContext(OpenOptions{}), std::move(counting));
  EXPECT_TRUE(src.ok()) << src.status().ToString();
  std::vector<Extent> extents;
  EXPECT_TRUE((*src)->Extents(0, (*src)->size(), &extents).ok());  // loads the L2 tables
  EXPECT_EQ(extents.size(), 1u);
  const int before = counter->reads;
  std::vector<uint8_t> buf(4 * kMiB);
  EXPECT_TRUE((*src)->Read(1 * kMiB, buf).ok());
  EXPECT_TRUE(std::equal(buf.begin(), buf.end(), truth.begin() + kMiB));
  return counter->reads - before;
}

TEST(Qcow2ReadTest, HostContiguousClustersAreOnePread) {
  TempDir dir;
  const std::string truth = dir.Join("full.raw"), image = dir.Join("full.qcow2");
  std::vector<uint8_t> bytes(8 * kMiB);
  std::mt19937_64 rng(5);
  for (auto& b : bytes) b = static_cast<uint8_t>(rng() | 1);
  ASSERT_TRUE(testing::WriteFileBytes(truth, bytes));
  // 4 KiB clusters: each L2 table maps 2 MiB. qemu-img puts each L2 table before the data
  // it maps, so [1M,5M) is three host runs.
  Sh("qemu-img convert -m 1 -f raw -O qcow2 -o cluster_size=4k " + Q(truth) + " " + Q(image));
  EXPECT_EQ(PreadsFor4MiBRead(image, bytes), 3);
  // Ferry's writer allocates the L2 tables of a Write first: one host run, one pread.
  const std::string ours = dir.Join("ours.qcow2");
  CreateOptions opts;
  opts.size = bytes.size();
  opts.cluster_size = 4096;
  auto sink = CreateQcow2(ours, opts);
  ASSERT_TRUE(sink.ok());
  ASSERT_OK((*sink)->Write(0, bytes));
  ASSERT_OK((*sink)->Finalize());
  sink->reset();
  EXPECT_EQ(PreadsFor4MiBRead(ours, bytes), 1);
}

TEST(Qcow2ReadTest, ConcurrentReadsAgree) {
  TempDir dir;
  const std::string truth = dir.Join("truth.raw"), image = dir.Join("img.qcow2");
  MakeTruth(truth, 8 * kMiB, 9, 4096);
  Sh("qemu-img convert -f raw -O qcow2 -c -o cluster_size=512 " + Q(truth) + " " + Q(image));
  auto src = MustOpen(image);
  ASSERT_NE(src, nullptr);
  const auto bytes = testing::ReadFileBytes(truth);
  std::atomic<int> mismatches{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      std::vector<uint8_t> buf;
      for (uint64_t i = 0; i < 40; ++i) {
        const uint64_t off = ((i * 7919 + t * 104729) * 4099) % (8 * kMiB - 100000);
        buf.resize(50000 + (i % 5) * 10000);
        std::vector<Extent> extents;
        if (!src->Extents(off, buf.size(), &extents).ok() || !src->Read(off, buf).ok() ||
            !std::equal(buf.begin(), buf.end(), bytes.begin() + off)) {
          ++mismatches;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(mismatches, 0);
}

// ---------------------------------------------------------------------------------------
// Reader: hostile headers and tables, in memory.

class Qcow2CorruptTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string image = dir_.Join("small.qcow2");
    Sh("qemu-img create -q -f qcow2 " + Q(image) + " 4M");
    Sh("qemu-io -f qcow2 -c 'write -P 0x41 0 128k' " + Q(image) + " >/dev/null");
    bytes_ = testing::ReadFileBytes(image);
    ASSERT_GT(bytes_.size(), 4 * 65536u);
  }
  Result<std::unique_ptr<BlockSource>> Open(std::vector<uint8_t> bytes) {
    return OpenQcow2(OpenContext(OpenOptions{}), NewMemoryFile(std::move(bytes), "bad.qcow2"));
  }
  void ExpectOpenError(const std::vector<uint8_t>& bytes, ErrorCode code, const std::string& word) {
    auto src = Open(bytes);
    ASSERT_FALSE(src.ok());
    EXPECT_EQ(src.status().code(), code) << src.status().ToString();
    EXPECT_NE(src.status().message().find(word), std::string::npos) << src.status().ToString();
    EXPECT_NE(src.status().message().find("bad.qcow2"), std::string::npos);
  }
  TempDir dir_;
  std::vector<uint8_t> bytes_;
};

TEST_F(Qcow2CorruptTest, L1OffsetPastEof) {
  auto b = bytes_;
  StoreBE64(b.data() + 40, RoundUp(b.size(), 65536) + 65536);
  ExpectOpenError(b, ErrorCode::kCorrupt, "L1 table");
}

TEST_F(Qcow2CorruptTest, HugeL1Size) {
  auto b = bytes_;
  StoreBE32(b.data() + 36, 0x7fffffff);
  ExpectOpenError(b, ErrorCode::kTooLarge, "l1_size");
}

TEST_F(Qcow2CorruptTest, BadClusterBits) {
  for (uint32_t bits : {0u, 8u, 22u, 64u, 0xffffffffu}) {
    auto b = bytes_;
    StoreBE32(b.data() + 20, bits);
    ExpectOpenError(b, ErrorCode::kCorrupt, "cluster_bits");
  }
}

TEST_F(Qcow2CorruptTest, UnknownIncompatibleBit) {
  auto b = bytes_;
  StoreBE64(b.data() + 72, 1ull << 10);
  ExpectOpenError(b, ErrorCode::kUnsupported, "bit 10");
}

TEST_F(Qcow2CorruptTest, CorruptBitRefused) {
  auto b = bytes_;
  StoreBE64(b.data() + 72, 1ull << 1);
  ExpectOpenError(b, ErrorCode::kCorrupt, "corrupt");
}

TEST_F(Qcow2CorruptTest, ExternalDataFileAndEncryptionUnsupported) {
  auto b = bytes_;
  StoreBE64(b.data() + 72, 1ull << 2);
  ExpectOpenError(b, ErrorCode::kUnsupported, "external data");
  b = bytes_;
  StoreBE32(b.data() + 32, 2);
  ExpectOpenError(b, ErrorCode::kUnsupported, "encrypt");
}

TEST_F(Qcow2CorruptTest, TruncatedFile) {
  ExpectOpenError(std::vector<uint8_t>(bytes_.begin(), bytes_.begin() + 50), ErrorCode::kCorrupt,
                  "truncated");
  ExpectOpenError(std::vector<uint8_t>(bytes_.begin(), bytes_.begin() + 90), ErrorCode::kCorrupt,
                  "truncated");
  // Cut inside the data: the L1 table is intact but the data cluster lies past the end.
  auto src = Open(std::vector<uint8_t>(bytes_.begin(), bytes_.begin() + 4 * 65536));
  ASSERT_TRUE(src.ok()) << src.status().ToString();
  std::vector<uint8_t> buf(65536);
  Status s = (*src)->Read(0, buf);
  EXPECT_EQ(s.code(), ErrorCode::kCorrupt) << s.ToString();
  EXPECT_NE(s.message().find("past the end"), std::string::npos) << s.ToString();
}

TEST_F(Qcow2CorruptTest, BadHeaderLength) {
  auto b = bytes_;
  StoreBE32(b.data() + 100, 20);
  ExpectOpenError(b, ErrorCode::kCorrupt, "header_length");
}

TEST_F(Qcow2CorruptTest, L2TablePastEof) {
  auto b = bytes_;
  const uint64_t l1 = LoadBE64(b.data() + 40);
  StoreBE64(b.data() + l1, (1ull << 63) | (1ull << 40));
  auto src = Open(b);
  ASSERT_TRUE(src.ok()) << src.status().ToString();
  std::vector<Extent> extents;
  Status s = (*src)->Extents(0, (*src)->size(), &extents);
  EXPECT_EQ(s.code(), ErrorCode::kCorrupt);
  EXPECT_NE(s.message().find("L2 table at 0x10000000000 (L1 entry 0)"), std::string::npos)
      << s.ToString();
}

TEST_F(Qcow2CorruptTest, DirtyImageIsReadableWithAProblem) {
  auto b = bytes_;
  StoreBE64(b.data() + 72, 1);
  auto src = Open(b);
  ASSERT_TRUE(src.ok()) << src.status().ToString();
  ImageInfo info = (*src)->info();
  ASSERT_EQ(info.problems.size(), 1u);
  EXPECT_NE(info.problems[0].find("dirty"), std::string::npos);
  std::vector<uint8_t> buf(128 * 1024);
  ASSERT_OK((*src)->Read(0, buf));
  EXPECT_EQ(buf[0], 0x41);
}

TEST(Qcow2ReadTest, GarbageCompressedClusterIsCorruptNamingOffsets) {
  for (const char* type : {"zlib", "zstd"}) {
    TempDir dir;
    const std::string truth = dir.Join("truth.raw"), image = dir.Join("c.qcow2");
    MakeTruth(truth, 1 * kMiB, 5, 65536);
    Sh(std::string("qemu-img convert -c -O qcow2 -o compression_type=") + type + " " + Q(truth) +
       " " + Q(image));
    auto b = testing::ReadFileBytes(image);
    // Compressed data follows the L1 table, refcount table/blocks and L2 table (cluster 5).
    for (size_t i = 5 * 65536; i < b.size(); ++i) b[i] = static_cast<uint8_t>(i * 7 + 3);
    auto src = OpenQcow2(OpenContext(OpenOptions{}), NewMemoryFile(b, "c.qcow2"));
    ASSERT_TRUE(src.ok()) << src.status().ToString();
    std::vector<uint8_t> buf((*src)->size());
    Status s = (*src)->Read(0, buf);
    EXPECT_EQ(s.code(), ErrorCode::kCorrupt) << type;
    EXPECT_NE(s.message().find("compressed cluster for guest offset 0x"), std::string::npos)
        << s.ToString();
    EXPECT_NE(s.message().find("at host offset 0x"), std::string::npos) << s.ToString();
  }
}

// ---------------------------------------------------------------------------------------
// Writer.

struct WriterVariant {
  std::string name;
  std::string compression;
  uint32_t cluster_size;
};
void PrintTo(const WriterVariant& v, std::ostream* os) { *os << v.name; }

class Qcow2WriteTest : public ::testing::TestWithParam<WriterVariant> {};

void ExpectValidCopy(const std::string& image, const std::string& truth, bool zstd) {
  ExpectQemuCheckClean(image);
  EXPECT_EQ(testing::QemuImgCompare(truth, image, "raw", "qcow2"), 0);
  // libqcow 20201213 (Debian bookworm) predates zstd: it refuses incompatible bit 3.
  if (!zstd) {
    auto r = testing::Run("qcowinfo " + Q(image));
    EXPECT_EQ(r.exit_code, 0) << r.output;
  }
  ExpectSameAsRaw(image, truth);
}

TEST_P(Qcow2WriteTest, CopyFromRawPassesQemuCheck) {
  TempDir dir;
  const std::string truth = dir.Join("truth.raw"), image = dir.Join("out.qcow2");
  // Not a multiple of the cluster size: the last cluster is partial.
  MakeTruth(truth, 16 * kMiB - 4096 * 3, 21, 16 * 1024);
  auto src = MustOpen(truth);
  ASSERT_NE(src, nullptr);
  CreateOptions opts;
  opts.size = src->size();
  opts.cluster_size = GetParam().cluster_size;
  opts.compression = GetParam().compression;
  auto sink = CreateQcow2(image, opts);
  ASSERT_TRUE(sink.ok()) << sink.status().ToString();
  EXPECT_EQ((*sink)->granularity(), GetParam().cluster_size);
  ASSERT_OK(CopyRange(*src, **sink, 0, src->size(), 2));
  ASSERT_OK((*sink)->Finalize());
  sink->reset();
  ExpectValidCopy(image, truth, GetParam().compression == "zstd");
  auto info = testing::Run("qemu-img info " + Q(image)).output;
  if (GetParam().compression == "zstd") {
    EXPECT_NE(info.find("zstd"), std::string::npos) << info;
  }
}

INSTANTIATE_TEST_SUITE_P(Variants, Qcow2WriteTest,
                         ::testing::Values(WriterVariant{"plain_64k", "", 65536},
                                           WriterVariant{"zlib_64k", "zlib", 65536},
                                           WriterVariant{"zstd_64k", "zstd", 65536},
                                           WriterVariant{"plain_4k", "", 4096},
                                           WriterVariant{"zlib_4k", "zlib", 4096},
                                           WriterVariant{"plain_2m", "", 2 * 1024 * 1024},
                                           WriterVariant{"zstd_2m", "zstd", 2 * 1024 * 1024}),
                         [](const auto& info) { return info.param.name; });

class Qcow2ResumeTest : public ::testing::TestWithParam<WriterVariant> {};

TEST_P(Qcow2ResumeTest, CrashAfterCheckpointThenResume) {
  TempDir dir;
  const std::string truth = dir.Join("truth.raw"), image = dir.Join("out.qcow2");
  MakeTruth(truth, 16 * kMiB, 33, 16 * 1024);
  auto src = MustOpen(truth);
  ASSERT_NE(src, nullptr);
  const std::vector<uint8_t> truth_bytes = testing::ReadFileBytes(truth);
  CreateOptions opts;
  opts.size = src->size();
  opts.cluster_size = GetParam().cluster_size;
  opts.compression = GetParam().compression;
  const uint64_t cs = GetParam().cluster_size;
  // A cluster past the frontier that the truth has as zeros: filled with junk before the
  // crash, so that the resumed copy must turn it back into zeros.
  uint64_t junk_at = 0;
  for (uint64_t off = 12 * kMiB; off < 16 * kMiB; off += cs) {
    if (IsAllZero(truth_bytes.data() + off, cs)) {
      junk_at = off;
      break;
    }
  }
  ASSERT_NE(junk_at, 0u);
  const std::vector<uint8_t> junk(cs, 0xaa);
  std::vector<uint8_t> blob;
  {
    auto sink = CreateQcow2(image, opts);
    ASSERT_TRUE(sink.ok()) << sink.status().ToString();
    ASSERT_OK(CopyRange(*src, **sink, 0, 8 * kMiB, 2));
    // Writes past the frontier that finished before the checkpoint.
    ASSERT_OK(CopyRange(*src, **sink, 10 * kMiB, 12 * kMiB, 1));
    ASSERT_OK((*sink)->Write(junk_at, junk));
    auto state = (*sink)->Checkpoint();
    ASSERT_TRUE(state.ok()) << state.status().ToString();
    blob = *state;
    ExpectQemuCheckClean(image);  // every checkpoint leaves a consistent image
    // Work after the checkpoint that the crash loses.
    ASSERT_OK(CopyRange(*src, **sink, 8 * kMiB, 10 * kMiB, 2));
    ASSERT_OK((*sink)->Write(junk_at + cs, junk));
  }  // crash: no Finalize
  {
    auto file = PosixEnv()->Open(image, OpenMode::kReadWrite);
    ASSERT_TRUE(file.ok());
    auto size = (*file)->Size();
    ASSERT_TRUE(size.ok());
    ASSERT_OK((*file)->WriteAt(*size, std::vector<uint8_t>(300000, 0x5c)));
  }
  CreateOptions other = opts;
  other.size += cs;
  auto mismatch = ResumeQcow2(image, other, blob);
  ASSERT_FALSE(mismatch.ok());
  EXPECT_EQ(mismatch.status().code(), ErrorCode::kMismatch);

  auto sink = ResumeQcow2(image, opts, blob);
  ASSERT_TRUE(sink.ok()) << sink.status().ToString();
  EXPECT_FALSE((*sink)->zero_initialized());
  ASSERT_OK(CopyRange(*src, **sink, 8 * kMiB, 16 * kMiB, 2));
  ASSERT_OK((*sink)->Finalize());
  sink->reset();
  ExpectValidCopy(image, truth, GetParam().compression == "zstd");
}

INSTANTIATE_TEST_SUITE_P(Variants, Qcow2ResumeTest,
                         ::testing::Values(WriterVariant{"plain_64k", "", 65536},
                                           WriterVariant{"zstd_64k", "zstd", 65536},
                                           WriterVariant{"zlib_4k", "zlib", 4096}),
                         [](const auto& info) { return info.param.name; });

TEST(Qcow2WriterTest, RejectsBadClusterSizesAndCompression) {
  TempDir dir;
  for (uint32_t cs : {512u, 8193u, 4u << 20}) {
    CreateOptions opts;
    opts.size = kMiB;
    opts.cluster_size = cs;
    auto sink = CreateQcow2(dir.Join("x.qcow2"), opts);
    ASSERT_FALSE(sink.ok());
    EXPECT_EQ(sink.status().code(), ErrorCode::kInvalidArgument) << cs;
  }
  CreateOptions opts;
  opts.size = kMiB;
  opts.compression = "lz4";
  EXPECT_EQ(CreateQcow2(dir.Join("x.qcow2"), opts).status().code(),
            ErrorCode::kInvalidArgument);
}

TEST(Qcow2WriterTest, EmptyImageIsValidAndUnalignedWritesAreRefused) {
  TempDir dir;
  const std::string image = dir.Join("empty.qcow2");
  CreateOptions opts;
  opts.size = 5 * kMiB + 512;
  auto sink = CreateQcow2(image, opts);
  ASSERT_TRUE(sink.ok()) << sink.status().ToString();
  std::vector<uint8_t> data(4096, 1);
  EXPECT_EQ((*sink)->Write(4096, data).code(), ErrorCode::kInvalidArgument);
  // The partial last cluster.
  std::vector<uint8_t> tail(512, 9);
  ASSERT_OK((*sink)->Write(5 * kMiB, tail));
  ASSERT_OK((*sink)->Finalize());
  sink->reset();
  ExpectQemuCheckClean(image);
  auto src = MustOpen(image);
  ASSERT_NE(src, nullptr);
  EXPECT_EQ(src->size(), 5 * kMiB + 512);
  std::vector<uint8_t> back(512);
  ASSERT_OK(src->Read(5 * kMiB, back));
  EXPECT_EQ(back, tail);
  EXPECT_EQ(src->info().allocated_bytes, 512u);  // guest bytes, up to the virtual size
}

}  // namespace
}  // namespace ferry
