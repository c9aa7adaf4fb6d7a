// LibvirtHost's operations against the real lab: two libvirtd hosts (address base 60) brought
// up once for the suite, real guests with heartbeat, memory dirtier and disk writer.
//   Migration: dirty rate measured vs. the dirtier's rate; a throttled migration watched with
//     GetJobStats, steered with SetMaxSpeed/SetMaxDowntime, aborted (kCancelled, VM still on
//     host 1 only); then a live migration to host 2 (heartbeats continue, none lost).
//   StorageAndQuick: CPU/machine/UEFI checks, volumes, define/undefine, suspend/resume; a quick
//     migration by hand (Save on host 1, Restore + define on host 2); a block copy from nas1 to
//     host 2's local pool with pivot; a verify boot of the copy proves no write was lost.
// Needs root and scripts/lab-deps (label "lab").
#include <gtest/gtest.h>
#include <stdlib.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "hypervisor/libvirt_host.h"
#include "lab/console.h"
#include "lab/lab.h"

namespace ferry::hypervisor {
namespace {

using lab::ConsoleWatcher;

constexpr int kAddressBase = 60;  // 127.0.0.61, .62
constexpr uint64_t kMiB = 1024 * 1024;
constexpr int64_t kBootTimeoutMs = 150000;
constexpr int64_t kStepTimeoutMs = 60000;
constexpr int64_t kNsPerMs = 1000000;

int64_t MsSince(int64_t ns) { return (ConsoleWatcher::NowNs() - ns) / kNsPerMs; }

// Highest "FERRY-DISK-SEQ n" the guest printed (-1: none).
long long LastDurableSeq(const ConsoleWatcher& console) {
  long long durable = -1;
  for (const auto& line : console.Lines()) {
    long long seq = 0;
    if (std::sscanf(line.text.c_str(), "FERRY-DISK-SEQ %lld", &seq) == 1) durable = seq;
  }
  return durable;
}

class LibvirtOperationsLab : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    std::setvbuf(stdout, nullptr, _IONBF, 0);  // progress lines survive a crash
    char tmpl[] = "/var/tmp/ferry-hvops-test-XXXXXX";
    const char* made = mkdtemp(tmpl);
    ASSERT_NE(made, nullptr);
    dir_ = made;
    lab::LabConfig config;
    config.root = dir_ + "/lab";
    config.hosts = 2;
    config.address_base = kAddressBase;
    config.accel = lab::Accel::kTcg;  // KVM does not work on these machines; skip the probe
    config.guest_binary = FERRY_GUEST_BINARY;
    const int64_t t0 = ConsoleWatcher::NowNs();
    auto up = lab::Lab::Up(config);
    ASSERT_TRUE(up.ok()) << up.status().ToString();
    lab_ = std::move(*up);
    std::printf("lab up in %lld ms\n", static_cast<long long>(MsSince(t0)));
    auto h1 = LibvirtHost::Connect(lab_->host(1).uri);
    ASSERT_TRUE(h1.ok()) << h1.status().ToString();
    auto h2 = LibvirtHost::Connect(lab_->host(2).uri);
    ASSERT_TRUE(h2.ok()) << h2.status().ToString();
    h1_ = std::move(*h1);
    h2_ = std::move(*h2);
  }

  static void TearDownTestSuite() {
    h1_.reset();
    h2_.reset();
    if (lab_ != nullptr) {
      EXPECT_TRUE(lab_->Down().ok());
    }
    lab_.reset();
    if (!dir_.empty()) {
      (void)lab::Lab::Down(dir_ + "/lab");  // also when Up failed half-way
      std::error_code ec;
      std::filesystem::remove_all(dir_, ec);
    }
  }

  void SetUp() override {
    ASSERT_NE(lab_, nullptr);
    ASSERT_NE(h1_, nullptr);
    ASSERT_NE(h2_, nullptr);
  }

  static std::vector<int> Running(const std::string& name) {
    auto r = lab_->HostsRunning(name);
    return r.ok() ? *r : std::vector<int>{-1};
  }

  static VmState StateOf(const LibvirtHost& host, const std::string& name) {
    auto s = host.State(name);
    return s.ok() ? *s : VmState::kUnknown;
  }

  // Suite-lifetime (gtest's suite hooks are static): one lab for every test of the binary.
  static std::string dir_;
  static std::unique_ptr<lab::Lab> lab_;
  static std::unique_ptr<LibvirtHost> h1_;
  static std::unique_ptr<LibvirtHost> h2_;
};

std::string LibvirtOperationsLab::dir_;
std::unique_ptr<lab::Lab> LibvirtOperationsLab::lab_;
std::unique_ptr<LibvirtHost> LibvirtOperationsLab::h1_;
std::unique_ptr<LibvirtHost> LibvirtOperationsLab::h2_;

TEST_F(LibvirtOperationsLab, Migration) {
  constexpr int kDirtyMib = 64;
  constexpr int kDirtyRateMib = 32;
  lab::GuestSpec spec;
  spec.name = "mig1";
  spec.host = 1;
  spec.pool = "nas1";
  spec.dirty_mib = kDirtyMib;
  spec.dirty_rate_mib = kDirtyRateMib;
  auto guest = lab_->CreateGuest(spec);
  ASSERT_TRUE(guest.ok()) << guest.status().ToString();
  ConsoleWatcher console(guest->console_log);
  console.Start();
  auto dirty = console.WaitForLine("FERRY-DIRTY-READY", kBootTimeoutMs);
  ASSERT_TRUE(dirty.ok()) << dirty.status().ToString();
  ASSERT_TRUE(console.WaitForHeartbeats(50, kStepTimeoutMs).ok());

  // Missing domains are kNotFound, bad arguments kInvalidArgument.
  EXPECT_EQ(h1_->State("no-such-vm").status().code(), ErrorCode::kNotFound);
  MigrateParams to2;
  to2.dest_uri = lab_->host(2).uri;
  to2.migration_uri = lab_->host(2).migration_uri;
  to2.unsafe = true;  // the lab's shared pools are plain folders (docs/lab.md)
  EXPECT_EQ(h1_->Migrate("no-such-vm", to2).code(), ErrorCode::kNotFound);
  EXPECT_EQ(h1_->MeasureDirtyRate("mig1", 0).status().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(h1_->SetMaxDowntime("mig1", 0).code(), ErrorCode::kInvalidArgument);

  // Dirty rate (page sampling works under TCG): roughly the dirtier's rate.
  const int64_t t_rate = ConsoleWatcher::NowNs();
  auto rate = h1_->MeasureDirtyRate("mig1", 2);
  ASSERT_TRUE(rate.ok()) << rate.status().ToString();
  std::printf("dirty rate %.1f MiB/s measured in %lld ms (dirtier: %d MiB/s over %d MiB)\n",
              static_cast<double>(*rate) / kMiB, static_cast<long long>(MsSince(t_rate)),
              kDirtyRateMib, kDirtyMib);
  EXPECT_GE(*rate, kDirtyRateMib / 4 * kMiB);
  EXPECT_LE(*rate, kDirtyRateMib * 4 * kMiB);

  // A migration throttled below the dirty rate with a 10 ms downtime limit never converges
  // (QEMU would need under 24 MiB/s x 10 ms = 240 KiB left): watch, steer, abort.
  MigrateParams slow = to2;
  slow.bandwidth = 24 * kMiB;
  slow.max_downtime_ms = 10;
  Status slow_result;
  std::thread migrating([&] { slow_result = h1_->Migrate("mig1", slow); });
  // Whatever happens below, the migration is aborted and its thread joined.
  struct AbortAndJoin {
    std::thread& t;
    ~AbortAndJoin() {
      if (!t.joinable()) return;
      (void)h1_->AbortJob("mig1");
      t.join();
    }
  } guard{migrating};
  JobStats seen;
  bool steered = false;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(40);
  while (std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    auto stats = h1_->GetJobStats("mig1");
    ASSERT_TRUE(stats.ok()) << stats.status().ToString();
    if (!stats->active || stats->memory_processed == 0) continue;
    seen = *stats;
    if (!steered) {
      auto downtime = lab_->Virsh(1, {"migrate-getmaxdowntime", "mig1"});
      ASSERT_TRUE(downtime.ok()) << downtime.status().ToString();
      EXPECT_EQ(downtime->substr(0, downtime->find_first_of("\n")), "10");
      EXPECT_TRUE(h1_->SetMaxDowntime("mig1", 20).ok());
      ASSERT_TRUE(h1_->SetMaxSpeed("mig1", 20 * kMiB).ok());
      auto speed = lab_->Virsh(1, {"migrate-getspeed", "mig1"});
      ASSERT_TRUE(speed.ok()) << speed.status().ToString();
      EXPECT_EQ(speed->substr(0, speed->find_first_of("\n")), "20");
      steered = true;
    }
    if (seen.memory_iteration >= 2 && seen.memory_dirty_rate > 0) break;
  }
  std::printf(
      "throttled migration: type %s op %s, %lld ms, memory %llu/%llu MiB (remaining %llu), "
      "%.1f MiB/s, dirty %.1f MiB/s, iteration %llu, expected downtime %lld ms\n",
      seen.type.c_str(), seen.operation.c_str(), static_cast<long long>(seen.elapsed_ms),
      static_cast<unsigned long long>(seen.memory_processed / kMiB),
      static_cast<unsigned long long>(seen.memory_total / kMiB),
      static_cast<unsigned long long>(seen.memory_remaining / kMiB),
      static_cast<double>(seen.memory_bps) / kMiB,
      static_cast<double>(seen.memory_dirty_rate) / kMiB,
      static_cast<unsigned long long>(seen.memory_iteration),
      static_cast<long long>(seen.downtime_ms));
  EXPECT_TRUE(steered);
  EXPECT_TRUE(seen.active);
  EXPECT_EQ(seen.type, "unbounded");
  EXPECT_EQ(seen.operation, "migration-out");
  EXPECT_GE(seen.memory_total, 256 * kMiB);
  EXPECT_GT(seen.memory_processed, 0u);
  EXPECT_GT(seen.memory_remaining, 0u);
  EXPECT_GT(seen.elapsed_ms, 0);
  EXPECT_GE(seen.memory_iteration, 2u);
  EXPECT_GT(seen.memory_dirty_rate, 4 * kMiB);
  EXPECT_LE(seen.memory_bps, 40 * kMiB);  // throttled to 24, then 20 MiB/s
  EXPECT_FALSE(seen.postcopy);
  ASSERT_TRUE(h1_->AbortJob("mig1").ok());
  migrating.join();
  EXPECT_EQ(slow_result.code(), ErrorCode::kCancelled) << slow_result.ToString();
  EXPECT_NE(slow_result.message().find("virDomainMigrateToURI3 mig1"), std::string::npos)
      << slow_result.ToString();
  EXPECT_EQ(Running("mig1"), std::vector<int>{1});
  EXPECT_EQ(h2_->State("mig1").status().code(), ErrorCode::kNotFound);
  auto state = h1_->State("mig1");
  ASSERT_TRUE(state.ok()) << state.status().ToString();
  EXPECT_EQ(*state, VmState::kRunning);
  const int64_t t_aborted = ConsoleWatcher::NowNs();
  ASSERT_TRUE(console.WaitForHeartbeats(50, kStepTimeoutMs, t_aborted).ok());
  // The cancelled job's statistics.
  auto cancelled = h1_->GetJobStats("mig1", /*completed=*/true);
  ASSERT_TRUE(cancelled.ok()) << cancelled.status().ToString();
  EXPECT_FALSE(cancelled->active);
  std::printf("after abort: completed-job stats type %s\n", cancelled->type.c_str());

  // Live migration at full speed: runs on host 2 only, persistent there, gone from host 1.
  ASSERT_TRUE(h1_->SetMaxSpeed("mig1", 0).ok());  // lift the cap left by the aborted job
  MigrateParams fast = to2;
  fast.max_downtime_ms = 500;
  const int64_t t_mig = ConsoleWatcher::NowNs();
  Status migrated = h1_->Migrate("mig1", fast);
  ASSERT_TRUE(migrated.ok()) << migrated.ToString();
  const int64_t t_done = ConsoleWatcher::NowNs();
  EXPECT_EQ(Running("mig1"), std::vector<int>{2});
  EXPECT_EQ(h1_->State("mig1").status().code(), ErrorCode::kNotFound);
  auto done = h2_->GetJobStats("mig1", /*completed=*/true);
  ASSERT_TRUE(done.ok()) << done.status().ToString();
  EXPECT_EQ(done->type, "completed");
  EXPECT_GT(done->memory_processed, 0u);
  EXPECT_GT(done->downtime_ms, 0);
  ASSERT_TRUE(console.WaitForHeartbeats(100, kStepTimeoutMs, t_done).ok());
  const lab::HeartbeatStats hb = console.Heartbeats(t_mig - 1000 * kNsPerMs);
  std::printf(
      "live migration %lld ms: QEMU downtime %lld ms, %llu MiB at %.0f MiB/s; largest "
      "host-seen heartbeat gap %.1f ms, %llu missing\n",
      static_cast<long long>((t_done - t_mig) / kNsPerMs),
      static_cast<long long>(done->downtime_ms),
      static_cast<unsigned long long>(done->memory_processed / kMiB),
      static_cast<double>(done->memory_bps) / kMiB, hb.max_gap_ns / 1e6,
      static_cast<unsigned long long>(hb.missing));
  EXPECT_EQ(hb.missing, 0u);
  EXPECT_GT(hb.last_counter, hb.first_counter + 100);
  auto config = h2_->DomainXml("mig1", /*inactive=*/true);
  ASSERT_TRUE(config.ok()) << config.status().ToString();
  EXPECT_NE(config->find("<name>mig1</name>"), std::string::npos);
  EXPECT_TRUE(h2_->Destroy("mig1").ok());
}

TEST_F(LibvirtOperationsLab, StorageAndQuick) {
  lab::GuestSpec spec;
  spec.name = "sto1";
  spec.host = 1;
  spec.pool = "nas1";
  spec.disk_mib = 32;
  spec.disk_iops = 100;
  auto guest = lab_->CreateGuest(spec);
  ASSERT_TRUE(guest.ok()) << guest.status().ToString();
  ConsoleWatcher console(guest->console_log);
  console.Start();

  // While it boots: checks that need no running guest.
  auto xml = h1_->DomainXml("sto1");
  ASSERT_TRUE(xml.ok()) << xml.status().ToString();
  auto cpu = h1_->CompareCpu(*xml);
  ASSERT_TRUE(cpu.ok()) << cpu.status().ToString();
  EXPECT_TRUE(cpu->result == CpuCompatibility::kIdentical ||
              cpu->result == CpuCompatibility::kSuperset)
      << static_cast<int>(cpu->result) << " " << cpu->message;
  const std::string big_cpu =
      "<cpu mode='custom' match='exact'><model>Skylake-Server</model></cpu>";
  auto big = h1_->CompareCpu(big_cpu, CpuTarget{"qemu", "x86_64", ""});
  ASSERT_TRUE(big.ok()) << big.status().ToString();
  EXPECT_EQ(big->result, CpuCompatibility::kIncompatible);
  EXPECT_NE(big->message.find("avx512"), std::string::npos) << big->message;
  auto no_cpu = h1_->CompareCpu("<domain type='qemu'><name>x</name></domain>");
  ASSERT_TRUE(no_cpu.ok()) << no_cpu.status().ToString();
  EXPECT_EQ(no_cpu->result, CpuCompatibility::kIdentical);
  EXPECT_EQ(h1_->CompareCpu("<disk/>").status().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(h1_->CompareCpu("<cpu").status().code(), ErrorCode::kCorrupt);

  auto machines = h1_->MachineTypes("x86_64");
  ASSERT_TRUE(machines.ok()) << machines.status().ToString();
  for (const char* m : {"pc", "q35", "pc-i440fx-7.2"}) {
    EXPECT_NE(std::find(machines->begin(), machines->end(), m), machines->end()) << m;
  }
  EXPECT_EQ(h1_->MachineTypes("no-arch").status().code(), ErrorCode::kNotFound);
  auto uefi = h1_->SupportsUefi("x86_64", "q35");
  ASSERT_TRUE(uefi.ok()) << uefi.status().ToString();
  EXPECT_EQ(*uefi, std::filesystem::exists("/usr/share/OVMF")) << "OVMF installed?";

  // Volumes.
  auto vol = h2_->CreateVolume("local", "scratch.raw", 4 * kMiB, "raw");
  ASSERT_TRUE(vol.ok()) << vol.status().ToString();
  EXPECT_EQ(*vol, lab_->host(2).local_pool_dir + "/scratch.raw");
  EXPECT_EQ(std::filesystem::file_size(*vol), 4 * kMiB);
  EXPECT_EQ(h2_->CreateVolume("local", "scratch.raw", kMiB, "raw").status().code(),
            ErrorCode::kAlreadyExists);
  EXPECT_EQ(h2_->CreateVolume("nopool", "x.raw", kMiB, "raw").status().code(),
            ErrorCode::kNotFound);
  EXPECT_EQ(h2_->CreateVolume("local", "../x.raw", kMiB, "raw").status().code(),
            ErrorCode::kInvalidArgument);
  EXPECT_EQ(h2_->CreateVolume("local", "x.vmdk", kMiB, "vmdk").status().code(),
            ErrorCode::kInvalidArgument);
  ASSERT_TRUE(h2_->DeleteVolume(*vol).ok());
  EXPECT_FALSE(std::filesystem::exists(*vol));
  EXPECT_EQ(h2_->DeleteVolume(*vol).code(), ErrorCode::kNotFound);
  // A file another host made in a shared pool: found after the refresh DeleteVolume does.
  auto shared = h1_->CreateVolume("nas2", "shared.qcow2", 4 * kMiB, "qcow2");
  ASSERT_TRUE(shared.ok()) << shared.status().ToString();
  EXPECT_TRUE(h2_->DeleteVolume(*shared).ok());
  EXPECT_FALSE(std::filesystem::exists(*shared));
  EXPECT_TRUE(h1_->RefreshPool("nas2").ok());
  EXPECT_EQ(h1_->RefreshPool("nopool").code(), ErrorCode::kNotFound);

  // Define / start / undefine a second domain from the guest's definition.
  auto inactive = h1_->DomainXml("sto1", /*inactive=*/true);
  ASSERT_TRUE(inactive.ok()) << inactive.status().ToString();
  std::string other = *inactive;
  other.replace(other.find("<name>sto1</name>"), 17, "<name>sto1-def</name>");
  const size_t uuid = other.find("<uuid>");
  ASSERT_NE(uuid, std::string::npos);
  other.erase(uuid, other.find("</uuid>") + 7 - uuid);
  ASSERT_TRUE(h1_->DefineXml(other).ok());
  auto def_state = h1_->State("sto1-def");
  ASSERT_TRUE(def_state.ok()) << def_state.status().ToString();
  EXPECT_EQ(*def_state, VmState::kShutoff);
  EXPECT_EQ(h1_->DefineXml("<domain>").code(), ErrorCode::kIo);
  ASSERT_TRUE(h1_->Undefine("sto1-def").ok());
  EXPECT_EQ(h1_->State("sto1-def").status().code(), ErrorCode::kNotFound);
  EXPECT_EQ(h1_->Undefine("sto1-def").code(), ErrorCode::kNotFound);

  // The guest is up: suspend and resume.
  auto disk_ok = console.WaitForLine("FERRY-DISK-OK", kBootTimeoutMs);
  ASSERT_TRUE(disk_ok.ok()) << disk_ok.status().ToString();
  ASSERT_TRUE(console.WaitForHeartbeats(50, kStepTimeoutMs).ok());
  ASSERT_TRUE(h1_->Suspend("sto1").ok());
  EXPECT_EQ(StateOf(*h1_, "sto1"), VmState::kPaused);
  ASSERT_TRUE(h1_->Resume("sto1").ok());
  EXPECT_EQ(StateOf(*h1_, "sto1"), VmState::kRunning);

  // Quick migration by hand: save on host 1 to shared storage, restore on host 2, define it
  // there, undefine on host 1.
  const std::string save_path = lab_->state().root + "/nas2/sto1.save";
  const int64_t t_save = ConsoleWatcher::NowNs();
  ASSERT_TRUE(h1_->Save("sto1", save_path).ok());
  EXPECT_EQ(StateOf(*h1_, "sto1"), VmState::kShutoff);
  ASSERT_TRUE(h2_->Restore(save_path).ok());
  const int64_t t_restored = ConsoleWatcher::NowNs();
  ASSERT_TRUE(h2_->DefineXml(*inactive).ok());
  ASSERT_TRUE(h1_->Undefine("sto1").ok());
  EXPECT_EQ(Running("sto1"), std::vector<int>{2});
  EXPECT_EQ(h2_->Restore(save_path + ".missing").code(), ErrorCode::kIo);
  ASSERT_TRUE(console.WaitForHeartbeats(50, kStepTimeoutMs, t_restored).ok());
  const lab::HeartbeatStats hb = console.Heartbeats(t_save - 1000 * kNsPerMs);
  std::printf("quick migration (save + restore) %lld ms; host-seen heartbeat gap %.1f ms\n",
              static_cast<long long>((t_restored - t_save) / kNsPerMs), hb.max_gap_ns / 1e6);
  EXPECT_EQ(hb.missing, 0u);
  std::filesystem::remove(save_path);

  // Block copy from nas1 to host 2's local pool, then pivot.
  auto copy_path = h2_->CreateVolume("local", "sto1copy.qcow2", 32 * kMiB, "qcow2");
  ASSERT_TRUE(copy_path.ok()) << copy_path.status().ToString();
  BlockCopyParams bc;
  bc.disk = "vda";
  bc.dest_path = *copy_path;
  bc.dest_format = "qcow2";
  bc.reuse_existing = true;
  const int64_t t_copy = ConsoleWatcher::NowNs();
  ASSERT_TRUE(h2_->BlockCopy("sto1", bc).ok());
  BlockJob job;
  while (MsSince(t_copy) < kStepTimeoutMs) {
    auto j = h2_->GetBlockJob("sto1", "vda");
    ASSERT_TRUE(j.ok()) << j.status().ToString();
    job = *j;
    ASSERT_TRUE(job.exists);
    if (job.ready) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_TRUE(job.ready) << job.cur << "/" << job.end;
  EXPECT_EQ(job.type, "copy");
  EXPECT_EQ(job.cur, job.end);
  std::printf("block copy ready in %lld ms (%llu bytes)\n", static_cast<long long>(MsSince(t_copy)),
              static_cast<unsigned long long>(job.end));
  ASSERT_TRUE(h2_->BlockJobAbort("sto1", "vda", /*pivot=*/true).ok());
  const int64_t t_pivot = ConsoleWatcher::NowNs();
  auto after = h2_->GetBlockJob("sto1", "vda");
  ASSERT_TRUE(after.ok()) << after.status().ToString();
  EXPECT_FALSE(after->exists);
  auto live = h2_->DomainXml("sto1");
  ASSERT_TRUE(live.ok());
  EXPECT_NE(live->find(*copy_path), std::string::npos);
  auto persistent = h2_->DomainXml("sto1", /*inactive=*/true);
  ASSERT_TRUE(persistent.ok());
  EXPECT_NE(persistent->find(*copy_path), std::string::npos)
      << "libvirt did not update the persistent definition after the pivot";
  EXPECT_EQ(h2_->BlockJobAbort("sto1", "vda", true).code(), ErrorCode::kIo);

  // The writer keeps going on the copy; a hard stop and a verify boot of the copy must find
  // every block up to the last one reported durable.
  auto seq = console.WaitForLine("FERRY-DISK-SEQ", kStepTimeoutMs, t_pivot);
  ASSERT_TRUE(seq.ok()) << seq.status().ToString();
  ASSERT_TRUE(h2_->Destroy("sto1").ok());
  const long long durable = LastDurableSeq(console);
  ASSERT_GT(durable, 0);
  lab::GuestSpec verify;
  verify.name = "sto1verify";
  verify.host = 2;
  verify.pool = "local";
  verify.volume = "sto1copy.qcow2";
  verify.disk_mode = lab::DiskMode::kVerify;
  verify.heartbeat_ms = 0;
  auto gv = lab_->CreateGuest(verify);
  ASSERT_TRUE(gv.ok()) << gv.status().ToString();
  ConsoleWatcher vconsole(gv->console_log);
  vconsole.Start();
  auto verdict = vconsole.WaitForLine("FERRY-DISK-", kBootTimeoutMs);
  ASSERT_TRUE(verdict.ok()) << verdict.status().ToString();
  long long found = -2;
  ASSERT_EQ(std::sscanf(verdict->text.c_str(), "FERRY-DISK-OK %lld", &found), 1) << verdict->text;
  EXPECT_GE(found, durable);
  std::printf("verify boot of the copy: %s (last reported durable %lld)\n", verdict->text.c_str(),
              durable);
  EXPECT_TRUE(h2_->Destroy("sto1verify").ok());
}

}  // namespace
}  // namespace ferry::hypervisor
