// A cold migration on the real lab (two libvirtd hosts, TCG): a guest with the checksummed
// disk writer runs on host1; a real source agent (AgentService with its ExportRegistry over
// host1's libvirtd) exports it; RunColdJob on host2 copies its disk into host2's pool "local"
// as raw, verifies it against the source's hashes, defines the VM, starts it and waits for
// FERRY-READY. Then the guest on host2 verifies every block its writer wrote on host1
// (FERRY-DISK-OK), and the source is shut off and still defined on host1. Needs root and
// scripts/lab-deps (label "lab").
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

#include "agent/agent_service.h"
#include "agent/cold_job.h"
#include "agent/export_registry.h"
#include "agent/host_ops.h"
#include "api/agent_client.h"
#include "lab/console.h"
#include "lab/lab.h"
#include "test_util.h"

namespace ferry::agent {
namespace {

namespace fs = std::filesystem;
using lab::Lab;
using namespace std::chrono_literals;

constexpr int kAddressBase = 120;  // 127.0.0.121, .122: apart from other labs' bases
constexpr char kToken[] = "cold-lab-token";
constexpr int64_t kBootTimeoutMs = 150000;
constexpr uint64_t kMiB = 1 << 20;

struct DownGuard {
  std::string root;
  ~DownGuard() {
    if (!root.empty()) (void)Lab::Down(root);
  }
};

std::string ReadText(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

bool Replace(std::string& text, const std::string& from, const std::string& to) {
  const size_t at = text.find(from);
  if (at == std::string::npos) return false;
  text.replace(at, from.size(), to);
  return true;
}

class Context : public JobContext {
 public:
  bool cancelled() const override { return false; }
  void Progress(const JobProgress& p) override {
    std::lock_guard<std::mutex> lock(mu_);
    last_ = p;
  }
  void Event(std::string_view kind, std::string_view message) override {
    std::lock_guard<std::mutex> lock(mu_);
    events_ += std::string(kind) + ": " + std::string(message) + "\n";
  }
  std::string events() {
    std::lock_guard<std::mutex> lock(mu_);
    return events_;
  }

 private:
  std::mutex mu_;
  JobProgress last_;
  std::string events_;
};

TEST(ColdJobLab, KvmVmToAnotherHostBootsAndVerifiesItsDisk) {
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
  const lab::HostInfo& host1 = lab.host(1);
  const lab::HostInfo& host2 = lab.host(2);

  // The guest writes checksummed blocks to its disk on host1's local pool.
  lab::GuestSpec gs;
  gs.name = "cg1";
  gs.host = 1;
  gs.pool = "local";
  gs.disk_mib = 32;
  gs.disk_format = "qcow2";
  gs.disk_mode = lab::DiskMode::kWrite;
  gs.disk_iops = 200;
  gs.start = false;
  auto guest = lab.CreateGuest(gs);
  ASSERT_TRUE(guest.ok()) << guest.status().ToString();
  // Lab guests name their disk as a pool volume; exports take file-backed disks (what
  // DescribeLibvirtVm moves), so the guest is redefined with the same file as <disk
  // type='file'> before it starts.
  {
    std::string xml = ReadText(guest->domain_xml);
    ASSERT_TRUE(
        Replace(xml, "<disk type='volume' device='disk'>", "<disk type='file' device='disk'>"));
    const size_t from = xml.find("<source pool=");
    ASSERT_NE(from, std::string::npos) << xml;
    const size_t to = xml.find("/>", from);
    xml.replace(from, to + 2 - from, "<source file='" + guest->disk_path + "'/>");
    const std::string path = tmp.Join("cg1-file-disk.xml");
    std::ofstream(path) << xml;
    ASSERT_TRUE(lab.Virsh(1, {"undefine", "cg1"}).ok());
    auto defined = lab.Virsh(1, {"define", path});
    ASSERT_TRUE(defined.ok()) << defined.status().ToString();
    auto started = lab.Virsh(1, {"start", "cg1"});
    ASSERT_TRUE(started.ok()) << started.status().ToString();
  }
  lab::ConsoleWatcher source_console(guest->console_log);
  source_console.Start();
  auto ready = source_console.WaitForLine("FERRY-READY", kBootTimeoutMs);
  ASSERT_TRUE(ready.ok()) << ready.status().ToString();
  // Some durable blocks, so the copy has something to prove.
  auto durable = source_console.WaitForLine("FERRY-DISK-SEQ", 60000, ready->host_ns);
  ASSERT_TRUE(durable.ok()) << durable.status().ToString();

  // The source agent on host1 (in-process, real libvirt).
  AgentConfig sc;
  sc.listen = host1.address + ":0";
  sc.token = kToken;
  sc.libvirt_uri = host1.uri;
  sc.migration_uri = host1.migration_uri;
  sc.host_id = host1.name;
  sc.state_dir = tmp.Join("host1-state");
  sc.data_address = host1.address;
  ExportRegistryOptions eo;
  eo.state_dir = sc.state_dir;
  eo.data_address = host1.address;
  eo.host = NewLibvirtExportHost(host1.uri);
  AgentServiceOptions so;
  so.config = sc;
  so.host = NewLibvirtHostOps(host1.uri);
  so.exports = std::make_unique<ExportRegistry>(std::move(eo));
  AgentService source(std::move(so));
  ASSERT_TRUE(source.Start().ok());
  const std::string source_url = "http://" + host1.address + ":" + std::to_string(source.port());

  // The job host2's agent would get from ferryd.
  MigrationJobSpec spec;
  spec.id = "m-cold-1";
  spec.kind = MigrationKind::kCold;
  spec.vm = "cg1";
  ColdJobSpec& c = spec.cold;
  c.source = {host1.name, source_url, kToken};
  c.export_spec.id = spec.id;
  c.export_spec.vm = "cg1";
  c.export_spec.shutdown = true;
  c.export_spec.shutdown_timeout_ms = 5000;  // the lab guest may ignore ACPI: then power off
  c.export_spec.force_shutdown = true;
  c.target_type = plan::EndpointType::kKvm;
  c.plan_name = "lab-wave";
  c.checkpoint_bytes = 8 * kMiB;
  plan::TargetVm& vm = c.vm;
  vm.name = "cg1";
  vm.vcpus = 1;
  vm.memory_bytes = 256 * kMiB;
  vm.machine = "pc";
  vm.firmware = "bios";
  vm.arch = "x86_64";
  // The lab guest boots its kernel directly (paths every host sees); this boot verifies the
  // disk instead of writing on.
  lab::GuestSpec verify = gs;
  verify.disk_mode = lab::DiskMode::kVerify;
  vm.direct_boot = {lab.state().kernel, lab.state().initrd, Lab::GuestCmdline(verify)};
  vm.disks.push_back({"disk0", "local", "cg1-disk0.raw", "raw", "", 0, "virtio", "vda"});
  vm.nics.push_back({"nic0", "lab", guest->mac, "virtio"});
  vm.start = true;
  vm.boot_check = {"FERRY-READY", kBootTimeoutMs};

  ColdJobEnv env;
  env.libvirt_uri = host2.uri;
  env.state_dir = tmp.Join("host2-state");
  env.default_domain_type = lab.state().domain_type;
  env.copy_workers = 2;
  Context ctx;
  const auto started = std::chrono::steady_clock::now();
  Result<JobResult> r = RunColdJob(spec, env, ctx);
  const double took =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  ASSERT_TRUE(r.ok()) << r.status().ToString() << "\n" << ctx.events();
  std::printf("cold migration of cg1: %.1f s (boot check %lld ms)\n", took,
              static_cast<long long>(r->boot.elapsed_ms));

  EXPECT_EQ(r->defined_vm, "cg1");
  EXPECT_TRUE(r->boot.checked);
  EXPECT_TRUE(r->boot.ok) << r->boot.message;
  ASSERT_EQ(r->disks.size(), 1u);
  EXPECT_TRUE(r->disks[0].verified);
  const std::string target_disk = host2.local_pool_dir + "/cg1-disk0.raw";
  EXPECT_EQ(r->disks[0].to, target_disk);

  // Running on host2 from the copied disk, and the guest finds every block its writer made.
  auto running = lab.HostsRunning("cg1");
  ASSERT_TRUE(running.ok());
  EXPECT_EQ(*running, std::vector<int>{2});
  lab::ConsoleWatcher target_console(env.state_dir + "/consoles/cg1.log");
  target_console.Start();
  auto ok = target_console.WaitForLine("FERRY-DISK-", 60000);
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  EXPECT_EQ(ok->text.rfind("FERRY-DISK-OK", 0), 0u) << ok->text;

  // The source: shut off, still defined on host1, its disk untouched by the copy.
  auto state = lab.Virsh(1, {"domstate", "cg1"});
  ASSERT_TRUE(state.ok()) << state.status().ToString();
  EXPECT_NE(state->find("shut off"), std::string::npos) << *state;
  auto dumped = lab.Virsh(2, {"dumpxml", "cg1"});
  ASSERT_TRUE(dumped.ok());
  EXPECT_NE(dumped->find("ferry:migration"), std::string::npos);
  EXPECT_NE(dumped->find(target_disk), std::string::npos);
  auto export_info = api::AgentClient(source_url, kToken).GetExport(spec.id);
  ASSERT_TRUE(export_info.ok());
  EXPECT_EQ(export_info->state, ExportState::kClosed);
  EXPECT_TRUE(export_info->was_running);
  (void)lab.Virsh(2, {"destroy", "cg1"});
}

}  // namespace
}  // namespace ferry::agent
