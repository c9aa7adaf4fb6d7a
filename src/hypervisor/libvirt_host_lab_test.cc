// LibvirtHost against the real lab: two libvirtd hosts, a guest on host 1 with its disk on the
// shared pool nas1. Asserts host facts, the guest's inventory entry (state, vCPUs, memory,
// disk with format, pool and size, NIC with MAC and network), pools and networks, and that
// host 2 does not list the guest. Needs root and scripts/lab-deps (label "lab").
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "hypervisor/libvirt_host.h"
#include "lab/lab.h"

namespace ferry::hypervisor {
namespace {

constexpr int kAddressBase = 50;  // 127.0.0.51, .52: apart from other labs' bases
constexpr uint64_t kMiB = 1024 * 1024;

// A fresh folder under /var/tmp (the lab's root goes inside); Down + removal on exit.
struct LabRoot {
  std::string dir;
  std::string root;
  LabRoot() {
    char tmpl[] = "/var/tmp/ferry-hyp-test-XXXXXX";
    const char* made = mkdtemp(tmpl);
    if (made != nullptr) dir = made;
    root = dir + "/lab";
  }
  ~LabRoot() {
    if (dir.empty()) return;
    (void)lab::Lab::Down(root);
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
};

const VmInfo* FindVm(const Inventory& inv, const std::string& name) {
  for (const VmInfo& vm : inv.vms) {
    if (vm.name == name) return &vm;
  }
  return nullptr;
}

TEST(LibvirtHost, LabInventory) {
  const auto t0 = std::chrono::steady_clock::now();
  LabRoot dirs;
  ASSERT_FALSE(dirs.dir.empty());
  lab::LabConfig config;
  config.root = dirs.root;
  config.hosts = 2;
  config.address_base = kAddressBase;
  config.accel = lab::Accel::kTcg;  // what the probe cache says on this machine; no probe
  config.guest_binary = FERRY_GUEST_BINARY;
  auto up = lab::Lab::Up(config);
  ASSERT_TRUE(up.ok()) << up.status().ToString();
  lab::Lab& lab = **up;

  lab::GuestSpec spec;
  spec.name = "hv1";
  spec.host = 1;
  spec.pool = "nas1";
  spec.vcpus = 1;
  spec.memory_mib = 256;
  spec.disk_mib = 32;
  spec.disk_format = "qcow2";
  auto guest = lab.CreateGuest(spec);
  ASSERT_TRUE(guest.ok()) << guest.status().ToString();

  auto bad = LibvirtHost::Connect("qemu+tcp://127.0.0.1:1/system");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), ErrorCode::kIo);
  EXPECT_NE(bad.status().message().find("qemu+tcp://127.0.0.1:1/system"), std::string::npos)
      << bad.status().ToString();

  auto h1 = LibvirtHost::Connect(lab.host(1).uri);
  ASSERT_TRUE(h1.ok()) << h1.status().ToString();
  auto h2 = LibvirtHost::Connect(lab.host(2).uri);
  ASSERT_TRUE(h2.ok()) << h2.status().ToString();
  EXPECT_EQ((*h1)->uri(), lab.host(1).uri);

  auto inv1 = (*h1)->Inventory();
  ASSERT_TRUE(inv1.ok()) << inv1.status().ToString();

  // Host facts.
  const HostFacts& facts = inv1->host;
  EXPECT_EQ(facts.hostname, "host1");
  EXPECT_EQ(facts.uri, lab.host(1).uri);
  EXPECT_GT(facts.cpus, 0);
  EXPECT_GT(facts.memory_bytes, 0u);
  EXPECT_GT(facts.free_memory_bytes, 0u);
  EXPECT_LE(facts.free_memory_bytes, facts.memory_bytes);
  EXPECT_EQ(facts.cpu_arch, "x86_64");
  EXPECT_EQ(facts.libvirt_version, "9.0.0");
  EXPECT_EQ(facts.hypervisor, "qemu");
  EXPECT_NE(std::find(facts.domain_types.begin(), facts.domain_types.end(), "qemu"),
            facts.domain_types.end());
  std::printf("host1: cpu %s/%s, %d cpus, %llu MiB (%llu free), domain types:",
              facts.cpu_model.c_str(), facts.cpu_arch.c_str(), facts.cpus,
              static_cast<unsigned long long>(facts.memory_bytes / kMiB),
              static_cast<unsigned long long>(facts.free_memory_bytes / kMiB));
  for (const auto& t : facts.domain_types) std::printf(" %s", t.c_str());
  std::printf("\n");

  // The guest.
  const VmInfo* vm = FindVm(*inv1, "hv1");
  ASSERT_NE(vm, nullptr);
  EXPECT_EQ(vm->state, VmState::kRunning);
  EXPECT_TRUE(vm->persistent);
  EXPECT_EQ(vm->uuid.size(), 36u);
  EXPECT_EQ(vm->vcpus, 1);
  EXPECT_EQ(vm->memory_bytes, 256 * kMiB);
  EXPECT_EQ(vm->machine_type.rfind("pc", 0), 0u) << vm->machine_type;
  EXPECT_EQ(vm->firmware, Firmware::kBios);
  EXPECT_EQ(vm->domain_type, lab.state().domain_type);
  ASSERT_EQ(vm->disks.size(), 1u);
  const VmDisk& disk = vm->disks[0];
  EXPECT_EQ(disk.target, "vda");
  EXPECT_EQ(disk.bus, "virtio");
  EXPECT_EQ(disk.device, "disk");
  EXPECT_EQ(disk.format, "qcow2");
  EXPECT_EQ(disk.pool, "nas1");
  EXPECT_EQ(disk.source_path, guest->disk_path);
  EXPECT_EQ(disk.capacity_bytes, 32 * kMiB);
  EXPECT_GT(disk.allocation_bytes, 0u);
  EXPECT_LT(disk.allocation_bytes, 32 * kMiB);  // a fresh qcow2 is small
  ASSERT_EQ(vm->nics.size(), 1u);
  EXPECT_EQ(vm->nics[0].mac, guest->mac);
  EXPECT_EQ(vm->nics[0].network, "lab");
  EXPECT_EQ(vm->nics[0].type, "network");
  EXPECT_EQ(vm->nics[0].model, "virtio");
  EXPECT_EQ(vm->nics[0].bridge, lab.state().bridge);

  // GetVm gives the same; a missing VM is kNotFound.
  auto one = (*h1)->GetVm("hv1");
  ASSERT_TRUE(one.ok()) << one.status().ToString();
  EXPECT_EQ(one->uuid, vm->uuid);
  EXPECT_EQ(one->disks.size(), 1u);
  EXPECT_EQ(one->disks[0].capacity_bytes, 32 * kMiB);
  auto missing = (*h1)->GetVm("no-such-vm");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), ErrorCode::kNotFound);

  // Pools and the network.
  std::map<std::string, PoolInfo> pools;
  for (const PoolInfo& p : inv1->pools) pools[p.name] = p;
  ASSERT_EQ(pools.size(), 3u);
  for (const char* name : {"local", "nas1", "nas2"}) {
    ASSERT_TRUE(pools.count(name)) << name;
    const PoolInfo& p = pools[name];
    EXPECT_EQ(p.type, "dir") << name;
    EXPECT_TRUE(p.active) << name;
    EXPECT_GT(p.capacity_bytes, 0u) << name;
    EXPECT_GT(p.available_bytes, 0u) << name;
    EXPECT_LE(p.available_bytes, p.capacity_bytes) << name;
  }
  EXPECT_EQ(pools["nas1"].path, dirs.root + "/nas1");
  EXPECT_EQ(pools["local"].path, lab.host(1).local_pool_dir);
  ASSERT_EQ(inv1->networks.size(), 1u);
  EXPECT_EQ(inv1->networks[0].name, "lab");
  EXPECT_TRUE(inv1->networks[0].active);
  EXPECT_EQ(inv1->networks[0].forward_mode, "bridge");
  EXPECT_EQ(inv1->networks[0].bridge, lab.state().bridge);

  // One connection used from several threads at once (the agent's request handlers do this).
  {
    constexpr int kThreads = 4;
    std::vector<int> vm_counts(kThreads, -1);
    std::vector<std::thread> threads;
    for (int i = 0; i < kThreads; ++i) {
      threads.emplace_back([&, i] {
        for (int round = 0; round < 3; ++round) {
          auto inv = (*h1)->Inventory();
          auto missing_vm = (*h1)->GetVm("no-such-vm-" + std::to_string(i));
          if (!inv.ok() || missing_vm.status().code() != ErrorCode::kNotFound) return;
          vm_counts[i] = static_cast<int>(inv->vms.size());
        }
      });
    }
    for (auto& t : threads) t.join();
    for (int i = 0; i < kThreads; ++i) EXPECT_EQ(vm_counts[i], 1) << "thread " << i;
  }

  // Host 2: its own facts, the same pools, no such VM.
  auto inv2 = (*h2)->Inventory();
  ASSERT_TRUE(inv2.ok()) << inv2.status().ToString();
  EXPECT_EQ(inv2->host.hostname, "host2");
  EXPECT_EQ(FindVm(*inv2, "hv1"), nullptr);
  EXPECT_EQ(inv2->pools.size(), 3u);
  auto on2 = (*h2)->GetVm("hv1");
  ASSERT_FALSE(on2.ok());
  EXPECT_EQ(on2.status().code(), ErrorCode::kNotFound);

  // A shut-off guest is still listed (persistent, state shutoff).
  auto destroyed = lab.Virsh(1, {"destroy", "hv1"});
  ASSERT_TRUE(destroyed.ok()) << destroyed.status().ToString();
  auto off = (*h1)->GetVm("hv1");
  ASSERT_TRUE(off.ok()) << off.status().ToString();
  EXPECT_EQ(off->state, VmState::kShutoff);
  EXPECT_TRUE(off->persistent);

  h1->reset();
  h2->reset();
  ASSERT_TRUE(lab.Down().ok());
  std::printf("test took %lld ms\n",
              static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                         std::chrono::steady_clock::now() - t0)
                                         .count()));
}

}  // namespace
}  // namespace ferry::hypervisor
