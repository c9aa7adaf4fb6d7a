// VHDX on-disk structures ([MS-VHDX] v1.0): constants, GUIDs, and encoders/decoders for the
// headers, region table, metadata region, parent locator, BAT entries and log entries.
//
// Internal to src/disk/vhdx (the reader, the writer and their tests). Plain values and pure
// functions: no I/O, no shared state; safe to use from any thread.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/status.h"

namespace ferry::vhdx {

constexpr uint64_t kKiB = 1024;
constexpr uint64_t kMiB = 1024 * 1024;

// [MS-VHDX] 2.1: the header section is the first 1 MiB: file identifier at 0, two headers at
// 64 KiB and 128 KiB, two region tables at 192 KiB and 256 KiB.
constexpr uint64_t kFileIdentifierOffset = 0;
constexpr uint64_t kHeader1Offset = 64 * kKiB;
constexpr uint64_t kHeader2Offset = 128 * kKiB;
constexpr uint64_t kHeaderSize = 4 * kKiB;  // 2.2.2: CRC covers the whole 4 KiB
constexpr uint64_t kRegionTable1Offset = 192 * kKiB;
constexpr uint64_t kRegionTable2Offset = 256 * kKiB;
constexpr uint64_t kRegionTableSize = 64 * kKiB;  // 2.2.3: CRC covers the whole 64 KiB
constexpr uint64_t kHeaderSectionSize = 1 * kMiB;
constexpr uint64_t kObjectAlignment = 1 * kMiB;  // regions, log and payload blocks
constexpr uint32_t kMaxTableEntries = 2047;      // 2.2.3 / 2.6.1: region and metadata tables
constexpr uint64_t kMetadataTableSize = 64 * kKiB;
constexpr uint32_t kMaxMetadataItemLength = 1 * kMiB;  // 2.6.1.2
constexpr uint32_t kMinBlockSize = 1 * kMiB;           // 2.6.2.1
constexpr uint32_t kMaxBlockSize = 256 * kMiB;
constexpr uint64_t kMaxVirtualSize = 64ull << 40;  // 2.6.2.2: 64 TiB
constexpr uint64_t kSectorsPerChunk = 1ull << 23;  // 2.5: one sector bitmap block = 2^23 bits
constexpr uint64_t kSectorBitmapBlockSize = 1 * kMiB;
constexpr uint64_t kLogSectorSize = 4 * kKiB;  // 2.3: log sectors are 4 KiB
constexpr uint32_t kLogEntryHeaderSize = 64;
constexpr uint32_t kLogDescriptorSize = 32;

constexpr std::string_view kFileSignature = "vhdxfile";
constexpr uint32_t kHeaderSignature = 0x64616568;               // "head"
constexpr uint32_t kRegionSignature = 0x69676572;               // "regi"
constexpr uint64_t kMetadataSignature = 0x617461646174656dull;  // "metadata"
constexpr uint32_t kLogEntrySignature = 0x65676f6c;             // "loge"
constexpr uint32_t kLogDataDescSignature = 0x63736564;          // "desc"
constexpr uint32_t kLogZeroDescSignature = 0x6f72657a;          // "zero"
constexpr uint32_t kLogDataSectorSignature = 0x61746164;        // "data"

// 2.5.1.1: payload block states (bits 0-2 of a BAT entry). UNMAPPED was 5 in the v1.0
// document and is 3 in [MS-VHDX]; both are accepted.
enum class PayloadState : uint8_t {
  kNotPresent = 0,
  kUndefined = 1,
  kZero = 2,
  kUnmapped = 3,
  kUnmappedV1 = 5,
  kFullyPresent = 6,
  kPartiallyPresent = 7,
};
// 2.5.1.2: sector bitmap block states.
constexpr uint8_t kBitmapNotPresent = 0;
constexpr uint8_t kBitmapPresent = 6;

// 2.6.2.1 file parameter flags.
constexpr uint32_t kLeaveBlocksAllocated = 0x1;
constexpr uint32_t kHasParent = 0x2;
// 2.6.1.2 metadata entry flags.
constexpr uint32_t kMetaIsUser = 0x1;
constexpr uint32_t kMetaIsVirtualDisk = 0x2;
constexpr uint32_t kMetaIsRequired = 0x4;
// 2.2.3.2 region entry flag.
constexpr uint32_t kRegionRequired = 0x1;

// A GUID in its on-disk (Microsoft, mixed-endian) byte order.
struct Guid {
  std::array<uint8_t, 16> bytes{};

  static Guid FromParts(uint32_t d1, uint16_t d2, uint16_t d3, std::array<uint8_t, 8> d4);
  static Guid Load(const uint8_t* p);
  void Store(uint8_t* p) const;
  bool IsZero() const;
  // "{2dc27766-f623-4200-9d64-115e9bfd4a08}", the form parent locators use.
  std::string ToString() const;
  // Parses the form above, braces optional, any case.
  static std::optional<Guid> Parse(std::string_view text);
  // A random (version 4) GUID.
  static Guid Random();
  bool operator==(const Guid&) const = default;
};

// 2.2.3.2 known regions.
Guid BatRegionGuid();
Guid MetadataRegionGuid();
// 2.6.2 known metadata items.
Guid FileParametersGuid();
Guid VirtualDiskSizeGuid();
Guid Page83DataGuid();
Guid LogicalSectorSizeGuid();
Guid PhysicalSectorSizeGuid();
Guid ParentLocatorGuid();
Guid VhdxParentLocatorTypeGuid();  // 2.6.2.6.1

// 2.2.2 header.
struct Header {
  uint64_t sequence_number = 0;
  Guid file_write_guid;
  Guid data_write_guid;
  Guid log_guid;
  uint16_t log_version = 0;
  uint16_t version = 1;
  uint32_t log_length = 0;
  uint64_t log_offset = 0;
};
std::vector<uint8_t> EncodeHeader(const Header& h);
// Checks signature, CRC-32C and version; returns why not in the Status message.
Result<Header> DecodeHeader(std::span<const uint8_t> bytes);

// 2.2.3 region table.
struct RegionEntry {
  Guid guid;
  uint64_t file_offset = 0;
  uint32_t length = 0;
  bool required = false;
};
std::vector<uint8_t> EncodeRegionTable(const std::vector<RegionEntry>& entries);

// 2.6.1 metadata region: the table at offset 0 and the items from 64 KiB on, in order.
struct MetadataItem {
  Guid id;
  uint32_t flags = 0;
  std::vector<uint8_t> data;
};
std::vector<uint8_t> EncodeMetadataRegion(const std::vector<MetadataItem>& items,
                                          uint64_t region_length);
std::vector<uint8_t> EncodeParentLocator(
    const std::vector<std::pair<std::string, std::string>>& entries);

// Standard metadata items for a disk.
std::vector<MetadataItem> StandardMetadata(uint32_t block_size, uint32_t file_flags,
                                           uint64_t virtual_size, uint32_t logical_sector,
                                           uint32_t physical_sector, const Guid& disk_id);

// 2.5: chunk ratio and BAT geometry.
inline uint64_t ChunkRatio(uint32_t logical_sector, uint32_t block_size) {
  return (kSectorsPerChunk * logical_sector) / block_size;
}
inline uint64_t BatIndexOfBlock(uint64_t block, uint64_t chunk_ratio) {
  return block + block / chunk_ratio;
}
inline uint64_t BatIndexOfBitmap(uint64_t chunk, uint64_t chunk_ratio) {
  return chunk * (chunk_ratio + 1) + chunk_ratio;
}
// 2.5: number of BAT entries for a disk (0 for an empty disk).
uint64_t BatEntryCount(uint64_t virtual_size, uint32_t block_size, uint32_t logical_sector,
                       bool has_parent);
inline uint64_t MakeBatEntry(uint8_t state, uint64_t file_offset) {
  return (file_offset / kMiB) << 20 | state;  // 2.5.1: FileOffsetMB in bits 20-63
}
inline uint8_t BatState(uint64_t entry) { return static_cast<uint8_t>(entry & 7); }
inline uint64_t BatOffset(uint64_t entry) { return (entry >> 20) * kMiB; }

// UTF-16LE <-> UTF-8 (parent locator strings, the creator field).
std::optional<std::string> Utf16LeToUtf8(std::span<const uint8_t> bytes);
std::vector<uint8_t> Utf8ToUtf16Le(std::string_view text);

// 2.3.1: one log entry. Used by the reader's replay (decoding) and by tests (encoding; the
// writer writes no log).
struct LogWrite {
  uint64_t file_offset = 0;   // multiple of 4 KiB
  uint64_t zero_length = 0;   // >0: a zero descriptor of this many bytes
  std::vector<uint8_t> data;  // else a data descriptor: exactly 4 KiB
};
struct LogEntry {
  uint64_t sequence_number = 0;
  uint32_t tail = 0;
  Guid log_guid;
  uint64_t flushed_file_offset = 0;
  uint64_t last_file_offset = 0;
  std::vector<LogWrite> writes;
};
std::vector<uint8_t> EncodeLogEntry(const LogEntry& entry);
// Number of 4 KiB sectors that hold the entry header and `descriptors` descriptors.
inline uint64_t LogDescriptorSectors(uint64_t descriptors) {
  return (kLogEntryHeaderSize + descriptors * kLogDescriptorSize + kLogSectorSize - 1) /
         kLogSectorSize;
}

}  // namespace ferry::vhdx
