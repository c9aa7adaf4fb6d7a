// BuildDomainXml: every bus, firmware, direct boot, NICs, console log and metadata, every
// invalid field; the XML parses back through ParseDomainXml with the same disks and NICs.
#include "hypervisor/domain_builder.h"

#include <gtest/gtest.h>

#include <pugixml.hpp>
#include <string>

#include "hypervisor/domain_xml.h"

namespace ferry::hypervisor {
namespace {

DomainSpec BaseSpec() {
  DomainSpec s;
  s.name = "web1";
  s.uuid = "6f1c2b8e-4a2d-4c1e-9a43-0d7f6e1b2c3d";
  s.domain_type = "qemu";
  s.vcpus = 2;
  s.memory_bytes = 512ull << 20;
  s.machine = "pc";
  s.disks = {{"/pool/web1-disk0.qcow2", "qcow2", "virtio", "vda"}};
  s.nics = {{"lab", "52:54:00:12:34:56", "virtio"}};
  s.console_log = "/state/consoles/web1.log";
  return s;
}

pugi::xml_document Parse(const std::string& xml) {
  pugi::xml_document doc;
  EXPECT_TRUE(doc.load_string(xml.c_str())) << xml;
  return doc;
}

std::string Build(const DomainSpec& s) {
  Result<std::string> xml = BuildDomainXml(s);
  EXPECT_TRUE(xml.ok()) << xml.status().ToString();
  return xml.ok() ? *xml : std::string();
}

TEST(DomainBuilder, BasicDomainParsesBackWithSameDevices) {
  DomainSpec s = BaseSpec();
  s.disks.push_back({"/pool/web1-disk1.raw", "raw", "virtio", "vdb"});
  s.nics.push_back({"backup", "", "e1000"});
  const std::string xml = Build(s);
  Result<VmInfo> vm = ParseDomainXml(xml);
  ASSERT_TRUE(vm.ok()) << vm.status().ToString() << "\n" << xml;
  EXPECT_EQ(vm->name, "web1");
  EXPECT_EQ(vm->uuid, s.uuid);
  EXPECT_EQ(vm->domain_type, "qemu");
  EXPECT_EQ(vm->vcpus, 2);
  EXPECT_EQ(vm->memory_bytes, 512ull << 20);
  EXPECT_EQ(vm->machine_type, "pc");
  EXPECT_EQ(vm->arch, "x86_64");
  EXPECT_EQ(vm->firmware, Firmware::kBios);
  ASSERT_EQ(vm->disks.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(vm->disks[i].source_path, s.disks[i].path);
    EXPECT_EQ(vm->disks[i].format, s.disks[i].format);
    EXPECT_EQ(vm->disks[i].bus, s.disks[i].bus);
    EXPECT_EQ(vm->disks[i].target, s.disks[i].dev);
    EXPECT_EQ(vm->disks[i].device, "disk");
    EXPECT_EQ(vm->disks[i].type, "file");
  }
  ASSERT_EQ(vm->nics.size(), 2u);
  EXPECT_EQ(vm->nics[0].mac, "52:54:00:12:34:56");
  EXPECT_EQ(vm->nics[0].network, "lab");
  EXPECT_EQ(vm->nics[0].model, "virtio");
  EXPECT_EQ(vm->nics[0].type, "network");
  EXPECT_EQ(vm->nics[1].mac, "");  // libvirt chooses
  EXPECT_EQ(vm->nics[1].network, "backup");
  EXPECT_EQ(vm->nics[1].model, "e1000");

  pugi::xml_document doc = Parse(xml);
  pugi::xml_node d = doc.child("domain");
  EXPECT_STREQ(d.child("memory").attribute("unit").value(), "KiB");
  EXPECT_STREQ(d.child("memory").text().get(), "524288");
  EXPECT_STREQ(d.child("os").child("boot").attribute("dev").value(), "hd");
  EXPECT_TRUE(d.child("os").child("kernel").empty());
  EXPECT_FALSE(d.child("features").child("acpi").empty());
  EXPECT_FALSE(d.child("features").child("apic").empty());
  EXPECT_TRUE(d.child("cpu").empty()) << "TCG guests get QEMU's default CPU";
  EXPECT_STREQ(d.child("on_reboot").text().get(), "restart");
  EXPECT_STREQ(d.child("on_poweroff").text().get(), "destroy");
  EXPECT_STREQ(d.child("on_crash").text().get(), "destroy");
  EXPECT_STREQ(d.child("clock").attribute("offset").value(), "utc");
  pugi::xml_node disk = d.child("devices").child("disk");
  EXPECT_STREQ(disk.child("driver").attribute("cache").value(), "none");
  EXPECT_TRUE(disk.child("driver").attribute("io").empty());
  EXPECT_TRUE(d.child("devices").child("controller").empty());
}

TEST(DomainBuilder, KvmGetsHostModelCpu) {
  DomainSpec s = BaseSpec();
  s.domain_type = "kvm";
  pugi::xml_document doc = Parse(Build(s));
  EXPECT_STREQ(doc.child("domain").attribute("type").value(), "kvm");
  EXPECT_STREQ(doc.child("domain").child("cpu").attribute("mode").value(), "host-model");
}

TEST(DomainBuilder, EveryBus) {
  for (const char* bus : {"virtio", "scsi", "sata", "ide"}) {
    SCOPED_TRACE(bus);
    DomainSpec s = BaseSpec();
    const std::string prefix = std::string(bus) == "virtio" ? "vd"
                               : std::string(bus) == "ide"  ? "hd"
                                                            : "sd";
    s.disks = {{"/p/a.qcow2", "qcow2", bus, prefix + "a"}, {"/p/b.raw", "raw", bus, prefix + "b"}};
    const std::string xml = Build(s);
    Result<VmInfo> vm = ParseDomainXml(xml);
    ASSERT_TRUE(vm.ok()) << vm.status().ToString();
    ASSERT_EQ(vm->disks.size(), 2u);
    EXPECT_EQ(vm->disks[0].bus, bus);
    EXPECT_EQ(vm->disks[1].bus, bus);
    EXPECT_EQ(vm->disks[1].target, prefix + "b");
    pugi::xml_document doc = Parse(xml);
    int scsi_controllers = 0;
    for (pugi::xml_node c : doc.child("domain").child("devices").children("controller")) {
      if (std::string(c.attribute("type").value()) == "scsi") {
        ++scsi_controllers;
        EXPECT_STREQ(c.attribute("model").value(), "virtio-scsi");
      }
    }
    EXPECT_EQ(scsi_controllers, std::string(bus) == "scsi" ? 1 : 0);
  }
}

TEST(DomainBuilder, MixedBusesOneScsiController) {
  DomainSpec s = BaseSpec();
  s.disks = {{"/p/a.qcow2", "qcow2", "scsi", "sda"},
             {"/p/b.qcow2", "qcow2", "virtio", "vda"},
             {"/p/c.qcow2", "qcow2", "scsi", "sdb"}};
  pugi::xml_document doc = Parse(Build(s));
  int controllers = 0;
  for (pugi::xml_node c : doc.child("domain").child("devices").children("controller")) {
    (void)c;
    ++controllers;
  }
  EXPECT_EQ(controllers, 1);
}

TEST(DomainBuilder, Uefi) {
  DomainSpec s = BaseSpec();
  s.firmware = "uefi";
  s.machine = "q35";
  const std::string xml = Build(s);
  pugi::xml_document doc = Parse(xml);
  EXPECT_STREQ(doc.child("domain").child("os").attribute("firmware").value(), "efi");
  Result<VmInfo> vm = ParseDomainXml(xml);
  ASSERT_TRUE(vm.ok());
  EXPECT_EQ(vm->firmware, Firmware::kUefi);
  EXPECT_EQ(vm->machine_type, "q35");
}

TEST(DomainBuilder, DirectBoot) {
  DomainSpec s = BaseSpec();
  s.kernel = "/boot/vmlinuz";
  s.initrd = "/boot/initrd.img";
  s.cmdline = "console=ttyS0 ferry.disk=/dev/vda <&>";
  pugi::xml_document doc = Parse(Build(s));
  pugi::xml_node os = doc.child("domain").child("os");
  EXPECT_STREQ(os.child("kernel").text().get(), "/boot/vmlinuz");
  EXPECT_STREQ(os.child("initrd").text().get(), "/boot/initrd.img");
  EXPECT_STREQ(os.child("cmdline").text().get(), "console=ttyS0 ferry.disk=/dev/vda <&>");
  EXPECT_TRUE(os.child("boot").empty());
}

TEST(DomainBuilder, ConsoleLogAndNoLog) {
  DomainSpec s = BaseSpec();
  pugi::xml_document doc = Parse(Build(s));
  pugi::xml_node serial = doc.child("domain").child("devices").child("serial");
  EXPECT_STREQ(serial.attribute("type").value(), "pty");
  EXPECT_STREQ(serial.child("log").attribute("file").value(), "/state/consoles/web1.log");
  EXPECT_STREQ(serial.child("log").attribute("append").value(), "on");
  s.console_log = "";
  pugi::xml_document doc2 = Parse(Build(s));
  serial = doc2.child("domain").child("devices").child("serial");
  EXPECT_FALSE(serial.empty());
  EXPECT_TRUE(serial.child("log").empty());
}

TEST(DomainBuilder, Metadata) {
  DomainSpec s = BaseSpec();
  s.metadata = {{"plan", "wave-1"}, {"migration", "m-1"}, {"source", "host1/web1 \"x\" & <y>"}};
  pugi::xml_document doc = Parse(Build(s));
  pugi::xml_node m = doc.child("domain").child("metadata").child("ferry:migration");
  ASSERT_FALSE(m.empty());
  EXPECT_STREQ(m.attribute("xmlns:ferry").value(), "https://ferry.dev/xmlns/libvirt/1");
  EXPECT_STREQ(m.attribute("plan").value(), "wave-1");
  EXPECT_STREQ(m.attribute("migration").value(), "m-1");
  EXPECT_STREQ(m.attribute("source").value(), "host1/web1 \"x\" & <y>");
  s.metadata.clear();
  pugi::xml_document doc2 = Parse(Build(s));
  EXPECT_TRUE(doc2.child("domain").child("metadata").empty());
}

TEST(DomainBuilder, EmptyUuidLetsLibvirtChoose) {
  DomainSpec s = BaseSpec();
  s.uuid = "";
  pugi::xml_document doc = Parse(Build(s));
  EXPECT_TRUE(doc.child("domain").child("uuid").empty());
}

TEST(DomainBuilder, MemoryRoundsUpToKiB) {
  DomainSpec s = BaseSpec();
  s.memory_bytes = 1025;
  pugi::xml_document doc = Parse(Build(s));
  EXPECT_STREQ(doc.child("domain").child("memory").text().get(), "2");
}

void ExpectInvalid(const DomainSpec& s, const std::string& field) {
  Result<std::string> xml = BuildDomainXml(s);
  ASSERT_FALSE(xml.ok()) << "accepted; expected an error for " << field;
  EXPECT_EQ(xml.status().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(xml.status().message().find(field + ":"), std::string::npos) << xml.status().message();
}

TEST(DomainBuilder, InvalidFields) {
  auto with = [](auto change) {
    DomainSpec s = BaseSpec();
    change(s);
    return s;
  };
  ExpectInvalid(with([](DomainSpec& s) { s.name = ""; }), "name");
  ExpectInvalid(with([](DomainSpec& s) { s.name = "a/b"; }), "name");
  ExpectInvalid(with([](DomainSpec& s) { s.name = std::string("a\x01", 2); }), "name");
  ExpectInvalid(with([](DomainSpec& s) { s.uuid = "not-a-uuid"; }), "uuid");
  ExpectInvalid(with([](DomainSpec& s) { s.domain_type = "xen"; }), "domain_type");
  ExpectInvalid(with([](DomainSpec& s) { s.vcpus = 0; }), "vcpus");
  ExpectInvalid(with([](DomainSpec& s) { s.memory_bytes = 0; }), "memory_bytes");
  ExpectInvalid(with([](DomainSpec& s) { s.arch = ""; }), "arch");
  ExpectInvalid(with([](DomainSpec& s) { s.machine = ""; }), "machine");
  ExpectInvalid(with([](DomainSpec& s) { s.firmware = "coreboot"; }), "firmware");
  ExpectInvalid(with([](DomainSpec& s) { s.kernel = "vmlinuz"; }), "kernel");
  ExpectInvalid(with([](DomainSpec& s) { s.initrd = "/boot/initrd"; }), "initrd");
  ExpectInvalid(with([](DomainSpec& s) { s.cmdline = "quiet"; }), "cmdline");
  ExpectInvalid(with([](DomainSpec& s) { s.disks.clear(); }), "disks");
  ExpectInvalid(with([](DomainSpec& s) { s.disks[0].path = ""; }), "disks[0].path");
  ExpectInvalid(with([](DomainSpec& s) { s.disks[0].path = "rel.qcow2"; }), "disks[0].path");
  ExpectInvalid(with([](DomainSpec& s) { s.disks[0].format = "vmdk"; }), "disks[0].format");
  ExpectInvalid(with([](DomainSpec& s) { s.disks[0].bus = "usb"; }), "disks[0].bus");
  ExpectInvalid(with([](DomainSpec& s) { s.disks[0].dev = ""; }), "disks[0].dev");
  ExpectInvalid(with([](DomainSpec& s) { s.disks[0].dev = "VDA"; }), "disks[0].dev");
  ExpectInvalid(with([](DomainSpec& s) {
                  s.disks.push_back({"/p/b.qcow2", "qcow2", "virtio", "vda"});
                }),
                "disks[1].dev");
  ExpectInvalid(with([](DomainSpec& s) {
                  s.machine = "pc-q35-7.2";
                  s.disks[0].bus = "ide";
                  s.disks[0].dev = "hda";
                }),
                "disks[0].bus");
  ExpectInvalid(with([](DomainSpec& s) { s.nics[0].network = ""; }), "nics[0].network");
  ExpectInvalid(with([](DomainSpec& s) { s.nics[0].mac = "52:54:00:12:34"; }), "nics[0].mac");
  ExpectInvalid(with([](DomainSpec& s) { s.nics[0].model = "vmxnet3"; }), "nics[0].model");
  ExpectInvalid(with([](DomainSpec& s) { s.console_log = "console.log"; }), "console_log");
  ExpectInvalid(with([](DomainSpec& s) { s.metadata = {{"1bad", "x"}}; }), "metadata[0]");
  ExpectInvalid(with([](DomainSpec& s) { s.metadata = {{"a", "x"}, {"a", "y"}}; }), "metadata[1]");
  ExpectInvalid(with([](DomainSpec& s) {
                  s.metadata = {{"a", std::string("\x02", 1)}};
                }),
                "metadata[0].a");
}

TEST(DomainBuilder, DirectBootWithoutDisks) {
  DomainSpec s = BaseSpec();
  s.disks.clear();
  s.kernel = "/boot/vmlinuz";
  Result<std::string> xml = BuildDomainXml(s);
  ASSERT_TRUE(xml.ok()) << xml.status().ToString();
}

}  // namespace
}  // namespace ferry::hypervisor
