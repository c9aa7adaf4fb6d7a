// The guest's initramfs: a gzip-compressed cpio "newc" archive holding ferry_guest as /init,
// busybox (for poking around), the kernel modules the guest needs that Debian builds as modules,
// and /etc/ferry/modules, the order ferry_guest loads them in.
//
// Thread-safety: CpioWriter is a plain value; BuildInitramfs is thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"

namespace ferry::lab {

// Writes a cpio archive in the "newc" format (the one the kernel unpacks: magic "070701",
// 13 eight-digit hex fields, name, data, each padded to 4 bytes; ends with "TRAILER!!!").
class CpioWriter {
 public:
  void AddDirectory(const std::string& path, uint32_t mode = 0755);
  void AddFile(const std::string& path, const std::vector<uint8_t>& data, uint32_t mode = 0644);
  void AddSymlink(const std::string& path, const std::string& target);
  void AddCharDevice(const std::string& path, uint32_t mode, uint32_t major, uint32_t minor);
  // Appends the trailer and returns the archive. The writer is spent afterwards.
  std::vector<uint8_t> Finish();

 private:
  void AddEntry(const std::string& path, uint32_t mode, const uint8_t* data, size_t size,
                uint32_t rdev_major, uint32_t rdev_minor);
  std::vector<uint8_t> out_;
  uint32_t next_ino_ = 1;
};

// gzip (RFC 1952) of `data`, as the kernel's CONFIG_RD_GZIP reads it.
Result<std::vector<uint8_t>> Gzip(const std::vector<uint8_t>& data);

// The modules a guest needs, in load order (dependencies first), as paths under the kernel
// package's lib/modules/<release>/kernel/: virtio (disk, NIC), SATA/IDE disks (ahci,
// ata_piix, sd_mod and what they need), the ACPI power button and evdev. Those the kernel has
// built in (modules.builtin) are skipped.
const std::vector<std::string>& DefaultGuestModules();

struct InitramfsSpec {
  std::string init_binary;           // ferry_guest, installed as /init
  std::string busybox;               // a static busybox, /bin/busybox ("" = none)
  std::string kernel_modules_dir;    // .../lib/modules/<release> of the unpacked package
  std::vector<std::string> modules;  // relative to kernel_modules_dir/kernel, load order
};

// Builds the archive and writes it (gzipped) to `out_path`.
Status BuildInitramfs(const InitramfsSpec& spec, const std::string& out_path);

}  // namespace ferry::lab
