// Fast tests of the bootable lab disk: the layout arithmetic and the syslinux.cfg text, and a
// real build with the real tools (sfdisk, mkfs.fat, syslinux, mtools, qemu-img) on stand-in
// kernel and initrd files, read back with mtools and qemu-img. Booting it is the lab test's
// job (boot_disk_lab_test.cc).
#include "lab/boot_disk.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <vector>

#include "lab/process.h"
#include "test_util.h"

namespace ferry::lab {
namespace {

using ferry::testing::ReadFileBytes;
using ferry::testing::TempDir;
using ferry::testing::WriteFileBytes;

constexpr uint64_t kMib = 1 << 20;

TEST(BootDiskPlan, DefaultLayout) {
  BootDiskSpec spec;  // 24 MiB boot, 16 MiB data
  auto g = PlanBootDisk(spec);
  ASSERT_TRUE(g.ok()) << g.status().ToString();
  EXPECT_EQ(g->boot_start, 2048u);
  EXPECT_EQ(g->boot_sectors, 24u * 2048);
  EXPECT_EQ(g->data_start, 2048u + 24 * 2048);
  EXPECT_EQ(g->data_sectors, 16u * 2048);
  EXPECT_EQ(g->disk_bytes, 41 * kMib);
  EXPECT_EQ(g->fat_sectors_per_cluster, 1u);  // 49152 clusters
}

TEST(BootDiskPlan, ClustersStayWithinFat16) {
  for (uint64_t mib : {8, 31, 32, 100, 512, 1024}) {
    BootDiskSpec spec;
    spec.boot_mib = mib;
    auto g = PlanBootDisk(spec);
    ASSERT_TRUE(g.ok()) << g.status().ToString();
    const uint64_t clusters = g->boot_sectors / g->fat_sectors_per_cluster;
    EXPECT_GE(clusters, 8192u) << mib;  // well above FAT16's 4085, so not too coarse
    EXPECT_LE(clusters, 65000u) << mib;
    EXPECT_LE(g->fat_sectors_per_cluster, 64u) << mib;  // 32 KiB: FAT16's largest usual
  }
}

TEST(BootDiskPlan, ALargerDiskGrowsPartitionTwoToTheEnd) {
  BootDiskSpec spec;
  spec.boot_mib = 32;
  spec.data_mib = 8;
  spec.disk_mib = 1024;
  auto g = PlanBootDisk(spec);
  ASSERT_TRUE(g.ok()) << g.status().ToString();
  EXPECT_EQ(g->data_start, 2048u + 32 * 2048);
  EXPECT_EQ((g->data_start + g->data_sectors) * kBootDiskSectorSize, 1024 * kMib);
  EXPECT_EQ(g->disk_bytes, 1024 * kMib);
}

TEST(BootDiskPlan, RefusesSizesItCannotLayOut) {
  auto code = [](uint64_t boot, uint64_t data, uint64_t disk) {
    BootDiskSpec spec;
    spec.boot_mib = boot;
    spec.data_mib = data;
    spec.disk_mib = disk;
    auto g = PlanBootDisk(spec);
    return g.ok() ? ErrorCode::kOk : g.status().code();
  };
  EXPECT_EQ(code(4, 16, 0), ErrorCode::kInvalidArgument);     // too small for FAT16 + kernel
  EXPECT_EQ(code(2048, 16, 0), ErrorCode::kInvalidArgument);  // beyond FAT16
  EXPECT_EQ(code(24, 0, 0), ErrorCode::kInvalidArgument);
  EXPECT_EQ(code(24, 16, 40), ErrorCode::kInvalidArgument);  // needs 41
  EXPECT_EQ(code(24, 16, 41), ErrorCode::kOk);
  EXPECT_EQ(code(24, 16, uint64_t{3} << 20), ErrorCode::kInvalidArgument);  // > 2 TiB: MBR
  BootDiskSpec spec;
  spec.disk_mib = 40;
  EXPECT_NE(PlanBootDisk(spec).status().message().find("disk_mib 40"), std::string::npos);
}

TEST(BootDiskPlan, SfdiskScript) {
  BootDiskSpec spec;
  auto g = PlanBootDisk(spec);
  ASSERT_TRUE(g.ok());
  EXPECT_EQ(SfdiskScript(*g),
            "label: dos\nlabel-id: 0x46455259\nunit: sectors\n\n"
            "start=2048, size=49152, type=e, bootable\n"
            "start=51200, size=32768, type=83\n");
}

TEST(BootDiskPlan, SyslinuxConfig) {
  EXPECT_EQ(SyslinuxConfig("console=ttyS0 quiet ferry.heartbeat=10"),
            "SERIAL 0 115200\nDEFAULT linux\nPROMPT 0\nTIMEOUT 0\nLABEL linux\n"
            "  KERNEL /vmlinuz\n  INITRD /initrd.img\n"
            "  APPEND console=ttyS0 quiet ferry.heartbeat=10\n");
  // The serial console is what the lab reads: added when the command line names none.
  EXPECT_NE(SyslinuxConfig("quiet").find("  APPEND console=ttyS0 quiet\n"), std::string::npos);
  EXPECT_NE(SyslinuxConfig("").find("  APPEND console=ttyS0\n"), std::string::npos);
  EXPECT_NE(SyslinuxConfig("console=ttyS0,115200n8").find("  APPEND console=ttyS0,115200n8\n"),
            std::string::npos);
}

// Stand-in kernel and initrd: the build copies bytes, it does not look inside.
struct Inputs {
  TempDir dir;
  std::string kernel = dir.Join("vmlinuz");
  std::string initrd = dir.Join("initrd.img");
  std::vector<uint8_t> kernel_bytes, initrd_bytes;
  Inputs() {
    for (size_t i = 0; i < 3 * kMib + 17; ++i) kernel_bytes.push_back(static_cast<uint8_t>(i * 13));
    for (size_t i = 0; i < kMib / 2 + 5; ++i)
      initrd_bytes.push_back(static_cast<uint8_t>(i ^ 0x5a));
    EXPECT_TRUE(WriteFileBytes(kernel, kernel_bytes));
    EXPECT_TRUE(WriteFileBytes(initrd, initrd_bytes));
  }
  BootDiskSpec Spec(const std::string& out) const {
    BootDiskSpec spec;
    spec.out_path = dir.Join(out);
    spec.kernel = kernel;
    spec.initrd = initrd;
    spec.cmdline = "quiet ferry.heartbeat=10 ferry.disk=/dev/vda2";
    spec.boot_mib = 8;
    spec.data_mib = 4;
    return spec;
  }
};

uint32_t Le32(const std::vector<uint8_t>& b, size_t at) {
  return b[at] | b[at + 1] << 8 | b[at + 2] << 16 | static_cast<uint32_t>(b[at + 3]) << 24;
}

// A file of the FAT in partition 1, read with mtools (an independent reader).
std::string FatFile(const std::string& image, const std::string& name) {
  auto r = RunChecked(
      {"env", "MTOOLS_SKIP_CHECK=1", "mtype", "-i", image + "@@1048576", "::/" + name}, 60000);
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  return r.ok() ? *r : "";
}

TEST(BootDiskBuild, RawImageHoldsTheTableTheLoaderAndTheFiles) {
  Inputs in;
  BootDiskSpec spec = in.Spec("disk.raw");
  auto layout = BuildBootDisk(spec);
  ASSERT_TRUE(layout.ok()) << layout.status().ToString();
  EXPECT_EQ(layout->data_offset, 9 * kMib);
  EXPECT_EQ(layout->data_bytes, 4 * kMib);
  const auto image = ReadFileBytes(spec.out_path);
  ASSERT_EQ(image.size(), 13 * kMib);
  EXPECT_FALSE(std::filesystem::exists(spec.out_path + ".ferry-part"));

  // Sector 0: SYSLINUX's MBR code, the disk id, two partitions, the signature.
  const auto mbr_bin = ReadFileBytes("/usr/lib/syslinux/mbr/mbr.bin");
  ASSERT_GE(mbr_bin.size(), 440u);
  EXPECT_TRUE(std::equal(mbr_bin.begin(), mbr_bin.begin() + 440, image.begin()));
  EXPECT_EQ(Le32(image, 440), 0x46455259u);
  EXPECT_EQ(image[510], 0x55);
  EXPECT_EQ(image[511], 0xAA);
  EXPECT_EQ(image[446], 0x80);  // active: mbr.bin boots it
  EXPECT_EQ(image[446 + 4], 0x0e);
  EXPECT_EQ(Le32(image, 446 + 8), 2048u);
  EXPECT_EQ(Le32(image, 446 + 12), 8u * 2048);
  EXPECT_EQ(image[462], 0x00);
  EXPECT_EQ(image[462 + 4], 0x83);
  EXPECT_EQ(Le32(image, 462 + 8), 9u * 2048);
  EXPECT_EQ(Le32(image, 462 + 12), 4u * 2048);
  EXPECT_EQ(image[478 + 4], 0x00);  // entries 3 and 4 unused
  EXPECT_EQ(image[494 + 4], 0x00);
  // sfdisk reads the same table back.
  auto dump = RunChecked({"sfdisk", "-d", spec.out_path}, 60000);
  ASSERT_TRUE(dump.ok()) << dump.status().ToString();
  EXPECT_NE(dump->find("start=        2048, size=       16384, type=e, bootable"),
            std::string::npos)
      << *dump;
  EXPECT_NE(dump->find("start=       18432, size=        8192, type=83"), std::string::npos)
      << *dump;

  // Partition 1: a FAT16 boot sector whose hidden-sectors field is its own start (SYSLINUX
  // finds itself by it), SYSLINUX installed, the three files.
  const size_t vbr = 2048 * 512;
  EXPECT_EQ(std::string(image.begin() + vbr + 54, image.begin() + vbr + 62), "FAT16   ");
  EXPECT_EQ(std::string(image.begin() + vbr + 43, image.begin() + vbr + 54), "FERRYBOOT  ");
  EXPECT_EQ(Le32(image, vbr + 28), 2048u);
  // SYSLINUX's boot sector replaced mkfs.fat's (it keeps the BPB, stamps its OEM name).
  EXPECT_EQ(std::string(image.begin() + vbr + 3, image.begin() + vbr + 11), "SYSLINUX");
  auto listing = RunChecked(
      {"env", "MTOOLS_SKIP_CHECK=1", "mdir", "-a", "-b", "-i", spec.out_path + "@@1048576", "::/"},
      60000);
  ASSERT_TRUE(listing.ok()) << listing.status().ToString();
  for (const char* f :
       {"::/ldlinux.sys", "::/ldlinux.c32", "::/vmlinuz", "::/initrd.img", "::/syslinux.cfg"}) {
    EXPECT_NE(listing->find(std::string(f) + "\n"), std::string::npos) << f << " in " << *listing;
  }
  const std::string kernel = FatFile(spec.out_path, "vmlinuz");
  EXPECT_TRUE(kernel == std::string(in.kernel_bytes.begin(), in.kernel_bytes.end()));
  const std::string initrd = FatFile(spec.out_path, "initrd.img");
  EXPECT_TRUE(initrd == std::string(in.initrd_bytes.begin(), in.initrd_bytes.end()));
  EXPECT_EQ(FatFile(spec.out_path, "syslinux.cfg"), SyslinuxConfig(spec.cmdline));
  EXPECT_NE(FatFile(spec.out_path, "syslinux.cfg").find("APPEND console=ttyS0 quiet"),
            std::string::npos);

  // Partition 2: all zero, for the writer.
  for (size_t i = layout->data_offset; i < image.size(); ++i) {
    ASSERT_EQ(image[i], 0) << "partition 2 byte " << i - layout->data_offset;
  }

  // Never overwritten.
  EXPECT_EQ(BuildBootDisk(spec).status().code(), ErrorCode::kAlreadyExists);
}

TEST(BootDiskBuild, Qcow2IsTheSameDiskConverted) {
  Inputs in;
  BootDiskSpec raw = in.Spec("disk.raw");
  BootDiskSpec qcow2 = in.Spec("disk.qcow2");
  qcow2.format = "qcow2";
  ASSERT_TRUE(BuildBootDisk(raw).ok());
  auto layout = BuildBootDisk(qcow2);
  ASSERT_TRUE(layout.ok()) << layout.status().ToString();
  EXPECT_EQ(layout->data_offset, 9 * kMib);
  auto info = RunChecked({"qemu-img", "info", "--output=json", qcow2.out_path}, 60000);
  ASSERT_TRUE(info.ok()) << info.status().ToString();
  EXPECT_NE(info->find("\"format\": \"qcow2\""), std::string::npos) << *info;
  EXPECT_NE(info->find("\"virtual-size\": 13631488"), std::string::npos) << *info;
  // Same bytes but the FAT's timestamps (mkfs.fat and mcopy stamp the time of day): compare the
  // partition table and partition 2 exactly, partition 1's files through mtools.
  EXPECT_FALSE(std::filesystem::exists(qcow2.out_path + ".raw.ferry-part"));
  auto back = RunChecked(
      {"qemu-img", "convert", "-f", "qcow2", "-O", "raw", qcow2.out_path, in.dir.Join("back.raw")},
      60000);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  const auto a = ReadFileBytes(raw.out_path), b = ReadFileBytes(in.dir.Join("back.raw"));
  ASSERT_EQ(a.size(), b.size());
  EXPECT_TRUE(std::equal(a.begin(), a.begin() + 512, b.begin()));
  EXPECT_TRUE(
      std::equal(a.begin() + layout->data_offset, a.end(), b.begin() + layout->data_offset));
  EXPECT_EQ(FatFile(in.dir.Join("back.raw"), "syslinux.cfg"), SyslinuxConfig(raw.cmdline));
}

TEST(BootDiskBuild, BadInputsAreNamed) {
  Inputs in;
  BootDiskSpec spec = in.Spec("disk.raw");
  spec.cmdline = "quiet\nDEFAULT other";  // would add a line to syslinux.cfg
  auto r = BuildBootDisk(spec);
  EXPECT_EQ(r.status().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("control character at 5"), std::string::npos)
      << r.status().ToString();

  spec = in.Spec("disk.raw");
  spec.kernel = in.dir.Join("no-such-vmlinuz");
  r = BuildBootDisk(spec);
  EXPECT_EQ(r.status().code(), ErrorCode::kNotFound);
  EXPECT_NE(r.status().message().find("no-such-vmlinuz"), std::string::npos);

  spec = in.Spec("disk.raw");
  std::vector<uint8_t> big(8 * kMib);
  ASSERT_TRUE(WriteFileBytes(in.dir.Join("big"), big));
  spec.kernel = in.dir.Join("big");
  r = BuildBootDisk(spec);
  EXPECT_EQ(r.status().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("do not fit a boot partition of 8 MiB"), std::string::npos)
      << r.status().ToString();

  spec = in.Spec("a@@b.raw");
  EXPECT_EQ(BuildBootDisk(spec).status().code(), ErrorCode::kInvalidArgument);
  spec = in.Spec("disk.vhdx");
  spec.format = "vhdx";
  EXPECT_EQ(BuildBootDisk(spec).status().code(), ErrorCode::kInvalidArgument);
  spec = in.Spec("disk.raw");
  spec.boot_mib = 2;
  r = BuildBootDisk(spec);
  EXPECT_EQ(r.status().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("boot disk " + spec.out_path + ": boot_mib 2"),
            std::string::npos)
      << r.status().ToString();
  // Nothing left behind by any of them.
  for (const auto& e : std::filesystem::directory_iterator(in.dir.path())) {
    const std::string name = e.path().filename().string();
    EXPECT_TRUE(name == "vmlinuz" || name == "initrd.img" || name == "big") << name;
  }
}

}  // namespace
}  // namespace ferry::lab
