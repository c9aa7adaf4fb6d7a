#include <gtest/gtest.h>

#include <string>

#include "sources/share.h"
#include "test_util.h"

namespace ferry::sources {
namespace {

// The seed corpus of hyperv_config_fuzz holds the samples: real 2012 R2 / 2008 R2 structure.
std::string Sample(const std::string& name) {
  const auto bytes =
      testing::ReadFileBytes(testing::SourceDir() + "/fuzz/corpus/hyperv_config_fuzz/" + name);
  EXPECT_FALSE(bytes.empty()) << name;
  return std::string(bytes.begin(), bytes.end());
}

TEST(HyperVConfigTest, Reads2012R2Generation2) {
  auto vm = ParseHyperVConfig(Sample("ws2012r2_gen2.xml"), "web2.xml");
  ASSERT_TRUE(vm.ok()) << vm.status().ToString();
  EXPECT_EQ(vm->name, "web2");
  EXPECT_EQ(vm->uuid, "0aa394fa-7c4a-4070-ba32-773d43b28a68");
  EXPECT_EQ(vm->platform, Platform::kHyperV);
  EXPECT_EQ(vm->vcpus, 4);
  EXPECT_EQ(vm->memory_bytes, 4096ull << 20);
  EXPECT_EQ(vm->firmware, "uefi");
  ASSERT_EQ(vm->disks.size(), 2u);
  EXPECT_EQ(vm->disks[0].source_ref, "D:\\Hyper-V\\web2\\Virtual Hard Disks\\web2-os.vhdx");
  EXPECT_EQ(vm->disks[0].format, "vhdx");
  EXPECT_EQ(vm->disks[0].bus, "scsi");
  EXPECT_EQ(vm->disks[1].format, "vhd");
  EXPECT_TRUE(vm->disks[0].file.empty());  // the share resolves it
  ASSERT_EQ(vm->nics.size(), 1u);
  EXPECT_EQ(vm->nics[0].network, "External LAN");
  EXPECT_EQ(vm->nics[0].mac, "00:15:5d:01:07:dc");
  EXPECT_EQ(vm->nics[0].model, "hyperv-synthetic");
  EXPECT_TRUE(vm->missing.empty());
  ASSERT_EQ(vm->problems.size(), 1u);
  EXPECT_EQ(vm->problems[0], "controller0/drive2: ISO drive D:\\iso\\install.iso is not moved");
}

TEST(HyperVConfigTest, Reads2008R2Generation1) {
  auto vm = ParseHyperVConfig(Sample("ws2008r2_gen1.xml"), "hv-db.xml");
  ASSERT_TRUE(vm.ok()) << vm.status().ToString();
  EXPECT_EQ(vm->name, "hv-db");
  EXPECT_EQ(vm->firmware, "bios");  // no subtype: generation 1
  EXPECT_EQ(vm->vcpus, 2);
  EXPECT_EQ(vm->memory_bytes, 2048ull << 20);
  ASSERT_EQ(vm->disks.size(), 1u);
  EXPECT_EQ(vm->disks[0].bus, "ide");
  ASSERT_EQ(vm->nics.size(), 1u);
  EXPECT_EQ(vm->nics[0].mac, "00:15:5d:0a:0b:0c");  // written as 00155D0A0B0C
  EXPECT_EQ(vm->nics[0].network, "Corp Network");
  // Dynamic memory noted; the ISO on controller1 is not a disk.
  EXPECT_EQ(vm->problems.size(), 2u);
}

TEST(HyperVConfigTest, ReadsUtf16AsHyperVWritesIt) {
  const std::string utf16 = Sample("ws2008r2_utf16.xml");
  ASSERT_EQ(static_cast<uint8_t>(utf16[0]), 0xff);
  auto vm = ParseHyperVConfig(utf16, "hv-db.xml");
  ASSERT_TRUE(vm.ok()) << vm.status().ToString();
  EXPECT_EQ(vm->name, "hv-db");
  ASSERT_EQ(vm->disks.size(), 1u);
  EXPECT_EQ(vm->disks[0].source_ref, "C:\\VMs\\hv-db\\Virtual Hard Disks\\hv-db.vhd");
}

TEST(HyperVConfigTest, ErrorsNameTheFileAndElement) {
  auto bad = ParseHyperVConfig(Sample("bad_count.xml"), "hv/Virtual Machines/X.xml");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), ErrorCode::kCorrupt);
  EXPECT_EQ(bad.status().message(),
            "hv/Virtual Machines/X.xml: Hyper-V configuration: <settings><processors><count>: "
            "'four' is not a non-negative integer");

  auto truncated = ParseHyperVConfig(Sample("truncated.xml"), "t.xml");
  ASSERT_FALSE(truncated.ok());
  EXPECT_EQ(truncated.status().code(), ErrorCode::kCorrupt);
  EXPECT_EQ(truncated.status().message().rfind("t.xml: malformed XML at byte ", 0), 0u)
      << truncated.status().message();

  auto root = ParseHyperVConfig("<domain/>", "d.xml");
  ASSERT_FALSE(root.ok());
  EXPECT_EQ(root.status().message(),
            "d.xml: root element is <domain>, expected <configuration> (a Hyper-V "
            "configuration)");

  auto noname = ParseHyperVConfig("<configuration><properties/></configuration>", "n.xml");
  ASSERT_FALSE(noname.ok());
  EXPECT_EQ(noname.status().message(), "n.xml: Hyper-V configuration: <properties><name>: missing");

  auto typed = ParseHyperVConfig(
      "<configuration><properties><name type=\"integer\">7</name></properties></configuration>",
      "t.xml");
  ASSERT_FALSE(typed.ok());
  EXPECT_EQ(typed.status().message(),
            "t.xml: Hyper-V configuration: <properties><name>: type 'integer', expected string");

  auto vcpus = ParseHyperVConfig(
      "<configuration><properties><name>x</name></properties><settings><processors><count>"
      "5000</count></processors></settings></configuration>",
      "v.xml");
  ASSERT_FALSE(vcpus.ok());
  EXPECT_EQ(vcpus.status().message(),
            "v.xml: Hyper-V configuration: <settings><processors><count>: 5000 is out of range "
            "1..4096");

  auto mac = ParseHyperVConfig(
      "<configuration><properties><name>x</name></properties><_a_><Address>00155D</Address>"
      "<SwitchName>s</SwitchName></_a_></configuration>",
      "m.xml");
  ASSERT_FALSE(mac.ok());
  EXPECT_EQ(mac.status().message(),
            "m.xml: Hyper-V configuration: <_a_><Address>: '00155D' is not a MAC address (12 "
            "hex digits)");
}

TEST(HyperVConfigTest, MinimalConfigurationLacksWhatItDoesNotSay) {
  auto vm = ParseHyperVConfig(
      "<configuration><properties><name type=\"string\">bare</name></properties>"
      "</configuration>",
      "b.xml");
  ASSERT_TRUE(vm.ok()) << vm.status().ToString();
  EXPECT_EQ(vm->missing, (std::vector<std::string>{"vcpus", "memory"}));
  EXPECT_TRUE(vm->disks.empty());
}

TEST(HyperVConfigTest, RebuiltVmControllersLayout) {
  // What export tools write for a .vmcx VM: <vm-controllers><scsi><controllerN>.
  auto vm = ParseHyperVConfig(
      "<configuration><properties><subtype type=\"integer\">1</subtype>"
      "<name type=\"string\">box</name></properties>"
      "<AltSwitchName type=\"string\">Default Switch</AltSwitchName><vm-controllers><scsi>"
      "<controller0><drive0><pathname type=\"string\">C:\\b\\box.vhdx</pathname>"
      "<type type=\"string\">VHD</type></drive0></controller0></scsi></vm-controllers>"
      "</configuration>",
      "box.xml");
  ASSERT_TRUE(vm.ok()) << vm.status().ToString();
  ASSERT_EQ(vm->disks.size(), 1u);
  EXPECT_EQ(vm->disks[0].bus, "scsi");
  ASSERT_EQ(vm->nics.size(), 1u);
  EXPECT_EQ(vm->nics[0].network, "Default Switch");
  EXPECT_EQ(vm->firmware, "uefi");
}

}  // namespace
}  // namespace ferry::sources
