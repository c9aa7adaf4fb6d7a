// ferry inspect: what an image is, and (with --map) where its data lies.
#include <cstdio>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/image_options.h"
#include "cli/output.h"
#include "common/units.h"
#include "disk/image.h"

namespace ferry::cli {
namespace {

struct InspectArgs {
  std::string image, output = "text";
  ImageArgs open;
  bool map = false;
};

std::string_view KindName(ExtentKind k) {
  switch (k) {
    case ExtentKind::kData: return "data";
    case ExtentKind::kZero: return "zero";
    case ExtentKind::kHole: return "hole";
    case ExtentKind::kSkip: return "skip";
  }
  return "?";
}

int RunInspect(const InspectArgs& a) {
  auto mode = ParseOutputMode(a.output);
  if (!mode.ok()) return ReportError(OutputMode::kText, "inspect", mode.status());
  auto open = ToOpenOptions(a.open);
  if (!open.ok()) return ReportError(*mode, "inspect", open.status());
  auto src = OpenImage(a.image, *open);
  if (!src.ok()) return ReportError(*mode, "inspect", src.status());
  ImageInfo info = (*src)->info();
  std::vector<Extent> extents;
  if (a.map) {
    constexpr uint64_t kStep = 1ull << 30;
    for (uint64_t off = 0; off < (*src)->size(); off += kStep) {
      std::vector<Extent> part;
      Status s = (*src)->Extents(off, std::min(kStep, (*src)->size() - off), &part);
      if (!s.ok()) return ReportError(*mode, "inspect", s);
      for (auto& e : part) {
        if (!extents.empty() && extents.back().kind == e.kind &&
            extents.back().offset + extents.back().length == e.offset) {
          extents.back().length += e.length;
        } else {
          extents.push_back(e);
        }
      }
    }
  }
  if (*mode == OutputMode::kJson) {
    nlohmann::json j = {{"image", a.image},
                        {"format", info.format},
                        {"subformat", info.subformat},
                        {"virtual_size", info.virtual_size},
                        {"file_size", info.file_size},
                        {"allocated_bytes", info.allocated_bytes},
                        {"cluster_size", info.cluster_size},
                        {"files", info.files},
                        {"backing_chain", info.backing_chain},
                        {"problems", info.problems}};
    nlohmann::json details = nlohmann::json::object();
    for (const auto& [k, v] : info.details) details[k] = v;
    j["details"] = details;
    if (a.map) {
      auto& m = j["map"] = nlohmann::json::array();
      for (const auto& e : extents) {
        m.push_back({{"offset", e.offset}, {"length", e.length}, {"kind", KindName(e.kind)}});
      }
    }
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    std::printf("image:           %s\n", a.image.c_str());
    std::printf("format:          %s%s%s\n", info.format.c_str(), info.subformat.empty() ? "" : " ",
                info.subformat.c_str());
    std::printf("virtual size:    %s (%llu bytes)\n", FormatBytes(info.virtual_size).c_str(),
                static_cast<unsigned long long>(info.virtual_size));
    std::printf("file size:       %s\n", FormatBytes(info.file_size).c_str());
    std::printf("allocated:       %s\n", FormatBytes(info.allocated_bytes).c_str());
    if (info.cluster_size) std::printf("cluster size:    %u\n", info.cluster_size);
    for (const auto& b : info.backing_chain) std::printf("backing file:    %s\n", b.c_str());
    for (const auto& [k, v] : info.details) std::printf("%-16s %s\n", (k + ":").c_str(), v.c_str());
    for (const auto& p : info.problems) std::printf("PROBLEM:         %s\n", p.c_str());
    if (a.map) {
      std::printf("%-20s %-20s %s\n", "offset", "length", "kind");
      for (const auto& e : extents) {
        std::printf("%-20s %-20s %s\n", Hex(e.offset).c_str(), Hex(e.length).c_str(),
                    std::string(KindName(e.kind)).c_str());
      }
    }
  }
  return info.problems.empty() ? 0 : ExitCodeFor(ErrorCode::kCorrupt);
}

}  // namespace

void AddInspectCommand(CLI::App& app, int* exit_code) {
  auto args = std::make_shared<InspectArgs>();
  CLI::App* cmd = app.add_subcommand("inspect", "Show an image's format, sizes, chain, problems");
  cmd->add_option("IMAGE", args->image, "Image to inspect")->required();
  cmd->add_option("-f,--format", args->open.format, "Image format (probed when omitted)");
  cmd->add_flag("--map", args->map, "List data, zero and hole ranges");
  AddImageOptions(cmd, &args->open);
  cmd->add_option("--output", args->output, "text|json");
  cmd->callback([args, exit_code] { *exit_code = RunInspect(*args); });
}

}  // namespace ferry::cli
