// Live-migration benchmark (issue 3): Ferry's live job against `virsh migrate --live` with its
// defaults and against QEMU's defaults, on a 2-host lab, for a guest that dirties memory at
// several rates and over several bandwidth caps, all in the same run. Run it through
// bench/live_bench.sh (which builds it); results and the command are in docs/benchmarks.md.
//
// For each dirty rate a 512 MiB guest boots on host1 with the lab's memory dirtier (a working
// set of max(64 MiB, rate x 1 s), so libvirt's 1 s MeasureDirtyRate can see the whole rate)
// and a 10 ms heartbeat on its serial console. For each bandwidth cap (QEMU's own cap, the
// migration's max-bandwidth), each method moves it to host2:
//
//   ferry  a live job on host1's ferry-agent (POST /agent/v1/jobs): the convergence policy of
//          docs/migration.md with the downtime budget and the cap as the link;
//   virsh  virsh migrate --live --unsafe --persistent --undefinesource [--bandwidth CAP]
//          (libvirt's defaults: no bandwidth cap, QEMU's 300 ms downtime limit);
//   qemu   QEMU's defaults as QEMU has them: virsh migrate-setspeed min(128, CAP) MiB/s and
//          migrate-setmaxdowntime 300 ms, then the same virsh migrate without --bandwidth.
//
// Every method gets the same time limit; a peer still running then is aborted (virsh
// domjobabort; Ferry's job gets the limit as its timeout_ms and gives up by itself). Measured
// for each: finished or not, wall time, guest-observed downtime (the longest host-seen gap
// between heartbeat lines, lab::ConsoleWatcher, the same for every method), QEMU's downtime and
// the bytes sent (the completed job's statistics on the target, else the last statistics
// sampled on the source). The guest is moved back (a non-live virsh migrate: it pauses for the
// copy, so it always finishes) and its migration speed and downtime limit are reset before
// each run, so every run starts from the same host in the same state.
//
// Output: a markdown table on stdout (with ratios peer / Ferry where both finished), one JSON
// object per run in --json FILE, progress on stderr.
#include <signal.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "api/agent_client.h"
#include "hypervisor/libvirt_host.h"
#include "lab/console.h"
#include "lab/lab.h"
#include "lab/process.h"

namespace ferry::bench {
namespace {

using nlohmann::json;

constexpr uint64_t kMiB = 1024 * 1024;
constexpr char kToken[] = "live-bench-token-1";
constexpr int64_t kBootTimeoutMs = 180000;
// After a run: how long heartbeats are still followed, so the gap that ends with the first
// heartbeat on the target is seen.
constexpr int64_t kTailMs = 3000;
// Sampling period of the source's job statistics while a run goes on.
constexpr int64_t kSampleMs = 250;
// libvirt's "no limit" for the migration speed, MiB/s (QEMU_DOMAIN_MIG_BANDWIDTH_MAX).
constexpr char kUnlimitedSpeed[] = "8796093022207";
// QEMU's own defaults (migration/options.c in 7.2): 128 MiB/s max-bandwidth, 300 ms downtime.
constexpr int kQemuDefaultSpeedMib = 128;
constexpr int kQemuDefaultDowntimeMs = 300;

struct Options {
  std::vector<int> rates = {0, 16, 64, 128};  // MiB/s the guest dirties
  std::vector<int> caps = {0, 256, 64};       // MiB/s; 0 = no cap
  std::vector<std::string> methods = {"ferry", "virsh", "qemu"};
  int memory_mib = 512;
  int limit_s = 90;
  int budget_ms = 300;
  int repeat = 1;  // runs per (rate, cap, method), interleaved; the table shows medians
  std::string root = "/var/tmp/ferry-live-bench";
  std::string json_path;
  bool keep = false;
};

struct RunResult {
  int rate_mib = 0;
  double measured_mib = -1;  // MeasureDirtyRate before the run, MiB/s
  int cap_mib = 0;
  std::string method;
  int repeat = 0;  // 0-based run number within the cell
  bool finished = false;
  std::string outcome;  // "done", "aborted at the time limit", the error ...
  double total_s = 0;
  double guest_downtime_ms = -1;  // longest heartbeat gap in the run's window
  double gap_at_s = -1;           // when that gap ended, seconds after the run started
  int64_t qemu_downtime_ms = -1;
  uint64_t bytes_sent = 0;
  uint64_t passes = 0;
  int max_throttle = 0;
  std::vector<std::string> notes;  // Ferry's decisions
};

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

void Log(const std::string& text) {
  std::time_t t = std::time(nullptr);
  char stamp[32];
  std::strftime(stamp, sizeof stamp, "%H:%M:%S", std::localtime(&t));
  std::fprintf(stderr, "[%s] %s\n", stamp, text.c_str());
}

std::string LoadAverage() {
  std::ifstream in("/proc/loadavg");
  std::string a, b, c;
  in >> a >> b >> c;
  return a + " " + b + " " + c;
}

std::string FirstLine(const std::vector<std::string>& argv) {
  Result<lab::ProcessResult> r = lab::RunProcess(argv, 10000);
  if (!r.ok()) return "?";
  std::string out = r->output;
  return out.substr(0, out.find('\n'));
}

std::string ExeDir() {
  std::error_code ec;
  std::filesystem::path exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? "." : exe.parent_path().string();
}

// Samples the source's job statistics on a connection of its own while a run goes on: the
// bytes sent and the passes of a run that does not finish (no completed statistics then).
class StatsSampler {
 public:
  StatsSampler(const hypervisor::LibvirtHost& host, std::string vm)
      : host_(host), vm_(std::move(vm)), thread_([this] { Run(); }) {}
  ~StatsSampler() { Stop(); }
  void Stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  hypervisor::JobStats last() {
    std::lock_guard<std::mutex> lock(mu_);
    return last_;
  }
  int max_throttle() {
    std::lock_guard<std::mutex> lock(mu_);
    return max_throttle_;
  }

 private:
  void Run() {
    while (!stop_) {
      Result<hypervisor::JobStats> st = host_.GetJobStats(vm_);
      if (st.ok() && st->active) {
        std::lock_guard<std::mutex> lock(mu_);
        if (st->data_processed >= last_.data_processed) last_ = *st;
        max_throttle_ = std::max(max_throttle_, st->auto_converge_throttle);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(kSampleMs));
    }
  }
  const hypervisor::LibvirtHost& host_;
  const std::string vm_;
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  hypervisor::JobStats last_;  // GUARDED_BY(mu_)
  int max_throttle_ = 0;       // GUARDED_BY(mu_)
  std::thread thread_;
};

class Bench {
 public:
  explicit Bench(Options o) : o_(std::move(o)) {}

  int Main() {
    Status s = Setup();
    bool failed = !s.ok();
    if (!s.ok()) Log("FAILED: " + s.ToString());
    if (s.ok()) {
      // A rate whose guest fails (TCG guests have hung at high dirty rates) is reported and
      // the next rate still runs; the exit status says something failed.
      for (int rate : o_.rates) {
        Status r = RunRate(rate);
        if (!r.ok()) {
          failed = true;
          Log("FAILED at " + std::to_string(rate) + " MiB/s: " + r.ToString());
          failures_.push_back(std::to_string(rate) + " MiB/s: " + Short(r.ToString()));
          const std::string vm = "lb" + std::to_string(rate);  // as RunRate names it
          for (int host : {1, 2}) {
            (void)lab_->Virsh(host, {"destroy", vm});
            (void)lab_->Virsh(host, {"undefine", vm});
          }
        }
      }
    }
    load_end_ = LoadAverage();
    Teardown();
    PrintTable();
    for (const std::string& f : failures_) std::printf("\nFAILED: %s\n", f.c_str());
    return failed ? 1 : 0;
  }

 private:
  Status Setup() {
    load_start_ = LoadAverage();
    if (std::filesystem::exists(o_.root + "/lab.json")) (void)lab::Lab::Down(o_.root);
    std::error_code ec;
    std::filesystem::remove_all(o_.root, ec);
    std::filesystem::create_directories(o_.root, ec);
    const std::string build = std::filesystem::path(ExeDir()).parent_path().string();
    lab::LabConfig config;
    config.root = o_.root + "/lab";
    config.hosts = 2;
    config.address_base = 130;  // 127.0.0.131, .132: apart from the tests' labs
    config.accel = lab::Accel::kTcg;
    config.guest_binary = build + "/src/lab/ferry_guest";
    Log("lab up in " + config.root);
    FERRY_ASSIGN_OR_RETURN(lab_, lab::Lab::Up(config));
    for (int h = 1; h <= 2; ++h) {
      FERRY_ASSIGN_OR_RETURN(std::unique_ptr<hypervisor::LibvirtHost> c,
                             hypervisor::LibvirtHost::Connect(lab_->host(h).uri));
      // A fresh libvirtd probes QEMU's capabilities on the first inventory read (about 10 s
      // under TCG on a loaded machine): do it now, not inside the first measured run.
      FERRY_TRY(c->Inventory().status());
      hosts_.push_back(std::move(c));
    }
    // The Ferry method: host1's agent runs the job (it connects to host2 itself).
    const lab::HostInfo& h1 = lab_->host(1);
    const std::string cfg = o_.root + "/agent1.json";
    std::ofstream(cfg) << json{{"listen", h1.address + ":7801"},
                               {"token", kToken},
                               {"libvirt_uri", h1.uri},
                               {"migration_uri", h1.migration_uri},
                               {"host_id", h1.name},
                               {"state_dir", o_.root + "/agent1"}}
                              .dump();
    lab::SpawnOptions opts;
    opts.output_path = o_.root + "/agent1.log";
    FERRY_ASSIGN_OR_RETURN(agent_pid_,
                           lab::Spawn({build + "/src/agent/ferry-agent", "--config", cfg}, opts));
    agent_ = std::make_unique<api::AgentClient>("http://" + h1.address + ":7801", kToken);
    for (int i = 0; i < 600; ++i) {
      if (agent_->Health().ok()) return Status::Ok();
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return Status::Io("ferry-agent did not answer; see " + o_.root + "/agent1.log");
  }

  void Teardown() {
    if (agent_pid_ > 0) lab::TerminateProcess(agent_pid_, 5000);
    hosts_.clear();
    if (lab_ && !o_.keep) (void)lab_->Down();
  }

  Status RunRate(int rate) {
    const std::string vm = "lb" + std::to_string(rate);
    lab::GuestSpec spec;
    spec.name = vm;
    spec.host = 1;
    spec.pool = "nas1";
    spec.memory_mib = o_.memory_mib;
    spec.disk_mode = lab::DiskMode::kNone;
    spec.heartbeat_ms = 10;
    if (rate > 0) {
      spec.dirty_mib = std::max(64, rate);
      spec.dirty_rate_mib = rate;
    }
    Log(vm + ": boot (" + std::to_string(o_.memory_mib) + " MiB, dirtying " +
        std::to_string(spec.dirty_mib) + " MiB at " + std::to_string(rate) + " MiB/s)");
    FERRY_ASSIGN_OR_RETURN(lab::GuestInfo guest, lab_->CreateGuest(spec));
    lab::ConsoleWatcher console(guest.console_log);
    console.Start();
    FERRY_TRY(console.WaitForLine("FERRY-READY", kBootTimeoutMs).status());
    if (rate > 0) FERRY_TRY(console.WaitForLine("FERRY-DIRTY-READY", kBootTimeoutMs).status());
    FERRY_TRY(console.WaitForHeartbeats(100, kBootTimeoutMs));
    for (int cap : o_.caps) {
      for (int rep = 0; rep < std::max(1, o_.repeat); ++rep) {
      for (const std::string& method : o_.methods) {
        FERRY_TRY(BackOnHost1(vm, console));
        RunResult r;
        r.rate_mib = rate;
        r.cap_mib = cap;
        r.method = method;
        r.repeat = rep;
        Result<uint64_t> measured = hosts_[0]->MeasureDirtyRate(vm, 1);
        r.measured_mib = measured.ok() ? static_cast<double>(*measured) / kMiB : -1;
        Log(vm + ": cap " + CapText(cap) + ", " + method + " (measured dirty rate " +
            Fixed(r.measured_mib, 1) + " MiB/s, load " + LoadAverage() + ")");
        Status s = RunOne(vm, console, &r);
        if (!s.ok()) {
          r.finished = false;
          r.outcome = "bench error: " + s.ToString();
        }
        Log(vm + ":   " + (r.finished ? "finished" : "NOT finished") + " in " +
            Fixed(r.total_s, 1) + " s, guest downtime " + Fixed(r.guest_downtime_ms, 0) +
            " ms, QEMU downtime " + std::to_string(r.qemu_downtime_ms) + " ms, " +
            Fixed(static_cast<double>(r.bytes_sent) / kMiB, 0) + " MiB sent; " + r.outcome);
        results_.push_back(r);
        WriteJson(r);
      }
      }
    }
    FERRY_TRY(BackOnHost1(vm, console));
    (void)lab_->Virsh(1, {"destroy", vm});
    (void)lab_->Virsh(1, {"undefine", vm});
    return Status::Ok();
  }

  // Puts the guest back on host1 (a non-live migration: paused for the copy, so it finishes
  // whatever the guest dirties) and resets its migration speed and downtime limit.
  Status BackOnHost1(const std::string& vm, lab::ConsoleWatcher& console) {
    FERRY_ASSIGN_OR_RETURN(std::vector<int> where, lab_->HostsRunning(vm));
    if (where == std::vector<int>{2}) {
      const lab::HostInfo& h1 = lab_->host(1);
      Result<std::string> back = lab_->Virsh(2, {"migrate", "--unsafe", "--persistent",
                                                 "--undefinesource", vm, h1.uri, h1.migration_uri});
      if (!back.ok()) return back.status().WithContext("move " + vm + " back to host1");
      FERRY_ASSIGN_OR_RETURN(where, lab_->HostsRunning(vm));
    }
    if (where != std::vector<int>{1}) {
      return Status::Internal(vm + " does not run on host1 alone before a run");
    }
    FERRY_TRY(lab_->Virsh(1, {"migrate-setspeed", vm, kUnlimitedSpeed}).status());
    FERRY_TRY(lab_->Virsh(1, {"migrate-setmaxdowntime", vm, std::to_string(kQemuDefaultDowntimeMs)})
                  .status());
    return console.WaitForHeartbeats(100, 60000, lab::ConsoleWatcher::NowNs());
  }

  Status RunOne(const std::string& vm, lab::ConsoleWatcher& console, RunResult* r) {
    const lab::HostInfo& h2 = lab_->host(2);
    const int64_t t0_ns = lab::ConsoleWatcher::NowNs();
    const int64_t t0 = NowMs();
    StatsSampler sampler(*hosts_[0], vm);
    if (r->method == "ferry") {
      agent::MigrationJobSpec spec;
      spec.id = "bench-" + vm + "-" + std::to_string(r->cap_mib) + "-" + std::to_string(t0);
      spec.kind = agent::MigrationKind::kLive;
      spec.vm = vm;
      spec.target_uri = h2.uri;
      spec.target_migration_uri = h2.migration_uri;
      spec.max_downtime_ms = o_.budget_ms;
      spec.bandwidth = static_cast<uint64_t>(r->cap_mib) * kMiB;
      spec.timeout_ms = static_cast<int64_t>(o_.limit_s) * 1000;
      FERRY_ASSIGN_OR_RETURN(api::AgentJob job, agent_->StartJob(spec));
      bool cancelled = false;
      while (job.state == api::AgentJobState::kRunning) {
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
        FERRY_ASSIGN_OR_RETURN(job, agent_->GetJob(spec.id));
        // The job's own timeout should end it; this is only a backstop.
        if (!cancelled && NowMs() - t0 > (o_.limit_s + 60) * 1000LL) {
          cancelled = true;
          (void)agent_->CancelJob(spec.id);
        }
      }
      r->total_s = (NowMs() - t0) / 1000.0;
      r->finished = job.state == api::AgentJobState::kSucceeded;
      r->outcome = r->finished ? "done" : job.error.message();
      if (job.result) {
        r->notes = job.result->notes;
        r->qemu_downtime_ms = job.result->qemu_downtime_ms;
        r->bytes_sent = job.result->bytes_sent;
      }
      for (const api::AgentJobEvent& e : job.events) {
        if (!r->finished && (e.kind == "info" || e.kind == "warning"))
          r->notes.push_back(e.message);
      }
    } else {
      if (r->method == "qemu") {
        const int speed =
            r->cap_mib > 0 ? std::min(r->cap_mib, kQemuDefaultSpeedMib) : kQemuDefaultSpeedMib;
        FERRY_TRY(lab_->Virsh(1, {"migrate-setspeed", vm, std::to_string(speed)}).status());
        FERRY_TRY(
            lab_->Virsh(1, {"migrate-setmaxdowntime", vm, std::to_string(kQemuDefaultDowntimeMs)})
                .status());
      }
      std::vector<std::string> argv = {"virsh",  "-c",       lab_->host(1).uri, "migrate",
                                       "--live", "--unsafe", "--persistent",    "--undefinesource"};
      if (r->method == "virsh" && r->cap_mib > 0) {
        argv.push_back("--bandwidth");
        argv.push_back(std::to_string(r->cap_mib));
      }
      argv.insert(argv.end(), {vm, h2.uri, h2.migration_uri});
      std::atomic<bool> done{false};
      Result<lab::ProcessResult> proc = Status::Internal("not run");
      std::thread runner([&] {
        proc = lab::RunProcess(argv, (o_.limit_s + 120) * 1000LL);
        done = true;
      });
      bool aborted = false;
      while (!done) {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        if (!aborted && NowMs() - t0 > o_.limit_s * 1000LL) {
          aborted = true;
          Log(vm + ":   time limit: virsh domjobabort");
          (void)lab_->Virsh(1, {"domjobabort", vm});
        }
      }
      runner.join();
      r->total_s = (NowMs() - t0) / 1000.0;
      Result<std::vector<int>> where = lab_->HostsRunning(vm);
      r->finished =
          proc.ok() && proc->exit_code == 0 && where.ok() && *where == std::vector<int>{2};
      if (r->finished) {
        r->outcome = "done";
      } else if (aborted) {
        r->outcome = "aborted at the " + std::to_string(o_.limit_s) + " s limit";
      } else {
        std::string out = proc.ok() ? proc->output : proc.status().ToString();
        while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
        r->outcome = out;
      }
    }
    sampler.Stop();
    const int64_t t1_ns = lab::ConsoleWatcher::NowNs();
    // The heartbeats of the run's window, until a few seconds after it ended.
    (void)console.WaitForHeartbeats(kTailMs / 10, kTailMs * 4, t1_ns);
    std::this_thread::sleep_for(std::chrono::milliseconds(kTailMs / 2));
    lab::HeartbeatStats hb = console.Heartbeats(t0_ns, t1_ns + kTailMs * 1000000LL);
    r->guest_downtime_ms = hb.max_gap_ns / 1e6;
    r->gap_at_s = hb.max_gap_end_ns > 0 ? (hb.max_gap_end_ns - t0_ns) / 1e9 : -1;
    // QEMU's downtime and bytes: the completed job on the target, else on the source, else the
    // last sample.
    // A run that did not finish has no completed statistics of its own (the source's "completed"
    // job may be an older one): its last sample says what it sent.
    hypervisor::JobStats last = sampler.last();
    r->max_throttle = sampler.max_throttle();
    Result<hypervisor::JobStats> completed = Status::NotFound("not finished");
    if (r->finished) {
      completed = hosts_[1]->GetJobStats(vm, true);
      if (!completed.ok() || completed->data_processed == 0) {
        completed = hosts_[0]->GetJobStats(vm, true);
      }
    }
    if (completed.ok() && completed->data_processed > 0) {
      r->qemu_downtime_ms = completed->downtime_ms;
      r->bytes_sent = completed->data_processed;
      r->passes = completed->memory_iteration;
      r->max_throttle = std::max(r->max_throttle, completed->auto_converge_throttle);
    } else {
      r->bytes_sent = last.data_processed;
      r->passes = last.memory_iteration;
    }
    return Status::Ok();
  }

  static std::string CapText(int cap) {
    return cap == 0 ? std::string("none") : std::to_string(cap) + " MiB/s";
  }

  static std::string Fixed(double v, int digits) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.*f", digits, v);
    return buf;
  }

  void WriteJson(const RunResult& r) {
    if (o_.json_path.empty()) return;
    std::ofstream out(o_.json_path, std::ios::app);
    out << json{{"rate_mib", r.rate_mib},         {"measured_mib", r.measured_mib},
                {"repeat", r.repeat},
                {"cap_mib", r.cap_mib},           {"method", r.method},
                {"finished", r.finished},         {"outcome", r.outcome},
                {"total_s", r.total_s},           {"guest_downtime_ms", r.guest_downtime_ms},
                {"gap_at_s", r.gap_at_s},         {"qemu_downtime_ms", r.qemu_downtime_ms},
                {"bytes_sent", r.bytes_sent},     {"passes", r.passes},
                {"max_throttle", r.max_throttle}, {"notes", r.notes}}
               .dump()
        << "\n";
  }

  // The runs of one (rate, cap, method) cell, summarised over its finished runs.
  struct Cell {
    int rate_mib = 0, cap_mib = 0;
    std::string method;
    int runs = 0, finished = 0;
    std::string outcome;  // of the first run that did not finish
    std::vector<double> measured, total, guest, qemu, sent, passes;
    int max_throttle = 0;
  };

  static double Median(std::vector<double> v) {
    if (v.empty()) return -1;
    std::sort(v.begin(), v.end());
    const size_t n = v.size();
    return n % 2 == 1 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
  }

  std::vector<Cell> Cells() const {
    std::vector<Cell> cells;
    for (const RunResult& r : results_) {
      auto it = std::find_if(cells.begin(), cells.end(), [&](const Cell& c) {
        return c.rate_mib == r.rate_mib && c.cap_mib == r.cap_mib && c.method == r.method;
      });
      if (it == cells.end()) {
        cells.push_back({});
        it = cells.end() - 1;
        it->rate_mib = r.rate_mib;
        it->cap_mib = r.cap_mib;
        it->method = r.method;
      }
      ++it->runs;
      if (r.measured_mib >= 0) it->measured.push_back(r.measured_mib);
      if (!r.finished) {
        if (it->outcome.empty()) it->outcome = r.outcome;
        continue;
      }
      ++it->finished;
      it->total.push_back(r.total_s);
      it->guest.push_back(r.guest_downtime_ms);
      if (r.qemu_downtime_ms >= 0) it->qemu.push_back(static_cast<double>(r.qemu_downtime_ms));
      it->sent.push_back(static_cast<double>(r.bytes_sent) / kMiB);
      it->passes.push_back(static_cast<double>(r.passes));
      it->max_throttle = std::max(it->max_throttle, r.max_throttle);
    }
    return cells;
  }

  static const Cell* Find(const std::vector<Cell>& cells, int rate, int cap,
                          const std::string& method) {
    for (const Cell& c : cells) {
      if (c.rate_mib == rate && c.cap_mib == cap && c.method == method) return &c;
    }
    return nullptr;
  }

  static std::string Ratio(double peer, double ferry) {
    if (ferry <= 0) return "";
    return " (" + Fixed(peer / ferry, 2) + "x)";
  }

  // "131" for one value; "131 [98-160]" (median [min-max]) for several.
  static std::string Spread(const std::vector<double>& v, int digits) {
    if (v.empty()) return "-";
    std::string m = Fixed(Median(v), digits);
    if (v.size() == 1) return m;
    auto [lo, hi] = std::minmax_element(v.begin(), v.end());
    return m + " [" + Fixed(*lo, digits) + "-" + Fixed(*hi, digits) + "]";
  }

  void PrintTable() const {
    utsname u{};
    uname(&u);
    std::time_t t = std::time(nullptr);
    char date[64];
    std::strftime(date, sizeof date, "%Y-%m-%d %H:%M", std::localtime(&t));
    std::printf("date %s; %s %s, %ld cores; %s; %s; load average at start %s, at end %s\n\n", date,
                u.sysname, u.release, sysconf(_SC_NPROCESSORS_ONLN),
                FirstLine({"qemu-system-x86_64", "--version"}).c_str(),
                ("libvirt " + FirstLine({"virsh", "--version"})).c_str(), load_start_.c_str(),
                load_end_.c_str());
    std::printf("guest %d MiB (TCG), downtime budget %d ms, time limit %d s per run, %d run(s) "
                "per cell (interleaved)\n\n",
                o_.memory_mib, o_.budget_ms, o_.limit_s, std::max(1, o_.repeat));
    if (o_.repeat > 1) {
      std::printf("Cells with several runs show the median of the finished runs and [min-max]; "
                  "ratios are of medians.\n\n");
    }
    std::printf(
        "| dirty rate MiB/s (set / measured) | cap MiB/s | method | finished | total s (x) | "
        "guest downtime ms (x) | QEMU downtime ms | sent MiB (x) | passes | throttle %% |\n");
    std::printf("|---|---|---|---|---|---|---|---|---|---|\n");
    const std::vector<Cell> cells = Cells();
    for (const Cell& c : cells) {
      const Cell* f = Find(cells, c.rate_mib, c.cap_mib, "ferry");
      const bool ratios = c.method != "ferry" && f != nullptr && f->finished > 0 && c.finished > 0;
      std::string total =
          Spread(c.total, 1) + (ratios ? Ratio(Median(c.total), Median(f->total)) : "");
      std::string guest =
          Spread(c.guest, 0) + (ratios ? Ratio(Median(c.guest), Median(f->guest)) : "");
      std::string sent = Spread(c.sent, 0) + (ratios ? Ratio(Median(c.sent), Median(f->sent)) : "");
      std::string method = c.method == "ferry"   ? "Ferry"
                           : c.method == "virsh" ? "virsh migrate --live"
                                                 : "QEMU defaults";
      std::string finished = c.runs == 1 ? (c.finished == 1 ? "yes" : "no: " + Short(c.outcome))
                             : c.finished == c.runs
                                 ? "yes (" + std::to_string(c.runs) + ")"
                                 : std::to_string(c.finished) + " of " + std::to_string(c.runs) +
                                       (c.outcome.empty() ? "" : "; " + Short(c.outcome));
      std::printf("| %d / %s | %s | %s | %s | %s | %s | %s | %s | %s | %d |\n", c.rate_mib,
                  Fixed(Median(c.measured), 0).c_str(),
                  c.cap_mib == 0 ? "none" : std::to_string(c.cap_mib).c_str(), method.c_str(),
                  finished.c_str(), total.c_str(), guest.c_str(), Spread(c.qemu, 0).c_str(),
                  sent.c_str(), Fixed(Median(c.passes), 0).c_str(), c.max_throttle);
    }
    std::printf(
        "\n(x) = peer / Ferry, where both finished: above 1 means Ferry is faster, "
        "paused the guest less or sent less.\n");
    // The goal, row by row: Ferry finishes every run; its median guest downtime is no worse
    // than the best median of a peer that finished.
    int rows = 0, ferry_done = 0, worse = 0;
    std::string misses;
    for (const Cell& c : cells) {
      if (c.method != "ferry") continue;
      ++rows;
      const bool all = c.finished == c.runs;
      if (all) ++ferry_done;
      double best = -1;
      for (const char* peer : {"virsh", "qemu"}) {
        const Cell* p = Find(cells, c.rate_mib, c.cap_mib, peer);
        if (p && p->finished > 0 && (best < 0 || Median(p->guest) < best)) best = Median(p->guest);
      }
      const std::string where =
          " [" + std::to_string(c.rate_mib) + " MiB/s, cap " + CapText(c.cap_mib) + ": ";
      if (!all) {
        misses += where + std::to_string(c.finished) + " of " + std::to_string(c.runs) +
                  " finished]";
      } else if (best >= 0 && Median(c.guest) > best) {
        ++worse;
        misses += where + "guest downtime " + Fixed(Median(c.guest), 0) + " ms > best peer's " +
                  Fixed(best, 0) + " ms]";
      }
    }
    std::printf(
        "\nFerry finished every run in %d of %d rows; its (median) guest downtime was above the "
        "best finishing peer's in %d.%s\n",
        ferry_done, rows, worse, misses.c_str());
  }

  static std::string Short(const std::string& s) {
    std::string out = s.size() > 120 ? s.substr(0, 117) + "..." : s;
    for (char& c : out) {
      if (c == '|' || c == '\n') c = ' ';
    }
    return out;
  }

  const Options o_;
  std::unique_ptr<lab::Lab> lab_;
  std::vector<std::unique_ptr<hypervisor::LibvirtHost>> hosts_;
  std::unique_ptr<api::AgentClient> agent_;
  pid_t agent_pid_ = 0;
  std::vector<RunResult> results_;
  std::vector<std::string> failures_;  // rates that could not run
  std::string load_start_, load_end_;
};

}  // namespace
}  // namespace ferry::bench

int main(int argc, char** argv) {
  ferry::bench::Options o;
  CLI::App app{"Live migration: Ferry against virsh migrate --live and QEMU's defaults"};
  app.add_option("--rates", o.rates, "Dirty rates, MiB/s (0: no dirtier)")->delimiter(',');
  app.add_option("--caps", o.caps, "Bandwidth caps, MiB/s (0: none)")->delimiter(',');
  app.add_option("--methods", o.methods, "ferry, virsh, qemu")->delimiter(',');
  app.add_option("--memory", o.memory_mib, "Guest memory, MiB");
  app.add_option("--limit", o.limit_s, "Time limit of each run, s");
  app.add_option("--budget", o.budget_ms, "Ferry's downtime budget, ms");
  app.add_option("--repeat", o.repeat, "Runs per cell (rate, cap, method), interleaved; medians");
  app.add_option("--root", o.root, "Folder of the lab and the logs");
  app.add_option("--json", o.json_path, "Append one JSON object per run to this file");
  app.add_flag("--keep", o.keep, "Leave the lab running at the end");
  CLI11_PARSE(app, argc, argv);
  signal(SIGPIPE, SIG_IGN);
  return ferry::bench::Bench(o).Main();
}
