// Placeholder until the OVA reader lands; the registry links against it.
#include "disk/ova/ova.h"

namespace ferry {

Result<std::unique_ptr<BlockSource>> OpenOva(const OpenContext&, std::unique_ptr<File> file) {
  return Status::Unsupported(file->path() + ": ova reading is not implemented yet");
}

}  // namespace ferry
