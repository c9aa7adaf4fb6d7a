// RunColdJob (cold_job.h, docs/plans.md "Running"): the target agent's half of a cold
// migration. One ColdJob object per run; its thread does the steps in order, a ticker thread
// publishes progress every 500 ms and turns JobContext::cancelled() into the atomic flag the
// copy engine and the hashing threads watch.
#include "agent/cold_job.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <deque>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <thread>

#include "api/agent_client.h"
#include "common/checksum.h"
#include "common/file.h"
#include "disk/engine/chunk_hash.h"
#include "disk/image.h"
#include "hypervisor/domain_builder.h"
#include "hypervisor/libvirt_host.h"
#include "lab/console.h"
#include "sources/vm_description.h"
#include "transfer/convert_job.h"

namespace ferry::agent {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

constexpr int64_t kProgressEveryMs = 500;
constexpr int64_t kTickMs = 100;
constexpr int64_t kSourceRetryEveryMs = 2000;  // docs/plans.md: ask a lost source every 2 s
// Asking the source about its export: soon at first (a shut-off VM's export is usually
// ready in tens of milliseconds), then backing off to every 500 ms.
constexpr int64_t kExportPollFirstMs = 20;
constexpr int64_t kExportPollMs = 500;
constexpr int64_t kStatePersistEveryMs = 1000;  // frontier in the state file during a copy
constexpr int64_t kShutdownSlackMs = 60000;     // past the source's shutdown timeout
constexpr int kStateVersion = 1;
constexpr size_t kMaxStateBytes = 4 << 20;
constexpr uint64_t kMiB = 1 << 20;

// The next wait of a poll loop: first, 2 x first, ... up to most.
class PollBackoff {
 public:
  PollBackoff(int64_t first, int64_t most) : next_(first), most_(most) {}
  int64_t Next() {
    const int64_t now = next_;
    next_ = std::min(next_ * 2, most_);
    return now;
  }

 private:
  int64_t next_;
  int64_t most_;
};

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

std::string Hex64(uint64_t v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(v));
  return buf;
}

std::string Seconds(int64_t ms) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f s", static_cast<double>(ms) / 1000.0);
  return buf;
}

std::string NewUuid() {
  std::random_device rd;
  std::mt19937_64 gen((static_cast<uint64_t>(rd()) << 32) ^ rd());
  uint64_t hi = gen();
  uint64_t lo = gen();
  hi = (hi & ~0xf000ull) | 0x4000ull;                // version 4
  lo = (lo & 0x3fffffffffffffffull) | (1ull << 63);  // RFC 4122 variant
  char buf[40];
  std::snprintf(buf, sizeof buf, "%08llx-%04llx-%04llx-%04llx-%012llx",
                static_cast<unsigned long long>(hi >> 32),
                static_cast<unsigned long long>((hi >> 16) & 0xffff),
                static_cast<unsigned long long>(hi & 0xffff),
                static_cast<unsigned long long>(lo >> 48),
                static_cast<unsigned long long>(lo & 0xffffffffffffull));
  return buf;
}

// Size and modification time of a file (what the state file pins a finished disk with).
struct FileStamp {
  uint64_t size = 0;
  int64_t mtime_ns = 0;
};
std::optional<FileStamp> StampOf(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return std::nullopt;
  return FileStamp{static_cast<uint64_t>(st.st_size),
                   static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec};
}

Status SyncPath(const std::string& path, bool directory) {
  int fd = ::open(path.c_str(), (directory ? O_DIRECTORY : 0) | O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Status::Io(path + ": open for fsync: " + std::strerror(errno));
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  if (rc != 0) return Status::Io(path + ": fsync: " + std::strerror(err));
  return Status::Ok();
}

// Writes `text` to dir/name through a temporary file, fsyncs it, renames it into place and
// fsyncs the folder, so a crash leaves the old or the new file, never half of one.
Status WriteFileAtomic(const std::string& dir, const std::string& name, const std::string& text) {
  const std::string path = dir + "/" + name;
  const std::string tmp = path + ".tmp";
  Env* env = PosixEnv();
  {
    FERRY_ASSIGN_OR_RETURN(auto file, env->Open(tmp, OpenMode::kCreateTruncate));
    FERRY_TRY(file->WriteAt(0, {reinterpret_cast<const uint8_t*>(text.data()), text.size()}));
    FERRY_TRY(file->Sync());
  }
  FERRY_TRY(env->Rename(tmp, path));
  return SyncPath(dir, /*directory=*/true);
}

void RemoveQuietly(const std::string& path) {
  std::error_code ec;
  fs::remove(path, ec);
}

// A view of the first `size` bytes of another source: a target image may be larger than the
// source disk (a fixed VHD is rounded up to whole MiB), and verification compares the
// source's extent only.
class PrefixSource final : public BlockSource {
 public:
  PrefixSource(BlockSource& inner, uint64_t size) : inner_(inner), size_(size) {}
  uint64_t size() const override { return size_; }
  ImageInfo info() const override {
    ImageInfo i = inner_.info();
    i.virtual_size = size_;
    return i;
  }
  Status Extents(uint64_t offset, uint64_t length, std::vector<Extent>* out) override {
    return inner_.Extents(offset, std::min(length, size_ - std::min(offset, size_)), out);
  }
  Status Read(uint64_t offset, std::span<uint8_t> buf) override { return inner_.Read(offset, buf); }

 private:
  BlockSource& inner_;
  uint64_t size_;
};

// --- The state file: state_dir/cold/<export id>.json ---------------------------------------

struct DiskState {
  std::string id;       // TargetDisk::source_id
  std::string path;     // final path of the copied file
  bool copied = false;  // RunConvert finished: the file has its final name
  bool verified = false;
  uint64_t size = 0;  // file stamp once copied
  int64_t mtime_ns = 0;
  uint64_t bytes_read = 0;  // all attempts
  uint64_t furthest = 0;    // furthest committed frontier any attempt reached
  uint64_t resumed_from = 0;
  uint64_t recopied = 0;
};

struct ColdState {
  std::vector<DiskState> disks;
  bool staged = false;  // share target: the folder has its final name
  // A failed attempt closed the export with restore_power and the source VM ran again: what
  // was copied from it before may be stale, so the next attempt starts every disk over.
  bool source_restored = false;
  std::string defined_uuid;  // kvm target: the domain this migration defined
};

std::string StateToJson(const ColdState& s) {
  Json disks = Json::array();
  for (const DiskState& d : s.disks) {
    disks.push_back({{"id", d.id},
                     {"path", d.path},
                     {"copied", d.copied},
                     {"verified", d.verified},
                     {"size", d.size},
                     {"mtime_ns", d.mtime_ns},
                     {"bytes_read", d.bytes_read},
                     {"furthest", d.furthest},
                     {"resumed_from", d.resumed_from},
                     {"recopied", d.recopied}});
  }
  Json j = {{"version", kStateVersion},
            {"disks", std::move(disks)},
            {"staged", s.staged},
            {"source_restored", s.source_restored},
            {"defined_uuid", s.defined_uuid}};
  return j.dump(1) + "\n";
}

// The state file is ours, but a disk can corrupt it: every field is checked, and a bad file
// is an error naming it (guessing would risk redoing or skipping the wrong disk).
Result<ColdState> StateFromJson(const std::string& text, const std::string& where) {
  ColdState s;
  try {
    Json j = Json::parse(text);
    if (!j.is_object()) return Status::Corrupt(where + ": expected a JSON object");
    if (!j.contains("version") || !j["version"].is_number_integer() ||
        j["version"].get<int64_t>() != kStateVersion) {
      return Status::Corrupt(where + ": version: expected " + std::to_string(kStateVersion));
    }
    auto str = [&](const Json& o, const char* k, const std::string& p) -> Result<std::string> {
      if (!o.contains(k) || !o[k].is_string()) {
        return Status::Corrupt(where + ": " + p + "." + k + ": expected a string");
      }
      return o[k].get<std::string>();
    };
    auto u64 = [&](const Json& o, const char* k, const std::string& p) -> Result<uint64_t> {
      if (!o.contains(k) || !o[k].is_number_unsigned()) {
        return Status::Corrupt(where + ": " + p + "." + k + ": expected an unsigned integer");
      }
      return o[k].get<uint64_t>();
    };
    auto boolean = [&](const Json& o, const char* k, const std::string& p) -> Result<bool> {
      if (!o.contains(k) || !o[k].is_boolean()) {
        return Status::Corrupt(where + ": " + p + "." + k + ": expected true or false");
      }
      return o[k].get<bool>();
    };
    if (!j.contains("disks") || !j["disks"].is_array() || j["disks"].size() > 1024) {
      return Status::Corrupt(where + ": disks: expected an array of at most 1024");
    }
    for (size_t i = 0; i < j["disks"].size(); ++i) {
      const Json& o = j["disks"][i];
      const std::string p = "disks[" + std::to_string(i) + "]";
      if (!o.is_object()) return Status::Corrupt(where + ": " + p + ": expected an object");
      DiskState d;
      FERRY_ASSIGN_OR_RETURN(d.id, str(o, "id", p));
      FERRY_ASSIGN_OR_RETURN(d.path, str(o, "path", p));
      FERRY_ASSIGN_OR_RETURN(d.copied, boolean(o, "copied", p));
      FERRY_ASSIGN_OR_RETURN(d.verified, boolean(o, "verified", p));
      FERRY_ASSIGN_OR_RETURN(d.size, u64(o, "size", p));
      FERRY_ASSIGN_OR_RETURN(uint64_t mtime, u64(o, "mtime_ns", p));
      d.mtime_ns = static_cast<int64_t>(mtime);
      FERRY_ASSIGN_OR_RETURN(d.bytes_read, u64(o, "bytes_read", p));
      FERRY_ASSIGN_OR_RETURN(d.furthest, u64(o, "furthest", p));
      FERRY_ASSIGN_OR_RETURN(d.resumed_from, u64(o, "resumed_from", p));
      FERRY_ASSIGN_OR_RETURN(d.recopied, u64(o, "recopied", p));
      s.disks.push_back(std::move(d));
    }
    FERRY_ASSIGN_OR_RETURN(s.staged, boolean(j, "staged", "(document)"));
    FERRY_ASSIGN_OR_RETURN(s.source_restored, boolean(j, "source_restored", "(document)"));
    FERRY_ASSIGN_OR_RETURN(s.defined_uuid, str(j, "defined_uuid", "(document)"));
  } catch (const Json::exception& e) {
    return Status::Corrupt(where + ": not valid JSON: " + e.what());
  }
  return s;
}

bool ValidFileName(const std::string& n) {
  return !n.empty() && n.size() <= 255 && n[0] != '.' && n.find('/') == std::string::npos &&
         n.find('\0') == std::string::npos;
}

// --- The job --------------------------------------------------------------------------------

class ColdJob {
 public:
  ColdJob(const MigrationJobSpec& spec, const ColdJobEnv& env, JobContext& ctx)
      : spec_(spec),
        cold_(spec.cold),
        vm_(spec.cold.vm),
        env_(env),
        ctx_(ctx),
        client_(spec.cold.source.url, spec.cold.source.token),
        state_dir_(env.state_dir + "/cold"),
        state_name_(spec.cold.export_spec.id + ".json") {}

  Result<JobResult> Run() {
    started_ms_ = NowMs();
    ticker_ = std::thread([this] { Tick(); });
    Result<JobResult> r = Steps();
    if (!r.ok()) {
      const bool cancelled = r.status().code() == ErrorCode::kCancelled || cancel_.load();
      if (cancelled && r.status().code() != ErrorCode::kCancelled) {
        r = Status::Cancelled("cancelled (" + r.status().message() + ")");
      }
      CleanUp(cancelled);
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    ticker_.join();
    PublishProgress();
    return r;
  }

 private:
  struct Disk {
    const plan::TargetDisk* target = nullptr;
    ExportDisk exported;     // the source's view: URI, size, hashes
    std::string final_path;  // where the copy ends up (kvm: the pool; share: staging folder)
    DiskState* state = nullptr;
    DiskProgress progress;  // GUARDED_BY(mu_)
    bool touched = false;   // this attempt ran a copy for it (its .ferry-part is ours)
    // verify stream: the SHA-256 of every hash chunk this attempt's copy wrote (unset when an
    // earlier attempt copied the disk, or the copy's chunks did not match the hash chunks).
    std::optional<std::vector<ChunkDigest>> written_hashes;
  };

  // --- Steps ---

  Result<JobResult> Steps() {
    FERRY_TRY(ValidateSpec());
    Event("info", "cold migration of " + DescribeSource() + " to " +
                      (ShareTarget() ? "share " + cold_.target_share : "this host") + " as " +
                      vm_.name);
    FERRY_TRY(LoadState());

    // exporting
    SetPhase("exporting");
    Event("phase", "exporting: asking " + cold_.source.host_id + " (" + cold_.source.url +
                       ") for export " + cold_.export_spec.id);
    {
      const int64_t wait_ms = cold_.export_spec.shutdown_timeout_ms + kShutdownSlackMs;
      export_requested_ = true;
      FERRY_ASSIGN_OR_RETURN(export_, AttachSource(cold_.source_retry_timeout_ms, wait_ms));
      export_open_ = true;
    }
    Event("info", "export " + export_.id + " serving " + std::to_string(export_.disks.size()) +
                      " disk(s)" + (export_.was_running ? "; the source VM was shut down" : ""));
    FERRY_TRY(PlanDisks());

    // copying
    SetPhase("copying");
    for (Disk& d : disks_) FERRY_TRY(CopyOne(d));
    if (!ShareTarget()) {
      for (const std::string& pool : Pools()) {
        Status refreshed = host_->RefreshPool(pool);
        if (!refreshed.ok()) Event("warning", "refresh pool " + pool + ": " + refreshed.ToString());
      }
    }

    // verifying
    if (cold_.verify != plan::VerifyMode::kOff) {
      SetPhase("verifying");
      for (Disk& d : disks_) FERRY_TRY(VerifyOne(d));
    } else {
      Event("info", "verification is off: the disks are not compared with the source's hashes");
      for (Disk& d : disks_) SetDiskState(d, "done");
    }

    // awaiting-deploy
    if (!cold_.deploy_auto) {
      SetPhase("awaiting-deploy");
      Event("phase", "awaiting-deploy: every disk is copied" +
                         std::string(cold_.verify != plan::VerifyMode::kOff ? " and verified"
                                                                             : "") +
                         "; waiting for proceed (POST /agent/v1/jobs/" + spec_.id + "/proceed)");
      while (!ctx_.proceed_requested()) {
        if (!Sleep(200)) return Status::Cancelled("cancelled while awaiting deploy");
      }
      Event("info", "proceed requested: deploying");
    }

    JobResult result;
    // defining
    SetPhase("defining");
    if (ShareTarget()) {
      FERRY_TRY(Stage());
    } else {
      FERRY_TRY(Define());
      result.defined_vm = vm_.name;
    }

    // booting
    if (!ShareTarget() && vm_.start) {
      SetPhase("booting");
      FERRY_TRY(Boot(&result.boot));
    }

    // finalizing
    SetPhase("finalizing");
    Result<ExportInfo> closed = client_.CloseExport(export_.id, /*restore_power=*/false);
    if (closed.ok()) {
      export_open_ = false;
      Event("info", "export " + export_.id + " closed; the source stays shut off");
    } else {
      Event("warning", "closing export " + export_.id + ": " + closed.status().ToString());
    }

    result.total_ms = NowMs() - started_ms_;
    for (const Disk& d : disks_) {
      JobResult::MovedDisk m;
      m.disk = d.target->dev.empty() ? d.target->source_id : d.target->dev;
      m.from = SourceFileOf(d.target->source_id);
      m.to = ShareTarget() ? share_final_dir_ + "/" + d.target->file_name : d.final_path;
      m.verified = d.state->verified;
      m.bytes_read = d.state->bytes_read;
      m.resumed_from = d.state->resumed_from;
      m.recopied_bytes = d.state->recopied;
      result.bytes_sent += attempt_read_[d.target->source_id];
      result.disks.push_back(std::move(m));
    }
    result.notes = notes_;
    Event("info", "done in " + Seconds(result.total_ms));
    return result;
  }

  Status ValidateSpec() {
    auto bad = [](const std::string& what) {
      return Status::InvalidArgument("cold job spec: " + what);
    };
    if (spec_.kind != MigrationKind::kCold) return bad("kind must be cold");
    if (!api::IsValidJobId(cold_.export_spec.id)) return bad("cold.export_spec.id is not valid");
    if (cold_.source.url.empty()) return bad("cold.source.url: must not be empty");
    if (vm_.name.empty() || !ValidFileName(vm_.name)) return bad("cold.vm.name: not a valid name");
    if (vm_.disks.empty()) return bad("cold.vm.disks: the VM has no disks to copy");
    if (cold_.verify != plan::VerifyMode::kOff && cold_.export_spec.hash_chunk_size == 0) {
      return bad("cold.export_spec.hash_chunk_size: 0 (no source hashes) but verify is on");
    }
    if (cold_.checkpoint_bytes == 0) return bad("cold.checkpoint_bytes: must not be zero");
    for (size_t i = 0; i < vm_.disks.size(); ++i) {
      const plan::TargetDisk& t = vm_.disks[i];
      const std::string p = "cold.vm.disks[" + std::to_string(i) + "]";
      if (!ValidFileName(t.file_name)) return bad(p + ".file_name: not a plain file name");
      if (ShareTarget()) {
        if (t.format != "vhdx" && t.format != "vhd") {
          return bad(p + ".format: a share target takes vhdx or vhd, not \"" + t.format + "\"");
        }
      } else {
        if (t.format != "qcow2" && t.format != "raw") {
          return bad(p + ".format: a kvm target takes qcow2 or raw, not \"" + t.format + "\"");
        }
        if (t.pool.empty()) return bad(p + ".pool: must not be empty for a kvm target");
      }
      for (size_t j = 0; j < i; ++j) {
        if (vm_.disks[j].file_name == t.file_name) return bad(p + ".file_name: used twice");
        if (vm_.disks[j].source_id == t.source_id) return bad(p + ".source_id: used twice");
      }
    }
    if (ShareTarget()) {
      for (const auto& [name, folder] : env_.shares) {
        if (name == cold_.target_share) share_root_ = folder;
      }
      if (share_root_.empty()) {
        return Status::NotFound("share " + cold_.target_share + " is not configured on this agent");
      }
      share_final_dir_ = share_root_ + "/" + vm_.name;
      staging_dir_ = share_root_ + "/." + vm_.name + ".ferry-part";
    } else {
      FERRY_ASSIGN_OR_RETURN(host_, hypervisor::LibvirtHost::Connect(env_.libvirt_uri));
    }
    return Status::Ok();
  }

  bool ShareTarget() const { return cold_.target_type == plan::EndpointType::kShare; }

  std::string DescribeSource() const {
    const ExportSpec& e = cold_.export_spec;
    return (e.vm.empty() ? "share VM " + e.share + "/" + e.share_vm : "VM " + e.vm) + " on " +
           cold_.source.host_id;
  }

  std::vector<std::string> Pools() const {
    std::vector<std::string> pools;
    for (const plan::TargetDisk& t : vm_.disks) {
      if (std::find(pools.begin(), pools.end(), t.pool) == pools.end()) pools.push_back(t.pool);
    }
    return pools;
  }

  std::string SourceFileOf(const std::string& disk_id) const {
    for (const sources::DiskDescription& d : export_.vm.disks) {
      if (d.id == disk_id) return d.file;
    }
    return "";
  }

  // --- The state file ---

  Status LoadState() {
    std::error_code ec;
    fs::create_directories(state_dir_, ec);
    if (ec) return Status::Io("create " + state_dir_ + ": " + ec.message());
    const std::string path = state_dir_ + "/" + state_name_;
    if (!PosixEnv()->Exists(path)) {
      state_ready_ = true;
      return Status::Ok();
    }
    Result<std::unique_ptr<File>> file = PosixEnv()->Open(path, OpenMode::kRead);
    if (!file.ok()) return file.status();
    FERRY_ASSIGN_OR_RETURN(uint64_t size, (*file)->Size());
    if (size > kMaxStateBytes) return Status::TooLarge(path + ": larger than 4 MiB");
    std::string text(size, '\0');
    FERRY_TRY((*file)->ReadAt(0, {reinterpret_cast<uint8_t*>(text.data()), text.size()}));
    FERRY_ASSIGN_OR_RETURN(state_, StateFromJson(text, path));
    state_ready_ = true;
    if (state_.source_restored && !state_.staged && state_.defined_uuid.empty()) {
      Event("warning",
            "the source VM ran again after an earlier attempt failed: its earlier "
            "copies may be stale, so every disk starts over");
      for (const DiskState& d : state_.disks) {
        RemoveQuietly(PartPathFor(d.path));
        RemoveQuietly(JournalPathFor(d.path));
        if (d.copied) RemoveQuietly(d.path);
      }
      state_ = ColdState{};
      return SaveState();
    }
    Event("info", "resuming from " + path + " (an earlier attempt of this migration)");
    return Status::Ok();
  }

  Status SaveState() {
    std::string text;
    {
      std::lock_guard<std::mutex> lock(state_mu_);
      text = StateToJson(state_);
    }
    return WriteFileAtomic(state_dir_, state_name_, text).WithContext("cold state file");
  }

  void SaveStateOrWarn() {
    if (!state_ready_) return;  // never overwrite a state file we could not read
    Status s = SaveState();
    if (!s.ok()) Event("warning", s.ToString());
  }

  DiskState* StateFor(const std::string& id, const std::string& path) {
    for (DiskState& d : state_.disks) {
      if (d.id == id) {
        if (d.path != path) {
          // The plan changed where this disk goes; what the old attempt wrote is not ours to
          // trust for the new place.
          d = DiskState{};
          d.id = id;
          d.path = path;
        }
        return &d;
      }
    }
    state_.disks.push_back(DiskState{id, path});
    return &state_.disks.back();
  }

  // --- Source ---

  // Creates (or re-creates: same id and spec) the export and waits until it serves. A source
  // that cannot be reached (kIo) is asked again every 2 s for `retry_ms`; a source that is
  // preparing or shutting down is waited for up to `wait_ms`.
  Result<ExportInfo> AttachSource(int64_t retry_ms, int64_t wait_ms) {
    const int64_t start = NowMs();
    Status last;
    while (true) {
      if (cancel_) return Status::Cancelled("cancelled while waiting for the source's export");
      Result<ExportInfo> info = client_.CreateExport(cold_.export_spec);
      if (info.ok()) {
        Result<ExportInfo> serving = WaitServing(*info, wait_ms);
        if (serving.ok() || serving.status().code() != ErrorCode::kIo) return serving;
        last = serving.status();
      } else if (info.status().code() != ErrorCode::kIo) {
        return std::move(info).WithContext("export on " + cold_.source.host_id);
      } else {
        last = info.status();
      }
      if (NowMs() - start >= retry_ms) {
        return last.WithContext("source " + cold_.source.host_id + " lost for " +
                                Seconds(NowMs() - start) + " (source_retry_timeout " +
                                Seconds(retry_ms) + ")");
      }
      Event("warning", "source " + cold_.source.host_id + " not reachable (" + last.message() +
                           "); asking again in 2 s");
      if (!Sleep(kSourceRetryEveryMs)) {
        return Status::Cancelled("cancelled while waiting for the source's export");
      }
    }
  }

  Result<ExportInfo> WaitServing(ExportInfo info, int64_t wait_ms) {
    const int64_t start = NowMs();
    ExportState reported = info.state;
    PollBackoff poll(kExportPollFirstMs, kExportPollMs);
    while (info.state == ExportState::kPreparing || info.state == ExportState::kShuttingDown) {
      if (NowMs() - start > wait_ms) {
        return Status::Io("export " + info.id + " still " +
                          std::string(ExportStateName(info.state)) + " after " + Seconds(wait_ms));
      }
      if (!Sleep(poll.Next())) return Status::Cancelled("cancelled while the source prepared");
      FERRY_ASSIGN_OR_RETURN(info, client_.GetExport(info.id));
      if (info.state != reported) {
        reported = info.state;
        Event("info", "export " + info.id + ": " + std::string(ExportStateName(info.state)));
      }
    }
    if (info.state == ExportState::kFailed) {
      Status why = info.error.ok() ? Status::Io("no reason given") : info.error;
      return Status::FailedPrecondition("export " + info.id + " on " + cold_.source.host_id +
                                        " failed: " + why.ToString());
    }
    if (info.state != ExportState::kServing) {
      return Status::FailedPrecondition("export " + info.id + " is " +
                                        std::string(ExportStateName(info.state)));
    }
    return info;
  }

  const ExportDisk* ExportedDisk(const std::string& id) const {
    for (const ExportDisk& d : export_.disks) {
      if (d.id == id) return &d;
    }
    return nullptr;
  }

  // Matches the target disks with the export's and decides each one's final path.
  Status PlanDisks() {
    std::vector<std::pair<std::string, std::string>> pool_paths;
    if (!ShareTarget()) {
      FERRY_ASSIGN_OR_RETURN(hypervisor::Inventory inv, host_->Inventory());
      for (const std::string& pool : Pools()) {
        auto it = std::find_if(inv.pools.begin(), inv.pools.end(),
                               [&](const hypervisor::PoolInfo& p) { return p.name == pool; });
        if (it == inv.pools.end()) {
          return Status::NotFound("pool " + pool + " not found on this host");
        }
        if (!it->active) return Status::FailedPrecondition("pool " + pool + " is not active");
        if (it->path.empty() || it->path[0] != '/') {
          return Status::Unsupported("pool " + pool + " (type " + it->type +
                                     ") has no folder to write files into");
        }
        pool_paths.emplace_back(pool, it->path);
      }
    } else if (!state_.staged) {
      if (PosixEnv()->Exists(share_final_dir_)) {
        return Status::AlreadyExists(share_final_dir_ + " exists: not staging over it");
      }
      std::error_code ec;
      fs::create_directories(staging_dir_, ec);
      if (ec) return Status::Io("create " + staging_dir_ + ": " + ec.message());
    }
    std::vector<Disk> disks;
    disks.reserve(vm_.disks.size());
    state_.disks.reserve(state_.disks.size() + vm_.disks.size());  // d.state stays valid
    for (const plan::TargetDisk& t : vm_.disks) {
      const ExportDisk* e = ExportedDisk(t.source_id);
      if (e == nullptr) {
        return Status::NotFound("disk " + t.source_id + " is not in export " + export_.id);
      }
      Disk d;
      d.target = &t;
      d.exported = *e;
      if (ShareTarget()) {
        d.final_path = (state_.staged ? share_final_dir_ : staging_dir_) + "/" + t.file_name;
      } else {
        for (const auto& [pool, path] : pool_paths) {
          if (pool == t.pool) d.final_path = path + "/" + t.file_name;
        }
      }
      d.state = StateFor(t.source_id, d.final_path);
      d.progress.id = t.source_id;
      d.progress.state = "waiting";
      d.progress.bytes_total = e->size;
      disks.push_back(std::move(d));
    }
    {
      std::lock_guard<std::mutex> lock(mu_);  // the ticker reads disks_
      disks_ = std::move(disks);
    }
    return SaveState();
  }

  void RefreshExportedDisks() {
    for (Disk& d : disks_) {
      if (const ExportDisk* e = ExportedDisk(d.target->source_id)) d.exported = *e;
    }
  }

  // --- Copy ---

  // A finished disk of an earlier attempt is skipped if its file is still the one that
  // attempt left (same size and mtime).
  bool AlreadyCopied(Disk& d) {
    if (!d.state->copied) return false;
    std::optional<FileStamp> now = StampOf(d.final_path);
    if (now && now->size == d.state->size && now->mtime_ns == d.state->mtime_ns) return true;
    Event("warning", "disk " + d.target->source_id + ": " + d.final_path +
                         (now ? " changed since" : " vanished since") +
                         " an earlier attempt copied it; copying it again");
    if (now) RemoveQuietly(d.final_path);
    d.state->copied = d.state->verified = false;
    return false;
  }

  Status CopyOne(Disk& d) {
    const std::string& id = d.target->source_id;
    if (AlreadyCopied(d)) {
      Event("info", "disk " + id + ": copied by an earlier attempt (" + d.final_path + ")" +
                        (d.state->verified ? ", verified" : ""));
      std::lock_guard<std::mutex> lock(mu_);
      d.progress.bytes_done = d.progress.checkpointed = d.progress.bytes_total;
      d.progress.state = d.state->verified ? "done" : "copying";
      return Status::Ok();
    }
    if (env_.before_copy) env_.before_copy(id);
    SetDiskState(d, "copying");
    d.touched = true;
    const bool vhd_fixed = d.target->format == "vhd";
    Result<ImageFormat> format = ParseImageFormat(d.target->format);
    if (!format.ok()) return format.status();

    int64_t lost_since = -1;  // when the current run of source failures began
    uint64_t frontier_at_loss = 0;
    bool fresh_start = false;  // the journal belonged to another copy: start over once
    while (true) {
      const bool resume = !fresh_start && PosixEnv()->Exists(JournalPathFor(d.final_path)) &&
                          PosixEnv()->Exists(PartPathFor(d.final_path));
      ConvertRequest req;
      req.source = d.exported.uri;
      req.source_identity = "ferry-export " + export_.id + "/" + id;
      req.target = d.final_path;
      req.target_format = *format;
      req.create.size = d.exported.size;
      if (vhd_fixed) {
        // Azure takes fixed VHDs whose virtual size is a whole number of MiB.
        req.create.subformat = "fixed";
        req.create.size = (d.exported.size + kMiB - 1) / kMiB * kMiB;
      } else {
        req.create.subformat = d.target->subformat;
      }
      req.resume = resume;
      req.copy.workers = std::max(1, env_.copy_workers);
      req.copy.checkpoint_bytes = cold_.checkpoint_bytes;
      req.copy.cancel = &cancel_;
      req.copy.rate_limit = spec_.bandwidth;  // 0 = as fast as the link and disks go
      if (cold_.verify == plan::VerifyMode::kStream) {
        // Hash what is written, in the source's hash chunks (the copy's chunks): verifying
        // then needs no second read of the disk.
        req.copy.hash = true;
        req.copy.hash_whole_disk = false;
        req.copy.chunk_hash = cold_.export_spec.hash_algorithm;
        req.copy.chunk_size = cold_.export_spec.hash_chunk_size;
      }
      const uint64_t previous_furthest = d.state->furthest;
      const uint64_t previous_read = d.state->bytes_read;
      uint64_t start_frontier = 0;
      uint64_t read_now = 0;
      uint64_t last_checkpoints = 0;
      int64_t persisted_at = NowMs();
      req.copy.on_progress = [&](const CopyProgress& p) {
        start_frontier = p.start_bytes;
        read_now = p.read_bytes;
        bool persist = false;
        {
          std::lock_guard<std::mutex> lock(mu_);
          d.progress.bytes_done = p.done_bytes;
          d.progress.read_bytes = p.read_bytes;
          if (p.checkpoints != last_checkpoints) {
            last_checkpoints = p.checkpoints;
            d.progress.checkpointed = p.done_bytes;  // a checkpoint is a barrier: all committed
            persist = true;
          }
        }
        {
          std::lock_guard<std::mutex> lock(state_mu_);
          d.state->furthest = std::max(d.state->furthest, p.done_bytes);
          d.state->bytes_read = previous_read + p.read_bytes;
        }
        if (persist || NowMs() - persisted_at >= kStatePersistEveryMs) {
          persisted_at = NowMs();
          SaveStateOrWarn();
        }
      };
      Event("info", "disk " + id + ": " + (resume ? "resuming" : "copying") + " " +
                        d.exported.uri.substr(0, d.exported.uri.find('/', 6)) + "/... (" +
                        std::to_string(d.exported.size) + " bytes, " + d.exported.format + ") to " +
                        d.final_path + " as " + d.target->format);
      Result<ConvertOutcome> out = RunConvert(req);
      {
        // Bytes read below what an earlier attempt had already committed were read again.
        std::lock_guard<std::mutex> lock(state_mu_);
        if (previous_furthest > start_frontier) {
          d.state->recopied += std::min(read_now, previous_furthest - start_frontier);
        }
        d.state->bytes_read = previous_read + read_now;
        attempt_read_[id] += read_now;
      }
      if (out.ok()) {
        if (out->resumed) {
          std::lock_guard<std::mutex> lock(state_mu_);
          d.state->resumed_from = out->copy.progress.start_bytes;
        }
        std::optional<FileStamp> stamp = StampOf(d.final_path);
        if (!stamp) return Status::Io(d.final_path + ": missing right after the copy");
        if (cold_.verify == plan::VerifyMode::kStream) {
          if (out->copy.chunk_size == cold_.export_spec.hash_chunk_size) {
            d.written_hashes = std::move(out->copy.chunk_hashes);
          } else {
            Event("info", "disk " + id + ": the target format copies in " +
                              std::to_string(out->copy.chunk_size) +
                              "-byte chunks, not the source's hash chunks: it will be read back "
                              "to verify");
          }
        }
        {
          std::lock_guard<std::mutex> lock(state_mu_);
          d.state->copied = true;
          d.state->size = stamp->size;
          d.state->mtime_ns = stamp->mtime_ns;
          d.state->furthest = std::max(d.state->furthest, out->copy.progress.done_bytes);
        }
        {
          std::lock_guard<std::mutex> lock(mu_);
          d.progress.bytes_done = d.progress.checkpointed = d.progress.bytes_total;
        }
        FERRY_TRY(SaveState());
        Event("info",
              "disk " + id + ": copied " + std::to_string(read_now) + " data bytes in " +
                  Seconds(static_cast<int64_t>(out->copy.progress.elapsed_seconds * 1000)) +
                  (out->resumed ? " (resumed at " + Hex64(out->copy.progress.start_bytes) + ")"
                                : ""));
        if (out->resumed) {
          notes_.push_back("disk " + id + " resumed at " +
                           std::to_string(out->copy.progress.start_bytes) + " bytes");
        }
        return Status::Ok();
      }
      SaveStateOrWarn();
      const Status& err = out.status();
      if (cancel_ || err.code() == ErrorCode::kCancelled) {
        return Status::Cancelled("disk " + id + ": copy cancelled");
      }
      if (err.code() == ErrorCode::kMismatch && resume && !fresh_start) {
        Event("warning", "disk " + id + ": " + err.message() + "; starting this disk over");
        RemoveQuietly(PartPathFor(d.final_path));
        RemoveQuietly(JournalPathFor(d.final_path));
        fresh_start = true;
        continue;
      }
      fresh_start = false;
      if (err.code() != ErrorCode::kIo) {
        return err.WithContext("disk " + id + ": copy to " + d.final_path);
      }
      // A lost source (or a cut connection): ask for the export again, then resume.
      uint64_t frontier;
      {
        std::lock_guard<std::mutex> lock(mu_);
        frontier = d.progress.bytes_done;
      }
      if (lost_since < 0 || frontier > frontier_at_loss) lost_since = NowMs();
      frontier_at_loss = frontier;
      const int64_t left = cold_.source_retry_timeout_ms - (NowMs() - lost_since);
      if (left <= 0) {
        return err.WithContext("disk " + id + ": source lost for longer than " +
                               Seconds(cold_.source_retry_timeout_ms));
      }
      Event("warning", "disk " + id + ": copy failed at " + Hex64(frontier) + " (" + err.message() +
                           "); asking the source for the export again");
      notes_.push_back("disk " + id + ": source lost at " + std::to_string(frontier) +
                       " bytes, export asked for again");
      if (!Sleep(kSourceRetryEveryMs)) return Status::Cancelled("disk " + id + ": cancelled");
      FERRY_ASSIGN_OR_RETURN(
          export_, AttachSource(left, cold_.export_spec.shutdown_timeout_ms + kShutdownSlackMs));
      RefreshExportedDisks();
      Event("info", "export " + export_.id + " serving again; resuming disk " + id);
    }
  }

  // --- Verify ---

  Status VerifyOne(Disk& d) {
    const std::string& id = d.target->source_id;
    if (d.state->verified) {
      SetDiskState(d, "done");
      return Status::Ok();
    }
    SetDiskState(d, "verifying");
    if (env_.before_verify) env_.before_verify(id, d.final_path);

    // The source's hashes: it hashes while it serves, so it may still be at it.
    int64_t last_report = 0;
    PollBackoff poll(kExportPollFirstMs, kExportPollMs);
    while (d.exported.hash_state != HashState::kDone) {
      if (d.exported.hash_state == HashState::kFailed) {
        return Status::Io("disk " + id + ": the source could not hash its disk");
      }
      if (NowMs() - last_report >= 10000) {
        last_report = NowMs();
        Event("info", "disk " + id + ": waiting for the source's hashes (" +
                          std::to_string(d.exported.hashed_bytes) + " of " +
                          std::to_string(d.exported.size) + " bytes hashed)");
      }
      if (!Sleep(poll.Next())) return Status::Cancelled("cancelled during verification");
      Result<ExportInfo> info = client_.GetExport(export_.id);
      if (!info.ok() && info.status().code() == ErrorCode::kIo) {
        FERRY_ASSIGN_OR_RETURN(
            info, AttachSource(cold_.source_retry_timeout_ms,
                               cold_.export_spec.shutdown_timeout_ms + kShutdownSlackMs));
      }
      if (!info.ok()) return info.status();
      export_ = *info;
      RefreshExportedDisks();
    }

    // Ours: what the copy wrote (stream), or the disk read back from storage (readback, or a
    // disk an earlier attempt copied).
    std::vector<ChunkDigest> ours;
    std::string how;
    if (cold_.verify == plan::VerifyMode::kStream && d.written_hashes) {
      ours = std::move(*d.written_hashes);
      d.written_hashes.reset();
      how = "of the bytes written";
    } else {
      if (cold_.verify == plan::VerifyMode::kStream) {
        Event("info", "disk " + id + ": no hashes from this attempt's copy; reading " +
                          d.final_path + " back to verify it");
      }
      FERRY_ASSIGN_OR_RETURN(ours, ReadBackHashes(d));
      how = "read back from " + d.final_path;
    }
    const std::vector<ChunkDigest>& theirs = d.exported.chunk_hashes;
    if (ours.size() != theirs.size()) {
      return FailVerify(d, std::to_string(ours.size()) + " chunks here, " +
                               std::to_string(theirs.size()) + " at the source");
    }
    for (size_t i = 0; i < theirs.size(); ++i) {
      if (ours[i] != theirs[i]) {
        return FailVerify(d, "chunk " + std::to_string(i) + " at offset " +
                                 Hex64(i * cold_.export_spec.hash_chunk_size) +
                                 " differs from the source (" + ToHex(ours[i]).substr(0, 16) +
                                 "... here, " + how + ", " + ToHex(theirs[i]).substr(0, 16) +
                                 "... at the source)");
      }
    }
    {
      std::lock_guard<std::mutex> lock(state_mu_);
      d.state->verified = true;
    }
    FERRY_TRY(SaveState());
    SetDiskState(d, "done");
    {
      std::lock_guard<std::mutex> lock(mu_);
      d.progress.bytes_done = d.progress.bytes_total;
    }
    Event("info", "disk " + id + ": verified, " + std::to_string(theirs.size()) + " " +
                      std::string(ChunkHashAlgorithmName(cold_.export_spec.hash_algorithm)) +
                      " chunk hashes " + how + " equal the source's");
    return Status::Ok();
  }

  // The chunk hashes of the finished disk as Ferry's reader reads it from storage (only the
  // source's size of it: a fixed VHD may be longer).
  Result<std::vector<ChunkDigest>> ReadBackHashes(Disk& d) {
    const std::string& id = d.target->source_id;
    OpenOptions open;
    Result<ImageFormat> format = ParseImageFormat(d.target->format);
    if (!format.ok()) return format.status();
    open.format = *format;
    Result<std::unique_ptr<BlockSource>> written = OpenImage(d.final_path, open);
    if (!written.ok()) return written.status().WithContext("verify disk " + id);
    BlockSource* readback = written->get();
    std::optional<PrefixSource> prefix;
    if ((*written)->size() < d.exported.size) {
      return FailVerify(d, "the copy has " + std::to_string((*written)->size()) +
                               " bytes, the source " + std::to_string(d.exported.size));
    }
    if ((*written)->size() > d.exported.size) {
      prefix.emplace(**written, d.exported.size);
      readback = &*prefix;
    }
    HashChunksOptions ho;
    ho.algorithm = cold_.export_spec.hash_algorithm;
    ho.workers = std::max(1, env_.copy_workers);
    ho.cancel = &cancel_;
    ho.on_progress = [&](uint64_t hashed) {
      std::lock_guard<std::mutex> lock(mu_);
      d.progress.bytes_done = hashed;
    };
    Result<std::vector<ChunkDigest>> hashes =
        HashChunks(*readback, cold_.export_spec.hash_chunk_size, ho);
    if (!hashes.ok()) {
      if (cancel_) return Status::Cancelled("cancelled during verification");
      return hashes.status().WithContext("verify disk " + id + ": read back " + d.final_path);
    }
    return std::move(*hashes);
  }

  Status FailVerify(Disk& d, const std::string& why) {
    RemoveQuietly(d.final_path);
    {
      std::lock_guard<std::mutex> lock(state_mu_);
      d.state->copied = d.state->verified = false;
      d.state->furthest = 0;
    }
    SaveStateOrWarn();
    SetDiskState(d, "failed");
    const std::string message = "verify disk " + d.target->source_id + " (" + d.final_path +
                                "): " + why + "; the file was deleted";
    Event("error", message);
    return Status::Mismatch(message);
  }

  // --- Deploy ---

  Status Stage() {
    if (state_.staged) {
      Event("info", "staged by an earlier attempt: " + share_final_dir_);
      return Status::Ok();
    }
    sources::VmDescription out;
    out.name = vm_.name;
    out.uuid = export_.vm.uuid;
    out.platform = export_.vm.platform == sources::Platform::kUnknown ? sources::Platform::kFerry
                                                                      : export_.vm.platform;
    out.vcpus = vm_.vcpus;
    out.memory_bytes = vm_.memory_bytes;
    out.firmware = vm_.firmware;
    out.machine = vm_.machine;
    out.arch = vm_.arch;
    out.os = export_.vm.os;
    out.direct_boot = vm_.direct_boot;
    for (size_t i = 0; i < disks_.size(); ++i) {
      const Disk& d = disks_[i];
      sources::DiskDescription dd;
      dd.id = "disk" + std::to_string(i);
      dd.file = d.target->file_name;  // relative to the folder vm.json is in
      dd.format = d.target->format;
      dd.capacity_bytes = d.exported.size;
      if (std::optional<FileStamp> st = StampOf(d.final_path)) dd.allocated_bytes = st->size;
      dd.bus = d.target->bus;
      dd.source_ref = d.target->source_id;
      out.disks.push_back(std::move(dd));
    }
    for (const plan::TargetNic& n : vm_.nics) {
      sources::NicDescription nd;
      nd.id = n.source_id;
      nd.network = n.network;
      nd.mac = n.mac;
      nd.model = n.model;
      out.nics.push_back(std::move(nd));
    }
    sources::ComputeMissing(out);
    FERRY_TRY(WriteFileAtomic(staging_dir_, "vm.json", sources::ToJson(out))
                  .WithContext("stage " + vm_.name));
    if (PosixEnv()->Exists(share_final_dir_)) {
      return Status::AlreadyExists(share_final_dir_ + " appeared while staging; " + staging_dir_ +
                                   " is left as it is");
    }
    FERRY_TRY(PosixEnv()->Rename(staging_dir_, share_final_dir_));
    FERRY_TRY(SyncPath(share_root_, /*directory=*/true));
    {
      std::lock_guard<std::mutex> lock(state_mu_);
      state_.staged = true;
      for (Disk& d : disks_) {  // a rename keeps size and mtime: only the folder changed
        d.final_path = share_final_dir_ + "/" + d.target->file_name;
        d.state->path = d.final_path;
      }
    }
    SaveStateOrWarn();
    Event("info", "staged " + vm_.name + " in " + share_final_dir_ + " (vm.json + " +
                      std::to_string(disks_.size()) + " disk(s))");
    return Status::Ok();
  }

  Status Define() {
    hypervisor::DomainSpec ds;
    ds.name = vm_.name;
    ds.uuid = NewUuid();
    ds.domain_type = cold_.domain_type.empty() ? env_.default_domain_type : cold_.domain_type;
    ds.vcpus = vm_.vcpus;
    ds.memory_bytes = vm_.memory_bytes;
    ds.arch = vm_.arch.empty() ? "x86_64" : vm_.arch;
    ds.machine = vm_.machine.empty() ? "pc" : vm_.machine;
    ds.firmware = vm_.firmware.empty() ? "bios" : vm_.firmware;
    ds.kernel = vm_.direct_boot.kernel;
    ds.initrd = vm_.direct_boot.initrd;
    ds.cmdline = vm_.direct_boot.cmdline;
    for (const Disk& d : disks_) {
      ds.disks.push_back({d.final_path, d.target->format, d.target->bus, d.target->dev});
    }
    for (const plan::TargetNic& n : vm_.nics) ds.nics.push_back({n.network, n.mac, n.model});
    console_log_ = env_.state_dir + "/consoles/" + vm_.name + ".log";
    ds.console_log = console_log_;
    if (!cold_.plan_name.empty()) ds.metadata.emplace_back("plan", cold_.plan_name);
    ds.metadata.emplace_back("migration", cold_.export_spec.id);
    ds.metadata.emplace_back("source",
                             cold_.source.host_id + "/" +
                                 (cold_.export_spec.vm.empty()
                                      ? cold_.export_spec.share + "/" + cold_.export_spec.share_vm
                                      : cold_.export_spec.vm));
    ds.metadata.emplace_back("delete_disks_with_vm", vm_.delete_disks_with_vm ? "yes" : "no");
    FERRY_ASSIGN_OR_RETURN(std::string xml, hypervisor::BuildDomainXml(ds));

    // Right before defining: never replace a VM the target already has. The one exception is
    // the domain an earlier attempt of this migration defined (its UUID is in the state).
    Result<hypervisor::VmInfo> existing = host_->GetVm(vm_.name);
    if (existing.ok()) {
      if (!state_.defined_uuid.empty() && existing->uuid == state_.defined_uuid) {
        Event("info", "VM " + vm_.name + " was defined by an earlier attempt (uuid " +
                          existing->uuid + ")");
        defined_ = true;
        return Status::Ok();
      }
      return Status::AlreadyExists("a VM named " + vm_.name +
                                   " already exists on this host: not defining it");
    }
    if (existing.status().code() != ErrorCode::kNotFound) {
      return std::move(existing).status().WithContext("look up " + vm_.name);
    }
    std::error_code ec;
    fs::create_directories(env_.state_dir + "/consoles", ec);
    if (ec) return Status::Io("create " + env_.state_dir + "/consoles: " + ec.message());
    FERRY_TRY(host_->DefineXml(xml).WithContext("define " + vm_.name));
    defined_ = true;
    {
      std::lock_guard<std::mutex> lock(state_mu_);
      state_.defined_uuid = ds.uuid;
    }
    SaveStateOrWarn();
    Event("info", "defined " + vm_.name + " (uuid " + ds.uuid + ", " + ds.domain_type + ", " +
                      std::to_string(ds.vcpus) + " vCPU(s), " +
                      std::to_string(ds.memory_bytes >> 20) + " MiB, " + ds.machine + ", " +
                      ds.firmware + ", " + std::to_string(ds.disks.size()) + " disk(s), " +
                      std::to_string(ds.nics.size()) + " NIC(s))");
    for (const std::string& pool : Pools()) {
      Status refreshed = host_->RefreshPool(pool);
      if (!refreshed.ok()) Event("warning", "refresh pool " + pool + ": " + refreshed.ToString());
    }
    return Status::Ok();
  }

  Status Boot(JobResult::BootCheck* boot) {
    Result<hypervisor::VmState> state = host_->State(vm_.name);
    if (state.ok() && *state == hypervisor::VmState::kRunning) {
      Event("info", vm_.name + " already runs (an earlier attempt started it)");
    } else {
      // A console log from an earlier start must not satisfy this boot's check.
      RemoveQuietly(console_log_);
      FERRY_TRY(host_->Start(vm_.name).WithContext("start " + vm_.name));
      Event("info", "started " + vm_.name + "; console log " + console_log_);
    }
    const plan::BootCheck& check = vm_.boot_check;
    if (check.marker.empty()) {
      boot->message = "no boot check (no marker)";
      return Status::Ok();
    }
    boot->checked = true;
    const int64_t start = NowMs();
    lab::ConsoleWatcher watcher(console_log_);
    watcher.Start();
    while (true) {
      if (cancel_) return Status::Cancelled("cancelled during the boot check");
      Result<lab::ConsoleLine> line = watcher.WaitForLine(check.marker, 250, 0);
      if (line.ok()) {
        boot->ok = true;
        boot->elapsed_ms = NowMs() - start;
        boot->message = "'" + line->text.substr(0, 200) + "' after " + Seconds(boot->elapsed_ms);
        Event("info", "boot check: " + boot->message);
        return Status::Ok();
      }
      if (NowMs() - start >= check.timeout_ms) break;
    }
    boot->message = "no '" + check.marker + "' on the console within " +
                    std::to_string(check.timeout_ms / 1000) + " s";
    boot_failed_ = true;
    Event("error", "boot check: " + boot->message + "; " + vm_.name +
                       " stays defined and running for inspection, the source stays shut off");
    return Status::Io("boot check: " + boot->message);
  }

  // --- Failure and cancel ---

  void CleanUp(bool cancelled) {
    if (defined_ && !boot_failed_ && host_ != nullptr) {
      Result<hypervisor::VmState> st = host_->State(vm_.name);
      if (st.ok() && *st != hypervisor::VmState::kShutoff) (void)host_->Destroy(vm_.name);
      Status u = host_->Undefine(vm_.name);
      if (u.ok()) {
        Event("info", "undefined " + vm_.name + " again");
        std::lock_guard<std::mutex> lock(state_mu_);
        state_.defined_uuid.clear();
      } else {
        Event("warning", "undefine " + vm_.name + ": " + u.ToString());
      }
    }
    if (cancelled) {
      // A cancelled migration leaves nothing behind on the target: a later one starts over.
      // Only what this migration wrote: a file at a final path that is not recorded as
      // copied by it may be someone else's (a name clash found later).
      for (Disk& d : disks_) {
        const bool ours = d.touched || d.state->copied || d.state->bytes_read > 0;
        if (ours) {
          RemoveQuietly(PartPathFor(d.final_path));
          RemoveQuietly(JournalPathFor(d.final_path));
        }
        if (d.state->copied && !state_.staged) RemoveQuietly(d.final_path);
      }
      if (ShareTarget() && !state_.staged && !staging_dir_.empty()) {
        std::error_code ec;
        fs::remove_all(staging_dir_, ec);
      }
      RemoveQuietly(state_dir_ + "/" + state_name_);
      Event("info", "cancelled: removed this migration's files on the target");
    } else if (!disks_.empty()) {
      SaveStateOrWarn();
      Event("info", "unfinished disks keep their .ferry-part and journal for a later attempt");
    }
    if (host_ != nullptr && !disks_.empty()) {
      for (const std::string& pool : Pools()) (void)host_->RefreshPool(pool);
    }
    if (export_requested_) {
      // Also when the export never answered: the source may have made it meanwhile.
      const bool restore = !boot_failed_;
      Result<ExportInfo> closed = client_.CloseExport(cold_.export_spec.id, restore);
      if (closed.ok()) {
        if (restore && closed->was_running && !cancelled) {
          std::lock_guard<std::mutex> lock(state_mu_);
          state_.source_restored = true;
        }
        if (!cancelled) SaveStateOrWarn();
        Event("info", "export " + cold_.export_spec.id + " closed" +
                          (restore ? " with restore_power (the source runs again if it ran)"
                                   : "; the source stays shut off"));
      } else if (closed.status().code() != ErrorCode::kNotFound) {
        Event("warning", "closing export " + cold_.export_spec.id + ": " +
                             closed.status().ToString() +
                             (restore ? " (the source may still be shut off)" : ""));
      }
    }
  }

  // --- Progress, events, cancel ---

  void SetPhase(const std::string& phase) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      phase_ = phase;
    }
    PublishProgress();
  }

  void SetDiskState(Disk& d, const std::string& state) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      d.progress.state = state;
    }
    PublishProgress();
  }

  void Event(std::string_view kind, const std::string& message) { ctx_.Event(kind, message); }

  // Sleeps up to `ms`; false if the job was cancelled meanwhile.
  bool Sleep(int64_t ms) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, std::chrono::milliseconds(ms), [&] { return stop_ || cancel_.load(); });
    return !cancel_.load();
  }

  void PublishProgress() {
    JobProgress p;
    {
      std::lock_guard<std::mutex> lock(mu_);
      p.phase = phase_;
      for (const Disk& d : disks_) {
        p.disks.push_back(d.progress);
        p.bytes_total += d.progress.bytes_total;
        p.bytes_done += std::min(d.progress.bytes_done, d.progress.bytes_total);
      }
      p.bytes_remaining = p.bytes_total - p.bytes_done;
      p.rate = rate_;
      p.eta_ms = rate_ > 0 ? static_cast<int64_t>(p.bytes_remaining * 1000 / rate_) : -1;
    }
    ctx_.Progress(p);
  }

  // Every 100 ms: the cancel flag; every 500 ms: the rate over the last 2 s and progress.
  void Tick() {
    std::deque<std::pair<int64_t, uint64_t>> samples;  // (ms, bytes done)
    int64_t last_publish = 0;
    std::unique_lock<std::mutex> lock(mu_);
    while (!stop_) {
      cv_.wait_for(lock, std::chrono::milliseconds(kTickMs));
      if (stop_) break;
      if (!cancel_ && ctx_.cancelled()) {
        cancel_ = true;
        cv_.notify_all();
      }
      const int64_t now = NowMs();
      if (now - last_publish < kProgressEveryMs) continue;
      last_publish = now;
      uint64_t done = 0;
      for (const Disk& d : disks_) done += d.progress.bytes_done;
      samples.emplace_back(now, done);
      while (samples.size() > 1 && now - samples.front().first > 2000) samples.pop_front();
      const auto& [t0, b0] = samples.front();
      rate_ = (now > t0 && done >= b0) ? (done - b0) * 1000 / static_cast<uint64_t>(now - t0) : 0;
      lock.unlock();
      PublishProgress();
      lock.lock();
    }
  }

  const MigrationJobSpec& spec_;
  const ColdJobSpec& cold_;
  const plan::TargetVm& vm_;
  const ColdJobEnv& env_;
  JobContext& ctx_;
  api::AgentClient client_;
  std::unique_ptr<hypervisor::LibvirtHost> host_;  // kvm target only
  const std::string state_dir_;
  const std::string state_name_;
  std::string share_root_, share_final_dir_, staging_dir_;  // share target only
  std::string console_log_;

  ExportInfo export_;
  bool export_requested_ = false;  // the source may hold an export of this migration
  bool export_open_ = false;
  bool defined_ = false;
  bool boot_failed_ = false;
  std::vector<Disk> disks_;
  std::map<std::string, uint64_t> attempt_read_;  // data bytes read in this attempt, per disk
  std::vector<std::string> notes_;
  int64_t started_ms_ = 0;

  std::mutex state_mu_;  // the DiskState entries, written by the copy's committer thread too
  ColdState state_;
  bool state_ready_ = false;  // state_ holds what the file said (or there was none)

  std::atomic<bool> cancel_{false};
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;  // GUARDED_BY(mu_)
  std::string phase_;  // GUARDED_BY(mu_)
  uint64_t rate_ = 0;  // GUARDED_BY(mu_)
  std::thread ticker_;
};

}  // namespace

Result<JobResult> RunColdJob(const MigrationJobSpec& spec, const ColdJobEnv& env, JobContext& ctx) {
  ColdJob job(spec, env, ctx);
  return job.Run();
}

}  // namespace ferry::agent
