#include "disk/vhd/vhd_format.h"

#include <algorithm>
#include <cstring>

#include "common/bytes.h"

namespace ferry::vhd {

uint32_t Checksum(std::span<const uint8_t> bytes, size_t checksum_at) {
  uint32_t sum = 0;
  for (size_t i = 0; i < bytes.size(); ++i) {
    if (i >= checksum_at && i < checksum_at + 4) continue;
    sum += bytes[i];
  }
  return ~sum;
}

Footer ParseFooter(std::span<const uint8_t> b) {
  namespace o = footer_off;
  Footer f;
  const uint8_t* p = b.data();
  f.features = LoadBE32(p + o::kFeatures);
  f.version = LoadBE32(p + o::kVersion);
  f.data_offset = LoadBE64(p + o::kDataOffset);
  f.timestamp = LoadBE32(p + o::kTimestamp);
  std::memcpy(f.creator_app.data(), p + o::kCreatorApp, 4);
  f.creator_version = LoadBE32(p + o::kCreatorVersion);
  std::memcpy(f.creator_os.data(), p + o::kCreatorOs, 4);
  f.original_size = LoadBE64(p + o::kOriginalSize);
  f.current_size = LoadBE64(p + o::kCurrentSize);
  f.cylinders = LoadBE16(p + o::kCylinders);
  f.heads = p[o::kHeads];
  f.sectors_per_track = p[o::kSectors];
  f.disk_type = LoadBE32(p + o::kDiskType);
  f.checksum = LoadBE32(p + o::kChecksum);
  std::memcpy(f.unique_id.data(), p + o::kUniqueId, 16);
  f.saved_state = p[o::kSavedState];
  return f;
}

std::array<uint8_t, kFooterSize> SerializeFooter(const Footer& f) {
  namespace o = footer_off;
  std::array<uint8_t, kFooterSize> out{};
  uint8_t* p = out.data();
  std::memcpy(p + o::kCookie, kFooterCookie.data(), kFooterCookie.size());
  StoreBE32(p + o::kFeatures, f.features);
  StoreBE32(p + o::kVersion, f.version);
  StoreBE64(p + o::kDataOffset, f.data_offset);
  StoreBE32(p + o::kTimestamp, f.timestamp);
  std::memcpy(p + o::kCreatorApp, f.creator_app.data(), 4);
  StoreBE32(p + o::kCreatorVersion, f.creator_version);
  std::memcpy(p + o::kCreatorOs, f.creator_os.data(), 4);
  StoreBE64(p + o::kOriginalSize, f.original_size);
  StoreBE64(p + o::kCurrentSize, f.current_size);
  StoreBE16(p + o::kCylinders, f.cylinders);
  p[o::kHeads] = f.heads;
  p[o::kSectors] = f.sectors_per_track;
  StoreBE32(p + o::kDiskType, f.disk_type);
  std::memcpy(p + o::kUniqueId, f.unique_id.data(), 16);
  p[o::kSavedState] = f.saved_state;
  StoreBE32(p + o::kChecksum, Checksum(out, o::kChecksum));
  return out;
}

DynamicHeader ParseDynamicHeader(std::span<const uint8_t> b) {
  namespace o = header_off;
  DynamicHeader h;
  const uint8_t* p = b.data();
  h.data_offset = LoadBE64(p + o::kDataOffset);
  h.table_offset = LoadBE64(p + o::kTableOffset);
  h.version = LoadBE32(p + o::kVersion);
  h.max_table_entries = LoadBE32(p + o::kMaxTableEntries);
  h.block_size = LoadBE32(p + o::kBlockSize);
  h.checksum = LoadBE32(p + o::kChecksum);
  std::memcpy(h.parent_unique_id.data(), p + o::kParentUniqueId, 16);
  h.parent_timestamp = LoadBE32(p + o::kParentTimestamp);
  std::memcpy(h.parent_name.data(), p + o::kParentName, o::kParentNameSize);
  for (size_t i = 0; i < o::kLocatorCount; ++i) {
    const uint8_t* l = p + o::kParentLocators + i * o::kLocatorSize;
    h.locators[i].platform_code = LoadBE32(l);
    h.locators[i].data_space = LoadBE32(l + 4);
    h.locators[i].data_length = LoadBE32(l + 8);
    h.locators[i].data_offset = LoadBE64(l + 16);
  }
  return h;
}

std::array<uint8_t, kDynamicHeaderSize> SerializeDynamicHeader(const DynamicHeader& h) {
  namespace o = header_off;
  std::array<uint8_t, kDynamicHeaderSize> out{};
  uint8_t* p = out.data();
  std::memcpy(p + o::kCookie, kDynamicHeaderCookie.data(), kDynamicHeaderCookie.size());
  StoreBE64(p + o::kDataOffset, h.data_offset);
  StoreBE64(p + o::kTableOffset, h.table_offset);
  StoreBE32(p + o::kVersion, h.version);
  StoreBE32(p + o::kMaxTableEntries, h.max_table_entries);
  StoreBE32(p + o::kBlockSize, h.block_size);
  std::memcpy(p + o::kParentUniqueId, h.parent_unique_id.data(), 16);
  StoreBE32(p + o::kParentTimestamp, h.parent_timestamp);
  std::memcpy(p + o::kParentName, h.parent_name.data(), o::kParentNameSize);
  for (size_t i = 0; i < o::kLocatorCount; ++i) {
    uint8_t* l = p + o::kParentLocators + i * o::kLocatorSize;
    StoreBE32(l, h.locators[i].platform_code);
    StoreBE32(l + 4, h.locators[i].data_space);
    StoreBE32(l + 8, h.locators[i].data_length);
    StoreBE64(l + 16, h.locators[i].data_offset);
  }
  StoreBE32(p + o::kChecksum, Checksum(out, o::kChecksum));
  return out;
}

Geometry ComputeGeometry(uint64_t total_sectors) {
  // Spec appendix "CHS Calculation", step by step.
  uint64_t sectors = std::min(total_sectors, kMaxChsSectors);
  uint64_t sectors_per_track, heads, cylinder_times_heads;
  if (sectors >= 65535ull * 16 * 63) {
    sectors_per_track = 255;
    heads = 16;
    cylinder_times_heads = sectors / sectors_per_track;
  } else {
    sectors_per_track = 17;
    cylinder_times_heads = sectors / sectors_per_track;
    heads = (cylinder_times_heads + 1023) / 1024;
    if (heads < 4) heads = 4;
    if (cylinder_times_heads >= heads * 1024 || heads > 16) {
      sectors_per_track = 31;
      heads = 16;
      cylinder_times_heads = sectors / sectors_per_track;
    }
    if (cylinder_times_heads >= heads * 1024) {
      sectors_per_track = 63;
      heads = 16;
      cylinder_times_heads = sectors / sectors_per_track;
    }
  }
  Geometry g;
  g.cylinders = static_cast<uint16_t>(cylinder_times_heads / heads);
  g.heads = static_cast<uint8_t>(heads);
  g.sectors_per_track = static_cast<uint8_t>(sectors_per_track);
  return g;
}

std::string FormatUuid(const Uuid& uuid) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string s;
  for (size_t i = 0; i < uuid.size(); ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) s += '-';
    s += kHex[uuid[i] >> 4];
    s += kHex[uuid[i] & 15];
  }
  return s;
}

std::string FormatCode(std::span<const char> code) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string s;
  for (char c : code) {
    auto u = static_cast<unsigned char>(c);
    if (u >= 0x20 && u < 0x7f && c != '\\') {
      s += c;
    } else {
      s += "\\x";
      s += kHex[u >> 4];
      s += kHex[u & 15];
    }
  }
  return s;
}

namespace {

void AppendUtf8(std::string* out, uint32_t cp) {
  if (cp < 0x80) {
    *out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    *out += static_cast<char>(0xC0 | (cp >> 6));
    *out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    *out += static_cast<char>(0xE0 | (cp >> 12));
    *out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    *out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    *out += static_cast<char>(0xF0 | (cp >> 18));
    *out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    *out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    *out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

}  // namespace

std::string Utf16ToUtf8(std::span<const uint8_t> bytes, bool big_endian) {
  constexpr uint32_t kReplacement = 0xFFFD;
  std::string out;
  const size_t units = bytes.size() / 2;
  auto unit = [&](size_t i) -> uint32_t {
    return big_endian ? LoadBE16(bytes.data() + 2 * i) : LoadLE16(bytes.data() + 2 * i);
  };
  for (size_t i = 0; i < units; ++i) {
    uint32_t u = unit(i);
    if (u == 0) break;
    if (u >= 0xD800 && u < 0xDC00) {
      if (i + 1 < units) {
        uint32_t low = unit(i + 1);
        if (low >= 0xDC00 && low < 0xE000) {
          AppendUtf8(&out, 0x10000 + ((u - 0xD800) << 10) + (low - 0xDC00));
          ++i;
          continue;
        }
      }
      AppendUtf8(&out, kReplacement);
    } else if (u >= 0xDC00 && u < 0xE000) {
      AppendUtf8(&out, kReplacement);
    } else {
      AppendUtf8(&out, u);
    }
  }
  return out;
}

}  // namespace ferry::vhd
