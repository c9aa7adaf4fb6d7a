// Fast tests of the lab's pieces that need no libvirt: the guest's disk writer and verifier
// (the real ferry_guest binary run on a plain file), the cpio writer and gzip.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "lab/initramfs.h"
#include "lab/lab.h"
#include "lab/process.h"
#include "test_util.h"

namespace ferry::lab {
namespace {

using ferry::testing::ReadFileBytes;
using ferry::testing::TempDir;
using ferry::testing::WriteFileBytes;

constexpr size_t kBlock = 4096;

int64_t NowMsForTest() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

ProcessResult RunGuest(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {FERRY_GUEST_BINARY};
  argv.insert(argv.end(), args.begin(), args.end());
  auto r = RunProcess(argv, 60000);
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  return r.ok() ? *r : ProcessResult{};
}

// Runs the writer/verifier on the file its first argument names ("ferry.disk=FILE"); checks
// that it announced that device and its size first, and returns the rest of the output.
ProcessResult Guest(const std::vector<std::string>& args) {
  ProcessResult r = RunGuest(args);
  const std::string disk = args.at(0).substr(std::string("ferry.disk=").size());
  std::error_code ec;
  const std::string device_line =
      "FERRY-DEVICE " + disk + " " + std::to_string(std::filesystem::file_size(disk, ec)) + "\n";
  EXPECT_EQ(r.output.rfind(device_line, 0), 0u) << r.output;
  if (r.output.rfind(device_line, 0) == 0) r.output.erase(0, device_line.size());
  return r;
}

std::string MakeDisk(const TempDir& dir, size_t bytes) {
  std::string path = dir.Join("disk.img");
  EXPECT_TRUE(WriteFileBytes(path, std::vector<uint8_t>(bytes, 0)));
  return path;
}

TEST(GuestDisk, WritesThenVerifies) {
  TempDir dir;
  std::string disk = MakeDisk(dir, 1 << 20);  // 256 blocks
  auto w = Guest({"ferry.disk=" + disk, "ferry.disk_iops=0", "ferry.disk_count=300"});
  EXPECT_EQ(w.exit_code, 0) << w.output;
  EXPECT_NE(w.output.find("FERRY-DISK-OK -1\n"), std::string::npos) << w.output;
  EXPECT_NE(w.output.find("FERRY-DISK-DONE 299\n"), std::string::npos) << w.output;
  auto v = Guest({"ferry.disk=" + disk, "ferry.disk_mode=verify"});
  EXPECT_EQ(v.exit_code, 0) << v.output;
  EXPECT_EQ(v.output, "FERRY-DISK-OK 299\n");
  // A second writer continues after the highest sequence it finds.
  auto w2 = Guest({"ferry.disk=" + disk, "ferry.disk_iops=0", "ferry.disk_count=50"});
  EXPECT_NE(w2.output.find("FERRY-DISK-OK 299\n"), std::string::npos) << w2.output;
  EXPECT_NE(w2.output.find("FERRY-DISK-DONE 349\n"), std::string::npos) << w2.output;
  EXPECT_EQ(Guest({"ferry.disk=" + disk, "ferry.disk_mode=verify"}).output, "FERRY-DISK-OK 349\n");
}

TEST(GuestDisk, DetectsALostWriteAsAStaleBlock) {
  TempDir dir;
  std::string disk = MakeDisk(dir, 1 << 20);
  ASSERT_EQ(Guest({"ferry.disk=" + disk, "ferry.disk_iops=0", "ferry.disk_count=270"}).exit_code,
            0);
  auto before = ReadFileBytes(disk);  // block 20 holds sequence 20
  ASSERT_EQ(Guest({"ferry.disk=" + disk, "ferry.disk_iops=0", "ferry.disk_count=30"}).exit_code, 0);
  auto after = ReadFileBytes(disk);  // block 20 now holds sequence 276
  std::memcpy(after.data() + 20 * kBlock, before.data() + 20 * kBlock, kBlock);
  ASSERT_TRUE(WriteFileBytes(disk, after));
  auto v = Guest({"ferry.disk=" + disk, "ferry.disk_mode=verify"});
  EXPECT_EQ(v.exit_code, 2);
  EXPECT_EQ(v.output, "FERRY-DISK-BAD 81920 expected-seq 276\n");
}

TEST(GuestDisk, DetectsAZeroedAndACorruptBlock) {
  TempDir dir;
  std::string disk = MakeDisk(dir, 1 << 20);
  ASSERT_EQ(Guest({"ferry.disk=" + disk, "ferry.disk_iops=0", "ferry.disk_count=100"}).exit_code,
            0);
  auto good = ReadFileBytes(disk);
  auto zeroed = good;
  std::memset(zeroed.data() + 5 * kBlock, 0, kBlock);
  ASSERT_TRUE(WriteFileBytes(disk, zeroed));
  EXPECT_EQ(Guest({"ferry.disk=" + disk, "ferry.disk_mode=verify"}).output,
            "FERRY-DISK-BAD 20480 expected-seq 5\n");
  auto flipped = good;
  flipped[7 * kBlock + 1000] ^= 1;
  ASSERT_TRUE(WriteFileBytes(disk, flipped));
  EXPECT_EQ(Guest({"ferry.disk=" + disk, "ferry.disk_mode=verify"}).output,
            "FERRY-DISK-BAD 28672 malformed\n");
  auto beyond = good;  // a block past the highest sequence must still be empty
  beyond[200 * kBlock] = 1;
  ASSERT_TRUE(WriteFileBytes(disk, beyond));
  EXPECT_EQ(Guest({"ferry.disk=" + disk, "ferry.disk_mode=verify"}).output,
            "FERRY-DISK-BAD 819200 malformed\n");
}

TEST(GuestDisk, TakesTheFirstDeviceOfTheListThatExists) {
  TempDir dir;
  std::string disk = MakeDisk(dir, 1 << 20);
  auto r = RunGuest({"ferry.disk=" + dir.Join("vda2") + "," + disk + "," + dir.Join("hda2"),
                     "ferry.disk_mode=verify", "ferry.disk_wait_ms=100"});
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output, "FERRY-DEVICE " + disk + " 1048576\nFERRY-DISK-OK -1\n");
  // None there: it waits (here 300 ms), then says so.
  const int64_t t0 = NowMsForTest();
  r = RunGuest(
      {"ferry.disk=" + dir.Join("vda2") + "," + dir.Join("sda2"), "ferry.disk_wait_ms=300"});
  EXPECT_GE(NowMsForTest() - t0, 300);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.output, "FERRY-ERROR disk " + dir.Join("vda2") + "," + dir.Join("sda2") +
                          ": No such file or directory\n");
}

// What PID 1 does to the writer at power-off: SIGTERM stops it between two blocks, and its
// last line names the last durable sequence, which a verify then finds exactly.
TEST(GuestDisk, SigtermStopsTheWriterAfterAWholeBlock) {
  TempDir dir;
  std::string disk = MakeDisk(dir, 1 << 20);
  const std::string out = dir.Join("out.txt");
  auto pid = Spawn({FERRY_GUEST_BINARY, "ferry.disk=" + disk, "ferry.disk_iops=500"},
                   SpawnOptions{.output_path = out, .new_session = false});
  ASSERT_TRUE(pid.ok()) << pid.status().ToString();
  std::string text;
  for (int i = 0; i < 500 && text.find("FERRY-DISK-SEQ") == std::string::npos; ++i) {
    usleep(10000);
    auto bytes = ReadFileBytes(out);
    text.assign(bytes.begin(), bytes.end());
  }
  ASSERT_NE(text.find("FERRY-DISK-SEQ"), std::string::npos) << text;
  ASSERT_EQ(kill(*pid, SIGTERM), 0);
  int status = 0;
  ASSERT_EQ(waitpid(*pid, &status, 0), *pid);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  auto bytes = ReadFileBytes(out);
  text.assign(bytes.begin(), bytes.end());
  const size_t last = text.rfind("FERRY-DISK-SEQ ");
  ASSERT_NE(last, std::string::npos);
  EXPECT_EQ(text.find('\n', last), text.size() - 1) << "not the last line: " << text;
  const long long seq = std::stoll(text.substr(last + 15));
  EXPECT_EQ(Guest({"ferry.disk=" + disk, "ferry.disk_mode=verify"}).output,
            "FERRY-DISK-OK " + std::to_string(seq) + "\n");
}

TEST(Initramfs, GzipRoundTripsThroughGzipTool) {
  TempDir dir;
  std::vector<uint8_t> data(300000);
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>((i * 7) ^ (i >> 9));
  auto gz = Gzip(data);
  ASSERT_TRUE(gz.ok());
  ASSERT_TRUE(WriteFileBytes(dir.Join("x.gz"), *gz));
  auto r = RunProcess({"gzip", "-d", dir.Join("x.gz")}, 60000);
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->exit_code, 0) << r->output;
  EXPECT_EQ(ReadFileBytes(dir.Join("x")), data);
}

// Parses a newc archive back: names, modes, sizes, and 4-byte alignment of every part.
struct Entry {
  std::string name;
  uint32_t mode = 0, rdev_major = 0, rdev_minor = 0;
  std::string data;
};

std::vector<Entry> ParseNewc(const std::vector<uint8_t>& a) {
  std::vector<Entry> out;
  size_t off = 0;
  auto field = [&](size_t i) {
    return static_cast<uint32_t>(std::stoul(
        std::string(a.begin() + off + 6 + i * 8, a.begin() + off + 14 + i * 8), nullptr, 16));
  };
  while (off + 110 <= a.size()) {
    EXPECT_EQ(std::string(a.begin() + off, a.begin() + off + 6), "070701");
    EXPECT_EQ(off % 4, 0u);
    Entry e;
    e.mode = field(1);
    uint32_t size = field(6), namesize = field(11);
    e.rdev_major = field(9);
    e.rdev_minor = field(10);
    e.name.assign(a.begin() + off + 110, a.begin() + off + 110 + namesize - 1);
    EXPECT_EQ(a[off + 110 + namesize - 1], 0);
    off = (off + 110 + namesize + 3) & ~size_t{3};
    e.data.assign(a.begin() + off, a.begin() + off + size);
    off = (off + size + 3) & ~size_t{3};
    out.push_back(e);
    if (e.name == "TRAILER!!!") break;
  }
  EXPECT_EQ(off, a.size());
  return out;
}

TEST(Initramfs, CpioNewcEntries) {
  CpioWriter w;
  w.AddDirectory("bin");
  w.AddFile("init", {'a', 'b', 'c', 'd', 'e'}, 0755);
  w.AddSymlink("bin/sh", "busybox");
  w.AddCharDevice("dev/console", 0600, 5, 1);
  auto entries = ParseNewc(w.Finish());
  ASSERT_EQ(entries.size(), 5u);
  EXPECT_EQ(entries[0].name, "bin");
  EXPECT_EQ(entries[0].mode, static_cast<uint32_t>(S_IFDIR | 0755));
  EXPECT_EQ(entries[1].name, "init");
  EXPECT_EQ(entries[1].data, "abcde");
  EXPECT_EQ(entries[1].mode, static_cast<uint32_t>(S_IFREG | 0755));
  EXPECT_EQ(entries[2].mode & S_IFMT, static_cast<uint32_t>(S_IFLNK));
  EXPECT_EQ(entries[2].data, "busybox");
  EXPECT_EQ(entries[3].mode, static_cast<uint32_t>(S_IFCHR | 0600));
  EXPECT_EQ(entries[3].rdev_major, 5u);
  EXPECT_EQ(entries[3].rdev_minor, 1u);
  EXPECT_EQ(entries[4].name, "TRAILER!!!");
}

TEST(Lab, GuestCmdlineNamesEveryWorkload) {
  GuestSpec spec;
  spec.dirty_mib = 64;
  spec.dirty_rate_mib = 20;
  spec.disk_iops = 50;
  spec.extra_cmdline = "ferry.disk_mib=8";
  EXPECT_EQ(Lab::GuestCmdline(spec),
            "console=ttyS0 quiet panic=-1 ferry.heartbeat=10 ferry.dirty_mib=64 "
            "ferry.dirty_rate_mib=20 ferry.disk=/dev/vda ferry.disk_mode=write ferry.disk_iops=50 "
            "ferry.disk_mib=8");
  spec = GuestSpec{};
  spec.disk_mode = DiskMode::kNone;
  spec.heartbeat_ms = 20;
  EXPECT_EQ(Lab::GuestCmdline(spec), "console=ttyS0 quiet panic=-1 ferry.heartbeat=20");
}

TEST(Lab, GuestCmdlineFindsTheDiskOnItsBus) {
  GuestSpec spec;
  spec.disk_bus = "sata";
  EXPECT_EQ(Lab::GuestCmdline(spec),
            "console=ttyS0 quiet panic=-1 ferry.heartbeat=10 ferry.disk=/dev/sda "
            "ferry.disk_mode=write ferry.disk_iops=100");
  // Booted from its disk, the writer takes partition 2 on whichever bus the disk ends up.
  spec.boot_from_disk = true;
  spec.disk_mode = DiskMode::kVerify;
  EXPECT_EQ(Lab::GuestCmdline(spec),
            "console=ttyS0 quiet panic=-1 ferry.heartbeat=10 "
            "ferry.disk=/dev/vda2,/dev/sda2,/dev/hda2 ferry.disk_mode=verify ferry.disk_iops=100");
}

TEST(Initramfs, DefaultModulesCoverSataIdeAndThePowerButton) {
  const auto& modules = DefaultGuestModules();
  auto position = [&](const std::string& m) {
    for (size_t i = 0; i < modules.size(); ++i) {
      if (modules[i] == m) return static_cast<int>(i);
    }
    return -1;
  };
  for (const char* m : {"drivers/ata/ahci.ko", "drivers/ata/ata_piix.ko", "drivers/scsi/sd_mod.ko",
                        "drivers/acpi/button.ko", "drivers/input/evdev.ko"}) {
    EXPECT_GE(position(m), 0) << m;
  }
  // Dependencies load first (finit_module does not resolve them).
  EXPECT_LT(position("drivers/scsi/scsi_mod.ko"), position("drivers/ata/libata.ko"));
  EXPECT_LT(position("drivers/ata/libata.ko"), position("drivers/ata/libahci.ko"));
  EXPECT_LT(position("drivers/ata/libahci.ko"), position("drivers/ata/ahci.ko"));
  EXPECT_LT(position("block/t10-pi.ko"), position("drivers/scsi/sd_mod.ko"));
  EXPECT_LT(position("lib/crc-t10dif.ko"), position("block/t10-pi.ko"));
  EXPECT_LT(position("lib/crc64-rocksoft.ko"), position("block/t10-pi.ko"));
}

TEST(Lab, DownRefusesAFolderThatIsNotALab) {
  TempDir dir;
  EXPECT_EQ(Lab::Down(dir.path()).code(), ErrorCode::kInvalidArgument);
  EXPECT_TRUE(std::filesystem::exists(dir.path()));
  EXPECT_TRUE(Lab::Down(dir.Join("nothing-here")).ok());
}

}  // namespace
}  // namespace ferry::lab
