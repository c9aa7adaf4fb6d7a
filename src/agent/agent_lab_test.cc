// The real ferry-agent binary on the real lab: one agent per libvirtd host (two hosts), a
// heartbeat guest on host1 with its disk on the shared pool nas1. Through AgentClient only:
// inventory (guest with disks, NICs; pools; networks), the guest's XML and <cpu>, the CPU and
// platform checks of the guest against host2, a live migration job that moves the guest to
// host2 (then it runs on host2 only), idempotent restart of the job, and an agent restart
// (SIGTERM exits 0; the new process still answers for the finished job). Needs root and
// scripts/lab-deps (label "lab").
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "api/agent_client.h"
#include "lab/console.h"
#include "lab/lab.h"
#include "lab/process.h"
#include "test_util.h"

namespace ferry::agent {
namespace {

using api::AgentClient;
using api::AgentJob;
using api::AgentJobState;
using lab::Lab;
using namespace std::chrono_literals;

constexpr int kAddressBase = 80;  // 127.0.0.81, .82: apart from other labs' bases
constexpr int kAgentPort = 7801;
constexpr char kToken[] = "lab-agent-token";
constexpr int64_t kBootTimeoutMs = 150000;
constexpr auto kAgentStartTimeout = 20s;
constexpr auto kJobTimeout = 180s;

struct DownGuard {
  std::string root;
  ~DownGuard() {
    if (!root.empty()) (void)Lab::Down(root);
  }
};

// One ferry-agent child process.
class AgentProcess {
 public:
  AgentProcess(std::string dir, const lab::HostInfo& host) : dir_(std::move(dir)) {
    url_ = "http://" + host.address + ":" + std::to_string(kAgentPort);
    config_path_ = dir_ + "/" + host.name + ".json";
    std::ofstream(config_path_) << "{\"listen\": \"" << host.address << ":" << kAgentPort
                                << "\", \"token\": \"" << kToken << "\", \"libvirt_uri\": \""
                                << host.uri << "\", \"migration_uri\": \"" << host.migration_uri
                                << "\", \"host_id\": \"" << host.name << "\", \"state_dir\": \""
                                << dir_ << "/" << host.name << "-state\"}";
    log_path_ = dir_ + "/" + host.name + ".log";
  }
  ~AgentProcess() {
    if (pid_ > 0) (void)lab::TerminateProcess(pid_, 5000);
  }

  // Starts the binary and waits until it answers /health.
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

  // SIGTERM; returns the exit status (-1 if it had to be killed or did not exit normally).
  int Stop() {
    if (pid_ <= 0) return -1;
    ::kill(pid_, SIGTERM);
    int status = 0;
    for (int i = 0; i < 200; ++i) {
      const pid_t r = ::waitpid(pid_, &status, WNOHANG);
      if (r == pid_) {
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

 private:
  std::string dir_;
  std::string url_;
  std::string config_path_;
  std::string log_path_;
  pid_t pid_ = 0;
};

const hypervisor::VmInfo* FindVm(const hypervisor::Inventory& inv, const std::string& name) {
  for (const auto& vm : inv.vms) {
    if (vm.name == name) return &vm;
  }
  return nullptr;
}

TEST(AgentLab, InventoryChecksAndALiveMigrationJob) {
  ferry::testing::TempDir tmp;
  lab::LabConfig config;
  config.root = tmp.Join("lab");
  config.hosts = 2;
  config.address_base = kAddressBase;
  config.accel = lab::Accel::kTcg;
  config.guest_binary = FERRY_GUEST_BINARY;
  DownGuard guard{config.root};
  auto up = Lab::Up(config);
  ASSERT_TRUE(up.ok()) << up.status().ToString();
  Lab& lab = **up;

  lab::GuestSpec spec;
  spec.name = "ag1";
  spec.host = 1;
  spec.pool = "nas1";
  spec.memory_mib = 256;
  auto guest = lab.CreateGuest(spec);
  ASSERT_TRUE(guest.ok()) << guest.status().ToString();
  lab::ConsoleWatcher console(guest->console_log);
  console.Start();

  AgentProcess agent1(tmp.path(), lab.host(1));
  AgentProcess agent2(tmp.path(), lab.host(2));
  Status a1 = agent1.Start();
  ASSERT_TRUE(a1.ok()) << a1.ToString();
  Status a2 = agent2.Start();
  ASSERT_TRUE(a2.ok()) << a2.ToString();
  AgentClient c1(agent1.url(), kToken);
  AgentClient c2(agent2.url(), kToken);

  auto health = c1.Health();
  ASSERT_TRUE(health.ok()) << health.status().ToString();
  EXPECT_EQ(health->host_id, "host1");
  EXPECT_EQ(health->libvirt_uri, lab.host(1).uri);
  EXPECT_EQ(AgentClient(agent1.url(), "wrong").Health().status().code(),
            ErrorCode::kPermissionDenied);

  // Inventory: the guest with its disk and NIC, the pools, the network.
  auto inv = c1.Inventory();
  ASSERT_TRUE(inv.ok()) << inv.status().ToString();
  EXPECT_EQ(inv->migration_uri, lab.host(1).migration_uri);
  EXPECT_EQ(inv->inventory.host.hostname, "host1");
  const hypervisor::VmInfo* vm = FindVm(inv->inventory, "ag1");
  ASSERT_NE(vm, nullptr);
  EXPECT_EQ(vm->state, hypervisor::VmState::kRunning);
  ASSERT_EQ(vm->disks.size(), 1u);
  EXPECT_EQ(vm->disks[0].pool, "nas1");
  EXPECT_EQ(vm->disks[0].source_path, guest->disk_path);
  ASSERT_EQ(vm->nics.size(), 1u);
  EXPECT_EQ(vm->nics[0].mac, guest->mac);
  EXPECT_EQ(inv->inventory.pools.size(), 3u);
  ASSERT_EQ(inv->inventory.networks.size(), 1u);
  EXPECT_EQ(inv->inventory.networks[0].name, "lab");
  auto inv2 = c2.Inventory();
  ASSERT_TRUE(inv2.ok()) << inv2.status().ToString();
  EXPECT_EQ(FindVm(inv2->inventory, "ag1"), nullptr);
  EXPECT_EQ(c1.GetVm("no-such-vm").status().code(), ErrorCode::kNotFound);
  auto one = c1.GetVm("ag1");
  ASSERT_TRUE(one.ok()) << one.status().ToString();
  EXPECT_EQ(one->uuid, vm->uuid);

  // The migratable XML and its <cpu>; the guest's CPU and platform fit host2.
  auto xml = c1.GetVmXml("ag1");
  ASSERT_TRUE(xml.ok()) << xml.status().ToString();
  EXPECT_NE(xml->xml.find("<name>ag1</name>"), std::string::npos);
  std::printf("ag1 cpu_xml: %s\n", xml->cpu_xml.c_str());
  const std::string cpu = xml->cpu_xml.empty() ? xml->xml : xml->cpu_xml;
  auto check = c2.CheckCpu(cpu, {vm->domain_type, vm->arch, vm->machine_type});
  ASSERT_TRUE(check.ok()) << check.status().ToString();
  EXPECT_TRUE(check->result == hypervisor::CpuCompatibility::kIdentical ||
              check->result == hypervisor::CpuCompatibility::kSuperset)
      << api::CpuCompatibilityName(check->result) << ": " << check->message;
  auto platform = c2.CheckPlatform({vm->arch, vm->machine_type, vm->firmware});
  ASSERT_TRUE(platform.ok()) << platform.status().ToString();
  EXPECT_TRUE(platform->machine_ok) << platform->message;
  EXPECT_TRUE(platform->firmware_ok) << platform->message;
  auto bad_machine = c2.CheckPlatform({vm->arch, "pc-q35-99.0", hypervisor::Firmware::kBios});
  ASSERT_TRUE(bad_machine.ok());
  EXPECT_FALSE(bad_machine->machine_ok);
  EXPECT_NE(bad_machine->message.find("pc-q35-99.0"), std::string::npos);

  // A live migration job through agent1's API.
  ASSERT_TRUE(console.WaitForHeartbeats(20, kBootTimeoutMs).ok()) << "guest never booted";
  MigrationJobSpec job_spec;
  job_spec.id = "agent-live-ag1";
  job_spec.kind = MigrationKind::kLive;
  job_spec.vm = "ag1";
  job_spec.target_uri = lab.host(2).uri;
  job_spec.target_migration_uri = lab.host(2).migration_uri;
  auto started = c1.StartJob(job_spec);
  ASSERT_TRUE(started.ok()) << started.status().ToString();
  EXPECT_EQ(started->state, AgentJobState::kRunning);

  AgentJob job = *started;
  const auto deadline = std::chrono::steady_clock::now() + kJobTimeout;
  std::string last_phase;
  while (!api::IsFinal(job.state) && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(200ms);
    auto polled = c1.GetJob(job_spec.id);
    ASSERT_TRUE(polled.ok()) << polled.status().ToString();
    job = *polled;
    if (job.progress.phase != last_phase) {
      last_phase = job.progress.phase;
      std::printf("  phase %s, %llu/%llu bytes\n", last_phase.c_str(),
                  static_cast<unsigned long long>(job.progress.bytes_done),
                  static_cast<unsigned long long>(job.progress.bytes_total));
    }
  }
  for (const auto& e : job.events) std::printf("  [%s] %s\n", e.kind.c_str(), e.message.c_str());
  ASSERT_EQ(job.state, AgentJobState::kSucceeded) << job.error.ToString();
  ASSERT_TRUE(job.result.has_value());
  std::printf("live ag1 via agent: %lld ms, qemu downtime %lld ms, guest downtime %lld ms\n",
              static_cast<long long>(job.result->total_ms),
              static_cast<long long>(job.result->qemu_downtime_ms),
              static_cast<long long>(job.result->guest_downtime_ms));
  auto running_on = lab.HostsRunning("ag1");
  ASSERT_TRUE(running_on.ok()) << running_on.status().ToString();
  EXPECT_EQ(*running_on, std::vector<int>{2});
  const int64_t after = lab::ConsoleWatcher::NowNs();
  EXPECT_TRUE(console.WaitForHeartbeats(20, 60000, after).ok()) << "no heartbeat on host2";

  // Agents see the move.
  auto inv_after = c2.Inventory();
  ASSERT_TRUE(inv_after.ok());
  const hypervisor::VmInfo* moved = FindVm(inv_after->inventory, "ag1");
  ASSERT_NE(moved, nullptr);
  EXPECT_EQ(moved->state, hypervisor::VmState::kRunning);
  auto gone = c1.GetVm("ag1");
  EXPECT_EQ(gone.status().code(), ErrorCode::kNotFound) << gone.status().ToString();

  // Retrying the start answers the finished job; nothing runs again.
  auto retry = c1.StartJob(job_spec);
  ASSERT_TRUE(retry.ok()) << retry.status().ToString();
  EXPECT_EQ(retry->state, AgentJobState::kSucceeded);
  EXPECT_EQ(retry->started_at_ms, job.started_at_ms);

  // SIGTERM: exit 0; a new agent process still answers for the job.
  EXPECT_EQ(agent1.Stop(), 0);
  ASSERT_TRUE(agent1.Start().ok());
  auto reloaded = c1.GetJob(job_spec.id);
  ASSERT_TRUE(reloaded.ok()) << reloaded.status().ToString();
  EXPECT_EQ(reloaded->state, AgentJobState::kSucceeded);
  ASSERT_TRUE(reloaded->result.has_value());
  EXPECT_EQ(reloaded->result->total_ms, job.result->total_ms);

  EXPECT_EQ(agent1.Stop(), 0);
  EXPECT_EQ(agent2.Stop(), 0);
}

}  // namespace
}  // namespace ferry::agent
