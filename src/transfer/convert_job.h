// ConvertJob: one disk copy from end to end, the unit `ferry convert` runs and agents will
// run for migrations: open the source, create (or resume) the target under a temporary name,
// copy with checkpoints, finalize, verify, rename into place, write the manifest.
//
// Endpoints: SRC is an image file or an NBD URI (read through libnbd, optionally only the
// ranges a dirty bitmap names); DST is an image file or an NBD URI (an existing export).
//
// Files next to a file target DST while the copy runs:
//   DST.ferry-part     the target being written (never has the final name until complete)
//   DST.ferry-journal  the checkpoint journal (docs/formats/checkpoint-journal.md)
// On success both are gone and DST exists; on failure or cancel both stay so that
// `--resume` continues; nothing at DST is touched before the final rename.
//
// An NBD target is written in place: it has no temporary name, and a journal is kept only
// where `journal_path` names one. An incremental copy (dirty bitmap) updates an existing
// raw file or NBD export in place: the ranges the bitmap calls clean are left as they are.
//
// Thread-safety: RunConvert may be called from several threads for distinct targets.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "common/status.h"
#include "disk/block_source.h"
#include "disk/engine/copy_engine.h"
#include "disk/image.h"

namespace ferry {

struct ConvertRequest {
  std::string source;  // image path or NBD URI
  // What the journal remembers the source as, for an NBD source ("" = its URI). A cold
  // migration's export is served again on a new port (and URI) after the source agent
  // restarts; naming the export instead of the URI lets the copy resume from it.
  std::string source_identity;
  OpenOptions open;          // source format, reference policy
  std::string dirty_bitmap;  // NBD source: copy only this bitmap's dirty ranges
  std::string target;        // image path or NBD URI
  ImageFormat target_format = ImageFormat::kRaw;
  CreateOptions create;       // size is taken from the source when 0
  bool resume = false;        // continue from the target's journal
  bool overwrite = false;     // replace an existing target
  bool verify = false;        // read the finished target back and compare
  std::string manifest_path;  // write per-chunk and whole-disk SHA-256 here
  std::string journal_path;   // default: target + ".ferry-journal"
  CopyOptions copy;           // workers, chunk size, checkpoints, rate, progress
};

struct ConvertOutcome {
  CopyResult copy;
  ImageInfo source_info;
  std::string target;
  bool resumed = false;
  bool verified = false;
};

Result<ConvertOutcome> RunConvert(const ConvertRequest& request);

// Temporary names used for a file target.
std::string PartPathFor(const std::string& target);
std::string JournalPathFor(const std::string& target);

}  // namespace ferry
