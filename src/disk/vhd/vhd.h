// Vhd images: the reader (a BlockSource) and the writer (a BlockSink).
// See docs/formats/ for what Ferry writes and checks.
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

// Opens `file` (untrusted) as Vhd. References to other files (backing files, parents,
// extents) go through ctx.ResolveReference / ctx.OpenBacking.
Result<std::unique_ptr<BlockSource>> OpenVhd(const OpenContext& ctx, std::unique_ptr<File> file);

// Creates a new Vhd image at `path` for the copy engine to fill.
Result<std::unique_ptr<BlockSink>> CreateVhd(const std::string& path, const CreateOptions& options);

// Reopens a partly written Vhd image at `path` from the blob its Checkpoint() returned.
Result<std::unique_ptr<BlockSink>> ResumeVhd(const std::string& path, const CreateOptions& options,
                                            std::span<const uint8_t> state);

}  // namespace ferry
