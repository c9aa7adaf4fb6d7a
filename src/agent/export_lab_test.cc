// The source side of a cold migration on the real lab: the ferry-agent binary on a libvirtd
// host with a running heartbeat guest (disk in the host's "local" pool) and a share folder.
// Through AgentClient only: the share and the guest's description; an export without
// force_shutdown that times out (failed, the guest left running); an export that shuts the
// guest down (ACPI, then a forced power-off after a short timeout: the lab guest may ignore
// ACPI), serves its disk over NBD identical to the file (qemu-img compare) and hashes it as
// HashChunks does; an agent restart that serves the export again on a new port; and the close
// with restore_power that starts the guest again (heartbeats resume). Needs root and
// scripts/lab-deps (label "lab").
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "api/agent_client.h"
#include "disk/engine/chunk_hash.h"
#include "disk/image.h"
#include "lab/console.h"
#include "lab/lab.h"
#include "lab/process.h"
#include "test_util.h"

namespace ferry::agent {
namespace {

using api::AgentClient;
using lab::Lab;
using namespace std::chrono_literals;

constexpr int kAddressBase = 110;  // 127.0.0.111: apart from other labs' bases
constexpr int kAgentPort = 7801;
constexpr char kToken[] = "lab-export-token";
constexpr int64_t kBootTimeoutMs = 150000;
constexpr auto kAgentStartTimeout = 20s;
constexpr auto kExportTimeout = 120s;

struct DownGuard {
  std::string root;
  ~DownGuard() {
    if (!root.empty()) (void)Lab::Down(root);
  }
};

// One ferry-agent child process with a share and its NBD data address.
class AgentProcess {
 public:
  AgentProcess(std::string dir, const lab::HostInfo& host, const std::string& share)
      : dir_(std::move(dir)) {
    url_ = "http://" + host.address + ":" + std::to_string(kAgentPort);
    config_path_ = dir_ + "/" + host.name + ".json";
    std::ofstream(config_path_) << "{\"listen\": \"" << host.address << ":" << kAgentPort
                                << "\", \"token\": \"" << kToken << "\", \"libvirt_uri\": \""
                                << host.uri << "\", \"migration_uri\": \"" << host.migration_uri
                                << "\", \"host_id\": \"" << host.name << "\", \"state_dir\": \""
                                << dir_ << "/" << host.name << "-state\", \"shares\": "
                                << "{\"exports\": \"" << share << "\"}, \"data_address\": \""
                                << host.address << "\"}";
    log_path_ = dir_ + "/" + host.name + ".log";
  }
  ~AgentProcess() {
    if (pid_ > 0) (void)lab::TerminateProcess(pid_, 5000);
  }

  Status Start() {
    lab::SpawnOptions o;
    o.output_path = log_path_;
    FERRY_ASSIGN_OR_RETURN(pid_, lab::Spawn({FERRY_AGENT_BINARY, "--config", config_path_}, o));
    AgentClient client(url_, kToken, {.connect_timeout_ms = 500});
    const auto deadline = std::chrono::steady_clock::now() + kAgentStartTimeout;
    Status last;
    while (std::chrono::steady_clock::now() < deadline) {
      auto h = client.Health();
      if (h.ok()) return Status::Ok();
      last = h.status();
      std::this_thread::sleep_for(50ms);
    }
    return last.WithContext("ferry-agent did not come up (log " + log_path_ + ")");
  }

  // SIGTERM; the exit status (-1 if it had to be killed).
  int Stop() {
    if (pid_ <= 0) return -1;
    ::kill(pid_, SIGTERM);
    int status = 0;
    for (int i = 0; i < 400; ++i) {
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = 0;
        return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
      }
      std::this_thread::sleep_for(25ms);
    }
    (void)lab::TerminateProcess(pid_, 1000);
    pid_ = 0;
    return -1;
  }

  const std::string& url() const { return url_; }
  std::string Log() const {
    const std::vector<uint8_t> b = testing::ReadFileBytes(log_path_);
    return std::string(b.begin(), b.end());
  }

 private:
  std::string dir_, url_, config_path_, log_path_;
  pid_t pid_ = 0;
};

// Polls the export until `done` says so or the time is up; prints state changes.
template <typename Done>
ExportInfo PollExport(const AgentClient& client, const std::string& id, Done done) {
  ExportInfo last;
  const auto deadline = std::chrono::steady_clock::now() + kExportTimeout;
  std::string seen;
  while (std::chrono::steady_clock::now() < deadline) {
    auto e = client.GetExport(id);
    if (e.ok()) {
      last = *e;
      const std::string state(ExportStateName(e->state));
      if (state != seen) {
        std::printf("  export %s: %s %s\n", id.c_str(), state.c_str(),
                    e->error.ok() ? "" : e->error.ToString().c_str());
        seen = state;
      }
      if (done(*e)) return last;
    }
    std::this_thread::sleep_for(100ms);
  }
  ADD_FAILURE() << "export " << id << " stuck in " << ExportStateName(last.state);
  return last;
}

bool Hashed(const ExportInfo& e) {
  if (e.state != ExportState::kServing || e.disks.empty()) return false;
  for (const ExportDisk& d : e.disks) {
    if (d.hash_state != HashState::kDone) return false;
  }
  return true;
}

std::vector<int> RunningOn(const Lab& lab, const std::string& guest) {
  auto r = lab.HostsRunning(guest);
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  return r.ok() ? *r : std::vector<int>{};
}

TEST(ExportLab, ARunningGuestIsShutDownServedOverNbdAndStartedAgain) {
  ferry::testing::TempDir tmp;
  lab::LabConfig config;
  config.root = tmp.Join("lab");
  config.hosts = 1;
  config.address_base = kAddressBase;
  config.accel = lab::Accel::kTcg;
  config.guest_binary = FERRY_GUEST_BINARY;
  DownGuard guard{config.root};
  auto up = Lab::Up(config);
  ASSERT_TRUE(up.ok()) << up.status().ToString();
  Lab& lab = **up;

  lab::GuestSpec spec;
  spec.name = "eg1";
  spec.host = 1;
  spec.pool = "local";
  spec.memory_mib = 128;
  // A guest that ignores the power button, as a hung OS does: the export without force must
  // give up and leave it running, the one with force must power it off.
  spec.extra_cmdline = "ferry.power_button=ignore";
  auto guest = lab.CreateGuest(spec);
  ASSERT_TRUE(guest.ok()) << guest.status().ToString();
  lab::ConsoleWatcher console(guest->console_log);
  console.Start();

  const std::string share = tmp.Join("share");
  std::filesystem::create_directories(share);
  auto made = testing::Run("qemu-img create -q -f qcow2 " +
                           testing::ShellQuote(share + "/s1.qcow2") + " 16M");
  ASSERT_EQ(made.exit_code, 0) << made.output;

  AgentProcess agent(tmp.path(), lab.host(1), share);
  Status started = agent.Start();
  ASSERT_TRUE(started.ok()) << started.ToString();
  AgentClient client(agent.url(), kToken);

  // The share and the guest as a cold migration sees them.
  auto shares = client.ListShares();
  ASSERT_TRUE(shares.ok()) << shares.status().ToString();
  ASSERT_EQ(shares->size(), 1u);
  EXPECT_EQ((*shares)[0].path, share);
  auto listing = client.ListShareVms("exports");
  ASSERT_TRUE(listing.ok()) << listing.status().ToString();
  ASSERT_EQ(listing->vms.size(), 1u);
  EXPECT_EQ(listing->vms[0].vm.disks[0].capacity_bytes, 16u << 20);

  ASSERT_TRUE(console.WaitForHeartbeats(20, kBootTimeoutMs).ok()) << "guest never booted";
  auto described = client.DescribeVm("eg1");
  ASSERT_TRUE(described.ok()) << described.status().ToString();
  EXPECT_TRUE(described->running);
  EXPECT_EQ(described->platform, sources::Platform::kKvm);
  ASSERT_EQ(described->disks.size(), 1u);
  EXPECT_EQ(described->disks[0].file, guest->disk_path);
  EXPECT_EQ(described->disks[0].datastore, "local");
  EXPECT_FALSE(described->direct_boot.kernel.empty());  // the lab guest boots a kernel file

  // Without force_shutdown and no time to shut down: failed, the guest still runs.
  ExportSpec no_force;
  no_force.id = "x-noforce";
  no_force.vm = "eg1";
  no_force.shutdown_timeout_ms = 0;
  no_force.force_shutdown = false;
  ASSERT_TRUE(client.CreateExport(no_force).ok());
  ExportInfo refused = PollExport(
      client, "x-noforce", [](const ExportInfo& e) { return e.state == ExportState::kFailed; });
  EXPECT_EQ(refused.error.code(), ErrorCode::kFailedPrecondition);
  EXPECT_EQ(refused.error.message(),
            "eg1 did not shut down within 0 s and force_shutdown is off; it is still running");
  auto ignored = console.WaitForLine("FERRY-POWER-IGNORED", 10000);
  EXPECT_TRUE(ignored.ok()) << "the guest never saw the shutdown request: "
                            << ignored.status().ToString();
  EXPECT_EQ(RunningOn(lab, "eg1"), std::vector<int>{1});
  ASSERT_TRUE(client.CloseExport("x-noforce", true).ok());
  EXPECT_EQ(RunningOn(lab, "eg1"), std::vector<int>{1});

  // The real export: ACPI, ignored, so powered off after 3 s.
  ExportSpec spec_export;
  spec_export.id = "x-eg1";
  spec_export.vm = "eg1";
  spec_export.shutdown_timeout_ms = 3000;
  spec_export.force_shutdown = true;
  auto created = client.CreateExport(spec_export);
  ASSERT_TRUE(created.ok()) << created.status().ToString();
  ExportInfo e = PollExport(client, "x-eg1", Hashed);
  ASSERT_TRUE(Hashed(e)) << e.error.ToString() << "\n" << agent.Log();
  EXPECT_TRUE(e.was_running);
  EXPECT_TRUE(RunningOn(lab, "eg1").empty());
  ASSERT_EQ(e.disks.size(), 1u);
  const ExportDisk& disk = e.disks[0];
  EXPECT_EQ(disk.uri.rfind("nbd://" + lab.host(1).address + ":", 0), 0u) << disk.uri;
  EXPECT_EQ(disk.format, "qcow2");
  auto cmp = testing::Run("qemu-img compare -f raw -F qcow2 " + testing::ShellQuote(disk.uri) +
                          " " + testing::ShellQuote(guest->disk_path) + " 2>&1");
  EXPECT_EQ(cmp.exit_code, 0) << cmp.output;
  {
    auto source = OpenImage(guest->disk_path);
    ASSERT_TRUE(source.ok()) << source.status().ToString();
    auto hashes = HashChunks(**source, 4 << 20);
    ASSERT_TRUE(hashes.ok()) << hashes.status().ToString();
    EXPECT_EQ(disk.chunk_hashes, *hashes);
    EXPECT_EQ(disk.size, (*source)->size());
  }
  auto served = client.GetExport("x-eg1");
  ASSERT_TRUE(served.ok());
  EXPECT_GT(served->bytes_served, 0u);

  // An agent restart: the export is served again on a new port, the guest stays off.
  EXPECT_EQ(agent.Stop(), 0);
  ASSERT_TRUE(agent.Start().ok());
  ExportInfo again = PollExport(client, "x-eg1", Hashed);
  ASSERT_TRUE(Hashed(again)) << again.error.ToString();
  EXPECT_TRUE(again.was_running);
  EXPECT_NE(again.disks[0].uri, disk.uri);
  EXPECT_EQ(again.disks[0].chunk_hashes, disk.chunk_hashes);
  EXPECT_TRUE(RunningOn(lab, "eg1").empty());
  cmp = testing::Run("qemu-img compare -f raw -F qcow2 " + testing::ShellQuote(again.disks[0].uri) +
                     " " + testing::ShellQuote(guest->disk_path) + " 2>&1");
  EXPECT_EQ(cmp.exit_code, 0) << cmp.output;

  // Close with restore_power: the guest runs again and its heartbeat comes back.
  const int64_t before_close = lab::ConsoleWatcher::NowNs();
  auto closed = client.CloseExport("x-eg1", true);
  ASSERT_TRUE(closed.ok()) << closed.status().ToString();
  EXPECT_EQ(closed->state, ExportState::kClosed);
  EXPECT_NE(
      testing::Run("nbdinfo --size " + testing::ShellQuote(again.disks[0].uri) + " 2>&1").exit_code,
      0);
  EXPECT_EQ(RunningOn(lab, "eg1"), std::vector<int>{1});
  EXPECT_TRUE(console.WaitForHeartbeats(20, kBootTimeoutMs, before_close).ok())
      << "no heartbeat after restore_power";
  EXPECT_EQ(agent.Stop(), 0);
}

}  // namespace
}  // namespace ferry::agent
