#include "sources/libvirt_vm.h"

#include <gtest/gtest.h>

#include <string>

#include "sources/share.h"
#include "test_util.h"

namespace ferry::sources {
namespace {

std::string Sample(const std::string& name) {
  const auto bytes =
      testing::ReadFileBytes(testing::SourceDir() + "/fuzz/corpus/libvirt_domain_fuzz/" + name);
  EXPECT_FALSE(bytes.empty()) << name;
  return std::string(bytes.begin(), bytes.end());
}

TEST(LibvirtDomainTest, DescribesDisksNicsAndDirectBoot) {
  auto vm = ParseLibvirtDomain(Sample("direct_boot.xml"), "kvm1/kvm1.xml");
  ASSERT_TRUE(vm.ok()) << vm.status().ToString();
  EXPECT_EQ(vm->name, "kvm1");
  EXPECT_EQ(vm->uuid, "8c1b4e2a-1d3f-4a5b-9c6d-7e8f90a1b2c3");
  EXPECT_EQ(vm->platform, Platform::kKvm);
  EXPECT_EQ(vm->vcpus, 2);  // current, not the maximum
  EXPECT_EQ(vm->memory_bytes, 1024ull << 20);
  EXPECT_EQ(vm->machine, "pc-q35-7.2");
  EXPECT_EQ(vm->firmware, "bios");
  EXPECT_EQ(vm->direct_boot.kernel, "/var/lib/libvirt/boot/vmlinuz");
  EXPECT_EQ(vm->direct_boot.initrd, "/var/lib/libvirt/boot/initrd.img");
  EXPECT_EQ(vm->direct_boot.cmdline, "console=ttyS0 root=/dev/vda");
  ASSERT_EQ(vm->disks.size(), 2u);
  EXPECT_EQ(vm->disks[0].id, "disk0");
  EXPECT_EQ(vm->disks[0].file, "/var/lib/libvirt/images/kvm1.qcow2");
  EXPECT_EQ(vm->disks[0].format, "qcow2");
  EXPECT_EQ(vm->disks[0].bus, "virtio");
  EXPECT_EQ(vm->disks[0].source_ref, "vda");
  EXPECT_EQ(vm->disks[1].file, "kvm1-data.raw");  // as written; the share resolves it
  EXPECT_EQ(vm->disks[1].bus, "sata");
  EXPECT_EQ(vm->problems, (std::vector<std::string>{"vdc: network disk cannot be moved cold",
                                                    "hdc: cdrom is not moved"}));
  ASSERT_EQ(vm->nics.size(), 2u);
  EXPECT_EQ(vm->nics[0].mac, "52:54:00:ab:cd:ef");
  EXPECT_EQ(vm->nics[0].network, "default");
  EXPECT_EQ(vm->nics[1].network, "br0");
  EXPECT_EQ(vm->nics[1].model, "e1000");
  EXPECT_TRUE(vm->missing.empty());
}

TEST(LibvirtDomainTest, ErrorsNameTheFile) {
  auto bad = ParseLibvirtDomain(Sample("bad_vcpu.xml"), "x/x.xml");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), ErrorCode::kCorrupt);
  EXPECT_EQ(bad.status().message(),
            "x/x.xml: domain XML: <vcpu>: 'abc' is not a non-negative integer");
  auto boot = ParseLibvirtDomain(Sample("cmdline_no_kernel.xml"), "c.xml");
  ASSERT_FALSE(boot.ok());
  EXPECT_EQ(boot.status().message(),
            "c.xml: domain XML: <os> has <initrd> or <cmdline> but no <kernel>");
  auto malformed = ParseLibvirtDomain("<domain><name>x</name", "m.xml");
  ASSERT_FALSE(malformed.ok());
  EXPECT_EQ(malformed.status().message().rfind("m.xml: domain XML: malformed XML at byte ", 0), 0u)
      << malformed.status().message();
}

TEST(DescribeLibvirtVmTest, TakesPoolsSizesAndStateFromTheInventory) {
  hypervisor::VmInfo info;
  info.name = "g1";
  info.uuid = "ABCDEF00-0000-0000-0000-000000000001";
  info.state = hypervisor::VmState::kRunning;
  hypervisor::VmDisk vda;
  vda.target = "vda";
  vda.type = "volume";
  vda.device = "disk";
  vda.source_path = "/srv/pools/local/g1.qcow2";
  vda.pool = "local";
  vda.capacity_bytes = 1 << 30;
  vda.allocation_bytes = 200 << 20;
  info.disks.push_back(vda);
  auto vm = DescribeLibvirtVm(Sample("uefi_volume.xml"), info);
  ASSERT_TRUE(vm.ok()) << vm.status().ToString();
  EXPECT_TRUE(vm->running);
  EXPECT_EQ(vm->uuid, "abcdef00-0000-0000-0000-000000000001");
  EXPECT_EQ(vm->firmware, "uefi");
  EXPECT_EQ(vm->memory_bytes, 512ull << 20);
  ASSERT_EQ(vm->disks.size(), 1u);
  EXPECT_EQ(vm->disks[0].file, "/srv/pools/local/g1.qcow2");
  EXPECT_EQ(vm->disks[0].datastore, "local");
  EXPECT_EQ(vm->disks[0].capacity_bytes, 1u << 30);
  EXPECT_EQ(vm->disks[0].allocated_bytes, 200u << 20);
  EXPECT_EQ(vm->problems, (std::vector<std::string>{"vdb: block device cannot be moved cold"}));
  EXPECT_TRUE(vm->descriptor.empty());

  info.state = hypervisor::VmState::kShutoff;
  auto off = DescribeLibvirtVm(Sample("uefi_volume.xml"), info);
  ASSERT_TRUE(off.ok());
  EXPECT_FALSE(off->running);

  // Without the inventory's path a volume disk cannot be found.
  info.disks.clear();
  auto unresolved = DescribeLibvirtVm(Sample("uefi_volume.xml"), info);
  ASSERT_TRUE(unresolved.ok());
  EXPECT_TRUE(unresolved->disks.empty());
  EXPECT_EQ(unresolved->problems[0], "vda: storage volume disk cannot be moved cold");

  auto broken = DescribeLibvirtVm("<domain>", info);
  ASSERT_FALSE(broken.ok());
  EXPECT_EQ(broken.status().message().rfind("domain g1: domain XML: malformed XML", 0), 0u)
      << broken.status().message();
}

}  // namespace
}  // namespace ferry::sources
