#include "disk/vmdk/vmdk.h"

#include <gtest/gtest.h>
#include <zlib.h>

#include <atomic>
#include <cstring>
#include <fstream>
#include <thread>

#include "common/bytes.h"
#include "disk/raw/raw.h"
#include "test_util.h"

namespace ferry {
namespace {

using testing::PatternSpec;
using testing::Run;
using testing::ShellQuote;
using testing::TempDir;

constexpr uint64_t kMiB = 1 << 20;

Result<std::unique_ptr<BlockSource>> Open(const std::string& path, OpenOptions opts = {}) {
  opts.format = ImageFormat::kVmdk;
  return OpenImage(path, opts);
}

// Reads the whole source and checks its extents: exact cover, and non-data extents are zeros.
void ExpectReadsAs(BlockSource& src, const std::vector<uint8_t>& truth) {
  ASSERT_EQ(src.size(), truth.size());
  std::vector<uint8_t> back(truth.size());
  // Odd-sized reads exercise pieces that straddle grains.
  const uint64_t step = 3 * kMiB + 4096 + 512;
  for (uint64_t off = 0; off < back.size(); off += step) {
    uint64_t n = std::min<uint64_t>(step, back.size() - off);
    Status s = src.Read(off, std::span<uint8_t>(back.data() + off, n));
    ASSERT_TRUE(s.ok()) << s.ToString();
  }
  EXPECT_TRUE(back == truth) << "bytes differ";
  std::vector<Extent> extents;
  Status s = src.Extents(0, src.size(), &extents);
  ASSERT_TRUE(s.ok()) << s.ToString();
  uint64_t pos = 0;
  for (const Extent& e : extents) {
    ASSERT_EQ(e.offset, pos);
    pos += e.length;
    if (e.kind != ExtentKind::kData) {
      EXPECT_TRUE(IsAllZero(truth.data() + e.offset, e.length))
          << "non-data extent at " << e.offset;
    }
  }
  EXPECT_EQ(pos, src.size());
}

std::string MakePattern(const TempDir& dir, uint64_t size, uint32_t seed = 7) {
  PatternSpec spec;
  spec.size = size;
  spec.seed = seed;
  std::string path = dir.Join("truth.raw");
  EXPECT_TRUE(testing::WritePatternRaw(path, spec));
  return path;
}

void Sh(const std::string& cmd) {
  auto r = Run(cmd);
  ASSERT_EQ(r.exit_code, 0) << cmd << "\n" << r.output;
}

void PatchBytes(const std::string& path, uint64_t offset, const std::vector<uint8_t>& bytes) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekp(static_cast<std::streamoff>(offset));
  f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

std::vector<uint8_t> Le32(uint32_t v) {
  std::vector<uint8_t> b(4);
  StoreLE32(b.data(), v);
  return b;
}
std::vector<uint8_t> Le64(uint64_t v) {
  std::vector<uint8_t> b(8);
  StoreLE64(b.data(), v);
  return b;
}

class QemuSubformatTest : public ::testing::TestWithParam<const char*> {};

TEST_P(QemuSubformatTest, ReadsIdenticalToTruth) {
  TempDir dir;
  // Not a multiple of the grain size: exercises the partial last grain.
  std::string truth = MakePattern(dir, 20 * kMiB + 40 * 1024);
  std::string img = dir.Join("disk.vmdk");
  Sh("qemu-img convert -f raw -O vmdk -o subformat=" + std::string(GetParam()) + " " +
     ShellQuote(truth) + " " + ShellQuote(img));
  auto src = Open(img);
  ASSERT_TRUE(src.ok()) << src.status().ToString();
  ExpectReadsAs(**src, testing::ReadFileBytes(truth));
  ImageInfo info = (*src)->info();
  EXPECT_EQ(info.format, "vmdk");
  EXPECT_EQ(info.subformat, GetParam());
  EXPECT_TRUE(info.problems.empty()) << info.problems[0];
}

INSTANTIATE_TEST_SUITE_P(AllSubformats, QemuSubformatTest,
                         ::testing::Values("monolithicSparse", "streamOptimized", "monolithicFlat",
                                           "twoGbMaxExtentSparse", "twoGbMaxExtentFlat"));

TEST(VmdkReaderTest, RealWorldExt2MatchesQemu) {
  TempDir dir;
  // The shared corpus sits beside the source tree (or the worktrees' parent).
  std::string img = testing::SharedCorpusDir() + "/dfvfs/ext2.vmdk";
  if (testing::Run("test -e " + ShellQuote(img)).exit_code != 0)
    img = "/work/shared/corpus/dfvfs/ext2.vmdk";
  std::string raw = dir.Join("ext2.raw");
  Sh("qemu-img convert -f vmdk -O raw " + ShellQuote(img) + " " + ShellQuote(raw));
  auto src = Open(img);
  ASSERT_TRUE(src.ok()) << src.status().ToString();
  ExpectReadsAs(**src, testing::ReadFileBytes(raw));
  EXPECT_EQ((*src)->info().cluster_size, 65536u);
}

// A hand-written descriptor joining FLAT (with an offset), ZERO and SPARSE extents.
TEST(VmdkReaderTest, DescriptorWithMixedExtents) {
  TempDir dir;
  std::string truth = MakePattern(dir, 12 * kMiB);
  std::vector<uint8_t> t = testing::ReadFileBytes(truth);
  // Extent 1: bytes [0, 4 MiB) of the truth in a flat file at sector 8.
  std::vector<uint8_t> flat(4096 + 4 * kMiB, 0xee);
  std::memcpy(flat.data() + 4096, t.data(), 4 * kMiB);
  ASSERT_TRUE(testing::WriteFileBytes(dir.Join("a-flat.bin"), flat));
  // Extent 2: 1 MiB of zeros. Extent 3: [5 MiB, 12 MiB) as a sparse extent.
  std::vector<uint8_t> tail(t.begin() + 5 * kMiB, t.end());
  ASSERT_TRUE(testing::WriteFileBytes(dir.Join("tail.raw"), tail));
  Sh("qemu-img convert -f raw -O vmdk " + ShellQuote(dir.Join("tail.raw")) + " " +
     ShellQuote(dir.Join("b-sparse.vmdk")));
  std::string desc =
      "# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\n"
      "createType=\"custom\"\n\nRW 8192 FLAT \"a-flat.bin\" 8\nRW 2048 ZERO\n"
      "RW 14336 SPARSE \"b-sparse.vmdk\"\n\nddb.adapterType = \"lsilogic\"\n";
  std::fill(t.begin() + 4 * kMiB, t.begin() + 5 * kMiB, 0);
  std::string path = dir.Join("mixed.vmdk");
  ASSERT_TRUE(testing::WriteFileBytes(path, std::vector<uint8_t>(desc.begin(), desc.end())));
  auto src = Open(path);
  ASSERT_TRUE(src.ok()) << src.status().ToString();
  ExpectReadsAs(**src, t);
  ImageInfo info = (*src)->info();
  EXPECT_EQ(info.files.size(), 3u);
  std::vector<Extent> ex;
  ASSERT_TRUE((*src)->Extents(4 * kMiB, kMiB, &ex).ok());
  ASSERT_EQ(ex.size(), 1u);
  EXPECT_EQ(ex[0].kind, ExtentKind::kZero);
}

TEST(VmdkReaderTest, DeltaDiskReadsUnallocatedGrainsFromParent) {
  TempDir dir;
  std::string truth = MakePattern(dir, 8 * kMiB);
  std::string base = dir.Join("base.vmdk");
  std::string child = dir.Join("child.vmdk");
  Sh("qemu-img convert -f raw -O vmdk " + ShellQuote(truth) + " " + ShellQuote(base));
  Sh("qemu-img create -q -f vmdk -b base.vmdk -F vmdk " + ShellQuote(child));
  Sh("qemu-io -c 'write -P 0x5a 1M 192k' -c 'write -z 3M 64k' " + ShellQuote(child));
  std::string expect = dir.Join("expect.raw");
  Sh("qemu-img convert -O raw " + ShellQuote(child) + " " + ShellQuote(expect));
  auto src = Open(child);
  ASSERT_TRUE(src.ok()) << src.status().ToString();
  ExpectReadsAs(**src, testing::ReadFileBytes(expect));
  ImageInfo info = (*src)->info();
  ASSERT_EQ(info.backing_chain.size(), 1u);
  EXPECT_TRUE(info.problems.empty()) << info.problems[0];
  // Extents merge the parent's view: data where either layer has data.
  std::vector<Extent> ex;
  ASSERT_TRUE((*src)->Extents(0, (*src)->size(), &ex).ok());
  uint64_t data = 0;
  for (auto& e : ex) data += e.kind == ExtentKind::kData ? e.length : 0;
  EXPECT_GT(data, 192u * 1024);
}

TEST(VmdkReaderTest, ZeroedGrainsAreZeroExtents) {
  TempDir dir;
  std::string img = dir.Join("zg.vmdk");
  Sh("qemu-img create -q -f vmdk -o zeroed_grain=on " + ShellQuote(img) + " 4M");
  Sh("qemu-io -c 'write -P 0x11 0 1M' -c 'write -z 256k 128k' " + ShellQuote(img));
  std::string expect = dir.Join("expect.raw");
  Sh("qemu-img convert -O raw " + ShellQuote(img) + " " + ShellQuote(expect));
  auto src = Open(img);
  ASSERT_TRUE(src.ok()) << src.status().ToString();
  ExpectReadsAs(**src, testing::ReadFileBytes(expect));
  std::vector<Extent> ex;
  ASSERT_TRUE((*src)->Extents(0, (*src)->size(), &ex).ok());
  std::vector<Extent> want = {{0, 256 * 1024, ExtentKind::kData},
                              {256 * 1024, 128 * 1024, ExtentKind::kZero},
                              {384 * 1024, 640 * 1024, ExtentKind::kData},
                              {kMiB, 3 * kMiB, ExtentKind::kHole}};
  EXPECT_EQ(ex, want);
}

TEST(VmdkReaderTest, ExtentPathsEscapingTheFolderAreRefused) {
  TempDir dir;
  Sh("mkdir " + ShellQuote(dir.Join("sub")) + " && truncate -s 1M " + ShellQuote(dir.Join("x")));
  for (std::string ref : {std::string("../x"), dir.Join("x")}) {
    std::string desc =
        "# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=ffffffff\n"
        "createType=\"monolithicFlat\"\nRW 2048 FLAT \"" +
        ref + "\" 0\n";
    std::string path = dir.Join("sub/evil.vmdk");
    ASSERT_TRUE(testing::WriteFileBytes(path, std::vector<uint8_t>(desc.begin(), desc.end())));
    auto src = Open(path);
    ASSERT_FALSE(src.ok()) << ref;
    EXPECT_EQ(src.status().code(), ErrorCode::kPermissionDenied) << src.status().ToString();
    EXPECT_NE(src.status().message().find("extent"), std::string::npos);
  }
}

TEST(VmdkReaderTest, HostileDescriptors) {
  TempDir dir;
  std::string path = dir.Join("d.vmdk");
  auto open_text = [&](const std::string& text) {
    EXPECT_TRUE(testing::WriteFileBytes(path, std::vector<uint8_t>(text.begin(), text.end())));
    return Open(path);
  };
  std::string head = "# Disk DescriptorFile\nCID=1\nparentCID=ffffffff\n";
  auto r = open_text(head + "RW 99999999999999999999 ZERO\n");
  EXPECT_EQ(r.status().code(), ErrorCode::kCorrupt);
  std::string many = head;
  for (int i = 0; i < 1001; ++i) many += "RW 1 ZERO\n";
  r = open_text(many);
  EXPECT_EQ(r.status().code(), ErrorCode::kTooLarge);
  r = open_text(head + "RW 100 VMFSSPARSE \"x\"\n");
  EXPECT_EQ(r.status().code(), ErrorCode::kUnsupported);
  r = open_text(head + std::string(70000, '#'));
  EXPECT_EQ(r.status().code(), ErrorCode::kTooLarge);
  r = open_text(head + "RW 100 FLAT \"missing.bin\"\n");
  EXPECT_EQ(r.status().code(), ErrorCode::kNotFound);
  r = open_text(head);
  EXPECT_EQ(r.status().code(), ErrorCode::kCorrupt);
}

// Returns a qemu-made monolithicSparse of a small pattern and its header.
std::string MakeSparse(const TempDir& dir, const std::string& subformat = "monolithicSparse") {
  std::string truth = MakePattern(dir, 4 * kMiB, 3);
  std::string img = dir.Join("s.vmdk");
  Sh("qemu-img convert -f raw -O vmdk -o subformat=" + subformat + " " + ShellQuote(truth) + " " +
     ShellQuote(img));
  return img;
}

Status ReadEverything(const std::string& path) {
  auto src = Open(path);
  if (!src.ok()) return src.status();
  std::vector<uint8_t> buf((*src)->size());
  std::vector<Extent> ex;
  FERRY_TRY((*src)->Extents(0, buf.size(), &ex));
  return (*src)->Read(0, buf);
}

TEST(VmdkReaderTest, CorruptGrainDirectoryOffset) {
  TempDir dir;
  std::string img = MakeSparse(dir);
  PatchBytes(img, 56, Le64(0x7fffffff));  // gdOffset
  Status s = ReadEverything(img);
  EXPECT_EQ(s.code(), ErrorCode::kCorrupt);
  EXPECT_NE(s.message().find("grain directory"), std::string::npos) << s.ToString();
}

TEST(VmdkReaderTest, GrainTablePastEndOfFile) {
  TempDir dir;
  std::string img = MakeSparse(dir);
  auto bytes = testing::ReadFileBytes(img);
  const uint64_t gd = LoadLE64(bytes.data() + 56) * 512;
  PatchBytes(img, gd, Le32(0x00ffffff));
  Status s = ReadEverything(img);
  EXPECT_EQ(s.code(), ErrorCode::kCorrupt);
  EXPECT_NE(s.message().find("grain table"), std::string::npos) << s.ToString();
}

TEST(VmdkReaderTest, BadHeaderFields) {
  TempDir dir;
  std::string img = MakeSparse(dir);
  PatchBytes(img, 20, Le64(100));  // grainSize not a power of two
  Status s = ReadEverything(img);
  EXPECT_EQ(s.code(), ErrorCode::kCorrupt);
  EXPECT_NE(s.message().find("grain size"), std::string::npos) << s.ToString();
  PatchBytes(img, 20, Le64(128));
  PatchBytes(img, 36, Le64(100000));  // descriptorSize
  s = ReadEverything(img);
  EXPECT_EQ(s.code(), ErrorCode::kTooLarge);
  EXPECT_NE(s.message().find("descriptor"), std::string::npos) << s.ToString();
}

// The first grain of a qemu stream-optimized image (qemu puts the directory in the header).
uint64_t FirstGrainOffset(const std::string& img) {
  auto bytes = testing::ReadFileBytes(img);
  return LoadLE64(bytes.data() + 64) * 512;  // overHead: grains start there
}

TEST(VmdkReaderTest, TruncatedStreamGrain) {
  TempDir dir;
  std::string img = MakeSparse(dir, "streamOptimized");
  auto bytes = testing::ReadFileBytes(img);
  // qemu keeps the grain directory in front: cut the last grain in half.
  uint64_t last = FirstGrainOffset(img);
  for (uint64_t at = last; at + 12 <= bytes.size();) {
    if (LoadLE32(bytes.data() + at + 8) != 0) last = at;
    at += (12 + LoadLE32(bytes.data() + at + 8) + 511) / 512 * 512;
  }
  const std::string grain =
      "compressed grain " + std::to_string(LoadLE64(bytes.data() + last) / 128);
  bytes.resize(last + 100);
  ASSERT_TRUE(testing::WriteFileBytes(img, bytes));
  Status s = ReadEverything(img);
  EXPECT_EQ(s.code(), ErrorCode::kCorrupt);
  EXPECT_NE(s.message().find(grain), std::string::npos) << s.ToString();
  EXPECT_NE(s.message().find("past the end of the file"), std::string::npos) << s.ToString();
}

TEST(VmdkReaderTest, BadCompressedData) {
  TempDir dir;
  std::string img = MakeSparse(dir, "streamOptimized");
  const uint64_t g0 = FirstGrainOffset(img);
  const std::string grain =
      "compressed grain " + std::to_string(LoadLE64(testing::ReadFileBytes(img).data() + g0) / 128);
  PatchBytes(img, g0 + 12, std::vector<uint8_t>(64, 0xab));
  Status s = ReadEverything(img);
  EXPECT_EQ(s.code(), ErrorCode::kCorrupt);
  EXPECT_NE(s.message().find(grain), std::string::npos) << s.ToString();
  EXPECT_NE(s.message().find("invalid compressed data"), std::string::npos) << s.ToString();
}

TEST(VmdkReaderTest, DecompressionBombIsRefused) {
  TempDir dir;
  std::string img = MakeSparse(dir, "streamOptimized");
  const uint64_t g0 = FirstGrainOffset(img);
  std::vector<uint8_t> zeros(8 * kMiB, 0);
  uLongf len = compressBound(zeros.size());
  std::vector<uint8_t> z(len);
  ASSERT_EQ(compress2(z.data(), &len, zeros.data(), zeros.size(), 9), Z_OK);
  z.resize(len);
  PatchBytes(img, g0 + 8, Le32(static_cast<uint32_t>(len)));
  PatchBytes(img, g0 + 12, z);
  Status s = ReadEverything(img);
  EXPECT_EQ(s.code(), ErrorCode::kCorrupt);
  EXPECT_NE(s.message().find("more than the grain size"), std::string::npos) << s.ToString();
}

TEST(VmdkReaderTest, GrainMarkerWithWrongLba) {
  TempDir dir;
  std::string img = MakeSparse(dir, "streamOptimized");
  PatchBytes(img, FirstGrainOffset(img), Le64(4096));
  Status s = ReadEverything(img);
  EXPECT_EQ(s.code(), ErrorCode::kCorrupt);
  EXPECT_NE(s.message().find("grain marker"), std::string::npos) << s.ToString();
}

// ---------------------------------------------------------------------------------------
// Writers

// The copy engine's loop: extents, read data, split into granules, skip or write.
Status CopyRange(BlockSource& src, BlockSink& sink, uint64_t begin, uint64_t end) {
  const uint64_t chunk = 4 * kMiB;
  const uint64_t gran = sink.granularity();
  std::vector<uint8_t> buf;
  for (uint64_t off = begin; off < end; off += chunk) {
    const uint64_t len = std::min(chunk, end - off);
    std::vector<Extent> ex;
    FERRY_TRY(src.Extents(off, len, &ex));
    for (const Extent& e : ex) {
      if (e.kind != ExtentKind::kData) {
        if (!sink.zero_initialized()) FERRY_TRY(sink.WriteZeroes(e.offset, e.length));
        continue;
      }
      buf.resize(e.length);
      FERRY_TRY(src.Read(e.offset, buf));
      uint64_t run = 0, run_len = 0;
      for (uint64_t p = 0; p < e.length; p += gran) {
        const uint64_t n = std::min(gran, e.length - p);
        if (IsAllZero(buf.data() + p, n)) {
          if (run_len) FERRY_TRY(sink.Write(e.offset + run, std::span(buf).subspan(run, run_len)));
          run_len = 0;
          if (!sink.zero_initialized()) FERRY_TRY(sink.WriteZeroes(e.offset + p, n));
          continue;
        }
        if (run_len == 0) run = p;
        run_len += n;
      }
      if (run_len) FERRY_TRY(sink.Write(e.offset + run, std::span(buf).subspan(run, run_len)));
    }
  }
  return Status::Ok();
}

void ExpectValidVmdk(const std::string& img, const std::string& truth) {
  auto check = Run("qemu-img check -f vmdk " + ShellQuote(img));
  EXPECT_EQ(check.exit_code, 0) << check.output;
  EXPECT_EQ(testing::QemuImgCompare(img, truth, "vmdk", "raw"), 0);
  auto info = Run("vmdkinfo " + ShellQuote(img));
  EXPECT_EQ(info.exit_code, 0) << info.output;
  auto src = Open(img);
  ASSERT_TRUE(src.ok()) << src.status().ToString();
  ExpectReadsAs(**src, testing::ReadFileBytes(truth));
}

class WriterTest : public ::testing::TestWithParam<const char*> {};

TEST_P(WriterTest, WritesWhatQemuReads) {
  TempDir dir;
  std::string truth = MakePattern(dir, 24 * kMiB + 3 * 512, 11);
  std::string img = dir.Join("out.vmdk");
  auto src = OpenImage(truth, OpenOptions{.format = ImageFormat::kRaw});
  ASSERT_TRUE(src.ok());
  CreateOptions opts;
  opts.size = (*src)->size();
  opts.subformat = GetParam();
  auto sink = CreateVmdk(img, opts);
  ASSERT_TRUE(sink.ok()) << sink.status().ToString();
  EXPECT_EQ((*sink)->sequential(), std::string(GetParam()) == "streamOptimized");
  ASSERT_TRUE(CopyRange(**src, **sink, 0, opts.size).ok());
  Status s = (*sink)->Finalize();
  ASSERT_TRUE(s.ok()) << s.ToString();
  ExpectValidVmdk(img, truth);
  auto reopened = Open(img);
  ASSERT_TRUE(reopened.ok());
  EXPECT_EQ((*reopened)->info().subformat, GetParam());
}

TEST_P(WriterTest, ResumeAfterCrash) {
  TempDir dir;
  std::string truth = MakePattern(dir, 40 * kMiB, 5);
  std::string img = dir.Join("out.vmdk");
  auto src = OpenImage(truth, OpenOptions{.format = ImageFormat::kRaw});
  ASSERT_TRUE(src.ok());
  CreateOptions opts;
  opts.size = (*src)->size();
  opts.subformat = GetParam();
  const uint64_t frontier = 20 * kMiB + 64 * 1024;  // mid grain table (32 MiB each)
  std::vector<uint8_t> state;
  {
    auto sink = CreateVmdk(img, opts);
    ASSERT_TRUE(sink.ok()) << sink.status().ToString();
    ASSERT_TRUE(CopyRange(**src, **sink, 0, frontier).ok());
    auto cp = (*sink)->Checkpoint();
    ASSERT_TRUE(cp.ok()) << cp.status().ToString();
    state = *cp;
    EXPECT_LT(state.size(), 16u * 1024);
    // Work after the checkpoint that the crash loses.
    ASSERT_TRUE(CopyRange(**src, **sink, frontier, 30 * kMiB).ok());
  }
  {
    // Garbage past the checkpointed end, as a crash might leave.
    std::ofstream f(img, std::ios::binary | std::ios::app);
    std::string junk(300000, '\x77');
    f.write(junk.data(), static_cast<std::streamsize>(junk.size()));
  }
  auto sink = ResumeVmdk(img, opts, state);
  ASSERT_TRUE(sink.ok()) << sink.status().ToString();
  EXPECT_FALSE((*sink)->zero_initialized());
  ASSERT_TRUE(CopyRange(**src, **sink, frontier, opts.size).ok());
  ASSERT_TRUE((*sink)->Finalize().ok());
  ExpectValidVmdk(img, truth);
}

INSTANTIATE_TEST_SUITE_P(Subformats, WriterTest,
                         ::testing::Values("monolithicSparse", "streamOptimized"));

TEST(VmdkWriterTest, ParallelWritesMonolithicSparse) {
  TempDir dir;
  std::string truth = MakePattern(dir, 32 * kMiB, 9);
  std::vector<uint8_t> t = testing::ReadFileBytes(truth);
  std::string img = dir.Join("p.vmdk");
  CreateOptions opts;
  opts.size = t.size();
  auto sink = CreateVmdk(img, opts);
  ASSERT_TRUE(sink.ok());
  std::vector<std::thread> threads;
  std::atomic<bool> ok{true};
  for (int w = 0; w < 4; ++w) {
    threads.emplace_back([&, w] {
      for (uint64_t off = w * kMiB; off < t.size(); off += 4 * kMiB) {
        if (!(*sink)->Write(off, std::span(t).subspan(off, kMiB)).ok()) ok = false;
      }
    });
  }
  for (auto& th : threads) th.join();
  ASSERT_TRUE(ok);
  ASSERT_TRUE((*sink)->Finalize().ok());
  ExpectValidVmdk(img, truth);
}

TEST(VmdkWriterTest, RejectsBadOptions) {
  TempDir dir;
  CreateOptions opts;
  opts.size = kMiB;
  opts.subformat = "monolithicFlat";
  EXPECT_EQ(CreateVmdk(dir.Join("a.vmdk"), opts).status().code(), ErrorCode::kUnsupported);
  opts.subformat = "";
  opts.cluster_size = 3000;
  EXPECT_EQ(CreateVmdk(dir.Join("a.vmdk"), opts).status().code(), ErrorCode::kInvalidArgument);
  opts.cluster_size = 0;
  opts.size = 1000;
  EXPECT_EQ(CreateVmdk(dir.Join("a.vmdk"), opts).status().code(), ErrorCode::kInvalidArgument);
}

}  // namespace
}  // namespace ferry
