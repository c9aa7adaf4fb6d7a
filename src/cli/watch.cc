// Polling ferryd until migrations end (see watch.h).
#include "cli/watch.h"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <map>

#include "cli/api_format.h"

namespace ferry::cli {

namespace {

constexpr int64_t kNanosPerMs = 1'000'000;

struct Watched {
  std::string id;
  int64_t last_seq = 0;
  bool done = false;
  MigrationRecord record;
};

class ProgressLine {
 public:
  explicit ProgressLine(OutputMode mode)
      : enabled_(mode == OutputMode::kText && ::isatty(STDERR_FILENO) == 1) {}
  ~ProgressLine() { Clear(); }

  void Show(const std::string& line) {
    if (!enabled_) return;
    std::fprintf(stderr, "\r%s\033[K", line.c_str());
    std::fflush(stderr);
    shown_ = true;
  }
  void Clear() {
    if (!shown_) return;
    std::fprintf(stderr, "\r\033[K");
    std::fflush(stderr);
    shown_ = false;
  }

 private:
  bool enabled_;
  bool shown_ = false;
};

// One poll of one migration: its record, then the events after the last seen seq.
Status PollOnce(const ApiClient& client, Watched& w, std::vector<EventRecord>* events) {
  FERRY_ASSIGN_OR_RETURN(std::string body, client.Get(MigrationPath(w.id)));
  FERRY_ASSIGN_OR_RETURN(w.record, ParseMigration(body));
  FERRY_ASSIGN_OR_RETURN(
      std::string ev_body,
      client.Get(MigrationPath(w.id) + "/events?after=" + std::to_string(w.last_seq)));
  FERRY_ASSIGN_OR_RETURN(*events, ParseEventList(ev_body));
  std::vector<EventRecord> fresh;
  for (EventRecord& e : *events) {
    if (e.seq <= w.last_seq) continue;  // a server that ignores ?after= repeats old events
    w.last_seq = e.seq;
    fresh.push_back(std::move(e));
  }
  *events = std::move(fresh);
  return Status::Ok();
}

}  // namespace

std::string MigrationPath(const std::string& id) {
  return "/api/v1/migrations/" + api::UrlEncode(id);
}

int64_t WallClockMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

Result<std::vector<MigrationRecord>> WatchMigrations(const ApiClient& client, OutputMode mode,
                                                     const std::vector<std::string>& ids,
                                                     const WatchOptions& options) {
  std::vector<Watched> watched;
  for (const std::string& id : ids) watched.push_back(Watched{.id = id});
  const bool several = watched.size() > 1;
  ProgressLine progress(mode);
  PollPacer pacer(options.poll_ms);
  int64_t last_success_ns = options.clock->NowNanos();
  for (;;) {
    std::string line;
    bool changed = false;
    int64_t eta_ms = -1;
    for (Watched& w : watched) {
      if (w.done) continue;
      std::vector<EventRecord> events;
      Status s = PollOnce(client, w, &events);
      if (!s.ok()) {
        const int64_t waited_ns = options.clock->NowNanos() - last_success_ns;
        if (s.code() == ErrorCode::kIo && waited_ns < options.retry_ms * kNanosPerMs) continue;
        progress.Clear();
        return s.WithContext("watch " + w.id);
      }
      last_success_ns = options.clock->NowNanos();
      w.done = w.record.IsFinal();
      changed = changed || !events.empty();
      eta_ms = SoonerEta(eta_ms, w.record.progress.eta_ms);
      if (mode == OutputMode::kJson) {
        std::vector<std::string> items;
        for (const EventRecord& e : events) items.push_back(e.json);
        std::printf("%s\n", JsonObject({{"type", JsonString("poll")},
                                        {"migration", w.record.json},
                                        {"events", JsonArray(items)}})
                                .c_str());
      } else {
        if (!events.empty()) progress.Clear();
        for (const EventRecord& e : events) {
          std::printf("%s%s\n", several ? ("[" + Printable(w.record.vm) + "] ").c_str() : "",
                      FormatEventLine(e).c_str());
        }
        if (!w.done) line += (line.empty() ? "" : " | ") + FormatProgressLine(w.record);
      }
      std::fflush(stdout);
    }
    bool all_done = true;
    for (const Watched& w : watched) all_done = all_done && w.done;
    if (all_done) break;
    progress.Show(line);
    options.clock->SleepNanos(pacer.Next(changed, eta_ms) * kNanosPerMs);
  }
  progress.Clear();
  std::vector<MigrationRecord> finals;
  for (Watched& w : watched) {
    if (mode == OutputMode::kJson) {
      std::printf(
          "%s\n",
          JsonObject({{"type", JsonString("final")}, {"migration", w.record.json}}).c_str());
    } else {
      std::printf("%s (%s): %s\n", Printable(w.record.id).c_str(), Printable(w.record.vm).c_str(),
                  FormatOutcome(w.record).c_str());
    }
    finals.push_back(std::move(w.record));
  }
  std::fflush(stdout);
  return finals;
}

std::string PlanPath(const std::string& id) { return "/api/v1/plans/" + api::UrlEncode(id); }

Result<PlanStatusRecord> WatchPlan(const ApiClient& client, OutputMode mode, const std::string& id,
                                   const WatchOptions& options) {
  ProgressLine progress(mode);
  std::map<std::string, std::string> last_seen;  // VM -> "state (phase)"
  PollPacer pacer(options.poll_ms);
  int64_t last_success_ns = options.clock->NowNanos();
  PlanStatusRecord plan;
  for (;;) {
    Result<std::string> body = client.Get(PlanPath(id));
    Result<PlanStatusRecord> polled =
        body.ok() ? ParsePlanStatus(*body) : Result<PlanStatusRecord>(body.status());
    if (!polled.ok()) {
      const int64_t waited_ns = options.clock->NowNanos() - last_success_ns;
      if (polled.status().code() != ErrorCode::kIo || waited_ns >= options.retry_ms * kNanosPerMs) {
        progress.Clear();
        return polled.status().WithContext("watch plan " + id);
      }
      options.clock->SleepNanos(options.poll_ms * kNanosPerMs);
      continue;
    }
    last_success_ns = options.clock->NowNanos();
    plan = std::move(*polled);
    if (mode == OutputMode::kJson) {
      std::printf("%s\n", JsonObject({{"type", JsonString("poll")}, {"plan", plan.json}}).c_str());
    }
    bool changed = false;
    int64_t eta_ms = -1;
    for (const PlanVmRecord& v : plan.vms) {
      eta_ms = SoonerEta(eta_ms, v.progress.eta_ms);
      const std::string phase = v.phase.empty() ? v.progress.phase : v.phase;
      const std::string now = v.state + (phase.empty() ? "" : " (" + phase + ")");
      std::string& seen = last_seen[v.vm];
      if (seen == now) continue;
      seen = now;
      changed = true;
      if (mode == OutputMode::kJson) continue;
      progress.Clear();
      std::printf("%s: %s\n", Printable(v.vm).c_str(), Printable(now).c_str());
    }
    std::fflush(stdout);
    if (plan.IsFinal()) break;
    progress.Show(FormatPlanProgressLine(plan));
    options.clock->SleepNanos(pacer.Next(changed, eta_ms) * kNanosPerMs);
  }
  progress.Clear();
  if (mode == OutputMode::kJson) {
    std::printf("%s\n", JsonObject({{"type", JsonString("final")}, {"plan", plan.json}}).c_str());
  } else {
    std::printf("%s%s\n", FormatPlanStatus(plan, WallClockMs()).c_str(),
                FormatPlanOutcome(plan).c_str());
  }
  std::fflush(stdout);
  return plan;
}

int ExitCodeForAll(const std::vector<MigrationRecord>& finals) {
  for (const MigrationRecord& m : finals) {
    int rc = ExitCodeForOutcome(m);
    if (rc != 0) return rc;
  }
  return 0;
}

}  // namespace ferry::cli
