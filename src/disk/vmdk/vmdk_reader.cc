// The VMDK reader: hosted sparse extents (monolithicSparse, twoGbMaxExtentSparse extents),
// stream-optimized compressed extents (grain directory in the header or in the footer), and
// descriptor files listing FLAT/VMFS/ZERO/SPARSE extents; delta disks read unallocated grains
// from their parent.
//
// Ownership: a VmdkSource owns its extent files and its parent source.
// Thread-safety: Extents() and Read() may run concurrently. Each sparse extent caches grain
// tables under a mutex (loaded outside it) and keeps a few inflated grains for small reads.
#include <zlib.h>

#include <algorithm>
#include <deque>
#include <mutex>
#include <unordered_map>

#include "common/bytes.h"
#include "disk/vmdk/vmdk.h"
#include "disk/vmdk/vmdk_format.h"

namespace ferry {
namespace {

using vmdk::Descriptor;
using vmdk::DescriptorExtent;
using vmdk::ExtentType;
using vmdk::kSector;
using vmdk::SparseHeader;

constexpr size_t kMaxCachedGrainTables = 4096;  // 4096 x 2 KiB = 8 MiB with 512-entry tables
constexpr size_t kMaxCachedGrains = 8;
constexpr uint32_t kMaxHeaderVersion = 3;

std::string Hex8(uint32_t v) {
  char buf[9];
  std::snprintf(buf, sizeof buf, "%08x", v);
  return buf;
}

void AddExtent(std::vector<Extent>* out, uint64_t offset, uint64_t length, ExtentKind kind) {
  if (length == 0) return;
  if (!out->empty()) {
    Extent& last = out->back();
    if (last.kind == kind && last.offset + last.length == offset) {
      last.length += length;
      return;
    }
  }
  out->push_back({offset, length, kind});
}

// Inflates one zlib (RFC 1950) stream into `out`; `*produced` gets the inflated length.
// Refuses streams that inflate past out.size() (a grain) or do not end within `in`.
Status InflateGrain(std::span<const uint8_t> in, std::span<uint8_t> out, size_t* produced,
                    const std::string& what) {
  z_stream zs{};
  if (inflateInit(&zs) != Z_OK) return Status::Internal(what + ": inflateInit failed");
  zs.next_in = const_cast<Bytef*>(in.data());
  zs.avail_in = static_cast<uInt>(in.size());
  zs.next_out = out.data();
  zs.avail_out = static_cast<uInt>(out.size());
  int rc = inflate(&zs, Z_FINISH);
  *produced = out.size() - zs.avail_out;
  inflateEnd(&zs);
  if (rc == Z_STREAM_END) return Status::Ok();
  if (rc == Z_BUF_ERROR && zs.avail_out == 0) {
    return Status::Corrupt(what + ": inflates to more than the grain size (" +
                           std::to_string(out.size()) + " bytes)");
  }
  if (rc == Z_BUF_ERROR) return Status::Corrupt(what + ": compressed data ends early");
  return Status::Corrupt(what + ": invalid compressed data (zlib error " + std::to_string(rc) +
                         ")");
}

// One hosted sparse extent ("KDMV"), plain or stream-optimized.
class SparseExtent {
 public:
  static Result<std::unique_ptr<SparseExtent>> Open(std::shared_ptr<File> file,
                                                    std::vector<std::string>* problems);

  const SparseHeader& header() const { return h_; }
  uint64_t grain_bytes() const { return h_.grain_size * kSector; }
  uint64_t capacity_bytes() const { return h_.capacity * kSector; }
  bool compressed() const { return (h_.flags & vmdk::kFlagCompressed) != 0; }
  const File& file() const { return *file_; }
  // The embedded descriptor text ("" if none).
  const std::string& descriptor_text() const { return descriptor_; }

  // Grain table `index` (nullptr if the directory entry is 0: all grains unallocated).
  Result<std::shared_ptr<const std::vector<uint32_t>>> GrainTable(uint64_t index);
  // Reads bytes [in_off, in_off+out.size()) of compressed grain `grain` stored at sector `gte`.
  Status ReadCompressed(uint64_t grain, uint32_t gte, uint64_t in_off, std::span<uint8_t> out);
  // Number of grains that hold data (for ImageInfo).
  uint64_t CountDataGrains();

 private:
  SparseExtent(std::shared_ptr<File> file, uint64_t file_size)
      : file_(std::move(file)), file_size_(file_size) {}
  Status Init(std::vector<std::string>* problems);
  Result<std::shared_ptr<const std::vector<uint8_t>>> InflatedGrain(uint64_t grain, uint32_t gte);
  uint64_t grains() const { return DivRoundUp(h_.capacity, h_.grain_size); }
  std::string Where() const { return file_->path(); }

  std::shared_ptr<File> file_;
  uint64_t file_size_;
  SparseHeader h_;
  std::string descriptor_;
  std::vector<uint32_t> gd_;  // sectors of grain tables

  std::mutex mu_;
  std::unordered_map<uint64_t, std::shared_ptr<const std::vector<uint32_t>>>
      tables_;  // GUARDED_BY(mu_)
  std::deque<std::pair<uint64_t, std::shared_ptr<const std::vector<uint8_t>>>>
      grains_;  // GUARDED_BY(mu_)
};

Result<std::unique_ptr<SparseExtent>> SparseExtent::Open(std::shared_ptr<File> file,
                                                         std::vector<std::string>* problems) {
  FERRY_ASSIGN_OR_RETURN(uint64_t size, file->Size());
  std::unique_ptr<SparseExtent> e(new SparseExtent(std::move(file), size));
  FERRY_TRY(e->Init(problems));
  return e;
}

Status SparseExtent::Init(std::vector<std::string>* problems) {
  const std::string where = Where();
  if (file_size_ < vmdk::kHeaderSize) {
    return Status::Corrupt(where + ": sparse extent header: file is only " +
                           std::to_string(file_size_) + " bytes");
  }
  std::vector<uint8_t> buf(vmdk::kHeaderSize);
  FERRY_TRY(file_->ReadAt(0, buf));
  if (!vmdk::ParseSparseHeader(buf, &h_)) {
    return Status::Corrupt(where + ": sparse extent header at 0x0: no KDMV magic");
  }
  if (h_.version == 0 || h_.version > kMaxHeaderVersion) {
    return Status::Unsupported(where + ": sparse extent header version " +
                               std::to_string(h_.version));
  }
  // Embedded descriptor (read from the header, not the footer: the footer copy may omit it).
  if (h_.descriptor_offset != 0 && h_.descriptor_size != 0) {
    if (h_.descriptor_size > vmdk::kMaxDescriptorBytes / kSector) {
      return Status::TooLarge(where + ": embedded descriptor size " +
                              std::to_string(h_.descriptor_size) + " sectors is over the " +
                              std::to_string(vmdk::kMaxDescriptorBytes) + "-byte cap");
    }
    uint64_t off = 0, end = 0;
    if (!CheckedMul(h_.descriptor_offset, kSector, &off) ||
        !CheckedAdd(off, h_.descriptor_size * kSector, &end) || end > file_size_) {
      return Status::Corrupt(where + ": embedded descriptor at sector " +
                             std::to_string(h_.descriptor_offset) +
                             " lies past the end of the file (" + Hex(file_size_) + ")");
    }
    std::vector<uint8_t> text(h_.descriptor_size * kSector);
    FERRY_TRY(file_->ReadAt(off, text));
    descriptor_.assign(text.begin(), text.end());
    size_t nul = descriptor_.find('\0');
    if (nul != std::string::npos) descriptor_.resize(nul);
  }
  // Stream-optimized: the footer near the end holds the real header (VMDK spec 5.0,
  // "Stream-Optimized Compressed Sparse Extents": footer marker, footer, end-of-stream).
  if (h_.gd_offset == vmdk::kGdAtEnd) {
    if (file_size_ < 4 * kSector) {
      return Status::Corrupt(where + ": footer: file too small to hold the stream footer");
    }
    std::vector<uint8_t> tail(3 * kSector);
    const uint64_t tail_off = RoundDown(file_size_, kSector) - 3 * kSector;
    FERRY_TRY(file_->ReadAt(tail_off, tail));
    const uint8_t* marker = tail.data();
    if (LoadLE32(marker + 8) != 0 || LoadLE32(marker + 12) != vmdk::kMarkerFooter) {
      return Status::Corrupt(where + ": footer marker at " + Hex(tail_off) +
                             " is missing (header says the grain directory is at the end)");
    }
    SparseHeader footer;
    if (!vmdk::ParseSparseHeader(std::span<const uint8_t>(tail).subspan(kSector, kSector),
                                 &footer)) {
      return Status::Corrupt(where + ": footer at " + Hex(tail_off + kSector) + ": no KDMV magic");
    }
    const uint8_t* eos = tail.data() + 2 * kSector;
    if (LoadLE64(eos) != 0 || LoadLE32(eos + 8) != 0 || LoadLE32(eos + 12) != vmdk::kMarkerEos) {
      problems->push_back(where + ": end-of-stream marker missing after the footer");
    }
    if (footer.gd_offset == vmdk::kGdAtEnd) {
      return Status::Corrupt(where + ": footer at " + Hex(tail_off + kSector) +
                             " does not locate the grain directory");
    }
    h_ = footer;
  }
  if (!IsPowerOfTwo(h_.grain_size) || h_.grain_size < vmdk::kMinGrainSectors) {
    return Status::Corrupt(
        where + ": sparse extent header: grain size " + std::to_string(h_.grain_size) +
        " sectors is not a power of two >= " + std::to_string(vmdk::kMinGrainSectors));
  }
  if (h_.grain_size > vmdk::kMaxGrainSectors) {
    return Status::Unsupported(where + ": grain size of " + std::to_string(h_.grain_size) +
                               " sectors (Ferry reads up to " +
                               std::to_string(vmdk::kMaxGrainSectors) + ")");
  }
  if (h_.num_gtes_per_gt == 0 || h_.num_gtes_per_gt > vmdk::kMaxGtesPerGt) {
    return Status::Corrupt(where + ": sparse extent header: " + std::to_string(h_.num_gtes_per_gt) +
                           " entries per grain table");
  }
  if (h_.capacity > vmdk::kMaxVirtualBytes / kSector) {
    return Status::TooLarge(where + ": capacity of " + std::to_string(h_.capacity) +
                            " sectors is over the cap");
  }
  if (compressed() && h_.compress_algorithm != vmdk::kCompressionDeflate) {
    return Status::Unsupported(where + ": compression algorithm " +
                               std::to_string(h_.compress_algorithm));
  }
  // The grain directory.
  const uint64_t gd_entries = DivRoundUp(grains(), h_.num_gtes_per_gt);
  uint64_t gd_off = 0, gd_end = 0;
  if (!CheckedMul(h_.gd_offset, kSector, &gd_off) || !CheckedAdd(gd_off, gd_entries * 4, &gd_end) ||
      gd_end > file_size_ || gd_off == 0) {
    return Status::Corrupt(where + ": grain directory at sector " + std::to_string(h_.gd_offset) +
                           " (" + std::to_string(gd_entries) + " entries) lies outside the file (" +
                           Hex(file_size_) + " bytes)");
  }
  std::vector<uint8_t> gd_bytes(gd_entries * 4);
  FERRY_TRY(file_->ReadAt(gd_off, gd_bytes));
  gd_.resize(gd_entries);
  for (uint64_t i = 0; i < gd_entries; ++i) gd_[i] = LoadLE32(gd_bytes.data() + 4 * i);
  return Status::Ok();
}

Result<std::shared_ptr<const std::vector<uint32_t>>> SparseExtent::GrainTable(uint64_t index) {
  if (index >= gd_.size() || gd_[index] == 0) {
    return std::shared_ptr<const std::vector<uint32_t>>();
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = tables_.find(index);
    if (it != tables_.end()) return it->second;
  }
  const std::string where = Where();
  const uint64_t n = h_.num_gtes_per_gt;
  const uint64_t gt_off = uint64_t{gd_[index]} * kSector;
  if (gt_off + n * 4 > file_size_) {
    return Status::Corrupt(where + ": grain table at " + Hex(gt_off) + " (grain directory entry " +
                           std::to_string(index) + ") lies past the end of the file (" +
                           Hex(file_size_) + ")");
  }
  std::vector<uint8_t> raw(n * 4);
  FERRY_TRY(file_->ReadAt(gt_off, raw));
  auto table = std::make_shared<std::vector<uint32_t>>(n);
  for (uint64_t i = 0; i < n; ++i) {
    const uint64_t grain = index * n + i;
    uint32_t gte = LoadLE32(raw.data() + 4 * i);
    if (grain >= grains()) gte = vmdk::kGteUnallocated;  // padding past the capacity
    if (gte > vmdk::kGteZeroed) {
      // The grain's bytes (or its marker header) must lie inside the file.
      const uint64_t need = compressed()
                                ? vmdk::kGrainMarkerHeader
                                : std::min(grain_bytes(), capacity_bytes() - grain * grain_bytes());
      const uint64_t off = uint64_t{gte} * kSector;
      if (off + need > file_size_ || off < vmdk::kHeaderSize) {
        return Status::Corrupt(where + ": grain table at " + Hex(gt_off) + " entry " +
                               std::to_string(i) + " (grain " + std::to_string(grain) +
                               ") points to " + Hex(off) + ", outside the file (" +
                               Hex(file_size_) + " bytes)");
      }
    }
    (*table)[i] = gte;
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (tables_.size() >= kMaxCachedGrainTables) tables_.clear();
  tables_.emplace(index, table);
  return std::shared_ptr<const std::vector<uint32_t>>(std::move(table));
}

Result<std::shared_ptr<const std::vector<uint8_t>>> SparseExtent::InflatedGrain(uint64_t grain,
                                                                                uint32_t gte) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [g, data] : grains_) {
      if (g == grain) return data;
    }
  }
  const std::string where = Where();
  const uint64_t off = uint64_t{gte} * kSector;
  const std::string what =
      where + ": compressed grain " + std::to_string(grain) + " at " + Hex(off);
  uint64_t data_off = off;
  uint64_t data_len = 0;
  // Deflate never grows data by more than ~0.1% + a few bytes; allow a generous margin.
  const uint64_t max_compressed = grain_bytes() + grain_bytes() / 8 + 1024;
  if ((h_.flags & vmdk::kFlagMarkers) != 0) {
    uint8_t head[vmdk::kGrainMarkerHeader];
    FERRY_TRY(file_->ReadAt(off, head));
    const uint64_t lba = LoadLE64(head);
    data_len = LoadLE32(head + 8);
    if (lba != grain * h_.grain_size) {
      return Status::Corrupt(what + ": grain marker names sector " + std::to_string(lba) +
                             ", expected " + std::to_string(grain * h_.grain_size));
    }
    if (data_len == 0 || data_len > max_compressed) {
      return Status::Corrupt(what + ": grain marker size " + std::to_string(data_len) +
                             " is not sane");
    }
    data_off = off + vmdk::kGrainMarkerHeader;
    if (data_off + data_len > file_size_) {
      return Status::Corrupt(what + ": compressed data (" + std::to_string(data_len) +
                             " bytes) runs past the end of the file (" + Hex(file_size_) + ")");
    }
  } else {
    data_len = std::min(max_compressed, file_size_ - off);
  }
  std::vector<uint8_t> in(data_len);
  FERRY_TRY(file_->ReadAt(data_off, in));
  auto out = std::make_shared<std::vector<uint8_t>>(grain_bytes(), 0);
  size_t produced = 0;
  FERRY_TRY(InflateGrain(in, *out, &produced, what));
  std::fill(out->begin() + static_cast<std::ptrdiff_t>(produced), out->end(), 0);
  std::lock_guard<std::mutex> lock(mu_);
  if (grains_.size() >= kMaxCachedGrains) grains_.pop_front();
  grains_.emplace_back(grain, out);
  return std::shared_ptr<const std::vector<uint8_t>>(std::move(out));
}

Status SparseExtent::ReadCompressed(uint64_t grain, uint32_t gte, uint64_t in_off,
                                    std::span<uint8_t> out) {
  FERRY_ASSIGN_OR_RETURN(auto data, InflatedGrain(grain, gte));
  std::memcpy(out.data(), data->data() + in_off, out.size());
  return Status::Ok();
}

uint64_t SparseExtent::CountDataGrains() {
  uint64_t count = 0;
  for (uint64_t i = 0; i < gd_.size(); ++i) {
    auto table = GrainTable(i);
    if (!table.ok() || !*table) continue;
    for (uint32_t gte : **table) count += gte > vmdk::kGteZeroed ? 1 : 0;
  }
  return count;
}

// One extent of the virtual disk, in descriptor order.
struct Part {
  uint64_t start = 0;                   // virtual byte offset
  uint64_t length = 0;                  // bytes
  ExtentType type = ExtentType::kZero;  // kSparse, kFlat (also VMFS) or kZero
  std::shared_ptr<File> file;           // flat
  uint64_t file_offset = 0;             // flat: bytes
  std::unique_ptr<SparseExtent> sparse;
};

class VmdkSource final : public BlockSource {
 public:
  VmdkSource(std::vector<Part> parts, std::unique_ptr<BlockSource> parent, ImageInfo info)
      : parts_(std::move(parts)), parent_(std::move(parent)), base_info_(std::move(info)) {
    size_ = parts_.empty() ? 0 : parts_.back().start + parts_.back().length;
  }

  uint64_t size() const override { return size_; }

  ImageInfo info() const override {
    ImageInfo info = base_info_;
    info.virtual_size = size_;
    for (const Part& p : parts_) {
      if (p.type == ExtentType::kSparse) {
        info.allocated_bytes += p.sparse->CountDataGrains() * p.sparse->grain_bytes();
      } else if (p.type == ExtentType::kFlat) {
        info.allocated_bytes += p.length;
      }
    }
    return info;
  }

  Status Extents(uint64_t offset, uint64_t length, std::vector<Extent>* out) override {
    return Walk(
        offset, length,
        [&](uint64_t pos, uint64_t len, Piece piece) -> Status {
          switch (piece.kind) {
            case PieceKind::kUnallocated: return ParentExtents(pos, len, out);
            case PieceKind::kZero: AddExtent(out, pos, len, ExtentKind::kZero); return Status::Ok();
            case PieceKind::kFileHole:
              AddExtent(out, pos, len, parent_ ? ExtentKind::kZero : ExtentKind::kHole);
              return Status::Ok();
            default: AddExtent(out, pos, len, ExtentKind::kData); return Status::Ok();
          }
        },
        /*want_file_holes=*/true);
  }

  Status Read(uint64_t offset, std::span<uint8_t> buf) override {
    // Uncompressed pieces that are contiguous in the same file are read with one pread.
    const File* run_file = nullptr;
    uint64_t run_file_off = 0, run_pos = 0, run_len = 0;
    auto flush = [&]() -> Status {
      if (run_len == 0) return Status::Ok();
      Status s = run_file->ReadAt(run_file_off, buf.subspan(run_pos - offset, run_len));
      run_len = 0;
      return s;
    };
    FERRY_TRY(Walk(
        offset, buf.size(),
        [&](uint64_t pos, uint64_t len, Piece piece) -> Status {
          std::span<uint8_t> dst = buf.subspan(pos - offset, len);
          if (piece.kind == PieceKind::kFileData) {
            if (run_len != 0 && run_file == piece.file &&
                run_file_off + run_len == piece.file_offset && run_pos + run_len == pos) {
              run_len += len;
              return Status::Ok();
            }
            FERRY_TRY(flush());
            run_file = piece.file;
            run_file_off = piece.file_offset;
            run_pos = pos;
            run_len = len;
            return Status::Ok();
          }
          switch (piece.kind) {
            case PieceKind::kCompressed:
              return piece.sparse->ReadCompressed(piece.grain, piece.gte, piece.in_grain, dst);
            case PieceKind::kUnallocated: return ParentRead(pos, dst);
            default: std::fill(dst.begin(), dst.end(), 0); return Status::Ok();
          }
        },
        /*want_file_holes=*/false));
    return flush();
  }

 private:
  enum class PieceKind { kUnallocated, kZero, kFileData, kFileHole, kCompressed };
  struct Piece {
    PieceKind kind;
    const File* file = nullptr;      // kFileData
    uint64_t file_offset = 0;        // kFileData
    SparseExtent* sparse = nullptr;  // kCompressed
    uint64_t grain = 0;
    uint32_t gte = 0;
    uint64_t in_grain = 0;
  };

  // Calls fn(pos, len, piece) for consecutive pieces covering [offset, offset+length).
  template <typename Fn>
  Status Walk(uint64_t offset, uint64_t length, Fn&& fn, bool want_file_holes) {
    const uint64_t end = offset + length;
    auto it = std::upper_bound(parts_.begin(), parts_.end(), offset,
                               [](uint64_t v, const Part& p) { return v < p.start; });
    if (it != parts_.begin()) --it;
    for (uint64_t pos = offset; pos < end; ++it) {
      if (it == parts_.end()) {
        return Status::Internal("vmdk: range " + Hex(offset) + "+" + Hex(length) +
                                " past the virtual size " + Hex(size_));
      }
      const Part& p = *it;
      const uint64_t part_end = std::min(end, p.start + p.length);
      if (p.type == ExtentType::kZero) {
        FERRY_TRY(fn(pos, part_end - pos, Piece{PieceKind::kZero}));
      } else if (p.type == ExtentType::kFlat) {
        const uint64_t foff = p.file_offset + (pos - p.start);
        if (want_file_holes) {
          std::vector<std::pair<uint64_t, uint64_t>> ranges;
          FERRY_TRY(p.file->DataRanges(foff, part_end - pos, &ranges));
          uint64_t at = pos;
          for (auto [a, b] : ranges) {
            a = std::max(a, foff);
            if (b <= a) continue;
            const uint64_t va = a - foff + pos;
            const uint64_t vb = std::min(part_end, b - foff + pos);
            if (va >= vb) continue;
            if (va > at) FERRY_TRY(fn(at, va - at, Piece{PieceKind::kFileHole}));
            FERRY_TRY(
                fn(va, vb - va, Piece{PieceKind::kFileData, p.file.get(), foff + (va - pos)}));
            at = vb;
          }
          if (at < part_end) FERRY_TRY(fn(at, part_end - at, Piece{PieceKind::kFileHole}));
        } else {
          FERRY_TRY(fn(pos, part_end - pos, Piece{PieceKind::kFileData, p.file.get(), foff}));
        }
      } else {
        SparseExtent& se = *p.sparse;
        const uint64_t gb = se.grain_bytes();
        const uint64_t per_table = se.header().num_gtes_per_gt;
        std::shared_ptr<const std::vector<uint32_t>> table;
        uint64_t table_index = ~uint64_t{0};
        uint64_t at = pos;
        while (at < part_end) {
          const uint64_t rel = at - p.start;
          const uint64_t grain = rel / gb;
          const uint64_t in_grain = rel % gb;
          uint64_t len = std::min(part_end - at, gb - in_grain);
          uint32_t gte = 0;
          if (rel < se.capacity_bytes()) {
            if (grain / per_table != table_index) {
              table_index = grain / per_table;
              FERRY_ASSIGN_OR_RETURN(table, se.GrainTable(table_index));
            }
            if (table) {
              gte = (*table)[grain % per_table];
            } else {
              // No grain table: the whole table's span is unallocated.
              const uint64_t span_end = p.start + (table_index + 1) * per_table * gb;
              len = std::min(part_end, span_end) - at;
            }
          }
          Piece piece{PieceKind::kUnallocated};
          if (gte == vmdk::kGteZeroed) {
            piece.kind = PieceKind::kZero;
          } else if (gte > vmdk::kGteZeroed && se.compressed()) {
            piece = Piece{PieceKind::kCompressed, nullptr, 0, &se, grain, gte, in_grain};
          } else if (gte > vmdk::kGteZeroed) {
            piece = Piece{PieceKind::kFileData, &se.file(), uint64_t{gte} * kSector + in_grain};
          }
          FERRY_TRY(fn(at, len, piece));
          at += len;
        }
      }
      pos = part_end;
    }
    return Status::Ok();
  }

  Status ParentExtents(uint64_t pos, uint64_t len, std::vector<Extent>* out) {
    uint64_t covered = 0;
    if (parent_ && pos < parent_->size()) {
      covered = std::min(len, parent_->size() - pos);
      std::vector<Extent> sub;
      FERRY_TRY(parent_->Extents(pos, covered, &sub));
      for (const Extent& e : sub) AddExtent(out, e.offset, e.length, e.kind);
    }
    AddExtent(out, pos + covered, len - covered, ExtentKind::kHole);
    return Status::Ok();
  }

  Status ParentRead(uint64_t pos, std::span<uint8_t> dst) {
    uint64_t covered = 0;
    if (parent_ && pos < parent_->size()) {
      covered = std::min<uint64_t>(dst.size(), parent_->size() - pos);
      FERRY_TRY(parent_->Read(pos, dst.first(covered)));
    }
    std::fill(dst.begin() + static_cast<std::ptrdiff_t>(covered), dst.end(), 0);
    return Status::Ok();
  }

  std::vector<Part> parts_;
  std::unique_ptr<BlockSource> parent_;
  ImageInfo base_info_;
  uint64_t size_ = 0;
};

// Opens a delta disk's parent and checks its CID.
Status OpenParent(const OpenContext& ctx, const std::string& path, const Descriptor& d,
                  std::unique_ptr<BlockSource>* parent, ImageInfo* info) {
  if (!d.has_parent()) return Status::Ok();
  if (d.parent_hint.empty()) {
    return Status::Corrupt(path + ": descriptor has parentCID " + Hex8(d.parent_cid) +
                           " but no parentFileNameHint");
  }
  FERRY_ASSIGN_OR_RETURN(std::string parent_path,
                         ctx.ResolveReference(path, d.parent_hint, "parent"));
  FERRY_ASSIGN_OR_RETURN(*parent, ctx.OpenBacking(parent_path, std::nullopt));
  ImageInfo pinfo = (*parent)->info();
  info->backing_chain.push_back(parent_path);
  for (const auto& b : pinfo.backing_chain) info->backing_chain.push_back(b);
  for (const auto& [k, v] : pinfo.details) {
    if (k == "CID" && v != Hex8(d.parent_cid)) {
      info->problems.push_back(path + ": parentCID " + Hex8(d.parent_cid) +
                               " does not match the parent's CID " + v);
    }
  }
  return Status::Ok();
}

void AddDescriptorDetails(const Descriptor& d, ImageInfo* info) {
  info->details.emplace_back("CID", Hex8(d.cid));
  info->details.emplace_back("parentCID", Hex8(d.parent_cid));
  if (!d.parent_hint.empty()) info->details.emplace_back("parentFileNameHint", d.parent_hint);
  for (const char* key : {"ddb.adapterType", "ddb.virtualHWVersion"}) {
    std::string v = d.Ddb(key);
    if (!v.empty()) info->details.emplace_back(std::string(key).substr(4), v);
  }
}

void AddSparseDetails(const SparseExtent& se, ImageInfo* info) {
  info->cluster_size = static_cast<uint32_t>(se.grain_bytes());
  info->details.emplace_back("version", std::to_string(se.header().version));
  info->details.emplace_back("compression", se.compressed() ? "deflate" : "none");
}

Result<std::unique_ptr<BlockSource>> OpenSparseFile(const OpenContext& ctx,
                                                    std::unique_ptr<File> file, uint64_t size) {
  const std::string path = file->path();
  ImageInfo info;
  info.format = "vmdk";
  info.file_size = size;
  info.files = {path};
  std::shared_ptr<File> shared(std::move(file));
  FERRY_ASSIGN_OR_RETURN(auto se, SparseExtent::Open(shared, &info.problems));
  Descriptor d;
  if (!se->descriptor_text().empty()) {
    FERRY_ASSIGN_OR_RETURN(d, vmdk::ParseDescriptor(se->descriptor_text(), path + " (embedded)"));
    uint64_t listed = 0;
    for (const auto& e : d.extents) listed += e.sectors;
    if (d.extents.size() != 1 || listed != se->header().capacity) {
      info.problems.push_back(path + ": embedded descriptor lists " +
                              std::to_string(d.extents.size()) + " extent(s) of " +
                              std::to_string(listed) + " sectors; the header says " +
                              std::to_string(se->header().capacity) + " (header used)");
    }
  }
  info.subformat = !d.create_type.empty() ? d.create_type
                   : se->compressed()     ? "streamOptimized"
                                          : "monolithicSparse";
  AddDescriptorDetails(d, &info);
  AddSparseDetails(*se, &info);
  std::unique_ptr<BlockSource> parent;
  FERRY_TRY(OpenParent(ctx, path, d, &parent, &info));
  std::vector<Part> parts(1);
  parts[0].length = se->capacity_bytes();
  parts[0].type = ExtentType::kSparse;
  parts[0].sparse = std::move(se);
  return std::unique_ptr<BlockSource>(
      std::make_unique<VmdkSource>(std::move(parts), std::move(parent), std::move(info)));
}

Result<std::unique_ptr<BlockSource>> OpenDescriptorFile(const OpenContext& ctx,
                                                        std::unique_ptr<File> file, uint64_t size) {
  const std::string path = file->path();
  if (size > vmdk::kMaxDescriptorBytes) {
    return Status::TooLarge(path + ": descriptor file is " + std::to_string(size) +
                            " bytes, over the " + std::to_string(vmdk::kMaxDescriptorBytes) +
                            "-byte cap");
  }
  std::vector<uint8_t> bytes(size);
  FERRY_TRY(file->ReadAt(0, bytes));
  FERRY_ASSIGN_OR_RETURN(
      Descriptor d,
      vmdk::ParseDescriptor(
          std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()), path));
  if (d.extents.empty()) return Status::Corrupt(path + ": descriptor lists no extents");
  ImageInfo info;
  info.format = "vmdk";
  info.subformat = d.create_type;
  info.file_size = size;
  info.files = {path};
  AddDescriptorDetails(d, &info);
  std::vector<Part> parts;
  uint64_t start = 0;
  bool sparse_details = false;
  for (size_t i = 0; i < d.extents.size(); ++i) {
    const DescriptorExtent& e = d.extents[i];
    const std::string what = path + ": extent " + std::to_string(i) + " (" + e.type_name + ")";
    Part part;
    part.start = start;
    part.length = e.sectors * kSector;
    if (start + part.length > vmdk::kMaxVirtualBytes) {
      return Status::TooLarge(path + ": extents add up to more than the virtual size cap");
    }
    switch (e.type) {
      case ExtentType::kZero: part.type = ExtentType::kZero; break;
      case ExtentType::kFlat:
      case ExtentType::kVmfs:
      case ExtentType::kSparse: {
        FERRY_ASSIGN_OR_RETURN(std::string ext_path, ctx.ResolveReference(path, e.file, "extent"));
        FERRY_ASSIGN_OR_RETURN(std::unique_ptr<File> ef,
                               ctx.env()->Open(ext_path, OpenMode::kRead));
        FERRY_ASSIGN_OR_RETURN(uint64_t ef_size, ef->Size());
        info.files.push_back(ext_path);
        info.file_size += ef_size;
        if (e.type == ExtentType::kSparse) {
          part.type = ExtentType::kSparse;
          FERRY_ASSIGN_OR_RETURN(part.sparse, SparseExtent::Open(std::move(ef), &info.problems));
          if (part.sparse->capacity_bytes() < part.length) {
            return Status::Corrupt(what + ": sparse extent " + ext_path + " holds " +
                                   std::to_string(part.sparse->header().capacity) +
                                   " sectors, the descriptor says " + std::to_string(e.sectors));
          }
          if (!sparse_details) AddSparseDetails(*part.sparse, &info);
          sparse_details = true;
        } else {
          part.type = ExtentType::kFlat;
          part.file_offset = e.offset * kSector;
          if (part.file_offset + part.length > ef_size) {
            return Status::Corrupt(what + ": flat extent " + ext_path + " is " +
                                   std::to_string(ef_size) + " bytes, too short for " +
                                   std::to_string(e.sectors) + " sectors at sector " +
                                   std::to_string(e.offset));
          }
          part.file = std::move(ef);
        }
        break;
      }
      default: return Status::Unsupported(what + ": extent type " + e.type_name);
    }
    start += part.length;
    parts.push_back(std::move(part));
  }
  std::unique_ptr<BlockSource> parent;
  FERRY_TRY(OpenParent(ctx, path, d, &parent, &info));
  info.details.emplace_back("extents", std::to_string(parts.size()));
  return std::unique_ptr<BlockSource>(
      std::make_unique<VmdkSource>(std::move(parts), std::move(parent), std::move(info)));
}

}  // namespace

Result<std::unique_ptr<BlockSource>> OpenVmdk(const OpenContext& ctx, std::unique_ptr<File> file) {
  FERRY_ASSIGN_OR_RETURN(uint64_t size, file->Size());
  std::vector<uint8_t> head(std::min<uint64_t>(size, vmdk::kHeaderSize));
  FERRY_TRY(file->ReadAt(0, head));
  if (head.size() >= 4 && LoadLE32(head.data()) == vmdk::kSparseMagic) {
    return OpenSparseFile(ctx, std::move(file), size);
  }
  std::string_view text(reinterpret_cast<const char*>(head.data()), head.size());
  if (text.starts_with(vmdk::kDescriptorSignature)) {
    return OpenDescriptorFile(ctx, std::move(file), size);
  }
  if (text.starts_with("COWD")) {
    return Status::Unsupported(file->path() + ": ESX vmfsSparse (COWD) extent opened directly");
  }
  return Status::Corrupt(file->path() +
                         ": not a VMDK: no KDMV sparse header and no descriptor signature");
}

}  // namespace ferry
