#include "sources/vm_description.h"

#include <gtest/gtest.h>

#include <string>

namespace ferry::sources {
namespace {

VmDescription Full() {
  VmDescription vm;
  vm.name = "db1";
  vm.uuid = "5c1e0000-1111-2222-3333-444455556666";
  vm.platform = Platform::kHyperV;
  vm.vcpus = 4;
  vm.memory_bytes = 4ull << 30;
  vm.firmware = "uefi";
  vm.machine = "q35";
  vm.arch = "x86_64";
  vm.os = "windows2019srv_64Guest";
  vm.running = true;
  vm.direct_boot = {"/boot/vmlinuz", "/boot/initrd", "console=ttyS0"};
  DiskDescription d0;
  d0.id = "disk0";
  d0.file = "/srv/exports/db1/db1-disk0.vhdx";
  d0.format = "vhdx";
  d0.capacity_bytes = 10ull << 30;
  d0.allocated_bytes = 3ull << 30;
  d0.bus = "scsi";
  d0.datastore = "exports";
  d0.source_ref = "C:\\VMs\\db1.vhdx";
  DiskDescription d1;
  d1.id = "disk1";
  d1.file = "/srv/exports/web1.ova";
  d1.format = "ova";
  d1.ova_disk_index = 1;
  d1.capacity_bytes = 1 << 20;
  vm.disks = {d0, d1};
  vm.nics = {{"nic0", "VM Network", "00:15:5d:0a:0b:0c", "hyperv-synthetic"}};
  vm.missing = {"firmware"};
  vm.problems = {"OVF: unknown ResourceType 23 ignored"};
  vm.descriptor = "/srv/exports/db1/vm.json";
  return vm;
}

void ExpectSame(const VmDescription& a, const VmDescription& b) {
  EXPECT_EQ(a.name, b.name);
  EXPECT_EQ(a.uuid, b.uuid);
  EXPECT_EQ(a.platform, b.platform);
  EXPECT_EQ(a.vcpus, b.vcpus);
  EXPECT_EQ(a.memory_bytes, b.memory_bytes);
  EXPECT_EQ(a.firmware, b.firmware);
  EXPECT_EQ(a.machine, b.machine);
  EXPECT_EQ(a.arch, b.arch);
  EXPECT_EQ(a.os, b.os);
  EXPECT_EQ(a.running, b.running);
  EXPECT_EQ(a.direct_boot, b.direct_boot);
  ASSERT_EQ(a.disks.size(), b.disks.size());
  for (size_t i = 0; i < a.disks.size(); ++i) {
    EXPECT_EQ(a.disks[i].id, b.disks[i].id);
    EXPECT_EQ(a.disks[i].file, b.disks[i].file);
    EXPECT_EQ(a.disks[i].format, b.disks[i].format);
    EXPECT_EQ(a.disks[i].ova_disk_index, b.disks[i].ova_disk_index);
    EXPECT_EQ(a.disks[i].capacity_bytes, b.disks[i].capacity_bytes);
    EXPECT_EQ(a.disks[i].allocated_bytes, b.disks[i].allocated_bytes);
    EXPECT_EQ(a.disks[i].bus, b.disks[i].bus);
    EXPECT_EQ(a.disks[i].datastore, b.disks[i].datastore);
    EXPECT_EQ(a.disks[i].source_ref, b.disks[i].source_ref);
  }
  ASSERT_EQ(a.nics.size(), b.nics.size());
  for (size_t i = 0; i < a.nics.size(); ++i) {
    EXPECT_EQ(a.nics[i].id, b.nics[i].id);
    EXPECT_EQ(a.nics[i].network, b.nics[i].network);
    EXPECT_EQ(a.nics[i].mac, b.nics[i].mac);
    EXPECT_EQ(a.nics[i].model, b.nics[i].model);
  }
  EXPECT_EQ(a.missing, b.missing);
  EXPECT_EQ(a.problems, b.problems);
  EXPECT_EQ(a.descriptor, b.descriptor);
}

TEST(VmDescriptionTest, JsonRoundTrip) {
  const VmDescription vm = Full();
  const std::string json = ToJson(vm);
  EXPECT_NE(json.find("\"ferry_vm_description\": 1"), std::string::npos) << json;
  auto back = VmDescriptionFromJson(json, "vm.json");
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  ExpectSame(*back, vm);
  EXPECT_EQ(ToJson(*back), json);

  VmDescription empty;
  empty.name = "bare";
  auto empty_back = VmDescriptionFromJson(ToJson(empty), "e.json");
  ASSERT_TRUE(empty_back.ok()) << empty_back.status().ToString();
  ExpectSame(*empty_back, empty);
}

TEST(VmDescriptionTest, MinimalDocumentGetsDefaults) {
  auto vm = VmDescriptionFromJson(
      R"({"ferry_vm_description": 1, "name": "web1",
          "disks": [{"file": "web1-disk0.qcow2"}, {"file": "b.qed", "id": "data", "format": "qed"}],
          "nics": [{"mac": "00-15-5D-0A-0B-0C"}]})",
      "web1/vm.json");
  ASSERT_TRUE(vm.ok()) << vm.status().ToString();
  EXPECT_EQ(vm->platform, Platform::kUnknown);
  EXPECT_EQ(vm->arch, "x86_64");
  EXPECT_EQ(vm->disks[0].id, "disk0");
  EXPECT_EQ(vm->disks[1].id, "data");
  EXPECT_EQ(vm->disks[1].format, "qed");  // described as it is; plan validation refuses it
  EXPECT_EQ(vm->disks[0].ova_disk_index, -1);
  EXPECT_EQ(vm->nics[0].id, "nic0");
  EXPECT_EQ(vm->nics[0].mac, "00:15:5d:0a:0b:0c");
}

// Each malformed document and the exact error it gets.
TEST(VmDescriptionTest, MalformedDocumentsNameTheField) {
  const std::string head = R"({"ferry_vm_description": 1, "name": "db1", )";
  const std::pair<std::string, std::string> cases[] = {
      {head + R"("disks": [{"file": "a", "capacity_bytes": -1}]})",
       "db1/vm.json: disks[0].capacity_bytes: expected an unsigned integer"},
      {head + R"("disks": [{"file": "a", "capacity_bytes": 1.5}]})",
       "db1/vm.json: disks[0].capacity_bytes: expected an unsigned integer"},
      {head + R"("disks": [], "vcpu": 2})",
       "db1/vm.json: vcpu: unknown key (see docs/formats/vm-description.md)"},
      {head + R"("disks": [{"file": "a", "fromat": "raw"}]})",
       "db1/vm.json: disks[0].fromat: unknown key (see docs/formats/vm-description.md)"},
      {head + R"("disks": [], "vcpus": 4097})", "db1/vm.json: vcpus: 4097 is out of range 0..4096"},
      {head + R"("disks": [], "vcpus": -1})", "db1/vm.json: vcpus: -1 is out of range 0..4096"},
      {head + R"("disks": [], "vcpus": "2"})", "db1/vm.json: vcpus: expected an integer"},
      {head + R"("disks": [], "memory_bytes": 17592186044417})",
       "db1/vm.json: memory_bytes: 17592186044417 is more than 17592186044416"},
      {head + R"("disks": [], "platform": "xen"})",
       "db1/vm.json: platform: unknown platform 'xen' (known: unknown, kvm, vmware, hyperv, "
       "ferry)"},
      {head + R"("disks": [], "firmware": "efi"})",
       "db1/vm.json: firmware: 'efi' is not bios, uefi or \"\""},
      {head + R"("disks": [{"file": "a", "format": "QCOW 2"}]})",
       "db1/vm.json: disks[0].format: 'QCOW 2' is not a format name ([a-z0-9._-], at most 32, "
       "such as qcow2)"},
      {head + R"("disks": [{"file": "a.ova", "format": "ova"}]})",
       "db1/vm.json: disks[0].ova_disk_index: required for format ova (0 = the OVF's first "
       "disk)"},
      {head + R"("disks": [{"id": "x", "file": "a"}, {"id": "x", "file": "b"}]})",
       "db1/vm.json: disks[1].id: 'x' is used by an earlier disk"},
      {head + R"("disks": [{"format": "raw"}]})", "db1/vm.json: disks[0].file: missing (required)"},
      {head + R"("disks": [7]})", "db1/vm.json: disks[0]: expected an object"},
      {head + R"("disks": {}})", "db1/vm.json: disks: expected an array"},
      {head + R"("nics": []})", "db1/vm.json: disks: missing (required; [] for none)"},
      {head + R"("disks": [], "nics": [{"mac": "zz"}]})",
       "db1/vm.json: nics[0].mac: 'zz' is not a MAC address (12 hex digits)"},
      {head + R"("disks": [], "missing": ["disks"]})",
       "db1/vm.json: missing[0]: 'disks' is not vcpus, memory or firmware"},
      {head + R"("disks": [], "direct_boot": {"cmdline": "x"}})",
       "db1/vm.json: direct_boot.kernel: empty, but initrd or cmdline is set"},
      {head + R"("disks": [], "running": 1})", "db1/vm.json: running: expected true or false"},
      {R"({"name": "db1", "disks": []})",
       "db1/vm.json: ferry_vm_description: missing: not a Ferry VM description"},
      {R"({"ferry_vm_description": 1, "disks": []})", "db1/vm.json: name: missing (required)"},
      {R"([1, 2])", "db1/vm.json: expected a JSON object"},
      {R"({"ferry_vm_description": 1, "name": })",
       "db1/vm.json: malformed JSON: parse error at line 1, column 37: syntax error while "
       "parsing value - unexpected '}'; expected '[', '{', or a literal"},
  };
  for (const auto& [doc, error] : cases) {
    auto vm = VmDescriptionFromJson(doc, "db1/vm.json");
    ASSERT_FALSE(vm.ok()) << doc;
    EXPECT_EQ(vm.status().code(), ErrorCode::kCorrupt) << doc;
    EXPECT_EQ(vm.status().message(), error) << doc;
  }
}

TEST(VmDescriptionTest, CapsAndVersion) {
  std::string disks;
  for (int i = 0; i < 65; ++i) disks += std::string(i ? "," : "") + R"({"file": "d"})";
  auto many = VmDescriptionFromJson(
      R"({"ferry_vm_description": 1, "name": "x", "disks": [)" + disks + "]}", "m.json");
  ASSERT_FALSE(many.ok());
  EXPECT_EQ(many.status().message(), "m.json: disks: 65 disks, more than the cap of 64");

  auto long_name = VmDescriptionFromJson(
      R"({"ferry_vm_description": 1, "name": ")" + std::string(4097, 'a') + R"(", "disks": []})",
      "l.json");
  ASSERT_FALSE(long_name.ok());
  EXPECT_EQ(long_name.status().message(), "l.json: name: 4097 bytes, more than the cap of 4096");

  auto v2 =
      VmDescriptionFromJson(R"({"ferry_vm_description": 2, "name": "x", "disks": []})", "v.json");
  ASSERT_FALSE(v2.ok());
  EXPECT_EQ(v2.status().code(), ErrorCode::kUnsupported);
  EXPECT_EQ(v2.status().message(), "v.json: ferry_vm_description 2: this Ferry reads version 1");

  auto deep = VmDescriptionFromJson(std::string(100000, '[') + std::string(100000, ']'), "d.json");
  ASSERT_FALSE(deep.ok());
  EXPECT_EQ(deep.status().message(), "d.json: nested more than 16 levels deep");
}

TEST(VmDescriptionTest, ComputeMissingAndNames) {
  VmDescription vm;
  ComputeMissing(vm);
  EXPECT_EQ(vm.missing, (std::vector<std::string>{"vcpus", "memory", "firmware"}));
  vm.vcpus = 1;
  vm.memory_bytes = 1;
  vm.firmware = "bios";
  ComputeMissing(vm);
  EXPECT_TRUE(vm.missing.empty());
  for (const Platform p : {Platform::kUnknown, Platform::kKvm, Platform::kVmware, Platform::kHyperV,
                           Platform::kFerry}) {
    auto back = ParsePlatform(PlatformName(p));
    ASSERT_TRUE(back.ok());
    EXPECT_EQ(*back, p);
  }
  EXPECT_FALSE(ParsePlatform("xen").ok());
  EXPECT_EQ(*NormalizeMac("00155D0A0B0C"), "00:15:5d:0a:0b:0c");
  EXPECT_EQ(*NormalizeMac("52:54:00:AB:CD:EF"), "52:54:00:ab:cd:ef");
  EXPECT_FALSE(NormalizeMac("00155D0A0B0C0D").ok());
  EXPECT_FALSE(NormalizeMac("").ok());
}

}  // namespace
}  // namespace ferry::sources
