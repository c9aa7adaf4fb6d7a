// ExportRegistry against real peers (qemu-img, nbdinfo, nbdcopy) and real images made by
// qemu-img: share VMs served over NBD identical to their files and hashed like HashChunks,
// reload after a restart, close and reopen; libvirt VMs through a fake ExportHost: graceful
// shutdown, timeout then power-off, timeout without force (left running), restore_power.
#include "agent/export_registry.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <mutex>
#include <thread>

#include "disk/engine/chunk_hash.h"
#include "disk/image.h"
#include "test_util.h"

namespace ferry::agent {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

using testing::ShellQuote;

constexpr uint64_t kDiskSize = (24ull << 20) + (192 << 10);  // 6 chunks and a partial one

template <typename Pred>
bool WaitFor(Pred pred, std::chrono::milliseconds limit = 30s) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(10ms);
  }
  return pred();
}

void Sh(const std::string& command) {
  testing::CommandResult r = testing::Run(command);
  ASSERT_EQ(r.exit_code, 0) << command << "\n" << r.output;
}

// A libvirt host with one VM whose power state the test steers.
class FakeExportHost final : public ExportHost {
 public:
  Result<std::string> DomainXml(const std::string& vm) override {
    std::lock_guard<std::mutex> lock(mu);
    if (vm != "g1") return Status::NotFound("vm " + vm + " not found");
    return xml;
  }
  Result<bool> IsRunning(const std::string& vm) override {
    std::lock_guard<std::mutex> lock(mu);
    if (vm != "g1") return Status::NotFound("vm " + vm + " not found");
    if (running && shutdown_requested && polls_until_off >= 0) {
      if (polls_until_off == 0) running = false;
      --polls_until_off;
    }
    return running;
  }
  Status Shutdown(const std::string&) override {
    std::function<void()> hook;
    {
      std::lock_guard<std::mutex> lock(mu);
      ++shutdowns;
      shutdown_requested = true;
      hook = on_shutdown;
    }
    if (hook) hook();
    return Status::Ok();
  }
  Status Destroy(const std::string&) override {
    std::lock_guard<std::mutex> lock(mu);
    ++destroys;
    running = false;
    return Status::Ok();
  }
  Status Start(const std::string&) override {
    std::lock_guard<std::mutex> lock(mu);
    ++starts;
    running = true;
    shutdown_requested = false;
    return Status::Ok();
  }
  Result<hypervisor::VmInfo> GetVm(const std::string& vm) override {
    std::lock_guard<std::mutex> lock(mu);
    if (vm != "g1") return Status::NotFound("vm " + vm + " not found");
    hypervisor::VmInfo info;
    info.name = "g1";
    info.state = running ? hypervisor::VmState::kRunning : hypervisor::VmState::kShutoff;
    info.disks.push_back({.target = "vda",
                          .device = "disk",
                          .type = "file",
                          .source_path = pool_dir + "/g1.qcow2",
                          .pool = "local"});
    return info;
  }

  std::mutex mu;
  std::string xml;
  std::string pool_dir;
  bool running = false;
  bool shutdown_requested = false;
  // After Shutdown: IsRunning answers true this many more times, then false; -1: the guest
  // ignores ACPI.
  int polls_until_off = 2;
  int shutdowns = 0, destroys = 0, starts = 0;
  std::function<void()> on_shutdown;
};

std::string DomainXml(const std::string& disk, const std::string& extra_disk = "") {
  return "<domain type='qemu'><name>g1</name><uuid>6b1c0a4e-8a4e-4c53-9e51-3f1e2b7c9d10</uuid>"
         "<memory unit='MiB'>128</memory><vcpu>1</vcpu>"
         "<os><type arch='x86_64' machine='pc'>hvm</type></os><devices>"
         "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
         "<source file='" +
         disk + "'/><target dev='vda' bus='virtio'/></disk>" + extra_disk +
         "<interface type='network'><mac address='52:54:00:00:00:01'/>"
         "<source network='lab'/><model type='virtio'/></interface></devices></domain>";
}

class ExportRegistryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    share_ = dir_.Join("share");
    state_ = dir_.Join("state");
    pool_ = dir_.Join("pool");
    fs::create_directories(share_);
    fs::create_directories(pool_);
    const std::string raw = dir_.Join("pattern.raw");
    testing::PatternSpec spec;
    spec.size = kDiskSize;
    spec.seed = 3;
    ASSERT_TRUE(testing::WritePatternRaw(raw, spec));
    Sh("qemu-img convert -O qcow2 " + ShellQuote(raw) + " " + ShellQuote(share_ + "/web1.qcow2"));
    Sh("qemu-img convert -O vmdk " + ShellQuote(raw) + " " + ShellQuote(share_ + "/db1.vmdk"));
    Sh("qemu-img convert -O qcow2 " + ShellQuote(raw) + " " + ShellQuote(pool_ + "/g1.qcow2"));
    host_xml_ = DomainXml(pool_ + "/g1.qcow2");
  }

  // A registry over the share and a fresh fake host (kept in host_).
  std::unique_ptr<ExportRegistry> MakeRegistry() {
    ExportRegistryOptions o;
    o.state_dir = state_;
    o.data_address = "127.0.0.1";
    o.shares = {{"exports", share_}};
    auto host = std::make_unique<FakeExportHost>();
    host->xml = host_xml_;
    host->pool_dir = pool_;
    host->running = vm_running_;
    host_ = host.get();
    o.host = std::move(host);
    o.log = [this](const std::string& line) {
      std::lock_guard<std::mutex> lock(log_mu_);
      log_.push_back(line);
    };
    auto registry = std::make_unique<ExportRegistry>(std::move(o));
    Status s = registry->Start();
    EXPECT_TRUE(s.ok()) << s.ToString();
    return registry;
  }

  ExportInfo WaitState(ExportRegistry& r, const std::string& id, ExportState want) {
    ExportInfo last;
    EXPECT_TRUE(WaitFor([&] {
      Result<ExportInfo> e = r.Get(id);
      if (!e.ok()) return false;
      last = *e;
      return e->state == want;
    })) << "export "
        << id << " is " << ExportStateName(last.state) << ", not " << ExportStateName(want) << ": "
        << last.error.ToString();
    return last;
  }

  ExportInfo WaitHashed(ExportRegistry& r, const std::string& id) {
    ExportInfo last;
    EXPECT_TRUE(WaitFor([&] {
      Result<ExportInfo> e = r.Get(id);
      if (!e.ok() || e->disks.empty()) return false;
      last = *e;
      for (const ExportDisk& d : e->disks) {
        if (d.hash_state != HashState::kDone) return false;
      }
      return true;
    })) << "export "
        << id << " not hashed";
    return last;
  }

  static std::vector<Sha256Digest> FileHashes(const std::string& path) {
    Result<std::unique_ptr<BlockSource>> src = OpenImage(path);
    EXPECT_TRUE(src.ok()) << src.status().ToString();
    if (!src.ok()) return {};
    Result<std::vector<Sha256Digest>> h = HashChunks(**src, 4 << 20);
    EXPECT_TRUE(h.ok());
    return h.ok() ? *h : std::vector<Sha256Digest>{};
  }

  static int CompareNbd(const std::string& uri, const std::string& file, const std::string& fmt) {
    testing::CommandResult r = testing::Run("qemu-img compare -f raw -F " + fmt + " " +
                                            ShellQuote(uri) + " " + ShellQuote(file) + " 2>&1");
    if (r.exit_code != 0) ADD_FAILURE() << r.output;
    return r.exit_code;
  }

  bool LogHas(const std::string& needle) {
    std::lock_guard<std::mutex> lock(log_mu_);
    for (const std::string& l : log_) {
      if (l.find(needle) != std::string::npos) return true;
    }
    return false;
  }

  static ExportSpec ShareSpec(const std::string& id, const std::string& vm) {
    ExportSpec s;
    s.id = id;
    s.share = "exports";
    s.share_vm = vm;
    return s;
  }
  static ExportSpec VmSpec(const std::string& id, int64_t timeout_ms, bool force) {
    ExportSpec s;
    s.id = id;
    s.vm = "g1";
    s.shutdown_timeout_ms = timeout_ms;
    s.force_shutdown = force;
    return s;
  }

  std::string RecordText(const std::string& id) {
    const std::vector<uint8_t> b = testing::ReadFileBytes(state_ + "/exports/" + id + ".json");
    return std::string(b.begin(), b.end());
  }

  testing::TempDir dir_;
  std::string share_, state_, pool_, host_xml_;
  bool vm_running_ = true;
  FakeExportHost* host_ = nullptr;
  std::mutex log_mu_;
  std::vector<std::string> log_;
};

TEST_F(ExportRegistryTest, ShareVmsAreServedIdenticalToTheirFilesAndHashedLikeHashChunks) {
  auto registry = MakeRegistry();
  struct Case {
    std::string vm, format;
  };
  for (const Case& c : {Case{"web1.qcow2", "qcow2"}, Case{"db1.vmdk", "vmdk"}}) {
    SCOPED_TRACE(c.vm);
    const std::string id = "m-" + c.format;
    const std::string file = share_ + "/" + c.vm;
    struct stat before {};
    ASSERT_EQ(::stat(file.c_str(), &before), 0);
    bool existed = true;
    Result<ExportInfo> made = registry->Create(ShareSpec(id, c.vm), &existed);
    ASSERT_TRUE(made.ok()) << made.status().ToString();
    EXPECT_FALSE(existed);
    EXPECT_EQ(made->id, id);

    ExportInfo e = WaitState(*registry, id, ExportState::kServing);
    ASSERT_EQ(e.disks.size(), 1u);
    const ExportDisk& d = e.disks[0];
    EXPECT_EQ(d.id, "disk0");
    EXPECT_EQ(d.size, kDiskSize);
    EXPECT_EQ(d.format, c.format);
    EXPECT_FALSE(e.was_running);
    EXPECT_EQ(e.vm.disks.size(), 1u);
    // nbd://127.0.0.1:PORT/<32 hex digits>-disk0
    ASSERT_EQ(d.uri.rfind("nbd://127.0.0.1:", 0), 0u) << d.uri;
    const std::string name = d.uri.substr(d.uri.rfind('/') + 1);
    ASSERT_EQ(name.size(), 32u + 6u) << name;
    EXPECT_EQ(name.substr(32), "-disk0");
    EXPECT_EQ(name.find_first_not_of("0123456789abcdef"), 32u);

    EXPECT_EQ(CompareNbd(d.uri, file, c.format), 0);
    const std::string copy = dir_.Join(id + ".raw");
    Sh("nbdcopy " + ShellQuote(d.uri) + " " + ShellQuote(copy));
    EXPECT_EQ(testing::QemuImgCompare(copy, file, "raw", c.format), 0);
    testing::CommandResult map = testing::Run("nbdinfo --map " + ShellQuote(d.uri));
    EXPECT_EQ(map.exit_code, 0) << map.output;
    EXPECT_NE(map.output.find("data"), std::string::npos) << map.output;

    ExportInfo hashed = WaitHashed(*registry, id);
    EXPECT_EQ(hashed.disks[0].hashed_bytes, kDiskSize);
    EXPECT_EQ(hashed.disks[0].chunk_hashes, FileHashes(file));
    EXPECT_EQ(hashed.disks[0].chunk_hashes.size(), 7u);
    EXPECT_GT(hashed.bytes_served, 0u);
    EXPECT_LE(hashed.bytes_served, 3 * kDiskSize);

    // The token is the key: the default export and the list are refused.
    const std::string base = d.uri.substr(0, d.uri.rfind('/'));
    EXPECT_NE(testing::Run("nbdinfo --size " + ShellQuote(base) + " 2>&1").exit_code, 0);
    testing::CommandResult list = testing::Run("nbdinfo --list " + ShellQuote(base) + " 2>&1");
    EXPECT_EQ(list.output.find(name), std::string::npos) << list.output;

    struct stat after {};
    ASSERT_EQ(::stat(file.c_str(), &after), 0);
    EXPECT_EQ(after.st_mtim.tv_sec, before.st_mtim.tv_sec);
    EXPECT_EQ(after.st_mtim.tv_nsec, before.st_mtim.tv_nsec);
    EXPECT_EQ(after.st_size, before.st_size);
  }
}

TEST_F(ExportRegistryTest, SameSpecIsIdempotentOtherSpecConflictsUnknownIdsAreNotFound) {
  auto registry = MakeRegistry();
  bool existed = false;
  ASSERT_TRUE(registry->Create(ShareSpec("m1", "web1.qcow2"), &existed).ok());
  EXPECT_FALSE(existed);
  Result<ExportInfo> again = registry->Create(ShareSpec("m1", "web1.qcow2"), &existed);
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(existed);
  ExportSpec other = ShareSpec("m1", "db1.vmdk");
  EXPECT_EQ(registry->Create(other, &existed).status().code(), ErrorCode::kAlreadyExists);
  other = ShareSpec("m1", "web1.qcow2");
  other.hash_chunk_size = 1 << 20;
  EXPECT_EQ(registry->Create(other, &existed).status().code(), ErrorCode::kAlreadyExists);

  EXPECT_EQ(registry->Get("m9").status().code(), ErrorCode::kNotFound);
  EXPECT_EQ(registry->Close("m9", true).status().code(), ErrorCode::kNotFound);
  ExportSpec no_share = ShareSpec("m2", "web1.qcow2");
  no_share.share = "nowhere";
  EXPECT_EQ(registry->Create(no_share, &existed).status().code(), ErrorCode::kNotFound);
  ExportSpec both = ShareSpec("m3", "web1.qcow2");
  both.vm = "g1";
  EXPECT_EQ(registry->Create(both, &existed).status().code(), ErrorCode::kInvalidArgument);
  ExportSpec bad_id = ShareSpec("../m", "web1.qcow2");
  EXPECT_EQ(registry->Create(bad_id, &existed).status().code(), ErrorCode::kInvalidArgument);

  // A VM the share does not hold: the export fails, naming it.
  ASSERT_TRUE(registry->Create(ShareSpec("m4", "nothing.qcow2"), &existed).ok());
  ExportInfo failed = WaitState(*registry, "m4", ExportState::kFailed);
  EXPECT_EQ(failed.error.code(), ErrorCode::kNotFound) << failed.error.ToString();
  EXPECT_NE(failed.error.message().find("nothing.qcow2"), std::string::npos);

  EXPECT_EQ(registry->List().size(), 2u);
}

TEST_F(ExportRegistryTest, ReloadAfterARestartServesAgainOnANewPort) {
  std::string old_uri;
  {
    auto registry = MakeRegistry();
    bool existed = false;
    ASSERT_TRUE(registry->Create(ShareSpec("m1", "web1.qcow2"), &existed).ok());
    ExportInfo e = WaitState(*registry, "m1", ExportState::kServing);
    old_uri = e.disks[0].uri;
    ASSERT_TRUE(registry->Create(ShareSpec("m2", "db1.vmdk"), &existed).ok());
    WaitState(*registry, "m2", ExportState::kServing);
    ASSERT_TRUE(registry->Close("m2", false).ok());
  }  // the agent stops without closing m1
  EXPECT_NE(testing::Run("nbdinfo --size " + ShellQuote(old_uri) + " 2>&1").exit_code, 0);

  auto registry = MakeRegistry();
  ExportInfo e = WaitState(*registry, "m1", ExportState::kServing);
  ASSERT_EQ(e.disks.size(), 1u);
  EXPECT_NE(e.disks[0].uri, old_uri);
  EXPECT_EQ(CompareNbd(e.disks[0].uri, share_ + "/web1.qcow2", "qcow2"), 0);
  EXPECT_EQ(WaitHashed(*registry, "m1").disks[0].chunk_hashes, FileHashes(share_ + "/web1.qcow2"));
  EXPECT_TRUE(LogHas("export m1 was serving when the agent stopped")) << "no reload log line";
  // A closed export stays closed (and answers GET).
  Result<ExportInfo> closed = registry->Get("m2");
  ASSERT_TRUE(closed.ok());
  EXPECT_EQ(closed->state, ExportState::kClosed);
  EXPECT_EQ(closed->spec, ShareSpec("m2", "db1.vmdk"));
}

TEST_F(ExportRegistryTest, CloseStopsServingAndTheSameSpecOpensItAgain) {
  auto registry = MakeRegistry();
  bool existed = false;
  ASSERT_TRUE(registry->Create(ShareSpec("m1", "web1.qcow2"), &existed).ok());
  ExportInfo e = WaitState(*registry, "m1", ExportState::kServing);
  const std::string uri = e.disks[0].uri;
  Result<ExportInfo> closed = registry->Close("m1", true);
  ASSERT_TRUE(closed.ok()) << closed.status().ToString();
  EXPECT_EQ(closed->state, ExportState::kClosed);
  EXPECT_NE(testing::Run("nbdinfo --size " + ShellQuote(uri) + " 2>&1").exit_code, 0);
  EXPECT_NE(RecordText("m1").find("\"state\":\"closed\""), std::string::npos) << RecordText("m1");
  // Closing again is harmless.
  ASSERT_TRUE(registry->Close("m1", false).ok());

  Result<ExportInfo> reopened = registry->Create(ShareSpec("m1", "web1.qcow2"), &existed);
  ASSERT_TRUE(reopened.ok());
  EXPECT_TRUE(existed);
  ExportInfo again = WaitState(*registry, "m1", ExportState::kServing);
  EXPECT_NE(again.disks[0].uri, uri);
  EXPECT_EQ(CompareNbd(again.disks[0].uri, share_ + "/web1.qcow2", "qcow2"), 0);
}

TEST_F(ExportRegistryTest, RunningVmIsShutDownServedAndStartedAgainWithRestorePower) {
  auto registry = MakeRegistry();
  host_->polls_until_off = 2;
  // was_running must be on disk before the VM is asked to shut down.
  std::string record_at_shutdown;
  host_->on_shutdown = [&] { record_at_shutdown = RecordText("v1"); };
  bool existed = false;
  ASSERT_TRUE(registry->Create(VmSpec("v1", 60000, false), &existed).ok());
  ExportInfo e = WaitState(*registry, "v1", ExportState::kServing);
  EXPECT_NE(record_at_shutdown.find("\"was_running\":true"), std::string::npos)
      << record_at_shutdown;
  EXPECT_TRUE(e.was_running);
  EXPECT_EQ(e.vm.name, "g1");
  ASSERT_EQ(e.disks.size(), 1u);
  EXPECT_EQ(e.vm.disks[0].datastore, "local");
  EXPECT_EQ(e.vm.disks[0].file, pool_ + "/g1.qcow2");
  {
    std::lock_guard<std::mutex> lock(host_->mu);
    EXPECT_EQ(host_->shutdowns, 1);
    EXPECT_EQ(host_->destroys, 0);
    EXPECT_FALSE(host_->running);
  }
  EXPECT_EQ(CompareNbd(e.disks[0].uri, pool_ + "/g1.qcow2", "qcow2"), 0);

  Result<ExportInfo> closed = registry->Close("v1", /*restore_power=*/true);
  ASSERT_TRUE(closed.ok()) << closed.status().ToString();
  std::lock_guard<std::mutex> lock(host_->mu);
  EXPECT_EQ(host_->starts, 1);
  EXPECT_TRUE(host_->running);
}

TEST_F(ExportRegistryTest, AVmIgnoringAcpiIsPoweredOffAfterTheTimeoutWhenForced) {
  auto registry = MakeRegistry();
  host_->polls_until_off = -1;
  bool existed = false;
  const auto start = std::chrono::steady_clock::now();
  ASSERT_TRUE(registry->Create(VmSpec("v1", 1200, true), &existed).ok());
  ExportInfo e = WaitState(*registry, "v1", ExportState::kServing);
  EXPECT_GE(std::chrono::steady_clock::now() - start, 1200ms);
  EXPECT_TRUE(e.was_running);
  {
    std::lock_guard<std::mutex> lock(host_->mu);
    EXPECT_EQ(host_->shutdowns, 1);
    EXPECT_EQ(host_->destroys, 1);
  }
  // Without restore_power the VM stays off.
  ASSERT_TRUE(registry->Close("v1", false).ok());
  std::lock_guard<std::mutex> lock(host_->mu);
  EXPECT_EQ(host_->starts, 0);
  EXPECT_FALSE(host_->running);
}

TEST_F(ExportRegistryTest, ATimeoutWithoutForceFailsAndLeavesTheVmRunning) {
  auto registry = MakeRegistry();
  host_->polls_until_off = -1;
  bool existed = false;
  ASSERT_TRUE(registry->Create(VmSpec("v1", 1000, false), &existed).ok());
  ExportInfo e = WaitState(*registry, "v1", ExportState::kFailed);
  EXPECT_EQ(e.error.code(), ErrorCode::kFailedPrecondition);
  EXPECT_EQ(e.error.message(),
            "g1 did not shut down within 1 s and force_shutdown is off; it is still running");
  EXPECT_TRUE(e.disks.empty());
  {
    std::lock_guard<std::mutex> lock(host_->mu);
    EXPECT_EQ(host_->destroys, 0);
    EXPECT_TRUE(host_->running);
  }
  // restore_power on a VM that still runs starts nothing.
  ASSERT_TRUE(registry->Close("v1", true).ok());
  std::lock_guard<std::mutex> lock(host_->mu);
  EXPECT_EQ(host_->starts, 0);
}

TEST_F(ExportRegistryTest, ShutdownOffAndNonFileDisksAreRefusedWithoutTouchingTheVm) {
  auto registry = MakeRegistry();
  bool existed = false;
  ExportSpec no_shutdown = VmSpec("v1", 1000, true);
  no_shutdown.shutdown = false;
  ASSERT_TRUE(registry->Create(no_shutdown, &existed).ok());
  ExportInfo e = WaitState(*registry, "v1", ExportState::kFailed);
  EXPECT_EQ(e.error.code(), ErrorCode::kFailedPrecondition) << e.error.ToString();

  {
    std::lock_guard<std::mutex> lock(host_->mu);
    host_->xml = DomainXml(pool_ + "/g1.qcow2",
                           "<disk type='network' device='disk'><driver name='qemu' type='raw'/>"
                           "<source protocol='nbd' name='x'><host name='127.0.0.1' "
                           "port='10809'/></source><target dev='vdb' bus='virtio'/></disk>");
  }
  ASSERT_TRUE(registry->Create(VmSpec("v2", 1000, true), &existed).ok());
  e = WaitState(*registry, "v2", ExportState::kFailed);
  EXPECT_EQ(e.error.code(), ErrorCode::kUnsupported) << e.error.ToString();
  EXPECT_NE(e.error.message().find("vdb"), std::string::npos) << e.error.message();
  std::lock_guard<std::mutex> lock(host_->mu);
  EXPECT_EQ(host_->shutdowns, 0);
  EXPECT_TRUE(host_->running);
}

TEST_F(ExportRegistryTest, AVolumeDiskIsExportedThroughItsResolvedFile) {
  // The lab's guests (and virt-manager's) name pool + volume; the inventory resolves the file.
  vm_running_ = false;
  host_xml_ =
      "<domain type='qemu'><name>g1</name><memory unit='MiB'>128</memory><vcpu>1</vcpu>"
      "<os><type arch='x86_64' machine='pc'>hvm</type></os><devices>"
      "<disk type='volume' device='disk'><driver name='qemu' type='qcow2'/>"
      "<source pool='local' volume='g1.qcow2'/><target dev='vda' bus='virtio'/></disk>"
      "</devices></domain>";
  auto registry = MakeRegistry();
  bool existed = false;
  ASSERT_TRUE(registry->Create(VmSpec("v1", 1000, true), &existed).ok());
  ExportInfo e = WaitState(*registry, "v1", ExportState::kServing);
  ASSERT_EQ(e.vm.disks.size(), 1u);
  EXPECT_EQ(e.vm.disks[0].file, pool_ + "/g1.qcow2");
  EXPECT_EQ(e.vm.disks[0].datastore, "local");
  EXPECT_EQ(CompareNbd(e.disks[0].uri, pool_ + "/g1.qcow2", "qcow2"), 0);
}

TEST_F(ExportRegistryTest, AShutOffVmIsServedAndNotStartedByRestorePower) {
  vm_running_ = false;
  auto registry = MakeRegistry();
  bool existed = false;
  ASSERT_TRUE(registry->Create(VmSpec("v1", 1000, true), &existed).ok());
  ExportInfo e = WaitState(*registry, "v1", ExportState::kServing);
  EXPECT_FALSE(e.was_running);
  ASSERT_TRUE(registry->Close("v1", true).ok());
  std::lock_guard<std::mutex> lock(host_->mu);
  EXPECT_EQ(host_->shutdowns, 0);
  EXPECT_EQ(host_->starts, 0);
}

TEST_F(ExportRegistryTest, WasRunningSurvivesARestartAndRestorePowerStillStartsTheVm) {
  {
    auto registry = MakeRegistry();
    host_->polls_until_off = 0;
    bool existed = false;
    ASSERT_TRUE(registry->Create(VmSpec("v1", 5000, true), &existed).ok());
    WaitState(*registry, "v1", ExportState::kServing);
  }
  vm_running_ = false;  // the new agent finds it shut off
  auto registry = MakeRegistry();
  ExportInfo e = WaitState(*registry, "v1", ExportState::kServing);
  EXPECT_TRUE(e.was_running);
  EXPECT_EQ(CompareNbd(e.disks[0].uri, pool_ + "/g1.qcow2", "qcow2"), 0);
  {
    std::lock_guard<std::mutex> lock(host_->mu);
    EXPECT_EQ(host_->shutdowns, 0);  // already off: nothing to shut down
  }
  ASSERT_TRUE(registry->Close("v1", true).ok());
  std::lock_guard<std::mutex> lock(host_->mu);
  EXPECT_EQ(host_->starts, 1);
  EXPECT_TRUE(host_->running);
}

TEST_F(ExportRegistryTest, CloseDuringAShutdownStopsWaitingAtOnce) {
  auto registry = MakeRegistry();
  host_->polls_until_off = -1;
  bool existed = false;
  ASSERT_TRUE(registry->Create(VmSpec("v1", 60000, true), &existed).ok());
  WaitState(*registry, "v1", ExportState::kShuttingDown);
  const auto start = std::chrono::steady_clock::now();
  Result<ExportInfo> closed = registry->Close("v1", true);
  ASSERT_TRUE(closed.ok()) << closed.status().ToString();
  EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);
  EXPECT_EQ(closed->state, ExportState::kClosed);
  EXPECT_TRUE(closed->was_running);
  std::lock_guard<std::mutex> lock(host_->mu);
  EXPECT_EQ(host_->destroys, 0);  // the forced power-off never came
  EXPECT_EQ(host_->starts, 0);    // it still runs: nothing to restore
  EXPECT_TRUE(host_->running);
}

}  // namespace
}  // namespace ferry::agent
