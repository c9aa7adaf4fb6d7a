// The image format registry: probing, opening readers, creating and resuming writers.
//
// This is the one place that knows every format; the CLI, the agent and tests go through it.
// Each format folder (raw/, qcow2/, vmdk/, vhd/, vhdx/, ova/) exposes Open/Create/Resume
// functions with the signatures below, declared in its own header.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/file.h"
#include "common/status.h"
#include "disk/block_sink.h"
#include "disk/block_source.h"

namespace ferry {

enum class ImageFormat { kRaw, kQcow2, kVmdk, kVhd, kVhdx, kOva };

std::string_view FormatName(ImageFormat format);
Result<ImageFormat> ParseImageFormat(std::string_view name);  // "raw", "qcow2", "vpc" = vhd ...

struct OpenOptions {
  Env* env = PosixEnv();
  std::optional<ImageFormat> format;     // unset: probe by magic; never probes raw as another
  bool allow_outside_files = false;      // backing/parent/extent files outside the image folder
  std::vector<std::string> allowed_dirs; // further folders references may point into
  int max_chain_depth = 32;              // backing/parent chain length cap
  int ova_disk_index = 0;                // which disk of an OVA to open (0-based, OVF order)
};

// Handed to format readers so that they open referenced files (backing files, parents,
// extents) under one policy. Loop and depth checks live here, not in every format.
class OpenContext {
 public:
  explicit OpenContext(const OpenOptions& options);

  const OpenOptions& options() const { return options_; }
  Env* env() const { return options_.env; }
  int depth() const { return static_cast<int>(chain_.size()); }

  // Resolves a file reference found inside `image_path` (relative to that image's folder,
  // or absolute) and checks it against the policy: it must exist and lie inside the image's
  // own folder or an allowed folder unless allow_outside_files. `what` names the reference
  // for messages ("backing file", "parent", "extent"). Errors: kNotFound naming the path
  // looked for, kPermissionDenied naming the policy.
  Result<std::string> ResolveReference(const std::string& image_path,
                                       const std::string& reference, std::string_view what) const;

  // Opens a backing/parent image already resolved by ResolveReference, one level deeper.
  // Fails with kCorrupt on a loop (the same real file twice in the chain) and kTooLarge past
  // max_chain_depth. `format` unset: probe.
  Result<std::unique_ptr<BlockSource>> OpenBacking(const std::string& path,
                                                   std::optional<ImageFormat> format) const;

  // Used by OpenImage: records `real_path` as part of the chain being opened.
  Result<OpenContext> Descend(const std::string& real_path) const;

 private:
  OpenOptions options_;
  std::vector<std::string> chain_;  // real paths of images above, outermost first
};

// Looks at the first and last bytes of `path`: qcow2, vmdk (sparse or descriptor), vhdx, vhd
// (dynamic header or fixed footer), ova (tar), else raw.
Result<ImageFormat> ProbeFormat(Env* env, const std::string& path);

// Opens an image for reading, probing its format unless options.format is set.
Result<std::unique_ptr<BlockSource>> OpenImage(const std::string& path,
                                               const OpenOptions& options = {});
// The same with an existing context (for backing chains).
Result<std::unique_ptr<BlockSource>> OpenImageIn(const OpenContext& ctx, const std::string& path,
                                                 std::optional<ImageFormat> format);

struct CreateOptions {
  Env* env = PosixEnv();
  uint64_t size = 0;          // virtual size in bytes
  uint32_t cluster_size = 0;  // cluster/block/grain size; 0: the format's default
  std::string subformat;      // vhd: dynamic|fixed; vmdk: streamOptimized|monolithicSparse
  std::string compression;    // qcow2: "" (none), "zlib" or "zstd"
  bool preallocate = false;   // raw: allocate every byte
  // The name the image will have once complete, when it is written under a temporary name
  // (formats that record their own file name, like a VMDK descriptor's extent line, use
  // this). Empty: the path it is created at.
  std::string final_path;
};

// Creates a new image at `path` (overwriting it) for writing.
Result<std::unique_ptr<BlockSink>> CreateImage(ImageFormat format, const std::string& path,
                                               const CreateOptions& options);
// Reopens a partially written image from the state its last Checkpoint() returned.
Result<std::unique_ptr<BlockSink>> ResumeImage(ImageFormat format, const std::string& path,
                                               const CreateOptions& options,
                                               std::span<const uint8_t> state);

// Formats that can be written.
bool CanWrite(ImageFormat format);

}  // namespace ferry
