// A bootable lab disk: what an exported VM's disk looks like to Ferry's cold-migration tests
// (docs/lab.md, "Bootable disks"). A raw image with an MBR partition table:
//   partition 1 (FAT16, bootable) SYSLINUX, the guest kernel, the lab initramfs and a
//                                syslinux.cfg whose APPEND line is the guest's kernel command
//                                line (Lab::GuestCmdline) with ferry.disk pointing at
//                                partition 2;
//   partition 2 (type 0x83)      the disk writer's area (data_mib), initially zero.
// Made without loop devices or mounts: sfdisk, mkfs.fat --offset, mcopy and syslinux --offset
// on the image file (Debian: fdisk, dosfstools, mtools, syslinux, syslinux-common), so it
// works in containers. SeaBIOS boots it under TCG; the guest reaches FERRY-READY.
//
// Thread-safety: functions over files and values; distinct outputs may be built concurrently.
#pragma once

#include <cstdint>
#include <string>

#include "common/status.h"

namespace ferry::lab {

struct BootDiskSpec {
  std::string out_path;        // image to create (must not exist)
  std::string kernel;          // vmlinuz
  std::string initrd;          // the lab initramfs (ferry_guest as /init)
  std::string cmdline;         // kernel command line (console=ttyS0 is added if missing)
  uint64_t boot_mib = 24;      // partition 1
  uint64_t data_mib = 16;      // partition 2 (at least)
  uint64_t disk_mib = 0;       // whole disk; 0 = 1 + boot_mib + data_mib. Larger: partition 2
                               // runs to the end of the disk (the image stays sparse)
  std::string format = "raw";  // raw, or qcow2 (built raw, then converted with qemu-img)
};

struct BootDiskLayout {
  uint64_t data_offset = 0;  // byte offset of partition 2
  uint64_t data_bytes = 0;
};

Result<BootDiskLayout> BuildBootDisk(const BootDiskSpec& spec);

// ---- the pieces, exposed for tests ----

constexpr uint64_t kBootDiskSectorSize = 512;
constexpr uint64_t kBootDiskFirstSector = 2048;  // 1 MiB: partitions aligned as fdisk does

// Where everything goes, in 512-byte sectors.
struct BootDiskGeometry {
  uint64_t boot_start = 0;  // partition 1
  uint64_t boot_sectors = 0;
  uint64_t data_start = 0;  // partition 2
  uint64_t data_sectors = 0;
  uint64_t disk_bytes = 0;
  // mkfs.fat -s: the smallest power of two that keeps FAT16 under its cluster limit (mkfs.fat's
  // own choice leaves an 8 MiB partition with too few clusters for FAT16).
  uint64_t fat_sectors_per_cluster = 1;
};

// Checks the sizes of `spec` (boot partition 8..1024 MiB, data at least 1 MiB, disk_mib large
// enough) and lays the partitions out. kInvalidArgument naming the field otherwise.
Result<BootDiskGeometry> PlanBootDisk(const BootDiskSpec& spec);

// The sfdisk script that writes `g`'s MBR partition table.
std::string SfdiskScript(const BootDiskGeometry& g);

// syslinux.cfg: serial console, no prompt, boots /vmlinuz with /initrd.img and `cmdline`
// (console=ttyS0 prepended if it names no console=ttyS0).
std::string SyslinuxConfig(const std::string& cmdline);

}  // namespace ferry::lab
