// Qcow2 on-disk constants and the header parser shared by the reader and the writer.
//
// Every constant points at QEMU's docs/interop/qcow2.txt ("spec" below). The header is parsed
// from untrusted bytes: ParseQcow2Header checks every field the reader and writer rely on and
// names the field and its offset in errors.
//
// Thread-safety: plain values and pure functions.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "common/file.h"
#include "common/status.h"

namespace ferry::qcow2 {

// spec "Header": magic 'Q' 'F' 'I' 0xfb at byte 0.
inline constexpr uint32_t kMagic = 0x514649fb;
inline constexpr uint32_t kV2HeaderLength = 72;   // spec: version 2 header is bytes 0..71
inline constexpr uint32_t kV3MinHeaderLength = 104;  // spec: version 3 header is >= 104 bytes
inline constexpr uint32_t kV3HeaderLengthWithCompression = 112;  // byte 104 + 7 padding
inline constexpr uint32_t kMinClusterBits = 9;    // spec: cluster_bits >= 9 (512 bytes)
inline constexpr uint32_t kMaxClusterBits = 21;   // spec: QEMU caps at 2 MiB
inline constexpr uint32_t kMaxBackingNameLength = 1023;  // spec: backing_file_size <= 1023

// Header field offsets (spec "Header", big-endian).
inline constexpr size_t kOffVersion = 4;
inline constexpr size_t kOffBackingFileOffset = 8;
inline constexpr size_t kOffBackingFileSize = 16;
inline constexpr size_t kOffClusterBits = 20;
inline constexpr size_t kOffSize = 24;
inline constexpr size_t kOffCryptMethod = 32;
inline constexpr size_t kOffL1Size = 36;
inline constexpr size_t kOffL1TableOffset = 40;
inline constexpr size_t kOffRefcountTableOffset = 48;
inline constexpr size_t kOffRefcountTableClusters = 56;
inline constexpr size_t kOffNbSnapshots = 60;
inline constexpr size_t kOffSnapshotsOffset = 64;
inline constexpr size_t kOffIncompatibleFeatures = 72;
inline constexpr size_t kOffCompatibleFeatures = 80;
inline constexpr size_t kOffAutoclearFeatures = 88;
inline constexpr size_t kOffRefcountOrder = 96;
inline constexpr size_t kOffHeaderLength = 100;
inline constexpr size_t kOffCompressionType = 104;

// spec "incompatible_features" bits.
inline constexpr uint64_t kIncompatDirty = 1ull << 0;
inline constexpr uint64_t kIncompatCorrupt = 1ull << 1;
inline constexpr uint64_t kIncompatExternalData = 1ull << 2;
inline constexpr uint64_t kIncompatCompressionType = 1ull << 3;
inline constexpr uint64_t kIncompatExtendedL2 = 1ull << 4;
inline constexpr uint64_t kIncompatKnown = (1ull << 5) - 1;
// spec "compatible_features" bit 0.
inline constexpr uint64_t kCompatLazyRefcounts = 1ull << 0;

// spec "compression_type" (byte 104).
inline constexpr uint8_t kCompressionZlib = 0;
inline constexpr uint8_t kCompressionZstd = 1;

// spec "Header extensions": type, length, data padded to 8 bytes.
inline constexpr uint32_t kExtEnd = 0x00000000;
inline constexpr uint32_t kExtBackingFormat = 0xe2792aca;
inline constexpr uint32_t kExtFeatureTable = 0x6803f857;
inline constexpr uint32_t kExtFeatureTableEntrySize = 48;  // type(1) bit(1) name(46)

// spec "Cluster mapping": L1 and standard L2 entries.
inline constexpr uint64_t kOflagCopied = 1ull << 63;      // refcount is exactly one
inline constexpr uint64_t kOflagCompressed = 1ull << 62;  // L2: compressed cluster
inline constexpr uint64_t kOflagZero = 1ull << 0;         // L2 (v3): reads as zeros
inline constexpr uint64_t kOffsetMask = 0x00fffffffffffe00ull;  // bits 9-55: host offset
inline constexpr uint64_t kL1ReservedMask = 0x7f000000000001ffull;
inline constexpr uint64_t kCompressedSectorSize = 512;  // spec: "512-byte sectors"
// spec "Extended L2 Entries": 32 subclusters, bitmap bits 0-31 allocated, 32-63 zero.
inline constexpr uint32_t kSubclustersPerCluster = 32;

// Reader cap: the L1 table is read whole at open (QEMU caps it at 32 MiB too).
inline constexpr uint64_t kMaxL1Bytes = 32ull << 20;
// QEMU's QCOW_MAX_REFTABLE_SIZE: refcount tables larger than this are not sane.
inline constexpr uint64_t kMaxRefcountTableBytes = 8ull << 20;
// Sizes above 2^61 bytes cannot be addressed by L2 entries' 56-bit host offsets anyway.
inline constexpr uint64_t kMaxVirtualSize = 1ull << 61;

// The compressed-cluster descriptor layout (spec "Compressed Clusters Descriptor").
struct CompressedLayout {
  uint32_t offset_bits;  // x = 62 - (cluster_bits - 8): bits 0..x-1 hold the host offset
  uint64_t offset_mask;
  uint64_t sectors_mask;  // additional 512-byte sectors, bits x..61
};
inline CompressedLayout CompressedLayoutFor(uint32_t cluster_bits) {
  CompressedLayout l;
  l.offset_bits = 62 - (cluster_bits - 8);
  l.offset_mask = (1ull << l.offset_bits) - 1;
  l.sectors_mask = (1ull << (cluster_bits - 8)) - 1;
  return l;
}

// The parsed, sanity-checked header of one image.
struct Header {
  uint32_t version = 0;
  uint32_t cluster_bits = 0;
  uint64_t cluster_size = 0;
  uint64_t size = 0;
  uint64_t backing_file_offset = 0;
  uint32_t backing_file_size = 0;
  uint32_t l1_size = 0;
  uint64_t l1_table_offset = 0;
  uint64_t refcount_table_offset = 0;
  uint32_t refcount_table_clusters = 0;
  uint32_t nb_snapshots = 0;
  uint64_t incompatible = 0;
  uint64_t compatible = 0;
  uint64_t autoclear = 0;
  uint32_t refcount_order = 4;
  uint32_t header_length = kV2HeaderLength;
  uint8_t compression_type = kCompressionZlib;
  std::string backing_file;                  // empty: none
  std::optional<std::string> backing_format; // from the backing format extension
  bool extended_l2() const { return (incompatible & kIncompatExtendedL2) != 0; }
  uint64_t l2_entry_bytes() const { return extended_l2() ? 16 : 8; }
  uint64_t l2_entries() const { return cluster_size / l2_entry_bytes(); }
};

// Reads, parses and checks the header cluster of `file` (untrusted): fixed fields, header
// extensions and the backing file name. Refuses what Ferry cannot read: unknown incompatible
// bits (Unsupported, naming the bit and its feature-table name), the corrupt bit (Corrupt),
// encryption and external data files (Unsupported). Extended L2 is accepted.
Result<Header> ReadHeader(const File& file);

// L1 entries needed to map `size` bytes with the given cluster geometry.
uint64_t L1EntriesFor(uint64_t size, uint32_t cluster_bits, uint64_t l2_entries);

}  // namespace ferry::qcow2
