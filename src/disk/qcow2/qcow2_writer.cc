// Qcow2 writer: a BlockSink producing a qcow2 v3 (compat 1.1) image, optionally with
// zlib (raw deflate) or zstd compressed clusters. Layout and checkpoint blob:
// docs/formats/qcow2.md.
//
// Ownership: Qcow2Sink owns its File. The L1 table, every L2 table and the refcounts of all
// host clusters live in memory (8 bytes per mapped guest cluster, 2 bytes per host cluster)
// and reach the file only in Checkpoint()/Finalize(), after the data they point at is synced.
// The header, the L1 table and the refcount table sit at fixed offsets and never move; L2
// tables, refcount blocks and data clusters are appended.
//
// Thread-safety: Write()/WriteZeroes() may run concurrently on distinct ranges. Host space
// and table updates happen under mu_ (short); compression and data pwrites run outside it.
#include <algorithm>
#include <cstring>
#include <mutex>

#include "common/bytes.h"
#include "disk/qcow2/qcow2.h"
#include "disk/qcow2/qcow2_codec.h"
#include "disk/qcow2/qcow2_format.h"

namespace ferry {
namespace {

using qcow2::Codec;

constexpr uint32_t kDefaultClusterSize = 64 * 1024;
constexpr uint32_t kMinWriterClusterSize = 4 * 1024;
constexpr uint32_t kMaxWriterClusterSize = 2 * 1024 * 1024;
constexpr uint32_t kRefcountOrder = 4;  // 16-bit refcounts, as QEMU's default
constexpr uint64_t kRefcountBytes = 2;
constexpr uint64_t kMaxRefcount = 0xffff;

// Checkpoint blob (little-endian), docs/formats/qcow2.md "Checkpoint blob".
constexpr uint8_t kBlobMagic[4] = {'F', 'Q', '2', 'C'};
constexpr uint32_t kBlobVersion = 1;
constexpr size_t kBlobSize = 48;

enum class Compression : uint32_t { kNone = 0, kZlib = 1, kZstd = 2 };

// Fixed layout of an image, derived from the options (and checked against the header and
// the blob on Resume).
struct Layout {
  uint32_t cluster_bits = 0;
  uint64_t cluster_size = 0;
  uint64_t size = 0;
  Compression compression = Compression::kNone;
  uint64_t l1_size = 0;             // entries
  uint64_t l1_offset = 0;           // cluster 1
  uint64_t l1_clusters = 0;
  uint64_t reftable_offset = 0;     // right after the L1 table
  uint64_t reftable_clusters = 0;
  uint64_t metadata_end = 0;        // first byte after the reftable
};

Result<Layout> MakeLayout(const std::string& path, const CreateOptions& options) {
  Layout l;
  const uint64_t cs = options.cluster_size == 0 ? kDefaultClusterSize : options.cluster_size;
  if (!IsPowerOfTwo(cs) || cs < kMinWriterClusterSize || cs > kMaxWriterClusterSize) {
    return Status::InvalidArgument(path + ": qcow2 cluster size " + std::to_string(cs) +
                                   " must be a power of two from 4 KiB to 2 MiB");
  }
  if (options.compression.empty()) {
    l.compression = Compression::kNone;
  } else if (options.compression == "zlib") {
    l.compression = Compression::kZlib;
  } else if (options.compression == "zstd") {
    l.compression = Compression::kZstd;
  } else {
    return Status::InvalidArgument(path + ": qcow2 compression '" + options.compression +
                                   "' (use zlib or zstd)");
  }
  if (options.size > qcow2::kMaxVirtualSize) {
    return Status::InvalidArgument(path + ": virtual size " + std::to_string(options.size) +
                                   " is too large for qcow2");
  }
  l.cluster_bits = static_cast<uint32_t>(__builtin_ctzll(cs));
  l.cluster_size = cs;
  l.size = options.size;
  const uint64_t l2_entries = cs / 8;
  l.l1_size = qcow2::L1EntriesFor(l.size, l.cluster_bits, l2_entries);
  if (l.l1_size * 8 > qcow2::kMaxL1Bytes) {
    return Status::TooLarge(path + ": virtual size " + std::to_string(l.size) +
                            " needs an L1 table over 32 MiB with " + std::to_string(cs) +
                            "-byte clusters; use larger clusters");
  }
  l.l1_offset = cs;
  l.l1_clusters = std::max<uint64_t>(1, DivRoundUp(l.l1_size * 8, cs));
  l.reftable_offset = l.l1_offset + l.l1_clusters * cs;
  // The refcount table covers twice the largest file the image could need when nothing
  // compresses (header, L1, L2 tables, every data cluster, refcount blocks): rewrites after
  // a Resume may append more, and the table must never move.
  const uint64_t data_clusters = DivRoundUp(l.size, cs);
  const uint64_t refcounts_per_block = cs / kRefcountBytes;
  uint64_t reftable_clusters = 1;
  for (int i = 0; i < 4; ++i) {
    const uint64_t meta = 1 + l.l1_clusters + reftable_clusters;
    const uint64_t worst = meta + l.l1_size + data_clusters;
    const uint64_t blocks = DivRoundUp(2 * worst + 64, refcounts_per_block) + 1;
    reftable_clusters = std::max(reftable_clusters, DivRoundUp(blocks * 8, cs));
  }
  if (reftable_clusters * cs > qcow2::kMaxRefcountTableBytes) {
    return Status::TooLarge(path + ": virtual size " + std::to_string(l.size) +
                            " needs a refcount table over 8 MiB with " + std::to_string(cs) +
                            "-byte clusters; use larger clusters");
  }
  l.reftable_clusters = reftable_clusters;
  l.metadata_end = l.reftable_offset + reftable_clusters * cs;
  return l;
}

class Qcow2Sink final : public BlockSink {
 public:
  Qcow2Sink(std::unique_ptr<File> file, const Layout& layout, bool zero_initialized)
      : file_(std::move(file)),
        write_behind_(file_.get()),
        path_(file_->path()),
        l_(layout),
        cs_(layout.cluster_size),
        l2_entries_(layout.cluster_size / 8),
        refcounts_per_block_(layout.cluster_size / kRefcountBytes),
        compressed_(qcow2::CompressedLayoutFor(layout.cluster_bits)),
        zero_initialized_(zero_initialized),
        end_(layout.metadata_end),
        l1_(layout.l1_size, 0),
        l2_(layout.l1_size),
        reftable_(layout.reftable_clusters * layout.cluster_size / 8, 0),
        refblock_dirty_(reftable_.size(), false) {}

  // Fresh image: the header, then a first flush so the file is a valid empty image.
  Status Create();
  // Rebuilds the tables from the file as of the checkpoint that ended at `file_end`.
  Status Resume(uint64_t file_end);

  uint64_t size() const override { return l_.size; }
  uint32_t granularity() const override { return static_cast<uint32_t>(cs_); }
  bool zero_initialized() const override { return zero_initialized_; }

  Status Write(uint64_t offset, std::span<const uint8_t> data) override;
  Status WriteZeroes(uint64_t offset, uint64_t length) override;
  Result<std::vector<uint8_t>> Checkpoint() override;
  Status Finalize() override;

 private:
  struct L2 {
    uint64_t host = 0;
    std::vector<uint64_t> entries;
    bool dirty = false;
  };
  // A piece of data to pwrite after the lock is released.
  struct Piece {
    uint64_t host;
    const uint8_t* data;
    size_t length;
  };

  Status CheckRange(uint64_t offset, uint64_t length) const;
  // REQUIRES: mu_ held (for all *Locked functions).
  void RefLocked(uint64_t cluster, int delta);
  uint64_t AllocClustersLocked(uint64_t n);
  uint64_t AllocBytesLocked(uint64_t n);
  void EnsureL2Locked(uint64_t l1_index);
  uint64_t& EntryLocked(uint64_t guest_cluster);
  // Drops the reference an L2 entry holds on its host clusters.
  void ReleaseLocked(uint64_t entry);
  void ZeroClusterLocked(uint64_t guest_cluster);
  // The host clusters a compressed descriptor touches, as QEMU's check counts them.
  void CompressedClusters(uint64_t entry, uint64_t* first, uint64_t* last, uint64_t* end) const;
  Status FlushMetadataLocked();
  Status WritePieces(std::vector<Piece>& pieces);

  std::unique_ptr<File> file_;
  WriteBehind write_behind_;
  const std::string path_;
  const Layout l_;
  const uint64_t cs_;
  const uint64_t l2_entries_;
  const uint64_t refcounts_per_block_;
  const qcow2::CompressedLayout compressed_;
  bool zero_initialized_;

  std::mutex mu_;
  uint64_t end_;                          // GUARDED_BY(mu_): next free host byte
  std::vector<uint64_t> l1_;              // GUARDED_BY(mu_)
  bool l1_dirty_ = true;                  // GUARDED_BY(mu_)
  std::vector<std::unique_ptr<L2>> l2_;   // GUARDED_BY(mu_): per L1 index, null if none
  std::vector<uint16_t> refcounts_;       // GUARDED_BY(mu_): per host cluster
  std::vector<uint64_t> reftable_;        // GUARDED_BY(mu_)
  bool reftable_dirty_ = true;            // GUARDED_BY(mu_)
  std::vector<bool> refblock_dirty_;      // GUARDED_BY(mu_)
  bool refcount_overflow_ = false;        // GUARDED_BY(mu_)
  bool finalized_ = false;
};

void Qcow2Sink::RefLocked(uint64_t cluster, int delta) {
  if (cluster >= refcounts_.size()) refcounts_.resize(std::max(cluster + 1, refcounts_.size() * 2));
  const int64_t v = int64_t{refcounts_[cluster]} + delta;
  if (v < 0 || v > int64_t{kMaxRefcount}) {
    refcount_overflow_ = true;  // reported by the next flush
    return;
  }
  refcounts_[cluster] = static_cast<uint16_t>(v);
  const uint64_t block = cluster / refcounts_per_block_;
  if (block < refblock_dirty_.size()) refblock_dirty_[block] = true;
}

uint64_t Qcow2Sink::AllocClustersLocked(uint64_t n) {
  end_ = RoundUp(end_, cs_);
  const uint64_t start = end_;
  end_ += n * cs_;
  for (uint64_t i = 0; i < n; ++i) RefLocked(start / cs_ + i, +1);
  return start;
}

uint64_t Qcow2Sink::AllocBytesLocked(uint64_t n) {
  const uint64_t start = end_;
  end_ += n;
  for (uint64_t c = start / cs_; c <= (start + n - 1) / cs_; ++c) RefLocked(c, +1);
  return start;
}

void Qcow2Sink::EnsureL2Locked(uint64_t l1_index) {
  if (l2_[l1_index]) return;
  auto l2 = std::make_unique<L2>();
  l2->host = AllocClustersLocked(1);
  l2->entries.assign(l2_entries_, 0);
  l2->dirty = true;
  l1_[l1_index] = l2->host | qcow2::kOflagCopied;
  l1_dirty_ = true;
  l2_[l1_index] = std::move(l2);
}

uint64_t& Qcow2Sink::EntryLocked(uint64_t guest_cluster) {
  L2& l2 = *l2_[guest_cluster / l2_entries_];
  l2.dirty = true;
  return l2.entries[guest_cluster % l2_entries_];
}

void Qcow2Sink::CompressedClusters(uint64_t entry, uint64_t* first, uint64_t* last,
                                   uint64_t* end) const {
  const uint64_t coffset = entry & compressed_.offset_mask;
  const uint64_t sectors = ((entry >> compressed_.offset_bits) & compressed_.sectors_mask) + 1;
  const uint64_t start = RoundDown(coffset, qcow2::kCompressedSectorSize);
  *end = start + sectors * qcow2::kCompressedSectorSize;
  *first = start / cs_;
  *last = (*end - 1) / cs_;
}

void Qcow2Sink::ReleaseLocked(uint64_t entry) {
  if (entry & qcow2::kOflagCompressed) {
    uint64_t first, last, end;
    CompressedClusters(entry, &first, &last, &end);
    for (uint64_t c = first; c <= last; ++c) RefLocked(c, -1);
  } else if ((entry & qcow2::kOffsetMask) != 0) {
    RefLocked((entry & qcow2::kOffsetMask) / cs_, -1);
  }
}

void Qcow2Sink::ZeroClusterLocked(uint64_t guest_cluster) {
  // No backing file: an unallocated cluster reads as zeros.
  if (!l2_[guest_cluster / l2_entries_]) return;
  uint64_t& entry = EntryLocked(guest_cluster);
  ReleaseLocked(entry);
  entry = 0;
}

Status Qcow2Sink::CheckRange(uint64_t offset, uint64_t length) const {
  uint64_t end = 0;
  if (finalized_) return Status::Internal(path_ + ": write after Finalize");
  if (!CheckedAdd(offset, length, &end) || end > l_.size || offset % cs_ != 0 ||
      (length % cs_ != 0 && end != l_.size)) {
    return Status::InvalidArgument(path_ + ": write of " + std::to_string(length) + " bytes at " +
                                   Hex(offset) + " is not aligned to the " + std::to_string(cs_) +
                                   "-byte clusters or passes the virtual size");
  }
  return Status::Ok();
}

Status Qcow2Sink::WritePieces(std::vector<Piece>& pieces) {
  std::sort(pieces.begin(), pieces.end(),
            [](const Piece& a, const Piece& b) { return a.host < b.host; });
  // Pieces contiguous on the host and in memory go out in one pwrite; contiguous on the host
  // only are staged into one buffer.
  std::vector<uint8_t> staging;
  size_t i = 0;
  while (i < pieces.size()) {
    size_t j = i + 1;
    uint64_t host_end = pieces[i].host + pieces[i].length;
    bool memory_contiguous = true;
    while (j < pieces.size() && pieces[j].host == host_end) {
      if (pieces[j].data != pieces[j - 1].data + pieces[j - 1].length) memory_contiguous = false;
      host_end += pieces[j].length;
      ++j;
    }
    if (j == i + 1 || memory_contiguous) {
      FERRY_TRY(file_->WriteAt(pieces[i].host,
                               std::span<const uint8_t>(pieces[i].data, host_end - pieces[i].host)));
    } else {
      staging.clear();
      for (size_t k = i; k < j; ++k) {
        staging.insert(staging.end(), pieces[k].data, pieces[k].data + pieces[k].length);
      }
      FERRY_TRY(file_->WriteAt(pieces[i].host, staging));
    }
    write_behind_.Wrote(pieces[i].host, host_end - pieces[i].host);
    i = j;
  }
  return Status::Ok();
}

Status Qcow2Sink::Write(uint64_t offset, std::span<const uint8_t> data) {
  FERRY_TRY(CheckRange(offset, data.size()));
  if (data.empty()) return Status::Ok();
  const uint64_t first = offset / cs_;
  const uint64_t count = DivRoundUp(data.size(), cs_);
  auto slice = [&](uint64_t i) {
    const uint64_t start = i * cs_;
    return data.subspan(start, std::min<uint64_t>(cs_, data.size() - start));
  };

  // Outside the lock: zero detection and compression of each cluster.
  std::vector<bool> zero(count);
  std::vector<std::vector<uint8_t>> compressed(l_.compression == Compression::kNone ? 0 : count);
  std::vector<uint8_t> padded;
  for (uint64_t i = 0; i < count; ++i) {
    auto s = slice(i);
    zero[i] = IsAllZero(s.data(), s.size());
    if (zero[i] || compressed.empty()) continue;
    std::span<const uint8_t> in = s;
    if (s.size() < cs_) {  // the last, partial cluster decompresses to a whole cluster
      padded.assign(cs_, 0);
      std::memcpy(padded.data(), s.data(), s.size());
      in = padded;
    }
    const Codec codec = l_.compression == Compression::kZstd ? Codec::kZstd : Codec::kZlib;
    if (!qcow2::Compress(codec, in, cs_, &compressed[i])) compressed[i].clear();
  }

  std::vector<Piece> pieces;
  {
    std::lock_guard<std::mutex> lock(mu_);
    // L2 tables first, so that new data clusters of this write are contiguous on the host.
    for (uint64_t i = 0; i < count; ++i) {
      if (!zero[i]) EnsureL2Locked((first + i) / l2_entries_);
    }
    for (uint64_t i = 0; i < count; ++i) {
      const uint64_t guest_cluster = first + i;
      if (zero[i]) {
        ZeroClusterLocked(guest_cluster);
        continue;
      }
      auto s = slice(i);
      uint64_t& entry = EntryLocked(guest_cluster);
      const bool compress = !compressed.empty() && !compressed[i].empty();
      const bool in_place = !compress && entry != 0 && !(entry & qcow2::kOflagCompressed);
      if (in_place) {  // rewritten after a Resume: reuse the cluster it already owns
        pieces.push_back({entry & qcow2::kOffsetMask, s.data(), s.size()});
        continue;
      }
      ReleaseLocked(entry);
      if (compress) {
        const uint64_t n = compressed[i].size();
        const uint64_t host = AllocBytesLocked(n);
        // spec "Compressed Clusters Descriptor": additional 512-byte sectors after the first.
        const uint64_t extra = (host + n - 1) / qcow2::kCompressedSectorSize -
                               host / qcow2::kCompressedSectorSize;
        entry = qcow2::kOflagCompressed | (extra << compressed_.offset_bits) | host;
        pieces.push_back({host, compressed[i].data(), compressed[i].size()});
      } else {
        const uint64_t host = AllocClustersLocked(1);
        entry = host | qcow2::kOflagCopied;
        pieces.push_back({host, s.data(), s.size()});
      }
    }
  }
  return WritePieces(pieces);
}

Status Qcow2Sink::WriteZeroes(uint64_t offset, uint64_t length) {
  FERRY_TRY(CheckRange(offset, length));
  std::lock_guard<std::mutex> lock(mu_);
  for (uint64_t c = offset / cs_; c < DivRoundUp(offset + length, cs_); ++c) {
    ZeroClusterLocked(c);
  }
  return Status::Ok();
}

Status Qcow2Sink::FlushMetadataLocked() {
  if (refcount_overflow_) {
    return Status::Internal(path_ + ": a host cluster's refcount left 0..65535");
  }
  // Refcount blocks for every host cluster in use, including the new blocks themselves.
  end_ = RoundUp(end_, cs_);
  for (bool added = true; added;) {
    added = false;
    const uint64_t blocks = DivRoundUp(end_ / cs_, refcounts_per_block_);
    if (blocks > reftable_.size()) {
      return Status::TooLarge(path_ + ": the image outgrew its refcount table (" +
                              std::to_string(reftable_.size()) + " blocks)");
    }
    for (uint64_t b = 0; b < blocks; ++b) {
      if (reftable_[b] != 0) continue;
      reftable_[b] = AllocClustersLocked(1);
      refblock_dirty_[b] = true;
      reftable_dirty_ = true;
      added = true;
    }
  }
  FERRY_ASSIGN_OR_RETURN(const uint64_t file_size, file_->Size());
  if (file_size < end_) FERRY_TRY(file_->Truncate(end_));

  std::vector<uint8_t> buf(cs_);
  for (auto& l2 : l2_) {
    if (!l2 || !l2->dirty) continue;
    for (uint64_t i = 0; i < l2_entries_; ++i) StoreBE64(buf.data() + 8 * i, l2->entries[i]);
    FERRY_TRY(file_->WriteAt(l2->host, buf));
    l2->dirty = false;
  }
  if (l1_dirty_) {
    std::vector<uint8_t> l1(l_.l1_clusters * cs_, 0);
    for (uint64_t i = 0; i < l1_.size(); ++i) StoreBE64(l1.data() + 8 * i, l1_[i]);
    FERRY_TRY(file_->WriteAt(l_.l1_offset, l1));
    l1_dirty_ = false;
  }
  for (uint64_t b = 0; b < reftable_.size(); ++b) {
    if (!refblock_dirty_[b] || reftable_[b] == 0) continue;
    std::fill(buf.begin(), buf.end(), 0);
    const uint64_t base = b * refcounts_per_block_;
    for (uint64_t i = 0; i < refcounts_per_block_ && base + i < refcounts_.size(); ++i) {
      StoreBE16(buf.data() + kRefcountBytes * i, refcounts_[base + i]);
    }
    FERRY_TRY(file_->WriteAt(reftable_[b], buf));
    refblock_dirty_[b] = false;
  }
  if (reftable_dirty_) {
    std::vector<uint8_t> table(reftable_.size() * 8);
    for (uint64_t i = 0; i < reftable_.size(); ++i) StoreBE64(table.data() + 8 * i, reftable_[i]);
    FERRY_TRY(file_->WriteAt(l_.reftable_offset, table));
    reftable_dirty_ = false;
  }
  return Status::Ok();
}

Result<std::vector<uint8_t>> Qcow2Sink::Checkpoint() {
  if (finalized_) return Status::Internal(path_ + ": Checkpoint after Finalize");
  // Data first, so that no table on disk ever points at data that is not durable.
  FERRY_TRY(file_->Sync());
  std::lock_guard<std::mutex> lock(mu_);
  FERRY_TRY(FlushMetadataLocked());
  FERRY_TRY(file_->Sync());
  std::vector<uint8_t> blob(kBlobSize, 0);
  std::memcpy(blob.data(), kBlobMagic, 4);
  StoreLE32(blob.data() + 4, kBlobVersion);
  StoreLE64(blob.data() + 8, l_.size);
  StoreLE32(blob.data() + 16, static_cast<uint32_t>(cs_));
  StoreLE32(blob.data() + 20, static_cast<uint32_t>(l_.compression));
  StoreLE64(blob.data() + 24, end_);
  StoreLE64(blob.data() + 32, l_.l1_offset);
  StoreLE64(blob.data() + 40, l_.reftable_offset);
  return blob;
}

Status Qcow2Sink::Finalize() {
  if (finalized_) return Status::Ok();
  FERRY_TRY(file_->Sync());
  std::lock_guard<std::mutex> lock(mu_);
  FERRY_TRY(FlushMetadataLocked());
  FERRY_TRY(file_->Sync());
  finalized_ = true;
  return Status::Ok();
}

Status Qcow2Sink::Create() {
  // spec "Header": a v3 header of 112 bytes (with compression_type), no extensions.
  std::vector<uint8_t> h(qcow2::kV3HeaderLengthWithCompression + 8, 0);  // + end-of-extensions
  uint8_t* p = h.data();
  StoreBE32(p, qcow2::kMagic);
  StoreBE32(p + qcow2::kOffVersion, 3);
  StoreBE32(p + qcow2::kOffClusterBits, l_.cluster_bits);
  StoreBE64(p + qcow2::kOffSize, l_.size);
  StoreBE32(p + qcow2::kOffL1Size, static_cast<uint32_t>(l_.l1_size));
  StoreBE64(p + qcow2::kOffL1TableOffset, l_.l1_offset);
  StoreBE64(p + qcow2::kOffRefcountTableOffset, l_.reftable_offset);
  StoreBE32(p + qcow2::kOffRefcountTableClusters, static_cast<uint32_t>(l_.reftable_clusters));
  const bool zstd = l_.compression == Compression::kZstd;
  StoreBE64(p + qcow2::kOffIncompatibleFeatures, zstd ? qcow2::kIncompatCompressionType : 0);
  StoreBE32(p + qcow2::kOffRefcountOrder, kRefcountOrder);
  StoreBE32(p + qcow2::kOffHeaderLength, qcow2::kV3HeaderLengthWithCompression);
  p[qcow2::kOffCompressionType] = zstd ? qcow2::kCompressionZstd : qcow2::kCompressionZlib;
  FERRY_TRY(file_->WriteAt(0, h));

  std::lock_guard<std::mutex> lock(mu_);
  for (uint64_t c = 0; c < l_.metadata_end / cs_; ++c) RefLocked(c, +1);
  FERRY_TRY(FlushMetadataLocked());
  return file_->Sync();
}

Status Qcow2Sink::Resume(uint64_t file_end) {
  std::lock_guard<std::mutex> lock(mu_);
  // Everything written after the checkpoint goes: tables that point there are dropped below.
  FERRY_TRY(file_->Truncate(file_end));
  end_ = file_end;
  refcounts_.assign(file_end / cs_, 0);
  for (uint64_t c = 0; c < l_.metadata_end / cs_; ++c) RefLocked(c, +1);

  auto inside = [&](uint64_t off, uint64_t len) {
    uint64_t e = 0;
    return off % cs_ == 0 && off >= l_.metadata_end && CheckedAdd(off, len, &e) && e <= file_end;
  };

  std::vector<uint8_t> buf(l_.reftable_clusters * cs_);
  FERRY_TRY_CTX(file_->ReadAt(l_.reftable_offset, buf), "refcount table");
  for (uint64_t b = 0; b < reftable_.size(); ++b) {
    const uint64_t off = LoadBE64(buf.data() + 8 * b);
    reftable_[b] = inside(off, cs_) ? off : 0;
    if (reftable_[b] != 0) RefLocked(off / cs_, +1);
  }
  reftable_dirty_ = true;

  buf.assign(l_.l1_clusters * cs_, 0);
  FERRY_TRY_CTX(file_->ReadAt(l_.l1_offset, buf), "L1 table");
  std::vector<uint8_t> table(cs_);
  for (uint64_t i = 0; i < l_.l1_size; ++i) {
    const uint64_t off = LoadBE64(buf.data() + 8 * i) & qcow2::kOffsetMask;
    if (off == 0 || !inside(off, cs_)) continue;
    FERRY_TRY_CTX(file_->ReadAt(off, table), "L2 table at " + Hex(off));
    auto l2 = std::make_unique<L2>();
    l2->host = off;
    l2->entries.assign(l2_entries_, 0);
    l2->dirty = true;
    RefLocked(off / cs_, +1);
    for (uint64_t j = 0; j < l2_entries_; ++j) {
      const uint64_t e = LoadBE64(table.data() + 8 * j);
      if (e & qcow2::kOflagCompressed) {
        uint64_t first, last, end;
        CompressedClusters(e, &first, &last, &end);
        if ((e & compressed_.offset_mask) < l_.metadata_end || end > file_end) continue;
        l2->entries[j] = e & ~qcow2::kOflagCopied;
        for (uint64_t c = first; c <= last; ++c) RefLocked(c, +1);
      } else {
        const uint64_t host = e & qcow2::kOffsetMask;
        if (host == 0 || (e & qcow2::kOflagZero) || !inside(host, cs_)) continue;
        l2->entries[j] = host | qcow2::kOflagCopied;
        RefLocked(host / cs_, +1);
      }
    }
    l1_[i] = off | qcow2::kOflagCopied;
    l2_[i] = std::move(l2);
  }
  l1_dirty_ = true;
  std::fill(refblock_dirty_.begin(), refblock_dirty_.end(), true);
  if (refcount_overflow_) {
    return Status::Corrupt(path_ + ": host clusters are mapped more often than refcounts allow");
  }
  return Status::Ok();
}

Result<std::vector<uint8_t>> ReadBlob(const std::string& path, std::span<const uint8_t> state) {
  if (state.size() != kBlobSize || std::memcmp(state.data(), kBlobMagic, 4) != 0) {
    return Status::Corrupt(path + ": not a qcow2 checkpoint state (" +
                           std::to_string(state.size()) + " bytes)");
  }
  if (LoadLE32(state.data() + 4) != kBlobVersion) {
    return Status::Unsupported(path + ": qcow2 checkpoint state version " +
                               std::to_string(LoadLE32(state.data() + 4)));
  }
  return std::vector<uint8_t>(state.begin(), state.end());
}

}  // namespace

Result<std::unique_ptr<BlockSink>> CreateQcow2(const std::string& path,
                                               const CreateOptions& options) {
  FERRY_ASSIGN_OR_RETURN(const Layout layout, MakeLayout(path, options));
  FERRY_ASSIGN_OR_RETURN(auto file, options.env->Open(path, OpenMode::kCreateTruncate));
  auto sink = std::make_unique<Qcow2Sink>(std::move(file), layout, /*zero_initialized=*/true);
  FERRY_TRY(sink->Create());
  return std::unique_ptr<BlockSink>(std::move(sink));
}

Result<std::unique_ptr<BlockSink>> ResumeQcow2(const std::string& path,
                                               const CreateOptions& options,
                                               std::span<const uint8_t> state) {
  FERRY_ASSIGN_OR_RETURN(const std::vector<uint8_t> blob, ReadBlob(path, state));
  FERRY_ASSIGN_OR_RETURN(const Layout layout, MakeLayout(path, options));
  const uint64_t file_end = LoadLE64(blob.data() + 24);
  if (LoadLE64(blob.data() + 8) != layout.size ||
      LoadLE32(blob.data() + 16) != layout.cluster_size ||
      LoadLE32(blob.data() + 20) != static_cast<uint32_t>(layout.compression) ||
      LoadLE64(blob.data() + 32) != layout.l1_offset ||
      LoadLE64(blob.data() + 40) != layout.reftable_offset) {
    return Status::Mismatch(path + ": the checkpoint state was written for another size, "
                            "cluster size or compression than the options ask for");
  }
  if (file_end < layout.metadata_end || file_end % layout.cluster_size != 0) {
    return Status::Corrupt(path + ": checkpoint end of file " + Hex(file_end) +
                           " is inside the fixed metadata or unaligned");
  }
  FERRY_ASSIGN_OR_RETURN(auto file, options.env->Open(path, OpenMode::kReadWrite));
  FERRY_ASSIGN_OR_RETURN(const uint64_t file_size, file->Size());
  if (file_size < file_end) {
    return Status::Corrupt(path + ": the file (" + Hex(file_size) +
                           " bytes) is shorter than at its checkpoint (" + Hex(file_end) + ")");
  }
  FERRY_ASSIGN_OR_RETURN(const qcow2::Header h, qcow2::ReadHeader(*file));
  if (h.version != 3 || h.cluster_bits != layout.cluster_bits || h.size != layout.size ||
      h.l1_size != layout.l1_size || h.l1_table_offset != layout.l1_offset ||
      h.refcount_table_offset != layout.reftable_offset ||
      h.refcount_table_clusters != layout.reftable_clusters || h.refcount_order != kRefcountOrder ||
      h.extended_l2() || !h.backing_file.empty()) {
    return Status::Mismatch(path + ": the qcow2 header does not match the image Ferry started");
  }
  auto sink = std::make_unique<Qcow2Sink>(std::move(file), layout, /*zero_initialized=*/false);
  FERRY_TRY(sink->Resume(file_end));
  return std::unique_ptr<BlockSink>(std::move(sink));
}

}  // namespace ferry
