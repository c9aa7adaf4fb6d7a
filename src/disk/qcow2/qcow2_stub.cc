// Placeholder until the Qcow2 reader and writer land; the registry links against these.
#include "disk/qcow2/qcow2.h"

namespace ferry {

Result<std::unique_ptr<BlockSource>> OpenQcow2(const OpenContext&, std::unique_ptr<File> file) {
  return Status::Unsupported(file->path() + ": qcow2 reading is not implemented yet");
}
Result<std::unique_ptr<BlockSink>> CreateQcow2(const std::string& path, const CreateOptions&) {
  return Status::Unsupported(path + ": qcow2 writing is not implemented yet");
}
Result<std::unique_ptr<BlockSink>> ResumeQcow2(const std::string& path, const CreateOptions&,
                                            std::span<const uint8_t>) {
  return Status::Unsupported(path + ": qcow2 writing is not implemented yet");
}

}  // namespace ferry
