// OVA packages (a tar of an OVF descriptor, disks and a manifest), read in place: disks are
// read through a slice of the .ova file, never extracted.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/file.h"
#include "common/status.h"
#include "disk/block_source.h"
#include "disk/image.h"

namespace ferry {

// One disk as the OVF describes it.
struct OvfDisk {
  std::string disk_id;       // ovf:diskId
  std::string file_href;     // the tar member holding it
  uint64_t capacity = 0;     // bytes (ovf:capacity x capacityAllocationUnits)
  std::string format_uri;    // ovf:format, e.g. ...#streamOptimized
};

struct OvfDescriptor {
  std::string vm_name;
  std::vector<OvfDisk> disks;  // in the order the OVF lists them
};

// Opens disk number ctx.options().ova_disk_index of the OVA `file` (untrusted).
Result<std::unique_ptr<BlockSource>> OpenOva(const OpenContext& ctx, std::unique_ptr<File> file);

}  // namespace ferry
