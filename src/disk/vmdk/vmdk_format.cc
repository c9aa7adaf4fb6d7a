// VMDK header, marker and descriptor encoding (see vmdk_format.h).
#include "disk/vmdk/vmdk_format.h"

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <cstring>

#include "common/bytes.h"

namespace ferry::vmdk {
namespace {

// Byte offsets inside the 512-byte SparseExtentHeader (VMDK spec, packed struct).
constexpr size_t kOffMagic = 0;
constexpr size_t kOffVersion = 4;
constexpr size_t kOffFlags = 8;
constexpr size_t kOffCapacity = 12;
constexpr size_t kOffGrainSize = 20;
constexpr size_t kOffDescriptorOffset = 28;
constexpr size_t kOffDescriptorSize = 36;
constexpr size_t kOffNumGtesPerGt = 44;
constexpr size_t kOffRgdOffset = 48;
constexpr size_t kOffGdOffset = 56;
constexpr size_t kOffOverhead = 64;
constexpr size_t kOffUncleanShutdown = 72;
constexpr size_t kOffNewlineChars = 73;  // '\n', ' ', '\r', '\n'
constexpr size_t kOffCompressAlgorithm = 77;

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.front() == '\r')) {
    s.remove_prefix(1);
  }
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) {
    s.remove_suffix(1);
  }
  return s;
}

std::string_view Unquote(std::string_view s) {
  if (s.size() >= 2 && s.front() == '"' && s.back() == '"') return s.substr(1, s.size() - 2);
  return s;
}

bool ParseU64(std::string_view s, int base, uint64_t* out) {
  if (s.empty()) return false;
  auto r = std::from_chars(s.data(), s.data() + s.size(), *out, base);
  return r.ec == std::errc() && r.ptr == s.data() + s.size();
}

bool ParseExtentType(std::string_view name, ExtentType* out) {
  static constexpr std::pair<std::string_view, ExtentType> kTypes[] = {
      {"SPARSE", ExtentType::kSparse},
      {"FLAT", ExtentType::kFlat},
      {"ZERO", ExtentType::kZero},
      {"VMFS", ExtentType::kVmfs},
      {"VMFSSPARSE", ExtentType::kVmfsSparse},
      {"SESPARSE", ExtentType::kSeSparse},
      {"VMFSRDM", ExtentType::kVmfsRdm},
      {"VMFSRAW", ExtentType::kVmfsRaw},
  };
  for (const auto& [n, t] : kTypes) {
    if (n == name) {
      *out = t;
      return true;
    }
  }
  return false;
}

// Splits the next whitespace-separated token off `s` (a quoted token keeps its spaces).
std::string_view NextToken(std::string_view* s) {
  *s = Trim(*s);
  if (s->empty()) return {};
  size_t end;
  if (s->front() == '"') {
    end = s->find('"', 1);
    end = end == std::string_view::npos ? s->size() : end + 1;
  } else {
    end = s->find_first_of(" \t");
    if (end == std::string_view::npos) end = s->size();
  }
  std::string_view tok = s->substr(0, end);
  s->remove_prefix(end);
  return tok;
}

}  // namespace

bool ParseSparseHeader(std::span<const uint8_t> b, SparseHeader* out) {
  if (b.size() < kHeaderSize || LoadLE32(b.data() + kOffMagic) != kSparseMagic) return false;
  const uint8_t* p = b.data();
  out->version = LoadLE32(p + kOffVersion);
  out->flags = LoadLE32(p + kOffFlags);
  out->capacity = LoadLE64(p + kOffCapacity);
  out->grain_size = LoadLE64(p + kOffGrainSize);
  out->descriptor_offset = LoadLE64(p + kOffDescriptorOffset);
  out->descriptor_size = LoadLE64(p + kOffDescriptorSize);
  out->num_gtes_per_gt = LoadLE32(p + kOffNumGtesPerGt);
  out->rgd_offset = LoadLE64(p + kOffRgdOffset);
  out->gd_offset = LoadLE64(p + kOffGdOffset);
  out->overhead = LoadLE64(p + kOffOverhead);
  out->unclean_shutdown = p[kOffUncleanShutdown];
  out->compress_algorithm = LoadLE16(p + kOffCompressAlgorithm);
  return true;
}

void SerializeSparseHeader(const SparseHeader& h, std::span<uint8_t, kHeaderSize> out) {
  uint8_t* p = out.data();
  std::memset(p, 0, kHeaderSize);
  StoreLE32(p + kOffMagic, kSparseMagic);
  StoreLE32(p + kOffVersion, h.version);
  StoreLE32(p + kOffFlags, h.flags);
  StoreLE64(p + kOffCapacity, h.capacity);
  StoreLE64(p + kOffGrainSize, h.grain_size);
  StoreLE64(p + kOffDescriptorOffset, h.descriptor_offset);
  StoreLE64(p + kOffDescriptorSize, h.descriptor_size);
  StoreLE32(p + kOffNumGtesPerGt, h.num_gtes_per_gt);
  StoreLE64(p + kOffRgdOffset, h.rgd_offset);
  StoreLE64(p + kOffGdOffset, h.gd_offset);
  StoreLE64(p + kOffOverhead, h.overhead);
  p[kOffUncleanShutdown] = h.unclean_shutdown;
  // VMDK spec: these detect FTP-style newline mangling of the file.
  p[kOffNewlineChars + 0] = '\n';
  p[kOffNewlineChars + 1] = ' ';
  p[kOffNewlineChars + 2] = '\r';
  p[kOffNewlineChars + 3] = '\n';
  StoreLE16(p + kOffCompressAlgorithm, h.compress_algorithm);
}

void SerializeMarker(uint64_t value, uint32_t type, std::span<uint8_t, kSector> out) {
  // VMDK spec: struct Marker { uint64 val; uint32 size (0 for metadata); uint32 type; pad }.
  std::memset(out.data(), 0, kSector);
  StoreLE64(out.data(), value);
  StoreLE32(out.data() + 12, type);
}

std::string Descriptor::Ddb(std::string_view key) const {
  for (const auto& [k, v] : ddb) {
    if (k == key) return v;
  }
  return "";
}

Result<Descriptor> ParseDescriptor(std::string_view text, const std::string& where) {
  if (text.size() > kMaxDescriptorBytes) {
    return Status::TooLarge(where + ": descriptor is " + std::to_string(text.size()) +
                            " bytes, over the " + std::to_string(kMaxDescriptorBytes) +
                            "-byte cap");
  }
  // An embedded descriptor is NUL-padded to its sector count.
  size_t nul = text.find('\0');
  if (nul != std::string_view::npos) text = text.substr(0, nul);
  Descriptor d;
  int line_no = 0;
  while (!text.empty()) {
    size_t eol = text.find('\n');
    std::string_view line = Trim(text.substr(0, eol));
    text.remove_prefix(eol == std::string_view::npos ? text.size() : eol + 1);
    ++line_no;
    if (line.empty() || line.front() == '#') continue;
    const std::string at = where + ": descriptor line " + std::to_string(line_no);
    std::string_view rest = line;
    std::string_view first = NextToken(&rest);
    if (first == "RW" || first == "RDONLY" || first == "NOACCESS") {
      if (d.extents.size() >= kMaxExtents) {
        return Status::TooLarge(where + ": descriptor lists more than " +
                                std::to_string(kMaxExtents) + " extents");
      }
      DescriptorExtent e;
      e.access = std::string(first);
      if (!ParseU64(NextToken(&rest), 10, &e.sectors) || e.sectors > kMaxVirtualBytes / kSector) {
        return Status::Corrupt(at + ": extent size is not a sane sector count");
      }
      std::string_view type = NextToken(&rest);
      e.type_name = std::string(type);
      if (!ParseExtentType(type, &e.type)) {
        return Status::Unsupported(at + ": extent type '" + e.type_name + "'");
      }
      if (e.type != ExtentType::kZero) {
        std::string_view file = NextToken(&rest);
        if (file.size() < 2 || file.front() != '"' || file.back() != '"') {
          return Status::Corrupt(at + ": extent file name is missing or unquoted");
        }
        e.file = std::string(Unquote(file));
        std::string_view off = NextToken(&rest);
        if (!off.empty() && !ParseU64(off, 10, &e.offset)) {
          return Status::Corrupt(at + ": extent offset '" + std::string(off) + "'");
        }
        if (e.offset > kMaxVirtualBytes / kSector) {
          return Status::Corrupt(at + ": extent offset is too large");
        }
      }
      d.extents.push_back(std::move(e));
      continue;
    }
    size_t eq = line.find('=');
    if (eq == std::string_view::npos) continue;  // unknown line: VMware ignores it as well
    std::string_view key = Trim(line.substr(0, eq));
    std::string_view value = Unquote(Trim(line.substr(eq + 1)));
    if (key == "CID" || key == "parentCID") {
      uint64_t v;
      if (!ParseU64(value, 16, &v) || v > 0xffffffffull) {
        return Status::Corrupt(at + ": " + std::string(key) + " '" + std::string(value) +
                               "' is not a 32-bit hex number");
      }
      (key == "CID" ? d.cid : d.parent_cid) = static_cast<uint32_t>(v);
    } else if (key == "createType") {
      d.create_type = std::string(value);
    } else if (key == "parentFileNameHint") {
      d.parent_hint = std::string(value);
    } else if (key.starts_with("ddb.")) {
      d.ddb.emplace_back(std::string(key), std::string(value));
    }
  }
  return d;
}

std::string RenderDescriptor(uint32_t cid, std::string_view create_type, uint64_t sectors,
                             std::string_view extent_file) {
  // SCSI-style geometry (VMDK spec: 255 heads, 63 sectors for lsilogic), capped as VMware does.
  const uint64_t cylinders = std::min<uint64_t>(sectors / (255 * 63), 65535);
  char cid_hex[9];
  std::snprintf(cid_hex, sizeof cid_hex, "%08x", cid);
  std::string s;
  s += "# Disk DescriptorFile\n";
  s += "version=1\n";
  s += "CID=" + std::string(cid_hex) + "\n";
  s += "parentCID=ffffffff\n";
  s += "createType=\"" + std::string(create_type) + "\"\n\n";
  s += "# Extent description\n";
  s += "RW " + std::to_string(sectors) + " SPARSE \"" + std::string(extent_file) + "\"\n\n";
  s += "# The Disk Data Base\n#DDB\n\n";
  s += "ddb.virtualHWVersion = \"4\"\n";
  s += "ddb.geometry.cylinders = \"" + std::to_string(cylinders) + "\"\n";
  s += "ddb.geometry.heads = \"255\"\n";
  s += "ddb.geometry.sectors = \"63\"\n";
  s += "ddb.adapterType = \"lsilogic\"\n";
  return s;
}

}  // namespace ferry::vmdk
