// Raw images: the virtual disk byte for byte. The reader reports holes from the host
// filesystem (SEEK_DATA/SEEK_HOLE); the writer is sparse unless asked to preallocate.
#pragma once

#include <memory>
#include <span>
#include <string>

#include "common/file.h"
#include "common/status.h"
#include "disk/block_sink.h"
#include "disk/block_source.h"
#include "disk/image.h"

namespace ferry {

Result<std::unique_ptr<BlockSource>> OpenRaw(const OpenContext& ctx, std::unique_ptr<File> file);
// A raw view of any File (used by VMDK flat extents and tests).
std::unique_ptr<BlockSource> NewRawSource(std::unique_ptr<File> file, uint64_t size);

Result<std::unique_ptr<BlockSink>> CreateRaw(const std::string& path, const CreateOptions& options);
Result<std::unique_ptr<BlockSink>> ResumeRaw(const std::string& path, const CreateOptions& options,
                                             std::span<const uint8_t> state);
// Writes into an existing raw file or block device without truncating it (incremental
// copies onto a previous full copy). zero_initialized() is false.
Result<std::unique_ptr<BlockSink>> OpenRawForUpdate(const std::string& path,
                                                    const CreateOptions& options);

}  // namespace ferry
