// The VHD reader: fixed, dynamic and differencing disks (OpenVhd).
//
// Ownership: VhdSource owns its file and, for a differencing disk, its parent source.
// Thread-safety: the footer, header and BAT are immutable after open; block bitmaps are cached
// under a mutex that is never held during data reads. Extents() and Read() may run
// concurrently.
#include <algorithm>
#include <cctype>
#include <cstring>
#include <mutex>
#include <optional>
#include <unordered_map>

#include "common/bytes.h"
#include "disk/vhd/vhd.h"
#include "disk/vhd/vhd_format.h"

namespace ferry {
namespace {

using vhd::DiskType;
using vhd::DynamicHeader;
using vhd::Footer;
using vhd::kFooterSize;
using vhd::kSectorSize;

// Caps on untrusted header fields (docs/formats/vhd.md "Limits").
constexpr uint32_t kMinBlockSize = 512;
constexpr uint32_t kMaxBlockSize = 256u << 20;
constexpr uint64_t kMaxBatEntries = 1ull << 23;   // 32 MiB of BAT: 2040 GiB in 256 KiB blocks
constexpr uint32_t kMaxLocatorBytes = 64 * 1024;  // a 32767-character UTF-16 path
constexpr size_t kBitmapCacheBytes = 16 << 20;

bool HasCookie(std::span<const uint8_t> bytes, std::string_view cookie, size_t at = 0) {
  return bytes.size() >= at + cookie.size() &&
         std::memcmp(bytes.data() + at, cookie.data(), cookie.size()) == 0;
}

bool CodeIs(const std::array<char, 4>& code, std::string_view want) {
  return std::memcmp(code.data(), want.data(), 4) == 0;
}

// One footer found in the file: the copy at offset 0 or the one at the end.
struct FooterCopy {
  bool present = false;
  uint64_t offset = 0;
  size_t length = kFooterSize;  // 511 for very old images
  std::array<uint8_t, kFooterSize> bytes{};
  uint32_t stored() const { return LoadBE32(bytes.data() + vhd::footer_off::kChecksum); }
  uint32_t computed() const { return vhd::Checksum(bytes, vhd::footer_off::kChecksum); }
  bool checksum_ok() const { return stored() == computed(); }
  uint32_t disk_type() const { return LoadBE32(bytes.data() + vhd::footer_off::kDiskType); }
};

std::string ChecksumMismatch(const std::string& what, uint64_t offset, uint32_t stored,
                             uint32_t computed) {
  return what + " checksum mismatch at offset " + Hex(offset) + ": stored " + Hex(stored) +
         " computed " + Hex(computed);
}

// The tolerance documented in docs/formats/vhd.md ("Checksums"): a footer whose stored
// checksum is that of the same footer with its unique ID zeroed (and, for a differencing
// disk, with disk type "dynamic") was stamped by a tool after the checksum was computed.
// Returns the explanation, or "" if the mismatch is not of that kind.
std::string ExplainFooterMismatch(const FooterCopy& copy) {
  namespace o = vhd::footer_off;
  std::array<uint8_t, kFooterSize> variant = copy.bytes;
  std::fill_n(variant.begin() + o::kUniqueId, 16, 0);
  if (vhd::Checksum(variant, o::kChecksum) == copy.stored()) {
    return "it is the checksum of the footer with its unique ID zeroed: a tool set the ID "
           "after computing the checksum";
  }
  if (copy.disk_type() == static_cast<uint32_t>(DiskType::kDifferencing)) {
    StoreBE32(variant.data() + o::kDiskType, static_cast<uint32_t>(DiskType::kDynamic));
    if (vhd::Checksum(variant, o::kChecksum) == copy.stored()) {
      return "it is the checksum of the footer with its unique ID zeroed and disk type "
             "'dynamic': a tool turned a dynamic disk into a differencing one without "
             "updating the checksum";
    }
  }
  return "";
}

// The same for a differencing disk's header: checksum computed before the parent's unique
// ID and name were filled in.
std::string ExplainHeaderMismatch(std::span<const uint8_t> header, uint32_t stored) {
  namespace o = vhd::header_off;
  std::vector<uint8_t> variant(header.begin(), header.end());
  std::fill_n(variant.begin() + o::kParentUniqueId, 16, 0);
  std::fill_n(variant.begin() + o::kParentName, o::kParentNameSize, 0);
  if (vhd::Checksum(variant, o::kChecksum) == stored) {
    return "it is the checksum of the header with the parent's unique ID and name zeroed: a "
           "tool linked the disk to its parent without updating the checksum";
  }
  return "";
}

std::string BaseName(const std::string& path) {
  size_t slash = path.find_last_of('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

std::string PercentDecode(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && std::isxdigit(static_cast<unsigned char>(s[i + 1])) &&
        std::isxdigit(static_cast<unsigned char>(s[i + 2]))) {
      out += static_cast<char>(std::stoi(s.substr(i + 1, 2), nullptr, 16));
      i += 2;
    } else {
      out += s[i];
    }
  }
  return out;
}

// A place the parent may be: `reference` is what goes to ResolveReference; `origin` says
// where it came from, for messages.
struct ParentCandidate {
  std::string reference;
  std::string origin;
};

// Windows paths ("..\base.vhd", "C:\VMs\base.vhd", "\\server\share\base.vhd") to references
// for this host. Drive and UNC paths cannot be opened here: their file name is looked for
// next to the image instead.
void AddWindowsCandidate(const std::string& raw, const std::string& origin,
                         std::vector<ParentCandidate>* out) {
  if (raw.empty()) return;
  std::string s = raw;
  std::replace(s.begin(), s.end(), '\\', '/');
  const bool drive = s.size() >= 2 && std::isalpha(static_cast<unsigned char>(s[0])) && s[1] == ':';
  if (drive || s[0] == '/') {
    std::string name = BaseName(s);
    if (name.empty()) return;
    out->push_back({name, origin + " '" + raw + "' (a Windows path: tried its file name)"});
    return;
  }
  while (s.size() > 2 && s.compare(0, 2, "./") == 0) s = s.substr(2);
  out->push_back({s, origin + " '" + raw + "'"});
}

// What OpenVhd found: immutable once the source exists.
struct VhdLayout {
  DiskType type = DiskType::kFixed;
  uint32_t block_size = 0;              // dynamic/differencing
  uint32_t bitmap_size = 0;             // bytes of sector bitmap before each block
  std::vector<uint32_t> bat;            // entries covering the virtual size
  std::unique_ptr<BlockSource> parent;  // differencing only
  ImageInfo info;
};

class VhdSource final : public BlockSource {
 public:
  VhdSource(std::unique_ptr<File> file, uint64_t size, VhdLayout layout)
      : file_(std::move(file)),
        size_(size),
        type_(layout.type),
        block_size_(layout.block_size),
        bitmap_size_(layout.bitmap_size),
        bat_(std::move(layout.bat)),
        parent_(std::move(layout.parent)),
        info_(std::move(layout.info)) {}

  uint64_t size() const override { return size_; }
  ImageInfo info() const override { return info_; }

  Status Extents(uint64_t offset, uint64_t length, std::vector<Extent>* out) override;
  Status Read(uint64_t offset, std::span<uint8_t> buf) override;

 private:
  enum class RunKind { kData, kParent, kHole };
  struct Run {
    uint64_t offset;
    uint64_t length;
    RunKind kind;
    uint64_t file_offset;  // kData only
  };

  // Splits [offset, offset+length) into runs stored here, in the parent, or nowhere.
  Status Map(uint64_t offset, uint64_t length, std::vector<Run>* runs);
  // The bitmap of allocated block `block`; null if every sector of the block is present.
  Result<std::shared_ptr<const std::vector<uint8_t>>> Bitmap(uint64_t block);

  const std::unique_ptr<File> file_;
  const uint64_t size_;
  const DiskType type_;
  const uint32_t block_size_;
  const uint32_t bitmap_size_;
  const std::vector<uint32_t> bat_;
  const std::unique_ptr<BlockSource> parent_;
  const ImageInfo info_;

  std::mutex cache_mu_;
  std::unordered_map<uint64_t, std::shared_ptr<const std::vector<uint8_t>>>
      bitmaps_;  // GUARDED_BY(cache_mu_)
};

void Push(std::vector<Extent>* out, size_t first, Extent e) {
  if (e.length == 0) return;
  if (out->size() > first) {
    Extent& last = out->back();
    if (last.kind == e.kind && last.offset + last.length == e.offset) {
      last.length += e.length;
      return;
    }
  }
  out->push_back(e);
}

Result<std::shared_ptr<const std::vector<uint8_t>>> VhdSource::Bitmap(uint64_t block) {
  {
    std::lock_guard<std::mutex> lock(cache_mu_);
    auto it = bitmaps_.find(block);
    if (it != bitmaps_.end()) return it->second;
  }
  auto bits = std::make_shared<std::vector<uint8_t>>(bitmap_size_);
  const uint64_t bitmap_offset = uint64_t(bat_[block]) * kSectorSize;
  FERRY_TRY_CTX(file_->ReadAt(bitmap_offset, *bits),
                "sector bitmap of block " + std::to_string(block) + " at " + Hex(bitmap_offset));
  // Only the sectors inside the disk matter (the last block may be partial).
  const uint64_t block_start = block * block_size_;
  const uint64_t sectors =
      DivRoundUp(std::min<uint64_t>(block_size_, size_ - block_start), kSectorSize);
  bool full = true;
  for (uint64_t s = 0; s < sectors && full; ++s) {
    if (s % 8 == 0 && s + 8 <= sectors) {
      full = (*bits)[s / 8] == 0xFF;
      s += 7;
    } else {
      full = ((*bits)[s / 8] >> (7 - s % 8)) & 1;
    }
  }
  std::shared_ptr<const std::vector<uint8_t>> result;
  if (!full) result = std::move(bits);
  std::lock_guard<std::mutex> lock(cache_mu_);
  if (bitmaps_.size() * bitmap_size_ >= kBitmapCacheBytes) bitmaps_.clear();
  bitmaps_.emplace(block, result);
  return result;
}

Status VhdSource::Map(uint64_t offset, uint64_t length, std::vector<Run>* runs) {
  auto emit = [runs](uint64_t off, uint64_t len, RunKind kind, uint64_t file_off) {
    if (len == 0) return;
    if (!runs->empty()) {
      Run& last = runs->back();
      if (last.kind == kind && last.offset + last.length == off &&
          (kind != RunKind::kData || last.file_offset + last.length == file_off)) {
        last.length += len;
        return;
      }
    }
    runs->push_back({off, len, kind, file_off});
  };
  if (type_ == DiskType::kFixed) {
    emit(offset, length, RunKind::kData, offset);
    return Status::Ok();
  }
  const RunKind absent = parent_ ? RunKind::kParent : RunKind::kHole;
  const uint64_t end = offset + length;
  uint64_t pos = offset;
  while (pos < end) {
    const uint64_t block = pos / block_size_;
    const uint64_t block_start = block * block_size_;
    const uint64_t stop = std::min(end, block_start + block_size_);
    const uint32_t entry = bat_[block];
    if (entry == vhd::kUnallocated) {
      emit(pos, stop - pos, absent, 0);
      pos = stop;
      continue;
    }
    const uint64_t data_base = uint64_t(entry) * kSectorSize + bitmap_size_;
    FERRY_ASSIGN_OR_RETURN(auto bits, Bitmap(block));
    if (!bits) {
      emit(pos, stop - pos, RunKind::kData, data_base + (pos - block_start));
      pos = stop;
      continue;
    }
    const uint8_t* map = bits->data();
    auto bit = [map](uint64_t s) { return ((map[s / 8] >> (7 - s % 8)) & 1) != 0; };
    const uint64_t last_sector = DivRoundUp(stop - block_start, kSectorSize);
    while (pos < stop) {
      const uint64_t sector = (pos - block_start) / kSectorSize;
      const bool present = bit(sector);
      const uint8_t same = present ? 0xFF : 0x00;
      uint64_t s = sector + 1;
      while (s < last_sector) {
        if (s % 8 == 0 && s + 8 <= last_sector && map[s / 8] == same) {
          s += 8;
          continue;
        }
        if (bit(s) != present) break;
        ++s;
      }
      const uint64_t run_end = std::min(stop, block_start + s * kSectorSize);
      emit(pos, run_end - pos, present ? RunKind::kData : absent, data_base + (pos - block_start));
      pos = run_end;
    }
  }
  return Status::Ok();
}

Status VhdSource::Extents(uint64_t offset, uint64_t length, std::vector<Extent>* out) {
  std::vector<Run> runs;
  FERRY_TRY(Map(offset, length, &runs));
  const size_t first = out->size();
  for (const Run& run : runs) {
    switch (run.kind) {
      case RunKind::kHole: Push(out, first, {run.offset, run.length, ExtentKind::kHole}); break;
      case RunKind::kData:
        if (type_ == DiskType::kFixed) {
          // A fixed disk is raw data: the host file's holes are holes of the disk.
          std::vector<std::pair<uint64_t, uint64_t>> ranges;
          FERRY_TRY(file_->DataRanges(run.offset, run.length, &ranges));
          uint64_t pos = run.offset;
          const uint64_t end = run.offset + run.length;
          for (auto [a, b] : ranges) {
            a = std::max(a, pos);
            b = std::min(b, end);
            if (a >= b) continue;
            Push(out, first, {pos, a - pos, ExtentKind::kHole});
            Push(out, first, {a, b - a, ExtentKind::kData});
            pos = b;
          }
          Push(out, first, {pos, end - pos, ExtentKind::kHole});
        } else {
          Push(out, first, {run.offset, run.length, ExtentKind::kData});
        }
        break;
      case RunKind::kParent: {
        const uint64_t end = run.offset + run.length;
        const uint64_t in_parent = std::min(end, std::max(run.offset, parent_->size()));
        if (in_parent > run.offset) {
          std::vector<Extent> sub;
          FERRY_TRY(parent_->Extents(run.offset, in_parent - run.offset, &sub));
          for (const Extent& e : sub) Push(out, first, e);
        }
        Push(out, first, {in_parent, end - in_parent, ExtentKind::kHole});
        break;
      }
    }
  }
  return Status::Ok();
}

Status VhdSource::Read(uint64_t offset, std::span<uint8_t> buf) {
  std::vector<Run> runs;
  FERRY_TRY(Map(offset, buf.size(), &runs));
  for (const Run& run : runs) {
    std::span<uint8_t> part = buf.subspan(run.offset - offset, run.length);
    switch (run.kind) {
      case RunKind::kHole: std::fill(part.begin(), part.end(), 0); break;
      case RunKind::kData: FERRY_TRY(file_->ReadAt(run.file_offset, part)); break;
      case RunKind::kParent: {
        const uint64_t end = run.offset + run.length;
        const uint64_t in_parent = std::min(end, std::max(run.offset, parent_->size()));
        const size_t n = static_cast<size_t>(in_parent - run.offset);
        if (n > 0) FERRY_TRY(parent_->Read(run.offset, part.first(n)));
        std::fill(part.begin() + n, part.end(), 0);
        break;
      }
    }
  }
  return Status::Ok();
}

// Finds, checks and chooses the footer. Records tolerated problems in `problems`.
Result<FooterCopy> ChooseFooter(const File& file, uint64_t file_size,
                                std::vector<std::string>* problems) {
  const std::string& path = file.path();
  if (file_size < vhd::kOldFooterSize) {
    return Status::Corrupt(path + ": " + std::to_string(file_size) +
                           " bytes is too small for a VHD (the footer alone is 512 bytes)");
  }
  FooterCopy head, tail;
  if (file_size >= kFooterSize) {
    std::array<uint8_t, kFooterSize> buf;
    FERRY_TRY(file.ReadAt(0, buf));
    if (HasCookie(buf, vhd::kFooterCookie)) {
      head.present = true;
      head.bytes = buf;
    }
    FERRY_TRY(file.ReadAt(file_size - kFooterSize, buf));
    if (HasCookie(buf, vhd::kFooterCookie)) {
      tail.present = true;
      tail.offset = file_size - kFooterSize;
      tail.bytes = buf;
    } else if (HasCookie(buf, vhd::kFooterCookie, 1)) {
      // Old Virtual PC: a 511-byte footer; the missing byte is reserved (zero).
      tail.present = true;
      tail.offset = file_size - vhd::kOldFooterSize;
      tail.length = vhd::kOldFooterSize;
      std::fill(tail.bytes.begin(), tail.bytes.end(), 0);
      std::memcpy(tail.bytes.data(), buf.data() + 1, vhd::kOldFooterSize);
    }
  } else {
    std::array<uint8_t, vhd::kOldFooterSize> buf;
    FERRY_TRY(file.ReadAt(0, buf));
    if (HasCookie(buf, vhd::kFooterCookie)) {
      tail.present = true;
      tail.length = vhd::kOldFooterSize;
      std::memcpy(tail.bytes.data(), buf.data(), buf.size());
    }
  }
  if (!head.present && !tail.present) {
    return Status::Corrupt(path +
                           ": not a VHD: no footer ('conectix') at offset 0x0 or at the "
                           "end of the file (" +
                           Hex(file_size - kFooterSize) + ")");
  }
  const auto fixed = static_cast<uint32_t>(DiskType::kFixed);
  // A fixed disk has one footer, at the end; the first sector is guest data then.
  if (tail.present && tail.disk_type() == fixed) head.present = false;
  if (head.present && head.disk_type() == fixed && !tail.present) {
    return Status::Corrupt(path +
                           ": the footer at offset 0x0 describes a fixed disk, whose "
                           "footer must be at the end of the file");
  }
  const bool copies_agree = head.present && tail.present && head.bytes == tail.bytes;
  if (tail.present && tail.checksum_ok()) {
    if (tail.disk_type() != fixed) {
      if (!head.present) {
        problems->push_back("no footer copy at offset 0x0 (dynamic disks keep one there)");
      } else if (!copies_agree) {
        problems->push_back("the footer copy at offset 0x0 differs from the footer at " +
                            Hex(tail.offset) + "; using the one at the end");
      }
    }
    return tail;
  }
  if (head.present && head.checksum_ok()) {
    if (tail.present) {
      problems->push_back(ChecksumMismatch("footer", tail.offset, tail.stored(), tail.computed()) +
                          "; using the footer copy at offset 0x0");
    } else {
      problems->push_back("no footer at the end of the file (" + Hex(file_size - kFooterSize) +
                          "): the image was not closed cleanly or was truncated; using the "
                          "footer copy at offset 0x0");
    }
    return head;
  }
  const FooterCopy& bad = tail.present ? tail : head;
  std::string mismatch = ChecksumMismatch("footer", bad.offset, bad.stored(), bad.computed());
  if (copies_agree) {
    std::string why = ExplainFooterMismatch(bad);
    if (!why.empty()) {
      problems->push_back(mismatch + ": accepted because " + why +
                          ", and both footer copies agree (QEMU 7.2 refuses this image: "
                          "\"Incorrect header checksum\")");
      return bad;
    }
  }
  return Status::Corrupt(path + ": " + mismatch);
}

// Reads the parent locator's path text (bounds-checked).
Result<std::string> ReadLocator(const File& file, uint64_t file_size, const vhd::ParentLocator& loc,
                                size_t index) {
  const std::string what = "parent locator " + std::to_string(index);
  if (loc.data_length > kMaxLocatorBytes) {
    return Status::TooLarge(file.path() + ": " + what + " is " + std::to_string(loc.data_length) +
                            " bytes long (limit " + std::to_string(kMaxLocatorBytes) + ")");
  }
  uint64_t end;
  if (!CheckedAdd(loc.data_offset, loc.data_length, &end) || end > file_size) {
    return Status::Corrupt(file.path() + ": " + what + " at " + Hex(loc.data_offset) + " (" +
                           std::to_string(loc.data_length) +
                           " bytes) lies past the end of the file (" + Hex(file_size) + ")");
  }
  std::vector<uint8_t> data(loc.data_length);
  FERRY_TRY(file.ReadAt(loc.data_offset, data));
  switch (loc.platform_code) {
    case vhd::kPlatformW2ru:
    case vhd::kPlatformW2ku: return vhd::Utf16ToUtf8(data, /*big_endian=*/false);
    default: {
      std::string s(data.begin(), data.end());
      return s.substr(0, s.find('\0'));
    }
  }
}

// Every place the parent may be, best first: W2ru, W2ku, Wi2r, Wi2k, MacX locators, then the
// header's parent name.
Result<std::vector<ParentCandidate>> ParentCandidates(const File& file, uint64_t file_size,
                                                      const DynamicHeader& header) {
  struct Kind {
    uint32_t code;
    const char* name;
  };
  static constexpr Kind kOrder[] = {{vhd::kPlatformW2ru, "W2ru locator"},
                                    {vhd::kPlatformW2ku, "W2ku locator"},
                                    {vhd::kPlatformWi2r, "Wi2r locator"},
                                    {vhd::kPlatformWi2k, "Wi2k locator"},
                                    {vhd::kPlatformMacX, "MacX locator"}};
  std::vector<ParentCandidate> out;
  for (const Kind& kind : kOrder) {
    for (size_t i = 0; i < header.locators.size(); ++i) {
      const vhd::ParentLocator& loc = header.locators[i];
      if (loc.platform_code != kind.code || loc.data_length == 0) continue;
      FERRY_ASSIGN_OR_RETURN(std::string text, ReadLocator(file, file_size, loc, i));
      if (text.empty()) continue;
      if (kind.code == vhd::kPlatformMacX) {
        // A file URL: file:///path or file://localhost/path.
        std::string p = text;
        if (p.compare(0, 7, "file://") == 0) p = p.substr(7);
        if (p.compare(0, 9, "localhost") == 0) p = p.substr(9);
        p = PercentDecode(p);
        if (!p.empty()) out.push_back({p, std::string(kind.name) + " '" + text + "'"});
      } else {
        AddWindowsCandidate(text, kind.name, &out);
      }
    }
  }
  AddWindowsCandidate(vhd::Utf16ToUtf8(header.parent_name, /*big_endian=*/true),
                      "parent name in the header", &out);
  return out;
}

Result<std::unique_ptr<BlockSource>> OpenParent(const OpenContext& ctx, const File& file,
                                                uint64_t file_size, const DynamicHeader& header,
                                                std::string* parent_path) {
  const std::string& path = file.path();
  FERRY_ASSIGN_OR_RETURN(auto candidates, ParentCandidates(file, file_size, header));
  if (candidates.empty()) {
    return Status::Corrupt(path +
                           ": differencing disk names no parent (no parent locator "
                           "and an empty parent name in the dynamic disk header)");
  }
  const std::string want = vhd::FormatUuid(header.parent_unique_id);
  std::vector<std::string> tried;
  std::optional<Status> denied, mismatch;
  for (const ParentCandidate& c : candidates) {
    std::string looked = JoinPath(DirName(path), c.reference);
    if (std::find(tried.begin(), tried.end(), looked) != tried.end()) continue;
    tried.push_back(looked);
    auto resolved = ctx.ResolveReference(path, c.reference, "parent");
    if (!resolved.ok()) {
      const Status& s = resolved.status();
      if (s.code() == ErrorCode::kNotFound) continue;
      if (s.code() == ErrorCode::kPermissionDenied) {
        if (!denied) denied = s;
        continue;
      }
      return s;
    }
    FERRY_ASSIGN_OR_RETURN(
        auto parent,
        ctx.OpenBacking(*resolved, ImageFormat::kVhd).WithContext(path + ": parent " + *resolved));
    std::string got;
    for (const auto& [key, value] : parent->info().details) {
      if (key == "unique_id") got = value;
    }
    if (got != want) {
      if (!mismatch) {
        mismatch = Status::Corrupt(path + ": parent " + *resolved + " (from the " + c.origin +
                                   ") has unique ID " + got +
                                   ", but this disk's header expects "
                                   "parent unique ID " +
                                   want + ": the parent was replaced or modified");
      }
      continue;
    }
    *parent_path = *resolved;
    return parent;
  }
  if (mismatch) return *mismatch;
  if (denied) return *denied;
  // One line per path looked for, with every place that named it.
  std::vector<std::pair<std::string, std::string>> looked;
  for (const ParentCandidate& c : candidates) {
    std::string p = JoinPath(DirName(path), c.reference);
    auto it =
        std::find_if(looked.begin(), looked.end(), [&](const auto& l) { return l.first == p; });
    if (it == looked.end()) {
      looked.push_back({p, "from the " + c.origin});
    } else {
      it->second += " and the " + c.origin;
    }
  }
  std::string list;
  for (const auto& [p, origins] : looked) {
    if (!list.empty()) list += "; ";
    list += p + " (" + origins + ")";
  }
  return Status::NotFound(path + ": parent image (unique ID " + want + ") not found: looked for " +
                          list);
}

}  // namespace

Result<std::unique_ptr<BlockSource>> OpenVhd(const OpenContext& ctx, std::unique_ptr<File> file) {
  const std::string path = file->path();
  FERRY_ASSIGN_OR_RETURN(const uint64_t file_size, file->Size());
  std::vector<std::string> problems;
  FERRY_ASSIGN_OR_RETURN(FooterCopy copy, ChooseFooter(*file, file_size, &problems));
  const Footer footer = vhd::ParseFooter(copy.bytes);

  if ((footer.version >> 16) != 1) {
    return Status::Unsupported(path + ": VHD file format version " + Hex(footer.version) +
                               " in the footer at " + Hex(copy.offset) + " (only 1.x exists)");
  }
  DiskType type;
  switch (footer.disk_type) {
    case 2: type = DiskType::kFixed; break;
    case 3: type = DiskType::kDynamic; break;
    case 4: type = DiskType::kDifferencing; break;
    default:
      return Status::Unsupported(path + ": VHD disk type " + std::to_string(footer.disk_type) +
                                 " in the footer at " + Hex(copy.offset) +
                                 " (known: 2 fixed, 3 dynamic, 4 differencing)");
  }

  // The virtual size (docs/formats/vhd.md "Virtual size"): Virtual PC and QEMU's "qemu"
  // creator use the CHS geometry, everybody else the footer's current size. The maximum
  // geometry means "too big for CHS": then the current size counts.
  const vhd::Geometry geometry{footer.cylinders, footer.heads, footer.sectors_per_track};
  const bool chs_creator = CodeIs(footer.creator_app, "vpc ") || CodeIs(footer.creator_app, "qemu");
  const bool use_chs =
      chs_creator && geometry.sectors() != 0 && geometry != vhd::Geometry{65535, 16, 255};
  uint64_t size;
  if (use_chs) {
    size = geometry.sectors() * kSectorSize;
  } else {
    size = RoundDown(footer.current_size, kSectorSize);
    if (size != footer.current_size) {
      problems.push_back("current size " + std::to_string(footer.current_size) +
                         " is not a whole number of sectors; using " + std::to_string(size));
    }
  }
  if (size / kSectorSize > vhd::kMaxDiskSectors) {
    return Status::TooLarge(path + ": virtual size " + std::to_string(size) + " bytes (footer at " +
                            Hex(copy.offset) + ") is over the VHD maximum of " +
                            std::to_string(vhd::kMaxDiskSectors * kSectorSize) + " bytes");
  }

  VhdLayout layout;
  layout.type = type;
  ImageInfo& info = layout.info;
  info.format = "vhd";
  info.virtual_size = size;
  info.file_size = file_size;
  info.files = {path};
  info.details = {
      {"creator_app", vhd::FormatCode(footer.creator_app)},
      {"creator_version", Hex(footer.creator_version)},
      {"creator_os", vhd::FormatCode(footer.creator_os)},
      {"unique_id", vhd::FormatUuid(footer.unique_id)},
      {"geometry", std::to_string(geometry.cylinders) + "/" + std::to_string(geometry.heads) + "/" +
                       std::to_string(geometry.sectors_per_track)},
      {"current_size", std::to_string(footer.current_size)},
      {"size_from", use_chs ? "CHS geometry" : "current size"},
  };
  if (footer.saved_state != 0) info.details.push_back({"saved_state", "yes"});

  if (type == DiskType::kFixed) {
    info.subformat = "fixed";
    if (size > copy.offset) {
      return Status::Corrupt(path + ": fixed disk of " + std::to_string(size) +
                             " bytes, but only " + std::to_string(copy.offset) +
                             " bytes of data precede its footer at " + Hex(copy.offset) +
                             " (truncated?)");
    }
    info.allocated_bytes = size;
    info.problems = std::move(problems);
    return std::unique_ptr<BlockSource>(
        std::make_unique<VhdSource>(std::move(file), size, std::move(layout)));
  }

  // Dynamic and differencing disks: the dynamic disk header and the BAT.
  info.subformat = type == DiskType::kDynamic ? "dynamic" : "differencing";
  uint64_t header_end;
  if (!CheckedAdd(footer.data_offset, vhd::kDynamicHeaderSize, &header_end) ||
      header_end > file_size) {
    return Status::Corrupt(path + ": dynamic disk header at " + Hex(footer.data_offset) +
                           " (footer data offset) lies past the end of the file (" +
                           Hex(file_size) + ")");
  }
  std::array<uint8_t, vhd::kDynamicHeaderSize> raw_header;
  FERRY_TRY(file->ReadAt(footer.data_offset, raw_header));
  if (!HasCookie(raw_header, vhd::kDynamicHeaderCookie)) {
    return Status::Corrupt(path + ": no dynamic disk header ('cxsparse') at " +
                           Hex(footer.data_offset));
  }
  const DynamicHeader header = vhd::ParseDynamicHeader(raw_header);
  const uint32_t header_sum = vhd::Checksum(raw_header, vhd::header_off::kChecksum);
  if (header_sum != header.checksum) {
    std::string mismatch =
        ChecksumMismatch("dynamic disk header", footer.data_offset, header.checksum, header_sum);
    std::string why = type == DiskType::kDifferencing
                          ? ExplainHeaderMismatch(raw_header, header.checksum)
                          : std::string();
    if (why.empty()) return Status::Corrupt(path + ": " + mismatch);
    problems.push_back(mismatch + ": accepted because " + why);
  }
  if ((header.version >> 16) != 1) {
    return Status::Unsupported(path + ": dynamic disk header version " + Hex(header.version) +
                               " at " + Hex(footer.data_offset) + " (only 1.x exists)");
  }
  const uint32_t bs = header.block_size;
  if (bs < kMinBlockSize || !IsPowerOfTwo(bs)) {
    return Status::Corrupt(path + ": block size " + std::to_string(bs) +
                           " in the dynamic disk header at " + Hex(footer.data_offset) +
                           " is not a power of two of at least 512");
  }
  if (bs > kMaxBlockSize) {
    return Status::TooLarge(path + ": block size " + std::to_string(bs) +
                            " in the dynamic disk header at " + Hex(footer.data_offset) +
                            " is over Ferry's limit of " + std::to_string(kMaxBlockSize));
  }
  layout.block_size = bs;
  layout.bitmap_size = static_cast<uint32_t>(RoundUp(DivRoundUp(bs / kSectorSize, 8), kSectorSize));
  const uint64_t blocks = DivRoundUp(size, bs);
  if (blocks > header.max_table_entries) {
    return Status::Corrupt(path + ": the BAT has " + std::to_string(header.max_table_entries) +
                           " entries, but a disk of " + std::to_string(size) + " bytes in " +
                           std::to_string(bs) + "-byte blocks needs " + std::to_string(blocks));
  }
  if (blocks > kMaxBatEntries) {
    return Status::TooLarge(path + ": the BAT needs " + std::to_string(blocks) +
                            " entries, over Ferry's limit of " + std::to_string(kMaxBatEntries));
  }
  uint64_t bat_end;
  if (!CheckedAdd(header.table_offset, blocks * 4, &bat_end) || bat_end > file_size) {
    return Status::Corrupt(path + ": BAT at " + Hex(header.table_offset) + " (" +
                           std::to_string(blocks) + " entries) lies past the end of the file (" +
                           Hex(file_size) + ")");
  }
  std::vector<uint8_t> raw_bat(blocks * 4);
  FERRY_TRY(file->ReadAt(header.table_offset, raw_bat));
  layout.bat.resize(blocks);
  uint64_t allocated = 0;
  for (uint64_t i = 0; i < blocks; ++i) {
    const uint32_t entry = LoadBE32(raw_bat.data() + 4 * i);
    layout.bat[i] = entry;
    if (entry == vhd::kUnallocated) continue;
    const uint64_t in_disk = std::min<uint64_t>(bs, size - i * bs);
    const uint64_t start = uint64_t(entry) * kSectorSize;
    const uint64_t end = start + layout.bitmap_size + in_disk;  // < 2^41 + 2^29: no overflow
    if (end > file_size) {
      return Status::Corrupt(path + ": block " + std::to_string(i) + " (BAT entry at " +
                             Hex(header.table_offset + 4 * i) + ") at " + Hex(start) +
                             " lies past the end of the file (" + Hex(file_size) + ")");
    }
    allocated += in_disk;
  }
  info.allocated_bytes = allocated;
  info.cluster_size = bs;
  info.details.push_back({"block_size", std::to_string(bs)});
  info.details.push_back({"bat_offset", Hex(header.table_offset)});

  if (type == DiskType::kDifferencing) {
    std::string parent_path;
    FERRY_ASSIGN_OR_RETURN(layout.parent, OpenParent(ctx, *file, file_size, header, &parent_path));
    const ImageInfo parent_info = layout.parent->info();
    info.details.push_back({"parent_unique_id", vhd::FormatUuid(header.parent_unique_id)});
    info.details.push_back({"parent", parent_path});
    info.backing_chain.push_back(parent_path);
    for (const auto& p : parent_info.backing_chain) info.backing_chain.push_back(p);
    if (layout.parent->size() != size) {
      problems.push_back("parent " + parent_path + " is " + std::to_string(layout.parent->size()) +
                         " bytes, this disk " + std::to_string(size));
    }
    for (const auto& p : parent_info.problems)
      problems.push_back("parent " + parent_path + ": " + p);
  }
  info.problems = std::move(problems);
  return std::unique_ptr<BlockSource>(
      std::make_unique<VhdSource>(std::move(file), size, std::move(layout)));
}

}  // namespace ferry
