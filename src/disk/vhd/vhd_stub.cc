// Placeholder until the Vhd reader and writer land; the registry links against these.
#include "disk/vhd/vhd.h"

namespace ferry {

Result<std::unique_ptr<BlockSource>> OpenVhd(const OpenContext&, std::unique_ptr<File> file) {
  return Status::Unsupported(file->path() + ": vhd reading is not implemented yet");
}
Result<std::unique_ptr<BlockSink>> CreateVhd(const std::string& path, const CreateOptions&) {
  return Status::Unsupported(path + ": vhd writing is not implemented yet");
}
Result<std::unique_ptr<BlockSink>> ResumeVhd(const std::string& path, const CreateOptions&,
                                            std::span<const uint8_t>) {
  return Status::Unsupported(path + ": vhd writing is not implemented yet");
}

}  // namespace ferry
