// VMDK on-disk structures shared by the reader and the writer: the hosted sparse extent
// header ("KDMV"), stream-optimized markers, and the text descriptor.
//
// References: VMware "Virtual Disk Format 5.0" (the VMDK spec), sections "Hosted Sparse
// Extent Header", "Stream-Optimized Compressed Sparse Extents" and "The Descriptor File".
// Internal to src/disk/vmdk/. Plain values; thread-compatible.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/status.h"

namespace ferry::vmdk {

constexpr uint64_t kSector = 512;
// VMDK spec, Hosted Sparse Extent Header: magicNumber 'KDMV' stored little-endian.
constexpr uint32_t kSparseMagic = 0x564d444b;
constexpr size_t kHeaderSize = 512;
// Header flags (VMDK spec: "flags").
constexpr uint32_t kFlagValidNewlineTest = 1u << 0;
constexpr uint32_t kFlagRedundantGrainTable = 1u << 1;
constexpr uint32_t kFlagZeroedGrainGte = 1u << 2;  // GTE == 1 means "reads as zeros"
constexpr uint32_t kFlagCompressed = 1u << 16;
constexpr uint32_t kFlagMarkers = 1u << 17;
// compressAlgorithm values.
constexpr uint16_t kCompressionNone = 0;
constexpr uint16_t kCompressionDeflate = 1;
// gdOffset value meaning "read the footer at the end of the file" (stream-optimized).
constexpr uint64_t kGdAtEnd = 0xffffffffffffffffull;
// Grain table entries with special meaning.
constexpr uint32_t kGteUnallocated = 0;
constexpr uint32_t kGteZeroed = 1;
// Stream-optimized marker types (VMDK spec: MARKER_EOS, MARKER_GT, MARKER_GD, MARKER_FOOTER).
constexpr uint32_t kMarkerEos = 0;
constexpr uint32_t kMarkerGrainTable = 1;
constexpr uint32_t kMarkerGrainDirectory = 2;
constexpr uint32_t kMarkerFooter = 3;
// A compressed grain starts with {uint64 lba; uint32 size} then the zlib stream.
constexpr size_t kGrainMarkerHeader = 12;

// Input caps (untrusted images).
constexpr uint64_t kMaxDescriptorBytes = 64 * 1024;
constexpr size_t kMaxExtents = 1000;
constexpr uint64_t kMinGrainSectors = 8;           // VMDK spec: at least 4 KiB
constexpr uint64_t kMaxGrainSectors = 2048;        // 1 MiB; VMware and qemu write 64 KiB
constexpr uint32_t kMaxGtesPerGt = 4096;           // VMware and qemu write 512
constexpr uint64_t kMaxVirtualBytes = 1ull << 50;  // 1 PiB

// Writer defaults.
constexpr uint64_t kDefaultGrainSectors = 128;  // 64 KiB, as VMware and qemu
constexpr uint32_t kDefaultGtesPerGt = 512;

struct SparseHeader {
  uint32_t version = 1;
  uint32_t flags = 0;
  uint64_t capacity = 0;           // sectors
  uint64_t grain_size = 0;         // sectors
  uint64_t descriptor_offset = 0;  // sectors
  uint64_t descriptor_size = 0;    // sectors
  uint32_t num_gtes_per_gt = 0;
  uint64_t rgd_offset = 0;  // sectors
  uint64_t gd_offset = 0;   // sectors
  uint64_t overhead = 0;    // sectors
  uint8_t unclean_shutdown = 0;
  uint16_t compress_algorithm = 0;
};

// True if `bytes` (at least 512) start with the sparse magic; fills `out`.
bool ParseSparseHeader(std::span<const uint8_t> bytes, SparseHeader* out);
// Writes the 512-byte header (magic, fields, the newline-detection characters).
void SerializeSparseHeader(const SparseHeader& h, std::span<uint8_t, kHeaderSize> out);
// Writes a 512-byte stream-optimized metadata marker.
void SerializeMarker(uint64_t value, uint32_t type, std::span<uint8_t, kSector> out);

enum class ExtentType { kSparse, kFlat, kZero, kVmfs, kVmfsSparse, kSeSparse, kVmfsRdm, kVmfsRaw };

struct DescriptorExtent {
  std::string access;  // RW, RDONLY, NOACCESS
  uint64_t sectors = 0;
  ExtentType type = ExtentType::kSparse;
  std::string type_name;  // as written
  std::string file;       // empty for ZERO
  uint64_t offset = 0;    // sectors (FLAT/VMFS)
};

struct Descriptor {
  uint32_t cid = 0xffffffff;
  uint32_t parent_cid = 0xffffffff;  // 0xffffffff: no parent
  std::string create_type;
  std::string parent_hint;  // parentFileNameHint
  std::vector<DescriptorExtent> extents;
  std::vector<std::pair<std::string, std::string>> ddb;  // ddb.* keys, unquoted values

  bool has_parent() const { return parent_cid != 0xffffffff; }
  // The value of ddb key `key` (e.g. "ddb.adapterType"), or "".
  std::string Ddb(std::string_view key) const;
};

constexpr std::string_view kDescriptorSignature = "# Disk DescriptorFile";

// Parses descriptor text (untrusted). `where` names the file for messages.
Result<Descriptor> ParseDescriptor(std::string_view text, const std::string& where);

// Descriptor text for a single-extent sparse disk as Ferry writes it.
std::string RenderDescriptor(uint32_t cid, std::string_view create_type, uint64_t sectors,
                             std::string_view extent_file);

}  // namespace ferry::vmdk
