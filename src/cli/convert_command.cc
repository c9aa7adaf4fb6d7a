// ferry convert: copy/convert a disk image, resumable, with manifest and progress.
#include <sys/resource.h>

#include <csignal>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/image_options.h"
#include "cli/output.h"
#include "common/checksum.h"
#include "common/units.h"
#include "transfer/convert_job.h"

namespace ferry::cli {
namespace {

std::atomic<bool> g_cancel{false};

extern "C" void OnSignal(int) { g_cancel.store(true); }

struct ConvertArgs {
  std::string target_format = "raw", output = "text";
  ImageArgs open;  // the source
  std::string source, target, manifest, bwlimit, chunk_size, checkpoint_every;
  std::string cluster_size, subformat, compress, target_size, bitmap, journal;
  bool resume = false, overwrite = false, verify = false, preallocate = false;
  int workers = 4;
};

Status BuildRequest(const ConvertArgs& a, ConvertRequest* r) {
  r->source = a.source;
  r->target = a.target;
  FERRY_ASSIGN_OR_RETURN(r->open, ToOpenOptions(a.open));
  FERRY_ASSIGN_OR_RETURN(r->target_format, ParseImageFormat(a.target_format));
  if (!a.cluster_size.empty()) {
    FERRY_ASSIGN_OR_RETURN(uint64_t cs, ParseSize(a.cluster_size));
    if (cs > (1u << 30)) return Status::InvalidArgument("--cluster-size too large");
    r->create.cluster_size = static_cast<uint32_t>(cs);
  }
  if (!a.target_size.empty()) {
    FERRY_ASSIGN_OR_RETURN(r->create.size, ParseSize(a.target_size));
  }
  r->create.subformat = a.subformat;
  r->create.compression = a.compress;
  r->create.preallocate = a.preallocate;
  if (a.preallocate && r->target_format != ImageFormat::kRaw) {
    return Status::InvalidArgument("--preallocate applies to raw targets only");
  }
  r->dirty_bitmap = a.bitmap;
  r->journal_path = a.journal;
  r->resume = a.resume;
  r->overwrite = a.overwrite;
  r->verify = a.verify;
  r->manifest_path = a.manifest;
  r->copy.hash = !a.manifest.empty();
  if (a.workers < 1 || a.workers > 64) return Status::InvalidArgument("--workers must be 1..64");
  r->copy.workers = a.workers;
  if (!a.bwlimit.empty()) {
    FERRY_ASSIGN_OR_RETURN(r->copy.rate_limit, ParseSize(a.bwlimit));
  }
  if (!a.chunk_size.empty()) {
    FERRY_ASSIGN_OR_RETURN(r->copy.chunk_size, ParseSize(a.chunk_size));
    if (r->copy.chunk_size < 4096 || r->copy.chunk_size > (256u << 20)) {
      return Status::InvalidArgument("--chunk-size must be between 4K and 256M");
    }
  }
  if (!a.checkpoint_every.empty()) {
    FERRY_ASSIGN_OR_RETURN(r->copy.checkpoint_bytes, ParseSize(a.checkpoint_every));
  }
  r->copy.cancel = &g_cancel;
  return Status::Ok();
}

int RunConvertCommand(const ConvertArgs& a) {
  auto mode = ParseOutputMode(a.output);
  if (!mode.ok()) return ReportError(OutputMode::kText, "convert", mode.status());
  ConvertRequest request;
  Status built = BuildRequest(a, &request);
  if (!built.ok()) return ReportError(*mode, "convert", built);
  ProgressReporter progress(*mode, a.target);
  request.copy.on_progress = [&progress](const CopyProgress& p) { progress.Update(p); };
  std::signal(SIGINT, OnSignal);
  std::signal(SIGTERM, OnSignal);
  auto outcome = RunConvert(request);
  progress.Finish();
  if (!outcome.ok()) {
    Status s = outcome.status();
    if (s.code() == ErrorCode::kCancelled) {
      s = Status::Cancelled("interrupted; the checkpoint journal is kept: run the same command "
                            "with --resume to continue");
    }
    return ReportError(*mode, "convert", s);
  }
  const CopyProgress& p = outcome->copy.progress;
  struct rusage usage {};
  ::getrusage(RUSAGE_SELF, &usage);
  const uint64_t peak_rss = static_cast<uint64_t>(usage.ru_maxrss) * 1024;
  if (*mode == OutputMode::kJson) {
    nlohmann::json j = {{"event", "result"},
                        {"target", outcome->target},
                        {"target_format", a.target_format},
                        {"virtual_size", p.virtual_size},
                        {"resumed", outcome->resumed},
                        {"resumed_from", p.start_bytes},
                        {"read_bytes", p.read_bytes},
                        {"written_bytes", p.written_bytes},
                        {"zero_bytes", p.zero_bytes},
                        {"seconds", p.elapsed_seconds},
                        {"checkpoints", p.checkpoints},
                        {"verified", outcome->verified},
                        {"peak_rss_bytes", peak_rss}};
    if (outcome->copy.disk_sha256) j["disk_sha256"] = ToHex(*outcome->copy.disk_sha256);
    std::printf("%s\n", j.dump().c_str());
  } else {
    std::fprintf(stderr, "%s: %s %s in %s, read %s, peak memory %s%s%s\n", a.target.c_str(),
                 a.target_format.c_str(), FormatBytes(p.virtual_size).c_str(),
                 FormatDuration(p.elapsed_seconds).c_str(), FormatBytes(p.read_bytes).c_str(),
                 FormatBytes(peak_rss).c_str(),
                 outcome->resumed ? (", resumed at " + FormatBytes(p.start_bytes)).c_str() : "",
                 outcome->verified ? ", verified" : "");
  }
  return 0;
}

}  // namespace

void AddConvertCommand(CLI::App& app, int* exit_code) {
  auto args = std::make_shared<ConvertArgs>();
  CLI::App* cmd = app.add_subcommand("convert", "Copy or convert a disk image (resumable)");
  cmd->add_option("-f,--source-format", args->open.format,
                  "Source format (raw|qcow2|vmdk|vhd|vhdx|ova); probed when omitted, "
                  "and a raw image is never probed as another format");
  cmd->add_option("-O,--target-format", args->target_format, "Target format")->required();
  cmd->add_option("SRC", args->source, "Source image, or an NBD URI (nbd://host:port/export, "
                  "nbd+unix:///export?socket=PATH)")->required();
  cmd->add_option("DST", args->target, "Target image, or an NBD URI (written in place)")
      ->required();
  cmd->add_option("--bitmap", args->bitmap,
                  "Copy only the ranges this dirty bitmap of the NBD source marks "
                  "(qemu:dirty-bitmap:NAME), onto an existing raw file or NBD export");
  cmd->add_option("--journal", args->journal,
                  "Checkpoint journal path (default DST.ferry-journal; NBD targets: none "
                  "unless given)");
  cmd->add_flag("--resume", args->resume, "Continue an interrupted copy from its journal");
  cmd->add_flag("--overwrite", args->overwrite, "Replace an existing target");
  cmd->add_flag("--verify", args->verify, "Read the finished target back and compare");
  cmd->add_option("--manifest", args->manifest, "Write per-chunk and whole-disk SHA-256 here");
  cmd->add_option("--bwlimit", args->bwlimit, "Limit source reads, e.g. 100M (bytes/s)");
  cmd->add_flag("--preallocate", args->preallocate, "Allocate every byte (raw targets)");
  cmd->add_option("--cluster-size", args->cluster_size,
                  "Cluster/block/grain size of the target (qcow2, vhd, vhdx, vmdk)");
  cmd->add_option("--subformat", args->subformat,
                  "vhd: dynamic|fixed; vmdk: monolithicSparse|streamOptimized");
  cmd->add_option("--compress", args->compress, "qcow2 compression: zlib|zstd");
  cmd->add_option("--size", args->target_size, "Target virtual size (default: the source's)");
  cmd->add_option("--workers", args->workers, "Parallel copy workers (default 4)");
  cmd->add_option("--chunk-size", args->chunk_size, "Copy unit (default 4M)");
  cmd->add_option("--checkpoint-every", args->checkpoint_every,
                  "Data read between checkpoints (default 1G; also every 30 s)");
  AddImageOptions(cmd, &args->open);
  cmd->add_option("--output", args->output, "text|json");
  cmd->callback([args, exit_code] { *exit_code = RunConvertCommand(*args); });
}

}  // namespace ferry::cli
