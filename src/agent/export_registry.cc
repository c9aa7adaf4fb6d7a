// The source side of cold migrations: exports of a VM's disks over NBD (see export_registry.h).
#include "agent/export_registry.h"

#include <sys/random.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <thread>
#include <utility>

#include "agent/state_file.h"
#include "api/agent_json.h"
#include "disk/engine/chunk_hash.h"
#include "disk/image.h"
#include "hypervisor/domain_xml.h"
#include "hypervisor/libvirt_host.h"
#include "nbd/nbd_server.h"
#include "sources/libvirt_vm.h"
#include "sources/share.h"

namespace ferry::agent {

namespace {

using Clock = std::chrono::steady_clock;

constexpr char kRecordSuffix[] = ".json";
constexpr int kRecordVersion = 1;
constexpr size_t kMaxRecordBytes = 4 << 20;
// How often a VM asked to shut down is looked at (docs/plans.md: every 500 ms).
constexpr std::chrono::milliseconds kShutdownPoll{500};
constexpr size_t kTokenBytes = 16;  // 128 bits

int64_t SystemNowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// "120 s", "1.5 s".
std::string Seconds(int64_t ms) {
  if (ms % 1000 == 0) return std::to_string(ms / 1000) + " s";
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.1f s", static_cast<double>(ms) / 1000.0);
  return buf;
}

Result<std::string> RandomToken() {
  uint8_t bytes[kTokenBytes];
  size_t got = 0;
  while (got < sizeof(bytes)) {
    const ssize_t n = ::getrandom(bytes + got, sizeof(bytes) - got, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::Io(std::string("getrandom: ") + std::strerror(errno));
    }
    got += static_cast<size_t>(n);
  }
  return ToHex(bytes);
}

// "127.0.0.11" -> "127.0.0.11:0", "::1" -> "[::1]:0".
std::string AnyPortOf(const std::string& host) {
  if (host.find(':') != std::string::npos && host.front() != '[') return "[" + host + "]:0";
  return host + ":0";
}

const std::string* ShareFolder(const ExportRegistryOptions& options, const std::string& name) {
  for (const auto& [share, folder] : options.shares) {
    if (share == name) return &folder;
  }
  return nullptr;
}

// A libvirt VM as an export sees it: its inactive definition (the configuration it boots
// with), described with the inventory's pools and resolved volume paths; disks that are not
// plain files (block devices, network disks) are refused.
Result<sources::VmDescription> DescribeForExport(ExportHost& host, const std::string& vm) {
  FERRY_ASSIGN_OR_RETURN(std::string xml, std::move(host.DomainXml(vm)).WithContext("vm " + vm));
  FERRY_ASSIGN_OR_RETURN(
      hypervisor::VmInfo defined,
      std::move(hypervisor::ParseDomainXml(xml)).WithContext("vm " + vm + ": inactive XML"));
  FERRY_ASSIGN_OR_RETURN(hypervisor::VmInfo info,
                         std::move(host.GetVm(vm)).WithContext("vm " + vm));
  for (const hypervisor::VmDisk& d : defined.disks) {
    if (d.device != "disk") continue;
    std::string file = d.type == "file" ? d.source_path : "";
    if (d.type == "volume") {
      for (const hypervisor::VmDisk& known : info.disks) {
        if (known.target == d.target && known.type != "block") file = known.source_path;
      }
    }
    std::error_code ec;
    if (file.empty() || !std::filesystem::is_regular_file(file, ec)) {
      return Status::Unsupported("vm " + vm + ": disk " + d.target + " is a " + d.type + " disk" +
                                 (file.empty() ? "" : " (" + file + ")") +
                                 ": only disks backed by a file can be exported");
    }
  }
  return sources::DescribeLibvirtVm(xml, info);
}

Result<std::shared_ptr<BlockSource>> OpenDisk(const sources::DiskDescription& disk,
                                              const OpenOptions& base) {
  OpenOptions o = base;
  if (disk.format == "ova") {
    o.format = ImageFormat::kOva;
    o.ova_disk_index = std::max(disk.ova_disk_index, 0);
  } else if (!disk.format.empty()) {
    Result<ImageFormat> format = ParseImageFormat(disk.format);
    if (!format.ok()) return Status::Unsupported("format \"" + disk.format + "\" cannot be read");
    o.format = *format;
  }
  FERRY_ASSIGN_OR_RETURN(std::unique_ptr<BlockSource> source, OpenImage(disk.file, o));
  return std::shared_ptr<BlockSource>(std::move(source));
}

}  // namespace

struct ExportRegistry::Entry {
  ExportInfo info;                    // GUARDED_BY(registry mu_)
  std::unique_ptr<NbdServer> server;  // GUARDED_BY(registry mu_); set while serving
  // The opened disks, in info.disks order. The worker fills and hashes them; Close and
  // Create touch them only after joining the worker.
  std::vector<std::shared_ptr<BlockSource>> sources;

  std::atomic<bool> stop{false};  // Close/destructor: the worker ends at its next check
  std::mutex wake_mu;
  std::condition_variable wake_cv;  // notified with `stop`

  std::mutex op_mu;    // serialises Close and a reopening Create of this export
  std::thread worker;  // GUARDED_BY(op_mu)

  std::mutex persist_mu;  // orders writes of the export's file (taken before registry mu_)

  // Sleeps up to `d`; true if stop was asked meanwhile.
  bool SleepOrStop(std::chrono::milliseconds d) {
    std::unique_lock<std::mutex> lock(wake_mu);
    return wake_cv.wait_for(lock, d, [&] { return stop.load(); });
  }
  void RequestStop() {
    {
      std::lock_guard<std::mutex> lock(wake_mu);
      stop = true;
    }
    wake_cv.notify_all();
  }
};

ExportRegistry::ExportRegistry(ExportRegistryOptions options)
    : options_(std::move(options)), dir_(options_.state_dir + "/exports") {
  if (!options_.now_ms) options_.now_ms = SystemNowMs;
  options_.hash_workers = std::max(options_.hash_workers, 1);
}

ExportRegistry::~ExportRegistry() {
  std::vector<Entry*> all;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [id, e] : exports_) all.push_back(e.get());
  }
  for (Entry* e : all) e->RequestStop();
  for (Entry* e : all) {
    std::lock_guard<std::mutex> op(e->op_mu);
    if (e->worker.joinable()) e->worker.join();
    std::unique_ptr<NbdServer> server;
    {
      std::lock_guard<std::mutex> lock(mu_);
      server = std::move(e->server);
    }
    if (server != nullptr) server->Stop();
  }
}

void ExportRegistry::Log(const std::string& line) const {
  if (options_.log) {
    options_.log(line);
  } else {
    std::fprintf(stderr, "ferry-agent exports: %s\n", line.c_str());
  }
}

Status ExportRegistry::Start() {
  std::error_code ec;
  std::filesystem::create_directories(dir_, ec);
  if (ec) return Status::Io("create " + dir_ + ": " + ec.message());
  return Load();
}

Status ExportRegistry::Load() {
  std::error_code ec;
  std::filesystem::directory_iterator it(dir_, ec);
  if (ec) return Status::Io("list " + dir_ + ": " + ec.message());
  std::vector<std::string> names;
  for (const auto& entry : it) names.push_back(entry.path().filename().string());
  std::sort(names.begin(), names.end());
  for (const std::string& name : names) {
    const std::string path = dir_ + "/" + name;
    if (EndsWith(name, kStateTempSuffix)) {  // a write the last run did not finish
      std::filesystem::remove(path, ec);
      continue;
    }
    if (!EndsWith(name, kRecordSuffix)) continue;
    auto entry = std::make_unique<Entry>();
    Status s = [&]() -> Status {
      FERRY_ASSIGN_OR_RETURN(std::string text, ReadSmallFile(path, kMaxRecordBytes));
      nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
      if (j.is_discarded() || !j.is_object()) return Status::Corrupt("not a JSON object");
      auto version = j.find("version");
      if (version == j.end() || !version->is_number_integer() ||
          version->get<int64_t>() != kRecordVersion) {
        return Status::Corrupt("version: expected " + std::to_string(kRecordVersion));
      }
      auto record = j.find("export");
      if (record == j.end() || !record->is_object()) return Status::Corrupt("export: missing");
      FERRY_TRY(api::FromJson(record->dump(), &entry->info));
      if (name != entry->info.id + kRecordSuffix) {
        return Status::Corrupt("holds export \"" + entry->info.id + "\"");
      }
      return Status::Ok();
    }();
    if (!s.ok()) {
      Log("ignoring export file " + path + ": " + s.ToString());
      continue;
    }
    const ExportState was = entry->info.state;
    const bool resume = was != ExportState::kClosed && was != ExportState::kFailed;
    if (resume) entry->info.state = ExportState::kPreparing;
    Entry* raw = entry.get();
    {
      std::lock_guard<std::mutex> lock(mu_);
      exports_[raw->info.id] = std::move(entry);
    }
    if (resume) {
      Log("export " + raw->info.id + " was " + std::string(ExportStateName(was)) +
          " when the agent stopped: preparing it again" +
          (raw->info.was_running ? " (its VM ran before the export)" : ""));
      std::lock_guard<std::mutex> op(raw->op_mu);
      StartWorker(*raw);
    }
  }
  return Status::Ok();
}

Result<ExportInfo> ExportRegistry::Create(const ExportSpec& spec, bool* existed) {
  *existed = false;
  if (!api::IsValidJobId(spec.id)) {
    return Status::InvalidArgument("id: must be 1-128 characters of [A-Za-z0-9._-]");
  }
  const bool is_share = !spec.share.empty() || !spec.share_vm.empty();
  if (spec.vm.empty() == !is_share || (is_share && (spec.share.empty() || spec.share_vm.empty()))) {
    return Status::InvalidArgument("exactly one of vm or share + share_vm must be given");
  }
  if (is_share && ShareFolder(options_, spec.share) == nullptr) {
    return Status::NotFound("share " + spec.share + " is not configured on this agent");
  }
  if (!is_share && options_.host == nullptr) {
    return Status::Unsupported("this agent has no libvirt host: vm " + spec.vm +
                               " cannot be exported");
  }

  Entry* entry = nullptr;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = exports_.find(spec.id);
    if (it != exports_.end()) {
      Entry& e = *it->second;
      if (!(e.info.spec == spec)) {
        return Status::AlreadyExists("export " + spec.id +
                                     " already exists on this agent with a different spec");
      }
      *existed = true;
      if (e.info.state != ExportState::kClosed) return Snapshot(e);
      entry = &e;  // closed: open it again below
    }
  }
  if (entry != nullptr) {
    std::lock_guard<std::mutex> op(entry->op_mu);
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (entry->info.state != ExportState::kClosed) return Snapshot(*entry);
      entry->info.state = ExportState::kPreparing;
      entry->info.error = Status::Ok();
      entry->info.disks.clear();
      entry->info.bytes_served = 0;
    }
    Log("export " + spec.id + ": opened again");
    StartWorker(*entry);
    std::lock_guard<std::mutex> lock(mu_);
    return Snapshot(*entry);
  }

  auto fresh = std::make_unique<Entry>();
  fresh->info.id = spec.id;
  fresh->info.spec = spec;
  fresh->info.state = ExportState::kPreparing;
  fresh->info.created_at_ms = options_.now_ms();
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto [it, inserted] = exports_.emplace(spec.id, std::move(fresh));
    if (!inserted) {  // a concurrent Create of the same id won
      *existed = true;
      if (!(it->second->info.spec == spec)) {
        return Status::AlreadyExists("export " + spec.id +
                                     " already exists on this agent with a different spec");
      }
      return Snapshot(*it->second);
    }
    entry = it->second.get();
  }
  Status saved = Persist(*entry);
  if (!saved.ok()) {
    std::lock_guard<std::mutex> lock(mu_);
    exports_.erase(spec.id);
    return saved.WithContext("export " + spec.id + " not made");
  }
  Log("export " + spec.id + ": " +
      (is_share ? "share " + spec.share + " vm " + spec.share_vm : "vm " + spec.vm));
  std::lock_guard<std::mutex> op(entry->op_mu);
  bool closed_meanwhile = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    closed_meanwhile = entry->info.state == ExportState::kClosed;
  }
  if (!closed_meanwhile) StartWorker(*entry);  // (a Close may have come before this)
  std::lock_guard<std::mutex> lock(mu_);
  return Snapshot(*entry);
}

// REQUIRES: entry.op_mu held, no worker running.
void ExportRegistry::StartWorker(Entry& entry) {
  if (entry.worker.joinable()) entry.worker.join();
  entry.stop = false;
  entry.worker = std::thread([this, &entry] { RunWorker(&entry); });
}

void ExportRegistry::RunWorker(Entry* entry) {
  Status s = Prepare(*entry);
  if (s.ok()) {
    HashDisks(*entry);
    return;
  }
  if (entry->stop.load()) return;  // being closed: Close records the outcome
  std::unique_ptr<NbdServer> server;
  std::string id;
  {
    std::lock_guard<std::mutex> lock(mu_);
    server = std::move(entry->server);
    entry->info.state = ExportState::kFailed;
    entry->info.error = s;
    id = entry->info.id;
  }
  if (server != nullptr) server->Stop();
  Log("export " + id + " failed: " + s.ToString());
  (void)Persist(*entry);
}

Status ExportRegistry::Prepare(Entry& entry) {
  ExportSpec spec;
  {
    std::lock_guard<std::mutex> lock(mu_);
    spec = entry.info.spec;
  }
  sources::VmDescription vm;
  OpenOptions open;
  if (!spec.vm.empty()) {
    if (options_.host == nullptr) return Status::Unsupported("this agent has no libvirt host");
    FERRY_ASSIGN_OR_RETURN(vm, DescribeForExport(*options_.host, spec.vm));
    {
      std::lock_guard<std::mutex> lock(mu_);
      entry.info.vm = vm;
    }
    if (vm.running) FERRY_TRY(ShutDownVm(entry));
    // The VM's disks may have backing files anywhere on this host: its definition, not a
    // peer, said where they are.
    open.allow_outside_files = true;
  } else {
    const std::string* root = ShareFolder(options_, spec.share);
    if (root == nullptr) {
      return Status::NotFound("share " + spec.share + " is not configured on this agent");
    }
    FERRY_ASSIGN_OR_RETURN(sources::ShareVm share_vm,
                           sources::ReadShareVm(spec.share, *root, spec.share_vm));
    vm = std::move(share_vm.vm);
    open.allowed_dirs = {*root};  // a backing file may sit elsewhere in the share, not outside
    std::lock_guard<std::mutex> lock(mu_);
    entry.info.vm = vm;
  }
  if (vm.disks.empty()) {
    return Status::FailedPrecondition("vm " + vm.name + " has no disk that can be exported");
  }

  std::vector<std::shared_ptr<BlockSource>> opened;
  std::vector<ExportDisk> disks;
  for (sources::DiskDescription& d : vm.disks) {
    if (entry.stop.load()) return Status::Cancelled("export closed while opening its disks");
    Result<std::shared_ptr<BlockSource>> source = OpenDisk(d, open);
    if (!source.ok()) return std::move(source).status().WithContext(d.id + " (" + d.file + ")");
    const ImageInfo image = (*source)->info();
    ExportDisk disk;
    disk.id = d.id;
    disk.size = (*source)->size();
    disk.format = d.format.empty() ? image.format : d.format;
    disk.allocated_bytes = image.allocated_bytes;
    disk.hash_state = spec.hash_chunk_size > 0 ? HashState::kRunning : HashState::kNone;
    if (d.capacity_bytes == 0) d.capacity_bytes = disk.size;
    if (d.allocated_bytes == 0) d.allocated_bytes = image.allocated_bytes;
    disks.push_back(std::move(disk));
    opened.push_back(std::move(*source));
  }
  if (entry.stop.load()) return Status::Cancelled("export closed while opening its disks");

  NbdServerOptions nbd;
  nbd.tcp_address = AnyPortOf(options_.data_address);
  nbd.private_exports = true;  // the token in the name is the only key to an export
  nbd.log = [this, id = spec.id](std::string_view line) {
    Log("export " + id + ": nbd: " + std::string(line));
  };
  FERRY_ASSIGN_OR_RETURN(std::unique_ptr<NbdServer> server,
                         std::move(NbdServer::Listen(nbd)).WithContext("NBD server"));
  FERRY_ASSIGN_OR_RETURN(const std::string token, RandomToken());
  for (size_t i = 0; i < disks.size(); ++i) {
    const std::string name = token + "-" + disks[i].id;
    FERRY_TRY(server->Serve(opened[i], name, vm.name + " " + disks[i].id));
    disks[i].uri = server->uri(name);
  }
  FERRY_TRY(server->Start());
  const std::string address = server->address();
  entry.sources = std::move(opened);
  {
    std::lock_guard<std::mutex> lock(mu_);
    entry.server = std::move(server);
    entry.info.vm = vm;
    entry.info.disks = std::move(disks);
    entry.info.state = ExportState::kServing;
    entry.info.error = Status::Ok();
  }
  Log("export " + spec.id + ": serving " + std::to_string(entry.sources.size()) + " disk(s) of " +
      vm.name + " on " + address);
  (void)Persist(entry);
  return Status::Ok();
}

Status ExportRegistry::ShutDownVm(Entry& entry) {
  ExportSpec spec;
  {
    std::lock_guard<std::mutex> lock(mu_);
    spec = entry.info.spec;
  }
  const std::string& vm = spec.vm;
  if (!spec.shutdown) {
    return Status::FailedPrecondition("vm " + vm +
                                      " is running and the export may not shut it down "
                                      "(shutdown is off); it is still running");
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    entry.info.was_running = true;
    entry.info.state = ExportState::kShuttingDown;
  }
  // Recorded before anything is done to the VM: whoever closes the export later (this agent
  // after a restart too) must know to start it again.
  FERRY_TRY(Persist(entry).WithContext("vm " + vm + " left running: cannot record its state"));
  ExportHost& host = *options_.host;
  Log("export " + spec.id + ": shutting " + vm + " down (timeout " +
      Seconds(spec.shutdown_timeout_ms) + (spec.force_shutdown ? ", then power off)" : ")"));
  if (Status asked = host.Shutdown(vm); !asked.ok()) {
    // The guest may have gone down on its own between the check and the request (libvirt then
    // says the domain is not running): that is what was wanted.
    FERRY_ASSIGN_OR_RETURN(bool running, std::move(host.IsRunning(vm)).WithContext("vm " + vm));
    if (running) return asked.WithContext("vm " + vm + ": shutdown");
    Log("export " + spec.id + ": " + vm + " is shut off");
    return Status::Ok();
  }
  const Clock::time_point deadline =
      Clock::now() + std::chrono::milliseconds(spec.shutdown_timeout_ms);
  for (;;) {
    FERRY_ASSIGN_OR_RETURN(bool running, std::move(host.IsRunning(vm)).WithContext("vm " + vm));
    if (!running) {
      Log("export " + spec.id + ": " + vm + " is shut off");
      return Status::Ok();
    }
    const Clock::time_point now = Clock::now();
    if (now >= deadline) break;
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now);
    if (entry.SleepOrStop(std::min(kShutdownPoll, left + std::chrono::milliseconds(1)))) {
      return Status::Cancelled("export closed while " + vm + " was shutting down");
    }
  }
  if (!spec.force_shutdown) {
    return Status::FailedPrecondition(vm + " did not shut down within " +
                                      Seconds(spec.shutdown_timeout_ms) +
                                      " and force_shutdown is off; it is still running");
  }
  Log("export " + spec.id + ": " + vm + " did not shut down within " +
      Seconds(spec.shutdown_timeout_ms) + ": powering it off");
  FERRY_TRY_CTX(host.Destroy(vm), "vm " + vm + ": power off");
  FERRY_ASSIGN_OR_RETURN(bool still, std::move(host.IsRunning(vm)).WithContext("vm " + vm));
  if (still) return Status::Io("vm " + vm + " still runs after being powered off");
  return Status::Ok();
}

void ExportRegistry::HashDisks(Entry& entry) {
  uint64_t chunk = 0;
  ChunkHashAlgorithm algorithm = ChunkHashAlgorithm::kSha256;
  std::string id;
  {
    std::lock_guard<std::mutex> lock(mu_);
    chunk = entry.info.spec.hash_chunk_size;
    algorithm = entry.info.spec.hash_algorithm;
    id = entry.info.id;
  }
  if (chunk == 0) return;
  for (size_t i = 0; i < entry.sources.size(); ++i) {
    if (entry.stop.load()) return;
    HashChunksOptions o;
    o.algorithm = algorithm;
    o.workers = options_.hash_workers;
    o.cancel = &entry.stop;
    o.on_progress = [&](uint64_t done) {
      std::lock_guard<std::mutex> lock(mu_);
      ExportDisk& d = entry.info.disks[i];
      d.hashed_bytes = std::max(d.hashed_bytes, done);
    };
    Result<std::vector<ChunkDigest>> hashes = HashChunks(*entry.sources[i], chunk, o);
    std::string disk_id;
    {
      std::lock_guard<std::mutex> lock(mu_);
      ExportDisk& d = entry.info.disks[i];
      disk_id = d.id;
      if (hashes.ok()) {
        d.chunk_hashes = std::move(*hashes);
        d.hashed_bytes = d.size;
        d.hash_state = HashState::kDone;
      } else if (!entry.stop.load()) {
        d.hash_state = HashState::kFailed;
      }
    }
    if (!hashes.ok() && !entry.stop.load()) {
      Log("export " + id + ": hashing " + disk_id + " failed: " + hashes.status().ToString());
    }
  }
}

Status ExportRegistry::Persist(Entry& entry) {
  std::lock_guard<std::mutex> order(entry.persist_mu);
  ExportInfo record;
  {
    std::lock_guard<std::mutex> lock(mu_);
    record = Snapshot(entry);
  }
  // Hashes and URIs are of one serving run: a reloaded export is opened and hashed again.
  for (ExportDisk& d : record.disks) {
    d.uri.clear();
    d.chunk_hashes.clear();
    d.hash_state = HashState::kNone;
    d.hashed_bytes = 0;
  }
  const std::string text =
      "{\"version\":" + std::to_string(kRecordVersion) + ",\"export\":" + api::ToJson(record) + "}";
  Status s = WriteFileAtomic(dir_, record.id + kRecordSuffix, text);
  if (!s.ok()) Log("cannot save export " + record.id + ": " + s.ToString());
  return s;
}

ExportInfo ExportRegistry::Snapshot(const Entry& entry) const {
  ExportInfo info = entry.info;
  if (entry.server != nullptr) info.bytes_served = entry.server->payload_bytes_sent();
  return info;
}

Result<ExportInfo> ExportRegistry::Get(const std::string& id) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = exports_.find(id);
  if (it == exports_.end()) return Status::NotFound("export " + id + " not found on this agent");
  return Snapshot(*it->second);
}

std::vector<ExportInfo> ExportRegistry::List() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<ExportInfo> out;
  for (const auto& [id, e] : exports_) out.push_back(Snapshot(*e));
  return out;
}

Result<ExportInfo> ExportRegistry::Close(const std::string& id, bool restore_power) {
  Entry* entry = nullptr;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = exports_.find(id);
    if (it == exports_.end()) return Status::NotFound("export " + id + " not found on this agent");
    entry = it->second.get();
  }
  std::lock_guard<std::mutex> op(entry->op_mu);
  entry->RequestStop();
  if (entry->worker.joinable()) entry->worker.join();
  std::unique_ptr<NbdServer> server;
  {
    std::lock_guard<std::mutex> lock(mu_);
    server = std::move(entry->server);
  }
  if (server != nullptr) server->Stop();
  ExportSpec spec;
  bool was_running = false;
  bool newly_closed = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (server != nullptr) entry->info.bytes_served = server->payload_bytes_sent();
    newly_closed = entry->info.state != ExportState::kClosed;
    entry->info.state = ExportState::kClosed;
    for (ExportDisk& d : entry->info.disks) {
      d.uri.clear();
      if (d.hash_state == HashState::kRunning) d.hash_state = HashState::kNone;
    }
    spec = entry->info.spec;
    was_running = entry->info.was_running;
  }
  server.reset();
  entry->sources.clear();
  if (newly_closed) {
    (void)Persist(*entry);
    Log("export " + id + ": closed");
  }

  if (restore_power && was_running && !spec.vm.empty() && options_.host != nullptr) {
    ExportHost& host = *options_.host;
    const std::string what = "export " + id + " closed, but vm " + spec.vm;
    FERRY_ASSIGN_OR_RETURN(bool running,
                           std::move(host.IsRunning(spec.vm)).WithContext(what + " state"));
    if (!running) {
      Log("export " + id + ": starting " + spec.vm + " again (it ran before the export)");
      FERRY_TRY_CTX(host.Start(spec.vm), what + " could not be started again");
    }
  }
  std::lock_guard<std::mutex> lock(mu_);
  return Snapshot(*entry);
}

// ---- ExportHost over libvirt -------------------------------------------------------------

namespace {

using hypervisor::LibvirtHost;

// One libvirt connection, opened on first use; a call failing with kIo is retried once on a
// fresh connection (a restarted libvirtd is picked up again), as LibvirtHostOps does.
class LibvirtExportHost final : public ExportHost {
 public:
  explicit LibvirtExportHost(std::string uri) : uri_(std::move(uri)) {}

  Result<std::string> DomainXml(const std::string& vm) override {
    return Call([&](const LibvirtHost& h) { return h.DomainXml(vm, /*inactive=*/true); });
  }
  Result<bool> IsRunning(const std::string& vm) override {
    return Call([&](const LibvirtHost& h) -> Result<bool> {
      FERRY_ASSIGN_OR_RETURN(hypervisor::VmState state, h.State(vm));
      using hypervisor::VmState;
      return state == VmState::kRunning || state == VmState::kBlocked ||
             state == VmState::kPaused || state == VmState::kShutdown ||
             state == VmState::kPmSuspended;
    });
  }
  Status Shutdown(const std::string& vm) override {
    return Do([&](auto& h) { return h.Shutdown(vm); });
  }
  Status Destroy(const std::string& vm) override {
    return Do([&](auto& h) { return h.Destroy(vm); });
  }
  Status Start(const std::string& vm) override {
    return Do([&](auto& h) { return h.Start(vm); });
  }

  Result<hypervisor::VmInfo> GetVm(const std::string& vm) override {
    return Call([&](const LibvirtHost& h) { return h.GetVm(vm); });
  }

 private:
  Result<std::shared_ptr<LibvirtHost>> Connection() {
    std::lock_guard<std::mutex> lock(mu_);
    if (conn_ == nullptr) {
      Result<std::unique_ptr<LibvirtHost>> c = LibvirtHost::Connect(uri_);
      if (!c.ok()) return std::move(c).status();
      conn_ = std::move(*c);
    }
    return conn_;
  }

  void Drop(const std::shared_ptr<LibvirtHost>& broken) {
    std::lock_guard<std::mutex> lock(mu_);
    if (conn_ == broken) conn_.reset();
  }

  template <typename F>
  auto Call(F f) -> decltype(f(std::declval<const LibvirtHost&>())) {
    constexpr int kAttempts = 2;
    for (int attempt = 1;; ++attempt) {
      Result<std::shared_ptr<LibvirtHost>> c = Connection();
      if (!c.ok()) return std::move(c).status();
      auto r = f(**c);
      if (r.ok() || r.status().code() != ErrorCode::kIo || attempt == kAttempts) return r;
      Drop(*c);
    }
  }

  template <typename F>
  Status Do(F f) {
    constexpr int kAttempts = 2;
    for (int attempt = 1;; ++attempt) {
      Result<std::shared_ptr<LibvirtHost>> c = Connection();
      if (!c.ok()) return std::move(c).status();
      Status s = f(**c);
      if (s.ok() || s.code() != ErrorCode::kIo || attempt == kAttempts) return s;
      Drop(*c);
    }
  }

  const std::string uri_;
  std::mutex mu_;
  std::shared_ptr<LibvirtHost> conn_;  // GUARDED_BY(mu_)
};

}  // namespace

std::unique_ptr<ExportHost> NewLibvirtExportHost(std::string libvirt_uri) {
  return std::make_unique<LibvirtExportHost>(std::move(libvirt_uri));
}

}  // namespace ferry::agent
