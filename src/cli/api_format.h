// Text output of the management commands: tables, details, the watch progress line, check
// lists, and the parsing of the commands' own option values. Strings from the server are made
// printable (control characters replaced) before they reach the terminal.
//
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "cli/api_model.h"
#include "common/status.h"

namespace ferry::cli {

// Columns padded to their widest cell (display width counts UTF-8 characters), two spaces
// apart, a header row first; no trailing spaces. Each line ends with '\n'.
std::string FormatTable(const std::vector<std::string>& header,
                        const std::vector<std::vector<std::string>>& rows);

// Control characters (and DEL) become '?', so a server cannot drive the terminal.
std::string Printable(std::string_view text);

// "45s", "12m", "3h", "5d" (negative or unknown: "-").
std::string FormatAge(int64_t ms);
// "850 ms", "4.2 s", "2m05s".
std::string FormatMillis(int64_t ms);
// "12.00 MiB/s".
std::string FormatRate(uint64_t bytes_per_second);

std::string FormatHostsTable(const std::vector<HostRecord>& hosts);
std::string FormatVmsTable(const std::vector<VmRecord>& vms);
// now_ms: the current wall-clock time in ms since the epoch (ages are relative to it).
std::string FormatMigrationsTable(const std::vector<MigrationRecord>& migrations, int64_t now_ms);
// "host1 → host2" (a missing side: "?"; live-storage without a target: "host1").
std::string FormatRoute(const MigrationRecord& m);
// The `ferry migration ID` page.
std::string FormatMigrationDetails(const MigrationRecord& m, const std::vector<EventRecord>& events,
                                   int64_t now_ms);
// One line: "12:00:01.250  phase      converging to 300 ms".
std::string FormatEventLine(const EventRecord& e);
// "g1 converging 45.0%  512.00 MiB / 1.00 GiB  20.00 MiB/s  ETA 0:25  dirty 3.00 MiB/s
// downtime ≤ 300 ms".
std::string FormatProgressLine(const MigrationRecord& m);
// "completed in 4.2 s, QEMU downtime 35 ms, guest downtime 120 ms, 1.02 GiB sent".
std::string FormatOutcome(const MigrationRecord& m);
// "✗ cpu_compatible: ..." per check; only the failed ones unless all = true (then ✓ too).
std::string FormatChecks(const std::vector<CheckRecord>& checks, bool all);

// Migration plans (ferry plans, ferry plan status): NAME, ID, STATE, VMS, DONE, AGE.
std::string FormatPlansTable(const std::vector<PlanStatusRecord>& plans, int64_t now_ms);
// A plan's page: "plan NAME (ID): STATE", its VMs (VM, TARGET, STATE, PHASE, DONE, RATE,
// BOOT CHECK), then each VM's error.
std::string FormatPlanStatus(const PlanStatusRecord& plan, int64_t now_ms);
// The BOOT CHECK cell: "ok (12.3 s)", "failed", "-" (none, or not yet).
std::string FormatBootCheck(const PlanVmRecord& vm);
// The live line while a plan runs: "web1 copying 45.0% 20.00 MiB/s | db1 queued".
std::string FormatPlanProgressLine(const PlanStatusRecord& plan);
// "plan wave-1 partial: 1 completed, 1 failed".
std::string FormatPlanOutcome(const PlanStatusRecord& plan);
// The export shares' VMs: HOST, SHARE, ID, NAME, PLATFORM, VCPUS, MEMORY, DISKS, NICS, MISSING.
std::string FormatShareVmsTable(const std::vector<ShareVmRecord>& vms);

// The exit status for a plan that ended: 0 completed; else the first failed VM's error code
// (ExitCodeFor, kInternal when unknown or absent), else ExitCodeFor(kCancelled) when a VM or
// the plan was cancelled, else ExitCodeFor(kInternal). REQUIRES: plan.IsFinal().
int ExitCodeForPlan(const PlanStatusRecord& plan);

// The process exit status for a migration that ended: 0 completed, ExitCodeFor(its error
// code) failed (kInternal when the code is unknown or absent), ExitCodeFor(kCancelled)
// cancelled. REQUIRES: m.IsFinal().
int ExitCodeForOutcome(const MigrationRecord& m);

// --bandwidth: "100M", "1G", "500K/s", "0" (bytes per second, binary multiples).
Result<uint64_t> ParseBandwidth(std::string_view text);
// --type: auto|live|live-storage|live-vsm|quick|reregister.
Status CheckMigrationType(std::string_view type);

}  // namespace ferry::cli
