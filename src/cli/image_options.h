// The options every command that opens an image shares (-f, --ova-disk,
// --allow-outside-files), registered once and turned into OpenOptions in one place.
#pragma once

#include <CLI/CLI.hpp>
#include <string>

#include "common/status.h"
#include "disk/image.h"

namespace ferry::cli {

struct ImageArgs {
  std::string format;  // empty: probe
  int ova_disk = 0;
  bool allow_outside = false;
};

// Adds --ova-disk and --allow-outside-files; the format flag is added by the caller, whose
// name for it differs (-f, --source-format).
void AddImageOptions(CLI::App* cmd, ImageArgs* args);

Result<OpenOptions> ToOpenOptions(const ImageArgs& args);

}  // namespace ferry::cli
