#include "disk/ova/ova.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>

#include "common/bytes.h"
#include "test_util.h"

namespace ferry {
namespace {

using testing::Run;
using testing::ShellQuote;
using testing::TempDir;

constexpr uint64_t kMiB = 1 << 20;

std::string Ovf(const std::vector<std::pair<std::string, std::string>>& disks,
                const std::string& capacity_units = "byte * 2^20",
                const std::string& capacity = "6") {
  std::string refs, section;
  int i = 0;
  for (const auto& [id, href] : disks) {
    ++i;
    refs += "    <File ovf:href=\"" + href + "\" ovf:id=\"file" + std::to_string(i) + "\"/>\n";
    section += "    <Disk ovf:capacity=\"" + capacity + "\" ovf:capacityAllocationUnits=\"" +
               capacity_units + "\" ovf:diskId=\"" + id + "\" ovf:fileRef=\"file" +
               std::to_string(i) +
               "\" ovf:format=\"http://www.vmware.com/interfaces/specifications/"
               "vmdk.html#streamOptimized\"/>\n";
  }
  return R"(<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1"
    xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1"
    xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData"
    xmlns:vmw="http://www.vmware.com/schema/ovf">
  <References>
)" + refs +
         R"(  </References>
  <DiskSection>
    <Info>Virtual disk information</Info>
)" + section +
         R"(  </DiskSection>
  <NetworkSection><Info>nets</Info><Network ovf:name="VM Network"/></NetworkSection>
  <VirtualSystem ovf:id="web-01">
    <Info>A virtual machine</Info>
    <Name>web-01</Name>
    <VirtualHardwareSection>
      <Info>Virtual hardware requirements</Info>
      <Item>
        <rasd:AllocationUnits>hertz * 10^6</rasd:AllocationUnits>
        <rasd:ElementName>2 virtual CPU(s)</rasd:ElementName>
        <rasd:InstanceID>1</rasd:InstanceID>
        <rasd:ResourceType>3</rasd:ResourceType>
        <rasd:VirtualQuantity>2</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits>
        <rasd:ElementName>4096MB of memory</rasd:ElementName>
        <rasd:InstanceID>2</rasd:InstanceID>
        <rasd:ResourceType>4</rasd:ResourceType>
        <rasd:VirtualQuantity>4096</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:AddressOnParent>7</rasd:AddressOnParent>
        <rasd:Connection>VM Network</rasd:Connection>
        <rasd:ElementName>Network adapter 1</rasd:ElementName>
        <rasd:InstanceID>5</rasd:InstanceID>
        <rasd:ResourceSubType>VmxNet3</rasd:ResourceSubType>
        <rasd:ResourceType>10</rasd:ResourceType>
      </Item>
      <Item>
        <rasd:ElementName>Hard disk 1</rasd:ElementName>
        <rasd:HostResource>ovf:/disk/vmdisk1</rasd:HostResource>
        <rasd:InstanceID>6</rasd:InstanceID>
        <rasd:ResourceType>17</rasd:ResourceType>
      </Item>
      <vmw:Config ovf:required="false" vmw:key="firmware" vmw:value="efi"/>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
)";
}

void Sh(const std::string& cmd) {
  auto r = Run(cmd);
  ASSERT_EQ(r.exit_code, 0) << cmd << "\n" << r.output;
}

void WriteText(const std::string& path, const std::string& text) {
  ASSERT_TRUE(testing::WriteFileBytes(path, std::vector<uint8_t>(text.begin(), text.end())));
}

// A ustar header block for `name` with a correct checksum.
std::vector<uint8_t> TarHeader(const std::string& name, uint64_t size, char type = '0') {
  std::vector<uint8_t> h(512, 0);
  std::memcpy(h.data(), name.data(), std::min<size_t>(name.size(), 100));
  std::snprintf(reinterpret_cast<char*>(h.data() + 100), 8, "%07o", 0644);
  std::snprintf(reinterpret_cast<char*>(h.data() + 124), 12, "%011llo",
                static_cast<unsigned long long>(size));
  h[156] = static_cast<uint8_t>(type);
  std::memcpy(h.data() + 257,
              "ustar\0"
              "00",
              8);
  std::memset(h.data() + 148, ' ', 8);
  unsigned sum = 0;
  for (uint8_t b : h) sum += b;
  std::snprintf(reinterpret_cast<char*>(h.data() + 148), 8, "%06o", sum);
  return h;
}

// A tar built by hand: members in order, each padded, then two zero blocks.
std::vector<uint8_t> Tar(const std::vector<std::pair<std::string, std::vector<uint8_t>>>& members) {
  std::vector<uint8_t> out;
  for (const auto& [name, data] : members) {
    auto h = TarHeader(name, data.size());
    out.insert(out.end(), h.begin(), h.end());
    out.insert(out.end(), data.begin(), data.end());
    out.resize(RoundUp(out.size(), 512), 0);
  }
  out.resize(out.size() + 1024, 0);
  return out;
}

std::vector<uint8_t> Bytes(const std::string& s) { return {s.begin(), s.end()}; }

// A 6 MiB pattern disk as a qemu stream-optimized VMDK, and its raw truth.
struct Disk {
  std::string truth;
  std::string vmdk;
};
Disk MakeDisk(const TempDir& dir, const std::string& name, uint32_t seed = 4) {
  testing::PatternSpec spec;
  spec.size = 6 * kMiB;
  spec.seed = seed;
  Disk d{dir.Join(name + ".raw"), dir.Join(name)};
  EXPECT_TRUE(testing::WritePatternRaw(d.truth, spec));
  Sh("qemu-img convert -f raw -O vmdk -o subformat=streamOptimized " + ShellQuote(d.truth) + " " +
     ShellQuote(d.vmdk));
  return d;
}

void ExpectSame(BlockSource& src, const std::string& truth_path) {
  std::vector<uint8_t> truth = testing::ReadFileBytes(truth_path);
  ASSERT_EQ(src.size(), truth.size());
  std::vector<uint8_t> back(truth.size());
  ASSERT_TRUE(src.Read(0, back).ok());
  EXPECT_TRUE(back == truth);
  std::vector<Extent> ex;
  ASSERT_TRUE(src.Extents(0, src.size(), &ex).ok());
  uint64_t pos = 0;
  for (auto& e : ex) {
    EXPECT_EQ(e.offset, pos);
    pos += e.length;
  }
  EXPECT_EQ(pos, src.size());
}

Result<std::unique_ptr<BlockSource>> Open(const std::string& path, int disk = 0) {
  OpenOptions opts;
  opts.ova_disk_index = disk;
  return OpenImage(path, opts);
}

TEST(OvaTest, OpensDiskBuiltWithTar) {
  TempDir dir;
  Disk d = MakeDisk(dir, "web-01-disk1.vmdk");
  WriteText(dir.Join("web-01.ovf"), Ovf({{"vmdisk1", "web-01-disk1.vmdk"}}));
  Sh("cd " + ShellQuote(dir.path()) +
     " && sha256sum --tag web-01.ovf web-01-disk1.vmdk > web-01.mf"
     " && tar --format=ustar -cf web-01.ova web-01.ovf web-01-disk1.vmdk web-01.mf");
  std::string ova = dir.Join("web-01.ova");
  auto probed = ProbeFormat(PosixEnv(), ova);
  ASSERT_TRUE(probed.ok());
  EXPECT_EQ(*probed, ImageFormat::kOva);
  auto src = Open(ova);
  ASSERT_TRUE(src.ok()) << src.status().ToString();
  ExpectSame(**src, d.truth);
  ImageInfo info = (*src)->info();
  EXPECT_EQ(info.format, "ova");
  EXPECT_EQ(info.subformat, "streamOptimized");
  EXPECT_TRUE(info.problems.empty()) << info.problems[0];

  auto file = PosixEnv()->Open(ova, OpenMode::kRead);
  ASSERT_TRUE(file.ok());
  auto ovf = ReadOvaDescriptor(**file);
  ASSERT_TRUE(ovf.ok()) << ovf.status().ToString();
  EXPECT_EQ(ovf->vm_name, "web-01");
  EXPECT_EQ(ovf->vcpus, 2u);
  EXPECT_EQ(ovf->memory_mb, 4096u);
  EXPECT_EQ(ovf->firmware, "efi");
  ASSERT_EQ(ovf->nics.size(), 1u);
  EXPECT_EQ(ovf->nics[0].network, "VM Network");
  EXPECT_EQ(ovf->nics[0].adapter, "VmxNet3");
  ASSERT_EQ(ovf->disks.size(), 1u);
  EXPECT_EQ(ovf->disks[0].capacity, 6 * kMiB);
  EXPECT_EQ(ovf->disks[0].file_href, "web-01-disk1.vmdk");
  ASSERT_EQ(ovf->manifest.size(), 2u);
  EXPECT_EQ(ovf->manifest[1].algorithm, "SHA256");
  EXPECT_EQ(ovf->manifest[1].file, "web-01-disk1.vmdk");
  EXPECT_EQ(ovf->manifest[1].digest_hex.size(), 64u);
}

TEST(OvaTest, PaxAndGnuLongNamesAndSecondDisk) {
  TempDir dir;
  const std::string long_name = std::string(130, 'd') + ".vmdk";
  Disk a = MakeDisk(dir, "a.vmdk", 1);
  Disk b = MakeDisk(dir, long_name, 2);
  WriteText(dir.Join("vm.ovf"), Ovf({{"d1", "a.vmdk"}, {"d2", long_name}}));
  for (const char* format : {"pax", "gnu"}) {
    std::string ova = dir.Join(std::string("vm-") + format + ".ova");
    Sh("cd " + ShellQuote(dir.path()) + " && tar --format=" + format + " -cf " + ShellQuote(ova) +
       " vm.ovf a.vmdk " + ShellQuote(long_name));
    auto src = Open(ova, 1);
    ASSERT_TRUE(src.ok()) << format << ": " << src.status().ToString();
    ExpectSame(**src, b.truth);
    auto first = Open(ova, 0);
    ASSERT_TRUE(first.ok());
    ExpectSame(**first, a.truth);
    auto none = Open(ova, 2);
    EXPECT_EQ(none.status().code(), ErrorCode::kNotFound);
  }
}

TEST(OvaTest, MemberEscapingTheArchiveIsCorrupt) {
  TempDir dir;
  Disk d = MakeDisk(dir, "disk.vmdk");
  std::string ova = dir.Join("evil.ova");
  ASSERT_TRUE(testing::WriteFileBytes(ova, Tar({{"vm.ovf", Bytes(Ovf({{"d", "disk.vmdk"}}))},
                                                {"../evil", Bytes("x")},
                                                {"disk.vmdk", testing::ReadFileBytes(d.vmdk)}})));
  auto src = Open(ova);
  ASSERT_FALSE(src.ok());
  EXPECT_EQ(src.status().code(), ErrorCode::kCorrupt);
  EXPECT_NE(src.status().message().find("'../evil'"), std::string::npos) << src.status().ToString();
  ASSERT_TRUE(testing::WriteFileBytes(ova, Tar({{"/etc/passwd", Bytes("x")}})));
  EXPECT_EQ(Open(ova).status().code(), ErrorCode::kCorrupt);
}

TEST(OvaTest, DiskMissingFromArchiveIsNotFound) {
  TempDir dir;
  std::string ova = dir.Join("m.ova");
  ASSERT_TRUE(testing::WriteFileBytes(ova, Tar({{"vm.ovf", Bytes(Ovf({{"d", "gone.vmdk"}}))}})));
  auto src = Open(ova);
  EXPECT_EQ(src.status().code(), ErrorCode::kNotFound);
  EXPECT_NE(src.status().message().find("gone.vmdk"), std::string::npos);
}

TEST(OvaTest, ProblemsAreReported) {
  TempDir dir;
  Disk d = MakeDisk(dir, "disk.vmdk");
  std::string ova = dir.Join("p.ova");
  // OVF after the disk, and a capacity that does not match the VMDK.
  ASSERT_TRUE(testing::WriteFileBytes(
      ova, Tar({{"disk.vmdk", testing::ReadFileBytes(d.vmdk)},
                {"vm.ovf", Bytes(Ovf({{"d", "disk.vmdk"}}, "byte * 2^30", "1"))}})));
  auto src = Open(ova);
  ASSERT_TRUE(src.ok()) << src.status().ToString();
  ExpectSame(**src, d.truth);
  auto problems = (*src)->info().problems;
  ASSERT_EQ(problems.size(), 2u);
  EXPECT_NE(problems[0].find("first member"), std::string::npos);
  EXPECT_NE(problems[1].find("capacity"), std::string::npos);
}

TEST(OvaTest, BrokenTarHeaders) {
  TempDir dir;
  std::string ova = dir.Join("b.ova");
  auto tar = Tar({{"vm.ovf", Bytes(Ovf({{"d", "disk.vmdk"}}))}});
  auto bad_sum = tar;
  bad_sum[0] = 'w';
  ASSERT_TRUE(testing::WriteFileBytes(ova, bad_sum));
  auto r = Open(ova);
  EXPECT_EQ(r.status().code(), ErrorCode::kCorrupt);
  EXPECT_NE(r.status().message().find("checksum"), std::string::npos) << r.status().ToString();
  // A member claiming more bytes than the file holds.
  auto big = Tar({{"vm.ovf", Bytes("x")}});
  auto h = TarHeader("vm.ovf", 1ull << 40);
  std::copy(h.begin(), h.end(), big.begin());
  ASSERT_TRUE(testing::WriteFileBytes(ova, big));
  r = Open(ova);
  EXPECT_EQ(r.status().code(), ErrorCode::kCorrupt);
  EXPECT_NE(r.status().message().find("past the end"), std::string::npos) << r.status().ToString();
  // No OVF at all.
  ASSERT_TRUE(testing::WriteFileBytes(ova, Tar({{"x.vmdk", Bytes("x")}})));
  EXPECT_EQ(Open(ova).status().code(), ErrorCode::kCorrupt);
}

TEST(OvaTest, ParseOvfUnitsAndErrors) {
  auto d = ParseOvf(Ovf({{"d", "x.vmdk"}}, "byte * 2^30", "16"), "t.ovf");
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->disks[0].capacity, 16ull << 30);
  d = ParseOvf(Ovf({{"d", "x.vmdk"}}, "byte", "1048576"), "t.ovf");
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->disks[0].capacity, kMiB);
  d = ParseOvf(Ovf({{"d", "x.vmdk"}}, "byte * 2^70", "1"), "t.ovf");
  EXPECT_EQ(d.status().code(), ErrorCode::kCorrupt);
  d = ParseOvf(Ovf({{"d", "x.vmdk"}}, "furlongs", "1"), "t.ovf");
  EXPECT_EQ(d.status().code(), ErrorCode::kCorrupt);
  EXPECT_NE(d.status().message().find("furlongs"), std::string::npos);
  d = ParseOvf("<Envelope><References>", "t.ovf");
  EXPECT_EQ(d.status().code(), ErrorCode::kCorrupt);
  d = ParseOvf("<html/>", "t.ovf");
  EXPECT_EQ(d.status().code(), ErrorCode::kCorrupt);
  auto m = ParseManifest("SHA1(a.ovf)= 00AB\nSHA256(b.vmdk) = ff\n", "t.mf");
  ASSERT_TRUE(m.ok());
  ASSERT_EQ(m->size(), 2u);
  EXPECT_EQ((*m)[0].digest_hex, "00ab");
  EXPECT_EQ((*m)[1].file, "b.vmdk");
  EXPECT_FALSE(ParseManifest("garbage\n", "t.mf").ok());
}

}  // namespace
}  // namespace ferry
