// Implementation of boot_disk.h: the recipe of docs/lab.md ("Bootable disks"), each tool run
// with fork/exec on the image file, the partition table read back and checked at the end.
#include "lab/boot_disk.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <vector>

#include "lab/process.h"

namespace ferry::lab {
namespace fs = std::filesystem;
namespace {

constexpr int64_t kToolTimeoutMs = 120000;
constexpr uint64_t kSectorsPerMib = (1 << 20) / kBootDiskSectorSize;
constexpr uint64_t kMinBootMib = 8;     // FAT16 needs 4085 clusters; SYSLINUX + kernel need room
constexpr uint64_t kMaxBootMib = 1024;  // FAT16 with 32 KiB clusters tops out at 2 GiB
// MBR sector fields are 32 bits.
constexpr uint64_t kMaxDiskMib = ((uint64_t{1} << 32) - 1) / kSectorsPerMib;
// What the FAT needs besides the files: tables, root directory, ldlinux.sys and ldlinux.c32.
constexpr uint64_t kBootSlackBytes = 1 << 20;
constexpr size_t kMaxCmdline = 1024;  // well below SYSLINUX's limit for an APPEND line
// FAT16 holds 4085..65524 clusters; staying under 65000 leaves room for the FAT and root
// directory sectors mkfs.fat takes off the top.
constexpr uint64_t kFat16MaxClusters = 65000;
constexpr uint8_t kTypeFat16Lba = 0x0e;
constexpr uint8_t kTypeLinux = 0x83;
constexpr uint8_t kBootableFlag = 0x80;
constexpr uint32_t kDiskIdentifier = 0x46455259;  // "FERY": a fixed id keeps builds repeatable
constexpr const char kFatVolumeId[] = "46455242";
constexpr const char kFatLabel[] = "FERRYBOOT";
// syslinux-common's MBR boot code: finds the active partition and chains to its boot sector.
constexpr const char kSyslinuxMbr[] = "/usr/lib/syslinux/mbr/mbr.bin";
constexpr size_t kMbrCodeBytes = 440;  // the partition table starts at 446 (disk id at 440)
constexpr size_t kMbrTableOffset = 446;
constexpr size_t kMbrEntryBytes = 16;
constexpr size_t kMbrSignatureOffset = 510;

struct Tool {
  const char* program;
  const char* package;
};
constexpr Tool kTools[] = {
    {"sfdisk", "fdisk"}, {"mkfs.fat", "dosfstools"}, {"syslinux", "syslinux"}, {"mcopy", "mtools"}};

std::string HexDigits(uint64_t v) {
  std::ostringstream s;
  s << std::hex << v;
  return s.str();
}

Status CheckTools(bool need_qemu_img) {
  for (const Tool& t : kTools) {
    if (!InPath(t.program)) {
      return Status::NotFound(std::string(t.program) + " is not installed (Debian package " +
                              t.package + "); run scripts/lab-deps");
    }
  }
  if (need_qemu_img && !InPath("qemu-img")) {
    return Status::NotFound("qemu-img is not installed (Debian package qemu-utils)");
  }
  if (access(kSyslinuxMbr, R_OK) != 0) {
    return Status::NotFound(std::string(kSyslinuxMbr) +
                            " missing (Debian package syslinux-common); run scripts/lab-deps");
  }
  return Status::Ok();
}

Result<uint64_t> InputSize(const std::string& what, const std::string& path) {
  std::error_code ec;
  const uint64_t size = fs::file_size(path, ec);
  if (ec) return Status::NotFound(what + " " + path + ": " + ec.message());
  if (access(path.c_str(), R_OK) != 0) {
    return Status::PermissionDenied(what + " " + path + ": " + strerror(errno));
  }
  return size;
}

Status WriteAt(int fd, const std::string& path, const void* data, size_t size, off_t offset) {
  const auto* p = static_cast<const uint8_t*>(data);
  size_t done = 0;
  while (done < size) {
    ssize_t n = pwrite(fd, p + done, size - done, offset + static_cast<off_t>(done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      return Status::Io(path + ": write at " + std::to_string(offset) + ": " + strerror(errno));
    }
    done += static_cast<size_t>(n);
  }
  return Status::Ok();
}

Result<std::vector<uint8_t>> ReadAt(const std::string& path, uint64_t offset, size_t size) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return Status::Io(path + ": cannot open");
  std::vector<uint8_t> buf(size);
  f.seekg(static_cast<std::streamoff>(offset));
  f.read(reinterpret_cast<char*>(buf.data()), static_cast<std::streamsize>(size));
  if (static_cast<size_t>(f.gcount()) != size) {
    return Status::Io(path + ": short read of " + std::to_string(size) + " bytes at " +
                      std::to_string(offset));
  }
  return buf;
}

Status CreateSparseImage(const std::string& path, uint64_t bytes) {
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) return Status::Io(path + ": create: " + strerror(errno));
  Status st = Status::Ok();
  if (ftruncate(fd, static_cast<off_t>(bytes)) != 0) {
    st = Status::Io(path + ": truncate to " + std::to_string(bytes) + ": " + strerror(errno));
  }
  close(fd);
  return st;
}

// The first 440 bytes of mbr.bin into sector 0 (what `dd conv=notrunc bs=440 count=1` does),
// leaving the disk identifier and the partition table sfdisk wrote alone.
Status InstallMbrCode(const std::string& image) {
  FERRY_ASSIGN_OR_RETURN(auto code, ReadAt(kSyslinuxMbr, 0, kMbrCodeBytes));
  int fd = open(image.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return Status::Io(image + ": open: " + strerror(errno));
  Status st = WriteAt(fd, image, code.data(), code.size(), 0);
  if (st.ok() && fsync(fd) != 0) st = Status::Io(image + ": fsync: " + strerror(errno));
  close(fd);
  return st;
}

uint32_t Le32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | static_cast<uint32_t>(p[1]) << 8 |
         static_cast<uint32_t>(p[2]) << 16 | static_cast<uint32_t>(p[3]) << 24;
}

// Reads sector 0 back: the tools must have produced exactly the planned table and boot code.
Status CheckMbr(const std::string& image, const BootDiskGeometry& g) {
  FERRY_ASSIGN_OR_RETURN(auto mbr, ReadAt(image, 0, kBootDiskSectorSize));
  FERRY_ASSIGN_OR_RETURN(auto code, ReadAt(kSyslinuxMbr, 0, kMbrCodeBytes));
  if (!std::equal(code.begin(), code.end(), mbr.begin())) {
    return Status::Internal(image + ": sector 0 does not hold " + kSyslinuxMbr + "'s boot code");
  }
  if (mbr[kMbrSignatureOffset] != 0x55 || mbr[kMbrSignatureOffset + 1] != 0xAA) {
    return Status::Internal(image + ": sector 0 lacks the 55 AA signature");
  }
  struct Want {
    uint8_t flag, type;
    uint64_t start, sectors;
  };
  const Want want[] = {{kBootableFlag, kTypeFat16Lba, g.boot_start, g.boot_sectors},
                       {0, kTypeLinux, g.data_start, g.data_sectors},
                       {0, 0, 0, 0},
                       {0, 0, 0, 0}};
  for (size_t i = 0; i < 4; ++i) {
    const uint8_t* e = mbr.data() + kMbrTableOffset + i * kMbrEntryBytes;
    const uint64_t start = Le32(e + 8), sectors = Le32(e + 12);
    if (e[0] != want[i].flag || e[4] != want[i].type || start != want[i].start ||
        sectors != want[i].sectors) {
      return Status::Internal(image + ": partition " + std::to_string(i + 1) + " is flag 0x" +
                              HexDigits(e[0]) + " type 0x" + HexDigits(e[4]) + " start " +
                              std::to_string(start) + " sectors " + std::to_string(sectors) +
                              ", planned flag 0x" + HexDigits(want[i].flag) + " type 0x" +
                              HexDigits(want[i].type) + " start " + std::to_string(want[i].start) +
                              " sectors " + std::to_string(want[i].sectors));
    }
  }
  return Status::Ok();
}

Status WriteTextFile(const std::string& path, const std::string& text) {
  std::ofstream f(path, std::ios::trunc);
  f << text;
  f.flush();
  if (!f) return Status::Io(path + ": write failed");
  return Status::Ok();
}

void RemoveQuietly(const std::string& path) {
  std::error_code ec;
  fs::remove(path, ec);
}

// The steps on the raw image at `raw` (created here; the caller removes it on failure).
Status BuildRaw(const std::string& raw, const std::string& kernel, const std::string& initrd,
                const std::string& cmdline, const BootDiskGeometry& g) {
  FERRY_TRY(CreateSparseImage(raw, g.disk_bytes));
  FERRY_TRY(RunCheckedWithInput({"sfdisk", "-q", raw}, SfdiskScript(g), kToolTimeoutMs).status());
  FERRY_TRY(InstallMbrCode(raw));
  const std::string fat_offset = std::to_string(g.boot_start * kBootDiskSectorSize);
  // mkfs.fat counts 1 KiB blocks; -h (hidden sectors) tells the boot sector where its
  // partition starts, which SYSLINUX's boot code relies on.
  FERRY_TRY(RunChecked({"mkfs.fat", "-F", "16", "-s", std::to_string(g.fat_sectors_per_cluster),
                        "--offset", std::to_string(g.boot_start), "-h",
                        std::to_string(g.boot_start), "-n", kFatLabel, "-i", kFatVolumeId, raw,
                        std::to_string(g.boot_sectors * kBootDiskSectorSize / 1024)},
                       kToolTimeoutMs)
                .status());
  FERRY_TRY(
      RunChecked({"syslinux", "--offset", fat_offset, "--install", raw}, kToolTimeoutMs).status());
  const std::string cfg = raw + ".syslinux.cfg";
  FERRY_TRY(WriteTextFile(cfg, SyslinuxConfig(cmdline)));
  // mtools addresses a file system inside an image as IMAGE@@BYTE-OFFSET. Its geometry
  // check would refuse a partition whose size is not a whole number of "tracks".
  const std::string fat = raw + "@@" + fat_offset;
  Status st = Status::Ok();
  for (const auto& [src, dst] : {std::pair<std::string, std::string>{kernel, "::/vmlinuz"},
                                 {initrd, "::/initrd.img"},
                                 {cfg, "::/syslinux.cfg"}}) {
    st = RunChecked({"env", "MTOOLS_SKIP_CHECK=1", "mcopy", "-o", "-i", fat, src, dst},
                    kToolTimeoutMs)
             .status();
    if (!st.ok()) break;
  }
  RemoveQuietly(cfg);
  FERRY_TRY(st);
  return CheckMbr(raw, g);
}

}  // namespace

Result<BootDiskGeometry> PlanBootDisk(const BootDiskSpec& spec) {
  if (spec.boot_mib < kMinBootMib || spec.boot_mib > kMaxBootMib) {
    return Status::InvalidArgument("boot_mib " + std::to_string(spec.boot_mib) + ": expected " +
                                   std::to_string(kMinBootMib) + ".." +
                                   std::to_string(kMaxBootMib));
  }
  if (spec.data_mib < 1) return Status::InvalidArgument("data_mib 0: expected at least 1");
  const uint64_t first_mib = kBootDiskFirstSector / kSectorsPerMib;
  if (spec.data_mib > kMaxDiskMib) {
    return Status::InvalidArgument("data_mib " + std::to_string(spec.data_mib) +
                                   ": an MBR disk holds at most " + std::to_string(kMaxDiskMib) +
                                   " MiB");
  }
  const uint64_t least = first_mib + spec.boot_mib + spec.data_mib;
  const uint64_t disk_mib = spec.disk_mib == 0 ? least : spec.disk_mib;
  if (disk_mib < least) {
    return Status::InvalidArgument("disk_mib " + std::to_string(spec.disk_mib) + ": less than " +
                                   std::to_string(least) + " (1 + boot_mib + data_mib)");
  }
  if (disk_mib > kMaxDiskMib) {
    return Status::InvalidArgument("disk_mib " + std::to_string(disk_mib) +
                                   ": an MBR disk holds at most " + std::to_string(kMaxDiskMib) +
                                   " MiB");
  }
  BootDiskGeometry g;
  g.boot_start = kBootDiskFirstSector;
  g.boot_sectors = spec.boot_mib * kSectorsPerMib;
  g.data_start = g.boot_start + g.boot_sectors;
  g.data_sectors = disk_mib * kSectorsPerMib - g.data_start;
  g.disk_bytes = disk_mib << 20;
  while (g.boot_sectors / g.fat_sectors_per_cluster > kFat16MaxClusters) {
    g.fat_sectors_per_cluster *= 2;
  }
  return g;
}

std::string SfdiskScript(const BootDiskGeometry& g) {
  return "label: dos\nlabel-id: 0x" + HexDigits(kDiskIdentifier) +
         "\nunit: sectors\n\nstart=" + std::to_string(g.boot_start) +
         ", size=" + std::to_string(g.boot_sectors) + ", type=" + HexDigits(kTypeFat16Lba) +
         ", bootable\nstart=" + std::to_string(g.data_start) +
         ", size=" + std::to_string(g.data_sectors) + ", type=" + HexDigits(kTypeLinux) + "\n";
}

std::string SyslinuxConfig(const std::string& cmdline) {
  bool has_console = false;
  std::istringstream words(cmdline);
  for (std::string w; words >> w;) has_console = has_console || w.rfind("console=ttyS0", 0) == 0;
  std::string append =
      has_console ? cmdline : "console=ttyS0" + (cmdline.empty() ? "" : " " + cmdline);
  // SERIAL 0 puts SYSLINUX's own messages on ttyS0 too; PROMPT 0 + TIMEOUT 0 boot at once.
  return "SERIAL 0 115200\n"
         "DEFAULT linux\n"
         "PROMPT 0\n"
         "TIMEOUT 0\n"
         "LABEL linux\n"
         "  KERNEL /vmlinuz\n"
         "  INITRD /initrd.img\n"
         "  APPEND " +
         append + "\n";
}

Result<BootDiskLayout> BuildBootDisk(const BootDiskSpec& spec) {
  const std::string what = "boot disk " + spec.out_path;
  if (spec.out_path.empty()) return Status::InvalidArgument("boot disk: no output path");
  if (spec.format != "raw" && spec.format != "qcow2") {
    return Status::InvalidArgument(what + ": format \"" + spec.format +
                                   "\": expected raw or qcow2");
  }
  if (spec.cmdline.size() > kMaxCmdline) {
    return Status::InvalidArgument(what + ": kernel command line of " +
                                   std::to_string(spec.cmdline.size()) + " bytes (at most " +
                                   std::to_string(kMaxCmdline) + ")");
  }
  for (size_t i = 0; i < spec.cmdline.size(); ++i) {
    const auto c = static_cast<unsigned char>(spec.cmdline[i]);
    if (c < 0x20 || c == 0x7f) {  // a newline would end the APPEND line and start another
      return Status::InvalidArgument(what + ": kernel command line: control character at " +
                                     std::to_string(i));
    }
  }
  auto planned = PlanBootDisk(spec);
  if (!planned.ok()) return planned.status().WithContext(what);
  const BootDiskGeometry g = *planned;
  FERRY_TRY_CTX(CheckTools(spec.format == "qcow2"), what);

  std::error_code ec;
  // Absolute paths: no argument can be taken for an option, and mtools' IMAGE@@OFFSET
  // syntax must not meet an "@@" of the name.
  const std::string out = fs::absolute(spec.out_path, ec).lexically_normal().string();
  const std::string kernel = fs::absolute(spec.kernel, ec).lexically_normal().string();
  const std::string initrd = fs::absolute(spec.initrd, ec).lexically_normal().string();
  if (out.find("@@") != std::string::npos) {
    return Status::InvalidArgument(what + ": the path may not contain \"@@\" (mtools syntax)");
  }
  FERRY_ASSIGN_OR_RETURN(uint64_t kernel_bytes, InputSize("kernel", kernel).WithContext(what));
  FERRY_ASSIGN_OR_RETURN(uint64_t initrd_bytes, InputSize("initrd", initrd).WithContext(what));
  const uint64_t boot_bytes = g.boot_sectors * kBootDiskSectorSize;
  if (kernel_bytes + initrd_bytes + kBootSlackBytes > boot_bytes) {
    return Status::InvalidArgument(what + ": kernel (" + std::to_string(kernel_bytes) +
                                   " bytes) and initrd (" + std::to_string(initrd_bytes) +
                                   " bytes) do not fit a boot partition of " +
                                   std::to_string(spec.boot_mib) + " MiB");
  }
  if (fs::exists(out, ec) || fs::is_symlink(out, ec)) {
    return Status::AlreadyExists(what + ": exists");
  }
  // Built under names that say "unfinished"; renamed when complete. Leftovers of an
  // interrupted build of the same output are ours to replace.
  const std::string part = out + ".ferry-part";
  const std::string raw = spec.format == "raw" ? part : out + ".raw.ferry-part";
  RemoveQuietly(part);
  RemoveQuietly(raw);
  auto cleanup = [&](Status st) {
    RemoveQuietly(raw);
    RemoveQuietly(part);
    return st.WithContext(what);
  };
  if (Status st = BuildRaw(raw, kernel, initrd, spec.cmdline, g); !st.ok()) return cleanup(st);
  if (spec.format == "qcow2") {
    auto conv =
        RunChecked({"qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, part}, kToolTimeoutMs);
    if (!conv.ok()) return cleanup(conv.status());
    RemoveQuietly(raw);
  }
  if (std::rename(part.c_str(), out.c_str()) != 0) {
    return cleanup(Status::Io("rename " + part + ": " + strerror(errno)));
  }
  BootDiskLayout layout;
  layout.data_offset = g.data_start * kBootDiskSectorSize;
  layout.data_bytes = g.data_sectors * kBootDiskSectorSize;
  return layout;
}

}  // namespace ferry::lab
