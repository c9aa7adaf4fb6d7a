// Implementation of initramfs.h.
#include "lab/initramfs.h"

#include <sys/stat.h>
#include <zlib.h>

#include <cstdio>
#include <fstream>
#include <iterator>
#include <set>

namespace ferry::lab {
namespace {

// cpio newc: "070701" then 13 fields of 8 hex digits: ino, mode, uid, gid, nlink, mtime,
// filesize, devmajor, devminor, rdevmajor, rdevminor, namesize (with NUL), check.
constexpr char kNewcMagic[] = "070701";
constexpr size_t kNewcAlign = 4;

// Busybox applets linked in /bin, enough to look around a guest from its console.
constexpr const char* kBusyboxApplets[] = {"sh", "ls", "cat",  "mount",    "dmesg", "ip",
                                           "ps", "dd", "sync", "poweroff", "sleep"};

Result<std::vector<uint8_t>> ReadWholeFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return Status::NotFound(path + ": cannot open");
  std::vector<uint8_t> data((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  if (f.bad()) return Status::Io(path + ": read failed");
  return data;
}

std::string BaseName(const std::string& path) {
  auto slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

}  // namespace

void CpioWriter::AddEntry(const std::string& path, uint32_t mode, const uint8_t* data, size_t size,
                          uint32_t rdev_major, uint32_t rdev_minor) {
  char header[6 + 13 * 8 + 1];
  std::snprintf(header, sizeof(header), "%s%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
                kNewcMagic, next_ino_++, mode, 0u, 0u, (mode & S_IFMT) == S_IFDIR ? 2u : 1u, 0u,
                static_cast<uint32_t>(size), 0u, 0u, rdev_major, rdev_minor,
                static_cast<uint32_t>(path.size() + 1), 0u);
  out_.insert(out_.end(), header, header + sizeof(header) - 1);
  out_.insert(out_.end(), path.begin(), path.end());
  out_.push_back(0);
  while (out_.size() % kNewcAlign != 0) out_.push_back(0);
  if (size > 0) out_.insert(out_.end(), data, data + size);
  while (out_.size() % kNewcAlign != 0) out_.push_back(0);
}

void CpioWriter::AddDirectory(const std::string& path, uint32_t mode) {
  AddEntry(path, S_IFDIR | mode, nullptr, 0, 0, 0);
}

void CpioWriter::AddFile(const std::string& path, const std::vector<uint8_t>& data, uint32_t mode) {
  AddEntry(path, S_IFREG | mode, data.data(), data.size(), 0, 0);
}

void CpioWriter::AddSymlink(const std::string& path, const std::string& target) {
  AddEntry(path, S_IFLNK | 0777, reinterpret_cast<const uint8_t*>(target.data()), target.size(), 0,
           0);
}

void CpioWriter::AddCharDevice(const std::string& path, uint32_t mode, uint32_t major,
                               uint32_t minor) {
  AddEntry(path, S_IFCHR | mode, nullptr, 0, major, minor);
}

std::vector<uint8_t> CpioWriter::Finish() {
  AddEntry("TRAILER!!!", 0, nullptr, 0, 0, 0);
  return std::move(out_);
}

Result<std::vector<uint8_t>> Gzip(const std::vector<uint8_t>& data) {
  z_stream z{};
  constexpr int kGzipWindowBits = 15 + 16;  // zlib: +16 selects the gzip wrapper
  if (deflateInit2(&z, Z_BEST_COMPRESSION, Z_DEFLATED, kGzipWindowBits, 8, Z_DEFAULT_STRATEGY) !=
      Z_OK) {
    return Status::Internal("gzip: deflateInit2 failed");
  }
  std::vector<uint8_t> out(deflateBound(&z, data.size()) + 64);
  z.next_in = const_cast<Bytef*>(data.data());
  z.avail_in = static_cast<uInt>(data.size());
  z.next_out = out.data();
  z.avail_out = static_cast<uInt>(out.size());
  int rc = deflate(&z, Z_FINISH);
  size_t produced = out.size() - z.avail_out;
  deflateEnd(&z);
  if (rc != Z_STREAM_END) return Status::Internal("gzip: deflate did not finish");
  out.resize(produced);
  return out;
}

const std::vector<std::string>& DefaultGuestModules() {
  static const std::vector<std::string> kModules = {
      "drivers/virtio/virtio_ring.ko",
      "drivers/virtio/virtio.ko",
      "drivers/virtio/virtio_pci_modern_dev.ko",
      "drivers/virtio/virtio_pci_legacy_dev.ko",
      "drivers/virtio/virtio_pci.ko",
      "drivers/block/virtio_blk.ko",
      "net/core/failover.ko",
      "drivers/net/net_failover.ko",
      "drivers/net/virtio_net.ko",
      // A disk on a SATA (AHCI) or IDE (PIIX) bus, as a guest booted from its own disk may
      // have: libata's disks are SCSI disks (sd_mod), whose integrity support needs t10-pi and
      // the CRC algorithms it asks the crypto API for.
      "drivers/scsi/scsi_common.ko",
      "drivers/scsi/scsi_mod.ko",
      "crypto/crct10dif_common.ko",
      "crypto/crct10dif_generic.ko",
      "lib/crc-t10dif.ko",
      "lib/crc64.ko",
      "crypto/crc64_rocksoft_generic.ko",
      "lib/crc64-rocksoft.ko",
      "block/t10-pi.ko",
      "drivers/scsi/sd_mod.ko",
      "drivers/ata/libata.ko",
      "drivers/ata/libahci.ko",
      "drivers/ata/ahci.ko",
      "drivers/ata/ata_piix.ko",
      // The ACPI power button (what `virsh shutdown` presses) as an input device, and evdev
      // to read it from /dev/input/event*: both modules in Debian's kernel.
      "drivers/acpi/button.ko",
      "drivers/input/evdev.ko",
  };
  return kModules;
}

Status BuildInitramfs(const InitramfsSpec& spec, const std::string& out_path) {
  CpioWriter cpio;
  for (const char* dir :
       {"bin", "dev", "etc", "etc/ferry", "lib", "lib/modules", "proc", "sys", "tmp", "root"}) {
    cpio.AddDirectory(dir);
  }
  cpio.AddCharDevice("dev/console", 0600, 5, 1);  // devices.txt: 5,1 = /dev/console
  cpio.AddCharDevice("dev/null", 0666, 1, 3);     // 1,3 = /dev/null
  FERRY_ASSIGN_OR_RETURN(auto init, ReadWholeFile(spec.init_binary));
  cpio.AddFile("init", init, 0755);
  if (!spec.busybox.empty()) {
    FERRY_ASSIGN_OR_RETURN(auto busybox, ReadWholeFile(spec.busybox));
    cpio.AddFile("bin/busybox", busybox, 0755);
    for (const char* applet : kBusyboxApplets) {
      cpio.AddSymlink(std::string("bin/") + applet, "busybox");
    }
  }
  // Modules the kernel has built in need no file.
  std::set<std::string> builtin;
  {
    std::ifstream f(spec.kernel_modules_dir + "/modules.builtin");
    std::string line;
    while (std::getline(f, line)) builtin.insert(BaseName(line));
  }
  std::string load_order;
  for (const auto& rel : spec.modules) {
    const std::string name = BaseName(rel);
    if (builtin.count(name) != 0) continue;
    auto data = ReadWholeFile(spec.kernel_modules_dir + "/kernel/" + rel);
    if (!data.ok()) {
      return Status::NotFound("initramfs: kernel module " + rel + " is neither in " +
                              spec.kernel_modules_dir + "/kernel nor built in");
    }
    cpio.AddFile("lib/modules/" + name, *data);
    load_order += "/lib/modules/" + name + "\n";
  }
  cpio.AddFile("etc/ferry/modules", std::vector<uint8_t>(load_order.begin(), load_order.end()));
  FERRY_ASSIGN_OR_RETURN(auto gz, Gzip(cpio.Finish()));
  const std::string tmp = out_path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    f.write(reinterpret_cast<const char*>(gz.data()), static_cast<std::streamsize>(gz.size()));
    f.flush();
    if (!f) return Status::Io(tmp + ": write failed");
  }
  if (std::rename(tmp.c_str(), out_path.c_str()) != 0) {
    return Status::Io(out_path + ": rename failed");
  }
  return Status::Ok();
}

}  // namespace ferry::lab
