// RunMigrationJob (migration_job.h): the five transfer types over LibvirtHost. The live
// convergence decisions are ConvergencePolicy's (convergence_policy.h); this file performs
// them, reports progress and events, measures the guest-observed downtime and keeps the
// safety rules: the VM never runs on two hosts, and a failed or cancelled job leaves it on
// the source with its disks intact. docs/migration.md describes each type step by step.
#include "agent/migration_job.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>

#include "agent/convergence_policy.h"
#include "agent/domain_xml_edit.h"
#include "common/clock.h"
#include "disk/engine/copy_engine.h"
#include "disk/image.h"
#include "hypervisor/libvirt_host.h"
#include "lab/console.h"

namespace ferry::agent {
namespace {

using hypervisor::BlockCopyParams;
using hypervisor::BlockJob;
using hypervisor::JobStats;
using hypervisor::LibvirtHost;
using hypervisor::MigrateParams;
using hypervisor::VmDisk;
using hypervisor::VmInfo;
using hypervisor::VmState;

constexpr int64_t kPollMs = 200;              // job statistics / block job polling period
constexpr int kDirtyRateSeconds = 1;          // MeasureDirtyRate window
constexpr int64_t kHeartbeatSettleMs = 3000;  // wait for the guest's heartbeats afterwards
constexpr uint64_t kSettleBeats = 5;
constexpr int kCompareWorkers = 2;
constexpr int kStatsFailuresToWarn = 5;  // consecutive failed polls (1 s)
constexpr int64_t kNsPerMs = 1000000;

bool IsRunning(VmState s) { return s == VmState::kRunning || s == VmState::kBlocked; }
bool IsActive(VmState s) {
  return s != VmState::kShutoff && s != VmState::kCrashed && s != VmState::kNoState;
}

std::string Basename(const std::string& path) {
  return std::filesystem::path(path).filename().string();
}

// The VM's disks that move (real disks with a source file; cdroms and network disks stay).
std::vector<VmDisk> MovableDisks(const VmInfo& vm) {
  std::vector<VmDisk> out;
  for (const VmDisk& d : vm.disks) {
    if (d.device == "disk" && !d.source_path.empty()) out.push_back(d);
  }
  return out;
}

// Runs `op` on its own thread and calls `poll` every kPollMs (and once more right after `op`
// returned is not needed: callers read final statistics themselves) until `op` returns.
Status RunPolled(const std::function<Status()>& op, const std::function<void()>& poll) {
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  Status result;
  std::thread worker([&] {
    Status s = op();
    std::lock_guard<std::mutex> l(mu);
    result = std::move(s);
    done = true;
    cv.notify_all();
  });
  for (;;) {
    {
      std::unique_lock<std::mutex> l(mu);
      if (cv.wait_for(l, std::chrono::milliseconds(kPollMs), [&] { return done; })) break;
    }
    poll();
  }
  worker.join();
  return result;
}

// Follows the guest's serial log (if its domain XML has one) to measure the longest
// heartbeat gap the host sees during the job.
class GuestDowntimeProbe {
 public:
  // nullptr when the domain logs no serial console to a file.
  static std::unique_ptr<GuestDowntimeProbe> Start(const std::string& domain_xml) {
    Result<std::string> path = SerialLogPath(domain_xml);
    if (!path.ok() || path->empty()) return nullptr;
    auto p = std::make_unique<GuestDowntimeProbe>(*path);
    p->watcher_.Start();
    p->since_ns_ = lab::ConsoleWatcher::NowNs();
    return p;
  }
  explicit GuestDowntimeProbe(std::string path) : path_(path), watcher_(std::move(path)) {}

  // After the job: waits briefly for heartbeats after `end_ns`; the longest gap since Start,
  // or -1 if the guest printed no heartbeats.
  int64_t MaxGapMs(int64_t end_ns) {
    (void)watcher_.WaitForHeartbeats(kSettleBeats, kHeartbeatSettleMs, end_ns);
    lab::HeartbeatStats hb = watcher_.Heartbeats(since_ns_);
    if (hb.count < 2) return -1;
    return hb.max_gap_ns / kNsPerMs;
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  lab::ConsoleWatcher watcher_;
  int64_t since_ns_ = 0;
};

class MigrationJob {
 public:
  MigrationJob(const MigrationJobSpec& spec, JobContext& ctx)
      : spec_(spec), ctx_(ctx), clock_(SystemClock()), t0_ns_(clock_->NowNanos()) {}

  Result<JobResult> Run() {
    Result<JobResult> r = Dispatch();
    if (r.ok()) {
      r->total_ms = ElapsedMs();
      Event("phase", "done in " + std::to_string(r->total_ms) + " ms");
    } else {
      Event("warning", "failed: " + r.status().ToString());
    }
    return r;
  }

 private:
  Result<JobResult> Dispatch() {
    if (spec_.vm.empty()) return Status::InvalidArgument("migration job: vm is empty");
    if (spec_.source_uri.empty()) {
      return Status::InvalidArgument("migration job: source_uri is empty");
    }
    if (spec_.max_downtime_ms <= 0) {
      return Status::InvalidArgument("migration job: max_downtime_ms must be > 0");
    }
    const bool needs_target = spec_.kind != MigrationKind::kLiveStorage;
    if (needs_target && spec_.target_uri.empty()) {
      return Status::InvalidArgument(std::string("migration job: ") +
                                     std::string(MigrationKindName(spec_.kind)) +
                                     " needs target_uri");
    }
    if ((spec_.kind == MigrationKind::kLiveStorage || spec_.kind == MigrationKind::kLiveVsm) &&
        spec_.target_pool.empty()) {
      return Status::InvalidArgument(std::string("migration job: ") +
                                     std::string(MigrationKindName(spec_.kind)) +
                                     " needs target_pool");
    }
    if (needs_target && spec_.target_uri == spec_.source_uri) {
      return Status::InvalidArgument("migration job: target_uri is the source host " +
                                     spec_.source_uri);
    }
    Phase("preparing");
    FERRY_ASSIGN_OR_RETURN(src_, LibvirtHost::Connect(spec_.source_uri));
    if (needs_target) {
      FERRY_ASSIGN_OR_RETURN(dst_, LibvirtHost::Connect(spec_.target_uri));
    }
    const std::string what =
        std::string(MigrationKindName(spec_.kind)) + " migration of " + spec_.vm;
    Result<JobResult> r = Status::Internal("unreachable");
    switch (spec_.kind) {
      case MigrationKind::kLive: r = RunLive(false); break;
      case MigrationKind::kLiveVsm: r = RunLive(true); break;
      case MigrationKind::kLiveStorage: r = RunLiveStorage(); break;
      case MigrationKind::kQuick: r = RunQuick(); break;
      case MigrationKind::kReregister: r = RunReregister(); break;
      case MigrationKind::kCold:
        r = Status::InvalidArgument("a cold job runs on the target host's agent (RunColdJob)");
        break;
    }
    return std::move(r).WithContext(what);
  }

  // --- reporting ------------------------------------------------------------------------

  int64_t ElapsedMs() const { return (clock_->NowNanos() - t0_ns_) / kNsPerMs; }
  void Event(std::string_view kind, const std::string& message) { ctx_.Event(kind, message); }
  void Phase(const std::string& phase) {
    progress_.phase = phase;
    ctx_.Event("phase", phase);
    ctx_.Progress(progress_);
  }
  // A decision: an event and a line in JobResult.notes.
  void Note(const std::string& message) {
    result_.notes.push_back(message);
    ctx_.Event("info", message);
  }
  void Warn(const std::string& message) {
    result_.notes.push_back("warning: " + message);
    ctx_.Event("warning", message);
  }
  std::string SrcName() const { return "source " + spec_.source_uri; }
  std::string DstName() const { return "target " + spec_.target_uri; }

  // "Never on two hosts": the target must not know the VM before we put it there.
  Status CheckAbsentOnTarget() {
    Result<VmState> s = dst_->State(spec_.vm);
    if (s.ok()) {
      return Status::AlreadyExists(DstName() + " already has a domain named " + spec_.vm + " (" +
                                   std::string(hypervisor::VmStateName(*s)) + ")");
    }
    if (s.status().code() != ErrorCode::kNotFound) {
      return s.status().WithContext(DstName() + ": state of " + spec_.vm);
    }
    return Status::Ok();
  }

  // Where the VM is after a failure, in words, for the error message.
  std::string WhereIsVm() {
    std::string w;
    Result<VmState> s = src_->State(spec_.vm);
    w = s.ok() ? spec_.vm + " is " + std::string(hypervisor::VmStateName(*s)) + " on the source"
               : spec_.vm + " state on the source unknown (" + s.status().message() + ")";
    if (dst_) {
      Result<VmState> t = dst_->State(spec_.vm);
      if (t.ok()) w += ", " + std::string(hypervisor::VmStateName(*t)) + " on the target";
    }
    return w;
  }

  void ProgressFromStats(const JobStats& st, const ConvergencePolicy* policy) {
    JobProgress& p = progress_;
    const int64_t now = ElapsedMs();
    if (last_sample_ms_ >= 0 && now > last_sample_ms_ && st.data_processed >= last_processed_) {
      const uint64_t delta = st.data_processed - last_processed_;
      p.rate = static_cast<uint64_t>(static_cast<double>(delta) * 1000.0 /
                                     static_cast<double>(now - last_sample_ms_));
    }
    last_sample_ms_ = now;
    last_processed_ = st.data_processed;
    if (st.memory_iteration >= 1 && st.memory_bps > 0) p.rate = st.memory_bps;
    p.bytes_total = st.data_total;
    p.bytes_done = st.data_processed;
    p.bytes_remaining = st.data_remaining;
    p.eta_ms = p.rate > 0 ? static_cast<int64_t>(static_cast<double>(st.data_remaining) * 1000.0 /
                                                 static_cast<double>(p.rate))
                          : -1;
    p.iteration = st.memory_iteration;
    p.throttle_percent = st.auto_converge_throttle;
    p.postcopy = st.postcopy;
    if (policy != nullptr) {
      p.dirty_rate = policy->dirty_rate();
      p.downtime_limit_ms = policy->downtime_limit_ms();
    }
    std::string phase = p.phase;
    if (st.postcopy) {
      phase = "post-copy";
    } else if (st.memory_iteration == 0 && st.disk_remaining > 0) {
      phase = "copying";
    } else if (st.memory_iteration <= 1) {
      phase = "copying";
    } else {
      phase = "converging";
    }
    if (phase != p.phase) {
      p.phase = phase;
      ctx_.Event("phase", phase);
    }
    ctx_.Progress(p);
  }

  // --- live and live-vsm ----------------------------------------------------------------

  Result<JobResult> RunLive(bool vsm) {
    FERRY_ASSIGN_OR_RETURN(VmInfo vm, src_->GetVm(spec_.vm));
    if (!IsActive(vm.state)) {
      return Status::InvalidArgument(spec_.vm + " is " +
                                     std::string(hypervisor::VmStateName(vm.state)) +
                                     ": a live migration needs a running VM (use reregister)");
    }
    FERRY_TRY(CheckAbsentOnTarget());
    Event("info", "source and target checked in " + std::to_string(ElapsedMs()) + " ms");

    // live-vsm: empty volumes on the target of the same size; libvirt copies into them.
    MigrateParams params;
    std::vector<std::string> created;  // target volumes to delete if the job fails
    std::vector<std::string> old_paths;
    if (vsm) {
      std::map<std::string, NewDiskSource> changes;
      for (const VmDisk& d : MovableDisks(vm)) {
        if (d.capacity_bytes == 0) {
          DeleteAll(*dst_, created);
          return Status::Unsupported("disk " + d.target + " (" + d.source_path +
                                     "): capacity unknown");
        }
        const std::string fmt = spec_.target_format.empty() ? d.format : spec_.target_format;
        Result<std::string> path =
            dst_->CreateVolume(spec_.target_pool, Basename(d.source_path), d.capacity_bytes, fmt);
        if (!path.ok()) {
          DeleteAll(*dst_, created);
          return path.status().WithContext(DstName() + ": create volume for " + d.target +
                                           " in pool " + spec_.target_pool);
        }
        Note("created " + *path + " (" + fmt + ") on the target for " + d.target);
        created.push_back(*path);
        old_paths.push_back(d.source_path);
        changes[d.target] = {*path, fmt};
        params.migrate_disks.push_back(d.target);
        result_.disks.push_back({d.target, d.source_path, *path, false});
      }
      if (changes.empty()) {
        return Status::InvalidArgument(spec_.vm + " has no disk to move");
      }
      Result<std::string> xml = src_->DomainXml(spec_.vm, false, true);
      if (xml.ok()) xml = ReplaceDiskSources(*xml, changes);
      if (!xml.ok()) {
        DeleteAll(*dst_, created);
        return xml.status().WithContext("destination XML");
      }
      params.dest_xml = *xml;
      if (vm.persistent) {
        // The definition kept on the target must name the new volumes too.
        Result<std::string> def = src_->DomainXml(spec_.vm, true, true);
        if (def.ok()) def = ReplaceDiskSources(*def, changes);
        if (!def.ok()) {
          DeleteAll(*dst_, created);
          return def.status().WithContext("destination persistent XML");
        }
        params.persist_xml = *def;
      }
      params.non_shared_disk = true;
    } else {
      FERRY_TRY(CheckStorageSharedWithTarget(vm));
      // libvirt 9.0 cannot tell that a directory pool is shared and refuses without
      // VIR_MIGRATE_UNSAFE; the check above (and ferryd's storage_visible validation) is ours.
      params.unsafe = true;
    }

    // Measure before starting; the policy falls back to QEMU's per-pass figure.
    Phase("measuring");
    std::optional<uint64_t> measured;
    Result<uint64_t> rate = src_->MeasureDirtyRate(spec_.vm, kDirtyRateSeconds);
    if (rate.ok()) {
      measured = *rate;
    } else {
      Warn("dirty rate not measured (" + rate.status().message() +
           "); using the first passes' figures");
    }
    ConvergenceBudget budget;
    budget.max_downtime_ms = spec_.max_downtime_ms;
    budget.bandwidth_cap = spec_.bandwidth;
    budget.allow_postcopy = spec_.allow_postcopy;
    budget.allow_auto_converge = spec_.allow_auto_converge;
    budget.time_limit_ms = spec_.timeout_ms;
    ConvergencePolicy policy(budget, vm.memory_bytes);
    ConvergenceStart start = policy.Start(measured);
    for (const std::string& n : start.notes) Note(n);
    progress_.dirty_rate = policy.dirty_rate();
    progress_.downtime_limit_ms = start.initial_downtime_ms;
    if (start.refuse) {
      if (vsm) DeleteAll(*dst_, created);
      return Status::Unsupported("refused before starting, " + spec_.vm +
                                 " untouched on the source: " + *start.refuse);
    }

    params.dest_uri = spec_.target_uri;
    params.migration_uri = spec_.target_migration_uri;
    params.live = true;
    params.persist_dest = vm.persistent;
    params.undefine_source = vm.persistent;
    params.auto_converge = start.auto_converge;
    params.allow_postcopy = start.postcopy;
    params.bandwidth = start.bandwidth;
    params.max_downtime_ms = start.initial_downtime_ms;

    Result<std::string> live_xml = src_->DomainXml(spec_.vm);
    std::unique_ptr<GuestDowntimeProbe> probe =
        live_xml.ok() ? GuestDowntimeProbe::Start(*live_xml) : nullptr;
    if (probe) Note("following the guest's serial log " + probe->path() + " for its downtime");

    Phase("copying");
    const int64_t started_ms = ElapsedMs();
    bool cancel_seen = false;
    bool abort_sent = false;
    int stats_failures = 0;
    auto apply = [&](const std::vector<PolicyAction>& actions) {
      for (const PolicyAction& a : actions) {
        switch (a.type) {
          case PolicyActionType::kNote: Note(a.message); break;
          case PolicyActionType::kSetDowntime: {
            Note(a.message);
            Status s = src_->SetMaxDowntime(spec_.vm, a.downtime_ms);
            if (!s.ok()) Warn("set downtime limit: " + s.message());
            progress_.downtime_limit_ms = a.downtime_ms;
            break;
          }
          case PolicyActionType::kSetSpeed: {
            Note(a.message);
            Status s = src_->SetMaxSpeed(spec_.vm, a.speed);
            if (!s.ok()) Warn("set speed: " + s.message());
            break;
          }
          case PolicyActionType::kStartPostCopy: {
            Note(a.message);
            Status s = src_->StartPostCopy(spec_.vm);
            if (!s.ok()) Warn("start post-copy: " + s.message());
            break;
          }
          case PolicyActionType::kAbort: {
            Event("warning", "aborting: " + a.message);
            result_.notes.push_back("abort: " + a.message);
            Status s = src_->AbortJob(spec_.vm);
            if (!s.ok()) Warn("abort job: " + s.message());
            abort_sent = true;
            break;
          }
        }
      }
    };
    Status mig =
        RunPolled([&] { return src_->Migrate(spec_.vm, params); },
                  [&] {
                    const int64_t now = ElapsedMs() - started_ms;
                    if (ctx_.cancelled() && !cancel_seen) {
                      cancel_seen = true;
                      apply(policy.OnCancel());
                    }
                    if (spec_.timeout_ms > 0 && now > spec_.timeout_ms && !policy.aborted() &&
                        vsm && !policy.postcopy_started()) {
                      // live-vsm: the disk copy counts toward the job's time limit too.
                      abort_sent = true;
                      Event("warning", "aborting: time limit " + std::to_string(spec_.timeout_ms) +
                                           " ms reached");
                      (void)src_->AbortJob(spec_.vm);
                    }
                    Result<JobStats> st = src_->GetJobStats(spec_.vm);
                    if (!st.ok()) {
                      // Right after the switchover the source no longer has the domain: say
                      // something only when statistics stay unavailable for a while.
                      if (++stats_failures == kStatsFailuresToWarn) {
                        Warn("job statistics: " + st.status().message());
                      }
                      return;
                    }
                    stats_failures = 0;
                    if (!st->active) return;
                    apply(policy.OnSample(*st, now));
                    ProgressFromStats(*st, &policy);
                  });
    const int64_t end_ns = lab::ConsoleWatcher::NowNs();

    if (!mig.ok()) {
      // The VM stays on the source: make sure, clean up the target's volumes, say why.
      const std::string where = WhereIsVm();
      if (vsm) {
        Result<VmState> t = dst_->State(spec_.vm);
        if (!t.ok() && t.status().code() == ErrorCode::kNotFound) {
          DeleteAll(*dst_, created);
        } else {
          Warn("target volumes kept: the target still knows " + spec_.vm);
        }
      }
      if (cancel_seen && policy.aborted()) {
        return Status::Cancelled("cancelled; " + where);
      }
      if (policy.aborted() || abort_sent) {
        return Status::Unsupported("aborted, " + where + ": " +
                                   policy.abort_reason().value_or("time limit " +
                                                                  std::to_string(spec_.timeout_ms) +
                                                                  " ms reached"));
      }
      return mig.WithContext(where);
    }
    if (abort_sent) Note("the migration completed before the abort took effect");

    // Done: the VM runs on the target only.
    Phase("finalizing");
    Result<VmState> on_target = dst_->State(spec_.vm);
    if (!on_target.ok() || !IsActive(*on_target)) {
      return Status::Internal("migration reported success but " + WhereIsVm());
    }
    Result<VmState> on_source = src_->State(spec_.vm);
    if (on_source.ok() && IsActive(*on_source)) {
      return Status::Internal("migration reported success but " + WhereIsVm());
    }
    Result<JobStats> done = src_->GetJobStats(spec_.vm, true);
    if (!done.ok()) done = dst_->GetJobStats(spec_.vm, true);
    if (done.ok()) {
      result_.qemu_downtime_ms = done->downtime_ms;
      if (done->downtime_ms > spec_.max_downtime_ms) {
        Warn("QEMU's downtime " + std::to_string(done->downtime_ms) + " ms exceeded the " +
             std::to_string(spec_.max_downtime_ms) +
             " ms budget: its estimate of the switchover (memory left / measured rate) was "
             "optimistic on this host");
      }
      result_.bytes_sent = done->data_processed;
      Note("QEMU: " + std::to_string(done->memory_iteration) + " passes, downtime " +
           std::to_string(done->downtime_ms) + " ms, " + std::to_string(done->data_processed) +
           " bytes sent" + (done->postcopy ? ", post-copy" : ""));
    } else {
      Warn("completed job statistics: " + done.status().message());
    }
    if (vsm) {
      for (size_t i = 0; i < old_paths.size(); ++i) {
        Status s = src_->DeleteVolume(old_paths[i]);
        if (s.ok()) {
          Note("deleted the source copy " + old_paths[i]);
        } else {
          Warn("source copy " + old_paths[i] + " not deleted: " + s.message());
        }
        result_.disks[i].verified = true;  // QEMU's mirror was in sync at the switchover
      }
    }
    if (probe) {
      result_.guest_downtime_ms = probe->MaxGapMs(end_ns);
      Note("guest-observed downtime (longest heartbeat gap) " +
           std::to_string(result_.guest_downtime_ms) + " ms");
    }
    return result_;
  }

  // live: every disk file must lie in a pool the target has at the same folder (a share
  // both hosts mount); a pool of the same name at another folder is the target's own disk.
  Status CheckStorageSharedWithTarget(const VmInfo& vm) {
    FERRY_ASSIGN_OR_RETURN(hypervisor::Inventory inv, dst_->Inventory());
    for (const VmDisk& d : MovableDisks(vm)) {
      const std::string dir = std::filesystem::path(d.source_path).parent_path().string();
      bool seen = false;
      for (const hypervisor::PoolInfo& pool : inv.pools) {
        if (pool.active && !pool.path.empty() &&
            std::filesystem::path(pool.path).lexically_normal() ==
                std::filesystem::path(dir).lexically_normal()) {
          seen = true;
        }
      }
      if (!seen) {
        return Status::InvalidArgument(
            "disk " + d.target + " (" + d.source_path + ") is not in a pool the target sees at " +
            "the same folder: a live migration needs shared storage (use live-vsm)");
      }
    }
    return Status::Ok();
  }

  void DeleteAll(const LibvirtHost& host, std::vector<std::string>& paths) {
    for (const std::string& p : paths) {
      Status s = host.DeleteVolume(p);
      if (s.ok()) {
        Note("deleted " + p + " on " + host.uri());
      } else {
        Warn("could not delete " + p + " on " + host.uri() + ": " + s.message());
      }
    }
    paths.clear();
  }

  // --- live-storage ---------------------------------------------------------------------

  struct DiskMove {
    VmDisk disk;
    std::string new_path;
    std::string new_format;
    bool copying = false;  // a block job was started
    bool pivoted = false;
  };

  // Before the pivot: abandon every copy, delete the new volumes, resume if we paused.
  Status RollbackStorage(std::vector<DiskMove>& moves, bool paused, Status why) {
    for (DiskMove& m : moves) {
      if (m.copying && !m.pivoted) {
        Status s = src_->BlockJobAbort(spec_.vm, m.disk.target, false);
        if (!s.ok()) Warn("abandon copy of " + m.disk.target + ": " + s.message());
      }
    }
    if (paused) {
      Status s = src_->Resume(spec_.vm);
      if (!s.ok()) Warn("resume: " + s.message());
    }
    for (DiskMove& m : moves) {
      if (m.new_path.empty() || m.pivoted) continue;
      Status s = src_->DeleteVolume(m.new_path);
      if (!s.ok()) Warn("delete " + m.new_path + ": " + s.message());
    }
    return why.WithContext(WhereIsVm() + ", disks unchanged");
  }

  Result<JobResult> RunLiveStorage() {
    FERRY_ASSIGN_OR_RETURN(VmInfo vm, src_->GetVm(spec_.vm));
    if (!IsRunning(vm.state)) {
      return Status::InvalidArgument(spec_.vm + " is " +
                                     std::string(hypervisor::VmStateName(vm.state)) +
                                     ": a live storage move needs a running VM");
    }
    std::vector<DiskMove> moves;
    for (const VmDisk& d : MovableDisks(vm)) {
      if (d.pool == spec_.target_pool) {
        Note(d.target + " is already in pool " + spec_.target_pool + "; left where it is");
        continue;
      }
      if (d.capacity_bytes == 0) {
        return Status::Unsupported("disk " + d.target + " (" + d.source_path +
                                   "): capacity unknown");
      }
      DiskMove m;
      m.disk = d;
      m.new_format = spec_.target_format.empty() ? d.format : spec_.target_format;
      moves.push_back(std::move(m));
    }
    if (moves.empty()) {
      return Status::InvalidArgument(spec_.vm + " has no disk outside pool " + spec_.target_pool);
    }
    for (DiskMove& m : moves) {
      Result<std::string> path = src_->CreateVolume(spec_.target_pool, Basename(m.disk.source_path),
                                                    m.disk.capacity_bytes, m.new_format);
      if (!path.ok()) {
        return RollbackStorage(moves, false,
                               path.status().WithContext("create volume for " + m.disk.target +
                                                         " in pool " + spec_.target_pool));
      }
      m.new_path = *path;
      Note("created " + m.new_path + " (" + m.new_format + ") for " + m.disk.target);
    }
    Result<std::string> live_xml = src_->DomainXml(spec_.vm);
    std::unique_ptr<GuestDowntimeProbe> probe =
        live_xml.ok() ? GuestDowntimeProbe::Start(*live_xml) : nullptr;

    Phase("copying");
    for (DiskMove& m : moves) {
      BlockCopyParams p;
      p.disk = m.disk.target;
      p.dest_path = m.new_path;
      p.dest_format = m.new_format;
      p.reuse_existing = true;
      p.synchronous_writes = true;
      p.bandwidth = spec_.bandwidth;
      Status s = src_->BlockCopy(spec_.vm, p);
      if (!s.ok()) {
        return RollbackStorage(moves, false, s.WithContext("block copy of " + m.disk.target));
      }
      m.copying = true;
      Note("block copy of " + m.disk.target + " to " + m.new_path +
           " started (synchronous writes once in sync)");
    }
    // Wait until every mirror is ready.
    for (;;) {
      if (ctx_.cancelled()) {
        return RollbackStorage(moves, false, Status::Cancelled("cancelled during the copy"));
      }
      if (spec_.timeout_ms > 0 && ElapsedMs() > spec_.timeout_ms) {
        return RollbackStorage(
            moves, false,
            Status::Unsupported("time limit " + std::to_string(spec_.timeout_ms) +
                                " ms reached during the copy"));
      }
      uint64_t cur = 0, end = 0;
      bool all_ready = true;
      for (DiskMove& m : moves) {
        Result<BlockJob> j = src_->GetBlockJob(spec_.vm, m.disk.target);
        if (!j.ok()) return RollbackStorage(moves, false, j.status());
        if (!j->exists) {
          return RollbackStorage(moves, false,
                                 Status::Io("block copy of " + m.disk.target + " ended early"));
        }
        cur += j->cur;
        end += j->end;
        all_ready = all_ready && j->ready;
      }
      const int64_t now = ElapsedMs();
      if (last_sample_ms_ >= 0 && now > last_sample_ms_ && cur >= last_processed_) {
        progress_.rate = static_cast<uint64_t>(static_cast<double>(cur - last_processed_) * 1000.0 /
                                               static_cast<double>(now - last_sample_ms_));
      }
      last_sample_ms_ = now;
      last_processed_ = cur;
      progress_.bytes_total = end;
      progress_.bytes_done = cur;
      progress_.bytes_remaining = end - std::min(cur, end);
      progress_.eta_ms = progress_.rate > 0
                             ? static_cast<int64_t>(static_cast<double>(progress_.bytes_remaining) *
                                                    1000.0 / static_cast<double>(progress_.rate))
                             : -1;
      ctx_.Progress(progress_);
      if (all_ready) break;
      clock_->SleepNanos(kPollMs * kNsPerMs);
    }
    Note("every mirror is in sync");

    // Pause, verify old == new, pivot, resume.
    Phase("switchover");
    const int64_t pause_start = ElapsedMs();
    Status s = src_->Suspend(spec_.vm);
    if (!s.ok()) return RollbackStorage(moves, false, s.WithContext("suspend for the pivot"));
    Phase("verifying");
    for (DiskMove& m : moves) {
      Status v = CompareCopies(m);
      if (!v.ok()) return RollbackStorage(moves, true, v);
    }
    for (DiskMove& m : moves) {
      Status p = src_->BlockJobAbort(spec_.vm, m.disk.target, true);
      if (!p.ok()) {
        // Disks pivoted so far stay on their new copies (verified); the rest go back.
        return RollbackStorage(moves, true, p.WithContext("pivot of " + m.disk.target));
      }
      m.pivoted = true;
    }
    s = src_->Resume(spec_.vm);
    const int64_t pause_ms = ElapsedMs() - pause_start;
    if (!s.ok()) return s.WithContext("resume after the pivot (disks pivoted)");
    result_.qemu_downtime_ms = pause_ms;
    Note("paused " + std::to_string(pause_ms) + " ms to verify and pivot " +
         std::to_string(moves.size()) + " disk(s)");
    const int64_t end_ns = lab::ConsoleWatcher::NowNs();

    Phase("finalizing");
    if (vm.persistent) FERRY_TRY(PointDefinitionAt(moves));
    for (DiskMove& m : moves) {
      result_.disks.push_back({m.disk.target, m.disk.source_path, m.new_path, true});
      result_.bytes_sent += m.disk.capacity_bytes;
      Status d = src_->DeleteVolume(m.disk.source_path);
      if (d.ok()) {
        Note("deleted the old copy " + m.disk.source_path);
      } else {
        Warn("old copy " + m.disk.source_path + " not deleted: " + d.message());
      }
    }
    if (probe) {
      result_.guest_downtime_ms = probe->MaxGapMs(end_ns);
      Note("guest-observed pause (longest heartbeat gap) " +
           std::to_string(result_.guest_downtime_ms) + " ms");
    }
    return result_;
  }

  // The paused guest's old and new copies must read the same (the mirror is synchronous and
  // QEMU flushed both when it paused).
  Status CompareCopies(const DiskMove& m) {
    auto open = [](const std::string& path,
                   const std::string& format) -> Result<std::unique_ptr<BlockSource>> {
      OpenOptions o;
      FERRY_ASSIGN_OR_RETURN(ImageFormat f, ParseImageFormat(format));
      o.format = f;
      return OpenImage(path, o);
    };
    Result<std::unique_ptr<BlockSource>> a = open(m.disk.source_path, m.disk.format);
    if (!a.ok()) return a.status().WithContext("verify: open " + m.disk.source_path);
    Result<std::unique_ptr<BlockSource>> b = open(m.new_path, m.new_format);
    if (!b.ok()) return b.status().WithContext("verify: open " + m.new_path);
    Result<CompareResult> c = CompareDisks(**a, **b, kCompareWorkers);
    if (!c.ok()) return c.status().WithContext("verify " + m.disk.target);
    if (!c->identical) {
      return Status::Mismatch("verify " + m.disk.target + ": " + m.new_path + " differs from " +
                              m.disk.source_path + " at byte " +
                              std::to_string(c->first_difference));
    }
    Note("verified " + m.disk.target + ": " + m.new_path + " is identical to " +
         m.disk.source_path);
    return Status::Ok();
  }

  // libvirt may or may not rewrite the persistent definition after a pivot; make sure it
  // names the new files.
  Status PointDefinitionAt(const std::vector<DiskMove>& moves) {
    FERRY_ASSIGN_OR_RETURN(std::string xml, src_->DomainXml(spec_.vm, true));
    FERRY_ASSIGN_OR_RETURN(auto sources, DiskFileSources(xml));
    std::map<std::string, NewDiskSource> changes;
    for (const DiskMove& m : moves) {
      if (sources[m.disk.target] != m.new_path) {
        changes[m.disk.target] = {m.new_path, m.new_format};
      }
    }
    if (changes.empty()) {
      Note("libvirt updated the persistent definition to the new copies");
      return Status::Ok();
    }
    FERRY_ASSIGN_OR_RETURN(std::string fixed, ReplaceDiskSources(xml, changes));
    FERRY_TRY_CTX(src_->DefineXml(fixed), "redefine " + spec_.vm + " with the new disk paths");
    Note("redefined " + spec_.vm + " so its persistent definition uses the new copies");
    return Status::Ok();
  }

  // --- quick ----------------------------------------------------------------------------

  Result<JobResult> RunQuick() {
    FERRY_ASSIGN_OR_RETURN(VmInfo vm, src_->GetVm(spec_.vm));
    if (!IsActive(vm.state)) {
      return Status::InvalidArgument(spec_.vm + " is " +
                                     std::string(hypervisor::VmStateName(vm.state)) +
                                     ": quick migration saves a running VM (use reregister)");
    }
    FERRY_TRY(CheckAbsentOnTarget());
    std::vector<VmDisk> disks = MovableDisks(vm);
    if (disks.empty()) {
      return Status::Unsupported(spec_.vm + " has no disk file: nowhere shared to save to");
    }
    const std::string save_path =
        (std::filesystem::path(disks[0].source_path).parent_path() /
         (".ferry-" + spec_.vm + "-" + (spec_.id.empty() ? "job" : spec_.id) + ".save"))
            .string();
    std::error_code ec;
    if (std::filesystem::exists(save_path, ec)) {
      return Status::AlreadyExists("save file " + save_path + " exists");
    }
    FERRY_ASSIGN_OR_RETURN(std::string run_xml, src_->DomainXml(spec_.vm, false, true));
    std::string def_xml;
    if (vm.persistent) {
      FERRY_ASSIGN_OR_RETURN(def_xml, src_->DomainXml(spec_.vm, true, true));
    }
    std::unique_ptr<GuestDowntimeProbe> probe = GuestDowntimeProbe::Start(run_xml);
    if (ctx_.cancelled()) return Status::Cancelled("cancelled before the save");

    Phase("saving");
    const int64_t stop_start = ElapsedMs();
    bool cancel_seen = false;
    Status saved = RunPolled([&] { return src_->Save(spec_.vm, save_path); },
                             [&] {
                               if (ctx_.cancelled() && !cancel_seen) {
                                 cancel_seen = true;
                                 (void)src_->AbortJob(spec_.vm);
                               }
                               Result<JobStats> st = src_->GetJobStats(spec_.vm);
                               if (st.ok() && st->active) ProgressFromStats(*st, nullptr);
                             });
    auto remove_save = [&] { std::filesystem::remove(save_path, ec); };
    if (!saved.ok()) {
      remove_save();
      if (cancel_seen) return Status::Cancelled("cancelled during the save; " + WhereIsVm());
      return saved.WithContext("save to " + save_path + "; " + WhereIsVm());
    }
    Note("saved memory to " + save_path);
    // Never on two hosts: the source must have stopped.
    Result<VmState> after = src_->State(spec_.vm);
    if (after.ok() && IsActive(*after)) {
      remove_save();
      return Status::Internal("the save returned but " + spec_.vm + " is still " +
                              std::string(hypervisor::VmStateName(*after)) + " on the source");
    }
    auto restore_on_source = [&](const Status& why) -> Status {
      Status back = src_->Restore(save_path);
      remove_save();
      if (!back.ok()) {
        return why.WithContext("AND restoring on the source failed (" + back.message() +
                               "); the VM is stopped, its definition is on the source");
      }
      Note("restored " + spec_.vm + " on the source");
      return why.WithContext(spec_.vm + " restored and running on the source");
    };
    if (ctx_.cancelled()) return restore_on_source(Status::Cancelled("cancelled after the save"));

    Phase("restoring");
    Status restored = dst_->Restore(save_path, run_xml);
    if (!restored.ok()) return restore_on_source(restored.WithContext("restore on the target"));
    const int64_t stopped_ms = ElapsedMs() - stop_start;
    const int64_t end_ns = lab::ConsoleWatcher::NowNs();
    Note("restored on the target; the VM was stopped " + std::to_string(stopped_ms) + " ms");
    result_.qemu_downtime_ms = stopped_ms;

    Phase("finalizing");
    if (vm.persistent) {
      Status def = dst_->DefineXml(def_xml);
      if (!def.ok()) {
        // Hand it back: save on the target again, restore on the source.
        Status again = dst_->Save(spec_.vm, save_path);
        if (!again.ok()) {
          remove_save();
          return def.WithContext(
              "define on the target (the VM runs there, transient; saving it "
              "back failed: " +
              again.message() + ")");
        }
        return restore_on_source(def.WithContext("define on the target"));
      }
      Status undef = src_->Undefine(spec_.vm);
      if (!undef.ok()) {
        remove_save();
        return undef.WithContext(spec_.vm +
                                 " runs on the target, but its stale definition on "
                                 "the source could not be removed");
      }
    }
    remove_save();
    FERRY_ASSIGN_OR_RETURN(VmState t, dst_->State(spec_.vm));
    if (!IsActive(t)) return Status::Internal("restored but " + WhereIsVm());
    if (probe) {
      result_.guest_downtime_ms = probe->MaxGapMs(end_ns);
      Note("guest-observed downtime (longest heartbeat gap) " +
           std::to_string(result_.guest_downtime_ms) + " ms");
    }
    return result_;
  }

  // --- reregister -----------------------------------------------------------------------

  Result<JobResult> RunReregister() {
    FERRY_ASSIGN_OR_RETURN(VmState s, src_->State(spec_.vm));
    if (s != VmState::kShutoff) {
      return Status::InvalidArgument(spec_.vm + " is " + std::string(hypervisor::VmStateName(s)) +
                                     ": re-registering needs it shut off");
    }
    FERRY_TRY(CheckAbsentOnTarget());
    FERRY_ASSIGN_OR_RETURN(std::string xml, src_->DomainXml(spec_.vm, true, true));
    if (ctx_.cancelled()) return Status::Cancelled("cancelled before anything changed");
    Phase("finalizing");
    // Still off? (Someone may have started it meanwhile.)
    FERRY_ASSIGN_OR_RETURN(s, src_->State(spec_.vm));
    if (s != VmState::kShutoff) {
      return Status::Mismatch(spec_.vm + " was started on the source meanwhile");
    }
    FERRY_TRY_CTX(dst_->DefineXml(xml), DstName() + ": define");
    Note("defined " + spec_.vm + " on the target");
    Status undef = src_->Undefine(spec_.vm);
    if (!undef.ok()) {
      Status back = dst_->Undefine(spec_.vm);
      return undef.WithContext(
          std::string("undefine on the source; ") +
          (back.ok() ? "the target's definition was removed again"
                     : "AND removing the target's definition failed: " + back.message()));
    }
    Note("undefined " + spec_.vm + " on the source");
    FERRY_ASSIGN_OR_RETURN(s, dst_->State(spec_.vm));
    if (s != VmState::kShutoff) {
      return Status::Internal(spec_.vm + " is " + std::string(hypervisor::VmStateName(s)) +
                              " on the target right after defining it");
    }
    return result_;
  }

  const MigrationJobSpec& spec_;
  JobContext& ctx_;
  Clock* const clock_;
  const int64_t t0_ns_;
  std::unique_ptr<LibvirtHost> src_;
  std::unique_ptr<LibvirtHost> dst_;
  JobResult result_;
  JobProgress progress_;
  int64_t last_sample_ms_ = -1;
  uint64_t last_processed_ = 0;
};

}  // namespace

Result<JobResult> RunMigrationJob(const MigrationJobSpec& spec, JobContext& ctx) {
  MigrationJob job(spec, ctx);
  return job.Run();
}

}  // namespace ferry::agent
