// Qcow2 header parsing (see qcow2_format.h).
#include "disk/qcow2/qcow2_format.h"

#include <algorithm>
#include <map>

#include "common/bytes.h"

namespace ferry::qcow2 {
namespace {

// spec "Feature name table": type 0 = incompatible, 1 = compatible, 2 = autoclear.
constexpr uint8_t kFeatureTypeIncompatible = 0;

std::string IncompatibleBitName(int bit, const std::map<int, std::string>& names) {
  auto it = names.find(bit);
  if (it != names.end() && !it->second.empty()) return " ('" + it->second + "')";
  switch (bit) {
    case 0: return " (dirty)";
    case 1: return " (corrupt)";
    case 2: return " (external data file)";
    case 3: return " (compression type)";
    case 4: return " (extended L2 entries)";
    default: return "";
  }
}

std::string PrintableName(std::span<const uint8_t> bytes) {
  std::string s;
  for (uint8_t c : bytes) {
    if (c == 0) break;
    s += (c >= 0x20 && c < 0x7f) ? static_cast<char>(c) : '?';
  }
  return s;
}

}  // namespace

uint64_t L1EntriesFor(uint64_t size, uint32_t cluster_bits, uint64_t l2_entries) {
  const uint64_t bytes_per_l2 = l2_entries << cluster_bits;
  return DivRoundUp(size, bytes_per_l2);
}

Result<Header> ReadHeader(const File& file) {
  const std::string& path = file.path();
  FERRY_ASSIGN_OR_RETURN(const uint64_t file_size, file.Size());
  if (file_size < kV2HeaderLength) {
    return Status::Corrupt(path + ": qcow2 header truncated: the file is " +
                           std::to_string(file_size) + " bytes, the header needs " +
                           std::to_string(kV2HeaderLength));
  }
  // The fixed part first (at most 112 bytes), then the whole header cluster.
  std::vector<uint8_t> head(std::min<uint64_t>(file_size, kV3HeaderLengthWithCompression));
  FERRY_TRY(file.ReadAt(0, head));
  const uint8_t* p = head.data();
  if (LoadBE32(p) != kMagic) return Status::Corrupt(path + ": not a qcow2 image (bad magic)");

  Header h;
  h.version = LoadBE32(p + kOffVersion);
  if (h.version != 2 && h.version != 3) {
    return Status::Unsupported(path + ": qcow2 version " + std::to_string(h.version) +
                               " (Ferry reads versions 2 and 3)");
  }
  h.backing_file_offset = LoadBE64(p + kOffBackingFileOffset);
  h.backing_file_size = LoadBE32(p + kOffBackingFileSize);
  h.cluster_bits = LoadBE32(p + kOffClusterBits);
  h.size = LoadBE64(p + kOffSize);
  const uint32_t crypt_method = LoadBE32(p + kOffCryptMethod);
  h.l1_size = LoadBE32(p + kOffL1Size);
  h.l1_table_offset = LoadBE64(p + kOffL1TableOffset);
  h.refcount_table_offset = LoadBE64(p + kOffRefcountTableOffset);
  h.refcount_table_clusters = LoadBE32(p + kOffRefcountTableClusters);
  h.nb_snapshots = LoadBE32(p + kOffNbSnapshots);

  if (h.cluster_bits < kMinClusterBits || h.cluster_bits > kMaxClusterBits) {
    return Status::Corrupt(path + ": header field cluster_bits (at " + Hex(kOffClusterBits) +
                           ") is " + std::to_string(h.cluster_bits) + ", must be 9..21");
  }
  h.cluster_size = 1ull << h.cluster_bits;

  if (h.version == 3) {
    if (head.size() < kV3MinHeaderLength) {
      return Status::Corrupt(path + ": qcow2 v3 header truncated: the file is " +
                             std::to_string(file_size) + " bytes");
    }
    h.incompatible = LoadBE64(p + kOffIncompatibleFeatures);
    h.compatible = LoadBE64(p + kOffCompatibleFeatures);
    h.autoclear = LoadBE64(p + kOffAutoclearFeatures);
    h.refcount_order = LoadBE32(p + kOffRefcountOrder);
    h.header_length = LoadBE32(p + kOffHeaderLength);
    if (h.header_length < kV3MinHeaderLength || h.header_length > h.cluster_size ||
        h.header_length % 8 != 0) {
      return Status::Corrupt(path + ": header field header_length (at " + Hex(kOffHeaderLength) +
                             ") is " + std::to_string(h.header_length) +
                             ", must be a multiple of 8 from 104 to the cluster size");
    }
    if (h.refcount_order > 6) {
      return Status::Corrupt(path + ": header field refcount_order (at " +
                             Hex(kOffRefcountOrder) + ") is " + std::to_string(h.refcount_order) +
                             ", must be 0..6");
    }
    if (h.header_length > kOffCompressionType) {
      if (head.size() <= kOffCompressionType) {
        return Status::Corrupt(path + ": qcow2 header truncated before compression_type");
      }
      h.compression_type = p[kOffCompressionType];
    }
  }

  // Header cluster: extensions run from header_length to the backing file name (or the end
  // of the first cluster).
  std::vector<uint8_t> cluster(std::min<uint64_t>(file_size, h.cluster_size));
  FERRY_TRY(file.ReadAt(0, cluster));
  uint64_t ext_end = cluster.size();
  if (h.backing_file_offset != 0) {
    uint64_t name_end = 0;
    if (h.backing_file_size == 0 || h.backing_file_size > kMaxBackingNameLength ||
        !CheckedAdd(h.backing_file_offset, h.backing_file_size, &name_end) ||
        h.backing_file_offset < h.header_length || name_end > cluster.size()) {
      return Status::Corrupt(path + ": backing file name at " + Hex(h.backing_file_offset) +
                             " (" + std::to_string(h.backing_file_size) +
                             " bytes) does not lie inside the header cluster (" +
                             Hex(cluster.size()) + " bytes) after the header");
    }
    h.backing_file.assign(reinterpret_cast<const char*>(cluster.data() + h.backing_file_offset),
                          h.backing_file_size);
    ext_end = h.backing_file_offset;
  }

  // Extensions exist in version 2 images too (QEMU writes the backing format there).
  std::map<int, std::string> incompatible_names;
  {
    uint64_t pos = h.header_length;
    while (pos + 8 <= ext_end) {
      const uint32_t type = LoadBE32(cluster.data() + pos);
      const uint32_t len = LoadBE32(cluster.data() + pos + 4);
      if (type == kExtEnd) break;
      const uint64_t data = pos + 8;
      if (len > ext_end - data) {
        return Status::Corrupt(path + ": header extension " + Hex(type) + " at " + Hex(pos) +
                               " (" + std::to_string(len) + " bytes) overruns the header area (" +
                               Hex(ext_end) + ")");
      }
      std::span<const uint8_t> body(cluster.data() + data, len);
      if (type == kExtBackingFormat) {
        h.backing_format = PrintableName(body);
      } else if (type == kExtFeatureTable) {
        for (size_t i = 0; i + kExtFeatureTableEntrySize <= body.size();
             i += kExtFeatureTableEntrySize) {
          if (body[i] == kFeatureTypeIncompatible && body[i + 1] < 64) {
            incompatible_names[body[i + 1]] = PrintableName(body.subspan(i + 2, 46));
          }
        }
      }
      // Other extensions (bitmaps, encryption, external data file name, unknown ones) do not
      // affect reading the active L1 of an image Ferry accepts: skip them.
      pos = data + RoundUp(len, 8);
    }
  }

  const uint64_t unknown = h.incompatible & ~kIncompatKnown;
  if (unknown != 0) {
    const int bit = __builtin_ctzll(unknown);
    return Status::Unsupported(path + ": unknown incompatible feature bit " +
                               std::to_string(bit) + IncompatibleBitName(bit, incompatible_names) +
                               " is set");
  }
  if (h.incompatible & kIncompatCorrupt) {
    return Status::Corrupt(path + ": the image is marked corrupt (incompatible feature bit 1, "
                           "'corrupt bit'); repair it with qemu-img check -r all");
  }
  if (h.incompatible & kIncompatExternalData) {
    return Status::Unsupported(path + ": external data files (incompatible feature bit 2) are "
                               "not supported");
  }
  if (crypt_method != 0) {
    return Status::Unsupported(path + ": encrypted qcow2 images (crypt_method " +
                               std::to_string(crypt_method) + ") are not supported");
  }
  if (h.compression_type != kCompressionZlib && h.compression_type != kCompressionZstd) {
    return Status::Unsupported(path + ": compression_type " +
                               std::to_string(h.compression_type) + " (Ferry reads zlib and zstd)");
  }
  if (h.compression_type != kCompressionZlib && !(h.incompatible & kIncompatCompressionType)) {
    return Status::Corrupt(path + ": compression_type is " + std::to_string(h.compression_type) +
                           " but incompatible feature bit 3 (compression type) is clear");
  }

  if (h.size > kMaxVirtualSize) {
    return Status::Corrupt(path + ": header field size (at " + Hex(kOffSize) + ") is " +
                           std::to_string(h.size) + " bytes, over 2^61");
  }
  const uint64_t l1_bytes = uint64_t{h.l1_size} * 8;
  if (l1_bytes > kMaxL1Bytes) {
    return Status::TooLarge(path + ": header field l1_size (at " + Hex(kOffL1Size) + ") is " +
                            std::to_string(h.l1_size) + " entries, over the 32 MiB L1 table cap");
  }
  const uint64_t l1_needed = L1EntriesFor(h.size, h.cluster_bits, h.l2_entries());
  if (h.l1_size < l1_needed) {
    return Status::Corrupt(path + ": L1 table has " + std::to_string(h.l1_size) +
                           " entries, the virtual size " + std::to_string(h.size) + " needs " +
                           std::to_string(l1_needed));
  }
  uint64_t l1_end = 0;
  if (h.l1_size > 0) {
    if (h.l1_table_offset % h.cluster_size != 0) {
      return Status::Corrupt(path + ": L1 table offset " + Hex(h.l1_table_offset) +
                             " is not cluster aligned");
    }
    if (!CheckedAdd(h.l1_table_offset, l1_bytes, &l1_end) || l1_end > file_size) {
      return Status::Corrupt(path + ": L1 table at " + Hex(h.l1_table_offset) + " (" +
                             std::to_string(l1_bytes) + " bytes) lies past the end of the file (" +
                             Hex(file_size) + ")");
    }
  }
  const uint64_t reftable_bytes = uint64_t{h.refcount_table_clusters} * h.cluster_size;
  uint64_t reftable_end = 0;
  if (reftable_bytes > kMaxRefcountTableBytes) {
    return Status::TooLarge(path + ": refcount table of " +
                            std::to_string(h.refcount_table_clusters) +
                            " clusters is over the 8 MiB cap");
  }
  if (h.refcount_table_offset % h.cluster_size != 0 ||
      !CheckedAdd(h.refcount_table_offset, reftable_bytes, &reftable_end) ||
      reftable_end > file_size) {
    return Status::Corrupt(path + ": refcount table at " + Hex(h.refcount_table_offset) + " (" +
                           std::to_string(h.refcount_table_clusters) +
                           " clusters) is unaligned or lies past the end of the file (" +
                           Hex(file_size) + ")");
  }
  return h;
}

}  // namespace ferry::qcow2
