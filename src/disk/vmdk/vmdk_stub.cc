// Placeholder until the Vmdk reader and writer land; the registry links against these.
#include "disk/vmdk/vmdk.h"

namespace ferry {

Result<std::unique_ptr<BlockSource>> OpenVmdk(const OpenContext&, std::unique_ptr<File> file) {
  return Status::Unsupported(file->path() + ": vmdk reading is not implemented yet");
}
Result<std::unique_ptr<BlockSink>> CreateVmdk(const std::string& path, const CreateOptions&) {
  return Status::Unsupported(path + ": vmdk writing is not implemented yet");
}
Result<std::unique_ptr<BlockSink>> ResumeVmdk(const std::string& path, const CreateOptions&,
                                            std::span<const uint8_t>) {
  return Status::Unsupported(path + ": vmdk writing is not implemented yet");
}

}  // namespace ferry
