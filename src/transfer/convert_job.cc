#include "transfer/convert_job.h"

#include <nlohmann/json.hpp>

#include <sstream>

#include "common/checksum.h"

namespace ferry {
namespace {

std::string Identity(const ConvertRequest& r, const BlockSource& src, const std::string& src_real,
                     int64_t src_mtime, uint64_t chunk) {
  std::ostringstream s;
  s << "ferry-convert 1\n"
    << "source=" << src_real << "\n"
    << "source_format=" << src.info().format << "\n"
    << "source_size=" << src.size() << "\n"
    << "source_mtime_ns=" << src_mtime << "\n"
    << "target_format=" << FormatName(r.target_format) << "\n"
    << "target_size=" << r.create.size << "\n"
    << "cluster_size=" << r.create.cluster_size << "\n"
    << "subformat=" << r.create.subformat << "\n"
    << "compression=" << r.create.compression << "\n"
    << "preallocate=" << r.create.preallocate << "\n"
    << "chunk_size=" << chunk << "\n"
    << "hash=" << r.copy.hash << "\n";
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
  j["algorithm"] = "sha256";
  j["virtual_size"] = src.size();
  j["chunk_size"] = copy.chunk_size;
  j["source"] = r.source;
  j["target"] = r.target;
  j["target_format"] = std::string(FormatName(r.target_format));
  j["disk_sha256"] = copy.disk_sha256 ? ToHex(*copy.disk_sha256) : "";
  auto& chunks = j["chunks"] = nlohmann::json::array();
  for (const auto& h : copy.chunk_hashes) chunks.push_back(ToHex(h));
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
  if (!CanWrite(r.target_format)) {
    return Status::Unsupported(std::string("cannot write ") +
                               std::string(FormatName(r.target_format)) + " images");
  }
  FERRY_ASSIGN_OR_RETURN(auto source, OpenImage(r.source, r.open));
  FERRY_ASSIGN_OR_RETURN(std::string src_real, env->RealPath(r.source));
  FERRY_ASSIGN_OR_RETURN(int64_t src_mtime, env->ModifiedTimeNanos(r.source));
  if (r.create.size == 0) r.create.size = source->size();
  if (r.create.size < source->size()) {
    return Status::InvalidArgument("target size " + std::to_string(r.create.size) +
                                   " is smaller than the source (" +
                                   std::to_string(source->size()) + ")");
  }
  r.create.env = env;
  r.create.final_path = r.target;
  if (r.journal_path.empty()) r.journal_path = JournalPathFor(r.target);
  const std::string part = PartPathFor(r.target);

  ConvertOutcome outcome;
  outcome.source_info = source->info();
  outcome.target = r.target;

  std::unique_ptr<BlockSink> sink;
  std::unique_ptr<CheckpointJournal> journal;
  if (r.resume) {
    if (!env->Exists(r.journal_path) || !env->Exists(part)) {
      return Status::NotFound("nothing to resume for " + r.target + ": " + r.journal_path +
                              " or " + part + " is missing (start the copy without --resume)");
    }
    FERRY_ASSIGN_OR_RETURN(journal, CheckpointJournal::Open(env, r.journal_path));
  } else {
    if (env->Exists(r.target) && !r.overwrite) {
      return Status::AlreadyExists(r.target + " exists (use --overwrite to replace it)");
    }
    FERRY_TRY(env->Remove(part));
  }
  FERRY_ASSIGN_OR_RETURN(sink, journal && journal->last()
                                   ? ResumeImage(r.target_format, part, r.create,
                                                 journal->last()->sink_state)
                                   : CreateImage(r.target_format, part, r.create));
  // The identity pins the chunk size the engine will really use.
  uint64_t gran = std::max<uint64_t>(sink->granularity(), 512);
  uint64_t chunk = (std::max<uint64_t>(r.copy.chunk_size, gran) + gran - 1) / gran * gran;
  std::string identity = Identity(r, *source, src_real, src_mtime, chunk);
  if (journal) {
    if (journal->identity() != identity) {
      return Status::Mismatch(r.journal_path + " belongs to a different copy (" +
                              FirstDifference(journal->identity(), identity) +
                              "); start again without --resume");
    }
    outcome.resumed = journal->last() != nullptr;
  } else {
    FERRY_ASSIGN_OR_RETURN(journal, CheckpointJournal::Create(env, r.journal_path, identity));
  }

  CopyOptions copy = r.copy;
  copy.chunk_size = chunk;
  copy.journal = journal.get();
  FERRY_ASSIGN_OR_RETURN(outcome.copy, CopyDisk(*source, *sink, copy));
  FERRY_TRY_CTX(sink->Finalize(), "finalize " + part);
  sink.reset();

  if (r.verify) {
    OpenOptions target_open;
    target_open.env = env;
    target_open.format = r.target_format;
    FERRY_ASSIGN_OR_RETURN(auto written, OpenImage(part, target_open));
    FERRY_ASSIGN_OR_RETURN(CompareResult cmp, CompareDisks(*source, *written, r.copy.workers));
    if (!cmp.identical) {
      return Status::Mismatch("verify " + part + ": differs from the source at offset " +
                              Hex(cmp.first_difference) + "; the target was not renamed");
    }
    outcome.verified = true;
  }
  FERRY_TRY(env->Rename(part, r.target));
  if (!r.manifest_path.empty()) {
    FERRY_TRY(WriteManifest(env, r.manifest_path, r, *source, outcome.copy));
  }
  journal.reset();
  FERRY_TRY(env->Remove(r.journal_path));
  return outcome;
}

}  // namespace ferry
