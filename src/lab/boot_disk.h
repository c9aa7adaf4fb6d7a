// A bootable lab disk: what an exported VM's disk looks like to Ferry's cold-migration tests
// (docs/lab.md, "Bootable disks"). A raw image with an MBR partition table:
//   partition 1 (FAT, bootable)  SYSLINUX, the guest kernel, the lab initramfs and a
//                                syslinux.cfg whose APPEND line is the guest's kernel command
//                                line (Lab::GuestCmdline) with ferry.disk pointing at
//                                partition 2;
//   partition 2 (type 0x83)      the disk writer's area (data_mib), initially zero.
// Made without loop devices or mounts: sfdisk, mkfs.fat --offset, mcopy and syslinux --offset
// on the image file (Debian: fdisk, dosfstools, mtools, syslinux, syslinux-common), so it
// works in containers. SeaBIOS boots it under TCG; the guest reaches FERRY-READY.
//
// Thread-safety: a function over files; distinct outputs may be built concurrently.
#pragma once

#include <cstdint>
#include <string>

#include "common/status.h"

namespace ferry::lab {

struct BootDiskSpec {
  std::string out_path;      // raw image to create (must not exist)
  std::string kernel;        // vmlinuz
  std::string initrd;        // the lab initramfs (ferry_guest as /init)
  std::string cmdline;       // kernel command line (console=ttyS0 is added if missing)
  uint64_t boot_mib = 24;    // partition 1
  uint64_t data_mib = 16;    // partition 2
  uint64_t disk_mib = 0;     // whole disk; 0 = 1 + boot_mib + data_mib (grows sparse beyond)
};

struct BootDiskLayout {
  uint64_t data_offset = 0;  // byte offset of partition 2
  uint64_t data_bytes = 0;
};

Result<BootDiskLayout> BuildBootDisk(const BootDiskSpec& spec);

}  // namespace ferry::lab
