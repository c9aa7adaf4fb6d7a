// Qcow2 reader: a BlockSource over a qcow2 v2/v3 image and its backing chain.
//
// Ownership: Qcow2Source owns its File and its backing BlockSource. The L1 table is read at
// open; L2 tables are loaded on demand into a small LRU cache (a few MiB) shared by all
// threads.
//
// Thread-safety: Extents() and Read() may run concurrently. Only the L2 cache is shared
// mutable state (guarded by cache_mu_); data preads and decompression run without locks.
#include <algorithm>
#include <cstring>
#include <list>
#include <mutex>
#include <unordered_map>

#include "common/bytes.h"
#include "disk/qcow2/qcow2.h"
#include "disk/qcow2/qcow2_codec.h"
#include "disk/qcow2/qcow2_format.h"

namespace ferry {
namespace {

using qcow2::Header;

// The L2 cache holds this many bytes of tables (at least kMinCachedTables tables).
constexpr uint64_t kL2CacheBytes = 4ull << 20;
constexpr size_t kMinCachedTables = 4;

class Qcow2Source final : public BlockSource {
 public:
  Qcow2Source(std::unique_ptr<File> file, uint64_t file_size, Header header,
              std::vector<uint64_t> l1, std::unique_ptr<BlockSource> backing,
              std::string backing_path)
      : file_(std::move(file)),
        path_(file_->path()),
        file_size_(file_size),
        h_(std::move(header)),
        l1_(std::move(l1)),
        backing_(std::move(backing)),
        backing_path_(std::move(backing_path)),
        backing_size_(backing_ ? std::min(backing_->size(), h_.size) : 0),
        unit_size_(h_.extended_l2() ? h_.cluster_size / qcow2::kSubclustersPerCluster
                                    : h_.cluster_size),
        l2_coverage_(h_.l2_entries() << h_.cluster_bits),
        compressed_(qcow2::CompressedLayoutFor(h_.cluster_bits)),
        cache_capacity_(std::max<size_t>(kMinCachedTables, kL2CacheBytes / h_.cluster_size)) {}

  uint64_t size() const override { return h_.size; }

  ImageInfo info() const override;

  Status Extents(uint64_t offset, uint64_t length, std::vector<Extent>* out) override;
  Status Read(uint64_t offset, std::span<uint8_t> buf) override;

 private:
  enum class RunKind { kData, kCompressed, kZero, kUnallocated };
  // A stretch of guest bytes [guest, guest+length) that maps one way. kData: at host offset
  // `host` (contiguous on the host); kCompressed: one cluster's compressed descriptor `entry`.
  struct Run {
    uint64_t guest = 0;
    uint64_t length = 0;
    RunKind kind = RunKind::kUnallocated;
    uint64_t host = 0;
    uint64_t entry = 0;
  };
  using L2Table = std::vector<uint64_t>;  // raw big-endian-decoded words (2 per extended entry)

  // Maps the longest run starting at `guest` of at most `limit` bytes that stays inside one
  // L2 table and maps one way.
  Status MapRun(uint64_t guest, uint64_t limit, Run* run) const;
  // The mapping unit (cluster or subcluster) holding `pos` in `l2`: its [start, end), kind and
  // the host offset of its start (kData) or descriptor (kCompressed).
  Status Unit(const L2Table& l2, uint64_t pos, uint64_t* start, uint64_t* end, RunKind* kind,
              uint64_t* host) const;
  Result<std::shared_ptr<const L2Table>> GetL2(uint64_t l1_index) const;

  Status ReadHost(uint64_t host, std::span<uint8_t> dst) const;
  Status ReadCompressed(const Run& run, std::span<uint8_t> dst) const;
  Status ReadBacking(uint64_t guest, std::span<uint8_t> dst);
  Status BackingExtents(uint64_t offset, uint64_t length, size_t first,
                        std::vector<Extent>* out);
  static void Append(const Extent& e, size_t first, std::vector<Extent>* out);

  std::unique_ptr<File> file_;
  const std::string path_;
  const uint64_t file_size_;
  const Header h_;
  const std::vector<uint64_t> l1_;  // entries needed for the virtual size
  const std::unique_ptr<BlockSource> backing_;
  const std::string backing_path_;
  const uint64_t backing_size_;  // bytes of the backing source visible through this image
  const uint64_t unit_size_;     // cluster, or subcluster with extended L2 entries
  const uint64_t l2_coverage_;   // guest bytes one L2 table maps
  const qcow2::CompressedLayout compressed_;
  const size_t cache_capacity_;

  mutable std::mutex cache_mu_;
  // L2 tables by host offset, most recently used first.
  mutable std::list<std::pair<uint64_t, std::shared_ptr<const L2Table>>> lru_;  // GUARDED_BY(cache_mu_)
  mutable std::unordered_map<uint64_t, decltype(lru_)::iterator> cache_;  // GUARDED_BY(cache_mu_)
};

Result<std::shared_ptr<const Qcow2Source::L2Table>> Qcow2Source::GetL2(uint64_t l1_index) const {
  const uint64_t entry = l1_[l1_index];
  const uint64_t off = entry & qcow2::kOffsetMask;
  if (off == 0) return std::shared_ptr<const L2Table>();
  {
    // Keyed by the table's host offset: hostile L1 tables may point many entries at one table.
    std::lock_guard<std::mutex> lock(cache_mu_);
    auto it = cache_.find(off);
    if (it != cache_.end()) {
      lru_.splice(lru_.begin(), lru_, it->second);
      return it->second->second;
    }
  }
  uint64_t end = 0;
  if (off % h_.cluster_size != 0) {
    return Status::Corrupt(path_ + ": L2 table at " + Hex(off) + " (L1 entry " +
                           std::to_string(l1_index) + ") is not cluster aligned");
  }
  if (!CheckedAdd(off, h_.cluster_size, &end) || end > file_size_) {
    return Status::Corrupt(path_ + ": L2 table at " + Hex(off) + " (L1 entry " +
                           std::to_string(l1_index) + ") lies past the end of the file (" +
                           Hex(file_size_) + ")");
  }
  std::vector<uint8_t> raw(h_.cluster_size);
  FERRY_TRY_CTX(file_->ReadAt(off, raw),
                "L2 table at " + Hex(off) + " (L1 entry " + std::to_string(l1_index) + ")");
  auto table = std::make_shared<L2Table>(h_.cluster_size / 8);
  for (size_t i = 0; i < table->size(); ++i) (*table)[i] = LoadBE64(raw.data() + 8 * i);

  std::lock_guard<std::mutex> lock(cache_mu_);
  auto it = cache_.find(off);
  if (it != cache_.end()) return it->second->second;  // another thread loaded it meanwhile
  lru_.emplace_front(off, table);
  cache_[off] = lru_.begin();
  while (lru_.size() > cache_capacity_) {
    cache_.erase(lru_.back().first);
    lru_.pop_back();
  }
  return std::shared_ptr<const L2Table>(std::move(table));
}

Status Qcow2Source::Unit(const L2Table& l2, uint64_t pos, uint64_t* start, uint64_t* end,
                         RunKind* kind, uint64_t* host) const {
  const uint64_t cluster_start = RoundDown(pos, h_.cluster_size);
  const uint64_t index = (pos % l2_coverage_) >> h_.cluster_bits;
  const uint64_t entry = h_.extended_l2() ? l2[2 * index] : l2[index];
  if (entry & qcow2::kOflagCompressed) {
    *start = cluster_start;
    *end = cluster_start + h_.cluster_size;
    *kind = RunKind::kCompressed;
    *host = entry;
    return Status::Ok();
  }
  const uint64_t cluster_host = entry & qcow2::kOffsetMask;
  if (cluster_host % h_.cluster_size != 0) {
    return Status::Corrupt(path_ + ": L2 entry for guest offset " + Hex(cluster_start) +
                           " points at unaligned host offset " + Hex(cluster_host));
  }
  if (cluster_host != 0 && cluster_host >= file_size_) {
    return Status::Corrupt(path_ + ": data cluster for guest offset " + Hex(cluster_start) +
                           " at host offset " + Hex(cluster_host) +
                           " lies past the end of the file (" + Hex(file_size_) + ")");
  }
  if (!h_.extended_l2()) {
    *start = cluster_start;
    *end = cluster_start + h_.cluster_size;
    *host = cluster_host;
    if (h_.version >= 3 && (entry & qcow2::kOflagZero)) {
      *kind = RunKind::kZero;
    } else {
      *kind = cluster_host != 0 ? RunKind::kData : RunKind::kUnallocated;
    }
    return Status::Ok();
  }
  // spec "Extended L2 Entries": bitmap bit j = subcluster j allocated, bit 32+j = reads zero.
  const uint64_t bitmap = l2[2 * index + 1];
  const uint64_t sub = (pos - cluster_start) / unit_size_;
  *start = cluster_start + sub * unit_size_;
  *end = *start + unit_size_;
  const bool allocated = (bitmap >> sub) & 1;
  const bool zero = (bitmap >> (qcow2::kSubclustersPerCluster + sub)) & 1;
  if (allocated && zero) {
    return Status::Corrupt(path_ + ": extended L2 entry for guest offset " + Hex(cluster_start) +
                           " marks subcluster " + std::to_string(sub) +
                           " both allocated and zero");
  }
  if (allocated && cluster_host == 0) {
    return Status::Corrupt(path_ + ": extended L2 entry for guest offset " + Hex(cluster_start) +
                           " has allocated subclusters but no host cluster");
  }
  *host = cluster_host + sub * unit_size_;
  *kind = zero ? RunKind::kZero : allocated ? RunKind::kData : RunKind::kUnallocated;
  return Status::Ok();
}

Status Qcow2Source::MapRun(uint64_t guest, uint64_t limit, Run* run) const {
  const uint64_t l1_index = guest / l2_coverage_;
  const uint64_t max_end = std::min(guest + limit, (l1_index + 1) * l2_coverage_);
  FERRY_ASSIGN_OR_RETURN(auto l2, GetL2(l1_index));
  run->guest = guest;
  if (!l2) {
    run->length = max_end - guest;
    run->kind = RunKind::kUnallocated;
    return Status::Ok();
  }
  uint64_t start, end, host;
  RunKind kind;
  FERRY_TRY(Unit(*l2, guest, &start, &end, &kind, &host));
  run->kind = kind;
  if (kind == RunKind::kCompressed) {
    run->entry = host;
    run->length = std::min(end, max_end) - guest;
    return Status::Ok();
  }
  run->host = host + (guest - start);
  while (end < max_end) {
    uint64_t next_start, next_end, next_host;
    RunKind next_kind;
    FERRY_TRY(Unit(*l2, end, &next_start, &next_end, &next_kind, &next_host));
    if (next_kind != kind) break;
    if (kind == RunKind::kData && next_host != run->host + (end - guest)) break;
    end = next_end;
  }
  run->length = std::min(end, max_end) - guest;
  return Status::Ok();
}

Status Qcow2Source::ReadHost(uint64_t host, std::span<uint8_t> dst) const {
  if (host + dst.size() <= file_size_) return file_->ReadAt(host, dst);
  // A last cluster cut short by the end of the file reads as zeros past the end (as QEMU).
  FERRY_ASSIGN_OR_RETURN(size_t got, file_->ReadSomeAt(host, dst));
  std::fill(dst.begin() + static_cast<ptrdiff_t>(got), dst.end(), 0);
  return Status::Ok();
}

Status Qcow2Source::ReadCompressed(const Run& run, std::span<uint8_t> dst) const {
  const uint64_t cluster_start = RoundDown(run.guest, h_.cluster_size);
  const uint64_t coffset = run.entry & compressed_.offset_mask;
  const uint64_t sectors = ((run.entry >> compressed_.offset_bits) & compressed_.sectors_mask) + 1;
  const uint64_t csize = sectors * qcow2::kCompressedSectorSize -
                         (coffset % qcow2::kCompressedSectorSize);
  auto where = [&] {
    return path_ + ": compressed cluster for guest offset " + Hex(cluster_start) +
           " at host offset " + Hex(coffset);
  };
  if (coffset >= file_size_) {
    return Status::Corrupt(where() + " lies past the end of the file (" + Hex(file_size_) + ")");
  }
  std::vector<uint8_t> in(std::min(csize, file_size_ - coffset));
  FERRY_TRY(file_->ReadAt(coffset, in));
  std::vector<uint8_t> cluster(h_.cluster_size);
  Status s = qcow2::Decompress(static_cast<qcow2::Codec>(h_.compression_type), in, cluster);
  if (!s.ok()) return Status::Corrupt(where() + ": " + s.message());
  std::memcpy(dst.data(), cluster.data() + (run.guest - cluster_start), dst.size());
  return Status::Ok();
}

Status Qcow2Source::ReadBacking(uint64_t guest, std::span<uint8_t> dst) {
  size_t from_backing = 0;
  if (backing_ && guest < backing_size_) {
    from_backing = static_cast<size_t>(std::min<uint64_t>(dst.size(), backing_size_ - guest));
    FERRY_TRY(backing_->Read(guest, dst.subspan(0, from_backing)));
  }
  std::fill(dst.begin() + static_cast<ptrdiff_t>(from_backing), dst.end(), 0);
  return Status::Ok();
}

Status Qcow2Source::Read(uint64_t offset, std::span<uint8_t> buf) {
  uint64_t end = 0;
  if (!CheckedAdd(offset, buf.size(), &end) || end > h_.size) {
    return Status::InvalidArgument(path_ + ": read of " + std::to_string(buf.size()) +
                                   " bytes at " + Hex(offset) + " past the virtual size");
  }
  // Host-contiguous data runs are gathered into one pread, across L2 tables too.
  uint64_t pending_guest = 0, pending_host = 0, pending_len = 0;
  auto flush = [&]() -> Status {
    if (pending_len == 0) return Status::Ok();
    Status s = ReadHost(pending_host, buf.subspan(pending_guest - offset, pending_len));
    pending_len = 0;
    return s;
  };
  uint64_t pos = offset;
  while (pos < end) {
    Run run;
    FERRY_TRY(MapRun(pos, end - pos, &run));
    std::span<uint8_t> dst = buf.subspan(pos - offset, run.length);
    if (run.kind == RunKind::kData) {
      if (pending_len != 0 && pending_host + pending_len == run.host) {
        pending_len += run.length;
      } else {
        FERRY_TRY(flush());
        pending_guest = pos;
        pending_host = run.host;
        pending_len = run.length;
      }
    } else {
      FERRY_TRY(flush());
      switch (run.kind) {
        case RunKind::kZero: std::fill(dst.begin(), dst.end(), 0); break;
        case RunKind::kUnallocated: FERRY_TRY(ReadBacking(pos, dst)); break;
        case RunKind::kCompressed: FERRY_TRY(ReadCompressed(run, dst)); break;
        case RunKind::kData: break;
      }
    }
    pos += run.length;
  }
  return flush();
}

void Qcow2Source::Append(const Extent& e, size_t first, std::vector<Extent>* out) {
  if (e.length == 0) return;
  if (out->size() > first && out->back().kind == e.kind &&
      out->back().offset + out->back().length == e.offset) {
    out->back().length += e.length;
  } else {
    out->push_back(e);
  }
}

Status Qcow2Source::BackingExtents(uint64_t offset, uint64_t length, size_t first,
                                   std::vector<Extent>* out) {
  const uint64_t end = offset + length;
  uint64_t pos = offset;
  if (backing_ && pos < backing_size_) {
    const uint64_t part = std::min(end, backing_size_) - pos;
    std::vector<Extent> sub;
    FERRY_TRY(backing_->Extents(pos, part, &sub));
    for (const Extent& e : sub) Append(e, first, out);
    pos += part;
  }
  Append({pos, end - pos, ExtentKind::kHole}, first, out);
  return Status::Ok();
}

Status Qcow2Source::Extents(uint64_t offset, uint64_t length, std::vector<Extent>* out) {
  uint64_t end = 0;
  if (!CheckedAdd(offset, length, &end) || end > h_.size) {
    return Status::InvalidArgument(path_ + ": extents of " + std::to_string(length) +
                                   " bytes at " + Hex(offset) + " past the virtual size");
  }
  const size_t first = out->size();
  uint64_t pos = offset;
  uint64_t unallocated_start = 0, unallocated_len = 0;
  while (pos < end) {
    Run run;
    FERRY_TRY(MapRun(pos, end - pos, &run));
    if (run.kind == RunKind::kUnallocated) {
      if (unallocated_len == 0) unallocated_start = pos;
      unallocated_len += run.length;
    } else {
      if (unallocated_len != 0) {
        FERRY_TRY(BackingExtents(unallocated_start, unallocated_len, first, out));
        unallocated_len = 0;
      }
      Append({pos, run.length, run.kind == RunKind::kZero ? ExtentKind::kZero : ExtentKind::kData},
             first, out);
    }
    pos += run.length;
  }
  if (unallocated_len != 0) {
    FERRY_TRY(BackingExtents(unallocated_start, unallocated_len, first, out));
  }
  return Status::Ok();
}

ImageInfo Qcow2Source::info() const {
  ImageInfo info;
  info.format = "qcow2";
  info.subformat = h_.version == 2 ? "v2" : "v3";
  info.virtual_size = h_.size;
  info.file_size = file_size_;
  info.cluster_size = static_cast<uint32_t>(h_.cluster_size);
  info.files = {path_};
  // Guest bytes this layer maps (data and compressed clusters), from the L2 tables only,
  // counted once per distinct table (the last, partial one separately).
  std::unordered_map<uint64_t, uint64_t> per_table;
  for (uint64_t i = 0; i < l1_.size(); ++i) {
    const uint64_t base = i * l2_coverage_;
    const uint64_t len = std::min(l2_coverage_, h_.size - base);
    const uint64_t off = l1_[i] & qcow2::kOffsetMask;
    if (off == 0) continue;
    const bool whole = len == l2_coverage_;
    if (whole) {
      auto it = per_table.find(off);
      if (it != per_table.end()) {
        info.allocated_bytes += it->second;
        continue;
      }
    }
    uint64_t count = 0;
    Status s;
    for (uint64_t pos = base; pos < base + len && s.ok();) {
      Run run;
      s = MapRun(pos, base + len - pos, &run);
      if (s.ok() && (run.kind == RunKind::kData || run.kind == RunKind::kCompressed)) {
        count += run.length;
      }
      pos += run.length;
    }
    if (!s.ok()) {
      info.problems.push_back("counting allocated clusters: " + s.ToString());
      break;
    }
    if (whole) per_table[off] = count;
    info.allocated_bytes += count;
  }
  if (backing_) {
    ImageInfo parent = backing_->info();
    info.backing_chain.push_back(backing_path_);
    info.backing_chain.insert(info.backing_chain.end(), parent.backing_chain.begin(),
                              parent.backing_chain.end());
    info.files.insert(info.files.end(), parent.files.begin(), parent.files.end());
    info.file_size += parent.file_size;
  }
  const bool dirty = (h_.incompatible & qcow2::kIncompatDirty) != 0;
  info.details = {
      {"compat", h_.version == 2 ? "0.10" : "1.1"},
      {"compression_type", h_.compression_type == qcow2::kCompressionZstd ? "zstd" : "zlib"},
      {"refcount_bits", std::to_string(1u << h_.refcount_order)},
      {"dirty", dirty ? "true" : "false"},
      {"lazy_refcounts", (h_.compatible & qcow2::kCompatLazyRefcounts) ? "true" : "false"},
      {"extended_l2", h_.extended_l2() ? "true" : "false"},
      {"snapshots", std::to_string(h_.nb_snapshots)},
  };
  if (!h_.backing_file.empty()) info.details.push_back({"backing_file", h_.backing_file});
  if (h_.backing_format) info.details.push_back({"backing_format", *h_.backing_format});
  if (dirty) {
    info.problems.push_back(path_ + ": dirty bit set: the image was not closed cleanly; its "
                            "refcounts may be stale (the data mappings are valid)");
  }
  return info;
}

}  // namespace

Result<std::unique_ptr<BlockSource>> OpenQcow2(const OpenContext& ctx,
                                               std::unique_ptr<File> file) {
  const std::string path = file->path();
  FERRY_ASSIGN_OR_RETURN(Header h, qcow2::ReadHeader(*file));
  FERRY_ASSIGN_OR_RETURN(const uint64_t file_size, file->Size());

  // Only the entries that map the virtual size matter; ReadHeader checked the table fits.
  const uint64_t l1_count = qcow2::L1EntriesFor(h.size, h.cluster_bits, h.l2_entries());
  std::vector<uint64_t> l1(l1_count);
  if (l1_count > 0) {
    std::vector<uint8_t> raw(l1_count * 8);
    FERRY_TRY_CTX(file->ReadAt(h.l1_table_offset, raw), "L1 table at " + Hex(h.l1_table_offset));
    for (size_t i = 0; i < l1_count; ++i) l1[i] = LoadBE64(raw.data() + 8 * i);
  }

  std::unique_ptr<BlockSource> backing;
  std::string backing_path;
  if (!h.backing_file.empty()) {
    std::optional<ImageFormat> format;
    if (h.backing_format) {
      auto parsed = ParseImageFormat(*h.backing_format);
      if (!parsed.ok()) {
        return Status::Unsupported(path + ": backing format '" + *h.backing_format +
                                   "' of backing file '" + h.backing_file + "'");
      }
      format = *parsed;
    }
    FERRY_ASSIGN_OR_RETURN(backing_path,
                           ctx.ResolveReference(path, h.backing_file, "backing file"));
    FERRY_ASSIGN_OR_RETURN(backing, ctx.OpenBacking(backing_path, format)
                                        .WithContext(path + ": backing file '" +
                                                     h.backing_file + "'"));
  }
  return std::unique_ptr<BlockSource>(std::make_unique<Qcow2Source>(
      std::move(file), file_size, std::move(h), std::move(l1), std::move(backing),
      std::move(backing_path)));
}

}  // namespace ferry
