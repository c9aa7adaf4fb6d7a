// Tests for the VHDX reader and writer, with qemu-img as the truth.
#include "disk/vhdx/vhdx.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <functional>
#include <thread>

#include "common/bytes.h"
#include "common/checksum.h"
#include "disk/vhdx/vhdx_format.h"
#include "test_util.h"

namespace ferry {
namespace {

using testing::PatternSpec;
using testing::ReadFileBytes;
using testing::ShellQuote;
using testing::TempDir;
using testing::WriteFileBytes;
namespace vx = vhdx;

constexpr uint64_t kMiB = 1 << 20;

testing::CommandResult Sh(const std::string& command) { return testing::Run(command); }

std::string MakeTruth(const TempDir& dir, uint64_t size, uint32_t seed,
                      double data_fraction = 0.3) {
  std::string path = dir.Join("truth" + std::to_string(seed) + ".raw");
  PatternSpec spec;
  spec.size = size;
  spec.seed = seed;
  spec.data_fraction = data_fraction;
  EXPECT_TRUE(testing::WritePatternRaw(path, spec));
  return path;
}

Result<std::unique_ptr<BlockSource>> OpenV(const std::string& path) {
  OpenOptions o;
  o.format = ImageFormat::kVhdx;
  return OpenImage(path, o);
}

// Reads the whole source and checks Extents(): exact cover, zeros where not kData.
void ExpectSameAsTruth(BlockSource* src, const std::vector<uint8_t>& truth) {
  ASSERT_EQ(src->size(), truth.size());
  std::vector<uint8_t> got(truth.size());
  ASSERT_TRUE(src->Read(0, got).ok());
  ASSERT_TRUE(got == truth) << "content differs from the truth";
  // Unaligned reads too.
  std::vector<uint8_t> part(3 * kMiB + 777);
  uint64_t at = std::min<uint64_t>(truth.size() - part.size(), kMiB + 4321);
  ASSERT_TRUE(src->Read(at, part).ok());
  ASSERT_EQ(0, std::memcmp(part.data(), truth.data() + at, part.size()));
  std::vector<Extent> ext;
  ASSERT_TRUE(src->Extents(0, truth.size(), &ext).ok());
  uint64_t pos = 0;
  for (const Extent& e : ext) {
    ASSERT_EQ(e.offset, pos);
    ASSERT_GT(e.length, 0u);
    if (e.kind != ExtentKind::kData) {
      ASSERT_TRUE(IsAllZero(truth.data() + e.offset, e.length))
          << "non-data extent at " << e.offset << " holds data";
    }
    pos += e.length;
  }
  ASSERT_EQ(pos, truth.size());
}

// Copies `src` into `sink` like the copy engine does, for virtual range [from, to).
void CopyRange(BlockSource* src, BlockSink* sink, uint64_t from, uint64_t to) {
  const uint64_t g = sink->granularity();
  const uint64_t chunk = std::max<uint64_t>(4 * kMiB, g);
  std::vector<uint8_t> buf;
  for (uint64_t off = from; off < to; off += chunk) {
    uint64_t len = std::min(chunk, to - off);
    std::vector<Extent> ext;
    ASSERT_TRUE(src->Extents(off, len, &ext).ok());
    bool any_data = false;
    for (auto& e : ext) any_data |= e.kind == ExtentKind::kData;
    buf.assign(len, 0);
    if (any_data) {
      ASSERT_TRUE(src->Read(off, buf).ok());
    }
    for (uint64_t p = 0; p < len;) {
      uint64_t n = std::min(g, len - p);
      if (IsAllZero(buf.data() + p, n)) {
        if (!sink->zero_initialized()) {
          ASSERT_TRUE(sink->WriteZeroes(off + p, n).ok());
        }
        p += n;
        continue;
      }
      uint64_t q = p + n;
      while (q < len) {
        uint64_t m = std::min(g, len - q);
        if (IsAllZero(buf.data() + q, m)) break;
        q += m;
      }
      Status s = sink->Write(off + p, std::span<const uint8_t>(buf).subspan(p, q - p));
      ASSERT_TRUE(s.ok()) << s.ToString();
      p = q;
    }
  }
}

std::unique_ptr<BlockSource> RawSource(const std::string& path) {
  OpenOptions o;
  o.format = ImageFormat::kRaw;
  auto r = OpenImage(path, o);
  EXPECT_TRUE(r.ok());
  return std::move(r).value();
}

std::string WriteWithFerry(const TempDir& dir, const std::string& truth, uint32_t block_size,
                           const std::string& name) {
  std::string out = dir.Join(name);
  auto src = RawSource(truth);
  CreateOptions opts;
  opts.size = src->size();
  opts.cluster_size = block_size;
  auto sink = CreateVhdx(out, opts);
  EXPECT_TRUE(sink.ok()) << sink.status().ToString();
  CopyRange(src.get(), sink->get(), 0, src->size());
  Status s = (*sink)->Finalize();
  EXPECT_TRUE(s.ok()) << s.ToString();
  return out;
}

void PatchFile(const std::string& path, uint64_t off, const std::vector<uint8_t>& bytes) {
  auto f = PosixEnv()->Open(path, OpenMode::kReadWrite);
  ASSERT_TRUE(f.ok());
  ASSERT_TRUE((*f)->WriteAt(off, bytes).ok());
}
std::vector<uint8_t> ReadAt(const std::string& path, uint64_t off, size_t len) {
  std::vector<uint8_t> b(len);
  auto f = PosixEnv()->Open(path, OpenMode::kRead);
  EXPECT_TRUE(f.ok());
  EXPECT_TRUE((*f)->ReadAt(off, b).ok());
  return b;
}

bool Contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

// ---- qemu-img made images ----

TEST(VhdxReaderTest, QemuImgImagesReadIdenticalToTruth) {
  TempDir dir;
  const uint64_t size = 20 * kMiB + 64 * 1024;  // a partial last block
  std::string truth = MakeTruth(dir, size, 7);
  auto truth_bytes = ReadFileBytes(truth);
  const char* variants[] = {
      "subformat=dynamic,block_size=1M",
      "subformat=dynamic,block_size=8M",
      "subformat=dynamic,block_size=32M",
      "subformat=fixed,block_size=8M",
      "subformat=dynamic,block_size=1M,log_size=2M",
      "subformat=dynamic,block_size=8M,block_state_zero=off",
  };
  int i = 0;
  for (const char* v : variants) {
    SCOPED_TRACE(v);
    std::string img = dir.Join("q" + std::to_string(i++) + ".vhdx");
    auto r = Sh("qemu-img convert -f raw -O vhdx -o " + std::string(v) + " " + ShellQuote(truth) +
                " " + ShellQuote(img));
    ASSERT_EQ(r.exit_code, 0) << r.output;
    auto src = OpenV(img);
    ASSERT_TRUE(src.ok()) << src.status().ToString();
    ExpectSameAsTruth(src->get(), truth_bytes);
    ImageInfo info = (*src)->info();
    EXPECT_EQ(info.format, "vhdx");
    EXPECT_EQ(info.subformat, Contains(v, "fixed") ? "fixed" : "dynamic");
    EXPECT_EQ(info.cluster_size, Contains(v, "=1M")   ? kMiB
                                 : Contains(v, "=8M") ? 8 * kMiB
                                                      : 32 * kMiB);
    EXPECT_TRUE(info.problems.empty());
  }
}

TEST(VhdxReaderTest, ProbeFindsVhdx) {
  TempDir dir;
  std::string truth = MakeTruth(dir, 4 * kMiB, 3);
  std::string img = dir.Join("p.vhdx");
  ASSERT_EQ(Sh("qemu-img convert -O vhdx " + ShellQuote(truth) + " " + ShellQuote(img)).exit_code,
            0);
  auto src = OpenImage(img);
  ASSERT_TRUE(src.ok()) << src.status().ToString();
  EXPECT_EQ((*src)->info().format, "vhdx");
}

// ---- writer ----

TEST(VhdxWriterTest, RoundTripsThroughQemuImg) {
  TempDir dir;
  const uint64_t size = 40 * kMiB + 512 * 3;
  std::string truth = MakeTruth(dir, size, 11);
  auto truth_bytes = ReadFileBytes(truth);
  for (uint32_t bs : {1u << 20, 2u << 20, 0u /* default 32 MiB */}) {
    SCOPED_TRACE(bs);
    std::string img = WriteWithFerry(dir, truth, bs, "w" + std::to_string(bs) + ".vhdx");
    auto check = Sh("qemu-img check -f vhdx " + ShellQuote(img));
    EXPECT_EQ(check.exit_code, 0) << check.output;
    EXPECT_EQ(testing::QemuImgCompare(img, truth, "vhdx", "raw"), 0);
    auto info = Sh("qemu-img info --output=json -f vhdx " + ShellQuote(img));
    EXPECT_TRUE(Contains(info.output, "\"virtual-size\": " + std::to_string(size))) << info.output;
    auto src = OpenV(img);
    ASSERT_TRUE(src.ok()) << src.status().ToString();
    ExpectSameAsTruth(src->get(), truth_bytes);
    EXPECT_EQ((*src)->info().cluster_size, bs == 0 ? 32 * kMiB : bs);
    EXPECT_EQ((*src)->info().subformat, "dynamic");
  }
}

TEST(VhdxWriterTest, UnfinishedImageIsNotAValidVhdx) {
  TempDir dir;
  std::string img = dir.Join("u.vhdx");
  CreateOptions opts;
  opts.size = 8 * kMiB;
  opts.cluster_size = kMiB;
  auto sink = CreateVhdx(img, opts);
  ASSERT_TRUE(sink.ok());
  std::vector<uint8_t> data(kMiB, 0x5a);
  ASSERT_TRUE((*sink)->Write(kMiB, data).ok());
  ASSERT_TRUE((*sink)->Checkpoint().ok());
  auto src = OpenV(img);
  ASSERT_FALSE(src.ok());
  EXPECT_EQ(src.status().code(), ErrorCode::kCorrupt);
  EXPECT_TRUE(Contains(src.status().message(), "no valid VHDX header"));
  EXPECT_NE(Sh("qemu-img info -f vhdx " + ShellQuote(img)).exit_code, 0);
}

TEST(VhdxWriterTest, ParallelWritesAndReads) {
  TempDir dir;
  const uint64_t size = 24 * kMiB;
  std::string truth = MakeTruth(dir, size, 31, 0.7);
  auto truth_bytes = ReadFileBytes(truth);
  std::string img = dir.Join("par.vhdx");
  CreateOptions opts;
  opts.size = size;
  opts.cluster_size = kMiB;
  auto sink = CreateVhdx(img, opts);
  ASSERT_TRUE(sink.ok());
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (uint64_t b = t; b < size / kMiB; b += 4) {
        std::span<const uint8_t> piece(truth_bytes.data() + b * kMiB, kMiB);
        if (IsAllZero(piece.data(), piece.size())) continue;
        if (!(*sink)->Write(b * kMiB, piece).ok()) ++failures;
      }
    });
  }
  for (auto& th : threads) th.join();
  ASSERT_EQ(failures, 0);
  ASSERT_TRUE((*sink)->Finalize().ok());
  EXPECT_EQ(testing::QemuImgCompare(img, truth, "vhdx", "raw"), 0);
  auto src = OpenV(img);
  ASSERT_TRUE(src.ok());
  threads.clear();
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      std::vector<uint8_t> buf(kMiB + 4096);
      for (uint64_t off = t * 4096; off + buf.size() <= size; off += 3 * kMiB + 512) {
        std::vector<Extent> ext;
        if (!(*src)->Extents(off, buf.size(), &ext).ok() || !(*src)->Read(off, buf).ok() ||
            std::memcmp(buf.data(), truth_bytes.data() + off, buf.size()) != 0) {
          ++failures;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures, 0);
}

TEST(VhdxWriterTest, RejectsBadOptions) {
  TempDir dir;
  CreateOptions opts;
  opts.size = 8 * kMiB;
  opts.cluster_size = 3 * kMiB;
  EXPECT_EQ(CreateVhdx(dir.Join("a.vhdx"), opts).status().code(), ErrorCode::kInvalidArgument);
  opts.cluster_size = 0;
  opts.size = 1000;
  EXPECT_EQ(CreateVhdx(dir.Join("b.vhdx"), opts).status().code(), ErrorCode::kInvalidArgument);
  opts.size = 8 * kMiB;
  opts.subformat = "fixed";
  EXPECT_EQ(CreateVhdx(dir.Join("c.vhdx"), opts).status().code(), ErrorCode::kUnsupported);
}

TEST(VhdxWriterTest, ResumeAfterCrashFinishesIdentical) {
  TempDir dir;
  const uint64_t size = 32 * kMiB;
  std::string truth = MakeTruth(dir, size, 21, 0.5);
  auto truth_bytes = ReadFileBytes(truth);
  auto src = RawSource(truth);
  std::string img = dir.Join("r.vhdx");
  CreateOptions opts;
  opts.size = size;
  opts.cluster_size = kMiB;
  std::vector<uint8_t> blob;
  const uint64_t frontier = 12 * kMiB;
  {
    auto sink = CreateVhdx(img, opts);
    ASSERT_TRUE(sink.ok());
    CopyRange(src.get(), sink->get(), 0, frontier);
    auto cp = (*sink)->Checkpoint();
    ASSERT_TRUE(cp.ok());
    blob = *cp;
    EXPECT_LE(blob.size(), 64u);
    // Progress after the checkpoint, including a later checkpoint whose BAT points past the
    // first checkpoint's end of file; then a crash (no Finalize).
    CopyRange(src.get(), sink->get(), frontier, 24 * kMiB);
    ASSERT_TRUE((*sink)->Checkpoint().ok());
    std::vector<uint8_t> garbage(kMiB, 0xEE);
    ASSERT_TRUE((*sink)->Write(28 * kMiB, garbage).ok());
  }
  {
    // Garbage appended past the end by the dying process.
    auto f = PosixEnv()->Open(img, OpenMode::kReadWrite);
    ASSERT_TRUE(f.ok());
    auto fsize = (*f)->Size();
    ASSERT_TRUE(fsize.ok());
    ASSERT_TRUE((*f)->WriteAt(*fsize, std::vector<uint8_t>(3 * kMiB, 0xAB)).ok());
  }
  auto sink = ResumeVhdx(img, opts, blob);
  ASSERT_TRUE(sink.ok()) << sink.status().ToString();
  EXPECT_FALSE((*sink)->zero_initialized());
  CopyRange(src.get(), sink->get(), frontier, size);
  ASSERT_TRUE((*sink)->Finalize().ok());
  auto check = Sh("qemu-img check -f vhdx " + ShellQuote(img));
  EXPECT_EQ(check.exit_code, 0) << check.output;
  EXPECT_EQ(testing::QemuImgCompare(img, truth, "vhdx", "raw"), 0);
  auto back = OpenV(img);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  ExpectSameAsTruth(back->get(), truth_bytes);
}

TEST(VhdxWriterTest, ResumeRewritesDataAndZeroesBeforeTheFrontier) {
  // After Resume, ranges past the engine's frontier are written again even if blocks were
  // allocated before the checkpoint: writes replace data, WriteZeroes make it read zero.
  TempDir dir;
  std::string img = dir.Join("z.vhdx");
  CreateOptions opts;
  opts.size = 8 * kMiB;
  opts.cluster_size = kMiB;
  std::vector<uint8_t> blob;
  {
    auto sink = CreateVhdx(img, opts);
    ASSERT_TRUE(sink.ok());
    ASSERT_TRUE((*sink)->Write(0, std::vector<uint8_t>(2 * kMiB, 0x11)).ok());
    auto cp = (*sink)->Checkpoint();
    ASSERT_TRUE(cp.ok());
    blob = *cp;
  }
  auto sink = ResumeVhdx(img, opts, blob);
  ASSERT_TRUE(sink.ok());
  ASSERT_TRUE((*sink)->WriteZeroes(0, kMiB).ok());
  ASSERT_TRUE((*sink)->Write(kMiB, std::vector<uint8_t>(kMiB, 0x22)).ok());
  ASSERT_TRUE((*sink)->Finalize().ok());
  std::vector<uint8_t> expect(8 * kMiB, 0);
  std::fill(expect.begin() + kMiB, expect.begin() + 2 * kMiB, 0x22);
  auto src = OpenV(img);
  ASSERT_TRUE(src.ok());
  ExpectSameAsTruth(src->get(), expect);
  EXPECT_EQ(Sh("qemu-img check -f vhdx " + ShellQuote(img)).exit_code, 0);
}

TEST(VhdxWriterTest, ResumeRejectsForeignState) {
  TempDir dir;
  std::string img = dir.Join("f.vhdx");
  CreateOptions opts;
  opts.size = 8 * kMiB;
  opts.cluster_size = kMiB;
  std::vector<uint8_t> blob;
  {
    auto sink = CreateVhdx(img, opts);
    ASSERT_TRUE(sink.ok());
    blob = *(*sink)->Checkpoint();
  }
  CreateOptions other = opts;
  other.size = 16 * kMiB;
  EXPECT_EQ(ResumeVhdx(img, other, blob).status().code(), ErrorCode::kMismatch);
  std::vector<uint8_t> bad = blob;
  bad[9] ^= 1;
  EXPECT_EQ(ResumeVhdx(img, opts, bad).status().code(), ErrorCode::kCorrupt);
}

// Regression: a block whose tail is all zeros leaves the file short of the block's end (zero
// runs are not written); a checkpoint there must still be resumable.
TEST(VhdxWriterTest, ResumeAfterCheckpointOnABlockWithAZeroTail) {
  TempDir dir;
  std::string img = dir.Join("t.vhdx");
  CreateOptions opts;
  opts.size = 8 * kMiB;
  opts.cluster_size = kMiB;
  std::vector<uint8_t> block(kMiB, 0);
  std::fill(block.begin(), block.begin() + 4096, 0x5A);
  std::vector<uint8_t> blob;
  {
    auto sink = CreateVhdx(img, opts);
    ASSERT_TRUE(sink.ok());
    ASSERT_TRUE((*sink)->Write(0, block).ok());
    auto ck = (*sink)->Checkpoint();
    ASSERT_TRUE(ck.ok()) << ck.status().ToString();
    blob = *ck;
  }
  auto sink = ResumeVhdx(img, opts, blob);
  ASSERT_TRUE(sink.ok()) << sink.status().ToString();
  ASSERT_TRUE((*sink)->Write(kMiB, block).ok());
  ASSERT_TRUE((*sink)->Finalize().ok());
  EXPECT_EQ(Sh("qemu-img check -f vhdx " + ShellQuote(img)).exit_code, 0);
}

// ---- log replay ----

// Rewrites both headers with `log_guid` set (the log must be replayed).
void SetLogGuid(const std::string& img, const vx::Guid& guid) {
  for (uint64_t at : {vx::kHeader1Offset, vx::kHeader2Offset}) {
    auto h = vx::DecodeHeader(ReadAt(img, at, vx::kHeaderSize));
    ASSERT_TRUE(h.ok());
    h->log_guid = guid;
    PatchFile(img, at, vx::EncodeHeader(*h));
  }
}

TEST(VhdxReaderTest, ReplaysPendingLogInMemoryOnly) {
  TempDir dir;
  const uint64_t size = 8 * kMiB;
  std::string truth = MakeTruth(dir, size, 5, 0.9);
  std::string img = WriteWithFerry(dir, truth, kMiB, "log.vhdx");
  auto truth_bytes = ReadFileBytes(truth);

  // Our writer puts the BAT at 3 MiB and the log at 1 MiB (docs/formats/vhdx.md).
  const uint64_t bat_off = 3 * kMiB;
  std::vector<uint8_t> bat_sector = ReadAt(img, bat_off, 4096);
  uint64_t e0 = LoadLE64(bat_sector.data()), e1 = LoadLE64(bat_sector.data() + 8);
  ASSERT_EQ(vx::BatState(e0), 6);
  ASSERT_EQ(vx::BatState(e1), 6);
  // Entry 1 (seq 41): the BAT with blocks 0 and 1 swapped and block 2 not present.
  std::vector<uint8_t> logged = bat_sector;
  StoreLE64(logged.data(), e1);
  StoreLE64(logged.data() + 8, e0);
  StoreLE64(logged.data() + 16, 0);
  vx::Guid log_guid = vx::Guid::Random();
  auto file_size = ReadFileBytes(img).size();
  vx::LogEntry a;
  a.sequence_number = 41;
  a.tail = 0;
  a.log_guid = log_guid;
  a.flushed_file_offset = file_size;
  a.last_file_offset = file_size;
  a.writes.push_back({bat_off, 0, logged});
  // Entry 2 (seq 42): zero the first 8 KiB of block 3's data, via a zero descriptor.
  vx::LogEntry b = a;
  b.sequence_number = 42;
  b.writes.clear();
  uint64_t e3 = LoadLE64(bat_sector.data() + 24);
  ASSERT_EQ(vx::BatState(e3), 6);
  b.writes.push_back({vx::BatOffset(e3), 8192, {}});
  auto ea = vx::EncodeLogEntry(a);
  auto eb = vx::EncodeLogEntry(b);
  // A stale entry from an older sequence further on must be ignored.
  vx::LogEntry stale = a;
  stale.sequence_number = 7;
  stale.writes = {{bat_off, 0, std::vector<uint8_t>(4096, 0xFF)}};
  auto es = vx::EncodeLogEntry(stale);
  std::vector<uint8_t> log = ea;
  log.insert(log.end(), eb.begin(), eb.end());
  log.resize(512 * 1024, 0);
  log.insert(log.end(), es.begin(), es.end());
  PatchFile(img, kMiB, log);
  SetLogGuid(img, log_guid);

  std::vector<uint8_t> expect = truth_bytes;
  std::memcpy(expect.data(), truth_bytes.data() + kMiB, kMiB);
  std::memcpy(expect.data() + kMiB, truth_bytes.data(), kMiB);
  std::memset(expect.data() + 2 * kMiB, 0, kMiB);
  std::memset(expect.data() + 3 * kMiB, 0, 8192);

  auto before = Sha256::Of(ReadFileBytes(img));
  {
    auto src = OpenV(img);
    ASSERT_TRUE(src.ok()) << src.status().ToString();
    ExpectSameAsTruth(src->get(), expect);
    bool saw = false;
    for (auto& [k, v] : (*src)->info().details) {
      if (k == "log") {
        saw = true;
        EXPECT_TRUE(Contains(v, "replayed in memory (2 entries")) << v;
      }
    }
    EXPECT_TRUE(saw);
  }
  EXPECT_EQ(before, Sha256::Of(ReadFileBytes(img))) << "the reader modified the source";

  // qemu agrees: let it replay the log into a copy and compare.
  std::string copy = dir.Join("copy.vhdx");
  ASSERT_EQ(Sh("cp " + ShellQuote(img) + " " + ShellQuote(copy)).exit_code, 0);
  auto repaired = Sh("qemu-img check -r all -f vhdx " + ShellQuote(copy));
  ASSERT_TRUE(repaired.exit_code == 0 || repaired.exit_code == 1) << repaired.output;
  std::string expect_path = dir.Join("expect.raw");
  ASSERT_TRUE(WriteFileBytes(expect_path, expect));
  EXPECT_EQ(testing::QemuImgCompare(copy, expect_path, "vhdx", "raw"), 0);
}

TEST(VhdxReaderTest, ReplaysLogSequenceWrappingAroundTheLogEnd) {
  TempDir dir;
  std::string truth = MakeTruth(dir, 4 * kMiB, 6, 0.9);
  std::string img = WriteWithFerry(dir, truth, kMiB, "wrap.vhdx");
  auto truth_bytes = ReadFileBytes(truth);
  const uint64_t bat_off = 3 * kMiB;
  std::vector<uint8_t> bat_sector = ReadAt(img, bat_off, 4096);
  vx::Guid guid = vx::Guid::Random();
  uint64_t file_size = ReadFileBytes(img).size();
  // Entry a (8 KiB) starts in the last log sector and wraps to sector 0; entry b follows it
  // and its tail names a. a drops block 0, b drops block 1; only the pair gives both.
  vx::LogEntry a;
  a.sequence_number = 100;
  a.log_guid = guid;
  a.flushed_file_offset = a.last_file_offset = file_size;
  ASSERT_EQ(bat_sector.size(), 4096u);
  std::vector<uint8_t> s1 = bat_sector;
  std::fill(s1.begin(), s1.begin() + 8, 0);
  a.writes.push_back({bat_off, 0, s1});
  vx::LogEntry b = a;
  b.sequence_number = 101;
  b.tail = uint32_t(kMiB - 4096);
  std::vector<uint8_t> s2 = s1;
  std::fill(s2.begin() + 8, s2.begin() + 16, 0);
  b.writes = {{bat_off, 0, s2}};
  auto ea = vx::EncodeLogEntry(a);
  auto eb = vx::EncodeLogEntry(b);
  ASSERT_EQ(ea.size(), 8192u);
  std::vector<uint8_t> log(kMiB, 0);
  std::memcpy(log.data() + kMiB - 4096, ea.data(), 4096);
  std::memcpy(log.data(), ea.data() + 4096, 4096);
  std::memcpy(log.data() + 4096, eb.data(), eb.size());
  PatchFile(img, kMiB, log);
  SetLogGuid(img, guid);
  std::vector<uint8_t> expect = truth_bytes;
  std::memset(expect.data(), 0, 2 * kMiB);
  auto src = OpenV(img);
  ASSERT_TRUE(src.ok()) << src.status().ToString();
  ExpectSameAsTruth(src->get(), expect);
  EXPECT_TRUE((*src)->info().problems.empty());
  std::string copy = dir.Join("copy.vhdx");
  ASSERT_EQ(Sh("cp " + ShellQuote(img) + " " + ShellQuote(copy)).exit_code, 0);
  Sh("qemu-img check -r all -f vhdx " + ShellQuote(copy));
  std::string expect_path = dir.Join("expect.raw");
  ASSERT_TRUE(WriteFileBytes(expect_path, expect));
  EXPECT_EQ(testing::QemuImgCompare(copy, expect_path, "vhdx", "raw"), 0);
}

TEST(VhdxReaderTest, ReplaysALogEntryWrittenByQemu) {
  // qemu logs each BAT update, then flushes it and clears the header's log GUID. Re-arming
  // the GUID of its last entry and undoing that entry's BAT change in the file makes a
  // pending log that only a correct replay of qemu's own encoding can resolve.
  TempDir dir;
  std::string img = dir.Join("q.vhdx");
  ASSERT_EQ(Sh("qemu-img create -q -f vhdx -o block_size=1M " + ShellQuote(img) + " 8M").exit_code,
            0);
  auto w = Sh("qemu-io -c 'write -P 0x55 1M 64k' -c 'write -P 0x66 5M 4k' " + ShellQuote(img));
  ASSERT_EQ(w.exit_code, 0) << w.output;
  std::string expect_path = dir.Join("expect.raw");
  ASSERT_EQ(
      Sh("qemu-img convert -O raw " + ShellQuote(img) + " " + ShellQuote(expect_path)).exit_code,
      0);
  auto bytes = ReadFileBytes(img);
  auto h = vx::DecodeHeader(std::span<const uint8_t>(bytes).subspan(vx::kHeader2Offset, 4096));
  ASSERT_TRUE(h.ok());
  uint64_t best = 0, best_seq = 0;
  for (uint64_t s = h->log_offset; s < h->log_offset + h->log_length; s += 4096) {
    if (std::memcmp(bytes.data() + s, "loge", 4) == 0 &&
        LoadLE64(bytes.data() + s + 16) > best_seq) {
      best = s;
      best_seq = LoadLE64(bytes.data() + s + 16);
    }
  }
  ASSERT_GE(best_seq, 2u) << "qemu wrote no log entries";
  vx::Guid guid = vx::Guid::Load(bytes.data() + best + 32);
  uint64_t bat_sector = LoadLE64(bytes.data() + best + 64 + 16);
  ASSERT_EQ(vx::BatState(LoadLE64(bytes.data() + bat_sector + 8 * 5)), 6);
  PatchFile(img, bat_sector + 8 * 5, std::vector<uint8_t>(8, 0));
  SetLogGuid(img, guid);
  auto src = OpenV(img);
  ASSERT_TRUE(src.ok()) << src.status().ToString();
  ExpectSameAsTruth(src->get(), ReadFileBytes(expect_path));
  SetLogGuid(img, vx::Guid());  // without the replay, block 5 is gone
  auto unreplayed = OpenV(img);
  ASSERT_TRUE(unreplayed.ok());
  std::vector<uint8_t> b(4096);
  ASSERT_TRUE((*unreplayed)->Read(5 * kMiB, b).ok());
  EXPECT_TRUE(IsAllZero(b.data(), b.size()));
}

TEST(VhdxReaderTest, LogGuidWithoutEntriesIsAProblemNotAnError) {
  TempDir dir;
  std::string truth = MakeTruth(dir, 4 * kMiB, 9);
  std::string img = WriteWithFerry(dir, truth, kMiB, "nolog.vhdx");
  SetLogGuid(img, vx::Guid::Random());
  auto src = OpenV(img);
  ASSERT_TRUE(src.ok()) << src.status().ToString();
  EXPECT_FALSE((*src)->info().problems.empty());
  ExpectSameAsTruth(src->get(), ReadFileBytes(truth));
}

TEST(VhdxReaderTest, LogNeedingALongerFileIsCorrupt) {
  TempDir dir;
  std::string truth = MakeTruth(dir, 4 * kMiB, 9);
  std::string img = WriteWithFerry(dir, truth, kMiB, "trunclog.vhdx");
  vx::Guid g = vx::Guid::Random();
  vx::LogEntry e;
  e.sequence_number = 1;
  e.log_guid = g;
  e.flushed_file_offset = 1ull << 40;
  e.last_file_offset = 1ull << 40;
  e.writes.push_back({3 * kMiB, 4096, {}});
  PatchFile(img, kMiB, vx::EncodeLogEntry(e));
  SetLogGuid(img, g);
  auto src = OpenV(img);
  ASSERT_FALSE(src.ok());
  EXPECT_EQ(src.status().code(), ErrorCode::kCorrupt);
  EXPECT_TRUE(Contains(src.status().message(), "log entry 1")) << src.status().message();
}

// ---- differencing ----

struct DiffImage {
  std::string path;
  std::vector<uint8_t> expect;
};

// Builds a differencing VHDX over `parent` by hand (qemu-img cannot make one): 1 MiB blocks,
// 512-byte sectors. Block 0 fully present, block 1 from the parent, block 2 zero, block 3
// partially present (first half here), the rest from the parent.
DiffImage MakeDifferencing(const TempDir& dir, const std::string& parent,
                           const std::string& linkage, const std::string& relative_path) {
  auto parent_src = OpenV(parent);
  EXPECT_TRUE(parent_src.ok());
  const uint64_t size = (*parent_src)->size();
  DiffImage d;
  d.path = dir.Join("child.vhdx");
  d.expect.resize(size);
  EXPECT_TRUE((*parent_src)->Read(0, d.expect).ok());

  const uint32_t bs = kMiB;
  const uint64_t cr = vx::ChunkRatio(512, bs);
  const uint64_t entries = vx::BatEntryCount(size, bs, 512, true);
  const uint64_t bat_len = RoundUp(entries * 8, kMiB);
  const uint64_t meta_off = 2 * kMiB, bat_off = 3 * kMiB;
  const uint64_t data_off = bat_off + bat_len;  // block 0, block 3, then the bitmap
  std::vector<uint8_t> f(data_off + 3 * kMiB, 0);
  std::memcpy(f.data(), "vhdxfile", 8);
  vx::Header h;
  h.sequence_number = 3;
  h.file_write_guid = vx::Guid::Random();
  h.data_write_guid = vx::Guid::Random();
  h.log_offset = kMiB;
  h.log_length = kMiB;
  auto hb = vx::EncodeHeader(h);
  std::memcpy(f.data() + vx::kHeader1Offset, hb.data(), hb.size());
  std::memcpy(f.data() + vx::kHeader2Offset, hb.data(), hb.size());
  auto rt = vx::EncodeRegionTable({{vx::BatRegionGuid(), bat_off, uint32_t(bat_len), true},
                                   {vx::MetadataRegionGuid(), meta_off, uint32_t(kMiB), true}});
  std::memcpy(f.data() + vx::kRegionTable1Offset, rt.data(), rt.size());
  std::memcpy(f.data() + vx::kRegionTable2Offset, rt.data(), rt.size());
  auto items = vx::StandardMetadata(bs, vx::kHasParent, size, 512, 4096, vx::Guid::Random());
  items.push_back({vx::ParentLocatorGuid(), vx::kMetaIsRequired,
                   vx::EncodeParentLocator({{"parent_linkage", linkage},
                                            {"relative_path", relative_path},
                                            {"absolute_win32_path", "C:\\nowhere\\p.vhdx"}})});
  auto meta = vx::EncodeMetadataRegion(items, kMiB);
  std::memcpy(f.data() + meta_off, meta.data(), meta.size());
  auto put_bat = [&](uint64_t index, uint64_t entry) {
    StoreLE64(f.data() + bat_off + 8 * index, entry);
  };
  put_bat(vx::BatIndexOfBlock(0, cr), vx::MakeBatEntry(6, data_off));
  put_bat(vx::BatIndexOfBlock(2, cr), vx::MakeBatEntry(2, 0));
  put_bat(vx::BatIndexOfBlock(3, cr), vx::MakeBatEntry(7, data_off + kMiB));
  put_bat(vx::BatIndexOfBitmap(0, cr), vx::MakeBatEntry(6, data_off + 2 * kMiB));
  for (uint64_t i = 0; i < kMiB; ++i) {
    f[data_off + i] = uint8_t(i * 7 + 1);
    f[data_off + kMiB + i] = uint8_t(i * 13 + 5);
  }
  // Block 3: sectors 0..1023 present (first half), plus sector 1500.
  uint64_t first_bit = 3 * (kMiB / 512);
  for (uint64_t s = 0; s < 1024; ++s) {
    uint64_t bit = first_bit + s;
    f[data_off + 2 * kMiB + bit / 8] |= uint8_t(1 << (bit % 8));
  }
  uint64_t bit1500 = first_bit + 1500;
  f[data_off + 2 * kMiB + bit1500 / 8] |= uint8_t(1 << (bit1500 % 8));
  EXPECT_TRUE(WriteFileBytes(d.path, f));

  std::memcpy(d.expect.data(), f.data() + data_off, kMiB);
  std::memset(d.expect.data() + 2 * kMiB, 0, kMiB);
  std::memcpy(d.expect.data() + 3 * kMiB, f.data() + data_off + kMiB, 512 * 1024);
  std::memcpy(d.expect.data() + 3 * kMiB + 1500 * 512, f.data() + data_off + kMiB + 1500 * 512,
              512);
  return d;
}

std::string DataWriteGuid(const std::string& img) {
  auto src = OpenV(img);
  EXPECT_TRUE(src.ok());
  for (auto& [k, v] : (*src)->info().details) {
    if (k == "data_write_guid") return v;
  }
  return "";
}

TEST(VhdxReaderTest, DifferencingImageReadsThroughItsParent) {
  TempDir dir;
  std::string truth = MakeTruth(dir, 8 * kMiB, 13, 0.6);
  std::string parent = WriteWithFerry(dir, truth, kMiB, "parent.vhdx");
  DiffImage d = MakeDifferencing(dir, parent, DataWriteGuid(parent), ".\\parent.vhdx");
  auto src = OpenV(d.path);
  ASSERT_TRUE(src.ok()) << src.status().ToString();
  ExpectSameAsTruth(src->get(), d.expect);
  ImageInfo info = (*src)->info();
  EXPECT_EQ(info.subformat, "differencing");
  ASSERT_EQ(info.backing_chain.size(), 1u);
  EXPECT_TRUE(Contains(info.backing_chain[0], "parent.vhdx"));
  EXPECT_EQ(info.files.size(), 2u);
  // Extents: block 0 data, block 2 zero, block 3 mixes own data and the parent's.
  std::vector<Extent> ext;
  ASSERT_TRUE((*src)->Extents(0, kMiB, &ext).ok());
  ASSERT_EQ(ext.size(), 1u);
  EXPECT_EQ(ext[0].kind, ExtentKind::kData);
  ext.clear();
  ASSERT_TRUE((*src)->Extents(2 * kMiB, kMiB, &ext).ok());
  ASSERT_EQ(ext.size(), 1u);
  EXPECT_EQ(ext[0].kind, ExtentKind::kZero);
}

TEST(VhdxReaderTest, DifferencingLinkageMismatchIsCorruptNamingBoth) {
  TempDir dir;
  std::string truth = MakeTruth(dir, 8 * kMiB, 13);
  std::string parent = WriteWithFerry(dir, truth, kMiB, "parent.vhdx");
  std::string wrong = vx::Guid::Random().ToString();
  DiffImage d = MakeDifferencing(dir, parent, wrong, "parent.vhdx");
  auto src = OpenV(d.path);
  ASSERT_FALSE(src.ok());
  EXPECT_EQ(src.status().code(), ErrorCode::kCorrupt);
  EXPECT_TRUE(Contains(src.status().message(), wrong)) << src.status().message();
  EXPECT_TRUE(Contains(src.status().message(), DataWriteGuid(parent)));
}

TEST(VhdxReaderTest, DifferencingMissingParentIsNotFound) {
  TempDir dir;
  std::string truth = MakeTruth(dir, 8 * kMiB, 13);
  std::string parent = WriteWithFerry(dir, truth, kMiB, "parent.vhdx");
  DiffImage d = MakeDifferencing(dir, parent, DataWriteGuid(parent), "gone.vhdx");
  auto src = OpenV(d.path);
  ASSERT_FALSE(src.ok());
  EXPECT_EQ(src.status().code(), ErrorCode::kNotFound);
  EXPECT_TRUE(Contains(src.status().message(), "gone.vhdx")) << src.status().message();
}

TEST(VhdxReaderTest, DifferencingParentOutsideFolderIsRefused) {
  TempDir dir;
  std::string truth = MakeTruth(dir, 8 * kMiB, 13);
  TempDir other;
  std::string parent = WriteWithFerry(other, truth, kMiB, "parent.vhdx");
  DiffImage d =
      MakeDifferencing(dir, parent, DataWriteGuid(parent),
                       "..\\" + parent.substr(parent.rfind('/', parent.rfind('/') - 1) + 1));
  auto src = OpenV(d.path);
  ASSERT_FALSE(src.ok());
  EXPECT_EQ(src.status().code(), ErrorCode::kPermissionDenied) << src.status().ToString();
}

// ---- corrupt and hostile images ----

class VhdxCorruptTest : public ::testing::Test {
 protected:
  void SetUp() override {
    truth_ = MakeTruth(dir_, 8 * kMiB, 17, 0.8);
    img_ = WriteWithFerry(dir_, truth_, kMiB, "c.vhdx");
  }
  Status OpenStatus() {
    auto src = OpenV(img_);
    return src.ok() ? Status::Ok() : src.status();
  }
  // Rewrites both region table copies through `edit`, fixing their CRCs.
  void EditRegionTables(const std::function<void(std::vector<uint8_t>&)>& edit) {
    for (uint64_t at : {vx::kRegionTable1Offset, vx::kRegionTable2Offset}) {
      auto t = ReadAt(img_, at, vx::kRegionTableSize);
      edit(t);
      std::memset(t.data() + 4, 0, 4);
      StoreLE32(t.data() + 4, Crc32c(t));
      PatchFile(img_, at, t);
    }
  }
  TempDir dir_;
  std::string truth_, img_;
};

TEST_F(VhdxCorruptTest, BothHeadersBadNamesBothOffsets) {
  PatchFile(img_, vx::kHeader1Offset + 100, {1});
  PatchFile(img_, vx::kHeader2Offset + 100, {1});
  Status s = OpenStatus();
  EXPECT_EQ(s.code(), ErrorCode::kCorrupt);
  EXPECT_TRUE(Contains(s.message(), "header at 0x10000")) << s.message();
  EXPECT_TRUE(Contains(s.message(), "header at 0x20000")) << s.message();
  EXPECT_TRUE(Contains(s.message(), "CRC"));
}

TEST_F(VhdxCorruptTest, OneBadHeaderFallsBackToTheOther) {
  PatchFile(img_, vx::kHeader2Offset + 100, {1});
  auto src = OpenV(img_);
  ASSERT_TRUE(src.ok()) << src.status().ToString();
  EXPECT_FALSE((*src)->info().problems.empty());
  ExpectSameAsTruth(src->get(), ReadFileBytes(truth_));
}

TEST_F(VhdxCorruptTest, BatOffsetPastEndOfFile) {
  std::vector<uint8_t> e(8);
  StoreLE64(e.data(), vx::MakeBatEntry(6, 4096 * kMiB));
  PatchFile(img_, 3 * kMiB + 8, e);
  Status s = OpenStatus();
  EXPECT_EQ(s.code(), ErrorCode::kCorrupt);
  EXPECT_TRUE(Contains(s.message(), "BAT at 0x300000 entry 1 (payload block 1)")) << s.message();
  EXPECT_TRUE(Contains(s.message(), "past the end of the file"));
}

TEST_F(VhdxCorruptTest, InvalidBatState) {
  std::vector<uint8_t> e(8);
  StoreLE64(e.data(), 4);
  PatchFile(img_, 3 * kMiB, e);
  Status s = OpenStatus();
  EXPECT_EQ(s.code(), ErrorCode::kCorrupt);
  EXPECT_TRUE(Contains(s.message(), "invalid state 4")) << s.message();
}

TEST_F(VhdxCorruptTest, HugeRegionEntryCount) {
  EditRegionTables([](std::vector<uint8_t>& t) { StoreLE32(t.data() + 8, 1000000); });
  Status s = OpenStatus();
  EXPECT_EQ(s.code(), ErrorCode::kCorrupt);
  EXPECT_TRUE(Contains(s.message(), "region table at 0x30000: entry count 1000000")) << s.message();
  EXPECT_TRUE(Contains(s.message(), "region table at 0x40000"));
}

TEST_F(VhdxCorruptTest, UnknownRequiredRegionIsUnsupported) {
  EditRegionTables([](std::vector<uint8_t>& t) {
    StoreLE32(t.data() + 8, 3);
    uint8_t* e = t.data() + 16 + 64;
    vx::Guid::Random().Store(e);
    StoreLE64(e + 16, 1 * kMiB);
    StoreLE32(e + 24, kMiB);
    StoreLE32(e + 28, 1);
  });
  Status s = OpenStatus();
  EXPECT_EQ(s.code(), ErrorCode::kUnsupported);
  EXPECT_TRUE(Contains(s.message(), "unknown region marked required")) << s.message();
}

TEST_F(VhdxCorruptTest, BlockSizeNotPowerOfTwo) {
  // The file parameters item is the first at 64 KiB into the metadata region (2 MiB).
  std::vector<uint8_t> p(4);
  StoreLE32(p.data(), 3 * kMiB);
  PatchFile(img_, 2 * kMiB + 64 * 1024, p);
  Status s = OpenStatus();
  EXPECT_EQ(s.code(), ErrorCode::kCorrupt);
  EXPECT_TRUE(Contains(s.message(),
                       "metadata table at 0x200000: file parameters: block size "
                       "3145728 is not a power of two"))
      << s.message();
}

TEST_F(VhdxCorruptTest, TruncatedFiles) {
  auto bytes = ReadFileBytes(img_);
  ASSERT_TRUE(WriteFileBytes(img_, std::vector<uint8_t>(bytes.begin(), bytes.end() - kMiB)));
  Status s = OpenStatus();
  EXPECT_EQ(s.code(), ErrorCode::kCorrupt);
  EXPECT_TRUE(Contains(s.message(), "BAT at 0x300000 entry")) << s.message();
  EXPECT_TRUE(Contains(s.message(), "truncated"));
  ASSERT_TRUE(WriteFileBytes(img_, std::vector<uint8_t>(bytes.begin(), bytes.begin() + 500000)));
  s = OpenStatus();
  EXPECT_EQ(s.code(), ErrorCode::kCorrupt);
  EXPECT_TRUE(Contains(s.message(), "smaller than the 1 MiB")) << s.message();
  ASSERT_TRUE(WriteFileBytes(img_, std::vector<uint8_t>(bytes.begin(), bytes.begin() + 3 * kMiB)));
  s = OpenStatus();
  EXPECT_EQ(s.code(), ErrorCode::kCorrupt);
  EXPECT_TRUE(Contains(s.message(), "region")) << s.message();
}

TEST_F(VhdxCorruptTest, MetadataItemOutsideRegion) {
  // Entry 0 of the metadata table: offset field at 32 + 16.
  std::vector<uint8_t> off(4);
  StoreLE32(off.data(), 0xFFFFFF00u);
  PatchFile(img_, 2 * kMiB + 48, off);
  Status s = OpenStatus();
  EXPECT_EQ(s.code(), ErrorCode::kCorrupt);
  EXPECT_TRUE(Contains(s.message(), "lies outside the metadata region")) << s.message();
}

TEST_F(VhdxCorruptTest, BadFileIdentifier) {
  PatchFile(img_, 0, {'x'});
  Status s = OpenStatus();
  EXPECT_EQ(s.code(), ErrorCode::kCorrupt);
  EXPECT_TRUE(Contains(s.message(), "file identifier")) << s.message();
}

}  // namespace
}  // namespace ferry
