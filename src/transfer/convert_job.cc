#include "transfer/convert_job.h"

#include <nlohmann/json.hpp>
#include <sstream>

#include "common/checksum.h"
#include "disk/raw/raw.h"
#include "nbd/nbd_client.h"

namespace ferry {
namespace {

// `source` names the source: its real path and mtime (a changed source is never resumed
// onto an old target), or its URI.
std::string Identity(const ConvertRequest& r, const ImageInfo& src, const std::string& source,
                     uint64_t chunk) {
  std::ostringstream s;
  s << "ferry-convert 1\n"
    << "source=" << source << "\n"
    << "source_format=" << src.format << "\n"
    << "source_size=" << src.virtual_size << "\n"
    << "target=" << r.target << "\n"
    << "target_format=" << FormatName(r.target_format) << "\n"
    << "target_size=" << r.create.size << "\n"
    << "cluster_size=" << r.create.cluster_size << "\n"
    << "subformat=" << r.create.subformat << "\n"
    << "compression=" << r.create.compression << "\n"
    << "preallocate=" << r.create.preallocate << "\n"
    << "chunk_size=" << chunk << "\n"
    << "hash=" << (!r.copy.hash ? "0" : r.copy.hash_whole_disk ? "1" : "chunks")
    << (r.copy.hash && r.copy.chunk_hash != ChunkHashAlgorithm::kSha256
            ? "-" + std::string(ChunkHashAlgorithmName(r.copy.chunk_hash))
            : "")
    << "\n";
  return s.str();
}

// The first line that differs between two identities, for the error message.
std::string FirstDifference(const std::string& a, const std::string& b) {
  std::istringstream sa(a), sb(b);
  std::string la, lb;
  while (true) {
    bool ga = static_cast<bool>(std::getline(sa, la));
    bool gb = static_cast<bool>(std::getline(sb, lb));
    if (!ga && !gb) return "";
    if (la != lb || ga != gb) return "journal has '" + la + "', this copy has '" + lb + "'";
  }
}

Status WriteManifest(Env* env, const std::string& path, const ConvertRequest& r,
                     const BlockSource& src, const CopyResult& copy) {
  nlohmann::json j;
  j["format"] = "ferry-manifest";
  j["version"] = 1;
  j["algorithm"] = std::string(ChunkHashAlgorithmName(r.copy.chunk_hash));
  j["virtual_size"] = src.size();
  j["chunk_size"] = copy.chunk_size;
  j["source"] = r.source;
  j["target"] = r.target;
  j["target_format"] = std::string(FormatName(r.target_format));
  j["disk_sha256"] = copy.disk_sha256 ? ToHex(*copy.disk_sha256) : "";
  auto& chunks = j["chunks"] = nlohmann::json::array();
  for (const auto& h : copy.chunk_hashes) chunks.push_back(ChunkDigestHex(h, r.copy.chunk_hash));
  std::string text = j.dump(1) + "\n";
  std::string tmp = path + ".tmp";
  FERRY_ASSIGN_OR_RETURN(auto file, env->Open(tmp, OpenMode::kCreateTruncate));
  FERRY_TRY(file->WriteAt(0, {reinterpret_cast<const uint8_t*>(text.data()), text.size()}));
  FERRY_TRY(file->Sync());
  file.reset();
  return env->Rename(tmp, path);
}

}  // namespace

std::string PartPathFor(const std::string& target) { return target + ".ferry-part"; }
std::string JournalPathFor(const std::string& target) { return target + ".ferry-journal"; }

Result<ConvertOutcome> RunConvert(const ConvertRequest& request) {
  ConvertRequest r = request;
  Env* env = r.open.env;
  const bool nbd_source = IsNbdUri(r.source);
  const bool nbd_target = IsNbdUri(r.target);
  const bool incremental = !r.dirty_bitmap.empty();
  if (!CanWrite(r.target_format)) {
    return Status::Unsupported(std::string("cannot write ") +
                               std::string(FormatName(r.target_format)) + " images");
  }
  if (nbd_target && r.target_format != ImageFormat::kRaw) {
    return Status::InvalidArgument(
        "an NBD target takes raw bytes: use -O raw (the export's "
        "own format is the server's business)");
  }
  if (incremental) {
    if (!nbd_source) {
      return Status::InvalidArgument(
          "--bitmap needs an NBD source that exports the bitmap "
          "(qemu:dirty-bitmap:NAME)");
    }
    if (!nbd_target && (r.target_format != ImageFormat::kRaw || !env->Exists(r.target))) {
      return Status::InvalidArgument(
          "--bitmap updates a previous copy in place: the target "
          "must be an existing raw file or an NBD export");
    }
    if (r.copy.hash) {
      return Status::InvalidArgument(
          "--manifest cannot hash an incremental copy (clean ranges "
          "are not read)");
    }
  }

  // Source.
  std::unique_ptr<BlockSource> source;
  std::string src_identity;
  if (nbd_source) {
    NbdSourceOptions o;
    if (incremental) o.meta_context = "qemu:dirty-bitmap:" + r.dirty_bitmap;
    FERRY_ASSIGN_OR_RETURN(source, OpenNbdSource(r.source, o));
    src_identity = (r.source_identity.empty() ? r.source : r.source_identity) +
                   (incremental ? " bitmap=" + r.dirty_bitmap : "");
  } else {
    FERRY_ASSIGN_OR_RETURN(source, OpenImage(r.source, r.open));
    FERRY_ASSIGN_OR_RETURN(std::string src_real, env->RealPath(r.source));
    FERRY_ASSIGN_OR_RETURN(int64_t src_mtime, env->ModifiedTimeNanos(r.source));
    src_identity = src_real + "\nsource_mtime_ns=" + std::to_string(src_mtime);
  }
  if (r.create.size == 0) r.create.size = source->size();
  if (r.create.size < source->size()) {
    return Status::InvalidArgument("target size " + std::to_string(r.create.size) +
                                   " is smaller than the source (" +
                                   std::to_string(source->size()) + ")");
  }
  r.create.env = env;
  r.create.final_path = r.target;
  const bool in_place = nbd_target || incremental;
  if (r.journal_path.empty() && !nbd_target) r.journal_path = JournalPathFor(r.target);
  const std::string write_path = in_place ? r.target : PartPathFor(r.target);

  ConvertOutcome outcome;
  outcome.source_info = source->info();
  outcome.target = r.target;

  // Journal and target.
  std::unique_ptr<CheckpointJournal> journal;
  if (r.resume) {
    if (r.journal_path.empty() || !env->Exists(r.journal_path) ||
        (!in_place && !env->Exists(write_path))) {
      return Status::NotFound("nothing to resume for " + r.target + ": " +
                              (r.journal_path.empty()
                                   ? std::string("no --journal given")
                                   : r.journal_path + " or " + write_path + " is missing") +
                              " (start the copy without --resume)");
    }
    FERRY_ASSIGN_OR_RETURN(journal, CheckpointJournal::Open(env, r.journal_path));
  } else if (!in_place) {
    if (env->Exists(r.target) && !r.overwrite) {
      return Status::AlreadyExists(r.target + " exists (use --overwrite to replace it)");
    }
    FERRY_TRY(env->Remove(write_path));
  }
  std::unique_ptr<BlockSink> sink;
  if (nbd_target) {
    FERRY_ASSIGN_OR_RETURN(sink, OpenNbdSink(r.target));
  } else if (incremental) {
    FERRY_ASSIGN_OR_RETURN(sink, OpenRawForUpdate(r.target, r.create));
  } else if (journal && journal->last()) {
    FERRY_ASSIGN_OR_RETURN(
        sink, ResumeImage(r.target_format, write_path, r.create, journal->last()->sink_state));
  } else {
    FERRY_ASSIGN_OR_RETURN(sink, CreateImage(r.target_format, write_path, r.create));
  }

  // The identity pins the chunk size the engine will really use.
  uint64_t gran = std::max<uint64_t>(sink->granularity(), 512);
  uint64_t chunk = (std::max<uint64_t>(r.copy.chunk_size, gran) + gran - 1) / gran * gran;
  std::string identity = Identity(r, outcome.source_info, src_identity, chunk);
  if (journal) {
    if (journal->identity() != identity) {
      return Status::Mismatch(r.journal_path + " belongs to a different copy (" +
                              FirstDifference(journal->identity(), identity) +
                              "); start again without --resume");
    }
    outcome.resumed = journal->last() != nullptr;
  } else if (!r.journal_path.empty()) {
    FERRY_ASSIGN_OR_RETURN(journal, CheckpointJournal::Create(env, r.journal_path, identity));
  }

  CopyOptions copy = r.copy;
  copy.chunk_size = chunk;
  copy.journal = journal.get();
  FERRY_ASSIGN_OR_RETURN(outcome.copy, CopyDisk(*source, *sink, copy));
  FERRY_TRY_CTX(sink->Finalize(), "finalize " + write_path);
  sink.reset();

  if (r.verify) {
    std::unique_ptr<BlockSource> written;
    if (nbd_target) {
      FERRY_ASSIGN_OR_RETURN(written, OpenNbdSource(r.target));
    } else {
      OpenOptions target_open;
      target_open.env = env;
      target_open.format = r.target_format;
      FERRY_ASSIGN_OR_RETURN(written, OpenImage(write_path, target_open));
    }
    FERRY_ASSIGN_OR_RETURN(CompareResult cmp, CompareDisks(*source, *written, r.copy.workers));
    if (!cmp.identical) {
      return Status::Mismatch("verify " + write_path + ": differs from the source at offset " +
                              Hex(cmp.first_difference) +
                              (in_place ? "" : "; the target was not renamed"));
    }
    outcome.verified = true;
  }
  if (!in_place) FERRY_TRY(env->Rename(write_path, r.target));
  if (!r.manifest_path.empty()) {
    FERRY_TRY(WriteManifest(env, r.manifest_path, r, *source, outcome.copy));
  }
  journal.reset();
  if (!r.journal_path.empty()) FERRY_TRY(env->Remove(r.journal_path));
  return outcome;
}

}  // namespace ferry
