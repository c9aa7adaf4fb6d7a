// domain_xml_edit on domain XML like the lab's guests: the serial log path, disk file sources,
// and disks pointed at new files with everything else kept.
#include "agent/domain_xml_edit.h"

#include <gtest/gtest.h>

#include "hypervisor/domain_xml.h"

namespace ferry::agent {
namespace {

constexpr char kLabGuest[] = R"(<domain type='qemu'>
  <name>g1</name>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices>
    <disk type='volume' device='disk'>
      <driver name='qemu' type='qcow2' cache='none'/>
      <source pool='nas1' volume='g1.qcow2'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='/srv/data.raw'/>
      <backingStore/>
      <target dev='vdb' bus='virtio'/>
    </disk>
    <serial type='file'>
      <source path='/lab/guests/g1/console.log' append='on'/>
      <target port='0'/>
    </serial>
  </devices>
</domain>)";

TEST(DomainXmlEdit, SerialLogPath) {
  auto p = SerialLogPath(kLabGuest);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(*p, "/lab/guests/g1/console.log");
  auto pty = SerialLogPath(
      "<domain><devices><serial type='pty'><log file='/var/log/g.log' append='on'/>"
      "</serial></devices></domain>");
  ASSERT_TRUE(pty.ok());
  EXPECT_EQ(*pty, "/var/log/g.log");
  auto none = SerialLogPath("<domain><devices><serial type='pty'/></devices></domain>");
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(*none, "");
  EXPECT_EQ(SerialLogPath("<domain><devices>").status().code(), ErrorCode::kCorrupt);
  EXPECT_EQ(SerialLogPath("<pool/>").status().code(), ErrorCode::kCorrupt);
}

TEST(DomainXmlEdit, DiskFileSources) {
  auto s = DiskFileSources(kLabGuest);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ((*s)["vda"], "");  // a pool volume, not a file
  EXPECT_EQ((*s)["vdb"], "/srv/data.raw");
}

TEST(DomainXmlEdit, ReplaceDiskSourcesKeepsTheRest) {
  auto x = ReplaceDiskSources(kLabGuest, {{"vda", {"/lab/nas2/g1.qcow2", "raw"}}});
  ASSERT_TRUE(x.ok()) << x.status().ToString();
  auto vm = hypervisor::ParseDomainXml(*x);
  ASSERT_TRUE(vm.ok()) << vm.status().ToString() << "\n" << *x;
  ASSERT_EQ(vm->disks.size(), 2u);
  EXPECT_EQ(vm->disks[0].target, "vda");
  EXPECT_EQ(vm->disks[0].type, "file");
  EXPECT_EQ(vm->disks[0].source_path, "/lab/nas2/g1.qcow2");
  EXPECT_EQ(vm->disks[0].format, "raw");
  EXPECT_EQ(vm->disks[0].pool, "");
  EXPECT_EQ(vm->disks[1].source_path, "/srv/data.raw");
  EXPECT_NE(x->find("cache=\"none\""), std::string::npos) << *x;
  EXPECT_EQ(x->find("volume="), std::string::npos) << *x;
  auto again = SerialLogPath(*x);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, "/lab/guests/g1/console.log");

  auto b = ReplaceDiskSources(kLabGuest, {{"vdb", {"/new/data.qcow2", "qcow2"}}});
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->find("backingStore"), std::string::npos) << *b;

  auto missing = ReplaceDiskSources(kLabGuest, {{"sdz", {"/x", "raw"}}});
  EXPECT_EQ(missing.status().code(), ErrorCode::kNotFound);
  EXPECT_NE(missing.status().message().find("sdz"), std::string::npos);
}

}  // namespace
}  // namespace ferry::agent
