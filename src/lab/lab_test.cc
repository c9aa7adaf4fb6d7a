// The real lab end to end: two libvirt hosts, a guest booted from the Debian kernel and the
// ferry_guest initramfs on a shared pool, its heartbeat and disk writer, a live migration to
// the other host (the guest-observed downtime is reported), a verify boot of its disk, and
// Down removing everything. Needs root and scripts/lab-deps (label "lab").
#include "lab/lab.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <sstream>
#include <string>
#include <vector>

#include "lab/console.h"
#include "lab/lab_command.h"
#include "lab/process.h"
#include "test_util.h"

namespace ferry::lab {
namespace {

using ferry::testing::TempDir;

// Boots are slow under TCG on a busy 2-core machine; these are ceilings, not waits.
constexpr int64_t kBootTimeoutMs = 150000;
constexpr int64_t kStepTimeoutMs = 60000;
constexpr int kAddressBase = 40;  // 127.0.0.41, .42: apart from a user's lab on .11, .12

// Takes the lab down whatever happens in the test.
struct DownGuard {
  std::string root;
  ~DownGuard() {
    if (!root.empty()) (void)Lab::Down(root);
  }
};

// Runs `ferry ARGS...` through AddLabCommand; returns the exit code.
int RunCli(std::vector<std::string> args) {
  CLI::App app{"ferry"};
  int exit_code = -1;
  AddLabCommand(app, &exit_code);
  args.insert(args.begin(), "ferry");
  std::vector<const char*> argv;
  for (const auto& a : args) argv.push_back(a.c_str());
  try {
    app.parse(static_cast<int>(argv.size()), argv.data());
  } catch (const CLI::ParseError& e) {
    return 2;
  }
  return exit_code;
}

std::vector<std::string> Words(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string w; in >> w;) out.push_back(w);
  return out;
}

int64_t MsSince(int64_t ns) { return (ConsoleWatcher::NowNs() - ns) / 1000000; }

TEST(Lab, TwoHostsBootMigrateVerifyDown) {
  TempDir tmp;
  LabConfig config;
  config.root = tmp.Join("lab");
  config.hosts = 2;
  config.address_base = kAddressBase;
  config.guest_binary = FERRY_GUEST_BINARY;
  DownGuard guard{config.root};

  const int64_t t_up = ConsoleWatcher::NowNs();
  auto up = Lab::Up(config);
  ASSERT_TRUE(up.ok()) << up.status().ToString();
  Lab& lab = **up;
  std::printf("lab up in %lld ms, accel %s\n", static_cast<long long>(MsSince(t_up)),
              lab.state().accel.c_str());
  ASSERT_TRUE(lab.state().accel == "tcg" || lab.state().accel == "kvm");

  // Two hosts, each its own hostname, host UUID and address; pools and network on both.
  for (int h = 1; h <= 2; ++h) {
    EXPECT_TRUE(lab.HostAlive(h));
    auto name = lab.Virsh(h, {"hostname"});
    ASSERT_TRUE(name.ok()) << name.status().ToString();
    EXPECT_EQ(*name, "host" + std::to_string(h) + "\n");
    auto caps = lab.Virsh(h, {"capabilities"});
    ASSERT_TRUE(caps.ok()) << caps.status().ToString();
    EXPECT_NE(caps->find("<uuid>" + lab.host(h).host_uuid + "</uuid>"), std::string::npos);
    auto pools = lab.Virsh(h, {"pool-list", "--name"});
    ASSERT_TRUE(pools.ok());
    EXPECT_EQ(Words(*pools), (std::vector<std::string>{"local", "nas1", "nas2"}));
    auto nets = lab.Virsh(h, {"net-list", "--name"});
    ASSERT_TRUE(nets.ok());
    EXPECT_EQ(Words(*nets), std::vector<std::string>{"lab"});
  }
  EXPECT_EQ(lab.host(1).uri, "qemu+tcp://127.0.0.41/system");
  EXPECT_EQ(lab.host(2).migration_uri, "tcp://127.0.0.42");
  EXPECT_NE(lab.host(1).host_uuid, lab.host(2).host_uuid);
  // The initramfs holds what the guest needs.
  auto listing = RunChecked(
      {"sh", "-c", "gzip -dc " + QuoteArg(lab.state().initrd) + " | cpio -t 2>/dev/null"}, 60000);
  ASSERT_TRUE(listing.ok()) << listing.status().ToString();
  for (const char* f : {"init", "bin/busybox", "dev/console", "etc/ferry/modules",
                        "lib/modules/virtio_blk.ko", "lib/modules/virtio_net.ko"}) {
    EXPECT_NE(listing->find(std::string(f) + "\n"), std::string::npos) << f;
  }

  // A guest on host 1, its disk on the shared pool nas1.
  GuestSpec spec;
  spec.name = "g1";
  spec.host = 1;
  spec.pool = "nas1";
  spec.disk_iops = 100;
  spec.dirty_mib = 16;  // a small working set so the migration still converges at defaults
  spec.dirty_rate_mib = 8;
  auto g1 = lab.CreateGuest(spec);
  ASSERT_TRUE(g1.ok()) << g1.status().ToString();
  ConsoleWatcher console(g1->console_log);
  console.Start();
  const int64_t t_boot = ConsoleWatcher::NowNs();
  auto ready = console.WaitForLine("FERRY-READY", kBootTimeoutMs);
  ASSERT_TRUE(ready.ok()) << ready.status().ToString();
  std::printf("g1 reached user space in %lld ms\n", static_cast<long long>(MsSince(t_boot)));
  auto disk_ok = console.WaitForLine("FERRY-DISK-OK", kStepTimeoutMs);
  ASSERT_TRUE(disk_ok.ok()) << disk_ok.status().ToString();
  EXPECT_EQ(disk_ok->text, "FERRY-DISK-OK -1");  // a fresh disk
  auto dirty = console.WaitForLine("FERRY-DIRTY-READY", kStepTimeoutMs);
  ASSERT_TRUE(dirty.ok()) << dirty.status().ToString();
  EXPECT_EQ(dirty->text, "FERRY-DIRTY-READY 16");
  ASSERT_TRUE(console.WaitForHeartbeats(100, kStepTimeoutMs).ok());
  auto running = lab.HostsRunning("g1");
  ASSERT_TRUE(running.ok());
  EXPECT_EQ(*running, std::vector<int>{1});

  // Live migration to host 2 over the explicit migration URI. The disk is on a directory
  // both hosts see but libvirt cannot tell it is shared (ext4), hence --unsafe.
  const int64_t t_mig = ConsoleWatcher::NowNs();
  auto mig = lab.Virsh(1, {"migrate", "--live", "--unsafe", "--persistent", "--undefinesource",
                           "g1", lab.host(2).uri, lab.host(2).migration_uri});
  ASSERT_TRUE(mig.ok()) << mig.status().ToString();
  const int64_t t_mig_done = ConsoleWatcher::NowNs();
  running = lab.HostsRunning("g1");
  ASSERT_TRUE(running.ok());
  EXPECT_EQ(*running, std::vector<int>{2});  // on host 2 only
  auto on1 = lab.Virsh(1, {"list", "--all", "--name"});
  ASSERT_TRUE(on1.ok());
  EXPECT_EQ(on1->find("g1"), std::string::npos) << "g1 still defined on host1: " << *on1;
  ASSERT_TRUE(console.WaitForHeartbeats(100, kStepTimeoutMs, t_mig_done).ok());
  HeartbeatStats hb = console.Heartbeats(t_mig - 1000000000);
  std::printf(
      "migration took %lld ms; heartbeats %llu..%llu, largest host-seen gap %.1f ms "
      "(guest clock gap %lld ms), %llu missing\n",
      static_cast<long long>((t_mig_done - t_mig) / 1000000),
      static_cast<unsigned long long>(hb.first_counter),
      static_cast<unsigned long long>(hb.last_counter), hb.max_gap_ns / 1e6,
      static_cast<long long>(hb.max_guest_gap_ms), static_cast<unsigned long long>(hb.missing));
  RecordProperty("max_heartbeat_gap_ms", std::to_string(hb.max_gap_ns / 1000000));
  EXPECT_EQ(hb.missing, 0u);
  EXPECT_GT(hb.last_counter, hb.first_counter + 100);
  EXPECT_LT(hb.max_gap_ns, 30LL * 1000000000) << "the guest stalled for more than 30 s";

  // The writer goes on on host 2; then the guest stops hard and a verify boot of the same
  // disk must find every block up to the last one reported durable.
  auto seq_line = console.WaitForLine("FERRY-DISK-SEQ", kStepTimeoutMs, t_mig_done);
  ASSERT_TRUE(seq_line.ok()) << seq_line.status().ToString();
  ASSERT_TRUE(lab.Virsh(2, {"destroy", "g1"}).ok());
  long long durable = -1;
  for (const auto& line : console.Lines()) {
    long long seq;
    if (std::sscanf(line.text.c_str(), "FERRY-DISK-SEQ %lld", &seq) == 1) durable = seq;
  }
  ASSERT_GT(durable, 0);
  // The verify boot uses a plain copy of the disk dropped into host 2's local pool folder
  // behind libvirt's back (as a cold migration does): the lab must still find the volume.
  std::filesystem::copy_file(g1->disk_path, lab.host(2).local_pool_dir + "/g1copy.qcow2");
  GuestSpec verify;
  verify.name = "g1verify";
  verify.host = 2;
  verify.pool = "local";
  verify.volume = "g1copy.qcow2";
  verify.disk_mode = DiskMode::kVerify;
  auto gv = lab.CreateGuest(verify);
  ASSERT_TRUE(gv.ok()) << gv.status().ToString();
  ConsoleWatcher vconsole(gv->console_log);
  vconsole.Start();
  auto verdict = vconsole.WaitForLine("FERRY-DISK-", kBootTimeoutMs);
  ASSERT_TRUE(verdict.ok()) << verdict.status().ToString();
  long long found = -2;
  ASSERT_EQ(std::sscanf(verdict->text.c_str(), "FERRY-DISK-OK %lld", &found), 1) << verdict->text;
  EXPECT_GE(found, durable);
  std::printf("verify boot: %s (last reported durable %lld)\n", verdict->text.c_str(), durable);

  // `ferry lab status` and `ferry lab down` (the CLI hook, run in this process).
  std::vector<pid_t> daemons = {lab.host(1).libvirtd_pid, lab.host(2).libvirtd_pid};
  const std::string bridge = lab.state().bridge;
  EXPECT_EQ(RunCli({"lab", "status", "--root", config.root, "--output", "json"}), 0);
  ::testing::internal::CaptureStdout();
  int status_rc = RunCli({"lab", "status", "--root", config.root});
  std::string status_text = ::testing::internal::GetCapturedStdout();
  EXPECT_EQ(status_rc, 0);
  EXPECT_NE(status_text.find("host2  qemu+tcp://127.0.0.42/system"), std::string::npos)
      << status_text;
  EXPECT_NE(status_text.find("guest g1verify running on host2"), std::string::npos) << status_text;
  EXPECT_NE(status_text.find("guest g1       not running"), std::string::npos) << status_text;
  // Down: no daemon, no QEMU, no bridge, no folder.
  ASSERT_EQ(RunCli({"lab", "down", "--root", config.root}), 0);
  for (pid_t pid : daemons) EXPECT_FALSE(ProcessMatches(pid, "libvirtd")) << pid;
  EXPECT_TRUE(FindProcesses(config.root + "/").empty());
  EXPECT_FALSE(std::filesystem::exists(config.root));
  auto link = RunProcess({"ip", "link", "show", bridge}, 10000);
  ASSERT_TRUE(link.ok());
  EXPECT_NE(link->exit_code, 0) << "bridge " << bridge << " still there";
  // Down twice is fine; a folder that is not a lab is refused.
  EXPECT_TRUE(Lab::Down(config.root).ok());
  EXPECT_EQ(Lab::Down(tmp.path()).code(), ErrorCode::kInvalidArgument);
}

}  // namespace
}  // namespace ferry::lab
