// Domain, pool, network and capabilities XML parsing on samples shaped like what libvirt 9
// writes, and on malformed / hostile input.
#include "hypervisor/domain_xml.h"

#include <gtest/gtest.h>

#include <string>

namespace ferry::hypervisor {
namespace {

constexpr uint64_t kMiB = 1024 * 1024;

// A running lab guest as `virsh dumpxml` shows it (type volume disk, network NIC).
constexpr const char* kLabGuest = R"(<domain type='qemu' id='1'>
  <name>g1</name>
  <uuid>6f1c2b8e-4a2d-4c1e-9a43-0d7f6e1b2c3d</uuid>
  <memory unit='KiB'>262144</memory>
  <currentMemory unit='KiB'>262144</currentMemory>
  <vcpu placement='static'>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc-i440fx-7.2'>hvm</type>
    <kernel>/var/tmp/ferry-lab/images/vmlinuz</kernel>
    <initrd>/var/tmp/ferry-lab/images/initrd.img</initrd>
    <cmdline>console=ttyS0 quiet</cmdline>
    <boot dev='hd'/>
  </os>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='volume' device='disk'>
      <driver name='qemu' type='qcow2' cache='none'/>
      <source pool='nas1' volume='g1.qcow2' index='1'/>
      <backingStore/>
      <target dev='vda' bus='virtio'/>
      <alias name='virtio-disk0'/>
    </disk>
    <interface type='network'>
      <mac address='52:54:00:fe:00:01'/>
      <source network='lab' portid='1c9f' bridge='ferry12345678'/>
      <target dev='vnet0'/>
      <model type='virtio'/>
    </interface>
    <serial type='file'><source path='/x/console.log' append='on'/></serial>
  </devices>
</domain>)";

// A UEFI q35 guest with file, block, cdrom and network disks, bridge and direct NICs.
constexpr const char* kUefiGuest = R"(<?xml version="1.0"?>
<domain type="kvm">
  <name>web-01</name>
  <uuid>11111111-2222-3333-4444-555555555555</uuid>
  <memory unit="GiB">4</memory>
  <vcpu current="2">8</vcpu>
  <os>
    <type arch="x86_64" machine="pc-q35-7.2">hvm</type>
    <loader readonly="yes" type="pflash">/usr/share/OVMF/OVMF_CODE_4M.fd</loader>
    <nvram>/var/lib/libvirt/qemu/nvram/web-01_VARS.fd</nvram>
  </os>
  <devices>
    <disk type="file" device="disk">
      <driver name="qemu" type="raw"/>
      <source file="/var/lib/libvirt/images/web-01.img"/>
      <target dev="sda" bus="sata"/>
    </disk>
    <disk type="block" device="disk">
      <driver name="qemu" type="raw"/>
      <source dev="/dev/vg0/web-data"/>
      <target dev="vdb" bus="virtio"/>
    </disk>
    <disk type="file" device="cdrom">
      <driver name="qemu" type="raw"/>
      <target dev="sdb" bus="sata"/>
      <readonly/>
    </disk>
    <disk type="network" device="disk">
      <driver name="qemu" type="raw"/>
      <source protocol="rbd" name="pool/image"/>
      <target dev="vdc" bus="virtio"/>
    </disk>
    <interface type="bridge">
      <mac address="52:54:00:aa:bb:cc"/>
      <source bridge="br0"/>
      <model type="e1000e"/>
    </interface>
    <interface type="direct">
      <mac address="52:54:00:aa:bb:cd"/>
      <source dev="eth0" mode="bridge"/>
    </interface>
  </devices>
</domain>)";

TEST(DomainXml, LabGuest) {
  auto vm = ParseDomainXml(kLabGuest);
  ASSERT_TRUE(vm.ok()) << vm.status().ToString();
  EXPECT_EQ(vm->name, "g1");
  EXPECT_EQ(vm->uuid, "6f1c2b8e-4a2d-4c1e-9a43-0d7f6e1b2c3d");
  EXPECT_EQ(vm->domain_type, "qemu");
  EXPECT_EQ(vm->vcpus, 1);
  EXPECT_EQ(vm->max_vcpus, 1);
  EXPECT_EQ(vm->memory_bytes, 256 * kMiB);
  EXPECT_EQ(vm->machine_type, "pc-i440fx-7.2");
  EXPECT_EQ(vm->arch, "x86_64");
  EXPECT_EQ(vm->firmware, Firmware::kBios);
  EXPECT_EQ(FirmwareName(vm->firmware), "bios");
  ASSERT_EQ(vm->disks.size(), 1u);
  const VmDisk& d = vm->disks[0];
  EXPECT_EQ(d.target, "vda");
  EXPECT_EQ(d.bus, "virtio");
  EXPECT_EQ(d.device, "disk");
  EXPECT_EQ(d.type, "volume");
  EXPECT_EQ(d.format, "qcow2");
  EXPECT_EQ(d.pool, "nas1");
  EXPECT_EQ(d.volume, "g1.qcow2");
  EXPECT_EQ(d.source_path, "");
  ASSERT_EQ(vm->nics.size(), 1u);
  EXPECT_EQ(vm->nics[0].mac, "52:54:00:fe:00:01");
  EXPECT_EQ(vm->nics[0].model, "virtio");
  EXPECT_EQ(vm->nics[0].network, "lab");
  EXPECT_EQ(vm->nics[0].type, "network");
  EXPECT_EQ(vm->nics[0].bridge, "ferry12345678");
  // Not from the XML: left for libvirt calls.
  EXPECT_EQ(vm->state, VmState::kUnknown);
  EXPECT_EQ(d.capacity_bytes, 0u);
}

TEST(DomainXml, UefiGuestWithManyDeviceKinds) {
  auto vm = ParseDomainXml(kUefiGuest);
  ASSERT_TRUE(vm.ok()) << vm.status().ToString();
  EXPECT_EQ(vm->domain_type, "kvm");
  EXPECT_EQ(vm->vcpus, 2);
  EXPECT_EQ(vm->max_vcpus, 8);
  EXPECT_EQ(vm->memory_bytes, 4 * 1024 * kMiB);
  EXPECT_EQ(vm->machine_type, "pc-q35-7.2");
  EXPECT_EQ(vm->firmware, Firmware::kUefi);
  ASSERT_EQ(vm->disks.size(), 4u);
  EXPECT_EQ(vm->disks[0].source_path, "/var/lib/libvirt/images/web-01.img");
  EXPECT_EQ(vm->disks[0].bus, "sata");
  EXPECT_EQ(vm->disks[0].format, "raw");
  EXPECT_EQ(vm->disks[1].source_path, "/dev/vg0/web-data");
  EXPECT_EQ(vm->disks[1].type, "block");
  EXPECT_EQ(vm->disks[2].device, "cdrom");
  EXPECT_EQ(vm->disks[2].source_path, "");
  EXPECT_EQ(vm->disks[3].type, "network");
  EXPECT_EQ(vm->disks[3].source_path, "");
  ASSERT_EQ(vm->nics.size(), 2u);
  EXPECT_EQ(vm->nics[0].type, "bridge");
  EXPECT_EQ(vm->nics[0].network, "br0");
  EXPECT_EQ(vm->nics[0].model, "e1000e");
  EXPECT_EQ(vm->nics[1].type, "direct");
  EXPECT_EQ(vm->nics[1].network, "eth0");
  EXPECT_EQ(vm->nics[1].model, "");
}

TEST(DomainXml, FirmwareEfiAttributeAndDefaultUnit) {
  auto vm = ParseDomainXml(
      "<domain type='kvm'><name>a</name><memory>1048576</memory><vcpu>4</vcpu>"
      "<os firmware='efi'><type machine='q35'>hvm</type></os></domain>");
  ASSERT_TRUE(vm.ok()) << vm.status().ToString();
  EXPECT_EQ(vm->firmware, Firmware::kUefi);
  EXPECT_EQ(vm->memory_bytes, 1024 * kMiB);  // default unit KiB
  EXPECT_EQ(vm->vcpus, 4);
  EXPECT_TRUE(vm->disks.empty());
  EXPECT_TRUE(vm->nics.empty());
}

TEST(DomainXml, MergeConfiguredNics) {
  auto live = ParseDomainXml(
      "<domain><name>a</name><memory>1</memory><vcpu>1</vcpu><os/><devices>"
      "<interface type='bridge'><mac address='52:54:00:00:00:01'/><source bridge='br7'/>"
      "</interface>"
      "<interface type='bridge'><mac address='52:54:00:00:00:02'/><source bridge='br0'/>"
      "</interface></devices></domain>");
  auto config = ParseDomainXml(
      "<domain><name>a</name><memory>1</memory><vcpu>1</vcpu><os/><devices>"
      "<interface type='network'><mac address='52:54:00:00:00:01'/><source network='lab'/>"
      "</interface>"
      "<interface type='bridge'><mac address='52:54:00:00:00:02'/><source bridge='br0'/>"
      "</interface></devices></domain>");
  ASSERT_TRUE(live.ok() && config.ok());
  MergeConfiguredNics(*live, *config);
  ASSERT_EQ(live->nics.size(), 2u);
  EXPECT_EQ(live->nics[0].type, "network");
  EXPECT_EQ(live->nics[0].network, "lab");
  EXPECT_EQ(live->nics[0].bridge, "br7");
  EXPECT_EQ(live->nics[1].type, "bridge");
  EXPECT_EQ(live->nics[1].network, "br0");
  EXPECT_EQ(live->nics[1].bridge, "br0");
}

TEST(DomainXml, MemoryUnits) {
  EXPECT_EQ(*ScaleXmlSize("5", "b", "KiB", "x"), 5u);
  EXPECT_EQ(*ScaleXmlSize("5", "bytes", "KiB", "x"), 5u);
  EXPECT_EQ(*ScaleXmlSize("2", "KB", "KiB", "x"), 2000u);
  EXPECT_EQ(*ScaleXmlSize("2", "k", "KiB", "x"), 2048u);
  EXPECT_EQ(*ScaleXmlSize(" 3 ", "", "KiB", "x"), 3072u);
  EXPECT_EQ(*ScaleXmlSize("1", "MB", "KiB", "x"), 1000000u);
  EXPECT_EQ(*ScaleXmlSize("1", "M", "KiB", "x"), kMiB);
  EXPECT_EQ(*ScaleXmlSize("1", "GB", "KiB", "x"), 1000000000u);
  EXPECT_EQ(*ScaleXmlSize("1", "TiB", "KiB", "x"), 1024 * 1024 * kMiB);
  EXPECT_EQ(*ScaleXmlSize("8", "EiB", "KiB", "x"), uint64_t{1} << 63);
  EXPECT_EQ(ScaleXmlSize("16", "EiB", "KiB", "x").status().code(), ErrorCode::kCorrupt);
  auto bad_unit = ScaleXmlSize("1", "furlongs", "KiB", "domain XML: <memory>");
  ASSERT_FALSE(bad_unit.ok());
  EXPECT_EQ(bad_unit.status().code(), ErrorCode::kCorrupt);
  EXPECT_NE(bad_unit.status().message().find("<memory>"), std::string::npos);
  EXPECT_FALSE(ScaleXmlSize("-1", "", "KiB", "x").ok());
  EXPECT_FALSE(ScaleXmlSize("12abc", "", "KiB", "x").ok());
  EXPECT_FALSE(ScaleXmlSize("99999999999999999999999", "", "KiB", "x").ok());
}

// Malformed or hostile documents: kCorrupt (or kTooLarge) naming what is wrong.
void ExpectError(const std::string& xml, ErrorCode code, const std::string& needle) {
  auto vm = ParseDomainXml(xml);
  ASSERT_FALSE(vm.ok()) << xml;
  EXPECT_EQ(vm.status().code(), code) << vm.status().ToString();
  EXPECT_NE(vm.status().message().find(needle), std::string::npos) << vm.status().ToString();
}

TEST(DomainXml, MalformedInput) {
  ExpectError("", ErrorCode::kCorrupt, "malformed XML");
  ExpectError("<domain><name>x</name>", ErrorCode::kCorrupt, "malformed XML");
  ExpectError("<domain><name>x</nam></domain>", ErrorCode::kCorrupt, "malformed XML");
  ExpectError("not xml at all", ErrorCode::kCorrupt, "malformed XML");
  ExpectError("<network><name>x</name></network>", ErrorCode::kCorrupt, "root element");
  ExpectError("<pool type='dir'><name>x</name></pool>", ErrorCode::kCorrupt, "<pool>");
  ExpectError("<domain><memory>1</memory><vcpu>1</vcpu><os/></domain>", ErrorCode::kCorrupt,
              "no <name>");
  ExpectError("<domain><name>x</name><memory>1</memory><os/></domain>", ErrorCode::kCorrupt,
              "no <vcpu>");
  ExpectError("<domain><name>x</name><memory>1</memory><vcpu>many</vcpu><os/></domain>",
              ErrorCode::kCorrupt, "<vcpu>");
  ExpectError("<domain><name>x</name><memory>1</memory><vcpu>0</vcpu><os/></domain>",
              ErrorCode::kCorrupt, "<vcpu>");
  ExpectError("<domain><name>x</name><memory>1</memory><vcpu>99999</vcpu><os/></domain>",
              ErrorCode::kCorrupt, "<vcpu>");
  ExpectError("<domain><name>x</name><memory>1</memory><vcpu current='3'>2</vcpu><os/></domain>",
              ErrorCode::kCorrupt, "<vcpu>");
  ExpectError("<domain><name>x</name><vcpu>1</vcpu><os/></domain>", ErrorCode::kCorrupt,
              "no <memory>");
  ExpectError("<domain><name>x</name><memory unit='parsec'>1</memory><vcpu>1</vcpu><os/></domain>",
              ErrorCode::kCorrupt, "<memory>");
  ExpectError("<domain><name>x</name><memory>1</memory><vcpu>1</vcpu></domain>",
              ErrorCode::kCorrupt, "no <os>");
  ExpectError(
      "<domain><name>x</name><memory>1</memory><vcpu>1</vcpu><os/>"
      "<devices><disk type='file'><source file='/a'/></disk></devices></domain>",
      ErrorCode::kCorrupt, "<target dev");
  ExpectError(
      "<domain><name>x</name><memory>1</memory><vcpu>1</vcpu><os/>"
      "<devices><disk type='volume'><source pool='p'/><target dev='vda'/></disk></devices>"
      "</domain>",
      ErrorCode::kCorrupt, "volume");
}

TEST(DomainXml, Caps) {
  std::string many = "<domain><name>x</name><memory>1</memory><vcpu>1</vcpu><os/><devices>";
  for (size_t i = 0; i <= kMaxDevices; ++i) many += "<interface type='user'/>";
  many += "</devices></domain>";
  ExpectError(many, ErrorCode::kTooLarge, "more than");
  std::string huge(kMaxXmlBytes + 1, ' ');
  ExpectError(huge, ErrorCode::kTooLarge, "cap");
}

TEST(PoolXml, DirPool) {
  auto p = ParsePoolXml(R"(<pool type='dir'>
  <name>nas1</name><uuid>x</uuid>
  <capacity unit='bytes'>100</capacity>
  <target><path>/var/tmp/ferry-lab/nas1</path></target>
</pool>)");
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(p->name, "nas1");
  EXPECT_EQ(p->type, "dir");
  EXPECT_EQ(p->path, "/var/tmp/ferry-lab/nas1");
  auto bad = ParsePoolXml("<pool type='dir'><target/></pool>");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), ErrorCode::kCorrupt);
}

TEST(NetworkXml, ForwardModes) {
  auto bridged = ParseNetworkXml(
      "<network><name>lab</name><forward mode='bridge'/><bridge name='ferry0'/></network>");
  ASSERT_TRUE(bridged.ok()) << bridged.status().ToString();
  EXPECT_EQ(bridged->name, "lab");
  EXPECT_EQ(bridged->bridge, "ferry0");
  EXPECT_EQ(bridged->forward_mode, "bridge");
  auto nat =
      ParseNetworkXml("<network><name>default</name><forward/><bridge name='virbr0'/></network>");
  ASSERT_TRUE(nat.ok());
  EXPECT_EQ(nat->forward_mode, "nat");
  auto isolated = ParseNetworkXml("<network><name>iso</name></network>");
  ASSERT_TRUE(isolated.ok());
  EXPECT_EQ(isolated->forward_mode, "isolated");
  EXPECT_EQ(ParseNetworkXml("<network/>").status().code(), ErrorCode::kCorrupt);
}

TEST(CapabilitiesXml, CpuAndDomainTypes) {
  auto f = ParseCapabilitiesXml(R"(<capabilities>
  <host>
    <uuid>abc</uuid>
    <cpu><arch>x86_64</arch><model>Skylake-Client-IBRS</model><vendor>Intel</vendor></cpu>
  </host>
  <guest><os_type>hvm</os_type>
    <arch name='i686'><domain type='qemu'/><domain type='kvm'/></arch></guest>
  <guest><os_type>hvm</os_type>
    <arch name='x86_64'><domain type='qemu'/><domain type='kvm'/></arch></guest>
</capabilities>)");
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  EXPECT_EQ(f->cpu_arch, "x86_64");
  EXPECT_EQ(f->cpu_model, "Skylake-Client-IBRS");
  EXPECT_EQ(f->domain_types, (std::vector<std::string>{"qemu", "kvm"}));
  EXPECT_EQ(ParseCapabilitiesXml("<capabilities").status().code(), ErrorCode::kCorrupt);
}

TEST(VmState, Names) {
  EXPECT_EQ(VmStateName(VmState::kRunning), "running");
  EXPECT_EQ(VmStateName(VmState::kShutoff), "shutoff");
  EXPECT_EQ(VmStateName(VmState::kPaused), "paused");
}

}  // namespace
}  // namespace ferry::hypervisor
