// Implementation of lab.h. The recipe is the one checked in ../shared/LAB.md; what differs
// from it is written in docs/lab.md.
#include "lab/lab.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <grp.h>
#include <netinet/in.h>
#include <pwd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <thread>

#include "lab/boot_disk.h"
#include "lab/console.h"
#include "lab/initramfs.h"
#include "lab/process.h"

#ifndef FERRY_GUEST_BINARY_DEFAULT
#define FERRY_GUEST_BINARY_DEFAULT ""
#endif

namespace ferry::lab {
namespace fs = std::filesystem;
namespace {

constexpr int kMaxHosts = 9;
constexpr int kLibvirtTcpPort = 16509;     // libvirtd's default tcp_port
constexpr int kMigrationPortBase = 49152;  // each address gets its own 64 ports from here
constexpr int kMigrationPortsPerHost = 64;
constexpr int64_t kVirshTimeoutMs = 120000;
constexpr int64_t kKvmProbeTimeoutMs = 30000;
constexpr int64_t kDaemonStopGraceMs = 10000;
constexpr const char kStateFile[] = "lab.json";
constexpr int kStateVersion = 1;
constexpr const char kNetworkName[] = "lab";
constexpr const char kLocalPool[] = "local";
const std::vector<std::string> kSharedPools = {"nas1", "nas2"};
// The real folders each host's namespace bind-mounts a private copy over.
constexpr const char* kLibvirtDirs[][2] = {{"etc", "/etc/libvirt"},
                                           {"run", "/run/libvirt"},
                                           {"lib", "/var/lib/libvirt"},
                                           {"log", "/var/log/libvirt"},
                                           {"cache", "/var/cache/libvirt"}};

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

void SleepMs(int64_t ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); }

Status WriteText(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::trunc);
    f << text;
    f.flush();
    if (!f) return Status::Io(tmp + ": write failed");
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) return Status::Io(path + ": rename failed");
  return Status::Ok();
}

Result<std::string> ReadText(const std::string& path) {
  std::ifstream f(path);
  if (!f) return Status::NotFound(path + ": cannot open");
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::string TailOfFile(const std::string& path, size_t bytes = 2000) {
  auto text = ReadText(path);
  if (!text.ok()) return "";
  return text->size() > bytes ? text->substr(text->size() - bytes) : *text;
}

Status MakeDirs(const std::string& path) {
  std::error_code ec;
  fs::create_directories(path, ec);
  if (ec) return Status::Io(path + ": mkdir: " + ec.message());
  return Status::Ok();
}

Status MakeSymlink(const std::string& target, const std::string& link) {
  std::error_code ec;
  fs::create_symlink(target, link, ec);
  if (ec) return Status::Io(link + ": symlink: " + ec.message());
  return Status::Ok();
}

std::string NewUuid() {
  auto text = ReadText("/proc/sys/kernel/random/uuid");
  std::string u = text.ok() ? *text : "";
  while (!u.empty() && (u.back() == '\n' || u.back() == ' ')) u.pop_back();
  return u;
}

std::string XmlEscape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '\'': out += "&apos;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

// A bridge name unique to the lab root (IFNAMSIZ: at most 15 characters).
std::string BridgeNameFor(const std::string& root) {
  char buf[16];
  std::snprintf(buf, sizeof(buf), "ferry%08zx", std::hash<std::string>{}(root)&0xffffffffu);
  return buf;
}

bool TcpPortOpen(const std::string& address, int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(static_cast<uint16_t>(port));
  inet_pton(AF_INET, address.c_str(), &sa.sin_addr);
  bool ok = connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) == 0;
  close(fd);
  return ok;
}

// ---- state file ----

nlohmann::json ToJson(const LabState& s) {
  nlohmann::json j = {{"version", kStateVersion}, {"root", s.root},
                      {"accel", s.accel},         {"domain_type", s.domain_type},
                      {"bridge", s.bridge},       {"kernel", s.kernel},
                      {"initrd", s.initrd},       {"shared_pools", s.shared_pools}};
  auto& hosts = j["hosts"] = nlohmann::json::array();
  for (const auto& h : s.hosts) {
    hosts.push_back({{"index", h.index},
                     {"name", h.name},
                     {"address", h.address},
                     {"uri", h.uri},
                     {"migration_uri", h.migration_uri},
                     {"host_uuid", h.host_uuid},
                     {"dir", h.dir},
                     {"local_pool_dir", h.local_pool_dir},
                     {"libvirtd_pid", h.libvirtd_pid}});
  }
  auto& guests = j["guests"] = nlohmann::json::array();
  for (const auto& g : s.guests) {
    guests.push_back({{"name", g.name},
                      {"host", g.host},
                      {"console_log", g.console_log},
                      {"disk_path", g.disk_path},
                      {"pool", g.pool},
                      {"mac", g.mac},
                      {"domain_xml", g.domain_xml},
                      {"boot_from_disk", g.boot_from_disk},
                      {"data_offset", g.data_offset}});
  }
  return j;
}

Result<LabState> FromJson(const std::string& path, const std::string& text) {
  try {
    auto j = nlohmann::json::parse(text);
    if (j.value("version", 0) != kStateVersion) {
      return Status::Unsupported(path + ": lab state version " +
                                 std::to_string(j.value("version", 0)));
    }
    LabState s;
    s.root = j.at("root").get<std::string>();
    s.accel = j.value("accel", "");
    s.domain_type = j.value("domain_type", "");
    s.bridge = j.value("bridge", "");
    s.kernel = j.value("kernel", "");
    s.initrd = j.value("initrd", "");
    s.shared_pools = j.value("shared_pools", std::vector<std::string>{});
    for (const auto& h : j.at("hosts")) {
      HostInfo hi;
      hi.index = h.at("index").get<int>();
      hi.name = h.at("name").get<std::string>();
      hi.address = h.at("address").get<std::string>();
      hi.uri = h.at("uri").get<std::string>();
      hi.migration_uri = h.value("migration_uri", "");
      hi.host_uuid = h.value("host_uuid", "");
      hi.dir = h.value("dir", "");
      hi.local_pool_dir = h.value("local_pool_dir", "");
      hi.libvirtd_pid = h.value("libvirtd_pid", 0);
      s.hosts.push_back(std::move(hi));
    }
    for (const auto& g : j.at("guests")) {
      GuestInfo gi;
      gi.name = g.at("name").get<std::string>();
      gi.host = g.value("host", 0);
      gi.console_log = g.value("console_log", "");
      gi.disk_path = g.value("disk_path", "");
      gi.pool = g.value("pool", "");
      gi.mac = g.value("mac", "");
      gi.domain_xml = g.value("domain_xml", "");
      gi.boot_from_disk = g.value("boot_from_disk", false);
      gi.data_offset = g.value("data_offset", uint64_t{0});
      s.guests.push_back(std::move(gi));
    }
    return s;
  } catch (const nlohmann::json::exception& e) {
    return Status::Corrupt(path + ": " + e.what());
  }
}

Status SaveStateTo(const LabState& s) {
  return WriteText(s.root + "/" + kStateFile, ToJson(s).dump(2) + "\n");
}

// ---- preparation ----

struct KernelFiles {
  std::string vmlinuz;
  std::string modules_dir;  // lib/modules/<release>
};

Result<KernelFiles> FindKernel(const std::string& configured) {
  std::string dir = configured;
  if (dir.empty()) {
    const char* env = std::getenv("FERRY_LAB_KERNEL_DIR");
    dir = env != nullptr && *env != '\0' ? env : "/var/cache/ferry/lab-kernel";
  }
  KernelFiles k;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir + "/boot", ec)) {
    if (e.path().filename().string().rfind("vmlinuz-", 0) == 0) k.vmlinuz = e.path().string();
  }
  for (const auto& e : fs::directory_iterator(dir + "/lib/modules", ec)) {
    if (e.is_directory()) k.modules_dir = e.path().string();
  }
  if (k.vmlinuz.empty() || k.modules_dir.empty()) {
    return Status::NotFound("no guest kernel (boot/vmlinuz-* and lib/modules/*) in " + dir +
                            "; run scripts/lab-deps");
  }
  return k;
}

Result<std::string> FindGuestBinary(const std::string& configured) {
  std::vector<std::string> candidates;
  if (!configured.empty()) candidates.push_back(configured);
  if (const char* env = std::getenv("FERRY_GUEST"); env != nullptr && *env != '\0') {
    candidates.push_back(env);
  }
  std::error_code ec;
  auto self = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    candidates.push_back((self.parent_path() / "ferry_guest").string());
    candidates.push_back((self.parent_path().parent_path() / "lab" / "ferry_guest").string());
  }
  candidates.push_back(FERRY_GUEST_BINARY_DEFAULT);
  for (const auto& c : candidates) {
    if (!c.empty() && access(c.c_str(), R_OK) == 0) return c;
  }
  return Status::NotFound(
      "ferry_guest not found (build the ferry_guest target, or set "
      "FERRY_GUEST)");
}

Status Preflight() {
  if (geteuid() != 0) {
    return Status::PermissionDenied("the lab needs root (namespaces, bridges, libvirtd)");
  }
  for (const char* tool : {"libvirtd", "virsh", "qemu-system-x86_64", "ip"}) {
    if (!InPath(tool)) {
      return Status::NotFound(std::string(tool) + " is not installed; run scripts/lab-deps");
    }
  }
  if (getpwnam("libvirt-qemu") == nullptr || getgrnam("kvm") == nullptr) {
    return Status::NotFound(
        "user libvirt-qemu or group kvm missing (libvirt's QEMU driver "
        "refuses to start without them); run scripts/lab-deps");
  }
  return Status::Ok();
}

// Boots the guest kernel under KVM with a deadline: KVM counts only if heartbeats arrive.
// The verdict is cached per kernel in cache_dir (the probe costs up to 30 s when KVM stalls).
Result<Accel> ProbeAccel(const LabConfig& config, const std::string& kernel,
                         const std::string& initrd, const std::string& root,
                         const std::string& key) {
  if (config.accel != Accel::kAuto) return config.accel;
  if (const char* env = std::getenv("FERRY_LAB_ACCEL"); env != nullptr && *env != '\0') {
    auto a = ParseAccel(env);
    if (a.ok() && *a != Accel::kAuto) return *a;
  }
  int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (fd < 0) return Accel::kTcg;
  close(fd);
  const std::string cache = config.cache_dir.empty() ? "" : config.cache_dir + "/lab-accel";
  if (!cache.empty()) {
    auto cached = ReadText(cache);
    if (cached.ok()) {
      std::istringstream in(*cached);
      std::string verdict, cached_key;
      in >> verdict >> cached_key;
      auto a = ParseAccel(verdict);
      if (a.ok() && *a != Accel::kAuto && cached_key == key) return *a;
    }
  }
  const std::string log = root + "/images/kvm-probe.log";
  auto pid =
      Spawn({"qemu-system-x86_64", "-accel", "kvm", "-m", "128", "-display", "none", "-nodefaults",
             "-no-reboot", "-serial", "file:" + log, "-kernel", kernel, "-initrd", initrd,
             "-append", "console=ttyS0 quiet panic=-1 ferry.heartbeat=10"},
            SpawnOptions{.output_path = root + "/images/kvm-probe.out"});
  Accel verdict = Accel::kTcg;
  if (pid.ok()) {
    ConsoleWatcher watch(log);
    watch.Start();
    if (watch.WaitForHeartbeats(10, kKvmProbeTimeoutMs).ok()) verdict = Accel::kKvm;
    TerminateProcess(*pid, 2000);
  }
  if (!cache.empty() && MakeDirs(config.cache_dir).ok()) {
    (void)WriteText(cache, std::string(AccelName(verdict)) + " " + key + "\n");
  }
  return verdict;
}

std::string LibvirtdConf(const HostInfo& h) {
  return "# Written by the Ferry lab (src/lab/lab.cc) for " + h.name + ".\n" +
         "listen_tls = 0\n"
         "listen_tcp = 1\n"
         "listen_addr = \"" +
         h.address + "\"\n" +
         "auth_tcp = \"none\"\n"
         "auth_unix_rw = \"none\"\n"
         "host_uuid = \"" +
         h.host_uuid + "\"\n" + "log_outputs = \"3:file:/var/log/libvirt/libvirtd.log\"\n";
}

std::string QemuConf(const HostInfo& h, int octet) {
  const int port_min = kMigrationPortBase + octet * kMigrationPortsPerHost;
  return "# Written by the Ferry lab (src/lab/lab.cc) for " + h.name + ".\n" +
         "user = \"root\"\n"
         "group = \"root\"\n"
         "dynamic_ownership = 0\n"
         "security_driver = \"none\"\n"
         "stdio_handler = \"file\"\n"
         "migration_address = \"" +
         h.address + "\"\n" + "migration_port_min = " + std::to_string(port_min) + "\n" +
         "migration_port_max = " + std::to_string(port_min + kMigrationPortsPerHost - 1) + "\n";
}

std::string PoolXml(const std::string& name, const std::string& path) {
  return "<pool type='dir'>\n  <name>" + name + "</name>\n  <uuid>" + NewUuid() +
         "</uuid>\n  <target>\n    <path>" + XmlEscape(path) + "</path>\n  </target>\n</pool>\n";
}

std::string NetworkXml(const std::string& bridge) {
  return std::string("<network>\n  <name>") + kNetworkName + "</name>\n  <uuid>" + NewUuid() +
         "</uuid>\n  <forward mode='bridge'/>\n  <bridge name='" + bridge + "'/>\n</network>\n";
}

// Writes the host's private /etc/libvirt: daemon configs, the network and the pools, each
// marked autostart so the daemon brings them up by itself.
Status WriteHostConfig(const LabState& s, const HostInfo& h, int octet) {
  const std::string etc = h.dir + "/etc";
  for (const char* d : {"/qemu/networks/autostart", "/storage/autostart"}) {
    FERRY_TRY(MakeDirs(etc + d));
  }
  FERRY_TRY(WriteText(etc + "/libvirtd.conf", LibvirtdConf(h)));
  FERRY_TRY(WriteText(etc + "/qemu.conf", QemuConf(h, octet)));
  const std::string net = std::string(kNetworkName) + ".xml";
  FERRY_TRY(WriteText(etc + "/qemu/networks/" + net, NetworkXml(s.bridge)));
  FERRY_TRY(
      MakeSymlink("/etc/libvirt/qemu/networks/" + net, etc + "/qemu/networks/autostart/" + net));
  std::vector<std::pair<std::string, std::string>> pools;
  for (const auto& p : s.shared_pools) pools.emplace_back(p, s.root + "/" + p);
  pools.emplace_back(kLocalPool, h.local_pool_dir);
  for (const auto& [name, path] : pools) {
    FERRY_TRY(WriteText(etc + "/storage/" + name + ".xml", PoolXml(name, path)));
    FERRY_TRY(MakeSymlink("/etc/libvirt/storage/" + name + ".xml",
                          etc + "/storage/autostart/" + name + ".xml"));
  }
  return Status::Ok();
}

Result<pid_t> StartHost(const HostInfo& h) {
  SpawnOptions o;
  o.output_path = h.dir + "/libvirtd.out";
  o.new_mount_uts_namespace = true;
  o.hostname = h.name;
  for (const auto& [sub, target] : kLibvirtDirs) {
    FERRY_TRY(MakeDirs(target));  // the mount point on the real machine
    FERRY_TRY(MakeDirs(h.dir + "/" + sub));
    o.bind_mounts.emplace_back(h.dir + "/" + sub, target);
  }
  return Spawn({"libvirtd", "--listen", "--pid-file", "/run/libvirt/libvirtd.pid"}, o);
}

// Waits until the daemon answers on its address and has its pools and network active.
Status WaitHostReady(const HostInfo& h, int64_t timeout_ms) {
  const int64_t deadline = NowMs() + timeout_ms;
  std::string last;
  while (NowMs() < deadline) {
    if (!ProcessAlive(h.libvirtd_pid)) {
      return Status::Io(h.name +
                        ": libvirtd exited; its output: " + TailOfFile(h.dir + "/libvirtd.out") +
                        TailOfFile(h.dir + "/log/libvirtd.log"));
    }
    if (TcpPortOpen(h.address, kLibvirtTcpPort)) {
      auto r =
          RunProcess({"virsh", "-q", "-c", h.uri, "pool-list --name; net-list --name; hostname"},
                     kVirshTimeoutMs);
      if (r.ok()) {
        last = r->output;
        std::set<std::string> words;
        std::istringstream in(r->output);
        for (std::string w; in >> w;) words.insert(w);
        bool ready = r->exit_code == 0 && words.count(kNetworkName) && words.count(kLocalPool) &&
                     words.count(h.name);
        for (const auto& p : kSharedPools) ready = ready && words.count(p);
        if (ready) return Status::Ok();
      }
    }
    SleepMs(200);
  }
  return Status::Io(h.name + ": libvirtd at " + h.uri + " not ready within " +
                    std::to_string(timeout_ms) + " ms; last answer: " + last);
}

// The disk's target name and bus in the domain XML for GuestSpec::disk_bus.
struct DiskTarget {
  const char* dev;
  const char* bus;
};
DiskTarget DiskTargetFor(const std::string& bus) {
  if (bus == "sata") return {"sda", "sata"};
  if (bus == "ide") return {"hda", "ide"};
  return {"vda", "virtio"};
}

std::string DomainXml(const LabState& s, const GuestSpec& spec, const GuestInfo& g) {
  const std::string driver_type = spec.disk_format == "raw" ? "raw" : "qcow2";
  const DiskTarget target = DiskTargetFor(spec.disk_bus);
  std::ostringstream x;
  x << "<domain type='" << s.domain_type << "'>\n"
    << "  <name>" << XmlEscape(g.name) << "</name>\n"
    << "  <memory unit='MiB'>" << spec.memory_mib << "</memory>\n"
    << "  <vcpu>" << spec.vcpus << "</vcpu>\n"
    << "  <os>\n"
    << "    <type arch='x86_64' machine='pc'>hvm</type>\n";
  if (spec.boot_from_disk) {  // SeaBIOS -> MBR -> SYSLINUX -> the kernel on partition 1
    x << "    <boot dev='hd'/>\n";
  } else {
    x << "    <kernel>" << XmlEscape(s.kernel) << "</kernel>\n"
      << "    <initrd>" << XmlEscape(s.initrd) << "</initrd>\n"
      << "    <cmdline>" << XmlEscape(Lab::GuestCmdline(spec)) << "</cmdline>\n";
  }
  x << "  </os>\n"
    << "  <features><acpi/></features>\n"
    << "  <clock offset='utc'/>\n"
    << "  <on_poweroff>destroy</on_poweroff>\n"
    << "  <on_reboot>destroy</on_reboot>\n"
    << "  <on_crash>destroy</on_crash>\n"
    << "  <devices>\n"
    << "    <emulator>/usr/bin/qemu-system-x86_64</emulator>\n"
    << "    <disk type='volume' device='disk'>\n"
    << "      <driver name='qemu' type='" << driver_type << "' cache='none'/>\n"
    << "      <source pool='" << XmlEscape(spec.pool) << "' volume='"
    << XmlEscape(fs::path(g.disk_path).filename().string()) << "'/>\n"
    << "      <target dev='" << target.dev << "' bus='" << target.bus << "'/>\n"
    << "    </disk>\n"
    << "    <interface type='network'>\n"
    << "      <source network='" << kNetworkName << "'/>\n"
    << "      <mac address='" << g.mac << "'/>\n"
    << "      <model type='virtio'/>\n"
    << "    </interface>\n"
    << "    <serial type='file'>\n"
    << "      <source path='" << XmlEscape(g.console_log) << "' append='on'/>\n"
    << "      <target port='0'/>\n"
    << "    </serial>\n"
    << "    <memballoon model='none'/>\n"
    << "  </devices>\n"
    << "</domain>\n";
  return x.str();
}

}  // namespace

std::string_view AccelName(Accel a) {
  switch (a) {
    case Accel::kAuto: return "auto";
    case Accel::kKvm: return "kvm";
    case Accel::kTcg: return "tcg";
  }
  return "?";
}

Result<Accel> ParseAccel(std::string_view text) {
  if (text == "auto") return Accel::kAuto;
  if (text == "kvm") return Accel::kKvm;
  if (text == "tcg") return Accel::kTcg;
  return Status::InvalidArgument("accelerator \"" + std::string(text) +
                                 "\": expected auto, kvm or tcg");
}

Result<GuestImages> PrepareGuestImages(const LabConfig& config, const std::string& dir) {
  FERRY_ASSIGN_OR_RETURN(KernelFiles kernel, FindKernel(config.kernel_dir));
  FERRY_ASSIGN_OR_RETURN(std::string guest_binary, FindGuestBinary(config.guest_binary));
  FERRY_TRY(MakeDirs(dir));
  GuestImages images;
  images.kernel = dir + "/vmlinuz";
  images.initrd = dir + "/initrd.img";
  images.kernel_name = fs::path(kernel.vmlinuz).filename().string();
  std::error_code ec;
  fs::copy_file(kernel.vmlinuz, images.kernel, fs::copy_options::overwrite_existing, ec);
  if (ec) return Status::Io(images.kernel + ": copy: " + ec.message());
  InitramfsSpec ir{guest_binary, config.busybox, kernel.modules_dir, DefaultGuestModules()};
  FERRY_TRY(BuildInitramfs(ir, images.initrd));
  return images;
}

std::string Lab::GuestCmdline(const GuestSpec& spec) {
  std::string c = "console=ttyS0 quiet panic=-1";
  c += " ferry.heartbeat=" + std::to_string(spec.heartbeat_ms);
  if (spec.dirty_mib > 0) {
    c += " ferry.dirty_mib=" + std::to_string(spec.dirty_mib);
    c += " ferry.dirty_rate_mib=" + std::to_string(spec.dirty_rate_mib);
  }
  if (spec.disk_mode != DiskMode::kNone) {
    c += " ferry.disk=";
    if (spec.boot_from_disk) {
      c += kBootDiskDataDevices;
    } else {
      c += std::string("/dev/") + DiskTargetFor(spec.disk_bus).dev;
    }
    c += " ferry.disk_mode=";
    c += spec.disk_mode == DiskMode::kVerify ? "verify" : "write";
    c += " ferry.disk_iops=" + std::to_string(spec.disk_iops);
  }
  if (!spec.extra_cmdline.empty()) c += " " + spec.extra_cmdline;
  return c;
}

Result<std::unique_ptr<Lab>> Lab::Up(const LabConfig& config) {
  if (config.hosts < 1 || config.hosts > kMaxHosts) {
    return Status::InvalidArgument("lab: --hosts must be 1.." + std::to_string(kMaxHosts));
  }
  if (config.address_base < 1 || config.address_base + config.hosts > 254) {
    return Status::InvalidArgument("lab: address base " + std::to_string(config.address_base) +
                                   " leaves 127.0.0.0/8");
  }
  if (config.root.empty() || config.root[0] != '/') {
    return Status::InvalidArgument("lab: root \"" + config.root + "\" must be an absolute path");
  }
  FERRY_TRY(Preflight());
  // Before anything is made: the kernel package and ferry_guest are there.
  FERRY_TRY(FindKernel(config.kernel_dir).status());
  FERRY_TRY(FindGuestBinary(config.guest_binary).status());
  std::error_code ec;
  const std::string root = fs::path(config.root).lexically_normal().string();
  if (fs::exists(root + "/" + kStateFile, ec)) {
    return Status::AlreadyExists("a lab is already up at " + root + " (ferry lab down --root " +
                                 root + ")");
  }
  if (fs::exists(root, ec) && !fs::is_empty(root, ec)) {
    return Status::InvalidArgument("lab: " + root + " exists and is not empty");
  }
  FERRY_TRY(MakeDirs(root + "/images"));

  LabState s;
  s.root = root;
  s.bridge = BridgeNameFor(root);
  s.kernel = root + "/images/vmlinuz";
  s.initrd = root + "/images/initrd.img";
  s.shared_pools = kSharedPools;
  for (int i = 1; i <= config.hosts; ++i) {
    HostInfo h;
    h.index = i;
    h.name = "host" + std::to_string(i);
    h.address = "127.0.0." + std::to_string(config.address_base + i);
    h.uri = "qemu+tcp://" + h.address + "/system";
    h.migration_uri = "tcp://" + h.address;
    h.host_uuid = NewUuid();
    h.dir = root + "/hosts/" + h.name;
    h.local_pool_dir = h.dir + "/local";
    s.hosts.push_back(std::move(h));
  }
  // From here on a failure tears down what was made.
  auto fail = [&](Status st) -> Status {
    (void)Down(root);
    return st;
  };
  if (Status st = SaveStateTo(s); !st.ok()) return fail(st);

  auto images = PrepareGuestImages(config, root + "/images");
  if (!images.ok()) return fail(images.status());
  s.kernel = images->kernel;
  s.initrd = images->initrd;

  auto accel = ProbeAccel(config, s.kernel, s.initrd, root, images->kernel_name);
  if (!accel.ok()) return fail(accel.status());
  s.accel = std::string(AccelName(*accel));
  s.domain_type = *accel == Accel::kKvm ? "kvm" : "qemu";

  for (const auto& p : s.shared_pools) {
    if (Status st = MakeDirs(root + "/" + p); !st.ok()) return fail(st);
  }
  if (Status st = MakeDirs(root + "/guests"); !st.ok()) return fail(st);
  // One bridge behind the network "lab" on every host: the hosts share the machine's network
  // namespace, so guests on different hosts meet on it as on one L2 segment.
  (void)RunProcess({"ip", "link", "del", s.bridge}, kVirshTimeoutMs);
  if (auto r = RunChecked({"ip", "link", "add", s.bridge, "type", "bridge"}, kVirshTimeoutMs);
      !r.ok()) {
    return fail(r.status());
  }
  if (auto r = RunChecked({"ip", "link", "set", s.bridge, "up"}, kVirshTimeoutMs); !r.ok()) {
    return fail(r.status());
  }

  for (auto& h : s.hosts) {
    if (Status st = MakeDirs(h.local_pool_dir); !st.ok()) return fail(st);
    if (Status st = WriteHostConfig(s, h, config.address_base + h.index); !st.ok()) {
      return fail(st);
    }
    auto pid = StartHost(h);
    if (!pid.ok()) return fail(pid.status());
    h.libvirtd_pid = *pid;
    if (Status st = SaveStateTo(s); !st.ok()) return fail(st);
  }
  for (const auto& h : s.hosts) {
    if (Status st = WaitHostReady(h, config.host_start_timeout_ms); !st.ok()) return fail(st);
  }
  auto lab = std::make_unique<Lab>(Passkey{}, std::move(s));
  for (int g = 0; g < config.guests; ++g) {
    GuestSpec spec;
    spec.host = g % config.hosts + 1;
    auto gi = lab->CreateGuest(spec);
    if (!gi.ok()) return fail(gi.status());
  }
  return lab;
}

Result<std::unique_ptr<Lab>> Lab::Attach(const std::string& root) {
  const std::string path = root + "/" + kStateFile;
  FERRY_ASSIGN_OR_RETURN(std::string text, ReadText(path));
  FERRY_ASSIGN_OR_RETURN(LabState s, FromJson(path, text));
  return std::make_unique<Lab>(Passkey{}, std::move(s));
}

Status Lab::SaveState() const { return SaveStateTo(state_); }

Result<std::string> Lab::Virsh(int host, const std::vector<std::string>& args) const {
  if (host < 1 || host > static_cast<int>(state_.hosts.size())) {
    return Status::InvalidArgument("lab: no host " + std::to_string(host));
  }
  std::vector<std::string> argv = {"virsh", "-q", "-c", state_.hosts[host - 1].uri};
  argv.insert(argv.end(), args.begin(), args.end());
  return RunChecked(argv, kVirshTimeoutMs);
}

bool Lab::HostAlive(int index) const {
  if (index < 1 || index > static_cast<int>(state_.hosts.size())) return false;
  return ProcessMatches(state_.hosts[index - 1].libvirtd_pid, "libvirtd");
}

Result<std::vector<int>> Lab::HostsRunning(const std::string& guest) const {
  std::vector<int> out;
  for (const auto& h : state_.hosts) {
    auto r = RunProcess({"virsh", "-q", "-c", h.uri, "domstate", guest}, kVirshTimeoutMs);
    if (!r.ok()) return r.status();
    if (r->exit_code == 0 && r->output.rfind("running", 0) == 0) out.push_back(h.index);
  }
  return out;
}

Result<GuestInfo> Lab::CreateGuest(GuestSpec spec) {
  if (spec.host < 1 || spec.host > static_cast<int>(state_.hosts.size())) {
    return Status::InvalidArgument("lab: no host " + std::to_string(spec.host));
  }
  std::set<std::string> taken;
  for (const auto& g : state_.guests) taken.insert(g.name);
  if (spec.name.empty()) {
    for (int i = 1; spec.name.empty() || taken.count(spec.name); ++i) {
      spec.name = "g" + std::to_string(i);
    }
  }
  if (taken.count(spec.name)) return Status::AlreadyExists("lab: guest " + spec.name);
  if (spec.name.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789-_") != std::string::npos) {
    return Status::InvalidArgument("lab: guest name \"" + spec.name +
                                   "\": use lower-case letters, digits, - and _");
  }
  if (spec.disk_format != "qcow2" && spec.disk_format != "raw") {
    return Status::InvalidArgument("lab: disk format " + spec.disk_format);
  }
  if (spec.disk_bus != "virtio" && spec.disk_bus != "sata" && spec.disk_bus != "ide") {
    return Status::InvalidArgument("lab: disk bus \"" + spec.disk_bus +
                                   "\": expected virtio, sata or ide");
  }
  const HostInfo& h = state_.hosts[spec.host - 1];
  const bool shared = spec.pool != kLocalPool;
  std::string pool_dir;
  if (!shared) {
    pool_dir = h.local_pool_dir;
  } else {
    for (const auto& p : state_.shared_pools) {
      if (p == spec.pool) pool_dir = state_.root + "/" + p;
    }
    if (pool_dir.empty()) return Status::InvalidArgument("lab: no pool " + spec.pool);
  }
  GuestInfo g;
  g.name = spec.name;
  g.host = spec.host;
  g.pool = spec.pool;
  g.boot_from_disk = spec.boot_from_disk;
  const std::string dir = state_.root + "/guests/" + g.name;
  FERRY_TRY(MakeDirs(dir));
  g.console_log = dir + "/console.log";
  g.domain_xml = dir + "/domain.xml";
  const bool create_volume = spec.volume.empty();
  const std::string volume = create_volume ? g.name + "." + spec.disk_format : spec.volume;
  g.disk_path = pool_dir + "/" + volume;
  std::error_code ec;
  if (!create_volume && !fs::exists(g.disk_path, ec)) {
    return Status::NotFound("lab: volume " + volume + " in pool " + spec.pool);
  }
  char mac[18];
  const size_t n = state_.guests.size() + 1;
  std::snprintf(mac, sizeof(mac), "52:54:00:fe:%02zx:%02zx", (n >> 8) & 0xff, n & 0xff);
  g.mac = mac;

  if (create_volume && spec.boot_from_disk) {
    // Written into the pool's folder behind libvirt's back (it cannot make such a volume),
    // then listed by a refresh like any file dropped there.
    if (fs::exists(g.disk_path, ec)) {
      return Status::AlreadyExists("lab: volume " + volume + " in pool " + spec.pool);
    }
    BootDiskSpec disk;
    disk.out_path = g.disk_path;
    disk.kernel = state_.kernel;
    disk.initrd = state_.initrd;
    disk.cmdline = GuestCmdline(spec);
    disk.data_mib = spec.disk_mib;
    disk.format = spec.disk_format;
    FERRY_ASSIGN_OR_RETURN(BootDiskLayout layout,
                           BuildBootDisk(disk).WithContext("lab: guest " + g.name));
    g.data_offset = layout.data_offset;
    FERRY_TRY(Virsh(spec.host, {"pool-refresh", spec.pool}).status());
  } else if (create_volume) {
    FERRY_TRY(Virsh(spec.host, {"vol-create-as", spec.pool, volume,
                                std::to_string(spec.disk_mib) + "M", "--format", spec.disk_format})
                  .status());
  } else {
    // A file put into the pool's folder by someone else (a copy, a migration) is listed
    // by libvirt only after a refresh.
    FERRY_TRY(Virsh(spec.host, {"pool-refresh", spec.pool}).status());
  }
  if (create_volume &&
      shared) {  // the other hosts see the file at once, but libvirt lists it after a refresh
    for (const auto& other : state_.hosts) {
      if (other.index == spec.host) continue;
      FERRY_TRY(Virsh(other.index, {"pool-refresh", spec.pool}).status());
    }
  }
  FERRY_TRY(WriteText(g.domain_xml, DomainXml(state_, spec, g)));
  FERRY_TRY(Virsh(spec.host, {"define", g.domain_xml}).status());
  state_.guests.push_back(g);
  FERRY_TRY(SaveState());
  if (spec.start) FERRY_TRY(Virsh(spec.host, {"start", g.name}).status());
  return g;
}

Status Lab::Down(const std::string& root_in) {
  std::error_code ec;
  const std::string root = fs::path(root_in).lexically_normal().string();
  if (root.empty() || root == "/") return Status::InvalidArgument("lab: refusing root " + root);
  if (!fs::exists(root, ec)) return Status::Ok();
  const std::string path = root + "/" + kStateFile;
  auto text = ReadText(path);
  if (!text.ok()) {
    return Status::InvalidArgument("lab: " + root + " is not a Ferry lab (no " + kStateFile +
                                   "); not touching it");
  }
  LabState s;
  if (auto parsed = FromJson(path, *text); parsed.ok()) s = std::move(*parsed);
  std::string problems;
  // 1. The daemons, so nothing restarts or reconnects what follows.
  for (const auto& h : s.hosts) {
    if (ProcessMatches(h.libvirtd_pid, "libvirtd") &&
        !TerminateProcess(h.libvirtd_pid, kDaemonStopGraceMs)) {
      problems += " libvirtd " + std::to_string(h.libvirtd_pid) + " would not stop;";
    }
  }
  // 2. QEMUs: from libvirt's pid files, then any qemu whose command line names the root
  //    (the kernel, initrd and console paths of every lab guest live under it).
  std::vector<pid_t> qemus;
  for (const auto& host_dir : fs::directory_iterator(root + "/hosts", ec)) {
    for (const auto& f : fs::directory_iterator(host_dir.path() / "run" / "qemu", ec)) {
      if (f.path().extension() != ".pid") continue;
      auto pid_text = ReadText(f.path().string());
      if (pid_text.ok()) qemus.push_back(static_cast<pid_t>(std::atol(pid_text->c_str())));
    }
  }
  for (pid_t pid : FindProcesses(root + "/")) qemus.push_back(pid);
  for (pid_t pid : qemus) {
    if (ProcessMatches(pid, "qemu-system") && ProcessMatches(pid, root + "/") &&
        !TerminateProcess(pid, 3000)) {
      problems += " qemu " + std::to_string(pid) + " would not stop;";
    }
  }
  // 3. The bridge (its taps went with the QEMUs).
  if (!s.bridge.empty()) (void)RunProcess({"ip", "link", "del", s.bridge}, kVirshTimeoutMs);
  // 4. The files.
  fs::remove_all(root, ec);
  if (ec) problems += " remove " + root + ": " + ec.message() + ";";
  if (!problems.empty()) return Status::Io("lab down:" + problems);
  return Status::Ok();
}

}  // namespace ferry::lab
