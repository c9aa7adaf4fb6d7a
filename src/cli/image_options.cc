#include "cli/image_options.h"

namespace ferry::cli {

void AddImageOptions(CLI::App* cmd, ImageArgs* args) {
  cmd->add_option("--ova-disk", args->ova_disk, "Which disk of an OVA (0-based)");
  cmd->add_flag("--allow-outside-files", args->allow_outside,
                "Let backing/parent/extent references leave the image's folder");
}

Result<OpenOptions> ToOpenOptions(const ImageArgs& args) {
  OpenOptions open;
  open.allow_outside_files = args.allow_outside;
  open.ova_disk_index = args.ova_disk;
  if (!args.format.empty()) {
    FERRY_ASSIGN_OR_RETURN(ImageFormat f, ParseImageFormat(args.format));
    open.format = f;
  }
  return open;
}

}  // namespace ferry::cli
