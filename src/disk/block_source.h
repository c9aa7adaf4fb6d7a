// BlockSource: a readable virtual disk (a format reader, an NBD client, a backing chain).
//
// The copy engine asks a source for extents first and reads only what the source says holds
// data, so every reader must report holes and zero ranges it knows about.
//
// Thread-safety: Extents() and Read() may be called concurrently from several threads; a
// reader protects its caches (L2 tables, grain tables, BAT blocks) itself.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "common/status.h"

namespace ferry {

enum class ExtentKind : uint8_t {
  kData,  // allocated, must be read
  kZero,  // reads as zeros and the format says so (a zero cluster / zero flag / zero block)
  kHole,  // unallocated here and in every backing layer: reads as zeros
  kSkip,  // not selected (e.g. clean in a dirty bitmap): the copy leaves the target as it is
};

struct Extent {
  uint64_t offset = 0;
  uint64_t length = 0;
  ExtentKind kind = ExtentKind::kData;
  bool operator==(const Extent&) const = default;
};

// Facts `ferry inspect` prints. Formats add their own key/value details.
struct ImageInfo {
  std::string format;           // "qcow2", "vmdk", "vhdx", "vhd", "raw", "nbd"
  std::string subformat;        // "monolithicSparse", "dynamic", "differencing", "v3" ...
  uint64_t virtual_size = 0;
  uint64_t file_size = 0;       // bytes the image takes on the host, all files of it
  uint64_t allocated_bytes = 0; // bytes of guest data stored in this layer
  uint32_t cluster_size = 0;    // allocation unit (cluster, grain, block), 0 if none
  std::vector<std::string> files;         // every host file the image consists of
  std::vector<std::string> backing_chain; // parent paths, nearest first
  std::vector<std::pair<std::string, std::string>> details;  // format-specific facts
  std::vector<std::string> problems;      // integrity problems found while opening
};

class BlockSource {
 public:
  virtual ~BlockSource() = default;

  // Virtual disk size in bytes.
  virtual uint64_t size() const = 0;

  virtual ImageInfo info() const = 0;

  // Appends to `out` extents that exactly cover [offset, offset+length), in ascending order,
  // adjacent extents of the same kind merged where convenient.
  // REQUIRES: offset + length <= size()
  virtual Status Extents(uint64_t offset, uint64_t length, std::vector<Extent>* out) = 0;

  // Reads buf.size() bytes of virtual disk at offset (holes and zero ranges read as zeros).
  // REQUIRES: offset + buf.size() <= size()
  virtual Status Read(uint64_t offset, std::span<uint8_t> buf) = 0;
};

}  // namespace ferry
