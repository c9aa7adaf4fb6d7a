// The lab: several libvirt "hosts" on one Linux machine, shared and local storage pools, a
// network, and small Linux guests whose workloads prove things (heartbeat, memory dirtier,
// checksummed disk writer). Tests, benchmarks and `ferry lab up|down|status` use it; see
// docs/lab.md for the layout, addresses and the guest's console protocol.
//
// Each host is one libvirtd in its own mount + UTS namespace (own hostname, host UUID and
// private /etc/libvirt, /run/libvirt, /var/lib/libvirt, /var/log/libvirt, /var/cache/libvirt),
// listening on qemu+tcp://127.0.0.<address_base + N>/system. Everything the lab makes lives
// under LabConfig::root, whose lab.json lets another process find and stop it (Lab::Down).
//
// Ownership: a Lab object does not own the daemons' lifetime: destroying it leaves the lab
// running (call Down()). Thread-safety: const methods may be called from several threads at
// once; CreateGuest must not run concurrently with any other method.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"

namespace ferry::lab {

enum class Accel { kAuto, kKvm, kTcg };
std::string_view AccelName(Accel a);
Result<Accel> ParseAccel(std::string_view text);

enum class DiskMode { kNone, kWrite, kVerify };

// The disk writer's device on a guest booted from a bootable disk (boot_disk.h): partition 2
// of the boot disk on whichever bus it is attached to (ferry_guest takes the first that
// appears).
constexpr char kBootDiskDataDevices[] = "/dev/vda2,/dev/sda2,/dev/hda2";

struct LabConfig {
  std::string root = "/var/tmp/ferry-lab";
  int hosts = 2;          // 1..9
  int guests = 0;         // guests g1..gN made by Up (round-robin over hosts, disks on nas1)
  int address_base = 10;  // host N listens on 127.0.0.<address_base + N>
  Accel accel = Accel::kAuto;
  // Where scripts/lab-deps unpacked the kernel package ("" = $FERRY_LAB_KERNEL_DIR or
  // /var/cache/ferry/lab-kernel).
  std::string kernel_dir;
  // ferry_guest ("" = $FERRY_GUEST, else next to the running binary's build tree).
  std::string guest_binary;
  std::string busybox = "/bin/busybox";
  // Where the KVM probe's verdict is cached ("" = no cache).
  std::string cache_dir = "/var/cache/ferry";
  int64_t host_start_timeout_ms = 60000;
};

struct GuestSpec {
  std::string name;  // "" = next free "gN"
  int host = 1;      // 1-based host index it is defined and started on
  int memory_mib = 256;
  int vcpus = 1;
  std::string pool = "nas1";  // pool of its disk: nas1, nas2 or local
  uint64_t disk_mib = 32;     // boot_from_disk: the size of partition 2 (the disk is 25 MiB more)
  std::string disk_format = "qcow2";  // qcow2 or raw
  std::string disk_bus = "virtio";    // virtio (vda), sata (sda) or ide (hda)
  // An existing volume in `pool` to boot with (e.g. another guest's disk, to verify what its
  // writer wrote); "" = create NAME.<disk_format> of disk_mib.
  std::string volume;
  // Boot like a real OS: the disk is a bootable disk (BuildBootDisk: SYSLINUX, the lab's kernel
  // and initramfs, the command line below; the writer on partition 2) and the domain boots
  // from it, with no <kernel>/<initrd>. With `volume`, that volume must be such a disk: the
  // command line is the one written on it, the workload fields below do not apply.
  bool boot_from_disk = false;
  // Kernel command line workload (docs/lab.md): heartbeat period, memory dirtier, disk.
  int heartbeat_ms = 10;
  int dirty_mib = 0;
  int dirty_rate_mib = 0;
  DiskMode disk_mode = DiskMode::kWrite;
  int disk_iops = 100;
  std::string extra_cmdline;
  bool start = true;
};

struct HostInfo {
  int index = 0;              // 1-based
  std::string name;           // "host1": its hostname inside its namespace
  std::string address;        // "127.0.0.11"
  std::string uri;            // "qemu+tcp://127.0.0.11/system"
  std::string migration_uri;  // "tcp://127.0.0.11", QEMU's migration stream address
  std::string host_uuid;
  std::string dir;             // ROOT/hosts/host1: its private libvirt folders and log
  std::string local_pool_dir;  // ROOT/hosts/host1/local, the "local" pool
  pid_t libvirtd_pid = 0;
};

struct GuestInfo {
  std::string name;
  int host = 0;             // host it was started on (it may have migrated since)
  std::string console_log;  // ROOT/guests/NAME/console.log (serial ttyS0, appended)
  std::string disk_path;    // its virtio disk vda
  std::string pool;
  std::string mac;
  std::string domain_xml;  // ROOT/guests/NAME/domain.xml as defined
  bool boot_from_disk = false;
  uint64_t data_offset = 0;  // boot_from_disk, disk made here: byte offset of partition 2
};

// The guest kernel and initramfs every lab guest boots (directly, or from a boot disk).
struct GuestImages {
  std::string kernel;       // DIR/vmlinuz, copied from the unpacked kernel package
  std::string initrd;       // DIR/initrd.img, built (initramfs.h)
  std::string kernel_name;  // "vmlinuz-6.1.0-57-amd64": the package's file name
};

// Copies the guest kernel and builds the initramfs into `dir` (created if missing), from
// config.kernel_dir, guest_binary and busybox; what Lab::Up does for ROOT/images. Needs no
// root; the files are replaced if present.
Result<GuestImages> PrepareGuestImages(const LabConfig& config, const std::string& dir);

struct LabState {
  std::string root;
  std::string accel;                      // "kvm" or "tcg"
  std::string domain_type;                // libvirt <domain type=...>: "kvm" or "qemu"
  std::string bridge;                     // Linux bridge behind the libvirt network "lab"
  std::string kernel;                     // ROOT/images/vmlinuz
  std::string initrd;                     // ROOT/images/initrd.img
  std::vector<std::string> shared_pools;  // {"nas1", "nas2"}, at ROOT/<name>
  std::vector<HostInfo> hosts;
  std::vector<GuestInfo> guests;
};

class Lab {
  struct Passkey {  // only Up and Attach make Labs
    explicit Passkey() = default;
  };

 public:
  Lab(Passkey, LabState state) : state_(std::move(state)) {}

  // Builds the lab under config.root (which must not exist, or be empty). On failure
  // everything made so far is removed again.
  static Result<std::unique_ptr<Lab>> Up(const LabConfig& config);
  // A lab another process brought up, from ROOT/lab.json.
  static Result<std::unique_ptr<Lab>> Attach(const std::string& root);
  // Stops the lab at `root` (daemons, QEMUs, bridge) and removes the root folder. OK if
  // nothing is there; kInvalidArgument if `root` exists but is not a lab (no lab.json).
  static Status Down(const std::string& root);

  Status Down() { return Down(state_.root); }
  const LabState& state() const { return state_; }
  const HostInfo& host(int index) const { return state_.hosts.at(index - 1); }

  // Creates the guest's disk volume, defines it on spec.host and starts it (unless
  // !spec.start). Its console log is at GuestInfo::console_log.
  Result<GuestInfo> CreateGuest(GuestSpec spec);
  // The guest's kernel command line for `spec` (docs/lab.md).
  static std::string GuestCmdline(const GuestSpec& spec);

  // Runs `virsh -c <host uri> ARGS...`; non-zero exit is kIo with virsh's message.
  Result<std::string> Virsh(int host, const std::vector<std::string>& args) const;
  // 1-based indexes of the hosts on which `guest` is running now.
  Result<std::vector<int>> HostsRunning(const std::string& guest) const;
  // True if host `index`'s libvirtd is alive (pid and command line checked).
  bool HostAlive(int index) const;

 private:
  Status SaveState() const;

  LabState state_;
};

}  // namespace ferry::lab
