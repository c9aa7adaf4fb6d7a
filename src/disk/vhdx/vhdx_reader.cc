// The VHDX reader: OpenVhdx parses and checks headers, the log (replayed in memory only), the
// region table, the metadata region and the BAT, then serves Extents/Read from the in-memory
// BAT. Differencing images read unallocated ranges through their parent.
//
// Thread-safety: after OpenVhdx returns, the source holds only immutable state (the BAT, the
// log overlay, the geometry); sector bitmap slices are read per call. Extents and Read may run
// concurrently.
#include <algorithm>
#include <cstring>
#include <map>
#include <memory>

#include "common/bytes.h"
#include "common/checksum.h"
#include "disk/vhdx/vhdx.h"
#include "disk/vhdx/vhdx_format.h"

namespace ferry {
namespace {

using namespace vhdx;  // NOLINT(google-build-using-namespace): the format's own constants

// Caps on untrusted sizes.
constexpr uint64_t kMaxLogLength = 256 * kMiB;       // Hyper-V and qemu write 1 MiB logs
constexpr uint64_t kMaxLogScanBytes = 1ull << 30;    // CRC work while looking for entries
constexpr uint64_t kMaxOverlaySectors = 1ull << 18;  // 1 GiB of replayed 4 KiB sectors
constexpr uint32_t kMaxLocatorEntries = 256;
constexpr uint64_t kMaxBatBytes = 1ull << 30;

const std::string kPayloadWhat = "payload block data";

// The image file as it reads after the log's active sequence is applied: a map of replaced
// 4 KiB sectors consulted on every read. The file itself is never written.
class LoggedFile {
 public:
  LoggedFile(std::unique_ptr<File> file, uint64_t real_size)
      : file_(std::move(file)), real_size_(real_size), size_(real_size) {}

  const std::string& path() const { return file_->path(); }
  uint64_t real_size() const { return real_size_; }
  uint64_t size() const { return size_; }
  bool replayed() const { return !overlay_.empty() || size_ != real_size_; }

  // Reads [off, off+buf.size()), which must lie inside size(); `what` names the structure.
  Status ReadAt(uint64_t off, std::span<uint8_t> buf, const std::string& what) const {
    uint64_t end;
    if (!CheckedAdd(off, buf.size(), &end) || end > size_) {
      return Status::Corrupt(path() + ": " + what + " at " + Hex(off) + " (" +
                             std::to_string(buf.size()) +
                             " bytes) lies past the end of the file (" + Hex(size_) + ")");
    }
    if (buf.empty()) return Status::Ok();
    uint64_t in_file = off < real_size_ ? std::min<uint64_t>(buf.size(), real_size_ - off) : 0;
    if (in_file > 0) {
      FERRY_TRY_CTX(file_->ReadAt(off, buf.first(in_file)), "read " + what);
    }
    std::memset(buf.data() + in_file, 0, buf.size() - in_file);
    if (overlay_.empty()) return Status::Ok();
    for (auto it = overlay_.lower_bound(RoundDown(off, kLogSectorSize));
         it != overlay_.end() && it->first < end; ++it) {
      uint64_t a = std::max(off, it->first);
      uint64_t b = std::min(end, it->first + kLogSectorSize);
      if (it->second) {
        std::memcpy(buf.data() + (a - off), it->second->data() + (a - it->first), b - a);
      } else {
        std::memset(buf.data() + (a - off), 0, b - a);
      }
    }
    return Status::Ok();
  }

  Status Apply(const LogWrite& w, uint64_t* budget) {
    uint64_t length = w.zero_length != 0 ? w.zero_length : kLogSectorSize;
    uint64_t end;
    if (!CheckedAdd(w.file_offset, length, &end) || end > size_) {
      return Status::Corrupt(path() + ": log descriptor writes " + Hex(length) + " bytes at " +
                             Hex(w.file_offset) + ", past the end of the file (" + Hex(size_) +
                             ")");
    }
    std::shared_ptr<const std::vector<uint8_t>> data;
    if (w.zero_length == 0) data = std::make_shared<const std::vector<uint8_t>>(w.data);
    for (uint64_t s = w.file_offset; s < end; s += kLogSectorSize) {
      if (*budget == 0) {
        return Status::TooLarge(path() + ": log replay touches more than " +
                                std::to_string(kMaxOverlaySectors) + " sectors");
      }
      --*budget;
      overlay_[s] = data;
    }
    return Status::Ok();
  }
  void Extend(uint64_t size) { size_ = std::max(size_, size); }

 private:
  std::unique_ptr<File> file_;
  uint64_t real_size_;
  uint64_t size_;
  std::map<uint64_t, std::shared_ptr<const std::vector<uint8_t>>> overlay_;  // null: zeros
};

struct Geometry {
  uint32_t block_size = 0;
  uint32_t logical_sector = 0;
  uint32_t physical_sector = 0;
  uint64_t virtual_size = 0;
  uint64_t chunk_ratio = 0;
  bool has_parent = false;
  bool leave_allocated = false;
  Guid disk_id;
};

// ---- log replay ([MS-VHDX] 2.3) ----

struct ParsedLogEntry {
  uint64_t start = 0;  // byte offset inside the log
  uint64_t length = 0;
  uint64_t sequence = 0;
  uint32_t tail = 0;
  uint64_t flushed_file_offset = 0;
  uint64_t last_file_offset = 0;
  std::vector<LogWrite> writes;
};

// Parses the entry starting at `start` of the circular log; nullopt if it is not a valid
// entry (bad signature, GUID, length, CRC, descriptor or data sector).
std::optional<ParsedLogEntry> ParseLogEntry(const std::vector<uint8_t>& log, uint64_t start,
                                            const Guid& log_guid, uint64_t* scan_budget) {
  const uint64_t log_length = log.size();
  const uint8_t* h = log.data() + start;
  if (LoadLE32(h) != kLogEntrySignature) return std::nullopt;
  ParsedLogEntry e;
  e.start = start;
  e.length = LoadLE32(h + 8);
  e.tail = LoadLE32(h + 12);
  e.sequence = LoadLE64(h + 16);
  uint64_t descriptors = LoadLE32(h + 24);
  if (e.length == 0 || e.length % kLogSectorSize != 0 || e.length > log_length) {
    return std::nullopt;
  }
  if (e.sequence == 0 || Guid::Load(h + 32) != log_guid) return std::nullopt;
  e.flushed_file_offset = LoadLE64(h + 48);
  e.last_file_offset = LoadLE64(h + 56);
  uint64_t desc_sectors = LogDescriptorSectors(descriptors);
  if (desc_sectors * kLogSectorSize > e.length) return std::nullopt;
  if (*scan_budget < e.length) return std::nullopt;
  *scan_budget -= e.length;
  // The entry may wrap around the end of the log.
  std::vector<uint8_t> bytes(e.length);
  for (uint64_t i = 0; i < e.length; i += kLogSectorSize) {
    std::memcpy(bytes.data() + i, log.data() + (start + i) % log_length, kLogSectorSize);
  }
  uint32_t stored = LoadLE32(bytes.data() + 4);
  std::memset(bytes.data() + 4, 0, 4);
  if (Crc32c(bytes) != stored) return std::nullopt;
  uint64_t data_sector = desc_sectors;
  const uint64_t total_sectors = e.length / kLogSectorSize;
  for (uint64_t i = 0; i < descriptors; ++i) {
    const uint8_t* d = bytes.data() + kLogEntryHeaderSize + i * kLogDescriptorSize;
    if (LoadLE64(d + 24) != e.sequence) return std::nullopt;
    LogWrite w;
    w.file_offset = LoadLE64(d + 16);
    if (w.file_offset % kLogSectorSize != 0) return std::nullopt;
    uint32_t sig = LoadLE32(d);
    if (sig == kLogZeroDescSignature) {
      w.zero_length = LoadLE64(d + 8);
      if (w.zero_length % kLogSectorSize != 0) return std::nullopt;
      if (w.zero_length == 0) continue;
    } else if (sig == kLogDataDescSignature) {
      if (data_sector >= total_sectors) return std::nullopt;
      const uint8_t* s = bytes.data() + data_sector * kLogSectorSize;
      ++data_sector;
      uint64_t seq = uint64_t(LoadLE32(s + 4)) << 32 | LoadLE32(s + 4092);
      if (LoadLE32(s) != kLogDataSectorSignature || seq != e.sequence) return std::nullopt;
      w.data.resize(kLogSectorSize);
      std::memcpy(w.data.data(), d + 8, 8);  // leading bytes
      std::memcpy(w.data.data() + 8, s + 8, 4084);
      std::memcpy(w.data.data() + 4092, d + 4, 4);  // trailing bytes
    } else {
      return std::nullopt;
    }
    e.writes.push_back(std::move(w));
  }
  return e;
}

// Finds the active sequence of the log and applies it to `file` in memory.
Status ReplayLog(LoggedFile* file, const Header& header, ImageInfo* info) {
  const std::string& path = file->path();
  if (header.log_version != 0) {
    return Status::Unsupported(path + ": log version " + std::to_string(header.log_version) +
                               " (only 0 is known)");
  }
  uint64_t log_end;
  if (header.log_offset < kHeaderSectionSize || header.log_offset % kObjectAlignment != 0 ||
      header.log_length == 0 || header.log_length % kObjectAlignment != 0 ||
      !CheckedAdd(header.log_offset, header.log_length, &log_end)) {
    return Status::Corrupt(path + ": log at " + Hex(header.log_offset) + " length " +
                           Hex(header.log_length) + " is not 1 MiB aligned inside the file");
  }
  if (header.log_length > kMaxLogLength) {
    return Status::TooLarge(path + ": log length " + Hex(header.log_length) + " exceeds " +
                            Hex(kMaxLogLength));
  }
  if (log_end > file->real_size()) {
    return Status::Corrupt(path + ": log at " + Hex(header.log_offset) + " (" +
                           Hex(header.log_length) + " bytes) lies past the end of the file (" +
                           Hex(file->real_size()) + ")");
  }
  std::vector<uint8_t> log(header.log_length);
  FERRY_TRY(file->ReadAt(header.log_offset, log, "log"));

  uint64_t scan_budget = kMaxLogScanBytes;
  std::map<uint64_t, ParsedLogEntry> entries;
  for (uint64_t s = 0; s < log.size(); s += kLogSectorSize) {
    auto e = ParseLogEntry(log, s, header.log_guid, &scan_budget);
    if (e) entries.emplace(s, std::move(*e));
  }
  auto next_of = [&](const ParsedLogEntry& e) -> const ParsedLogEntry* {
    auto it = entries.find((e.start + e.length) % log.size());
    if (it == entries.end() || it->second.sequence != e.sequence + 1) return nullptr;
    return &it->second;
  };
  // Chains start at entries that no other entry continues; sequence numbers grow strictly
  // along a chain, so chains cannot loop.
  std::map<uint64_t, bool> continued;
  for (const auto& [start, e] : entries) {
    if (const ParsedLogEntry* n = next_of(e)) continued[n->start] = true;
  }
  std::vector<const ParsedLogEntry*> best;
  for (const auto& [start, e] : entries) {
    if (continued.count(start)) continue;
    std::vector<const ParsedLogEntry*> chain = {&e};
    while (chain.size() <= entries.size()) {
      const ParsedLogEntry* n = next_of(*chain.back());
      if (n == nullptr) break;
      chain.push_back(n);
    }
    if (best.empty() || chain.back()->sequence > best.back()->sequence) best = chain;
  }
  if (best.empty()) {
    info->problems.push_back("log GUID " + header.log_guid.ToString() +
                             " is set but the log holds no valid entry; nothing replayed");
    info->details.emplace_back("log", "present, no valid entries");
    return Status::Ok();
  }
  // [MS-VHDX] 2.3.3: the head entry's tail names the first entry still to be replayed.
  size_t first = 0;
  bool tail_found = false;
  for (size_t i = 0; i < best.size(); ++i) {
    if (best[i]->start == best.back()->tail) {
      first = i;
      tail_found = true;
    }
  }
  if (!tail_found) {
    info->problems.push_back("log head entry's tail " + Hex(best.back()->tail) +
                             " is not an entry of its sequence; replayed the whole sequence");
  }
  uint64_t overlay_budget = kMaxOverlaySectors;
  for (size_t i = first; i < best.size(); ++i) {
    const ParsedLogEntry& e = *best[i];
    if (e.flushed_file_offset > file->real_size()) {
      return Status::Corrupt(path + ": log entry " + std::to_string(e.sequence) +
                             " needs the file to be at least " + Hex(e.flushed_file_offset) +
                             " bytes but it is " + Hex(file->real_size()) + " (truncated image)");
    }
    file->Extend(std::min(e.last_file_offset, kMaxVirtualSize * 2));
    for (const auto& w : e.writes) FERRY_TRY(file->Apply(w, &overlay_budget));
  }
  info->details.emplace_back("log", "replayed in memory (" + std::to_string(best.size() - first) +
                                        " entries, sequence " +
                                        std::to_string(best[first]->sequence) + ".." +
                                        std::to_string(best.back()->sequence) + ")");
  return Status::Ok();
}

// ---- the source ----

class VhdxSource final : public BlockSource {
 public:
  VhdxSource(LoggedFile file, Geometry g, std::vector<uint64_t> bat,
             std::unique_ptr<BlockSource> parent, ImageInfo info)
      : file_(std::move(file)),
        g_(g),
        bat_(std::move(bat)),
        parent_(std::move(parent)),
        parent_size_(parent_ ? parent_->size() : 0),
        info_(std::move(info)) {}

  uint64_t size() const override { return g_.virtual_size; }

  ImageInfo info() const override {
    ImageInfo info = info_;
    if (parent_) {
      ImageInfo p = parent_->info();
      info.file_size += p.file_size;
      info.files.insert(info.files.end(), p.files.begin(), p.files.end());
      info.backing_chain.insert(info.backing_chain.end(), p.backing_chain.begin(),
                                p.backing_chain.end());
    }
    return info;
  }

  Status Extents(uint64_t offset, uint64_t length, std::vector<Extent>* out) override {
    std::vector<Segment> segs;
    FERRY_TRY(Segments(offset, length, &segs));
    for (const Segment& s : segs) {
      switch (s.kind) {
        case SegKind::kData: Add(out, {s.offset, s.length, ExtentKind::kData}); break;
        case SegKind::kZero: Add(out, {s.offset, s.length, ExtentKind::kZero}); break;
        case SegKind::kAbsent: FERRY_TRY(ParentExtents(s.offset, s.length, out)); break;
      }
    }
    return Status::Ok();
  }

  Status Read(uint64_t offset, std::span<uint8_t> buf) override {
    std::vector<Segment> segs;
    FERRY_TRY(Segments(offset, buf.size(), &segs));
    for (const Segment& s : segs) {
      std::span<uint8_t> part = buf.subspan(s.offset - offset, s.length);
      switch (s.kind) {
        case SegKind::kData: FERRY_TRY(file_.ReadAt(s.file_offset, part, kPayloadWhat)); break;
        case SegKind::kZero: std::memset(part.data(), 0, part.size()); break;
        case SegKind::kAbsent: FERRY_TRY(ParentRead(s.offset, part)); break;
      }
    }
    return Status::Ok();
  }

 private:
  enum class SegKind { kData, kZero, kAbsent };
  struct Segment {
    uint64_t offset, length;
    SegKind kind;
    uint64_t file_offset;  // kData only
  };

  static void Add(std::vector<Extent>* out, Extent e) {
    if (e.length == 0) return;
    if (!out->empty() && out->back().kind == e.kind &&
        out->back().offset + out->back().length == e.offset) {
      out->back().length += e.length;
    } else {
      out->push_back(e);
    }
  }
  static void AddSeg(std::vector<Segment>* out, Segment s) {
    if (s.length == 0) return;
    if (!out->empty()) {
      Segment& b = out->back();
      if (b.kind == s.kind && b.offset + b.length == s.offset &&
          (s.kind != SegKind::kData || b.file_offset + b.length == s.file_offset)) {
        b.length += s.length;
        return;
      }
    }
    out->push_back(s);
  }

  Status Segments(uint64_t offset, uint64_t length, std::vector<Segment>* out) const {
    const uint64_t end = offset + length;
    uint64_t pos = offset;
    while (pos < end) {
      uint64_t block = pos / g_.block_size;
      uint64_t block_start = block * g_.block_size;
      uint64_t seg_end = std::min(end, block_start + g_.block_size);
      uint64_t entry = bat_[BatIndexOfBlock(block, g_.chunk_ratio)];
      switch (static_cast<PayloadState>(BatState(entry))) {
        case PayloadState::kFullyPresent:
          AddSeg(out, {pos, seg_end - pos, SegKind::kData, BatOffset(entry) + (pos - block_start)});
          break;
        case PayloadState::kZero:
        case PayloadState::kUnmapped:
        case PayloadState::kUnmappedV1: AddSeg(out, {pos, seg_end - pos, SegKind::kZero, 0}); break;
        case PayloadState::kPartiallyPresent:
          FERRY_TRY(PartialSegments(block, entry, pos, seg_end, out));
          break;
        default:  // not present / undefined (validated at open)
          AddSeg(out, {pos, seg_end - pos, SegKind::kAbsent, 0});
          break;
      }
      pos = seg_end;
    }
    return Status::Ok();
  }

  // A partially present block of a differencing image: its sector bitmap says which logical
  // sectors are here (bit set) and which come from the parent.
  Status PartialSegments(uint64_t block, uint64_t entry, uint64_t pos, uint64_t end,
                         std::vector<Segment>* out) const {
    const uint64_t block_start = block * g_.block_size;
    const uint64_t lss = g_.logical_sector;
    const uint64_t sectors_per_block = g_.block_size / lss;
    uint64_t chunk = block / g_.chunk_ratio;
    uint64_t bitmap_entry = bat_[BatIndexOfBitmap(chunk, g_.chunk_ratio)];
    uint64_t first_bit = (block % g_.chunk_ratio) * sectors_per_block;
    uint64_t s0 = (pos - block_start) / lss;
    uint64_t s1 = DivRoundUp(end - block_start, lss);
    uint64_t byte0 = (first_bit + s0) / 8, byte1 = DivRoundUp(first_bit + s1, 8);
    std::vector<uint8_t> bits(byte1 - byte0);
    FERRY_TRY(file_.ReadAt(BatOffset(bitmap_entry) + byte0, bits,
                           "sector bitmap of chunk " + std::to_string(chunk)));
    uint64_t s = s0;
    while (s < s1) {
      auto bit = [&](uint64_t sector) {
        uint64_t i = first_bit + sector - byte0 * 8;
        return (bits[i / 8] >> (i % 8)) & 1;
      };
      bool present = bit(s);
      uint64_t run_end = s + 1;
      while (run_end < s1 && bit(run_end) == present) ++run_end;
      uint64_t a = std::max(pos, block_start + s * lss);
      uint64_t b = std::min(end, block_start + run_end * lss);
      if (present) {
        AddSeg(out, {a, b - a, SegKind::kData, BatOffset(entry) + (a - block_start)});
      } else {
        AddSeg(out, {a, b - a, SegKind::kAbsent, 0});
      }
      s = run_end;
    }
    return Status::Ok();
  }

  Status ParentExtents(uint64_t offset, uint64_t length, std::vector<Extent>* out) const {
    if (!parent_) {
      Add(out, {offset, length, ExtentKind::kHole});
      return Status::Ok();
    }
    uint64_t in_parent = offset < parent_size_ ? std::min(length, parent_size_ - offset) : 0;
    if (in_parent > 0) {
      std::vector<Extent> tmp;
      FERRY_TRY(parent_->Extents(offset, in_parent, &tmp));
      for (const Extent& e : tmp) Add(out, e);
    }
    Add(out, {offset + in_parent, length - in_parent, ExtentKind::kHole});
    return Status::Ok();
  }

  Status ParentRead(uint64_t offset, std::span<uint8_t> buf) const {
    uint64_t in_parent = 0;
    if (parent_ && offset < parent_size_) {
      in_parent = std::min<uint64_t>(buf.size(), parent_size_ - offset);
      FERRY_TRY(parent_->Read(offset, buf.first(in_parent)));
    }
    std::memset(buf.data() + in_parent, 0, buf.size() - in_parent);
    return Status::Ok();
  }

  LoggedFile file_;
  const Geometry g_;
  const std::vector<uint64_t> bat_;
  std::unique_ptr<BlockSource> parent_;
  const uint64_t parent_size_;
  const ImageInfo info_;
};

// ---- opening ----

struct RegionInfo {
  uint64_t offset = 0;
  uint32_t length = 0;
};

Result<std::vector<uint8_t>> ReadTableCopy(const LoggedFile& file, uint64_t off, uint64_t len,
                                           const std::string& what) {
  std::vector<uint8_t> b(len);
  FERRY_TRY(file.ReadAt(off, b, what));
  return b;
}

// Validates one region table copy; returns the BAT and metadata regions.
Status ParseRegionTable(const LoggedFile& file, std::span<const uint8_t> t, uint64_t at,
                        RegionInfo* bat, RegionInfo* meta) {
  const std::string where = file.path() + ": region table at " + Hex(at);
  if (LoadLE32(t.data()) != kRegionSignature) {
    return Status::Corrupt(where + ": signature is not 'regi'");
  }
  uint32_t stored = LoadLE32(t.data() + 4);
  std::vector<uint8_t> copy(t.begin(), t.end());
  std::memset(copy.data() + 4, 0, 4);
  uint32_t computed = Crc32c(copy);
  if (stored != computed) {
    return Status::Corrupt(where + ": CRC-32C mismatch (stored " + Hex(stored) + ", computed " +
                           Hex(computed) + ")");
  }
  uint32_t count = LoadLE32(t.data() + 8);
  if (count > kMaxTableEntries) {
    return Status::Corrupt(where + ": entry count " + std::to_string(count) + " exceeds " +
                           std::to_string(kMaxTableEntries));
  }
  bool have_bat = false, have_meta = false;
  for (uint32_t i = 0; i < count; ++i) {
    const uint8_t* e = t.data() + 16 + 32 * i;
    Guid guid = Guid::Load(e);
    uint64_t off = LoadLE64(e + 16);
    uint32_t len = LoadLE32(e + 24);
    bool required = (LoadLE32(e + 28) & kRegionRequired) != 0;
    const std::string entry = where + " entry " + std::to_string(i) + " " + guid.ToString();
    bool is_bat = guid == BatRegionGuid(), is_meta = guid == MetadataRegionGuid();
    if (!is_bat && !is_meta) {
      if (required) {
        return Status::Unsupported(entry + ": unknown region marked required");
      }
      continue;
    }
    if ((is_bat && have_bat) || (is_meta && have_meta)) {
      return Status::Corrupt(entry + ": region listed twice");
    }
    uint64_t end;
    if (off < kHeaderSectionSize || off % kObjectAlignment != 0 || len == 0 ||
        len % kObjectAlignment != 0 || !CheckedAdd(off, len, &end)) {
      return Status::Corrupt(entry + ": region at " + Hex(off) + " length " + Hex(len) +
                             " is not 1 MiB aligned after the header section");
    }
    if (end > file.size()) {
      return Status::Corrupt(entry + ": region at " + Hex(off) + " (" + Hex(len) +
                             " bytes) lies past the end of the file (" + Hex(file.size()) + ")");
    }
    (is_bat ? *bat : *meta) = {off, len};
    (is_bat ? have_bat : have_meta) = true;
  }
  if (!have_bat) return Status::Corrupt(where + ": no BAT region");
  if (!have_meta) return Status::Corrupt(where + ": no metadata region");
  return Status::Ok();
}

struct ParentLocator {
  std::vector<std::pair<std::string, std::string>> entries;
  std::string Get(const std::string& key) const {
    for (const auto& [k, v] : entries) {
      if (k == key) return v;
    }
    return "";
  }
};

Result<ParentLocator> ParseParentLocator(const std::string& where, std::span<const uint8_t> item) {
  if (item.size() < 20) return Status::Corrupt(where + ": shorter than its 20-byte header");
  Guid type = Guid::Load(item.data());
  if (type != VhdxParentLocatorTypeGuid()) {
    return Status::Unsupported(where + ": locator type " + type.ToString() +
                               " (only VHDX parents are supported)");
  }
  uint32_t count = LoadLE16(item.data() + 18);
  if (count > kMaxLocatorEntries || 20 + 12ull * count > item.size()) {
    return Status::Corrupt(where + ": " + std::to_string(count) +
                           " key/value entries do not fit in " + std::to_string(item.size()) +
                           " bytes");
  }
  ParentLocator loc;
  for (uint32_t i = 0; i < count; ++i) {
    const uint8_t* e = item.data() + 20 + 12 * i;
    uint64_t ko = LoadLE32(e), vo = LoadLE32(e + 4), kl = LoadLE16(e + 8), vl = LoadLE16(e + 10);
    if (ko + kl > item.size() || vo + vl > item.size() || kl == 0 || vl == 0) {
      return Status::Corrupt(where + " entry " + std::to_string(i) + ": key at " + Hex(ko) +
                             " or value at " + Hex(vo) + " lies outside the item");
    }
    auto key = Utf16LeToUtf8(item.subspan(ko, kl));
    auto value = Utf16LeToUtf8(item.subspan(vo, vl));
    if (!key || !value) {
      return Status::Corrupt(where + " entry " + std::to_string(i) + ": invalid UTF-16");
    }
    loc.entries.emplace_back(std::move(*key), std::move(*value));
  }
  return loc;
}

// A Windows path from a parent locator as a path on this host: backslashes become slashes;
// "\\?\" and a drive letter are dropped from absolute paths.
std::string HostPath(std::string p, bool absolute) {
  std::replace(p.begin(), p.end(), '\\', '/');
  if (!absolute) return p;
  if (p.rfind("//?/", 0) == 0) p = p.substr(4);
  if (p.size() >= 2 && p[1] == ':') p = p.substr(2);
  return p;
}

std::string StripBraces(std::string s) {
  if (s.size() >= 2 && s.front() == '{' && s.back() == '}') s = s.substr(1, s.size() - 2);
  std::transform(s.begin(), s.end(), s.begin(), [](char c) { return std::tolower(c); });
  return s;
}

Result<std::unique_ptr<BlockSource>> OpenParent(const OpenContext& ctx, const std::string& path,
                                                const ParentLocator& loc, ImageInfo* info) {
  std::string linkage = loc.Get("parent_linkage");
  if (linkage.empty()) {
    return Status::Corrupt(path + ": parent locator has no parent_linkage");
  }
  std::vector<std::pair<std::string, bool>> candidates;
  if (std::string rel = loc.Get("relative_path"); !rel.empty()) {
    candidates.emplace_back(HostPath(rel, false), false);
  }
  if (std::string abs = loc.Get("absolute_win32_path"); !abs.empty()) {
    candidates.emplace_back(HostPath(abs, true), true);
  }
  if (candidates.empty()) {
    return Status::Corrupt(path +
                           ": parent locator has neither relative_path nor "
                           "absolute_win32_path");
  }
  std::string tried;
  std::string resolved;
  for (const auto& [candidate, absolute] : candidates) {
    auto r = ctx.ResolveReference(path, candidate, "parent");
    if (r.ok()) {
      resolved = *r;
      break;
    }
    if (r.status().code() != ErrorCode::kNotFound) return std::move(r).status();
    tried += (tried.empty() ? "" : "; ") + r.status().message();
  }
  if (resolved.empty()) return Status::NotFound(tried);
  FERRY_ASSIGN_OR_RETURN(auto parent, ctx.OpenBacking(resolved, ImageFormat::kVhdx));
  ImageInfo pinfo = parent->info();
  std::string parent_guid;
  for (const auto& [k, v] : pinfo.details) {
    if (k == "data_write_guid") parent_guid = v;
  }
  std::string linkage2 = loc.Get("parent_linkage2");
  if (StripBraces(parent_guid) != StripBraces(linkage) &&
      (linkage2.empty() || StripBraces(parent_guid) != StripBraces(linkage2))) {
    return Status::Corrupt(path + ": parent_linkage " + linkage +
                           " does not match the "
                           "DataWriteGuid " +
                           parent_guid + " of parent " + resolved +
                           " (the parent changed after this differencing image was made)");
  }
  info->backing_chain.push_back(resolved);
  info->details.emplace_back("parent_linkage", linkage);
  return parent;
}

Result<std::unique_ptr<BlockSource>> Open(const OpenContext& ctx, std::unique_ptr<File> raw) {
  const std::string path = raw->path();
  FERRY_ASSIGN_OR_RETURN(uint64_t real_size, raw->Size());
  if (real_size < kHeaderSectionSize) {
    return Status::Corrupt(path + ": file is " + std::to_string(real_size) +
                           " bytes, smaller than the 1 MiB VHDX header section (truncated?)");
  }
  LoggedFile file(std::move(raw), real_size);
  ImageInfo info;
  info.format = "vhdx";
  info.file_size = real_size;
  info.files = {path};

  // [MS-VHDX] 2.2.1 file identifier.
  uint8_t sig[8];
  FERRY_TRY(file.ReadAt(kFileIdentifierOffset, sig, "file identifier"));
  if (std::memcmp(sig, kFileSignature.data(), 8) != 0) {
    return Status::Corrupt(path + ": file identifier at 0x0 is not 'vhdxfile'");
  }

  // 2.2.2 headers: the valid one with the higher sequence number is current.
  std::optional<Header> current;
  int current_index = 0;
  std::string header_errors;
  const uint64_t header_offsets[2] = {kHeader1Offset, kHeader2Offset};
  for (int i = 0; i < 2; ++i) {
    std::vector<uint8_t> b(kHeaderSize);
    FERRY_TRY(file.ReadAt(header_offsets[i], b, "header " + std::to_string(i + 1)));
    auto h = DecodeHeader(b);
    if (!h.ok()) {
      if (h.status().code() == ErrorCode::kUnsupported) {
        return Status::Unsupported(path + ": header at " + Hex(header_offsets[i]) + ": " +
                                   h.status().message());
      }
      std::string e = "header at " + Hex(header_offsets[i]) + ": " + h.status().message();
      header_errors += (header_errors.empty() ? "" : "; ") + e;
      continue;
    }
    if (!current || h->sequence_number > current->sequence_number) {
      current = *h;
      current_index = i;
    }
  }
  if (!current) {
    return Status::Corrupt(path + ": no valid VHDX header (" + header_errors +
                           "); an unfinished Ferry image also looks like this");
  }
  if (!header_errors.empty()) info.problems.push_back(header_errors);
  const Header& header = *current;

  // 2.3: a non-zero log GUID means the log must be replayed; we do it in memory.
  if (!header.log_guid.IsZero()) {
    FERRY_TRY(ReplayLog(&file, header, &info));
  } else {
    info.details.emplace_back("log", "none");
  }

  // 2.2.3 region tables: the first valid copy wins.
  RegionInfo bat_region, meta_region;
  std::string rt_errors;
  bool rt_ok = false;
  for (uint64_t at : {kRegionTable1Offset, kRegionTable2Offset}) {
    FERRY_ASSIGN_OR_RETURN(auto t, ReadTableCopy(file, at, kRegionTableSize, "region table"));
    Status s = ParseRegionTable(file, t, at, &bat_region, &meta_region);
    if (s.ok()) {
      rt_ok = true;
      break;
    }
    if (s.code() != ErrorCode::kCorrupt) return s;
    rt_errors += (rt_errors.empty() ? "" : "; ") + s.message();
  }
  if (!rt_ok) return Status::Corrupt(rt_errors);
  if (!rt_errors.empty()) info.problems.push_back(rt_errors);

  // 2.6 metadata region.
  const std::string mwhere = path + ": metadata table at " + Hex(meta_region.offset);
  FERRY_ASSIGN_OR_RETURN(
      auto mt, ReadTableCopy(file, meta_region.offset, kMetadataTableSize, "metadata table"));
  if (LoadLE64(mt.data()) != kMetadataSignature) {
    return Status::Corrupt(mwhere + ": signature is not 'metadata'");
  }
  uint32_t mcount = LoadLE16(mt.data() + 10);
  if (mcount > kMaxTableEntries) {
    return Status::Corrupt(mwhere + ": entry count " + std::to_string(mcount) + " exceeds " +
                           std::to_string(kMaxTableEntries));
  }
  std::map<std::string, std::vector<uint8_t>> items;  // by GUID string
  for (uint32_t i = 0; i < mcount; ++i) {
    const uint8_t* e = mt.data() + 32 + 32 * i;
    Guid id = Guid::Load(e);
    uint32_t off = LoadLE32(e + 16), len = LoadLE32(e + 20), flags = LoadLE32(e + 24);
    const std::string where = mwhere + " entry " + std::to_string(i) + " " + id.ToString();
    bool known = id == FileParametersGuid() || id == VirtualDiskSizeGuid() ||
                 id == Page83DataGuid() || id == LogicalSectorSizeGuid() ||
                 id == PhysicalSectorSizeGuid() || id == ParentLocatorGuid();
    if (!known) {
      if (flags & kMetaIsRequired) {
        return Status::Unsupported(where + ": unknown metadata item marked required");
      }
      continue;
    }
    if (items.count(id.ToString())) return Status::Corrupt(where + ": item listed twice");
    if (len > kMaxMetadataItemLength || (len > 0 && off < kMetadataTableSize) ||
        uint64_t(off) + len > meta_region.length) {
      return Status::Corrupt(where + ": item at " + Hex(off) + " length " + Hex(len) +
                             " lies outside the metadata region (" + Hex(meta_region.length) +
                             " bytes) or overlaps its table");
    }
    std::vector<uint8_t> data(len);
    FERRY_TRY(file.ReadAt(meta_region.offset + off, data, "metadata item " + id.ToString()));
    items[id.ToString()] = std::move(data);
  }
  auto item = [&](const Guid& id, size_t min_len,
                  const char* name) -> Result<const std::vector<uint8_t>*> {
    auto it = items.find(id.ToString());
    if (it == items.end()) {
      return Status::Corrupt(mwhere + ": required item " + name + " is missing");
    }
    if (it->second.size() < min_len) {
      return Status::Corrupt(mwhere + ": item " + name + " is " +
                             std::to_string(it->second.size()) + " bytes, expected " +
                             std::to_string(min_len));
    }
    return &it->second;
  };
  Geometry g;
  FERRY_ASSIGN_OR_RETURN(auto params, item(FileParametersGuid(), 8, "file parameters"));
  g.block_size = LoadLE32(params->data());
  uint32_t file_flags = LoadLE32(params->data() + 4);
  g.leave_allocated = file_flags & kLeaveBlocksAllocated;
  g.has_parent = file_flags & kHasParent;
  if (!IsPowerOfTwo(g.block_size) || g.block_size < kMinBlockSize || g.block_size > kMaxBlockSize) {
    return Status::Corrupt(mwhere + ": file parameters: block size " +
                           std::to_string(g.block_size) +
                           " is not a power of two between 1 MiB and 256 MiB");
  }
  FERRY_ASSIGN_OR_RETURN(auto vsize, item(VirtualDiskSizeGuid(), 8, "virtual disk size"));
  g.virtual_size = LoadLE64(vsize->data());
  FERRY_ASSIGN_OR_RETURN(auto lss, item(LogicalSectorSizeGuid(), 4, "logical sector size"));
  g.logical_sector = LoadLE32(lss->data());
  FERRY_ASSIGN_OR_RETURN(auto pss, item(PhysicalSectorSizeGuid(), 4, "physical sector size"));
  g.physical_sector = LoadLE32(pss->data());
  FERRY_ASSIGN_OR_RETURN(auto page83, item(Page83DataGuid(), 16, "page 83 data"));
  g.disk_id = Guid::Load(page83->data());
  if (g.logical_sector != 512 && g.logical_sector != 4096) {
    return Status::Corrupt(mwhere + ": logical sector size " + std::to_string(g.logical_sector) +
                           " is neither 512 nor 4096");
  }
  if (g.physical_sector != 512 && g.physical_sector != 4096) {
    return Status::Corrupt(mwhere + ": physical sector size " + std::to_string(g.physical_sector) +
                           " is neither 512 nor 4096");
  }
  if (g.virtual_size > kMaxVirtualSize || g.virtual_size % g.logical_sector != 0) {
    return Status::Corrupt(mwhere + ": virtual disk size " + std::to_string(g.virtual_size) +
                           " is over 64 TiB or not a multiple of the logical sector size");
  }
  g.chunk_ratio = ChunkRatio(g.logical_sector, g.block_size);

  // 2.5 BAT.
  uint64_t entries = BatEntryCount(g.virtual_size, g.block_size, g.logical_sector, g.has_parent);
  const std::string bwhere = path + ": BAT at " + Hex(bat_region.offset);
  if (entries * 8 > bat_region.length) {
    return Status::Corrupt(bwhere + ": region of " + Hex(bat_region.length) + " bytes is too " +
                           "small for " + std::to_string(entries) + " entries");
  }
  if (entries * 8 > kMaxBatBytes) {
    return Status::TooLarge(bwhere + ": " + std::to_string(entries) + " entries");
  }
  std::vector<uint8_t> bat_bytes(entries * 8);
  FERRY_TRY(file.ReadAt(bat_region.offset, bat_bytes, "BAT"));
  std::vector<uint64_t> bat(entries);
  uint64_t allocated = 0;
  for (uint64_t i = 0; i < entries; ++i) {
    uint64_t e = LoadLE64(bat_bytes.data() + 8 * i);
    bat[i] = e;
    uint8_t state = BatState(e);
    bool is_bitmap = i % (g.chunk_ratio + 1) == g.chunk_ratio;
    uint64_t block = i - i / (g.chunk_ratio + 1);
    std::string what = is_bitmap ? "sector bitmap entry " + std::to_string(i / (g.chunk_ratio + 1))
                                 : "payload block " + std::to_string(block);
    uint64_t need = 0;
    if (is_bitmap) {
      if (state == kBitmapPresent) {
        need = kSectorBitmapBlockSize;
      } else if (state != kBitmapNotPresent) {
        return Status::Corrupt(bwhere + " entry " + std::to_string(i) + " (" + what +
                               "): invalid state " + std::to_string(state));
      }
    } else {
      switch (static_cast<PayloadState>(state)) {
        case PayloadState::kNotPresent:
        case PayloadState::kUndefined:
        case PayloadState::kZero:
        case PayloadState::kUnmapped:
        case PayloadState::kUnmappedV1: break;
        case PayloadState::kFullyPresent: need = g.block_size; break;
        case PayloadState::kPartiallyPresent:
          if (!g.has_parent) {
            return Status::Corrupt(bwhere + " entry " + std::to_string(i) + " (" + what +
                                   "): partially present block in an image without a parent");
          }
          need = g.block_size;
          break;
        default:
          return Status::Corrupt(bwhere + " entry " + std::to_string(i) + " (" + what +
                                 "): invalid state " + std::to_string(state));
      }
      if (block * g.block_size >= g.virtual_size && state != 0) {
        // Entries past the last block exist only to fill a chunk of a differencing BAT.
        bat[i] = 0;
        continue;
      }
    }
    if (need == 0) continue;
    uint64_t off = BatOffset(e), end;
    if (off < kHeaderSectionSize || !CheckedAdd(off, need, &end) || end > file.size()) {
      return Status::Corrupt(bwhere + " entry " + std::to_string(i) + " (" + what + "): data at " +
                             Hex(off) + " (" + Hex(need) +
                             " bytes) lies past the end of the file (" + Hex(file.size()) +
                             ") or inside the header section (truncated image?)");
    }
    if (!is_bitmap) {
      allocated += std::min<uint64_t>(g.block_size, g.virtual_size - block * g.block_size);
    }
  }
  // Partially present blocks need their chunk's sector bitmap.
  for (uint64_t i = 0; i < entries; ++i) {
    if (i % (g.chunk_ratio + 1) == g.chunk_ratio) continue;
    if (BatState(bat[i]) != uint8_t(PayloadState::kPartiallyPresent)) continue;
    uint64_t chunk = i / (g.chunk_ratio + 1);
    uint64_t bi = BatIndexOfBitmap(chunk, g.chunk_ratio);
    if (bi >= entries || BatState(bat[bi]) != kBitmapPresent) {
      return Status::Corrupt(bwhere + " entry " + std::to_string(i) +
                             ": partially present block but the sector bitmap of chunk " +
                             std::to_string(chunk) + " is not present");
    }
  }

  // 2.6.2.6 parent.
  std::unique_ptr<BlockSource> parent;
  if (g.has_parent) {
    const std::string lwhere = mwhere + ": parent locator";
    FERRY_ASSIGN_OR_RETURN(auto loc_item, item(ParentLocatorGuid(), 20, "parent locator"));
    FERRY_ASSIGN_OR_RETURN(ParentLocator loc, ParseParentLocator(lwhere, *loc_item));
    FERRY_ASSIGN_OR_RETURN(parent, OpenParent(ctx, path, loc, &info));
    if (parent->size() != g.virtual_size) {
      info.problems.push_back("parent size " + std::to_string(parent->size()) +
                              " differs from this image's " + std::to_string(g.virtual_size));
    }
  }

  info.subformat = g.has_parent ? "differencing" : g.leave_allocated ? "fixed" : "dynamic";
  info.virtual_size = g.virtual_size;
  info.allocated_bytes = allocated;
  info.cluster_size = g.block_size;
  info.details.emplace_back("logical_sector_size", std::to_string(g.logical_sector));
  info.details.emplace_back("physical_sector_size", std::to_string(g.physical_sector));
  info.details.emplace_back("disk_id", g.disk_id.ToString());
  info.details.emplace_back("data_write_guid", header.data_write_guid.ToString());
  info.details.emplace_back("file_write_guid", header.file_write_guid.ToString());
  info.details.emplace_back("header", std::to_string(current_index + 1) + " (sequence " +
                                          std::to_string(header.sequence_number) + ")");
  return std::unique_ptr<BlockSource>(std::make_unique<VhdxSource>(
      std::move(file), g, std::move(bat), std::move(parent), std::move(info)));
}

}  // namespace

Result<std::unique_ptr<BlockSource>> OpenVhdx(const OpenContext& ctx, std::unique_ptr<File> file) {
  return Open(ctx, std::move(file));
}

}  // namespace ferry
