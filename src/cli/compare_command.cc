// ferry compare: are two disks (any formats) identical in content? Exit 0 yes, 1 no.
#include <cstdio>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/image_options.h"
#include "cli/output.h"
#include "disk/engine/copy_engine.h"
#include "disk/image.h"

namespace ferry::cli {
namespace {

struct CompareArgs {
  std::string a, b, output = "text";
  ImageArgs open_a, open_b;
  bool strict = false;
};

int RunCompare(const CompareArgs& args) {
  auto mode = ParseOutputMode(args.output);
  if (!mode.ok()) return ReportError(OutputMode::kText, "compare", mode.status());
  auto open = [&](const std::string& path,
                  const ImageArgs& image) -> Result<std::unique_ptr<BlockSource>> {
    FERRY_ASSIGN_OR_RETURN(OpenOptions o, ToOpenOptions(image));
    return OpenImage(path, o);
  };
  ImageArgs open_b = args.open_b;
  open_b.allow_outside = args.open_a.allow_outside;  // one flag covers both images
  auto a = open(args.a, args.open_a);
  if (!a.ok()) return ReportError(*mode, "compare", a.status());
  auto b = open(args.b, open_b);
  if (!b.ok()) return ReportError(*mode, "compare", b.status());
  auto r = CompareDisks(**a, **b, 4, args.strict);
  if (!r.ok()) return ReportError(*mode, "compare", r.status());
  if (*mode == OutputMode::kJson) {
    nlohmann::json j = {{"identical", r->identical}, {"size_differs", r->size_differs}};
    if (!r->identical) j["first_difference"] = r->first_difference;
    std::printf("%s\n", j.dump().c_str());
  } else if (r->identical) {
    std::printf("Images are identical.\n");
  } else if (r->size_differs && args.strict) {
    std::printf("Image sizes differ: %llu and %llu bytes\n",
                static_cast<unsigned long long>((*a)->size()),
                static_cast<unsigned long long>((*b)->size()));
  } else {
    std::printf("Content mismatch at offset %llu (%s)\n",
                static_cast<unsigned long long>(r->first_difference),
                Hex(r->first_difference).c_str());
  }
  return r->identical ? 0 : 1;
}

}  // namespace

void AddCompareCommand(CLI::App& app, int* exit_code) {
  auto args = std::make_shared<CompareArgs>();
  CLI::App* cmd = app.add_subcommand("compare", "Compare two disks' contents (exit 0 = same)");
  cmd->add_option("A", args->a, "First image")->required();
  cmd->add_option("B", args->b, "Second image")->required();
  cmd->add_option("-f", args->open_a.format, "Format of A");
  cmd->add_option("-F", args->open_b.format, "Format of B");
  cmd->add_flag("--strict", args->strict, "Different sizes count as different");
  cmd->add_flag("--allow-outside-files", args->open_a.allow_outside,
                "Let backing/parent/extent references leave the image's folder");
  cmd->add_option("--output", args->output, "text|json");
  cmd->callback([args, exit_code] { *exit_code = RunCompare(*args); });
}

}  // namespace ferry::cli
