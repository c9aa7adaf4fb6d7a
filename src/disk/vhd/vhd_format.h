// The VHD on-disk structures ("Virtual Hard Disk Image Format Specification", Microsoft,
// version 1.0, 2006) shared by the VHD reader and writer: the hard disk footer, the dynamic
// disk header, checksums, CHS geometry and small text helpers.
//
// Everything here is plain data and pure functions; no I/O. Thread-safe.
// docs/formats/vhd.md describes what Ferry reads, writes and tolerates.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

namespace ferry::vhd {

// Spec "Hard Disk Footer Format": 512 bytes, big-endian fields.
inline constexpr size_t kFooterSize = 512;
// Very old Virtual PC images end in a 511-byte footer (the reserved byte is missing).
inline constexpr size_t kOldFooterSize = 511;
inline constexpr std::string_view kFooterCookie = "conectix";
// Spec "Dynamic Disk Header Format": 1024 bytes.
inline constexpr size_t kDynamicHeaderSize = 1024;
inline constexpr std::string_view kDynamicHeaderCookie = "cxsparse";
inline constexpr uint64_t kSectorSize = 512;
inline constexpr uint32_t kUnallocated = 0xFFFFFFFF;  // BAT entry of an absent block
inline constexpr uint64_t kNoDataOffset = 0xFFFFFFFFFFFFFFFFull;
inline constexpr uint32_t kFileFormatVersion = 0x00010000;
inline constexpr uint32_t kHeaderVersion = 0x00010000;
inline constexpr uint32_t kFeaturesReserved = 0x00000002;  // "must always be set"
// Seconds between the Unix epoch and the VHD epoch (2000-01-01 00:00:00 UTC).
inline constexpr uint64_t kVhdEpoch = 946684800;

// Spec, CHS calculation: the largest geometry 65535 cylinders x 16 heads x 255 sectors.
inline constexpr uint64_t kMaxChsSectors = 65535ull * 16 * 255;
// Largest disk QEMU and Hyper-V accept: 65535 x 255 x 255 sectors (about 2040 GiB).
inline constexpr uint64_t kMaxDiskSectors = 65535ull * 255 * 255;

// Footer field offsets (spec table "Hard disk footer fields").
namespace footer_off {
inline constexpr size_t kCookie = 0, kFeatures = 8, kVersion = 12, kDataOffset = 16,
                        kTimestamp = 24, kCreatorApp = 28, kCreatorVersion = 32, kCreatorOs = 36,
                        kOriginalSize = 40, kCurrentSize = 48, kCylinders = 56, kHeads = 58,
                        kSectors = 59, kDiskType = 60, kChecksum = 64, kUniqueId = 68,
                        kSavedState = 84;
}
// Dynamic disk header field offsets (spec table "Dynamic Disk Header fields").
namespace header_off {
inline constexpr size_t kCookie = 0, kDataOffset = 8, kTableOffset = 16, kVersion = 24,
                        kMaxTableEntries = 28, kBlockSize = 32, kChecksum = 36,
                        kParentUniqueId = 40, kParentTimestamp = 56, kParentName = 64,
                        kParentNameSize = 512, kParentLocators = 576, kLocatorSize = 24,
                        kLocatorCount = 8;
}

enum class DiskType : uint32_t { kNone = 0, kFixed = 2, kDynamic = 3, kDifferencing = 4 };

using Uuid = std::array<uint8_t, 16>;

struct Footer {
  uint32_t features = kFeaturesReserved;
  uint32_t version = kFileFormatVersion;
  uint64_t data_offset = kNoDataOffset;
  uint32_t timestamp = 0;
  std::array<char, 4> creator_app{};
  uint32_t creator_version = 0;
  std::array<char, 4> creator_os{};
  uint64_t original_size = 0;
  uint64_t current_size = 0;
  uint16_t cylinders = 0;
  uint8_t heads = 0;
  uint8_t sectors_per_track = 0;
  uint32_t disk_type = 0;
  uint32_t checksum = 0;  // as stored
  Uuid unique_id{};
  uint8_t saved_state = 0;
};

struct ParentLocator {
  uint32_t platform_code = 0;
  uint32_t data_space = 0;
  uint32_t data_length = 0;
  uint64_t data_offset = 0;
};

struct DynamicHeader {
  uint64_t data_offset = kNoDataOffset;
  uint64_t table_offset = 0;
  uint32_t version = kHeaderVersion;
  uint32_t max_table_entries = 0;
  uint32_t block_size = 0;
  uint32_t checksum = 0;  // as stored
  Uuid parent_unique_id{};
  uint32_t parent_timestamp = 0;
  std::array<uint8_t, header_off::kParentNameSize> parent_name{};  // UTF-16BE
  std::array<ParentLocator, header_off::kLocatorCount> locators{};
};

// Platform codes of parent locators (spec "Parent Locator Entry").
inline constexpr uint32_t kPlatformW2ru = 0x57327275;  // "W2ru": relative path, UTF-16LE
inline constexpr uint32_t kPlatformW2ku = 0x57326B75;  // "W2ku": absolute path, UTF-16LE
inline constexpr uint32_t kPlatformWi2r = 0x57693272;  // "Wi2r": relative path, ANSI (old)
inline constexpr uint32_t kPlatformWi2k = 0x5769326B;  // "Wi2k": absolute path, ANSI (old)
inline constexpr uint32_t kPlatformMacX = 0x4D616358;  // "MacX": file URL, UTF-8
inline constexpr uint32_t kPlatformMac = 0x4D616320;   // "Mac ": a Mac OS alias blob

// The spec's checksum: one's complement of the byte sum, with the checksum field (4 bytes
// at `checksum_at`) counted as zero.
uint32_t Checksum(std::span<const uint8_t> bytes, size_t checksum_at);

// Parses a footer (REQUIRES: bytes.size() == kFooterSize). No validation.
Footer ParseFooter(std::span<const uint8_t> bytes);
// Serializes a footer, computing its checksum.
std::array<uint8_t, kFooterSize> SerializeFooter(const Footer& footer);

DynamicHeader ParseDynamicHeader(std::span<const uint8_t> bytes);
std::array<uint8_t, kDynamicHeaderSize> SerializeDynamicHeader(const DynamicHeader& header);

struct Geometry {
  uint16_t cylinders = 0;
  uint8_t heads = 0;
  uint8_t sectors_per_track = 0;
  uint64_t sectors() const { return uint64_t(cylinders) * heads * sectors_per_track; }
  bool operator==(const Geometry&) const = default;
};
// Spec appendix "CHS Calculation" for a disk of `total_sectors`.
Geometry ComputeGeometry(uint64_t total_sectors);

// "d49c5c80-350a-4a89-898a-5ad6d10f6578": the bytes in stored order, as vhdiinfo prints them.
std::string FormatUuid(const Uuid& uuid);
// A printable rendering of a 4-byte code ("qemu", "win ", "wa\0\0" -> "wa\x00\x00").
std::string FormatCode(std::span<const char> code);
// UTF-16 (little- or big-endian) to UTF-8, stopping at the first NUL; invalid units become
// U+FFFD.
std::string Utf16ToUtf8(std::span<const uint8_t> bytes, bool big_endian);

}  // namespace ferry::vhd
