// Implementation of lab_command.h.
#include "lab/lab_command.h"

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>

#include "lab/boot_disk.h"
#include "lab/lab.h"

namespace ferry::lab {
namespace {

struct LabArgs {
  LabConfig config;
  std::string accel = "auto";
  std::string output = "text";
  GuestSpec guest;
  std::string disk_mode = "write";
  // lab disk
  std::string disk_out;
  uint64_t data_mib = 16;
  std::string cmdline_extra;
  std::string disk_format = "raw";
};

Result<DiskMode> ParseDiskMode(const std::string& s) {
  if (s == "write") return DiskMode::kWrite;
  if (s == "verify") return DiskMode::kVerify;
  if (s == "none") return DiskMode::kNone;
  return Status::InvalidArgument("--disk-mode must be write, verify or none, not '" + s + "'");
}

int Fail(const std::string& output, const std::string& what, const Status& s) {
  if (output == "json") {
    nlohmann::json j = {{"error",
                         {{"code", std::string(ErrorCodeName(s.code()))},
                          {"message", s.message()},
                          {"details", {{"command", what}}}}}};
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    std::fprintf(stderr, "ferry %s: %s\n", what.c_str(), s.ToString().c_str());
  }
  return ExitCodeFor(s.code());
}

nlohmann::json Describe(const Lab& lab, bool probe) {
  const LabState& s = lab.state();
  nlohmann::json j = {{"root", s.root},
                      {"accel", s.accel},
                      {"bridge", s.bridge},
                      {"network", "lab"},
                      {"shared_pools", s.shared_pools},
                      {"kernel", s.kernel},
                      {"initrd", s.initrd}};
  auto& hosts = j["hosts"] = nlohmann::json::array();
  for (const auto& h : s.hosts) {
    nlohmann::json hj = {{"name", h.name},
                         {"uri", h.uri},
                         {"migration_uri", h.migration_uri},
                         {"libvirtd_pid", h.libvirtd_pid},
                         {"local_pool", h.local_pool_dir}};
    if (probe) hj["alive"] = lab.HostAlive(h.index);
    hosts.push_back(hj);
  }
  auto& guests = j["guests"] = nlohmann::json::array();
  for (const auto& g : s.guests) {
    nlohmann::json gj = {
        {"name", g.name}, {"console_log", g.console_log}, {"disk", g.disk_path}, {"mac", g.mac}};
    if (probe) {
      auto running = lab.HostsRunning(g.name);
      auto& on = gj["running_on"] = nlohmann::json::array();
      if (running.ok()) {
        for (int i : *running) on.push_back(s.hosts[i - 1].name);
      }
    }
    guests.push_back(gj);
  }
  return j;
}

void PrintText(const nlohmann::json& j) {
  std::printf("lab at %s (accel %s, network \"lab\" on bridge %s)\n",
              j["root"].get<std::string>().c_str(), j["accel"].get<std::string>().c_str(),
              j["bridge"].get<std::string>().c_str());
  for (const auto& h : j["hosts"]) {
    std::printf("  %-6s %-30s migrate to %-18s pid %d%s\n", h["name"].get<std::string>().c_str(),
                h["uri"].get<std::string>().c_str(), h["migration_uri"].get<std::string>().c_str(),
                h["libvirtd_pid"].get<int>(),
                h.contains("alive") ? (h["alive"].get<bool>() ? "" : " (down)") : "");
  }
  for (const auto& g : j["guests"]) {
    std::string on;
    if (g.contains("running_on")) {
      for (const auto& h : g["running_on"]) on += (on.empty() ? "" : ",") + h.get<std::string>();
      on = on.empty() ? " not running" : " running on " + on;
    }
    std::printf("  guest %-8s%s  console %s\n", g["name"].get<std::string>().c_str(), on.c_str(),
                g["console_log"].get<std::string>().c_str());
  }
}

bool ValidOutput(const std::string& o) { return o == "text" || o == "json"; }

// A temporary folder removed when the object goes.
class ScratchDir {
 public:
  static Result<ScratchDir> Make() {
    std::error_code ec;
    std::string pattern = (std::filesystem::temp_directory_path(ec) / "ferry-lab-disk.XXXXXX");
    if (mkdtemp(pattern.data()) == nullptr) {
      return Status::Io(pattern + ": mkdtemp: " + std::strerror(errno));
    }
    return ScratchDir(pattern);
  }
  ScratchDir(ScratchDir&& o) noexcept : path_(std::move(o.path_)) { o.path_.clear(); }
  ScratchDir& operator=(ScratchDir&&) = delete;
  ~ScratchDir() {
    std::error_code ec;
    if (!path_.empty()) std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  explicit ScratchDir(std::string path) : path_(std::move(path)) {}
  std::string path_;
};

struct BuiltDisk {
  BootDiskSpec spec;
  BootDiskLayout layout;
  std::string images_from;  // the running lab's root, or "built" (from the kernel package)
};

// `ferry lab disk`: the kernel and initramfs of the lab at config.root if one is up there,
// else made on the spot (as Lab::Up makes them) in a scratch folder.
Result<BuiltDisk> BuildLabDisk(const LabArgs& args) {
  // What BuildBootDisk would refuse, before the images are made for nothing.
  if (args.disk_format != "raw" && args.disk_format != "qcow2") {
    return Status::InvalidArgument("--format \"" + args.disk_format + "\": expected raw or qcow2");
  }
  std::error_code ec;
  if (std::filesystem::exists(args.disk_out, ec)) {
    return Status::AlreadyExists(args.disk_out + ": exists");
  }
  BuiltDisk built;
  GuestSpec guest;  // the lab's defaults: heartbeat, writer on partition 2, mode write
  guest.boot_from_disk = true;
  guest.extra_cmdline = args.cmdline_extra;
  built.spec.out_path = args.disk_out;
  built.spec.cmdline = Lab::GuestCmdline(guest);
  built.spec.data_mib = args.data_mib;
  built.spec.format = args.disk_format;
  std::optional<ScratchDir> scratch;
  if (std::filesystem::exists(args.config.root + "/lab.json", ec)) {
    FERRY_ASSIGN_OR_RETURN(auto lab, Lab::Attach(args.config.root));
    built.spec.kernel = lab->state().kernel;
    built.spec.initrd = lab->state().initrd;
    built.images_from = args.config.root;
  } else {
    FERRY_ASSIGN_OR_RETURN(ScratchDir dir, ScratchDir::Make());
    scratch.emplace(std::move(dir));
    FERRY_ASSIGN_OR_RETURN(GuestImages images, PrepareGuestImages(args.config, scratch->path()));
    built.spec.kernel = images.kernel;
    built.spec.initrd = images.initrd;
    built.images_from = "built";
  }
  FERRY_ASSIGN_OR_RETURN(built.layout, BuildBootDisk(built.spec));
  return built;
}

}  // namespace

void AddLabCommand(CLI::App& app, int* exit_code) {
  auto args = std::make_shared<LabArgs>();
  CLI::App* lab =
      app.add_subcommand("lab", "a test lab of libvirt hosts and guests on this machine");
  lab->require_subcommand(1);

  CLI::App* up = lab->add_subcommand("up", "start N libvirt hosts, pools, a network and guests");
  up->add_option("--hosts", args->config.hosts, "number of hosts (1-9)")->capture_default_str();
  up->add_option("--guests", args->config.guests, "guests to boot, spread over the hosts")
      ->capture_default_str();
  up->add_option("--root", args->config.root, "folder that holds everything")
      ->capture_default_str();
  up->add_option("--accel", args->accel, "auto (probe KVM), kvm or tcg")->capture_default_str();
  up->add_option("--address-base", args->config.address_base, "host N listens on 127.0.0.<base+N>")
      ->capture_default_str();
  up->add_option("--output", args->output, "text or json")->capture_default_str();
  up->callback([args, exit_code] {
    if (!ValidOutput(args->output)) {
      *exit_code = Fail("text", "lab up", Status::InvalidArgument("--output text|json"));
      return;
    }
    auto accel = ParseAccel(args->accel);
    if (!accel.ok()) {
      *exit_code = Fail(args->output, "lab up", accel.status());
      return;
    }
    args->config.accel = *accel;
    auto lab = Lab::Up(args->config);
    if (!lab.ok()) {
      *exit_code = Fail(args->output, "lab up", lab.status());
      return;
    }
    auto j = Describe(**lab, false);
    if (args->output == "json") {
      std::printf("%s\n", j.dump(2).c_str());
    } else {
      PrintText(j);
    }
    *exit_code = 0;
  });

  CLI::App* guest = lab->add_subcommand("guest", "define and start a guest on a host of the lab");
  guest->add_option("NAME", args->guest.name, "guest name (default: the next free gN)");
  guest->add_option("--host", args->guest.host, "1-based host index")->capture_default_str();
  guest->add_option("--pool", args->guest.pool, "pool of its disk: nas1, nas2 or local")
      ->capture_default_str();
  guest->add_option("--volume", args->guest.volume,
                    "boot an existing volume of the pool instead of creating one");
  guest->add_option("--disk-format", args->guest.disk_format, "qcow2 or raw")
      ->capture_default_str();
  guest->add_option("--disk-mode", args->disk_mode, "write, verify or none")->capture_default_str();
  guest->add_option("--disk-bus", args->guest.disk_bus, "virtio, sata or ide")
      ->capture_default_str();
  guest->add_flag("--boot-from-disk", args->guest.boot_from_disk,
                  "make (or, with --volume, use) a bootable disk and boot from it");
  guest->add_option("--memory", args->guest.memory_mib, "MiB")->capture_default_str();
  guest->add_option("--dirty-mib", args->guest.dirty_mib, "memory dirtier working set (MiB)");
  guest->add_option("--dirty-rate", args->guest.dirty_rate_mib, "MiB/s the dirtier writes");
  guest->add_option("--root", args->config.root, "the lab's folder")->capture_default_str();
  guest->add_option("--output", args->output, "text or json")->capture_default_str();
  guest->callback([args, exit_code] {
    if (!ValidOutput(args->output)) {
      *exit_code = Fail("text", "lab guest", Status::InvalidArgument("--output text|json"));
      return;
    }
    auto mode = ParseDiskMode(args->disk_mode);
    if (!mode.ok()) {
      *exit_code = Fail(args->output, "lab guest", mode.status());
      return;
    }
    args->guest.disk_mode = *mode;
    auto lab = Lab::Attach(args->config.root);
    if (!lab.ok()) {
      *exit_code = Fail(args->output, "lab guest", lab.status());
      return;
    }
    auto g = (*lab)->CreateGuest(args->guest);
    if (!g.ok()) {
      *exit_code = Fail(args->output, "lab guest", g.status());
      return;
    }
    const HostInfo& h = (*lab)->host(g->host);
    nlohmann::json j = {
        {"name", g->name},      {"host", h.name},  {"uri", h.uri}, {"console_log", g->console_log},
        {"disk", g->disk_path}, {"pool", g->pool}, {"mac", g->mac}};
    if (args->output == "json") {
      std::printf("%s\n", j.dump(2).c_str());
    } else {
      std::printf("guest %s started on %s, disk %s, console %s\n", g->name.c_str(), h.name.c_str(),
                  g->disk_path.c_str(), g->console_log.c_str());
    }
    *exit_code = 0;
  });

  CLI::App* disk =
      lab->add_subcommand("disk", "make a bootable disk with the lab's kernel and guest workload");
  disk->add_option("--out", args->disk_out, "image to create")->required();
  disk->add_option("--data-mib", args->data_mib, "size of partition 2, the disk writer's area")
      ->capture_default_str();
  disk->add_option("--cmdline-extra", args->cmdline_extra,
                   "appended to the guest's kernel command line (docs/lab.md)");
  disk->add_option("--format", args->disk_format, "raw or qcow2")->capture_default_str();
  disk->add_option("--root", args->config.root,
                   "a running lab whose kernel and initramfs to use (else they are built)")
      ->capture_default_str();
  disk->add_option("--output", args->output, "text or json")->capture_default_str();
  disk->callback([args, exit_code] {
    if (!ValidOutput(args->output)) {
      *exit_code = Fail("text", "lab disk", Status::InvalidArgument("--output text|json"));
      return;
    }
    auto built = BuildLabDisk(*args);
    if (!built.ok()) {
      *exit_code = Fail(args->output, "lab disk", built.status());
      return;
    }
    nlohmann::json j = {{"path", built->spec.out_path},
                        {"format", built->spec.format},
                        {"data_offset", built->layout.data_offset},
                        {"data_bytes", built->layout.data_bytes},
                        {"cmdline", built->spec.cmdline},
                        {"images", built->images_from}};
    if (args->output == "json") {
      std::printf("%s\n", j.dump(2).c_str());
    } else {
      std::printf("bootable disk %s (%s): partition 2 at byte %llu, %llu bytes; cmdline: %s\n",
                  built->spec.out_path.c_str(), built->spec.format.c_str(),
                  static_cast<unsigned long long>(built->layout.data_offset),
                  static_cast<unsigned long long>(built->layout.data_bytes),
                  built->spec.cmdline.c_str());
    }
    *exit_code = 0;
  });

  CLI::App* down = lab->add_subcommand("down", "stop the lab and remove its folder");
  down->add_option("--root", args->config.root, "the lab's folder")->capture_default_str();
  down->callback([args, exit_code] {
    Status s = Lab::Down(args->config.root);
    *exit_code = s.ok() ? 0 : Fail("text", "lab down", s);
  });

  CLI::App* status = lab->add_subcommand("status", "hosts and guests of the running lab");
  status->add_option("--root", args->config.root, "the lab's folder")->capture_default_str();
  status->add_option("--output", args->output, "text or json")->capture_default_str();
  status->callback([args, exit_code] {
    if (!ValidOutput(args->output)) {
      *exit_code = Fail("text", "lab status", Status::InvalidArgument("--output text|json"));
      return;
    }
    auto lab = Lab::Attach(args->config.root);
    if (!lab.ok()) {
      *exit_code = Fail(args->output, "lab status", lab.status());
      return;
    }
    auto j = Describe(**lab, true);
    if (args->output == "json") {
      std::printf("%s\n", j.dump(2).c_str());
    } else {
      PrintText(j);
    }
    *exit_code = 0;
  });
}

}  // namespace ferry::lab
