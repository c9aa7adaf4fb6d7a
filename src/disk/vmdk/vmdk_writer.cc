// The VMDK writers: monolithicSparse (random access, parallel writes) and streamOptimized
// (sequential, compressed grains with markers, grain directory in the footer). The exact
// layouts and the checkpoint blob are documented in docs/formats/vmdk.md.
//
// Ownership: each sink owns its File.
// Thread-safety: SparseSink::Write/WriteZeroes may run concurrently for distinct ranges
// (grain allocation under a mutex, data pwrite outside it). StreamSink is sequential: the
// engine calls it from one thread at a time.
#include <zlib.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <mutex>
#include <random>
#include <thread>

#include "common/bytes.h"
#include "disk/vmdk/vmdk.h"
#include "disk/vmdk/vmdk_format.h"

namespace ferry {
namespace {

using vmdk::kSector;
using vmdk::SparseHeader;

// Checkpoint blob (docs/formats/vmdk.md, "Checkpoint blob").
constexpr uint32_t kBlobMagic = 0x4b4d5646;  // "FVMK"
constexpr uint32_t kBlobVersion = 1;
constexpr uint32_t kBlobKindSparse = 1;
constexpr uint32_t kBlobKindStream = 2;
constexpr size_t kBlobFixed = 40;
constexpr uint64_t kNoTable = ~uint64_t{0};

// Sectors reserved for the embedded descriptor (as qemu: room for later edits).
constexpr uint64_t kDescriptorSectors = 20;
// zlib level for stream-optimized grains: level 1 is ~1.5x faster than the default 6 for ~6%
// larger output.
constexpr int kDeflateLevel = 1;
// Grains of one Write are compressed by up to this many threads.
constexpr size_t kMaxCompressThreads = 8;
// GTEs are 32-bit sector numbers: no grain may start at or past 2^32 sectors (2 TiB).
constexpr uint64_t kMaxFileSectors = 0xffffffffull;

struct Geometry {
  uint64_t capacity = 0;    // sectors
  uint64_t grain_size = 0;  // sectors
  uint64_t grains = 0;
  uint64_t gt_count = 0;
  uint64_t gt_sectors = 0;  // sectors per grain table
  uint64_t gd_sectors = 0;  // sectors per grain directory
  uint64_t grain_bytes() const { return grain_size * kSector; }
};

Result<Geometry> MakeGeometry(const std::string& path, const CreateOptions& options) {
  if (options.size == 0 || options.size % kSector != 0) {
    return Status::InvalidArgument(path + ": VMDK virtual size must be a non-zero multiple of " +
                                   "512 bytes, got " + std::to_string(options.size));
  }
  if (options.size > vmdk::kMaxVirtualBytes) {
    return Status::TooLarge(path + ": virtual size over the VMDK writer's cap");
  }
  const uint64_t grain_bytes =
      options.cluster_size == 0 ? vmdk::kDefaultGrainSectors * kSector : options.cluster_size;
  if (!IsPowerOfTwo(grain_bytes) || grain_bytes < vmdk::kMinGrainSectors * kSector ||
      grain_bytes > vmdk::kMaxGrainSectors * kSector) {
    return Status::InvalidArgument(path +
                                   ": VMDK grain size must be a power of two from 4 KiB "
                                   "to 1 MiB, got " +
                                   std::to_string(grain_bytes));
  }
  Geometry g;
  g.capacity = options.size / kSector;
  g.grain_size = grain_bytes / kSector;
  g.grains = DivRoundUp(g.capacity, g.grain_size);
  g.gt_count = DivRoundUp(g.grains, vmdk::kDefaultGtesPerGt);
  g.gt_sectors = DivRoundUp(vmdk::kDefaultGtesPerGt * 4, kSector);
  g.gd_sectors = DivRoundUp(g.gt_count * 4, kSector);
  return g;
}

// The BlockSink contract for both writers: whole grains, except a range that ends the disk.
Status CheckGrainAligned(const std::string& path, uint64_t grain_bytes, uint64_t size,
                         uint64_t offset, uint64_t length) {
  if (offset % grain_bytes != 0 || offset > size || length > size - offset ||
      (length % grain_bytes != 0 && offset + length != size)) {
    return Status::InvalidArgument(path + ": write " + Hex(offset) + "+" + Hex(length) +
                                   " is not grain-aligned inside the disk");
  }
  return Status::Ok();
}

std::string BaseName(const std::string& path) {
  auto pos = path.find_last_of('/');
  return pos == std::string::npos ? path : path.substr(pos + 1);
}

uint32_t NewCid() {
  std::random_device rd;
  uint32_t cid = rd();
  return cid == 0xffffffff ? 1 : cid;  // 0xffffffff means "no parent" in parentCID
}

Status WriteHeaderAndDescriptor(File& file, const SparseHeader& h, const std::string& text) {
  std::vector<uint8_t> buf((1 + h.descriptor_size) * kSector, 0);
  vmdk::SerializeSparseHeader(h,
                              std::span<uint8_t, vmdk::kHeaderSize>(buf.data(), vmdk::kHeaderSize));
  std::memcpy(buf.data() + kSector, text.data(), text.size());
  return file.WriteAt(0, buf);
}

void PutGte(std::vector<uint8_t>* out, uint32_t v) {
  size_t at = out->size();
  out->resize(at + 4);
  StoreLE32(out->data() + at, v);
}

Result<SparseHeader> ReadExistingHeader(File& file, const Geometry& g) {
  std::vector<uint8_t> buf(vmdk::kHeaderSize);
  FERRY_TRY(file.ReadAt(0, buf));
  SparseHeader h;
  if (!vmdk::ParseSparseHeader(buf, &h)) {
    return Status::Corrupt(file.path() + ": resume: no KDMV header at 0x0");
  }
  if (h.capacity != g.capacity || h.grain_size != g.grain_size ||
      h.num_gtes_per_gt != vmdk::kDefaultGtesPerGt) {
    return Status::Mismatch(file.path() + ": resume: header (capacity " +
                            std::to_string(h.capacity) + ", grain " + std::to_string(h.grain_size) +
                            ") does not match the options");
  }
  return h;
}

// ---------------------------------------------------------------------------------------
// monolithicSparse

class SparseSink final : public BlockSink {
 public:
  // Layout (like qemu): header, descriptor, redundant GD + its GTs, GD + its GTs, grains.
  SparseSink(std::unique_ptr<File> file, const Geometry& g)
      : file_(std::move(file)), write_behind_(file_.get()), g_(g) {
    h_.version = 1;
    h_.flags = vmdk::kFlagValidNewlineTest | vmdk::kFlagRedundantGrainTable;
    h_.capacity = g.capacity;
    h_.grain_size = g.grain_size;
    h_.descriptor_offset = 1;
    h_.descriptor_size = kDescriptorSectors;
    h_.num_gtes_per_gt = vmdk::kDefaultGtesPerGt;
    h_.rgd_offset = h_.descriptor_offset + h_.descriptor_size;
    h_.gd_offset = h_.rgd_offset + g.gd_sectors + g.gt_count * g.gt_sectors;
    h_.overhead = RoundUp(h_.gd_offset + g.gd_sectors + g.gt_count * g.gt_sectors, g.grain_size);
    h_.compress_algorithm = vmdk::kCompressionNone;
    gte_.assign(g.gt_count * vmdk::kDefaultGtesPerGt, 0);
    dirty_.assign(g.gt_count, 1);
    next_sector_ = h_.overhead;
  }

  Status Create(const std::string& path) {
    if (h_.overhead + g_.grains * g_.grain_size > kMaxFileSectors) {
      return Status::Unsupported(path +
                                 ": monolithicSparse VMDK larger than about 2 TiB "
                                 "(grain table entries are 32-bit sectors)");
    }
    h_.unclean_shutdown = 1;  // cleared by Finalize: an unfinished file says so
    const std::string text =
        vmdk::RenderDescriptor(NewCid(), "monolithicSparse", g_.capacity, BaseName(path));
    FERRY_TRY(file_->Truncate(0));
    FERRY_TRY(WriteHeaderAndDescriptor(*file_, h_, text));
    FERRY_TRY(WriteDirectories());
    FERRY_TRY(WriteTables());
    return file_->Truncate(h_.overhead * kSector);
  }

  Status Resume(uint64_t next_sector) {
    FERRY_ASSIGN_OR_RETURN(SparseHeader h, ReadExistingHeader(*file_, g_));
    if (h.gd_offset != h_.gd_offset || h.rgd_offset != h_.rgd_offset || h.overhead != h_.overhead ||
        next_sector < h_.overhead || next_sector > kMaxFileSectors) {
      return Status::Mismatch(file_->path() + ": resume: layout differs from what Ferry wrote");
    }
    FERRY_ASSIGN_OR_RETURN(uint64_t size, file_->Size());
    if (next_sector * kSector > size) {
      return Status::Corrupt(file_->path() + ": resume: file is " + std::to_string(size) +
                             " bytes, shorter than the checkpointed end " +
                             Hex(next_sector * kSector));
    }
    // Reload the grain tables written by the last Checkpoint; drop anything past its end.
    std::vector<uint8_t> raw(g_.gt_count * g_.gt_sectors * kSector);
    FERRY_TRY(file_->ReadAt((h_.gd_offset + g_.gd_sectors) * kSector, raw));
    for (uint64_t i = 0; i < gte_.size(); ++i) {
      uint32_t v = LoadLE32(raw.data() + 4 * i);
      if (v < h_.overhead || v + g_.grain_size > next_sector) v = 0;
      gte_[i] = v;
    }
    next_sector_ = next_sector;
    zero_initialized_ = false;
    return file_->Truncate(next_sector * kSector);
  }

  uint64_t size() const override { return g_.capacity * kSector; }
  uint32_t granularity() const override { return static_cast<uint32_t>(g_.grain_bytes()); }
  bool zero_initialized() const override { return zero_initialized_; }

  Status Write(uint64_t offset, std::span<const uint8_t> data) override {
    FERRY_TRY(CheckRange(offset, data.size()));
    const uint64_t gb = g_.grain_bytes();
    const uint64_t first = offset / gb;
    const uint64_t count = DivRoundUp(data.size(), gb);
    std::vector<uint8_t> zero(count);
    for (uint64_t i = 0; i < count; ++i) {
      const uint64_t len = std::min<uint64_t>(gb, data.size() - i * gb);
      zero[i] = IsAllZero(data.data() + i * gb, len) ? 1 : 0;
    }
    std::vector<uint64_t> sectors(count, 0);
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (uint64_t i = 0; i < count; ++i) {
        uint32_t& e = gte_[first + i];
        if (zero[i]) {
          if (e != 0) MarkDirty(first + i);
          e = 0;  // no parent: unallocated reads as zeros
          continue;
        }
        if (e == 0) {
          if (next_sector_ + g_.grain_size > kMaxFileSectors) {
            return Status::TooLarge(file_->path() + ": file would pass 2 TiB");
          }
          e = static_cast<uint32_t>(next_sector_);
          next_sector_ += g_.grain_size;
          MarkDirty(first + i);
        }
        sectors[i] = e;
      }
    }
    // Write runs of grains that are contiguous in the file with one pwrite each.
    uint64_t i = 0;
    while (i < count) {
      if (zero[i]) {
        ++i;
        continue;
      }
      uint64_t j = i + 1;
      while (j < count && !zero[j] && sectors[j] == sectors[j - 1] + g_.grain_size) ++j;
      const uint64_t begin = i * gb;
      const uint64_t end = std::min<uint64_t>(j * gb, data.size());
      FERRY_TRY(file_->WriteAt(sectors[i] * kSector, data.subspan(begin, end - begin)));
      write_behind_.Wrote(sectors[i] * kSector, end - begin);
      if (end - begin < (j - i) * gb) {
        // The last grain of a disk whose size is not a grain multiple: keep it whole.
        std::vector<uint8_t> pad((j - i) * gb - (end - begin), 0);
        FERRY_TRY(file_->WriteAt(sectors[i] * kSector + (end - begin), pad));
      }
      i = j;
    }
    return Status::Ok();
  }

  Status WriteZeroes(uint64_t offset, uint64_t length) override {
    FERRY_TRY(CheckRange(offset, length));
    const uint64_t gb = g_.grain_bytes();
    std::lock_guard<std::mutex> lock(mu_);
    for (uint64_t g = offset / gb; g < DivRoundUp(offset + length, gb); ++g) {
      if (gte_[g] != 0) MarkDirty(g);
      gte_[g] = 0;
    }
    return Status::Ok();
  }

  Result<std::vector<uint8_t>> Checkpoint() override {
    FERRY_TRY(file_->Sync());
    FERRY_TRY(WriteTables());
    FERRY_TRY(file_->Sync());
    std::vector<uint8_t> blob(kBlobFixed, 0);
    StoreLE32(blob.data(), kBlobMagic);
    StoreLE32(blob.data() + 4, kBlobVersion);
    StoreLE32(blob.data() + 8, kBlobKindSparse);
    StoreLE64(blob.data() + 16, g_.capacity);
    StoreLE64(blob.data() + 24, g_.grain_size);
    StoreLE64(blob.data() + 32, next_sector_);
    return blob;
  }

  Status Finalize() override {
    FERRY_TRY(file_->Sync());
    FERRY_TRY(WriteTables());
    h_.unclean_shutdown = 0;
    std::vector<uint8_t> header(vmdk::kHeaderSize);
    vmdk::SerializeSparseHeader(
        h_, std::span<uint8_t, vmdk::kHeaderSize>(header.data(), vmdk::kHeaderSize));
    FERRY_TRY(file_->WriteAt(0, header));
    return file_->Sync();
  }

 private:
  Status CheckRange(uint64_t offset, uint64_t length) const {
    return CheckGrainAligned(file_->path(), g_.grain_bytes(), size(), offset, length);
  }

  void MarkDirty(uint64_t grain) { dirty_[grain / vmdk::kDefaultGtesPerGt] = 1; }

  // Both grain directories point at their own preallocated grain tables.
  Status WriteDirectories() {
    for (uint64_t gd : {h_.rgd_offset, h_.gd_offset}) {
      std::vector<uint8_t> buf;
      buf.reserve(g_.gd_sectors * kSector);
      for (uint64_t i = 0; i < g_.gt_count; ++i) {
        PutGte(&buf, static_cast<uint32_t>(gd + g_.gd_sectors + i * g_.gt_sectors));
      }
      buf.resize(g_.gd_sectors * kSector, 0);
      FERRY_TRY(file_->WriteAt(gd * kSector, buf));
    }
    return Status::Ok();
  }

  // Writes dirty grain tables to both copies. REQUIRES: no concurrent writes.
  Status WriteTables() {
    const uint64_t n = vmdk::kDefaultGtesPerGt;
    for (uint64_t t = 0; t < g_.gt_count; ++t) {
      if (!dirty_[t]) continue;
      std::vector<uint8_t> buf;
      buf.reserve(g_.gt_sectors * kSector);
      for (uint64_t i = 0; i < n; ++i) PutGte(&buf, gte_[t * n + i]);
      buf.resize(g_.gt_sectors * kSector, 0);
      for (uint64_t gd : {h_.rgd_offset, h_.gd_offset}) {
        FERRY_TRY(file_->WriteAt((gd + g_.gd_sectors + t * g_.gt_sectors) * kSector, buf));
      }
      dirty_[t] = 0;
    }
    return Status::Ok();
  }

  std::unique_ptr<File> file_;
  WriteBehind write_behind_;
  const Geometry g_;
  SparseHeader h_;
  bool zero_initialized_ = true;
  std::mutex mu_;
  std::vector<uint32_t> gte_;   // GUARDED_BY(mu_) every grain's entry (sector or 0)
  std::vector<uint8_t> dirty_;  // GUARDED_BY(mu_) per grain table: differs from the file
  uint64_t next_sector_ = 0;    // GUARDED_BY(mu_) where the next grain goes
};

// ---------------------------------------------------------------------------------------
// streamOptimized

class StreamSink final : public BlockSink {
 public:
  // Layout (VMDK spec 5.0, stream-optimized): header (gdOffset = GD_AT_END), descriptor,
  // grains from sector 128 each as {lba, size, zlib data} padded to a sector; after a grain
  // table's grains its GT marker + GT; at the end GD marker + GD, footer marker + footer
  // (the header with the real gdOffset), end-of-stream marker.
  StreamSink(std::unique_ptr<File> file, const Geometry& g)
      : file_(std::move(file)), write_behind_(file_.get()), g_(g) {
    h_.version = 3;
    h_.flags = vmdk::kFlagValidNewlineTest | vmdk::kFlagCompressed | vmdk::kFlagMarkers;
    h_.capacity = g.capacity;
    h_.grain_size = g.grain_size;
    h_.descriptor_offset = 1;
    h_.descriptor_size = kDescriptorSectors;
    h_.num_gtes_per_gt = vmdk::kDefaultGtesPerGt;
    h_.rgd_offset = 0;
    h_.gd_offset = vmdk::kGdAtEnd;
    h_.overhead = RoundUp(1 + kDescriptorSectors, g.grain_size);
    h_.compress_algorithm = vmdk::kCompressionDeflate;
    gd_.assign(g.gt_count, 0);
    table_.assign(vmdk::kDefaultGtesPerGt, 0);
    next_sector_ = h_.overhead;
  }

  Status Create(const std::string& path) {
    const std::string text =
        vmdk::RenderDescriptor(NewCid(), "streamOptimized", g_.capacity, BaseName(path));
    FERRY_TRY(file_->Truncate(0));
    FERRY_TRY(WriteHeaderAndDescriptor(*file_, h_, text));
    return file_->Truncate(h_.overhead * kSector);
  }

  // Restores the state a Checkpoint() blob describes and cuts the file there.
  Status Resume(std::span<const uint8_t> blob) {
    FERRY_ASSIGN_OR_RETURN(SparseHeader h, ReadExistingHeader(*file_, g_));
    const uint64_t n = vmdk::kDefaultGtesPerGt;
    const std::string where = file_->path() + ": resume: checkpoint state";
    if (h.gd_offset != vmdk::kGdAtEnd || blob.size() < kBlobFixed + 16 + n * 4) {
      return Status::Corrupt(where + " does not describe this stream-optimized file");
    }
    const uint8_t* p = blob.data() + kBlobFixed;
    const uint64_t next_sector = LoadLE64(blob.data() + 32);
    table_index_ = LoadLE64(p);
    table_dirty_ = LoadLE32(p + 8) != 0;
    const uint32_t pairs = LoadLE32(p + 12);
    p += 16;
    if (blob.size() != kBlobFixed + 16 + n * 4 + uint64_t{pairs} * 8 || next_sector < h_.overhead ||
        next_sector > kMaxFileSectors ||
        (table_index_ != kNoTable && table_index_ >= g_.gt_count)) {
      return Status::Corrupt(where + " is malformed");
    }
    FERRY_ASSIGN_OR_RETURN(uint64_t size, file_->Size());
    if (next_sector * kSector > size) {
      return Status::Corrupt(file_->path() + ": resume: file is " + std::to_string(size) +
                             " bytes, shorter than the checkpointed end " +
                             Hex(next_sector * kSector));
    }
    for (uint64_t i = 0; i < n; ++i) {
      table_[i] = LoadLE32(p + 4 * i);
      if (table_[i] >= next_sector) return Status::Corrupt(where + ": grain past the end");
    }
    p += n * 4;
    for (uint32_t i = 0; i < pairs; ++i) {
      const uint32_t index = LoadLE32(p + 8 * i);
      const uint32_t sector = LoadLE32(p + 8 * i + 4);
      if (index >= g_.gt_count || sector >= next_sector) {
        return Status::Corrupt(where + ": grain directory entry out of range");
      }
      gd_[index] = sector;
    }
    next_sector_ = next_sector;
    zero_initialized_ = false;
    return file_->Truncate(next_sector * kSector);
  }

  uint64_t size() const override { return g_.capacity * kSector; }
  uint32_t granularity() const override { return static_cast<uint32_t>(g_.grain_bytes()); }
  bool sequential() const override { return true; }
  bool zero_initialized() const override { return zero_initialized_; }

  Status Write(uint64_t offset, std::span<const uint8_t> data) override {
    FERRY_TRY(CheckRange(offset, data.size()));
    const uint64_t gb = g_.grain_bytes();
    const uint64_t count = DivRoundUp(data.size(), gb);
    // Compress the grains in parallel (deflate is the cost of this writer), then lay them
    // out in order.
    std::vector<std::vector<uint8_t>> packed(count);
    FERRY_TRY(CompressGrains(offset / gb, data, &packed));
    for (uint64_t i = 0; i < count; ++i) {
      const uint64_t g = offset / gb + i;
      if (g / vmdk::kDefaultGtesPerGt != table_index_) {
        // Flush what is buffered first: the table may be re-read from the file.
        FERRY_TRY(FlushOut());
        FERRY_TRY(SwitchTable(g / vmdk::kDefaultGtesPerGt));
      }
      uint32_t& entry = table_[g % vmdk::kDefaultGtesPerGt];
      if (packed[i].empty()) {  // an all-zero grain is not stored
        if (entry != 0) table_dirty_ = true;
        entry = 0;
        continue;
      }
      if (out_.empty()) out_start_ = next_sector_;
      entry = static_cast<uint32_t>(next_sector_);
      table_dirty_ = true;
      out_.insert(out_.end(), packed[i].begin(), packed[i].end());
      next_sector_ += packed[i].size() / kSector;
      if (next_sector_ > kMaxFileSectors) {
        return Status::TooLarge(file_->path() + ": stream-optimized file would pass 2 TiB");
      }
    }
    return FlushOut();
  }

  Status WriteZeroes(uint64_t offset, uint64_t length) override {
    FERRY_TRY(CheckRange(offset, length));
    if (zero_initialized_) return Status::Ok();  // nothing was ever stored there
    const uint64_t gb = g_.grain_bytes();
    for (uint64_t g = offset / gb; g < DivRoundUp(offset + length, gb); ++g) {
      const uint64_t t = g / vmdk::kDefaultGtesPerGt;
      if (t != table_index_) {
        if (gd_[t] == 0) {  // a whole table with nothing stored: skip it
          g = (t + 1) * vmdk::kDefaultGtesPerGt - 1;
          continue;
        }
        FERRY_TRY(SwitchTable(t));
      }
      uint32_t& entry = table_[g % vmdk::kDefaultGtesPerGt];
      if (entry != 0) table_dirty_ = true;
      entry = 0;
    }
    return Status::Ok();
  }

  Result<std::vector<uint8_t>> Checkpoint() override {
    FERRY_TRY(file_->Sync());
    std::vector<uint8_t> blob(kBlobFixed + 16, 0);
    StoreLE32(blob.data(), kBlobMagic);
    StoreLE32(blob.data() + 4, kBlobVersion);
    StoreLE32(blob.data() + 8, kBlobKindStream);
    StoreLE64(blob.data() + 16, g_.capacity);
    StoreLE64(blob.data() + 24, g_.grain_size);
    StoreLE64(blob.data() + 32, next_sector_);
    StoreLE64(blob.data() + kBlobFixed, table_index_);
    StoreLE32(blob.data() + kBlobFixed + 8, table_dirty_ ? 1 : 0);
    for (uint32_t v : table_) PutGte(&blob, v);
    uint32_t pairs = 0;
    for (uint64_t i = 0; i < gd_.size(); ++i) {
      if (gd_[i] == 0) continue;
      PutGte(&blob, static_cast<uint32_t>(i));
      PutGte(&blob, gd_[i]);
      ++pairs;
    }
    StoreLE32(blob.data() + kBlobFixed + 12, pairs);
    return blob;
  }

  Status Finalize() override {
    FERRY_TRY(FlushTable());
    std::vector<uint8_t> tail;
    // Grain directory marker + directory.
    const uint64_t gd_sector = next_sector_ + 1;
    AppendMarker(&tail, g_.gd_sectors, vmdk::kMarkerGrainDirectory);
    for (uint32_t v : gd_) PutGte(&tail, v);
    tail.resize(RoundUp(tail.size(), kSector), 0);
    // Footer marker + footer (the header with the real directory) + end-of-stream marker.
    AppendMarker(&tail, 1, vmdk::kMarkerFooter);
    SparseHeader footer = h_;
    footer.gd_offset = gd_sector;
    const size_t at = tail.size();
    tail.resize(at + kSector);
    vmdk::SerializeSparseHeader(
        footer, std::span<uint8_t, vmdk::kHeaderSize>(tail.data() + at, vmdk::kHeaderSize));
    AppendMarker(&tail, 0, vmdk::kMarkerEos);
    FERRY_TRY(file_->WriteAt(next_sector_ * kSector, tail));
    next_sector_ += tail.size() / kSector;
    FERRY_TRY(file_->Truncate(next_sector_ * kSector));
    return file_->Sync();
  }

 private:
  Status CheckRange(uint64_t offset, uint64_t length) const {
    return CheckGrainAligned(file_->path(), g_.grain_bytes(), size(), offset, length);
  }

  static void AppendMarker(std::vector<uint8_t>* out, uint64_t value, uint32_t type) {
    const size_t at = out->size();
    out->resize(at + kSector);
    vmdk::SerializeMarker(value, type, std::span<uint8_t, kSector>(out->data() + at, kSector));
  }

  // Packs grain `g` as {lba, size, zlib data} padded to a sector into `out`.
  Status PackGrain(uint64_t g, std::span<const uint8_t> src, std::vector<uint8_t>* out) const {
    const uint64_t gb = g_.grain_bytes();
    std::vector<uint8_t> whole;
    if (src.size() < gb) {  // the last grain of the disk: compress it whole, zero-padded
      whole.assign(gb, 0);
      std::memcpy(whole.data(), src.data(), src.size());
      src = whole;
    }
    uLongf bound = compressBound(static_cast<uLong>(src.size()));
    out->resize(vmdk::kGrainMarkerHeader + bound);
    uLongf clen = bound;
    if (compress2(out->data() + vmdk::kGrainMarkerHeader, &clen, src.data(),
                  static_cast<uLong>(src.size()), kDeflateLevel) != Z_OK) {
      return Status::Internal(file_->path() + ": zlib compress2 failed for grain " +
                              std::to_string(g));
    }
    StoreLE64(out->data(), g * g_.grain_size);
    StoreLE32(out->data() + 8, static_cast<uint32_t>(clen));
    out->resize(RoundUp(vmdk::kGrainMarkerHeader + clen, kSector), 0);
    return Status::Ok();
  }

  // Packs every non-zero grain of `data` (grain `first` onwards); zero grains stay empty.
  Status CompressGrains(uint64_t first, std::span<const uint8_t> data,
                        std::vector<std::vector<uint8_t>>* packed) const {
    const uint64_t gb = g_.grain_bytes();
    const size_t count = packed->size();
    std::atomic<size_t> next{0};
    std::mutex mu;
    Status status;
    auto worker = [&] {
      for (size_t i = next++; i < count; i = next++) {
        std::span<const uint8_t> src =
            data.subspan(i * gb, std::min<uint64_t>(gb, data.size() - i * gb));
        if (IsAllZero(src.data(), src.size())) continue;
        Status s = PackGrain(first + i, src, &(*packed)[i]);
        if (!s.ok()) {
          std::lock_guard<std::mutex> lock(mu);
          status = s;
        }
      }
    };
    const size_t threads = std::min<size_t>(
        {count, kMaxCompressThreads, std::max(1u, std::thread::hardware_concurrency())});
    std::vector<std::thread> pool;
    for (size_t t = 1; t < threads; ++t) pool.emplace_back(worker);
    worker();
    for (auto& t : pool) t.join();
    return status;
  }

  // Writes the buffered grains.
  Status FlushOut() {
    if (out_.empty()) return Status::Ok();
    Status s = file_->WriteAt(out_start_ * kSector, out_);
    if (s.ok()) write_behind_.Wrote(out_start_ * kSector, out_.size());
    out_.clear();
    return s;
  }

  // Appends the current grain table (GT marker + table) if it changed, and records it in
  // the directory; an empty table is left out (directory entry 0).
  Status FlushTable() {
    if (table_index_ == kNoTable || !table_dirty_) return Status::Ok();
    if (std::all_of(table_.begin(), table_.end(), [](uint32_t v) { return v == 0; })) {
      gd_[table_index_] = 0;
    } else {
      std::vector<uint8_t> buf;
      AppendMarker(&buf, g_.gt_sectors, vmdk::kMarkerGrainTable);
      for (uint32_t v : table_) PutGte(&buf, v);
      buf.resize(RoundUp(buf.size(), kSector), 0);
      FERRY_TRY(file_->WriteAt(next_sector_ * kSector, buf));
      gd_[table_index_] = static_cast<uint32_t>(next_sector_ + 1);
      next_sector_ += buf.size() / kSector;
    }
    table_dirty_ = false;
    return Status::Ok();
  }

  // Makes grain table `t` current: flushes the old one, loads `t` if it was written before
  // (only after a Resume or an out-of-order write).
  Status SwitchTable(uint64_t t) {
    FERRY_TRY(FlushTable());
    std::fill(table_.begin(), table_.end(), 0);
    if (gd_[t] != 0) {
      std::vector<uint8_t> raw(vmdk::kDefaultGtesPerGt * 4);
      FERRY_TRY(file_->ReadAt(uint64_t{gd_[t]} * kSector, raw));
      for (size_t i = 0; i < table_.size(); ++i) table_[i] = LoadLE32(raw.data() + 4 * i);
    }
    table_index_ = t;
    table_dirty_ = false;
    return Status::Ok();
  }

  std::unique_ptr<File> file_;
  WriteBehind write_behind_;
  const Geometry g_;
  SparseHeader h_;
  bool zero_initialized_ = true;
  std::vector<uint32_t> gd_;     // sector of each written grain table, 0 if none
  std::vector<uint32_t> table_;  // the current grain table
  uint64_t table_index_ = kNoTable;
  bool table_dirty_ = false;
  uint64_t next_sector_ = 0;
  std::vector<uint8_t> out_;  // grains compressed but not yet written
  uint64_t out_start_ = 0;    // the sector out_ goes to
};

enum class Kind { kSparse, kStream };

Result<Kind> KindFor(const std::string& path, const std::string& subformat) {
  if (subformat.empty() || subformat == "monolithicSparse") return Kind::kSparse;
  if (subformat == "streamOptimized") return Kind::kStream;
  return Status::Unsupported(path + ": writing VMDK subformat '" + subformat +
                             "' (Ferry writes monolithicSparse and streamOptimized)");
}

}  // namespace

Result<std::unique_ptr<BlockSink>> CreateVmdk(const std::string& path,
                                              const CreateOptions& options) {
  FERRY_ASSIGN_OR_RETURN(Kind kind, KindFor(path, options.subformat));
  FERRY_ASSIGN_OR_RETURN(Geometry g, MakeGeometry(path, options));
  FERRY_ASSIGN_OR_RETURN(auto file, options.env->Open(path, OpenMode::kCreateTruncate));
  // The descriptor's extent line names the file as it will be called when complete.
  const std::string& name = options.final_path.empty() ? path : options.final_path;
  if (kind == Kind::kSparse) {
    auto sink = std::make_unique<SparseSink>(std::move(file), g);
    FERRY_TRY(sink->Create(name));
    return std::unique_ptr<BlockSink>(std::move(sink));
  }
  auto sink = std::make_unique<StreamSink>(std::move(file), g);
  FERRY_TRY(sink->Create(name));
  return std::unique_ptr<BlockSink>(std::move(sink));
}

Result<std::unique_ptr<BlockSink>> ResumeVmdk(const std::string& path, const CreateOptions& options,
                                              std::span<const uint8_t> state) {
  FERRY_ASSIGN_OR_RETURN(Geometry g, MakeGeometry(path, options));
  if (state.size() < kBlobFixed || LoadLE32(state.data()) != kBlobMagic ||
      LoadLE32(state.data() + 4) != kBlobVersion) {
    return Status::Corrupt(path + ": resume: not a VMDK checkpoint state (or a newer version)");
  }
  const uint32_t kind = LoadLE32(state.data() + 8);
  if (LoadLE64(state.data() + 16) != g.capacity || LoadLE64(state.data() + 24) != g.grain_size) {
    return Status::Mismatch(path + ": resume: checkpoint state is for another size or grain");
  }
  FERRY_ASSIGN_OR_RETURN(Kind wanted, KindFor(path, options.subformat));
  const bool stream = kind == kBlobKindStream;
  if (kind != kBlobKindSparse && !stream) {
    return Status::Corrupt(path + ": resume: unknown writer kind " + std::to_string(kind));
  }
  if (!options.subformat.empty() && (wanted == Kind::kStream) != stream) {
    return Status::Mismatch(path + ": resume: checkpoint state is for another subformat");
  }
  FERRY_ASSIGN_OR_RETURN(auto file, options.env->Open(path, OpenMode::kReadWrite));
  if (stream) {
    auto sink = std::make_unique<StreamSink>(std::move(file), g);
    FERRY_TRY(sink->Resume(state));
    return std::unique_ptr<BlockSink>(std::move(sink));
  }
  if (state.size() != kBlobFixed) return Status::Corrupt(path + ": resume: malformed state");
  auto sink = std::make_unique<SparseSink>(std::move(file), g);
  FERRY_TRY(sink->Resume(LoadLE64(state.data() + 32)));
  return std::unique_ptr<BlockSink>(std::move(sink));
}

}  // namespace ferry
