#include "sources/share.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <string>

#include "test_util.h"

namespace ferry::sources {
namespace {

namespace fs = std::filesystem;
using testing::Run;
using testing::ShellQuote;
using testing::TempDir;

constexpr uint64_t kMiB = 1 << 20;

void Sh(const std::string& cmd) {
  auto r = Run(cmd);
  ASSERT_EQ(r.exit_code, 0) << cmd << "\n" << r.output;
}

void WriteText(const std::string& path, const std::string& text) {
  fs::create_directories(fs::path(path).parent_path());
  ASSERT_TRUE(testing::WriteFileBytes(path, std::vector<uint8_t>(text.begin(), text.end())))
      << path;
}

// qemu-img create -f FORMAT [-o OPTIONS] PATH SIZE
void QemuImg(const std::string& path, const std::string& format, const std::string& size,
             const std::string& options = "") {
  fs::create_directories(fs::path(path).parent_path());
  Sh("qemu-img create -q -f " + format + (options.empty() ? "" : " -o " + options) + " " +
     ShellQuote(path) + " " + size);
}

std::string SourceSample(const std::string& corpus, const std::string& name) {
  const auto bytes =
      testing::ReadFileBytes(testing::SourceDir() + "/fuzz/corpus/" + corpus + "/" + name);
  return std::string(bytes.begin(), bytes.end());
}

// An OVF with one VM of 2 vCPUs, 4 GiB, UEFI, a vmxnet3 NIC on "VM Network" and one disk.
std::string Ovf(const std::string& name, const std::string& href, uint64_t capacity_mib) {
  return R"(<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1"
    xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1"
    xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData"
    xmlns:vmw="http://www.vmware.com/schema/ovf">
  <References><File ovf:href=")" +
         href + R"(" ovf:id="file1"/></References>
  <DiskSection><Info>disks</Info>
    <Disk ovf:capacity=")" +
         std::to_string(capacity_mib) +
         R"(" ovf:capacityAllocationUnits="byte * 2^20" ovf:diskId="vmdisk1" ovf:fileRef="file1"
        ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/>
  </DiskSection>
  <NetworkSection><Info>nets</Info><Network ovf:name="VM Network"/></NetworkSection>
  <VirtualSystem ovf:id=")" +
         name + R"(">
    <Info>A virtual machine</Info>
    <Name>)" +
         name +
         R"(</Name>
    <VirtualHardwareSection><Info>hw</Info>
      <Item><rasd:AllocationUnits>hertz * 10^6</rasd:AllocationUnits>
        <rasd:ElementName>2 virtual CPU(s)</rasd:ElementName><rasd:InstanceID>1</rasd:InstanceID>
        <rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>2</rasd:VirtualQuantity></Item>
      <Item><rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits>
        <rasd:ElementName>4096MB of memory</rasd:ElementName><rasd:InstanceID>2</rasd:InstanceID>
        <rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>4096</rasd:VirtualQuantity></Item>
      <Item><rasd:Address>00:50:56:AA:BB:CC</rasd:Address><rasd:Connection>VM Network</rasd:Connection>
        <rasd:ElementName>Network adapter 1</rasd:ElementName><rasd:InstanceID>5</rasd:InstanceID>
        <rasd:ResourceSubType>VmxNet3</rasd:ResourceSubType><rasd:ResourceType>10</rasd:ResourceType></Item>
      <Item><rasd:ElementName>Hard disk 1</rasd:ElementName>
        <rasd:HostResource>ovf:/disk/vmdisk1</rasd:HostResource><rasd:InstanceID>6</rasd:InstanceID>
        <rasd:ResourceType>17</rasd:ResourceType></Item>
      <vmw:Config ovf:required="false" vmw:key="firmware" vmw:value="efi"/>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
)";
}

std::string VmJson(const std::string& name, const std::string& disk_file) {
  return R"({"ferry_vm_description": 1, "name": ")" + name +
         R"(", "platform": "vmware", "vcpus": 2, "memory_bytes": 2147483648, "firmware": "bios",
  "disks": [{"id": "disk0", "file": ")" +
         disk_file + R"(", "format": "qcow2"}],
  "nics": [{"id": "nic0", "network": "lab", "mac": "52:54:00:00:00:01"}]})";
}

// A share with one VM of every layout, plus files that must not become VMs of their own.
class ShareTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = dir_.Join("exports");
    fs::create_directories(root_);
    // OVA: a tar of an OVF and a streamOptimized VMDK made by qemu-img.
    const std::string stage = dir_.Join("stage");
    QemuImg(stage + "/web1-disk1.vmdk", "vmdk", "6M", "subformat=streamOptimized");
    WriteText(stage + "/web1.ovf", Ovf("web1", "web1-disk1.vmdk", 6));
    Sh("cd " + ShellQuote(stage) + " && tar --format=ustar -cf " + ShellQuote(root_ + "/web1.ova") +
       " web1.ovf web1-disk1.vmdk");
    // OVF folder: the OVF and the disk file it references.
    QemuImg(root_ + "/app/app-disk1.vmdk", "vmdk", "8M", "subformat=streamOptimized");
    WriteText(root_ + "/app/app.ovf", Ovf("app", "app-disk1.vmdk", 8));
    // Hyper-V 2012 R2 export: XML configuration + VHDX/VHD in Virtual Hard Disks/.
    WriteText(root_ + "/web2/Virtual Machines/0AA394FA-7C4A-4070-BA32-773D43B28A68.xml",
              SourceSample("hyperv_config_fuzz", "ws2012r2_gen2.xml"));
    QemuImg(root_ + "/web2/Virtual Hard Disks/web2-os.vhdx", "vhdx", "16M");
    QemuImg(root_ + "/web2/Virtual Hard Disks/web2-data.vhd", "vpc", "4M");
    // Hyper-V 2016+ export: binary .vmcx, disks only.
    WriteText(root_ + "/hv3/Virtual Machines/5C1E0000-AAAA-BBBB-CCCC-DDDDEEEEFFFF.vmcx",
              std::string("\x01\x02\x03\x04 binary", 11));
    WriteText(root_ + "/hv3/Virtual Machines/5C1E0000-AAAA-BBBB-CCCC-DDDDEEEEFFFF.vmrs", "x");
    QemuImg(root_ + "/hv3/Virtual Hard Disks/hv3.vhdx", "vhdx", "12M");
    // Ferry's vm.json with a relative disk.
    QemuImg(root_ + "/db1/db1-disk0.qcow2", "qcow2", "20M");
    WriteText(root_ + "/db1/vm.json", VmJson("db1", "db1-disk0.qcow2"));
    // libvirt domain XML: one disk by the original host's absolute path, one relative.
    WriteText(root_ + "/kvm1/kvm1.xml", SourceSample("libvirt_domain_fuzz", "direct_boot.xml"));
    QemuImg(root_ + "/kvm1/kvm1.qcow2", "qcow2", "10M");
    QemuImg(root_ + "/kvm1/kvm1-data.raw", "raw", "3M");
    WriteText(root_ + "/kvm1/vmlinuz", "kernel");
    WriteText(root_ + "/kvm1/initrd.img", "initrd");
    // Bare disks of every format; a VMDK descriptor with its flat extent; a qcow2 overlay
    // on a backing file.
    QemuImg(root_ + "/disk7.qcow2", "qcow2", "5M");
    QemuImg(root_ + "/bare/a.raw", "raw", "1M");
    QemuImg(root_ + "/bare/b.vhdx", "vhdx", "2M");
    QemuImg(root_ + "/bare/c.vhd", "vpc", "3M");
    QemuImg(root_ + "/bare/d.vmdk", "vmdk", "4M", "subformat=monolithicFlat");
    QemuImg(root_ + "/bare/e.img", "raw", "1M");
    QemuImg(root_ + "/chain/base.qcow2", "qcow2", "7M");
    Sh("qemu-img create -q -f qcow2 -F qcow2 -b base.qcow2 " +
       ShellQuote(root_ + "/chain/top.qcow2"));
    // Noise: a broken OVF, an XML that is no domain, a staging folder being written.
    WriteText(root_ + "/broken/broken.ovf", "<Envelope><oops");
    WriteText(root_ + "/notes/readme.xml", "<notes>not a VM</notes>");
    QemuImg(root_ + "/.db2.ferry-part/db2-disk0.qcow2", "qcow2", "1M");
  }

  std::map<std::string, ShareVm> ById(const ShareScan& scan) {
    std::map<std::string, ShareVm> out;
    for (const ShareVm& vm : scan.vms) out[vm.id] = vm;
    return out;
  }

  TempDir dir_;
  std::string root_;
};

TEST_F(ShareTest, ScanFindsEveryLayout) {
  auto scan = ScanShare("exports", root_);
  ASSERT_TRUE(scan.ok()) << scan.status().ToString();
  std::vector<std::string> ids;
  for (const ShareVm& vm : scan->vms) ids.push_back(vm.id);
  EXPECT_EQ(ids, (std::vector<std::string>{
                     "app/app.ovf",
                     "bare/a.raw",
                     "bare/b.vhdx",
                     "bare/c.vhd",
                     "bare/d.vmdk",
                     "bare/e.img",
                     "chain/top.qcow2",
                     "db1/vm.json",
                     "disk7.qcow2",
                     "hv3/Virtual Machines/5C1E0000-AAAA-BBBB-CCCC-DDDDEEEEFFFF.vmcx",
                     "kvm1/kvm1.xml",
                     "web1.ova",
                     "web2/Virtual Machines/0AA394FA-7C4A-4070-BA32-773D43B28A68.xml",
                 }));
  ASSERT_EQ(scan->problems.size(), 1u);
  EXPECT_EQ(scan->problems[0].rfind("broken/broken.ovf: ", 0), 0u) << scan->problems[0];
  EXPECT_NE(scan->problems[0].find("(skipped)"), std::string::npos) << scan->problems[0];

  const std::string real_root = fs::canonical(root_).string();
  for (const ShareVm& vm : scan->vms) {
    EXPECT_EQ(vm.share, "exports");
    EXPECT_EQ(vm.vm.descriptor, real_root + "/" + vm.id);
    for (size_t i = 0; i < vm.vm.disks.size(); ++i) {
      EXPECT_EQ(vm.vm.disks[i].id, "disk" + std::to_string(i)) << vm.id;
      EXPECT_EQ(vm.vm.disks[i].datastore, "exports") << vm.id;
      EXPECT_EQ(vm.vm.disks[i].file.rfind(real_root + "/", 0), 0u) << vm.vm.disks[i].file;
      EXPECT_GT(vm.vm.disks[i].capacity_bytes, 0u) << vm.id;
    }
  }
  auto vms = ById(*scan);

  const VmDescription& ova = vms["web1.ova"].vm;
  EXPECT_EQ(ova.name, "web1");
  EXPECT_EQ(ova.platform, Platform::kVmware);
  EXPECT_EQ(ova.vcpus, 2);
  EXPECT_EQ(ova.memory_bytes, 4096 * kMiB);
  EXPECT_EQ(ova.firmware, "uefi");
  ASSERT_EQ(ova.disks.size(), 1u);
  EXPECT_EQ(ova.disks[0].format, "ova");
  EXPECT_EQ(ova.disks[0].ova_disk_index, 0);
  EXPECT_EQ(ova.disks[0].file, real_root + "/web1.ova");
  EXPECT_EQ(ova.disks[0].capacity_bytes, 6 * kMiB);
  EXPECT_EQ(ova.disks[0].source_ref, "vmdisk1");
  ASSERT_EQ(ova.nics.size(), 1u);
  EXPECT_EQ(ova.nics[0].id, "nic0");
  EXPECT_EQ(ova.nics[0].network, "VM Network");
  EXPECT_EQ(ova.nics[0].model, "vmxnet3");
  EXPECT_EQ(ova.nics[0].mac, "00:50:56:aa:bb:cc");
  EXPECT_TRUE(ova.missing.empty());

  const VmDescription& ovf = vms["app/app.ovf"].vm;
  EXPECT_EQ(ovf.name, "app");
  ASSERT_EQ(ovf.disks.size(), 1u);
  EXPECT_EQ(ovf.disks[0].file, real_root + "/app/app-disk1.vmdk");
  EXPECT_EQ(ovf.disks[0].format, "vmdk");
  EXPECT_EQ(ovf.disks[0].capacity_bytes, 8 * kMiB);

  const VmDescription& hv =
      vms["web2/Virtual Machines/0AA394FA-7C4A-4070-BA32-773D43B28A68.xml"].vm;
  EXPECT_EQ(hv.name, "web2");
  EXPECT_EQ(hv.platform, Platform::kHyperV);
  EXPECT_EQ(hv.vcpus, 4);
  EXPECT_EQ(hv.firmware, "uefi");
  ASSERT_EQ(hv.disks.size(), 2u);
  EXPECT_EQ(hv.disks[0].file, real_root + "/web2/Virtual Hard Disks/web2-os.vhdx");
  EXPECT_EQ(hv.disks[0].format, "vhdx");
  EXPECT_EQ(hv.disks[0].capacity_bytes, 16 * kMiB);
  EXPECT_EQ(hv.disks[1].format, "vhd");
  EXPECT_EQ(hv.nics[0].mac, "00:15:5d:01:07:dc");

  const VmDescription& vmcx =
      vms["hv3/Virtual Machines/5C1E0000-AAAA-BBBB-CCCC-DDDDEEEEFFFF.vmcx"].vm;
  EXPECT_EQ(vmcx.name, "hv3");
  EXPECT_EQ(vmcx.platform, Platform::kHyperV);
  EXPECT_EQ(vmcx.missing, (std::vector<std::string>{"vcpus", "memory", "firmware"}));
  ASSERT_EQ(vmcx.disks.size(), 1u);
  EXPECT_EQ(vmcx.disks[0].capacity_bytes, 12 * kMiB);
  ASSERT_EQ(vmcx.problems.size(), 1u);
  EXPECT_EQ(vmcx.problems[0],
            "5C1E0000-AAAA-BBBB-CCCC-DDDDEEEEFFFF.vmcx: .vmcx is a binary format Ferry does not "
            "read; the plan must supply vcpus, memory and firmware");

  const VmDescription& ferry = vms["db1/vm.json"].vm;
  EXPECT_EQ(ferry.name, "db1");
  EXPECT_EQ(ferry.platform, Platform::kVmware);
  EXPECT_EQ(ferry.memory_bytes, 2ull << 30);
  ASSERT_EQ(ferry.disks.size(), 1u);
  EXPECT_EQ(ferry.disks[0].file, real_root + "/db1/db1-disk0.qcow2");
  EXPECT_EQ(ferry.disks[0].capacity_bytes, 20 * kMiB);
  EXPECT_EQ(ferry.nics[0].network, "lab");

  const VmDescription& kvm = vms["kvm1/kvm1.xml"].vm;
  EXPECT_EQ(kvm.platform, Platform::kKvm);
  ASSERT_EQ(kvm.disks.size(), 2u);
  EXPECT_EQ(kvm.disks[0].file, real_root + "/kvm1/kvm1.qcow2");
  EXPECT_EQ(kvm.disks[0].format, "qcow2");
  EXPECT_EQ(kvm.disks[0].capacity_bytes, 10 * kMiB);
  EXPECT_EQ(kvm.disks[1].file, real_root + "/kvm1/kvm1-data.raw");
  EXPECT_EQ(kvm.disks[1].capacity_bytes, 3 * kMiB);
  EXPECT_EQ(kvm.direct_boot.kernel, real_root + "/kvm1/vmlinuz");
  EXPECT_EQ(kvm.direct_boot.initrd, real_root + "/kvm1/initrd.img");
  EXPECT_EQ(kvm.direct_boot.cmdline, "console=ttyS0 root=/dev/vda");

  const VmDescription& bare = vms["disk7.qcow2"].vm;
  EXPECT_EQ(bare.name, "disk7");
  EXPECT_EQ(bare.platform, Platform::kUnknown);
  EXPECT_EQ(bare.missing, (std::vector<std::string>{"vcpus", "memory", "firmware"}));
  EXPECT_EQ(bare.disks[0].format, "qcow2");
  EXPECT_EQ(vms["bare/d.vmdk"].vm.disks[0].format, "vmdk");
  EXPECT_EQ(vms["bare/d.vmdk"].vm.disks[0].capacity_bytes, 4 * kMiB);
  EXPECT_EQ(vms["bare/c.vhd"].vm.disks[0].format, "vhd");
  EXPECT_EQ(vms["bare/b.vhdx"].vm.disks[0].format, "vhdx");
  EXPECT_EQ(vms["bare/a.raw"].vm.disks[0].format, "raw");
  EXPECT_EQ(vms["chain/top.qcow2"].vm.disks[0].capacity_bytes, 7 * kMiB);
}

TEST_F(ShareTest, ReadShareVmMatchesTheScan) {
  auto scan = ScanShare("exports", root_);
  ASSERT_TRUE(scan.ok());
  for (const ShareVm& scanned : scan->vms) {
    auto vm = ReadShareVm("exports", root_, scanned.id);
    ASSERT_TRUE(vm.ok()) << scanned.id << ": " << vm.status().ToString();
    EXPECT_EQ(ToJson(vm->vm), ToJson(scanned.vm)) << scanned.id;
  }
  auto broken = ReadShareVm("exports", root_, "broken/broken.ovf");
  ASSERT_FALSE(broken.ok());
  EXPECT_EQ(broken.status().code(), ErrorCode::kCorrupt);
  EXPECT_EQ(broken.status().message().rfind("broken/broken.ovf: ", 0), 0u);

  auto missing = ReadShareVm("exports", root_, "nope.ova");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), ErrorCode::kNotFound);
  // Parts of other VMs are not VMs of their own.
  for (const char* part : {"bare/d-flat.vmdk", "chain/base.qcow2", "db1/db1-disk0.qcow2",
                           "app/app-disk1.vmdk", "web2/Virtual Hard Disks/web2-os.vhdx"}) {
    auto p = ReadShareVm("exports", root_, part);
    ASSERT_FALSE(p.ok()) << part;
    EXPECT_EQ(p.status().code(), ErrorCode::kNotFound) << part;
    EXPECT_EQ(p.status().message(), std::string("share exports: ") + part +
                                        " is part of another VM of the share, not a VM of its own");
  }
  auto hidden = ReadShareVm("exports", root_, ".db2.ferry-part/db2-disk0.qcow2");
  EXPECT_EQ(hidden.status().code(), ErrorCode::kNotFound);
  auto xml = ReadShareVm("exports", root_, "notes/readme.xml");
  EXPECT_EQ(xml.status().code(), ErrorCode::kNotFound);
}

TEST_F(ShareTest, NotAFolder) {
  auto scan = ScanShare("exports", root_ + "/disk7.qcow2");
  ASSERT_FALSE(scan.ok());
  EXPECT_EQ(scan.status().code(), ErrorCode::kNotFound);
  EXPECT_FALSE(ScanShare("exports", dir_.Join("none")).ok());
}

class ShareEscapeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = dir_.Join("share");
    fs::create_directories(root_);
    outside_ = dir_.Join("outside.qcow2");
    QemuImg(outside_, "qcow2", "1M");
  }
  Status Read(const std::string& id) {
    auto vm = ReadShareVm("s", root_, id);
    return vm.ok() ? Status::Ok() : vm.status();
  }
  TempDir dir_;
  std::string root_;
  std::string outside_;
};

TEST_F(ShareEscapeTest, DotDotReferenceRefused) {
  WriteText(root_ + "/evil/vm.json", VmJson("evil", "../../outside.qcow2"));
  const Status s = Read("evil/vm.json");
  EXPECT_EQ(s.code(), ErrorCode::kPermissionDenied) << s.ToString();
  EXPECT_EQ(s.message(), "evil/vm.json: disks[0].file '../../outside.qcow2' resolves to " +
                             fs::canonical(outside_).string() + ", outside the share " +
                             fs::canonical(root_).string());
  auto scan = ScanShare("s", root_);
  ASSERT_TRUE(scan.ok());
  EXPECT_TRUE(scan->vms.empty());
  ASSERT_EQ(scan->problems.size(), 1u);
  EXPECT_EQ(scan->problems[0], s.message() + " (skipped)");
}

TEST_F(ShareEscapeTest, AbsoluteReferenceRefused) {
  WriteText(root_ + "/evil/vm.json", VmJson("evil", outside_));
  EXPECT_EQ(Read("evil/vm.json").code(), ErrorCode::kPermissionDenied);
  // A libvirt XML naming a file outside the share with no same-named file beside it.
  std::string xml = SourceSample("libvirt_domain_fuzz", "uefi_volume.xml");
  xml =
      "<domain type='kvm'><name>x</name><memory>1024</memory><vcpu>1</vcpu><os><type>hvm</type>"
      "</os><devices><disk type='file' device='disk'><source file='" +
      outside_ + "'/><target dev='vda' bus='virtio'/></disk></devices></domain>";
  WriteText(root_ + "/x/x.xml", xml);
  const Status s = Read("x/x.xml");
  EXPECT_EQ(s.code(), ErrorCode::kPermissionDenied) << s.ToString();
  EXPECT_EQ(s.message().rfind("x/x.xml: vda '" + outside_ + "' resolves to", 0), 0u) << s.message();
}

TEST_F(ShareEscapeTest, SymlinkOutRefused) {
  fs::create_directories(root_ + "/evil");
  fs::create_symlink(outside_, root_ + "/evil/disk.qcow2");
  WriteText(root_ + "/evil/vm.json", VmJson("evil", "disk.qcow2"));
  const Status s = Read("evil/vm.json");
  EXPECT_EQ(s.code(), ErrorCode::kPermissionDenied) << s.ToString();
  EXPECT_NE(s.message().find("disks[0].file 'disk.qcow2' resolves to"), std::string::npos)
      << s.message();
  // The link itself is not a bare disk either.
  fs::create_symlink(outside_, root_ + "/link.qcow2");
  fs::create_symlink(dir_.path(), root_ + "/linkdir");
  auto scan = ScanShare("s", root_);
  ASSERT_TRUE(scan.ok());
  EXPECT_TRUE(scan->vms.empty());
  const std::string real_outside = fs::canonical(outside_).string();
  EXPECT_EQ(
      scan->problems,
      (std::vector<std::string>{
          "evil/disk.qcow2: symbolic link to " + real_outside + ", outside the share (skipped)",
          s.message() + " (skipped)",
          "link.qcow2: symbolic link to " + real_outside + ", outside the share (skipped)",
          "linkdir: symbolic link to " + fs::canonical(dir_.path()).string() +
              ", outside the share (skipped)",
      }));
  EXPECT_EQ(Read("link.qcow2").code(), ErrorCode::kPermissionDenied);
}

TEST_F(ShareEscapeTest, BadIdsRefused) {
  EXPECT_EQ(Read("../outside.qcow2").code(), ErrorCode::kPermissionDenied);
  EXPECT_EQ(Read(outside_).code(), ErrorCode::kPermissionDenied);
  EXPECT_EQ(Read("a/../../outside.qcow2").code(), ErrorCode::kPermissionDenied);
  EXPECT_EQ(Read("").code(), ErrorCode::kPermissionDenied);
}

TEST_F(ShareEscapeTest, BackingFileOutsideRefused) {
  // A qcow2 in the share whose backing file is outside it.
  Sh("qemu-img create -q -f qcow2 -F qcow2 -b " + ShellQuote(outside_) + " " +
     ShellQuote(root_ + "/overlay.qcow2"));
  const Status s = Read("overlay.qcow2");
  EXPECT_EQ(s.code(), ErrorCode::kPermissionDenied) << s.ToString();
  auto scan = ScanShare("s", root_);
  ASSERT_TRUE(scan.ok());
  EXPECT_TRUE(scan->vms.empty());
  ASSERT_EQ(scan->problems.size(), 1u);
  EXPECT_EQ(scan->problems[0].rfind("overlay.qcow2: ", 0), 0u) << scan->problems[0];
}

TEST_F(ShareEscapeTest, CapsOnDescriptorsDepthAndEntries) {
  QemuImg(root_ + "/db1/d.qcow2", "qcow2", "1M");
  WriteText(root_ + "/db1/vm.json", VmJson("db1", "d.qcow2"));
  QemuImg(root_ + "/a/b/c/deep.qcow2", "qcow2", "1M");
  ScanOptions options;
  options.max_descriptor_bytes = 64;
  options.max_depth = 2;
  auto scan = ScanShare("s", root_, options);
  ASSERT_TRUE(scan.ok());
  ASSERT_EQ(scan->vms.size(), 1u);
  EXPECT_EQ(scan->vms[0].id, "db1/d.qcow2");  // its vm.json was skipped
  const std::string size = std::to_string(fs::file_size(root_ + "/db1/vm.json"));
  EXPECT_EQ(scan->problems,
            (std::vector<std::string>{
                "a/b/c/: deeper than 2 folder levels (not scanned)",
                "db1/vm.json: " + size + " bytes, more than the descriptor cap of 64 (skipped)"}));
  options = {};
  options.max_entries = 2;
  auto capped = ScanShare("s", root_, options);
  ASSERT_TRUE(capped.ok());
  EXPECT_EQ(capped->problems.back(), "share s: more than 2 entries; the rest was not scanned");
}

TEST_F(ShareEscapeTest, HyperVDiskMissing) {
  WriteText(root_ + "/hv/Virtual Machines/A.xml",
            SourceSample("hyperv_config_fuzz", "ws2008r2_gen1.xml"));
  fs::create_directories(root_ + "/hv/Virtual Hard Disks");
  const Status s = Read("hv/Virtual Machines/A.xml");
  EXPECT_EQ(s.code(), ErrorCode::kNotFound);
  EXPECT_EQ(s.message(),
            "hv/Virtual Machines/A.xml: disk 'C:\\VMs\\hv-db\\Virtual Hard Disks\\hv-db.vhd': no "
            "hv-db.vhd in hv/Virtual Hard Disks/");
  // Windows names are case-insensitive: HV-DB.VHD matches.
  QemuImg(root_ + "/hv/Virtual Hard Disks/HV-DB.VHD", "vpc", "2M");
  auto vm = ReadShareVm("s", root_, "hv/Virtual Machines/A.xml");
  ASSERT_TRUE(vm.ok()) << vm.status().ToString();
  EXPECT_EQ(vm->vm.disks[0].format, "vhd");
  EXPECT_EQ(vm->vm.disks[0].bus, "ide");
}

}  // namespace
}  // namespace ferry::sources
