// Placeholder until the Vhdx reader and writer land; the registry links against these.
#include "disk/vhdx/vhdx.h"

namespace ferry {

Result<std::unique_ptr<BlockSource>> OpenVhdx(const OpenContext&, std::unique_ptr<File> file) {
  return Status::Unsupported(file->path() + ": vhdx reading is not implemented yet");
}
Result<std::unique_ptr<BlockSink>> CreateVhdx(const std::string& path, const CreateOptions&) {
  return Status::Unsupported(path + ": vhdx writing is not implemented yet");
}
Result<std::unique_ptr<BlockSink>> ResumeVhdx(const std::string& path, const CreateOptions&,
                                            std::span<const uint8_t>) {
  return Status::Unsupported(path + ": vhdx writing is not implemented yet");
}

}  // namespace ferry
