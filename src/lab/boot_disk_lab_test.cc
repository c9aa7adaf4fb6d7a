// Bootable lab disks on the real lab (label "lab", root, scripts/lab-deps): a guest that boots
// from its own disk like an exported VM does, shuts down on `virsh shutdown` like a real OS,
// boots again and finds every block its writer wrote; the same disk carried through a dynamic
// VHDX and a streamOptimized VMDK back to raw boots on a SATA bus. Also: the initramfs'
// module list against the real kernel's dependencies, and `ferry lab disk`.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "lab/boot_disk.h"
#include "lab/console.h"
#include "lab/initramfs.h"
#include "lab/lab.h"
#include "lab/lab_command.h"
#include "lab/process.h"
#include "test_util.h"

namespace ferry::lab {
namespace {

using ferry::testing::ReadFileBytes;
using ferry::testing::TempDir;

// Boots are slow under TCG on a busy 2-core machine; these are ceilings, not waits.
constexpr int64_t kBootTimeoutMs = 300000;
constexpr int64_t kStepTimeoutMs = 60000;
constexpr int64_t kShutdownTimeoutMs = 60000;  // the brief a real OS gets for an ACPI shutdown
constexpr int64_t kToolTimeoutMs = 120000;
constexpr int kAddressBase = 100;  // 127.0.0.101: this test's own range

std::string KernelModulesDir() {
  const char* env = std::getenv("FERRY_LAB_KERNEL_DIR");
  const std::string dir =
      std::string(env != nullptr && *env != '\0' ? env : "/var/cache/ferry/lab-kernel") +
      "/lib/modules";
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    if (e.is_directory()) return e.path().string();
  }
  return "";
}

std::string BaseName(const std::string& path) {
  return std::filesystem::path(path).filename().string();
}

// The module name modinfo and modules.builtin use: file name without .ko, '-' as '_'.
std::string ModuleName(const std::string& path) {
  std::string name = BaseName(path);
  name = name.substr(0, name.find(".ko"));
  for (char& c : name) {
    if (c == '-') c = '_';
  }
  return name;
}

// finit_module does not resolve dependencies: every module the list loads must come after
// all it depends on (or those are built in). Checked against the real kernel package.
TEST(BootDiskGuest, ModuleListLoadsDependenciesFirst) {
  const std::string modules_dir = KernelModulesDir();
  ASSERT_FALSE(modules_dir.empty()) << "no unpacked guest kernel; run scripts/lab-deps";
  std::set<std::string> available;
  std::ifstream builtin(modules_dir + "/modules.builtin");
  for (std::string line; std::getline(builtin, line);) available.insert(ModuleName(line));
  ASSERT_FALSE(available.empty());
  for (const auto& rel : DefaultGuestModules()) {
    const std::string name = ModuleName(rel);
    if (available.count(name) != 0) continue;  // built in: the initramfs skips it
    auto deps = RunChecked({"modinfo", "-F", "depends", modules_dir + "/kernel/" + rel}, 60000);
    ASSERT_TRUE(deps.ok()) << deps.status().ToString();
    std::stringstream in(*deps);
    for (std::string dep; std::getline(in, dep, ',');) {
      while (!dep.empty() && (dep.back() == '\n' || dep.back() == ' ')) dep.pop_back();
      if (dep.empty()) continue;
      EXPECT_EQ(available.count(ModuleName(dep)), 1u) << rel << " needs " << dep << " first";
    }
    available.insert(name);
  }
  // What the brief's guest needs is not built into Debian's kernel: it must be in the list.
  for (const char* m : {"button", "evdev", "ahci", "ata_piix", "sd_mod"}) {
    EXPECT_EQ(available.count(m), 1u) << m;
  }
}

struct DownGuard {
  std::string root;
  ~DownGuard() {
    if (!root.empty()) (void)Lab::Down(root);
  }
};

// Runs `ferry ARGS...` through AddLabCommand; returns the exit code and what it printed.
std::pair<int, std::string> RunCli(std::vector<std::string> args) {
  CLI::App app{"ferry"};
  int exit_code = -1;
  AddLabCommand(app, &exit_code);
  args.insert(args.begin(), "ferry");
  std::vector<const char*> argv;
  for (const auto& a : args) argv.push_back(a.c_str());
  ::testing::internal::CaptureStdout();
  try {
    app.parse(static_cast<int>(argv.size()), argv.data());
  } catch (const CLI::ParseError& e) {
    exit_code = 2;
  }
  return {exit_code, ::testing::internal::GetCapturedStdout()};
}

int64_t MsSince(int64_t ns) { return (ConsoleWatcher::NowNs() - ns) / 1000000; }

// The last "FERRY-DISK-SEQ n" at or after `since_ns` (-1: none).
long long LastDurable(const ConsoleWatcher& console, int64_t since_ns) {
  long long durable = -1;
  for (const auto& line : console.Lines()) {
    long long seq;
    if (line.host_ns >= since_ns &&
        std::sscanf(line.text.c_str(), "FERRY-DISK-SEQ %lld", &seq) == 1) {
      durable = seq;
    }
  }
  return durable;
}

Status WaitForState(const Lab& lab, const std::string& guest, const std::string& state,
                    int64_t timeout_ms) {
  const int64_t t0 = ConsoleWatcher::NowNs();
  std::string last;
  while (MsSince(t0) < timeout_ms) {
    auto r = lab.Virsh(1, {"domstate", guest});
    if (r.ok()) {
      last = *r;
      if (last.rfind(state, 0) == 0) return Status::Ok();
    }
    usleep(200000);
  }
  return Status::Io(guest + " not " + state + " within " + std::to_string(timeout_ms) +
                    " ms; last state: " + last);
}

// `ferry lab disk` with no lab at --root builds the kernel and initramfs itself.
TEST(BootDiskCommand, BuildsADiskWithoutALab) {
  TempDir tmp;
  const std::string out = tmp.Join("lab.qcow2");
  auto [rc, text] = RunCli({"lab", "disk", "--out", out, "--data-mib", "8", "--format", "qcow2",
                            "--cmdline-extra", "ferry.disk_mib=4", "--root", tmp.Join("no-lab"),
                            "--output", "json"});
  ASSERT_EQ(rc, 0) << text;
  EXPECT_NE(text.find("\"images\": \"built\""), std::string::npos) << text;
  EXPECT_NE(text.find("\"data_offset\": 26214400"), std::string::npos) << text;  // 1 + 24 MiB
  EXPECT_NE(text.find("\"data_bytes\": 8388608"), std::string::npos) << text;
  EXPECT_NE(text.find("ferry.disk=/dev/vda2,/dev/sda2,/dev/hda2 ferry.disk_mode=write"),
            std::string::npos)
      << text;
  auto info = RunChecked({"qemu-img", "info", "--output=json", out}, kToolTimeoutMs);
  ASSERT_TRUE(info.ok()) << info.status().ToString();
  EXPECT_NE(info->find("\"format\": \"qcow2\""), std::string::npos) << *info;
  EXPECT_FALSE(std::filesystem::exists(tmp.Join("no-lab")));
  // An existing output is refused (exit 8), a bad format is a bad argument (exit 2).
  EXPECT_EQ(RunCli({"lab", "disk", "--out", out, "--root", tmp.Join("no-lab")}).first, 8);
  EXPECT_EQ(RunCli({"lab", "disk", "--out", tmp.Join("x.vhdx"), "--format", "vhdx", "--root",
                    tmp.Join("no-lab")})
                .first,
            2);
}

TEST(BootDiskLab, BootsShutsDownBootsAgainAndSurvivesConversions) {
  TempDir tmp;
  LabConfig config;
  config.root = tmp.Join("lab");
  config.hosts = 1;
  config.address_base = kAddressBase;
  config.guest_binary = FERRY_GUEST_BINARY;
  DownGuard guard{config.root};
  auto up = Lab::Up(config);
  ASSERT_TRUE(up.ok()) << up.status().ToString();
  Lab& lab = **up;
  EXPECT_EQ(lab.host(1).uri, "qemu+tcp://127.0.0.101/system");

  // 1. A guest whose qcow2 disk boots by itself: SeaBIOS, SYSLINUX, the kernel on partition 1.
  GuestSpec spec;
  spec.name = "b1";
  spec.boot_from_disk = true;
  spec.disk_format = "qcow2";
  spec.disk_mib = 16;
  auto b1 = lab.CreateGuest(spec);
  ASSERT_TRUE(b1.ok()) << b1.status().ToString();
  EXPECT_EQ(b1->data_offset, 25u << 20);
  auto xml = lab.Virsh(1, {"dumpxml", "b1"});
  ASSERT_TRUE(xml.ok()) << xml.status().ToString();
  EXPECT_EQ(xml->find("<kernel>"), std::string::npos) << *xml;
  EXPECT_NE(xml->find("<boot dev='hd'/>"), std::string::npos) << *xml;
  ConsoleWatcher console(b1->console_log);
  console.Start();
  const int64_t t_boot = ConsoleWatcher::NowNs();
  auto ready = console.WaitForLine("FERRY-READY", kBootTimeoutMs);
  ASSERT_TRUE(ready.ok()) << ready.status().ToString();
  std::printf("b1 booted from its disk to user space in %lld ms\n",
              static_cast<long long>(MsSince(t_boot)));
  bool through_syslinux = false;  // the loader's banner: it did not boot some other way
  for (const auto& line : console.Lines()) {
    through_syslinux = through_syslinux || line.text.find("SYSLINUX 6.") != std::string::npos;
  }
  EXPECT_TRUE(through_syslinux);
  auto device = console.WaitForLine("FERRY-DEVICE", kStepTimeoutMs);
  ASSERT_TRUE(device.ok()) << device.status().ToString();
  EXPECT_EQ(device->text, "FERRY-DEVICE /dev/vda2 16777216");
  auto fresh = console.WaitForLine("FERRY-DISK-OK", kStepTimeoutMs);
  ASSERT_TRUE(fresh.ok()) << fresh.status().ToString();
  EXPECT_EQ(fresh->text, "FERRY-DISK-OK -1");
  ASSERT_TRUE(console.WaitForLine("FERRY-DISK-SEQ", kStepTimeoutMs).ok());
  ASSERT_TRUE(console.WaitForHeartbeats(100, kStepTimeoutMs).ok());

  // 2. virsh shutdown presses the ACPI power button: the guest stops its writer, syncs,
  //    says so and powers off; libvirt sees the domain shut off.
  const int64_t t_shutdown = ConsoleWatcher::NowNs();
  ASSERT_TRUE(lab.Virsh(1, {"shutdown", "b1"}).ok());
  auto poweroff = console.WaitForLine("FERRY-POWEROFF", kShutdownTimeoutMs, t_shutdown);
  ASSERT_TRUE(poweroff.ok()) << poweroff.status().ToString();
  ASSERT_TRUE(WaitForState(lab, "b1", "shut off", kShutdownTimeoutMs).ok());
  std::printf("b1 shut off %lld ms after virsh shutdown\n",
              static_cast<long long>(MsSince(t_shutdown)));
  EXPECT_LT(MsSince(t_shutdown), kShutdownTimeoutMs);
  const long long final_seq = LastDurable(console, 0);
  ASSERT_GT(final_seq, 0);
  // The writer's last line came before FERRY-POWEROFF, and no heartbeat after it.
  HeartbeatStats after = console.Heartbeats(poweroff->host_ns + 1);
  EXPECT_EQ(after.count, 0u);

  // The host sees the writer's blocks on partition 2 and the boot partition intact.
  const std::string copy = tmp.Join("b1-after-shutdown.raw");
  ASSERT_TRUE(RunChecked({"qemu-img", "convert", "-f", "qcow2", "-O", "raw", b1->disk_path, copy},
                         kToolTimeoutMs)
                  .ok());
  {
    const auto bytes = ReadFileBytes(copy);
    ASSERT_GT(bytes.size(), b1->data_offset + 8);
    EXPECT_EQ(std::string(bytes.begin() + b1->data_offset, bytes.begin() + b1->data_offset + 8),
              "FERRYBLK");
    const std::vector<uint8_t> zeros(b1->data_offset - (1 << 20));
    EXPECT_FALSE(std::equal(zeros.begin(), zeros.end(), bytes.begin() + (1 << 20)));
  }
  auto cfg = RunChecked(
      {"env", "MTOOLS_SKIP_CHECK=1", "mtype", "-i", copy + "@@1048576", "::/syslinux.cfg"},
      kToolTimeoutMs);
  ASSERT_TRUE(cfg.ok()) << cfg.status().ToString();
  EXPECT_NE(cfg->find("APPEND " + Lab::GuestCmdline(spec)), std::string::npos) << *cfg;

  // 3. It boots again; mode write verifies first and finds exactly where it stopped.
  const int64_t t_again = ConsoleWatcher::NowNs();
  ASSERT_TRUE(lab.Virsh(1, {"start", "b1"}).ok());
  auto again = console.WaitForLine("FERRY-DISK-", kBootTimeoutMs, t_again);
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(again->text, "FERRY-DISK-OK " + std::to_string(final_seq));
  std::printf("second boot: %s (writer stopped at %lld)\n", again->text.c_str(), final_seq);
  ASSERT_TRUE(console.WaitForLine("FERRY-DISK-SEQ", kStepTimeoutMs, again->host_ns).ok());
  ASSERT_TRUE(lab.Virsh(1, {"destroy", "b1"}).ok());  // a hard stop this time
  const long long durable = LastDurable(console, t_again);
  ASSERT_GT(durable, final_seq);

  // 4. The same disk through the formats an export brings: dynamic VHDX (Hyper-V), then
  //    streamOptimized VMDK (an OVA's), then raw in the pool. Every byte survives...
  const std::string vhdx = tmp.Join("b1.vhdx"), vmdk = tmp.Join("b1.vmdk");
  const std::string back = lab.state().root + "/nas1/b1back.raw";
  ASSERT_TRUE(RunChecked({"qemu-img", "convert", "-f", "qcow2", "-O", "vhdx", "-o",
                          "subformat=dynamic", b1->disk_path, vhdx},
                         kToolTimeoutMs)
                  .ok());
  ASSERT_TRUE(RunChecked({"qemu-img", "convert", "-f", "vhdx", "-O", "vmdk", "-o",
                          "subformat=streamOptimized", vhdx, vmdk},
                         kToolTimeoutMs)
                  .ok());
  ASSERT_TRUE(
      RunChecked({"qemu-img", "convert", "-f", "vmdk", "-O", "raw", vmdk, back}, kToolTimeoutMs)
          .ok());
  auto same = RunProcess({"qemu-img", "compare", "-f", "qcow2", "-F", "raw", b1->disk_path, back},
                         kToolTimeoutMs);
  ASSERT_TRUE(same.ok());
  EXPECT_EQ(same->exit_code, 0) << same->output;

  // 5. ...and it boots, here on a SATA bus: the guest's AHCI driver finds the disk and the
  //    writer takes /dev/sda2 from its list, with every block there.
  GuestSpec sata;
  sata.name = "b2";
  sata.boot_from_disk = true;
  sata.volume = "b1back.raw";
  sata.disk_format = "raw";
  sata.disk_bus = "sata";
  auto b2 = lab.CreateGuest(sata);
  ASSERT_TRUE(b2.ok()) << b2.status().ToString();
  // Alongside it, an ordinary guest (direct kernel boot, virtio): it shuts down on the power
  // button too, as the KVM source of a cold migration must.
  GuestSpec direct;
  direct.name = "d1";
  auto d1 = lab.CreateGuest(direct);
  ASSERT_TRUE(d1.ok()) << d1.status().ToString();
  ConsoleWatcher console_d1(d1->console_log);
  console_d1.Start();
  ConsoleWatcher console2(b2->console_log);
  console2.Start();
  const int64_t t_b2 = ConsoleWatcher::NowNs();
  auto ready2 = console2.WaitForLine("FERRY-READY", kBootTimeoutMs);
  ASSERT_TRUE(ready2.ok()) << ready2.status().ToString();
  std::printf("b2 (converted disk, SATA) reached user space in %lld ms\n",
              static_cast<long long>(MsSince(t_b2)));
  auto device2 = console2.WaitForLine("FERRY-DEVICE", kStepTimeoutMs);
  ASSERT_TRUE(device2.ok()) << device2.status().ToString();
  EXPECT_EQ(device2->text, "FERRY-DEVICE /dev/sda2 16777216");
  auto verdict = console2.WaitForLine("FERRY-DISK-", kStepTimeoutMs);
  ASSERT_TRUE(verdict.ok()) << verdict.status().ToString();
  long long found = -2;
  ASSERT_EQ(std::sscanf(verdict->text.c_str(), "FERRY-DISK-OK %lld", &found), 1) << verdict->text;
  EXPECT_GE(found, durable);
  auto xml2 = lab.Virsh(1, {"dumpxml", "b2"});
  ASSERT_TRUE(xml2.ok());
  EXPECT_NE(xml2->find("bus='sata'"), std::string::npos) << *xml2;

  auto device_d1 = console_d1.WaitForLine("FERRY-DEVICE", kBootTimeoutMs);
  ASSERT_TRUE(device_d1.ok()) << device_d1.status().ToString();
  EXPECT_EQ(device_d1->text, "FERRY-DEVICE /dev/vda 33554432");
  ASSERT_TRUE(console_d1.WaitForLine("FERRY-DISK-SEQ", kStepTimeoutMs).ok());
  const int64_t t_d1 = ConsoleWatcher::NowNs();
  ASSERT_TRUE(lab.Virsh(1, {"shutdown", "d1"}).ok());
  auto poweroff_d1 = console_d1.WaitForLine("FERRY-POWEROFF", kShutdownTimeoutMs, t_d1);
  ASSERT_TRUE(poweroff_d1.ok()) << poweroff_d1.status().ToString();
  ASSERT_TRUE(WaitForState(lab, "d1", "shut off", kShutdownTimeoutMs).ok());

  // `ferry lab disk` against the running lab uses its kernel and initramfs.
  auto [rc, text] = RunCli({"lab", "disk", "--out", tmp.Join("from-lab.raw"), "--root", config.root,
                            "--output", "json"});
  EXPECT_EQ(rc, 0) << text;
  EXPECT_NE(text.find("\"images\": \"" + config.root + "\""), std::string::npos) << text;

  ASSERT_TRUE(lab.Down().ok());
}

}  // namespace
}  // namespace ferry::lab
