#include "disk/vhdx/vhdx_format.h"

#include <cstdio>
#include <cstring>
#include <random>

#include "common/bytes.h"
#include "common/checksum.h"

namespace ferry::vhdx {
namespace {

// Header field offsets, [MS-VHDX] 2.2.2.
constexpr size_t kHdrChecksum = 4;
constexpr size_t kHdrSequence = 8;
constexpr size_t kHdrFileWriteGuid = 16;
constexpr size_t kHdrDataWriteGuid = 32;
constexpr size_t kHdrLogGuid = 48;
constexpr size_t kHdrLogVersion = 64;
constexpr size_t kHdrVersion = 66;
constexpr size_t kHdrLogLength = 68;
constexpr size_t kHdrLogOffset = 72;

// CRC-32C of `bytes` with the 4-byte checksum field at `at` taken as zero.
uint32_t CrcWithZeroField(std::span<const uint8_t> bytes, size_t at) {
  static const uint8_t kZero[4] = {0, 0, 0, 0};
  uint32_t crc = Crc32c(bytes.subspan(0, at));
  crc = Crc32c(kZero, crc);
  return Crc32c(bytes.subspan(at + 4), crc);
}

}  // namespace

Guid Guid::FromParts(uint32_t d1, uint16_t d2, uint16_t d3, std::array<uint8_t, 8> d4) {
  Guid g;
  StoreLE32(g.bytes.data(), d1);
  StoreLE16(g.bytes.data() + 4, d2);
  StoreLE16(g.bytes.data() + 6, d3);
  std::memcpy(g.bytes.data() + 8, d4.data(), 8);
  return g;
}

Guid Guid::Load(const uint8_t* p) {
  Guid g;
  std::memcpy(g.bytes.data(), p, 16);
  return g;
}

void Guid::Store(uint8_t* p) const { std::memcpy(p, bytes.data(), 16); }

bool Guid::IsZero() const {
  for (uint8_t b : bytes) {
    if (b != 0) return false;
  }
  return true;
}

std::string Guid::ToString() const {
  char buf[40];
  const uint8_t* b = bytes.data();
  std::snprintf(buf, sizeof buf, "{%08x-%04x-%04x-%02x%02x-%02x%02x%02x%02x%02x%02x}", LoadLE32(b),
                LoadLE16(b + 4), LoadLE16(b + 6), b[8], b[9], b[10], b[11], b[12], b[13], b[14],
                b[15]);
  return buf;
}

std::optional<Guid> Guid::Parse(std::string_view text) {
  if (text.size() >= 2 && text.front() == '{' && text.back() == '}') {
    text = text.substr(1, text.size() - 2);
  }
  if (text.size() != 36) return std::nullopt;
  uint8_t raw[16];
  size_t n = 0;
  for (size_t i = 0; i < text.size();) {
    if (i == 8 || i == 13 || i == 18 || i == 23) {
      if (text[i] != '-') return std::nullopt;
      ++i;
      continue;
    }
    auto hex = [](char c) -> int {
      if (c >= '0' && c <= '9') return c - '0';
      if (c >= 'a' && c <= 'f') return c - 'a' + 10;
      if (c >= 'A' && c <= 'F') return c - 'A' + 10;
      return -1;
    };
    int hi = hex(text[i]), lo = i + 1 < text.size() ? hex(text[i + 1]) : -1;
    if (hi < 0 || lo < 0 || n >= 16) return std::nullopt;
    raw[n++] = static_cast<uint8_t>(hi << 4 | lo);
    i += 2;
  }
  if (n != 16) return std::nullopt;
  // Text order is big-endian for the first three fields; on disk they are little-endian.
  return FromParts(LoadBE32(raw), LoadBE16(raw + 4), LoadBE16(raw + 6),
                   {raw[8], raw[9], raw[10], raw[11], raw[12], raw[13], raw[14], raw[15]});
}

Guid Guid::Random() {
  static thread_local std::mt19937_64 rng{std::random_device{}() ^
                                          (uint64_t(std::random_device{}()) << 32)};
  Guid g;
  StoreLE64(g.bytes.data(), rng());
  StoreLE64(g.bytes.data() + 8, rng());
  g.bytes[7] = static_cast<uint8_t>((g.bytes[7] & 0x0f) | 0x40);  // version 4 (data3 high)
  g.bytes[8] = static_cast<uint8_t>((g.bytes[8] & 0x3f) | 0x80);  // RFC 4122 variant
  return g;
}

Guid BatRegionGuid() {
  return Guid::FromParts(0x2DC27766, 0xF623, 0x4200,
                         {0x9D, 0x64, 0x11, 0x5E, 0x9B, 0xFD, 0x4A, 0x08});
}
Guid MetadataRegionGuid() {
  return Guid::FromParts(0x8B7CA206, 0x4790, 0x4B9A,
                         {0xB8, 0xFE, 0x57, 0x5F, 0x05, 0x0F, 0x88, 0x6E});
}
Guid FileParametersGuid() {
  return Guid::FromParts(0xCAA16737, 0xFA36, 0x4D43,
                         {0xB3, 0xB6, 0x33, 0xF0, 0xAA, 0x44, 0xE7, 0x6B});
}
Guid VirtualDiskSizeGuid() {
  return Guid::FromParts(0x2FA54224, 0xCD1B, 0x4876,
                         {0xB2, 0x11, 0x5D, 0xBE, 0xD8, 0x3B, 0xF4, 0xB8});
}
Guid Page83DataGuid() {
  return Guid::FromParts(0xBECA12AB, 0xB2E6, 0x4523,
                         {0x93, 0xEF, 0xC3, 0x09, 0xE0, 0x00, 0xC7, 0x46});
}
Guid LogicalSectorSizeGuid() {
  return Guid::FromParts(0x8141BF1D, 0xA96F, 0x4709,
                         {0xBA, 0x47, 0xF2, 0x33, 0xA8, 0xFA, 0xAB, 0x5F});
}
Guid PhysicalSectorSizeGuid() {
  return Guid::FromParts(0xCDA348C7, 0x445D, 0x4471,
                         {0x9C, 0xC9, 0xE9, 0x88, 0x52, 0x51, 0xC5, 0x56});
}
Guid ParentLocatorGuid() {
  return Guid::FromParts(0xA8D35F2D, 0xB30B, 0x454D,
                         {0xAB, 0xF7, 0xD3, 0xD8, 0x48, 0x34, 0xAB, 0x0C});
}
Guid VhdxParentLocatorTypeGuid() {
  return Guid::FromParts(0xB04AEFB7, 0xD19E, 0x4A81,
                         {0xB7, 0x89, 0x25, 0xB8, 0xE9, 0x44, 0x59, 0x13});
}

std::vector<uint8_t> EncodeHeader(const Header& h) {
  std::vector<uint8_t> b(kHeaderSize, 0);
  StoreLE32(b.data(), kHeaderSignature);
  StoreLE64(b.data() + kHdrSequence, h.sequence_number);
  h.file_write_guid.Store(b.data() + kHdrFileWriteGuid);
  h.data_write_guid.Store(b.data() + kHdrDataWriteGuid);
  h.log_guid.Store(b.data() + kHdrLogGuid);
  StoreLE16(b.data() + kHdrLogVersion, h.log_version);
  StoreLE16(b.data() + kHdrVersion, h.version);
  StoreLE32(b.data() + kHdrLogLength, h.log_length);
  StoreLE64(b.data() + kHdrLogOffset, h.log_offset);
  StoreLE32(b.data() + kHdrChecksum, CrcWithZeroField(b, kHdrChecksum));
  return b;
}

Result<Header> DecodeHeader(std::span<const uint8_t> b) {
  if (b.size() != kHeaderSize) return Status::Internal("header buffer size");
  if (LoadLE32(b.data()) != kHeaderSignature) {
    return Status::Corrupt("signature is not 'head'");
  }
  uint32_t stored = LoadLE32(b.data() + kHdrChecksum);
  uint32_t computed = CrcWithZeroField(b, kHdrChecksum);
  if (stored != computed) {
    return Status::Corrupt("CRC-32C mismatch (stored " + Hex(stored) + ", computed " +
                           Hex(computed) + ")");
  }
  Header h;
  h.sequence_number = LoadLE64(b.data() + kHdrSequence);
  h.file_write_guid = Guid::Load(b.data() + kHdrFileWriteGuid);
  h.data_write_guid = Guid::Load(b.data() + kHdrDataWriteGuid);
  h.log_guid = Guid::Load(b.data() + kHdrLogGuid);
  h.log_version = LoadLE16(b.data() + kHdrLogVersion);
  h.version = LoadLE16(b.data() + kHdrVersion);
  h.log_length = LoadLE32(b.data() + kHdrLogLength);
  h.log_offset = LoadLE64(b.data() + kHdrLogOffset);
  if (h.version != 1) {
    return Status::Unsupported("version " + std::to_string(h.version) + " (only 1 is known)");
  }
  return h;
}

std::vector<uint8_t> EncodeRegionTable(const std::vector<RegionEntry>& entries) {
  std::vector<uint8_t> b(kRegionTableSize, 0);
  StoreLE32(b.data(), kRegionSignature);
  StoreLE32(b.data() + 8, static_cast<uint32_t>(entries.size()));
  uint8_t* p = b.data() + 16;
  for (const auto& e : entries) {
    e.guid.Store(p);
    StoreLE64(p + 16, e.file_offset);
    StoreLE32(p + 24, e.length);
    StoreLE32(p + 28, e.required ? kRegionRequired : 0);
    p += 32;
  }
  StoreLE32(b.data() + 4, CrcWithZeroField(b, 4));
  return b;
}

std::vector<uint8_t> EncodeMetadataRegion(const std::vector<MetadataItem>& items,
                                          uint64_t region_length) {
  std::vector<uint8_t> b(region_length, 0);
  StoreLE64(b.data(), kMetadataSignature);
  StoreLE16(b.data() + 10, static_cast<uint16_t>(items.size()));
  uint64_t item_offset = kMetadataTableSize;
  uint8_t* p = b.data() + 32;
  for (const auto& item : items) {
    item.id.Store(p);
    StoreLE32(p + 16, item.data.empty() ? 0 : static_cast<uint32_t>(item_offset));
    StoreLE32(p + 20, static_cast<uint32_t>(item.data.size()));
    StoreLE32(p + 24, item.flags);
    std::memcpy(b.data() + item_offset, item.data.data(), item.data.size());
    item_offset += item.data.size();
    p += 32;
  }
  return b;
}

std::vector<uint8_t> EncodeParentLocator(
    const std::vector<std::pair<std::string, std::string>>& entries) {
  // 2.6.2.6: header (20 bytes), key/value entries (12 bytes each), then the strings.
  std::vector<uint8_t> b(20 + 12 * entries.size(), 0);
  VhdxParentLocatorTypeGuid().Store(b.data());
  StoreLE16(b.data() + 18, static_cast<uint16_t>(entries.size()));
  for (size_t i = 0; i < entries.size(); ++i) {
    auto key = Utf8ToUtf16Le(entries[i].first);
    auto value = Utf8ToUtf16Le(entries[i].second);
    uint8_t* e = b.data() + 20 + 12 * i;
    StoreLE32(e, static_cast<uint32_t>(b.size()));
    StoreLE16(e + 8, static_cast<uint16_t>(key.size()));
    b.insert(b.end(), key.begin(), key.end());
    e = b.data() + 20 + 12 * i;  // insert may have moved the buffer
    StoreLE32(e + 4, static_cast<uint32_t>(b.size()));
    StoreLE16(e + 10, static_cast<uint16_t>(value.size()));
    b.insert(b.end(), value.begin(), value.end());
  }
  return b;
}

std::vector<MetadataItem> StandardMetadata(uint32_t block_size, uint32_t file_flags,
                                           uint64_t virtual_size, uint32_t logical_sector,
                                           uint32_t physical_sector, const Guid& disk_id) {
  std::vector<MetadataItem> items;
  std::vector<uint8_t> params(8);
  StoreLE32(params.data(), block_size);
  StoreLE32(params.data() + 4, file_flags);
  items.push_back({FileParametersGuid(), kMetaIsRequired, params});
  std::vector<uint8_t> size(8);
  StoreLE64(size.data(), virtual_size);
  items.push_back({VirtualDiskSizeGuid(), kMetaIsVirtualDisk | kMetaIsRequired, size});
  std::vector<uint8_t> id(16);
  disk_id.Store(id.data());
  items.push_back({Page83DataGuid(), kMetaIsVirtualDisk | kMetaIsRequired, id});
  std::vector<uint8_t> lss(4);
  StoreLE32(lss.data(), logical_sector);
  items.push_back({LogicalSectorSizeGuid(), kMetaIsVirtualDisk | kMetaIsRequired, lss});
  std::vector<uint8_t> pss(4);
  StoreLE32(pss.data(), physical_sector);
  items.push_back({PhysicalSectorSizeGuid(), kMetaIsVirtualDisk | kMetaIsRequired, pss});
  return items;
}

uint64_t BatEntryCount(uint64_t virtual_size, uint32_t block_size, uint32_t logical_sector,
                       bool has_parent) {
  uint64_t data_blocks = DivRoundUp(virtual_size, block_size);
  if (data_blocks == 0) return 0;
  uint64_t chunk_ratio = ChunkRatio(logical_sector, block_size);
  uint64_t bitmap_blocks = DivRoundUp(data_blocks, chunk_ratio);
  if (has_parent) return bitmap_blocks * (chunk_ratio + 1);
  return data_blocks + (data_blocks - 1) / chunk_ratio;
}

std::optional<std::string> Utf16LeToUtf8(std::span<const uint8_t> bytes) {
  if (bytes.size() % 2 != 0) return std::nullopt;
  std::string out;
  for (size_t i = 0; i < bytes.size(); i += 2) {
    uint32_t c = LoadLE16(bytes.data() + i);
    if (c >= 0xD800 && c <= 0xDBFF) {
      if (i + 2 >= bytes.size()) return std::nullopt;
      uint32_t lo = LoadLE16(bytes.data() + i + 2);
      if (lo < 0xDC00 || lo > 0xDFFF) return std::nullopt;
      c = 0x10000 + ((c - 0xD800) << 10) + (lo - 0xDC00);
      i += 2;
    } else if (c >= 0xDC00 && c <= 0xDFFF) {
      return std::nullopt;
    }
    if (c < 0x80) {
      out += static_cast<char>(c);
    } else if (c < 0x800) {
      out += static_cast<char>(0xC0 | (c >> 6));
      out += static_cast<char>(0x80 | (c & 0x3F));
    } else if (c < 0x10000) {
      out += static_cast<char>(0xE0 | (c >> 12));
      out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (c & 0x3F));
    } else {
      out += static_cast<char>(0xF0 | (c >> 18));
      out += static_cast<char>(0x80 | ((c >> 12) & 0x3F));
      out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (c & 0x3F));
    }
  }
  return out;
}

std::vector<uint8_t> Utf8ToUtf16Le(std::string_view text) {
  std::vector<uint8_t> out;
  auto put = [&out](uint32_t u) {
    out.push_back(static_cast<uint8_t>(u));
    out.push_back(static_cast<uint8_t>(u >> 8));
  };
  for (size_t i = 0; i < text.size();) {
    uint8_t c = static_cast<uint8_t>(text[i]);
    uint32_t cp = c;
    size_t n = 1;
    if (c >= 0xF0 && i + 3 < text.size()) {
      cp = (c & 0x07u) << 18 | (text[i + 1] & 0x3Fu) << 12 | (text[i + 2] & 0x3Fu) << 6 |
           (text[i + 3] & 0x3Fu);
      n = 4;
    } else if (c >= 0xE0 && i + 2 < text.size()) {
      cp = (c & 0x0Fu) << 12 | (text[i + 1] & 0x3Fu) << 6 | (text[i + 2] & 0x3Fu);
      n = 3;
    } else if (c >= 0xC0 && i + 1 < text.size()) {
      cp = (c & 0x1Fu) << 6 | (text[i + 1] & 0x3Fu);
      n = 2;
    }
    if (cp >= 0x10000) {
      cp -= 0x10000;
      put(0xD800 + (cp >> 10));
      put(0xDC00 + (cp & 0x3FF));
    } else {
      put(cp);
    }
    i += n;
  }
  return out;
}

std::vector<uint8_t> EncodeLogEntry(const LogEntry& entry) {
  uint64_t desc_sectors = LogDescriptorSectors(entry.writes.size());
  uint64_t data_sectors = 0;
  for (const auto& w : entry.writes) {
    if (w.zero_length == 0) ++data_sectors;
  }
  uint64_t length = (desc_sectors + data_sectors) * kLogSectorSize;
  std::vector<uint8_t> b(length, 0);
  StoreLE32(b.data(), kLogEntrySignature);
  StoreLE32(b.data() + 8, static_cast<uint32_t>(length));
  StoreLE32(b.data() + 12, entry.tail);
  StoreLE64(b.data() + 16, entry.sequence_number);
  StoreLE32(b.data() + 24, static_cast<uint32_t>(entry.writes.size()));
  entry.log_guid.Store(b.data() + 32);
  StoreLE64(b.data() + 48, entry.flushed_file_offset);
  StoreLE64(b.data() + 56, entry.last_file_offset);
  uint8_t* desc = b.data() + kLogEntryHeaderSize;
  uint8_t* data = b.data() + desc_sectors * kLogSectorSize;
  for (const auto& w : entry.writes) {
    if (w.zero_length != 0) {
      StoreLE32(desc, kLogZeroDescSignature);
      StoreLE64(desc + 8, w.zero_length);
    } else {
      StoreLE32(desc, kLogDataDescSignature);
      std::memcpy(desc + 4, w.data.data() + 4092, 4);  // trailing bytes
      std::memcpy(desc + 8, w.data.data(), 8);         // leading bytes
      StoreLE32(data, kLogDataSectorSignature);
      StoreLE32(data + 4, static_cast<uint32_t>(entry.sequence_number >> 32));
      std::memcpy(data + 8, w.data.data() + 8, 4084);
      StoreLE32(data + 4092, static_cast<uint32_t>(entry.sequence_number));
      data += kLogSectorSize;
    }
    StoreLE64(desc + 16, w.file_offset);
    StoreLE64(desc + 24, entry.sequence_number);
    desc += kLogDescriptorSize;
  }
  StoreLE32(b.data() + 4, CrcWithZeroField(b, 4));
  return b;
}

}  // namespace ferry::vhdx
