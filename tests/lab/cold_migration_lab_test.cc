// Migration plans end to end on the real lab (docs/plans.md): two libvirtd hosts, a
// ferry-agent per host (host1 holds the export share "exports", host2 the staging share
// "staging"), ferryd with a SQLite file and the `ferry plan` CLI. The VMs are bootable lab
// disks (src/lab/boot_disk.h) whose data partition holds blocks written by the lab's disk
// writer before the export, so the guest itself proves, after booting on the target, that
// every block arrived (FERRY-DISK-OK <seq>).
//
//   - an OVA (streamOptimized VMDK + OVF) boots on host2;
//   - a Hyper-V export (Virtual Machines/*.xml + a dynamic VHDX) boots on host2 on SATA;
//   - a running VM on host1 moves cold to host2, qcow2 -> raw, network mapped, shut down
//     gracefully at cutover; the source stays shut off and defined;
//   - a plan of three VMs runs within a copy limit of one per target pool;
//   - an unmapped network and a pool too small fail validation and create nothing;
//   - kill -9 of the target agent mid-copy: the copy resumes from its checkpoint (bytes read
//     again at most one checkpoint interval plus the copy window), the disk is identical;
//   - a plan stages a VM as VHDX + vm.json on the staging share (qemu-img check clean), and a
//     second plan imports that share back onto host2, where it boots.
// Needs root and scripts/lab-deps (label "lab").
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "api/http.h"
#include "lab/boot_disk.h"
#include "lab/console.h"
#include "lab/lab.h"
#include "lab/process.h"
#include "test_util.h"

namespace ferry {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

constexpr int kAddressBase = 140;  // 127.0.0.141, .142: this test's own range
constexpr char kToken[] = "cold-lab-token";
constexpr char kServer[] = "http://127.0.0.140:7800";
constexpr int64_t kPlanTimeoutMs = 600000;  // TCG boots on a busy 2-core machine are slow
constexpr int kPrefilledBlocks = 300;       // blocks the writer put on every exported disk

std::string BinaryDir() { return testing::BinaryDir(); }

void WriteFile(const std::string& path, const std::string& text) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream out(path);
  out << text;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// Runs a command (argv, no shell); its output; fails the test on a non-zero exit.
std::string MustRun(const std::vector<std::string>& argv, int64_t timeout_ms = 300000) {
  Result<std::string> r = lab::RunChecked(argv, timeout_ms);
  EXPECT_TRUE(r.ok()) << argv[0] << ": " << r.status().ToString();
  return r.ok() ? *r : "";
}

// The parts of a plan the tests vary; the defaults boot the VM and check it came up.
struct PlanParts {
  std::string storage = "  - {source: \"*\", pool: local, format: qcow2}\n";  // "" = none
  std::string defaults = "  disk_bus: virtio\n  boot_check: {marker: FERRY-READY, timeout: 8m}\n";
  std::string options;  // the body of options:, "" = none
};

class ColdMigrationLab : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    char tmpl[] = "/var/tmp/ferry-cold-test-XXXXXX";
    const char* made = mkdtemp(tmpl);
    ASSERT_NE(made, nullptr);
    dir_ = made;
    lab::LabConfig config;
    config.root = dir_ + "/lab";
    config.hosts = 2;
    config.address_base = kAddressBase;
    config.accel = lab::Accel::kTcg;
    config.guest_binary = BinaryDir() + "/src/lab/ferry_guest";
    auto up = lab::Lab::Up(config);
    ASSERT_TRUE(up.ok()) << up.status().ToString();
    lab_ = up->release();
    fs::create_directories(Exports());
    fs::create_directories(Staging());
    for (int h = 1; h <= 2; ++h) StartAgent(h);
    StartFerryd();
    BuildPrefilledBootDisk();
  }

  static void TearDownTestSuite() {
    if (ferryd_pid_ > 0) lab::TerminateProcess(ferryd_pid_, 5000);
    for (pid_t p : agent_pids_) {
      if (p > 0) lab::TerminateProcess(p, 5000);
    }
    if (lab_ != nullptr) {
      (void)lab_->Down();
      delete lab_;
    }
    std::error_code ec;
    if (!dir_.empty() && getenv("FERRY_KEEP_LAB") == nullptr) fs::remove_all(dir_, ec);
  }

  static std::string Exports() { return dir_ + "/exports"; }
  static std::string Staging() { return dir_ + "/staging"; }
  static std::string AgentStateDir(int h) { return dir_ + "/agent" + std::to_string(h); }
  static std::string LocalPool(int h) { return lab_->host(h).local_pool_dir; }

  static void StartAgent(int h) {
    const lab::HostInfo& host = lab_->host(h);
    std::string cfg = dir_ + "/agent" + std::to_string(h) + ".json";
    json shares = json::object();
    if (h == 1) shares["exports"] = Exports();
    if (h == 2) shares["staging"] = Staging();
    WriteFile(cfg, json{{"listen", host.address + ":7801"},
                        {"token", kToken},
                        {"libvirt_uri", host.uri},
                        {"migration_uri", host.migration_uri},
                        {"host_id", host.name},
                        {"state_dir", AgentStateDir(h)},
                        {"shares", shares},
                        {"default_domain_type", lab_->state().domain_type}}
                       .dump());
    lab::SpawnOptions opts;
    opts.output_path = dir_ + "/agent" + std::to_string(h) + ".log";
    auto pid = lab::Spawn({BinaryDir() + "/src/agent/ferry-agent", "--config", cfg}, opts);
    ASSERT_TRUE(pid.ok()) << pid.status().ToString();
    if (agent_pids_.size() < static_cast<size_t>(h)) agent_pids_.resize(h, 0);
    agent_pids_[h - 1] = *pid;
    api::HttpClient probe("http://" + host.address + ":7801", kToken);
    for (int i = 0; i < 300; ++i) {
      if (probe.Get("/agent/v1/health").ok()) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    FAIL() << "agent " << h << " did not answer; see " << opts.output_path;
  }

  static void StartFerryd() {
    std::string cfg = dir_ + "/ferryd.json";
    json hosts = json::array();
    for (int h = 1; h <= 2; ++h) {
      hosts.push_back({{"id", lab_->host(h).name},
                       {"cluster", "lab"},
                       {"agent_url", "http://" + lab_->host(h).address + ":7801"},
                       {"agent_token", kToken}});
    }
    WriteFile(cfg, json{{"listen", "127.0.0.140:7800"},
                        {"token", kToken},
                        {"database", dir_ + "/ferry.db"},
                        {"limits",
                         {{"copies_per_source_host", 4},
                          {"copies_per_target_pool", 1},
                          {"total", 8}}},
                        {"poll_ms", 200},
                        {"inventory_refresh_ms", 5000},
                        {"hosts", hosts}}
                       .dump());
    lab::SpawnOptions opts;
    opts.output_path = dir_ + "/ferryd.log";
    auto pid = lab::Spawn({BinaryDir() + "/src/server/ferryd", "--config", cfg}, opts);
    ASSERT_TRUE(pid.ok()) << pid.status().ToString();
    ferryd_pid_ = *pid;
    api::HttpClient probe(kServer, kToken);
    for (int i = 0; i < 600; ++i) {
      if (probe.Get("/api/v1/health").ok()) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    FAIL() << "ferryd did not answer; see " << dir_ << "/ferryd.log";
  }

  // dir_/boot.raw: a bootable lab disk whose data partition holds kPrefilledBlocks blocks
  // written by ferry_guest (outside a VM, on a file, then copied into the partition).
  static void BuildPrefilledBootDisk() {
    lab::BootDiskSpec spec;
    spec.out_path = BootRaw();
    spec.kernel = lab_->state().kernel;
    spec.initrd = lab_->state().initrd;
    spec.data_mib = 16;
    spec.cmdline = "ferry.heartbeat=100 ferry.disk=" + std::string(lab::kBootDiskDataDevices) +
                   " ferry.disk_mode=write ferry.disk_mib=16 ferry.disk_iops=20";
    auto layout = lab::BuildBootDisk(spec);
    ASSERT_TRUE(layout.ok()) << layout.status().ToString();
    const std::string data = dir_ + "/data.bin";
    MustRun({"truncate", "-s", "16M", data});
    MustRun({BinaryDir() + "/src/lab/ferry_guest", "ferry.disk=" + data, "ferry.disk_mib=16",
             "ferry.disk_iops=0", "ferry.disk_count=" + std::to_string(kPrefilledBlocks),
             "ferry.heartbeat=0"});
    MustRun({"dd", "if=" + data, "of=" + BootRaw(), "bs=1M", "conv=notrunc,fsync",
             "seek=" + std::to_string(layout->data_offset), "oflag=seek_bytes", "status=none"});
  }
  static std::string BootRaw() { return dir_ + "/boot.raw"; }

  // Runs the ferry CLI against ferryd; returns exit code and output.
  static testing::CommandResult Cli(const std::string& args) {
    return testing::Run("FERRY_SERVER=" + std::string(kServer) + " FERRY_TOKEN=" + kToken + " " +
                        testing::ShellQuote(BinaryDir() + "/src/cli/ferry") + " " + args +
                        " 2>&1");
  }

  static json Api(const std::string& method, const std::string& path,
                  const std::string& body = "") {
    api::HttpClient client(kServer, kToken);
    Result<std::string> r = client.Send(method, path, body, nullptr);
    EXPECT_TRUE(r.ok()) << method << " " << path << ": " << r.status().ToString();
    return r.ok() ? json::parse(*r) : json();
  }

  // Writes the plan, applies it with the CLI (--wait) and returns the final plan record.
  static json ApplyAndWait(const std::string& name, const std::string& yaml,
                           int expect_exit = 0) {
    const std::string file = dir_ + "/" + name + ".yaml";
    WriteFile(file, yaml);
    testing::CommandResult r =
        Cli("plan apply --wait -f " + testing::ShellQuote(file) + " --output json");
    EXPECT_EQ(r.exit_code, expect_exit) << r.output;
    return PlanRecord(name);
  }

  static json PlanRecord(const std::string& name) {
    return Api("GET", "/api/v1/plans/" + name);
  }

  static json WaitPlanFinal(const std::string& name, int64_t timeout_ms = kPlanTimeoutMs) {
    json p;
    for (int64_t waited = 0; waited < timeout_ms; waited += 500) {
      p = PlanRecord(name);
      std::string st = p.value("state", "");
      if (st == "completed" || st == "failed" || st == "cancelled" || st == "partial") return p;
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
    }
    ADD_FAILURE() << "plan " << name << " not final after " << timeout_ms << " ms: " << p.dump();
    return p;
  }

  // The console log the target agent defines for a VM it deploys.
  static std::string TargetConsole(int h, const std::string& vm) {
    return AgentStateDir(h) + "/consoles/" + vm + ".log";
  }

  // The guest on host2 verified every prefilled block: "FERRY-DISK-OK <seq>" with
  // seq >= the last block written before the export.
  static void ExpectGuestVerifiedDisk(const std::string& console_path, long long at_least) {
    lab::ConsoleWatcher console(console_path);
    console.Start();
    auto ok = console.WaitForLine("FERRY-DISK-", 300000);
    ASSERT_TRUE(ok.ok()) << ok.status().ToString() << "\n" << ReadFile(console_path);
    long long seq = -2;
    ASSERT_EQ(std::sscanf(ok->text.c_str(), "FERRY-DISK-OK %lld", &seq), 1) << ok->text;
    EXPECT_GE(seq, at_least) << ok->text;
  }

  static std::vector<int> RunningOn(const std::string& vm) {
    auto r = lab_->HostsRunning(vm);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? *r : std::vector<int>{};
  }

  // The plan YAML common to the tests: source, target and mappings around `vms_yaml`.
  static std::string PlanYaml(const std::string& name, const std::string& source,
                              const std::string& target, const std::string& vms_yaml,
                              const PlanParts& parts = {}) {
    std::string y = "name: " + name + "\nsource: " + source + "\ntarget: " + target +
                    "\nvms:\n" + vms_yaml +
                    "networks:\n  - {source: \"VM Network\", target: lab}\n"
                    "  - {source: \"Corp Network\", target: lab}\n  - {source: lab, target: lab}\n";
    if (!parts.storage.empty()) y += "storage:\n" + parts.storage;
    y += "target_defaults:\n" + parts.defaults;
    if (!parts.options.empty()) y += "options:\n" + parts.options;
    return y;
  }

  static PlanParts RawStorage() {
    PlanParts p;
    p.storage = "  - {source: \"*\", pool: local, format: raw}\n";
    return p;
  }
  static PlanParts NoStart(PlanParts p = {}) {
    p.defaults = "  start: false\n  boot_check: {marker: \"\"}\n";
    return p;
  }

  static inline std::string dir_;
  static inline lab::Lab* lab_ = nullptr;
  static inline std::vector<pid_t> agent_pids_;
  static inline pid_t ferryd_pid_ = 0;
};

// An OVF of one VM: 1 vCPU, 256 MiB, BIOS, an E1000 on "VM Network", one disk.
std::string Ovf(const std::string& name, const std::string& href, uint64_t capacity_bytes) {
  return R"(<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1"
    xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1"
    xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData"
    xmlns:vmw="http://www.vmware.com/schema/ovf">
  <References><File ovf:href=")" +
         href + R"(" ovf:id="file1"/></References>
  <DiskSection><Info>disks</Info>
    <Disk ovf:capacity=")" +
         std::to_string(capacity_bytes) + R"(" ovf:diskId="vmdisk1" ovf:fileRef="file1"
        ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/>
  </DiskSection>
  <NetworkSection><Info>nets</Info><Network ovf:name="VM Network"/></NetworkSection>
  <VirtualSystem ovf:id=")" +
         name + R"(">
    <Info>A virtual machine</Info>
    <Name>)" + name + R"(</Name>
    <VirtualHardwareSection><Info>hw</Info>
      <Item><rasd:ElementName>1 virtual CPU(s)</rasd:ElementName><rasd:InstanceID>1</rasd:InstanceID>
        <rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>1</rasd:VirtualQuantity></Item>
      <Item><rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits>
        <rasd:ElementName>256MB of memory</rasd:ElementName><rasd:InstanceID>2</rasd:InstanceID>
        <rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>256</rasd:VirtualQuantity></Item>
      <Item><rasd:Address>00:50:56:aa:00:01</rasd:Address><rasd:Connection>VM Network</rasd:Connection>
        <rasd:ElementName>Network adapter 1</rasd:ElementName><rasd:InstanceID>5</rasd:InstanceID>
        <rasd:ResourceSubType>E1000</rasd:ResourceSubType><rasd:ResourceType>10</rasd:ResourceType></Item>
      <Item><rasd:ElementName>Hard disk 1</rasd:ElementName>
        <rasd:HostResource>ovf:/disk/vmdisk1</rasd:HostResource><rasd:InstanceID>6</rasd:InstanceID>
        <rasd:ResourceType>17</rasd:ResourceType></Item>
      <vmw:Config ovf:required="false" vmw:key="firmware" vmw:value="bios"/>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
)";
}

uint64_t FileSize(const std::string& path) { return fs::file_size(path); }

// Makes Exports()/NAME.ova from the prefilled boot disk.
void MakeOva(const std::string& exports, const std::string& stage_dir, const std::string& name,
             const std::string& boot_raw) {
  fs::create_directories(stage_dir);
  const std::string vmdk = name + "-disk1.vmdk";
  MustRun({"qemu-img", "convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized",
           boot_raw, stage_dir + "/" + vmdk});
  WriteFile(stage_dir + "/" + name + ".ovf", Ovf(name, vmdk, FileSize(boot_raw)));
  MustRun({"tar", "--format=ustar", "-C", stage_dir, "-cf", exports + "/" + name + ".ova",
           name + ".ovf", vmdk});
}

TEST_F(ColdMigrationLab, OvaBootsOnLabHost) {
  MakeOva(Exports(), dir_ + "/stage-web1", "web1", BootRaw());
  json plan = ApplyAndWait(
      "ova-web1", PlanYaml("ova-web1", "{type: share, host: host1, share: exports}",
                           "{type: kvm, host: host2}", "  - name: web1\n"));
  ASSERT_EQ(plan.value("state", ""), "completed") << plan.dump(2);
  ASSERT_EQ(plan["vms"].size(), 1u);
  const json& vm = plan["vms"][0];
  EXPECT_EQ(vm["result"]["boot"].value("ok", false), true) << vm.dump(2);
  EXPECT_EQ(RunningOn("web1"), std::vector<int>{2});
  // The disk in host2's local pool is qcow2 and clean; the guest verified every block.
  ExpectGuestVerifiedDisk(TargetConsole(2, "web1"), kPrefilledBlocks - 1);
  // The MAC came from the OVF (preserve_mac defaults to true).
  EXPECT_NE(lab_->Virsh(2, {"dumpxml", "web1"})->find("00:50:56:aa:00:01"), std::string::npos);
  (void)lab_->Virsh(2, {"destroy", "web1"});
  const std::string disk = LocalPool(2) + "/web1-disk0.qcow2";
  EXPECT_NE(MustRun({"qemu-img", "info", "--output=json", disk}).find("\"qcow2\""),
            std::string::npos);
  MustRun({"qemu-img", "check", "-q", disk});
}

TEST_F(ColdMigrationLab, HyperVExportBootsOnSata) {
  const std::string vm_dir = Exports() + "/hv1";
  fs::create_directories(vm_dir + "/Virtual Hard Disks");
  MustRun({"qemu-img", "convert", "-f", "raw", "-O", "vhdx", "-o", "subformat=dynamic", BootRaw(),
           vm_dir + "/Virtual Hard Disks/hv1.vhdx"});
  std::string config = ReadFile(testing::SourceDir() +
                                "/fuzz/corpus/hyperv_config_fuzz/ws2008r2_gen1.xml");
  auto replace = [&config](const std::string& from, const std::string& to) {
    size_t at = config.find(from);
    ASSERT_NE(at, std::string::npos) << from;
    config.replace(at, from.size(), to);
  };
  replace("C:\\VMs\\hv-db\\Virtual Hard Disks\\hv-db.vhd", "C:\\VMs\\hv1\\Virtual Hard Disks\\hv1.vhdx");
  replace("<name type=\"string\">hv-db</name>", "<name type=\"string\">hv1</name>");
  replace("<size type=\"integer\">2048</size>", "<size type=\"integer\">256</size>");
  replace("<count type=\"integer\">2</count>", "<count type=\"integer\">1</count>");
  WriteFile(vm_dir + "/Virtual Machines/5C1E0000-1111-2222-3333-444455556666.xml", config);
  json plan = ApplyAndWait(
      "hv1", PlanYaml("hv1", "{type: share, host: host1, share: exports}",
                      "{type: kvm, host: host2}",
                      "  - name: hv1\n    target: {disk_bus: sata}\n", RawStorage()));
  ASSERT_EQ(plan.value("state", ""), "completed") << plan.dump(2);
  EXPECT_EQ(RunningOn("hv1"), std::vector<int>{2});
  ExpectGuestVerifiedDisk(TargetConsole(2, "hv1"), kPrefilledBlocks - 1);
  EXPECT_NE(ReadFile(TargetConsole(2, "hv1")).find("FERRY-DEVICE /dev/sda2"), std::string::npos);
  EXPECT_NE(lab_->Virsh(2, {"dumpxml", "hv1"})->find("bus='sata'"), std::string::npos);
  (void)lab_->Virsh(2, {"destroy", "hv1"});
}

TEST_F(ColdMigrationLab, RunningKvmVmMovesColdToHost2AsRaw) {
  lab::GuestSpec spec;
  spec.name = "k1";
  spec.host = 1;
  spec.pool = "local";
  spec.boot_from_disk = true;
  spec.disk_format = "qcow2";
  spec.disk_mib = 16;
  spec.disk_iops = 50;
  auto guest = lab_->CreateGuest(spec);
  ASSERT_TRUE(guest.ok()) << guest.status().ToString();
  lab::ConsoleWatcher source_console(guest->console_log);
  source_console.Start();
  ASSERT_TRUE(source_console.WaitForLine("FERRY-DISK-SEQ", 300000).ok())
      << ReadFile(guest->console_log);
  PlanParts parts = RawStorage();
  parts.options = "  shutdown_source: true\n  shutdown_timeout: 2m\n";
  json plan = ApplyAndWait("kvm-k1", PlanYaml("kvm-k1", "{type: kvm, host: host1}",
                                              "{type: kvm, host: host2}", "  - name: k1\n", parts));
  ASSERT_EQ(plan.value("state", ""), "completed") << plan.dump(2);
  // The source was shut down gracefully (the guest saw the power button) and stays defined.
  EXPECT_NE(ReadFile(guest->console_log).find("FERRY-POWEROFF"), std::string::npos);
  long long durable = -1;
  for (const auto& line : source_console.Lines()) {
    long long seq;
    if (std::sscanf(line.text.c_str(), "FERRY-DISK-SEQ %lld", &seq) == 1) durable = seq;
  }
  ASSERT_GE(durable, 0);
  EXPECT_EQ(RunningOn("k1"), std::vector<int>{2});
  EXPECT_NE(lab_->Virsh(1, {"domstate", "k1"})->find("shut off"), std::string::npos);
  const std::string disk = LocalPool(2) + "/k1-disk0.raw";
  EXPECT_NE(MustRun({"qemu-img", "info", "-U", "--output=json", disk}).find("\"raw\""),
            std::string::npos);
  // The network was mapped (lab -> lab) and the MAC kept.
  EXPECT_NE(lab_->Virsh(2, {"dumpxml", "k1"})->find("<source network='lab'"), std::string::npos);
  ExpectGuestVerifiedDisk(TargetConsole(2, "k1"), durable);
  (void)lab_->Virsh(2, {"destroy", "k1"});
}

TEST_F(ColdMigrationLab, PlanOfThreeVmsRunsWithinACopyLimitOfOne) {
  for (const char* name : {"m1", "m2", "m3"}) {
    MakeOva(Exports(), dir_ + "/stage-" + name, name, BootRaw());
  }
  json plan = ApplyAndWait(
      "three", PlanYaml("three", "{type: share, host: host1, share: exports}",
                        "{type: kvm, host: host2}",
                        "  - name: m1\n  - name: m2\n  - name: m3\n", NoStart()));
  ASSERT_EQ(plan.value("state", ""), "completed") << plan.dump(2);
  ASSERT_EQ(plan["vms"].size(), 3u);
  // With copies_per_target_pool = 1 the copies of the three never overlap: each job starts
  // (ferryd's "started" event) only after the one before reported its disk copied. Phases
  // are not used: ferryd sees a phase only if it polls during it, and these copies take a
  // fraction of a second.
  struct Span {
    int64_t start = 0, end = 0;
  };
  std::vector<Span> spans;
  for (const json& vm : plan["vms"]) {
    json events = Api("GET", "/api/v1/migrations/" + vm.value("migration", "") + "/events");
    Span s;
    for (const json& e : events["events"]) {
      const std::string kind = e.value("kind", ""), message = e.value("message", "");
      const int64_t at = e.value("at_ms", int64_t{0});
      if (kind == "state" && message.rfind("started:", 0) == 0 && s.start == 0) s.start = at;
      if (kind == "info" && message.rfind("disk ", 0) == 0 &&
          message.find(": copied ") != std::string::npos) {
        s.end = at;
      }
    }
    ASSERT_GT(s.start, 0) << events.dump(2);
    ASSERT_GE(s.end, s.start) << events.dump(2);
    spans.push_back(s);
  }
  for (size_t i = 0; i < spans.size(); ++i) {
    for (size_t j = i + 1; j < spans.size(); ++j) {
      EXPECT_TRUE(spans[i].end <= spans[j].start || spans[j].end <= spans[i].start)
          << "copies " << i << " and " << j << " overlapped";
    }
  }
  for (const char* name : {"m1", "m2", "m3"}) {
    EXPECT_TRUE(fs::exists(LocalPool(2) + "/" + std::string(name) + "-disk0.qcow2")) << name;
    EXPECT_TRUE(RunningOn(name).empty()) << name << " was not to be started";
  }
}

TEST_F(ColdMigrationLab, ValidationFailuresCreateNothing) {
  MakeOva(Exports(), dir_ + "/stage-v1", "v1", BootRaw());
  // A source network that no rule maps.
  const std::string unmapped = dir_ + "/unmapped.yaml";
  WriteFile(unmapped,
            "name: unmapped\nsource: {type: share, host: host1, share: exports}\n"
            "target: {type: kvm, host: host2}\nvms:\n  - name: v1\n"
            "networks:\n  - {source: \"Other\", target: lab}\n"
            "storage:\n  - {source: \"*\", pool: local}\n");
  testing::CommandResult r = Cli("plan apply -f " + testing::ShellQuote(unmapped));
  EXPECT_EQ(r.exit_code, 10) << r.output;
  EXPECT_NE(r.output.find("networks_mapped"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("VM Network"), std::string::npos) << r.output;
  // A disk whose virtual size exceeds the whole pool (a 64 TiB qcow2 holding nothing).
  MustRun({"qemu-img", "create", "-q", "-f", "qcow2", Exports() + "/huge.qcow2", "64T"});
  const std::string huge = dir_ + "/huge.yaml";
  WriteFile(huge,
            "name: huge\nsource: {type: share, host: host1, share: exports}\n"
            "target: {type: kvm, host: host2}\nvms:\n"
            "  - name: huge\n    target: {vcpus: 1, memory: 256MiB}\n"
            "storage:\n  - {source: \"*\", pool: local}\n");
  r = Cli("plan apply -f " + testing::ShellQuote(huge));
  EXPECT_EQ(r.exit_code, 10) << r.output;
  EXPECT_NE(r.output.find("pool_capacity"), std::string::npos) << r.output;
  // Nothing was created: no plan, no migration, no file in the pool, no VM on host2.
  json plans = Api("GET", "/api/v1/plans");
  for (const json& p : plans["plans"]) {
    EXPECT_NE(p.value("name", ""), "unmapped");
    EXPECT_NE(p.value("name", ""), "huge");
  }
  json migrations = Api("GET", "/api/v1/migrations?all=1");
  for (const json& m : migrations["migrations"]) {
    EXPECT_NE(m.value("vm", ""), "v1");
    EXPECT_NE(m.value("vm", ""), "huge");
  }
  for (const auto& e : fs::directory_iterator(LocalPool(2))) {
    const std::string n = e.path().filename().string();
    EXPECT_NE(n.rfind("v1-", 0), 0u) << n;
    EXPECT_NE(n.rfind("huge-", 0), 0u) << n;
  }
  EXPECT_TRUE(RunningOn("v1").empty());
}

TEST_F(ColdMigrationLab, KilledTargetAgentResumesFromItsCheckpoint) {
  // A 1 GiB disk with 384 MiB of random data, described by a vm.json (no boot needed).
  const std::string vm_dir = Exports() + "/big1";
  fs::create_directories(vm_dir);
  const std::string raw = dir_ + "/big1.raw";
  MustRun({"truncate", "-s", "1G", raw});
  MustRun({"dd", "if=/dev/urandom", "of=" + raw, "bs=1M", "count=384", "seek=64",
           "conv=notrunc", "status=none"});
  MustRun({"qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, vm_dir + "/big1.qcow2"});
  WriteFile(vm_dir + "/vm.json",
            R"({"ferry_vm_description": 1, "name": "big1", "platform": "kvm", "vcpus": 1,
  "memory_bytes": 268435456, "firmware": "bios",
  "disks": [{"id": "disk0", "file": "big1.qcow2", "format": "qcow2"}],
  "nics": [{"id": "nic0", "network": "lab"}]})");
  const uint64_t kCheckpoint = 32ull << 20;
  const std::string file = dir_ + "/big1.yaml";
  PlanParts parts = NoStart();
  parts.options = "  checkpoint_interval: 32MiB\n";
  WriteFile(file, PlanYaml("big1", "{type: share, host: host1, share: exports}",
                           "{type: kvm, host: host2}", "  - name: big1\n", parts));
  testing::CommandResult r = Cli("plan apply -f " + testing::ShellQuote(file));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  // Kill the target agent once a few checkpoints are behind it.
  bool killed = false;
  for (int i = 0; i < 1200 && !killed; ++i) {
    json p = PlanRecord("big1");
    if (!p["vms"].empty()) {
      const json& disks = p["vms"][0]["progress"]["disks"];
      if (disks.is_array() && !disks.empty() &&
          disks[0].value("checkpointed", uint64_t{0}) >= 3 * kCheckpoint) {
        ASSERT_EQ(kill(agent_pids_[1], SIGKILL), 0);
        killed = true;
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_TRUE(killed) << "the copy never reached three checkpoints: " << PlanRecord("big1").dump(2);
  waitpid(agent_pids_[1], nullptr, 0);
  StartAgent(2);
  json plan = WaitPlanFinal("big1");
  ASSERT_EQ(plan.value("state", ""), "completed") << plan.dump(2);
  const json& disk = plan["vms"][0]["result"]["disks"][0];
  EXPECT_GT(disk.value("resumed_from", uint64_t{0}), 0u) << disk.dump();
  // At most one checkpoint interval plus the copy window (8 x 4 MiB) was read twice.
  EXPECT_LE(disk.value("recopied_bytes", ~uint64_t{0}), kCheckpoint + (32ull << 20)) << disk.dump();
  EXPECT_TRUE(disk.value("verified", false));
  MustRun({"qemu-img", "compare", "-q", vm_dir + "/big1.qcow2",
           LocalPool(2) + "/big1-disk0.qcow2"});
  MustRun({"qemu-img", "check", "-q", LocalPool(2) + "/big1-disk0.qcow2"});
}

TEST_F(ColdMigrationLab, StagedVhdxExportIsImportedBackByASecondPlan) {
  MakeOva(Exports(), dir_ + "/stage-s1", "s1", BootRaw());
  json staged = ApplyAndWait(
      "stage-s1", PlanYaml("stage-s1", "{type: share, host: host1, share: exports}",
                           "{type: share, host: host2, share: staging, format: vhdx}",
                           "  - name: s1\n", [] {
                             PlanParts p;
                             p.storage.clear();
                             return p;
                           }()));
  ASSERT_EQ(staged.value("state", ""), "completed") << staged.dump(2);
  const std::string folder = Staging() + "/s1";
  const std::string vhdx = folder + "/s1-disk0.vhdx";
  ASSERT_TRUE(fs::exists(vhdx));
  ASSERT_TRUE(fs::exists(folder + "/vm.json"));
  MustRun({"qemu-img", "check", "-q", "-f", "vhdx", vhdx});
  MustRun({"qemu-img", "compare", "-q", "-f", "raw", "-F", "vhdx", BootRaw(), vhdx});
  // No half-written folder is left beside it.
  for (const auto& e : fs::directory_iterator(Staging())) {
    EXPECT_EQ(e.path().filename().string().find(".ferry-part"), std::string::npos);
  }
  json imported = ApplyAndWait(
      "import-s1", PlanYaml("import-s1", "{type: share, host: host2, share: staging}",
                            "{type: kvm, host: host2}",
                            "  - name: s1\n    target: {name: s1-back}\n"));
  ASSERT_EQ(imported.value("state", ""), "completed") << imported.dump(2);
  EXPECT_EQ(RunningOn("s1-back"), std::vector<int>{2});
  ExpectGuestVerifiedDisk(TargetConsole(2, "s1-back"), kPrefilledBlocks - 1);
  (void)lab_->Virsh(2, {"destroy", "s1-back"});
}

}  // namespace
}  // namespace ferry
