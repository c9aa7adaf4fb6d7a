// RunMigrationJob on the real lab (two libvirt hosts, TCG guests): every transfer type on
// real guests. g1 (heartbeat + disk writer, disk on nas1) goes live host1 -> host2, has its
// disk moved live nas1 -> nas2, goes back by quick migration, is stopped hard, re-registered on
// host2 and booted there: its writer must verify every block. g2 (disk in host1's local pool)
// moves with live-vsm and its disk writer verifies after a restart. g3 (256 MiB, a 64 MiB
// working set dirtied as fast as the guest can) is refused under an impossible budget, cancelled
// mid-way, and then migrated by the policy. Needs root and scripts/lab-deps (label "lab").
#include <gtest/gtest.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <mutex>
#include <string>
#include <vector>

#include "agent/migration_job.h"
#include "lab/console.h"
#include "lab/lab.h"
#include "test_util.h"

namespace ferry::agent {
namespace {

using lab::ConsoleWatcher;
using lab::Lab;

constexpr int kAddressBase = 70;  // 127.0.0.71, .72
constexpr int64_t kBootTimeoutMs = 150000;
constexpr int64_t kStepTimeoutMs = 60000;
constexpr uint64_t kMiB = 1024 * 1024;

struct DownGuard {
  std::string root;
  ~DownGuard() {
    if (!root.empty()) (void)Lab::Down(root);
  }
};

// Records events; cancels itself `cancel_after_ms` after the copy phase began.
class TestContext : public JobContext {
 public:
  explicit TestContext(std::string name, int64_t cancel_after_ms = -1)
      : name_(std::move(name)), cancel_after_ms_(cancel_after_ms) {}
  bool cancelled() const override {
    if (cancel_after_ms_ < 0 || first_progress_ns_ == 0) return false;
    return ConsoleWatcher::NowNs() - first_progress_ns_ > cancel_after_ms_ * 1000000;
  }
  void Progress(const JobProgress& p) override {
    std::lock_guard<std::mutex> l(mu_);
    ++progress_count_;
    last_ = p;
  }
  void Event(std::string_view kind, std::string_view message) override {
    std::lock_guard<std::mutex> l(mu_);
    if (first_progress_ns_ == 0 && kind == "phase" && message == "copying") {
      first_progress_ns_ = ConsoleWatcher::NowNs();
    }
    std::printf("  %6.1f s [%s] %.*s: %.*s\n", (ConsoleWatcher::NowNs() - t0_ns_) / 1e9,
                name_.c_str(), static_cast<int>(kind.size()), kind.data(),
                static_cast<int>(message.size()), message.data());
    events_.push_back(std::string(kind) + ": " + std::string(message));
  }
  int progress_count() const {
    std::lock_guard<std::mutex> l(mu_);
    return progress_count_;
  }
  bool HasEvent(const std::string& text) const {
    std::lock_guard<std::mutex> l(mu_);
    for (const auto& e : events_) {
      if (e.find(text) != std::string::npos) return true;
    }
    return false;
  }

 private:
  const std::string name_;
  const int64_t cancel_after_ms_;
  const int64_t t0_ns_ = ConsoleWatcher::NowNs();
  mutable std::mutex mu_;
  std::atomic<int64_t> first_progress_ns_{0};
  int progress_count_ = 0;
  JobProgress last_;
  std::vector<std::string> events_;
};

void PrintResult(const std::string& what, const JobResult& r) {
  std::printf(
      "%s: %lld ms, %llu bytes, qemu downtime %lld ms, guest downtime %lld ms\n", what.c_str(),
      static_cast<long long>(r.total_ms), static_cast<unsigned long long>(r.bytes_sent),
      static_cast<long long>(r.qemu_downtime_ms), static_cast<long long>(r.guest_downtime_ms));
}

long long LastDurableSeq(const ConsoleWatcher& c) {
  long long durable = -1;
  for (const auto& line : c.Lines()) {
    long long seq;
    if (std::sscanf(line.text.c_str(), "FERRY-DISK-SEQ %lld", &seq) == 1) durable = seq;
  }
  return durable;
}

bool DefinedOn(const Lab& lab, int host, const std::string& vm) {
  auto list = lab.Virsh(host, {"list", "--all", "--name"});
  if (!list.ok()) return false;
  return ("\n" + *list).find("\n" + vm + "\n") != std::string::npos;
}

TEST(MigrationJobLab, EveryTransferType) {
  ferry::testing::TempDir tmp;
  lab::LabConfig config;
  config.root = tmp.Join("lab");
  config.hosts = 2;
  config.address_base = kAddressBase;
  config.accel = lab::Accel::kTcg;
  config.guest_binary = FERRY_GUEST_BINARY;
  DownGuard guard{config.root};
  const int64_t t_start = ConsoleWatcher::NowNs();
  auto since = [&] { return (ConsoleWatcher::NowNs() - t_start) / 1e9; };
  auto up = Lab::Up(config);
  ASSERT_TRUE(up.ok()) << up.status().ToString();
  Lab& lab = **up;
  const std::string h1 = lab.host(1).uri, h2 = lab.host(2).uri;

  // Three guests booting at once.
  lab::GuestSpec s1;
  s1.name = "g1";
  s1.pool = "nas1";
  s1.dirty_mib = 16;
  s1.dirty_rate_mib = 8;
  s1.memory_mib = 128;  // less to copy and save: the suite stays near 4 minutes
  lab::GuestSpec s2;
  s2.name = "g2";
  s2.pool = "local";
  s2.memory_mib = 128;
  lab::GuestSpec s3;
  s3.name = "g3";
  s3.pool = "nas1";
  s3.memory_mib = 256;
  s3.dirty_mib = 64;
  s3.dirty_rate_mib = 0;  // as fast as the guest can
  s3.disk_mode = lab::DiskMode::kNone;
  auto g1 = lab.CreateGuest(s1);
  ASSERT_TRUE(g1.ok()) << g1.status().ToString();
  auto g2 = lab.CreateGuest(s2);
  ASSERT_TRUE(g2.ok()) << g2.status().ToString();
  auto g3 = lab.CreateGuest(s3);
  ASSERT_TRUE(g3.ok()) << g3.status().ToString();
  ConsoleWatcher c1(g1->console_log), c2(g2->console_log), c3(g3->console_log);
  c1.Start();
  c2.Start();
  c3.Start();
  for (ConsoleWatcher* c : {&c1, &c2}) {
    auto ok = c->WaitForLine("FERRY-DISK-OK", kBootTimeoutMs);
    ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  }
  ASSERT_TRUE(c3.WaitForLine("FERRY-DIRTY-READY", kBootTimeoutMs).ok());
  ASSERT_TRUE(c1.WaitForLine("FERRY-DIRTY-READY", kBootTimeoutMs).ok());
  std::printf("lab up and three guests booted at %.1f s\n", since());

  MigrationJobSpec base;
  base.source_uri = h1;
  base.target_uri = h2;
  base.target_migration_uri = lab.host(2).migration_uri;

  // --- live: g1 host1 -> host2 -----------------------------------------------------------
  {
    MigrationJobSpec spec = base;
    spec.id = "live-g1";
    spec.vm = "g1";
    TestContext ctx("live g1");
    auto r = RunMigrationJob(spec, ctx);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    PrintResult("live g1", *r);
    EXPECT_EQ(*lab.HostsRunning("g1"), std::vector<int>{2});
    EXPECT_FALSE(DefinedOn(lab, 1, "g1"));
    EXPECT_GE(r->qemu_downtime_ms, 0);
    EXPECT_GE(r->guest_downtime_ms, 0);
    EXPECT_LT(r->guest_downtime_ms, 10000);
    EXPECT_TRUE(ctx.HasEvent("128 MiB/s cap lifted"));
    EXPECT_TRUE(ctx.HasEvent("initial downtime limit 150 ms"));
    const int64_t t = ConsoleWatcher::NowNs();
    EXPECT_TRUE(c1.WaitForHeartbeats(50, kStepTimeoutMs, t).ok()) << "no heartbeat on host2";
  }

  // --- live-storage: g1's disk nas1 -> nas2 on host2 -------------------------------------
  std::string g1_disk;
  {
    MigrationJobSpec spec;
    spec.id = "storage-g1";
    spec.kind = MigrationKind::kLiveStorage;
    spec.vm = "g1";
    spec.source_uri = h2;
    spec.target_pool = "nas2";
    TestContext ctx("live-storage g1");
    auto r = RunMigrationJob(spec, ctx);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    PrintResult("live-storage g1", *r);
    ASSERT_EQ(r->disks.size(), 1u);
    EXPECT_TRUE(r->disks[0].verified);
    EXPECT_EQ(r->disks[0].from, g1->disk_path);
    EXPECT_EQ(r->disks[0].to, lab.state().root + "/nas2/g1.qcow2");
    g1_disk = r->disks[0].to;
    EXPECT_FALSE(std::filesystem::exists(g1->disk_path)) << "old copy not deleted";
    EXPECT_GT(ctx.progress_count(), 0);
    auto xml = lab.Virsh(2, {"dumpxml", "--inactive", "g1"});
    ASSERT_TRUE(xml.ok());
    EXPECT_NE(xml->find(g1_disk), std::string::npos) << *xml;
    auto live_xml = lab.Virsh(2, {"dumpxml", "g1"});
    ASSERT_TRUE(live_xml.ok());
    EXPECT_NE(live_xml->find(g1_disk), std::string::npos);
    EXPECT_EQ(*lab.HostsRunning("g1"), std::vector<int>{2});
    const int64_t t = ConsoleWatcher::NowNs();
    EXPECT_TRUE(c1.WaitForLine("FERRY-DISK-SEQ", kStepTimeoutMs, t).ok());
  }

  // --- quick: g1 host2 -> host1 ----------------------------------------------------------
  {
    MigrationJobSpec spec;
    spec.id = "quick-g1";
    spec.kind = MigrationKind::kQuick;
    spec.vm = "g1";
    spec.source_uri = h2;
    spec.target_uri = h1;
    TestContext ctx("quick g1");
    auto r = RunMigrationJob(spec, ctx);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    PrintResult("quick g1", *r);
    EXPECT_EQ(*lab.HostsRunning("g1"), std::vector<int>{1});
    EXPECT_TRUE(DefinedOn(lab, 1, "g1"));
    EXPECT_FALSE(DefinedOn(lab, 2, "g1"));
    EXPECT_GT(r->guest_downtime_ms, 0);
    const int64_t t = ConsoleWatcher::NowNs();
    EXPECT_TRUE(c1.WaitForHeartbeats(50, kStepTimeoutMs, t).ok()) << "no heartbeat after restore";
    EXPECT_TRUE(c1.WaitForLine("FERRY-DISK-SEQ", kStepTimeoutMs, t).ok());
  }

  // --- live-vsm: g2 host1 (local) -> host2 (local) ----------------------------------------
  {
    MigrationJobSpec spec = base;
    spec.id = "vsm-g2";
    spec.kind = MigrationKind::kLiveVsm;
    spec.vm = "g2";
    spec.target_pool = "local";
    TestContext ctx("live-vsm g2");
    auto r = RunMigrationJob(spec, ctx);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    PrintResult("live-vsm g2", *r);
    EXPECT_EQ(*lab.HostsRunning("g2"), std::vector<int>{2});
    EXPECT_FALSE(DefinedOn(lab, 1, "g2"));
    ASSERT_EQ(r->disks.size(), 1u);
    EXPECT_EQ(r->disks[0].to, lab.host(2).local_pool_dir + "/g2.qcow2");
    EXPECT_FALSE(std::filesystem::exists(g2->disk_path)) << "source copy not deleted";
    auto xml = lab.Virsh(2, {"dumpxml", "--inactive", "g2"});
    ASSERT_TRUE(xml.ok());
    EXPECT_NE(xml->find(r->disks[0].to), std::string::npos) << *xml;
    const int64_t t = ConsoleWatcher::NowNs();
    EXPECT_TRUE(c2.WaitForLine("FERRY-DISK-SEQ", kStepTimeoutMs, t).ok());
  }

  // --- g3: impossible budget, cancel, then the policy's migration --------------------------
  {
    MigrationJobSpec spec = base;
    spec.id = "impossible-g3";
    spec.vm = "g3";
    spec.bandwidth = 8 * kMiB;
    spec.max_downtime_ms = 50;
    spec.allow_auto_converge = false;
    spec.allow_postcopy = false;
    spec.timeout_ms = 6000;
    TestContext ctx("impossible g3");
    auto r = RunMigrationJob(spec, ctx);
    ASSERT_FALSE(r.ok());
    std::printf("impossible g3: %s\n", r.status().ToString().c_str());
    EXPECT_EQ(r.status().code(), ErrorCode::kUnsupported);
    EXPECT_NE(r.status().message().find("budget 50 ms"), std::string::npos);
    EXPECT_EQ(*lab.HostsRunning("g3"), std::vector<int>{1});
    EXPECT_FALSE(DefinedOn(lab, 2, "g3"));
  }
  {
    MigrationJobSpec spec = base;
    spec.id = "cancel-g3";
    spec.vm = "g3";
    spec.bandwidth = 16 * kMiB;  // the first pass alone takes ~16 s
    TestContext ctx("cancel g3", 2000);
    auto r = RunMigrationJob(spec, ctx);
    ASSERT_FALSE(r.ok());
    std::printf("cancel g3: %s\n", r.status().ToString().c_str());
    EXPECT_EQ(r.status().code(), ErrorCode::kCancelled);
    EXPECT_EQ(*lab.HostsRunning("g3"), std::vector<int>{1});
    EXPECT_FALSE(DefinedOn(lab, 2, "g3"));
    const int64_t t = ConsoleWatcher::NowNs();
    EXPECT_TRUE(c3.WaitForHeartbeats(20, kStepTimeoutMs, t).ok());
  }
  {
    MigrationJobSpec spec = base;
    spec.id = "live-g3";
    spec.vm = "g3";
    TestContext ctx("live g3");
    auto r = RunMigrationJob(spec, ctx);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    PrintResult("live g3 (64 MiB dirtied)", *r);
    for (const auto& n : r->notes) std::printf("  note: %s\n", n.c_str());
    EXPECT_EQ(*lab.HostsRunning("g3"), std::vector<int>{2});
    EXPECT_GE(r->qemu_downtime_ms, 0);
    EXPECT_GT(ctx.progress_count(), 0);
    const int64_t t = ConsoleWatcher::NowNs();
    EXPECT_TRUE(c3.WaitForHeartbeats(20, kStepTimeoutMs, t).ok());
  }

  // --- reregister: g1 stopped hard on host1, defined on host2, booted: disk verifies -------
  {
    ASSERT_TRUE(c1.WaitForLine("FERRY-DISK-SEQ", kStepTimeoutMs, ConsoleWatcher::NowNs()).ok());
    ASSERT_TRUE(lab.Virsh(1, {"destroy", "g1"}).ok());
    const long long durable = LastDurableSeq(c1);
    ASSERT_GT(durable, 0);
    MigrationJobSpec spec;
    spec.id = "rereg-g1";
    spec.kind = MigrationKind::kReregister;
    spec.vm = "g1";
    spec.source_uri = h1;
    spec.target_uri = h2;
    TestContext ctx("reregister g1");
    auto r = RunMigrationJob(spec, ctx);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_FALSE(DefinedOn(lab, 1, "g1"));
    EXPECT_TRUE(DefinedOn(lab, 2, "g1"));
    // g2 restarts too (hard stop on host2, start): its writer verifies the copied disk.
    ASSERT_TRUE(c2.WaitForLine("FERRY-DISK-SEQ", kStepTimeoutMs, ConsoleWatcher::NowNs()).ok());
    ASSERT_TRUE(lab.Virsh(2, {"destroy", "g2"}).ok());
    const long long durable2 = LastDurableSeq(c2);
    const int64_t t = ConsoleWatcher::NowNs();
    ASSERT_TRUE(lab.Virsh(2, {"start", "g1"}).ok());
    ASSERT_TRUE(lab.Virsh(2, {"start", "g2"}).ok());
    auto v1 = c1.WaitForLine("FERRY-DISK-", kBootTimeoutMs, t);
    ASSERT_TRUE(v1.ok()) << v1.status().ToString();
    long long found = -2;
    ASSERT_EQ(std::sscanf(v1->text.c_str(), "FERRY-DISK-OK %lld", &found), 1) << v1->text;
    EXPECT_GE(found, durable);
    std::printf("g1 after live, live-storage, quick, reregister: %s (durable %lld)\n",
                v1->text.c_str(), durable);
    auto v2 = c2.WaitForLine("FERRY-DISK-", kBootTimeoutMs, t);
    ASSERT_TRUE(v2.ok()) << v2.status().ToString();
    ASSERT_EQ(std::sscanf(v2->text.c_str(), "FERRY-DISK-OK %lld", &found), 1) << v2->text;
    EXPECT_GE(found, durable2);
    std::printf("g2 after live-vsm: %s (durable %lld)\n", v2->text.c_str(), durable2);
  }

  std::printf("verify boots done at %.1f s\n", since());
  EXPECT_TRUE(lab.Down().ok());
}

}  // namespace
}  // namespace ferry::agent
