// Text rendering for the management commands (see api_format.h).
#include "cli/api_format.h"

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <map>

#include "api/errors.h"
#include "cli/progress.h"
#include "common/units.h"

namespace ferry::cli {

namespace {

// Display width: UTF-8 characters (continuation bytes do not count).
size_t DisplayWidth(std::string_view s) {
  size_t n = 0;
  for (unsigned char c : s) {
    if ((c & 0xC0) != 0x80) ++n;
  }
  return n;
}

std::string OrDash(const std::string& s) { return s.empty() ? "-" : Printable(s); }

std::string Percent(double p) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%.1f%%", p);
  return buf;
}

// The migration's percent: the server's figure, else done/total.
std::optional<double> PercentOf(const MigrationRecord& m) {
  if (m.progress.percent) return m.progress.percent;
  if (m.progress.bytes_total > 0) {
    return std::min(100.0, 100.0 * static_cast<double>(m.progress.bytes_done) /
                               static_cast<double>(m.progress.bytes_total));
  }
  if (m.state == "completed") return 100.0;
  return std::nullopt;
}

std::string Phase(const MigrationRecord& m) {
  return !m.phase.empty() ? m.phase : m.progress.phase;
}

std::string ClockTime(int64_t at_ms) {
  if (at_ms <= 0) return "--:--:--.---";
  time_t secs = static_cast<time_t>(at_ms / 1000);
  struct tm tm {};
  if (localtime_r(&secs, &tm) == nullptr) return "--:--:--.---";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%02d:%02d:%02d.%03d", tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<int>(at_ms % 1000));
  return buf;
}

}  // namespace

std::string Printable(std::string_view text) {
  std::string out(text);
  for (char& c : out) {
    unsigned char u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7F) c = '?';
  }
  return out;
}

std::string FormatTable(const std::vector<std::string>& header,
                        const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> width(header.size(), 0);
  auto measure = [&width](const std::vector<std::string>& row) {
    for (size_t i = 0; i < row.size() && i < width.size(); ++i) {
      width[i] = std::max(width[i], DisplayWidth(row[i]));
    }
  };
  measure(header);
  for (const auto& row : rows) measure(row);
  auto line = [&width](const std::vector<std::string>& row) {
    std::string out;
    for (size_t i = 0; i < width.size(); ++i) {
      const std::string cell = i < row.size() ? row[i] : "";
      out += cell;
      if (i + 1 < width.size()) out.append(width[i] - DisplayWidth(cell) + 2, ' ');
    }
    while (!out.empty() && out.back() == ' ') out.pop_back();
    return out + "\n";
  };
  std::string out = line(header);
  for (const auto& row : rows) out += line(row);
  return out;
}

std::string FormatAge(int64_t ms) {
  if (ms < 0) return "-";
  int64_t s = ms / 1000;
  if (s < 60) return std::to_string(s) + "s";
  if (s < 3600) return std::to_string(s / 60) + "m";
  if (s < 86400) return std::to_string(s / 3600) + "h";
  return std::to_string(s / 86400) + "d";
}

std::string FormatMillis(int64_t ms) {
  if (ms < 0) return "-";
  char buf[32];
  if (ms < 1000) {
    std::snprintf(buf, sizeof buf, "%lld ms", static_cast<long long>(ms));
  } else if (ms < 60'000) {
    std::snprintf(buf, sizeof buf, "%.1f s", static_cast<double>(ms) / 1000.0);
  } else {
    int64_t s = ms / 1000;
    std::snprintf(buf, sizeof buf, "%lldm%02llds", static_cast<long long>(s / 60),
                  static_cast<long long>(s % 60));
  }
  return buf;
}

std::string FormatRate(uint64_t bytes_per_second) { return FormatBytes(bytes_per_second) + "/s"; }

std::string FormatHostsTable(const std::vector<HostRecord>& hosts) {
  std::vector<std::vector<std::string>> rows;
  for (const HostRecord& h : hosts) {
    rows.push_back({Printable(h.id), OrDash(h.name), OrDash(h.cluster), Printable(h.status),
                    h.has_facts ? OrDash(h.facts.cpu_model) : "-",
                    h.has_facts ? FormatBytes(h.facts.free_memory_bytes) : "-",
                    std::to_string(h.vm_count)});
  }
  return FormatTable({"ID", "NAME", "CLUSTER", "STATUS", "CPU MODEL", "FREE MEMORY", "VMS"}, rows);
}

std::string FormatVmsTable(const std::vector<VmRecord>& vms) {
  std::vector<std::vector<std::string>> rows;
  for (const VmRecord& v : vms) {
    uint64_t total = 0;
    for (const DiskRecord& d : v.disks) total += d.capacity_bytes;
    rows.push_back({OrDash(v.host), Printable(v.name), Printable(v.state), std::to_string(v.vcpus),
                    FormatBytes(v.memory_bytes),
                    std::to_string(v.disks.size()) + " / " + FormatBytes(total),
                    OrDash(v.firmware)});
  }
  return FormatTable({"HOST", "NAME", "STATE", "VCPUS", "MEMORY", "DISKS", "FIRMWARE"}, rows);
}

std::string FormatRoute(const MigrationRecord& m) {
  std::string source = m.source.empty() ? "?" : Printable(m.source);
  if (m.target.empty() || m.target == m.source) {
    return m.type == "live-storage" ? source : source + " → ?";
  }
  return source + " → " + Printable(m.target);
}

std::string FormatMigrationsTable(const std::vector<MigrationRecord>& migrations, int64_t now_ms) {
  std::vector<std::vector<std::string>> rows;
  for (const MigrationRecord& m : migrations) {
    std::optional<double> pct = PercentOf(m);
    rows.push_back({Printable(m.id), Printable(m.vm), Printable(m.type), FormatRoute(m),
                    Printable(m.state), OrDash(Phase(m)), pct ? Percent(*pct) : "-",
                    m.created_at_ms > 0 ? FormatAge(now_ms - m.created_at_ms) : "-"});
  }
  return FormatTable({"ID", "VM", "TYPE", "ROUTE", "STATE", "PHASE", "DONE", "AGE"}, rows);
}

std::string FormatEventLine(const EventRecord& e) {
  char kind[16];
  std::snprintf(kind, sizeof kind, "%-8s", Printable(e.kind).substr(0, 8).c_str());
  return ClockTime(e.at_ms) + "  " + kind + "  " + Printable(e.message);
}

std::string FormatProgressLine(const MigrationRecord& m) {
  const ProgressRecord& p = m.progress;
  std::string line =
      Printable(m.vm) + " " + (Phase(m).empty() ? Printable(m.state) : Printable(Phase(m)));
  if (std::optional<double> pct = PercentOf(m)) line += " " + Percent(*pct);
  if (p.bytes_total > 0) {
    line += "  " + FormatBytes(p.bytes_done) + " / " + FormatBytes(p.bytes_total);
  }
  if (p.rate > 0) line += "  " + FormatRate(p.rate);
  if (p.eta_ms >= 0) line += "  ETA " + FormatDuration(static_cast<double>(p.eta_ms) / 1000.0);
  if (p.dirty_rate > 0) line += "  dirty " + FormatRate(p.dirty_rate);
  if (p.downtime_limit_ms > 0) line += "  downtime ≤ " + FormatMillis(p.downtime_limit_ms);
  if (p.iteration > 0) line += "  pass " + std::to_string(p.iteration);
  if (p.throttle_percent > 0) line += "  throttle " + std::to_string(p.throttle_percent) + "%";
  if (p.postcopy) line += "  post-copy";
  return line;
}

std::string FormatOutcome(const MigrationRecord& m) {
  std::string out = Printable(m.state);
  if (m.result) {
    const ResultRecord& r = *m.result;
    out += " in " + FormatMillis(r.total_ms);
    if (r.qemu_downtime_ms >= 0) out += ", QEMU downtime " + FormatMillis(r.qemu_downtime_ms);
    if (r.guest_downtime_ms >= 0) out += ", guest downtime " + FormatMillis(r.guest_downtime_ms);
    out += ", " + FormatBytes(r.bytes_sent) + " sent";
  }
  if (m.error) out += ": " + Printable(m.error->code) + ": " + Printable(m.error->message);
  return out;
}

std::string FormatMigrationDetails(const MigrationRecord& m, const std::vector<EventRecord>& events,
                                   int64_t now_ms) {
  std::vector<std::pair<std::string, std::string>> rows;
  rows.emplace_back("id", Printable(m.id));
  rows.emplace_back("vm",
                    Printable(m.vm) + (m.vm_uuid.empty() ? "" : " (" + Printable(m.vm_uuid) + ")"));
  rows.emplace_back("type", Printable(m.type));
  rows.emplace_back("route", FormatRoute(m));
  rows.emplace_back("state", Printable(m.state));
  if (!Phase(m).empty()) rows.emplace_back("phase", Printable(Phase(m)));
  rows.emplace_back("priority", std::to_string(m.priority));
  if (m.created_at_ms > 0) {
    rows.emplace_back("created", ClockTime(m.created_at_ms) + " (" +
                                     FormatAge(now_ms - m.created_at_ms) + " ago)");
  }
  if (!m.IsFinal() || m.progress.bytes_total > 0) {
    rows.emplace_back("progress", FormatProgressLine(m));
  }
  if (m.result) {
    const ResultRecord& r = *m.result;
    rows.emplace_back("total time", FormatMillis(r.total_ms));
    rows.emplace_back("QEMU downtime",
                      r.qemu_downtime_ms >= 0 ? FormatMillis(r.qemu_downtime_ms) : "n/a");
    rows.emplace_back("guest downtime", r.guest_downtime_ms >= 0 ? FormatMillis(r.guest_downtime_ms)
                                                                 : "not measured");
    rows.emplace_back("bytes sent",
                      FormatBytes(r.bytes_sent) + " (" + std::to_string(r.bytes_sent) + " bytes)");
    for (const std::string& note : r.notes) rows.emplace_back("note", Printable(note));
  }
  if (m.error) {
    rows.emplace_back("error", Printable(m.error->code) + ": " + Printable(m.error->message));
  }
  std::string out;
  for (const auto& [k, v] : rows) {
    std::string key = k + ":";
    key.resize(16, ' ');
    out += key + v + "\n";
  }
  out += "events:\n";
  if (events.empty()) out += "  (none)\n";
  for (const EventRecord& e : events) out += "  " + FormatEventLine(e) + "\n";
  return out;
}

namespace {

std::optional<double> PercentOfVm(const PlanVmRecord& v) {
  if (v.progress.percent) return v.progress.percent;
  if (v.state == "completed") return 100.0;
  if (v.progress.bytes_total > 0) {
    return std::min(100.0, 100.0 * static_cast<double>(v.progress.bytes_done) /
                               static_cast<double>(v.progress.bytes_total));
  }
  return std::nullopt;
}

std::string PhaseOfVm(const PlanVmRecord& v) {
  return !v.phase.empty() ? v.phase : v.progress.phase;
}

bool Active(const PlanVmRecord& v) {
  return v.state != "completed" && v.state != "failed" && v.state != "cancelled";
}

}  // namespace

std::string FormatPlansTable(const std::vector<PlanStatusRecord>& plans, int64_t now_ms) {
  std::vector<std::vector<std::string>> rows;
  for (const PlanStatusRecord& p : plans) {
    size_t completed = 0;
    for (const PlanVmRecord& v : p.vms) completed += v.state == "completed" ? 1 : 0;
    rows.push_back({Printable(p.name), Printable(p.id), Printable(p.state),
                    std::to_string(p.vms.size()),
                    std::to_string(completed) + "/" + std::to_string(p.vms.size()),
                    p.created_at_ms > 0 ? FormatAge(now_ms - p.created_at_ms) : "-"});
  }
  return FormatTable({"NAME", "ID", "STATE", "VMS", "DONE", "AGE"}, rows);
}

std::string FormatBootCheck(const PlanVmRecord& vm) {
  if (vm.result && vm.result->boot && vm.result->boot->checked) {
    const BootCheckRecord& b = *vm.result->boot;
    if (!b.ok) return "failed";
    return b.elapsed_ms >= 0 ? "ok (" + FormatMillis(b.elapsed_ms) + ")" : "ok";
  }
  // A failed boot check fails the migration (docs/plans.md), possibly without a result.
  if (vm.error && vm.error->message.rfind("boot check", 0) == 0) return "failed";
  return "-";
}

std::string FormatPlanStatus(const PlanStatusRecord& plan, int64_t now_ms) {
  std::string out =
      "plan " + Printable(plan.name) + " (" + Printable(plan.id) + "): " + Printable(plan.state);
  if (plan.created_at_ms > 0) out += ", created " + FormatAge(now_ms - plan.created_at_ms) + " ago";
  out += "\n";
  std::vector<std::vector<std::string>> rows;
  for (const PlanVmRecord& v : plan.vms) {
    std::optional<double> pct = PercentOfVm(v);
    rows.push_back({Printable(v.vm), OrDash(v.target_name), OrDash(v.state), OrDash(PhaseOfVm(v)),
                    pct ? Percent(*pct) : "-",
                    v.progress.rate > 0 && Active(v) ? FormatRate(v.progress.rate) : "-",
                    FormatBootCheck(v)});
  }
  out += FormatTable({"VM", "TARGET", "STATE", "PHASE", "DONE", "RATE", "BOOT CHECK"}, rows);
  for (const PlanVmRecord& v : plan.vms) {
    if (v.error) {
      out += Printable(v.vm) + ": " + Printable(v.error->code) + ": " +
             Printable(v.error->message) + "\n";
    } else if (v.result && v.result->boot && v.result->boot->checked &&
               !v.result->boot->message.empty()) {
      out += Printable(v.vm) + ": boot check: " + Printable(v.result->boot->message) + "\n";
    }
  }
  return out;
}

std::string FormatPlanProgressLine(const PlanStatusRecord& plan) {
  std::string line;
  for (const PlanVmRecord& v : plan.vms) {
    if (!Active(v)) continue;
    std::string part =
        Printable(v.vm) + " " + (PhaseOfVm(v).empty() ? OrDash(v.state) : Printable(PhaseOfVm(v)));
    if (std::optional<double> pct = PercentOfVm(v)) part += " " + Percent(*pct);
    if (v.progress.rate > 0) part += " " + FormatRate(v.progress.rate);
    line += (line.empty() ? "" : " | ") + part;
  }
  return line.empty() ? "plan " + Printable(plan.name) + " " + Printable(plan.state) : line;
}

std::string FormatPlanOutcome(const PlanStatusRecord& plan) {
  std::map<std::string, size_t> counts;
  for (const PlanVmRecord& v : plan.vms) ++counts[v.state.empty() ? "-" : v.state];
  std::string parts;
  for (const char* state : {"completed", "failed", "cancelled"}) {
    if (auto it = counts.find(state); it != counts.end()) {
      parts += (parts.empty() ? "" : ", ") + std::to_string(it->second) + " " + state;
      counts.erase(it);
    }
  }
  for (const auto& [state, n] : counts) {
    parts += (parts.empty() ? "" : ", ") + std::to_string(n) + " " + Printable(state);
  }
  return "plan " + Printable(plan.name) + " " + Printable(plan.state) +
         (parts.empty() ? "" : ": " + parts);
}

std::string FormatShareVmsTable(const std::vector<ShareVmRecord>& vms) {
  std::vector<std::vector<std::string>> rows;
  for (const ShareVmRecord& v : vms) {
    std::string missing;
    for (const std::string& m : v.missing) missing += (missing.empty() ? "" : ",") + Printable(m);
    rows.push_back({OrDash(v.host), OrDash(v.share), Printable(v.id), OrDash(v.name),
                    OrDash(v.platform), v.vcpus > 0 ? std::to_string(v.vcpus) : "?",
                    v.memory_bytes > 0 ? FormatBytes(v.memory_bytes) : "?",
                    std::to_string(v.disk_count) + " / " + FormatBytes(v.disk_bytes),
                    std::to_string(v.nic_count), missing.empty() ? "-" : missing});
  }
  return FormatTable(
      {"HOST", "SHARE", "ID", "NAME", "PLATFORM", "VCPUS", "MEMORY", "DISKS", "NICS", "MISSING"},
      rows);
}

int ExitCodeForPlan(const PlanStatusRecord& plan) {
  if (plan.state == "completed") return 0;
  bool cancelled = plan.state == "cancelled";
  for (const PlanVmRecord& v : plan.vms) {
    if (v.state == "failed") {
      ErrorCode code = v.error ? api::ErrorCodeFromWireName(v.error->code) : ErrorCode::kInternal;
      if (code == ErrorCode::kOk) code = ErrorCode::kInternal;
      return ExitCodeFor(code);
    }
    cancelled = cancelled || v.state == "cancelled";
  }
  return ExitCodeFor(cancelled ? ErrorCode::kCancelled : ErrorCode::kInternal);
}

std::string FormatChecks(const std::vector<CheckRecord>& checks, bool all) {
  std::string out;
  for (const CheckRecord& c : checks) {
    if (c.ok && !all) continue;
    out += c.ok ? "✓ " : "✗ ";
    if (!c.vm.empty()) out += Printable(c.vm) + ": ";
    out += Printable(c.name);
    if (!c.message.empty()) out += ": " + Printable(c.message);
    out += "\n";
  }
  return out;
}

int ExitCodeForOutcome(const MigrationRecord& m) {
  if (m.state == "completed") return 0;
  if (m.state == "cancelled") return ExitCodeFor(ErrorCode::kCancelled);
  ErrorCode code = m.error ? api::ErrorCodeFromWireName(m.error->code) : ErrorCode::kInternal;
  if (code == ErrorCode::kOk) code = ErrorCode::kInternal;
  return ExitCodeFor(code);
}

Result<uint64_t> ParseBandwidth(std::string_view text) {
  Result<uint64_t> r = ParseSize(text);
  if (!r.ok()) return r.status().WithContext("--bandwidth");
  return r;
}

Status CheckMigrationType(std::string_view type) {
  for (std::string_view t : {"auto", "live", "live-storage", "live-vsm", "quick", "reregister"}) {
    if (t == type) return Status::Ok();
  }
  return Status::InvalidArgument(
      "--type must be auto, live, live-storage, live-vsm, quick or "
      "reregister, not '" +
      Printable(type) + "'");
}

}  // namespace ferry::cli
