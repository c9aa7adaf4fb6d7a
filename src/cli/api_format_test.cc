// Text output of the management commands and the parsing of their option values.
#include "cli/api_format.h"

#include <gtest/gtest.h>

namespace ferry::cli {
namespace {

MigrationRecord Running() {
  MigrationRecord m;
  m.id = "m1";
  m.vm = "g1";
  m.source = "host1";
  m.target = "host2";
  m.type = "live";
  m.state = "running";
  m.phase = "converging";
  m.progress.bytes_total = 1ull << 30;
  m.progress.bytes_done = 512ull << 20;
  m.progress.rate = 20ull << 20;
  m.progress.eta_ms = 25'000;
  m.progress.dirty_rate = 3ull << 20;
  m.progress.downtime_limit_ms = 300;
  m.progress.iteration = 2;
  m.created_at_ms = 1'000'000;
  return m;
}

TEST(ApiFormatTest, TableAlignsColumnsByCharacters) {
  std::string t = FormatTable({"A", "ROUTE", "Z"}, {{"x", "h1 → h2", "1"}, {"long", "-", "22"}});
  EXPECT_EQ(t,
            "A     ROUTE    Z\n"
            "x     h1 → h2  1\n"
            "long  -        22\n");
}

TEST(ApiFormatTest, TimesAndSizes) {
  EXPECT_EQ(FormatAge(59'999), "59s");
  EXPECT_EQ(FormatAge(61'000), "1m");
  EXPECT_EQ(FormatAge(2 * 3'600'000), "2h");
  EXPECT_EQ(FormatAge(3 * 86'400'000LL), "3d");
  EXPECT_EQ(FormatAge(-1), "-");
  EXPECT_EQ(FormatMillis(35), "35 ms");
  EXPECT_EQ(FormatMillis(4'200), "4.2 s");
  EXPECT_EQ(FormatMillis(125'000), "2m05s");
  EXPECT_EQ(FormatRate(20ull << 20), "20.00 MiB/s");
}

TEST(ApiFormatTest, HostsAndVmsTables) {
  HostRecord h;
  h.id = "host1";
  h.name = "Host 1";
  h.cluster = "lab";
  h.status = "up";
  h.has_facts = true;
  h.facts.cpu_model = "Skylake";
  h.facts.free_memory_bytes = 4ull << 30;
  h.vm_count = 3;
  HostRecord down;
  down.id = "host2";
  down.status = "down";
  std::string t = FormatHostsTable({h, down});
  EXPECT_NE(t.find("ID     NAME    CLUSTER  STATUS  CPU MODEL  FREE MEMORY  VMS"),
            std::string::npos)
      << t;
  EXPECT_NE(t.find("host1  Host 1  lab      up      Skylake    4.00 GiB     3"), std::string::npos)
      << t;
  EXPECT_NE(t.find("host2  -       -        down    -          -            0"), std::string::npos)
      << t;

  VmRecord v;
  v.host = "host1";
  v.name = "g1";
  v.state = "running";
  v.vcpus = 2;
  v.memory_bytes = 256ull << 20;
  v.firmware = "uefi";
  v.disks.resize(2);
  v.disks[0].capacity_bytes = 10ull << 30;
  v.disks[1].capacity_bytes = 20ull << 30;
  t = FormatVmsTable({v});
  EXPECT_NE(t.find("host1  g1    running  2      256.00 MiB  2 / 30.00 GiB  uefi"),
            std::string::npos)
      << t;
}

TEST(ApiFormatTest, MigrationsTableAndDetails) {
  MigrationRecord m = Running();
  std::string t = FormatMigrationsTable({m}, 1'000'000 + 90'000);
  EXPECT_NE(t.find("m1  g1  live  host1 → host2  running  converging  50.0%  1m"),
            std::string::npos)
      << t;
  MigrationRecord storage = m;
  storage.type = "live-storage";
  storage.target = "";
  EXPECT_EQ(FormatRoute(storage), "host1");

  MigrationRecord done = m;
  done.state = "completed";
  done.result = ResultRecord{.total_ms = 4200,
                             .bytes_sent = 1ull << 30,
                             .qemu_downtime_ms = 35,
                             .guest_downtime_ms = 120,
                             .notes = {"downtime 300 -> 600 ms"}};
  EventRecord e;
  e.seq = 1;
  e.kind = "state";
  e.message = "running";
  std::string d = FormatMigrationDetails(done, {e}, 2'000'000);
  EXPECT_NE(d.find("total time:     4.2 s"), std::string::npos) << d;
  EXPECT_NE(d.find("QEMU downtime:  35 ms"), std::string::npos) << d;
  EXPECT_NE(d.find("guest downtime: 120 ms"), std::string::npos) << d;
  EXPECT_NE(d.find("bytes sent:     1.00 GiB (1073741824 bytes)"), std::string::npos) << d;
  EXPECT_NE(d.find("note:           downtime 300 -> 600 ms"), std::string::npos) << d;
  EXPECT_NE(d.find("state     running"), std::string::npos) << d;
  EXPECT_EQ(FormatOutcome(done),
            "completed in 4.2 s, QEMU downtime 35 ms, guest downtime 120 ms, 1.00 GiB sent");
}

TEST(ApiFormatTest, ProgressLineHasEveryFigure) {
  std::string line = FormatProgressLine(Running());
  EXPECT_EQ(line,
            "g1 converging 50.0%  512.00 MiB / 1.00 GiB  20.00 MiB/s  ETA 0:25  "
            "dirty 3.00 MiB/s  downtime ≤ 300 ms  pass 2");
}

TEST(ApiFormatTest, ChecksAndExitCodes) {
  std::vector<CheckRecord> checks = {{"", "memory", true, "enough"},
                                     {"g1", "cpu_compatible", false, "host2 lacks avx512"}};
  EXPECT_EQ(FormatChecks(checks, false), "✗ g1: cpu_compatible: host2 lacks avx512\n");
  EXPECT_EQ(FormatChecks(checks, true),
            "✓ memory: enough\n✗ g1: cpu_compatible: host2 lacks avx512\n");

  MigrationRecord m = Running();
  m.state = "completed";
  EXPECT_EQ(ExitCodeForOutcome(m), 0);
  m.state = "cancelled";
  EXPECT_EQ(ExitCodeForOutcome(m), ExitCodeFor(ErrorCode::kCancelled));
  m.state = "failed";
  m.error = ErrorRecord{"io", "agent restarted during the job"};
  EXPECT_EQ(ExitCodeForOutcome(m), ExitCodeFor(ErrorCode::kIo));
  m.error = ErrorRecord{"something_new", "?"};
  EXPECT_EQ(ExitCodeForOutcome(m), ExitCodeFor(ErrorCode::kInternal));
  m.error.reset();
  EXPECT_EQ(ExitCodeForOutcome(m), ExitCodeFor(ErrorCode::kInternal));
}

PlanStatusRecord Plan(const std::string& state) {
  PlanStatusRecord p;
  p.id = "p-1";
  p.name = "wave-1";
  p.state = state;
  p.created_at_ms = 1'000'000;
  PlanVmRecord web1;
  web1.vm = "web1";
  web1.target_name = "web1";
  web1.state = "completed";
  web1.phase = "done";
  ResultRecord r;
  r.boot = BootCheckRecord{true, true, 12'300, "login: seen"};
  web1.result = r;
  PlanVmRecord db1;
  db1.vm = "db1";
  db1.target_name = "db1-kvm";
  db1.state = "running";
  db1.phase = "copying";
  db1.progress.bytes_total = 4ull << 30;
  db1.progress.bytes_done = 1ull << 30;
  db1.progress.rate = 20ull << 20;
  p.vms = {web1, db1};
  return p;
}

TEST(ApiFormatTest, PlanPagesAndOutcomes) {
  PlanStatusRecord p = Plan("running");
  EXPECT_EQ(FormatPlanStatus(p, 61'000'000),
            "plan wave-1 (p-1): running, created 16h ago\n"
            "VM    TARGET   STATE      PHASE    DONE    RATE         BOOT CHECK\n"
            "web1  web1     completed  done     100.0%  -            ok (12.3 s)\n"
            "db1   db1-kvm  running    copying  25.0%   20.00 MiB/s  -\n"
            "web1: boot check: login: seen\n");
  EXPECT_EQ(FormatPlanProgressLine(p), "db1 copying 25.0% 20.00 MiB/s");
  EXPECT_EQ(FormatPlansTable({p}, 61'000'000),
            "NAME    ID   STATE    VMS  DONE  AGE\n"
            "wave-1  p-1  running  2    1/2   16h\n");

  p.state = "partial";
  p.vms[1].state = "failed";
  p.vms[1].error = ErrorRecord{"unsupported", "boot check: the guest\x1b[2J did not answer"};
  EXPECT_EQ(FormatBootCheck(p.vms[1]), "failed");
  EXPECT_TRUE(FormatPlanStatus(p, 0).find("db1: unsupported: boot check: the guest?[2J did") !=
              std::string::npos);
  EXPECT_EQ(FormatPlanOutcome(p), "plan wave-1 partial: 1 completed, 1 failed");
  EXPECT_EQ(ExitCodeForPlan(p), ExitCodeFor(ErrorCode::kUnsupported));
  p.vms[1].error.reset();
  EXPECT_EQ(ExitCodeForPlan(p), ExitCodeFor(ErrorCode::kInternal));
  p.vms[1].state = "cancelled";
  p.state = "cancelled";
  EXPECT_EQ(ExitCodeForPlan(p), ExitCodeFor(ErrorCode::kCancelled));
  EXPECT_EQ(ExitCodeForPlan(Plan("completed")), 0);

  PlanVmRecord plain;
  EXPECT_EQ(FormatBootCheck(plain), "-");
  plain.result = ResultRecord{};
  plain.result->boot = BootCheckRecord{true, false, -1, "no marker"};
  EXPECT_EQ(FormatBootCheck(plain), "failed");
}

TEST(ApiFormatTest, OptionValues) {
  EXPECT_EQ(*ParseBandwidth("100M"), 100ull << 20);
  EXPECT_EQ(*ParseBandwidth("1G/s"), 1ull << 30);
  EXPECT_EQ(*ParseBandwidth("0"), 0u);
  auto bad = ParseBandwidth("fast");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("--bandwidth"), std::string::npos);
  EXPECT_TRUE(CheckMigrationType("live-vsm").ok());
  EXPECT_EQ(CheckMigrationType("teleport").code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(Printable("a\x1b[2Jb\n"), "a?[2Jb?");
}

}  // namespace
}  // namespace ferry::cli
