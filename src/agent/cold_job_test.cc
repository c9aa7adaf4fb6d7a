// RunColdJob from a share to a share, no libvirt: a real source AgentService (in-process, over
// loopback HTTP and NBD) exports a qcow2 made by qemu-img; the job stages it as VHDX/VHD and
// vm.json. Judged with qemu-img check/compare and VmDescriptionFromJson. Also: a source lost
// mid-copy (asked again, the copy resumes), a second attempt resuming from the journal, cancel,
// and a corrupted copy failing verification.
#include "agent/cold_job.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "agent/agent_service.h"
#include "agent/export_registry.h"
#include "api/agent_client.h"
#include "sources/vm_description.h"
#include "test_util.h"
#include "transfer/convert_job.h"

namespace ferry::agent {
namespace {

namespace fs = std::filesystem;

using ferry::testing::ShellQuote;
using ferry::testing::TempDir;
using namespace std::chrono_literals;

constexpr char kToken[] = "cold-token";
constexpr uint64_t kMiB = 1 << 20;
constexpr uint64_t kDiskSize = 64 * kMiB;
constexpr uint64_t kCheckpoint = 4 * kMiB;
constexpr int kWorkers = 2;
// Chunks in flight in the copy engine (CopyOptions::window default: 2 x workers) of 4 MiB.
constexpr uint64_t kCopyWindow = 2 * kWorkers * 4 * kMiB;

class FakeContext : public JobContext {
 public:
  bool cancelled() const override { return cancel.load(); }
  void Progress(const JobProgress& p) override {
    std::lock_guard<std::mutex> lock(mu);
    last = p;
    ++progress_calls;
    if (on_progress) on_progress(p);
  }
  void Event(std::string_view kind, std::string_view message) override {
    std::lock_guard<std::mutex> lock(mu);
    events.push_back(std::string(kind) + ": " + std::string(message));
  }
  bool proceed_requested() const override { return proceed.load(); }

  std::string Events() {
    std::lock_guard<std::mutex> lock(mu);
    std::string all;
    for (const std::string& e : events) all += e + "\n";
    return all;
  }

  std::atomic<bool> cancel{false};
  std::atomic<bool> proceed{false};
  std::mutex mu;
  JobProgress last;
  int progress_calls = 0;
  std::vector<std::string> events;
  std::function<void(const JobProgress&)> on_progress;  // called with mu held
};

// The source host: an AgentService serving one share, restartable on the same port.
class SourceAgent {
 public:
  SourceAgent(std::string state_dir, std::string share_dir)
      : state_dir_(std::move(state_dir)), share_dir_(std::move(share_dir)) {}

  Status Start(int port = 0) {
    AgentConfig config;
    config.listen = "127.0.0.1:" + std::to_string(port);
    config.token = kToken;
    config.libvirt_uri = "test:///default";
    config.migration_uri = "tcp://127.0.0.1";
    config.host_id = "host1";
    config.state_dir = state_dir_;
    config.shares = {{"exports", share_dir_}};
    config.data_address = "127.0.0.1";
    ExportRegistryOptions eo;
    eo.state_dir = state_dir_;
    eo.data_address = "127.0.0.1";
    eo.shares = config.shares;
    eo.log = [](const std::string&) {};
    AgentServiceOptions o;
    o.config = config;
    o.exports = std::make_unique<ExportRegistry>(std::move(eo));
    o.log = [](const std::string&) {};
    service_ = std::make_unique<AgentService>(std::move(o));
    FERRY_TRY(service_->Start());
    port_ = service_->port();
    return Status::Ok();
  }
  void Stop() { service_.reset(); }
  int port() const { return port_; }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }

 private:
  std::string state_dir_, share_dir_;
  std::unique_ptr<AgentService> service_;
  int port_ = 0;
};

class ColdJobTest : public ::testing::Test {
 protected:
  void SetUp() override {
    src_share_ = tmp_.Join("src-share");
    dst_share_ = tmp_.Join("dst-share");
    fs::create_directories(src_share_);
    fs::create_directories(dst_share_);
    // A disk with data spread over it (so a copy can be stopped part way) and holes.
    const std::string raw = tmp_.Join("pattern.raw");
    ferry::testing::PatternSpec p;
    p.size = kDiskSize;
    p.data_fraction = 0.6;
    ASSERT_TRUE(ferry::testing::WritePatternRaw(raw, p));
    source_disk_ = src_share_ + "/web1.qcow2";
    auto made = ferry::testing::Run("qemu-img convert -f raw -O qcow2 " + ShellQuote(raw) + " " +
                                    ShellQuote(source_disk_));
    ASSERT_EQ(made.exit_code, 0) << made.output;
    source_ = std::make_unique<SourceAgent>(tmp_.Join("src-state"), src_share_);
    ASSERT_TRUE(source_->Start().ok());
    env_.state_dir = tmp_.Join("dst-state");
    env_.shares = {{"staging", dst_share_}};
    env_.copy_workers = kWorkers;
  }

  MigrationJobSpec Spec(const std::string& format = "vhdx") {
    MigrationJobSpec s;
    s.id = "m-1";
    s.kind = MigrationKind::kCold;
    s.vm = "web1";
    ColdJobSpec& c = s.cold;
    c.source = {"host1", source_->url(), kToken};
    c.export_spec.id = "m-1";
    c.export_spec.share = "exports";
    c.export_spec.share_vm = "web1.qcow2";
    c.target_type = plan::EndpointType::kShare;
    c.target_share = "staging";
    c.vm.name = "web1";
    c.vm.vcpus = 2;
    c.vm.memory_bytes = 512 * kMiB;
    c.vm.machine = "q35";
    c.vm.firmware = "uefi";
    plan::TargetDisk d;
    d.source_id = "disk0";
    d.file_name = "web1-disk0." + format;
    d.format = format;
    d.subformat = format == "vhd" ? "fixed" : "";
    d.capacity_bytes = kDiskSize;
    d.bus = "sata";
    d.dev = "sda";
    c.vm.disks.push_back(d);
    c.vm.nics.push_back({"nic0", "lab", "52:54:00:aa:bb:cc", "e1000"});
    c.checkpoint_bytes = kCheckpoint;
    c.source_retry_timeout_ms = 20000;
    return s;
  }

  std::string Staged(const std::string& name) const { return dst_share_ + "/web1/" + name; }

  Result<ExportInfo> SourceExport() const {
    return api::AgentClient(source_->url(), kToken).GetExport("m-1");
  }

  TempDir tmp_;
  std::string src_share_, dst_share_, source_disk_;
  std::unique_ptr<SourceAgent> source_;
  ColdJobEnv env_;
};

TEST_F(ColdJobTest, StagesVhdxAndVmJsonThatMatchTheSource) {
  FakeContext ctx;
  MigrationJobSpec spec = Spec();
  spec.cold.export_spec.hash_algorithm = ChunkHashAlgorithm::kXxh3_128;  // as plans ask
  Result<JobResult> r = RunColdJob(spec, env_, ctx);
  ASSERT_TRUE(r.ok()) << r.status().ToString() << "\n" << ctx.Events();
  // verify: stream, without reading the copy back, with the source's xxh3-128 digests.
  EXPECT_NE(ctx.Events().find("xxh3-128 chunk hashes of the bytes written equal the source's"),
            std::string::npos)
      << ctx.Events();

  const std::string vhdx = Staged("web1-disk0.vhdx");
  ASSERT_TRUE(fs::exists(vhdx)) << ctx.Events();
  EXPECT_FALSE(fs::exists(dst_share_ + "/.web1.ferry-part"));
  EXPECT_FALSE(fs::exists(ferry::PartPathFor(vhdx)));
  EXPECT_FALSE(fs::exists(ferry::JournalPathFor(vhdx)));
  auto check = ferry::testing::Run("qemu-img check -f vhdx " + ShellQuote(vhdx));
  EXPECT_EQ(check.exit_code, 0) << check.output;
  EXPECT_EQ(ferry::testing::QemuImgCompare(source_disk_, vhdx, "qcow2", "vhdx"), 0);

  std::ifstream in(Staged("vm.json"));
  std::stringstream text;
  text << in.rdbuf();
  Result<sources::VmDescription> vm = sources::VmDescriptionFromJson(text.str(), "vm.json");
  ASSERT_TRUE(vm.ok()) << vm.status().ToString() << "\n" << text.str();
  EXPECT_EQ(vm->name, "web1");
  EXPECT_EQ(vm->vcpus, 2);
  EXPECT_EQ(vm->memory_bytes, 512 * kMiB);
  EXPECT_EQ(vm->firmware, "uefi");
  EXPECT_EQ(vm->machine, "q35");
  ASSERT_EQ(vm->disks.size(), 1u);
  EXPECT_EQ(vm->disks[0].file, "web1-disk0.vhdx");  // relative to the folder
  EXPECT_EQ(vm->disks[0].format, "vhdx");
  EXPECT_EQ(vm->disks[0].capacity_bytes, kDiskSize);
  EXPECT_EQ(vm->disks[0].bus, "sata");
  ASSERT_EQ(vm->nics.size(), 1u);
  EXPECT_EQ(vm->nics[0].network, "lab");
  EXPECT_EQ(vm->nics[0].mac, "52:54:00:aa:bb:cc");
  EXPECT_TRUE(vm->missing.empty());

  ASSERT_EQ(r->disks.size(), 1u);
  EXPECT_TRUE(r->disks[0].verified);
  EXPECT_EQ(r->disks[0].to, vhdx);
  EXPECT_EQ(r->disks[0].from, source_disk_);
  EXPECT_GT(r->disks[0].bytes_read, 0u);
  EXPECT_EQ(r->disks[0].resumed_from, 0u);
  EXPECT_EQ(r->disks[0].recopied_bytes, 0u);
  EXPECT_EQ(r->defined_vm, "");  // a share target defines nothing

  {
    std::lock_guard<std::mutex> lock(ctx.mu);
    EXPECT_EQ(ctx.last.phase, "finalizing");
    ASSERT_EQ(ctx.last.disks.size(), 1u);
    EXPECT_EQ(ctx.last.disks[0].state, "done");
    EXPECT_EQ(ctx.last.bytes_total, kDiskSize);
    EXPECT_EQ(ctx.last.bytes_done, kDiskSize);
  }
  const std::string events = ctx.Events();
  for (const char* phase : {"exporting", "verified", "staged web1"}) {
    EXPECT_NE(events.find(phase), std::string::npos) << phase << "\n" << events;
  }
  Result<ExportInfo> closed = SourceExport();
  ASSERT_TRUE(closed.ok()) << closed.status().ToString();
  EXPECT_EQ(closed->state, ExportState::kClosed);

  // A second run of the same migration finds everything done and changes nothing.
  FakeContext again;
  Result<JobResult> r2 = RunColdJob(spec, env_, again);
  ASSERT_TRUE(r2.ok()) << r2.status().ToString() << "\n" << again.Events();
  EXPECT_NE(again.Events().find("staged by an earlier attempt"), std::string::npos);
}

TEST_F(ColdJobTest, FixedVhdIsMiBAlignedAndIdentical) {
  FakeContext ctx;
  Result<JobResult> r = RunColdJob(Spec("vhd"), env_, ctx);
  ASSERT_TRUE(r.ok()) << r.status().ToString() << "\n" << ctx.Events();
  const std::string vhd = Staged("web1-disk0.vhd");
  EXPECT_EQ(ferry::testing::QemuImgCompare(source_disk_, vhd, "qcow2", "vpc"), 0);
  // A fixed VHD: the data, then a 512-byte footer.
  EXPECT_EQ(fs::file_size(vhd) % kMiB, 512u);
}

// Stops the copy part way by taking the source agent down: with a short retry timeout the job
// fails (io) and keeps the .ferry-part and journal; a second attempt resumes from them.
TEST_F(ColdJobTest, SecondAttemptResumesFromTheJournal) {
  MigrationJobSpec spec = Spec();
  spec.bandwidth = 16 * kMiB;  // about 2 s of copying: time to stop it part way
  spec.cold.source_retry_timeout_ms = 1500;
  const int port = source_->port();
  FakeContext ctx;
  std::atomic<bool> stopped{false};
  std::thread stopper;
  ctx.on_progress = [&](const JobProgress& p) {
    if (!stopped && p.disks.size() == 1 && p.disks[0].checkpointed >= 2 * kCheckpoint) {
      stopped = true;
      stopper = std::thread([&] { source_->Stop(); });
    }
  };
  Result<JobResult> r = RunColdJob(spec, env_, ctx);
  if (stopper.joinable()) stopper.join();
  ASSERT_TRUE(stopped) << ctx.Events();
  ASSERT_FALSE(r.ok()) << ctx.Events();
  EXPECT_EQ(r.status().code(), ErrorCode::kIo) << r.status().ToString();
  const std::string part_dir = dst_share_ + "/.web1.ferry-part";
  const std::string target = part_dir + "/web1-disk0.vhdx";
  ASSERT_TRUE(fs::exists(ferry::PartPathFor(target))) << ctx.Events();
  ASSERT_TRUE(fs::exists(ferry::JournalPathFor(target)));
  EXPECT_FALSE(fs::exists(dst_share_ + "/web1"));

  // The source comes back (its export is reloaded and served on a new NBD port).
  ASSERT_TRUE(source_->Start(port).ok());
  spec.id = "m-1.a2";
  spec.bandwidth = 0;
  FakeContext ctx2;
  Result<JobResult> r2 = RunColdJob(spec, env_, ctx2);
  ASSERT_TRUE(r2.ok()) << r2.status().ToString() << "\n" << ctx2.Events();
  ASSERT_EQ(r2->disks.size(), 1u);
  const JobResult::MovedDisk& d = r2->disks[0];
  EXPECT_GE(d.resumed_from, 2 * kCheckpoint) << ctx2.Events();
  EXPECT_LE(d.recopied_bytes, kCheckpoint + kCopyWindow);
  EXPECT_TRUE(d.verified);
  EXPECT_EQ(
      ferry::testing::QemuImgCompare(source_disk_, Staged("web1-disk0.vhdx"), "qcow2", "vhdx"), 0);
}

// The source agent goes away mid-copy and comes back on the same address within the retry
// timeout: the same job asks for the export again and resumes the copy.
TEST_F(ColdJobTest, LostSourceIsAskedAgainAndTheCopyResumes) {
  MigrationJobSpec spec = Spec();
  spec.bandwidth = 16 * kMiB;
  const int port = source_->port();
  FakeContext ctx;
  std::atomic<bool> stopped{false};
  std::thread bouncer;
  ctx.on_progress = [&](const JobProgress& p) {
    if (!stopped && p.disks.size() == 1 && p.disks[0].checkpointed >= 2 * kCheckpoint) {
      stopped = true;
      bouncer = std::thread([&] {
        source_->Stop();
        std::this_thread::sleep_for(3s);
        ASSERT_TRUE(source_->Start(port).ok());
      });
    }
  };
  Result<JobResult> r = RunColdJob(spec, env_, ctx);
  if (bouncer.joinable()) bouncer.join();
  ASSERT_TRUE(stopped) << ctx.Events();
  ASSERT_TRUE(r.ok()) << r.status().ToString() << "\n" << ctx.Events();
  const std::string events = ctx.Events();
  EXPECT_NE(events.find("asking the source for the export again"), std::string::npos) << events;
  EXPECT_NE(events.find("serving again"), std::string::npos) << events;
  ASSERT_EQ(r->disks.size(), 1u);
  EXPECT_GE(r->disks[0].resumed_from, 2 * kCheckpoint);
  EXPECT_LE(r->disks[0].recopied_bytes, kCheckpoint + kCopyWindow);
  EXPECT_TRUE(r->disks[0].verified);
  EXPECT_EQ(
      ferry::testing::QemuImgCompare(source_disk_, Staged("web1-disk0.vhdx"), "qcow2", "vhdx"), 0);
}

TEST_F(ColdJobTest, CancelRemovesTheStagingFolderAndClosesTheExport) {
  MigrationJobSpec spec = Spec();
  spec.bandwidth = 16 * kMiB;
  FakeContext ctx;
  ctx.on_progress = [&](const JobProgress& p) {
    if (p.disks.size() == 1 && p.disks[0].bytes_done >= 8 * kMiB) ctx.cancel = true;
  };
  Result<JobResult> r = RunColdJob(spec, env_, ctx);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), ErrorCode::kCancelled) << r.status().ToString();
  EXPECT_FALSE(fs::exists(dst_share_ + "/.web1.ferry-part")) << ctx.Events();
  EXPECT_FALSE(fs::exists(dst_share_ + "/web1"));
  EXPECT_FALSE(fs::exists(env_.state_dir + "/cold/m-1.json"));
  Result<ExportInfo> e = SourceExport();
  ASSERT_TRUE(e.ok()) << e.status().ToString();
  EXPECT_EQ(e->state, ExportState::kClosed);
}

// verify: readback reads the finished file from storage, so it sees a change made after the
// copy wrote it.
TEST_F(ColdJobTest, CorruptedCopyFailsReadBackVerificationAndIsDeleted) {
  MigrationJobSpec spec = Spec("vhd");  // fixed VHD: guest data at file offset = disk offset
  spec.cold.verify = plan::VerifyMode::kReadBack;
  std::string corrupted;
  env_.before_verify = [&](const std::string&, const std::string& path) {
    corrupted = path;
    int fd = ::open(path.c_str(), O_WRONLY);
    ASSERT_GE(fd, 0);
    const std::string garbage(4096, '\x5a');
    ASSERT_EQ(::pwrite(fd, garbage.data(), garbage.size(), 9 * kMiB + 100),
              static_cast<ssize_t>(garbage.size()));
    ::close(fd);
  };
  FakeContext ctx;
  Result<JobResult> r = RunColdJob(spec, env_, ctx);
  ASSERT_FALSE(r.ok()) << ctx.Events();
  EXPECT_EQ(r.status().code(), ErrorCode::kMismatch) << r.status().ToString();
  EXPECT_NE(r.status().message().find("chunk 2 at offset 0x800000"), std::string::npos)
      << r.status().message();
  EXPECT_NE(r.status().message().find("read back from"), std::string::npos)
      << r.status().message();
  ASSERT_FALSE(corrupted.empty());
  EXPECT_FALSE(fs::exists(corrupted));
  EXPECT_FALSE(fs::exists(dst_share_ + "/web1"));
  Result<ExportInfo> e = SourceExport();
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->state, ExportState::kClosed);
}

// verify: stream (the default) compares the hashes of the bytes the copy wrote with the ones the
// source took: a source that changed after it was hashed (something still wrote to it) fails
// the job, and the copy is deleted.
TEST_F(ColdJobTest, SourceChangedAfterHashingFailsStreamVerification) {
  MigrationJobSpec spec = Spec("vhd");
  ASSERT_EQ(spec.cold.verify, plan::VerifyMode::kStream);
  // The fast digest must catch a 4 KiB change too (the sha256 one: the readback test above).
  spec.cold.export_spec.hash_algorithm = ChunkHashAlgorithm::kXxh3_128;
  // A data extent of the source qcow2 past the first 8 MiB, and where it lies in the file.
  auto map = ferry::testing::Run("qemu-img map --output=json " + ShellQuote(source_disk_));
  ASSERT_EQ(map.exit_code, 0) << map.output;
  uint64_t guest = 0, host = 0;
  for (const auto& e : nlohmann::json::parse(map.output)) {
    if (e.value("data", false) && e["start"].get<uint64_t>() >= 8 * kMiB &&
        e["length"].get<uint64_t>() >= 4096) {
      guest = e["start"].get<uint64_t>();
      host = e["offset"].get<uint64_t>();
      break;
    }
  }
  ASSERT_NE(guest, 0u) << map.output;
  bool changed = false;
  env_.before_copy = [&](const std::string&) {
    for (int i = 0; i < 200; ++i) {  // wait until the export has hashed the disk
      Result<ExportInfo> e = SourceExport();
      if (e.ok() && !e->disks.empty() && e->disks[0].hash_state == HashState::kDone) break;
      std::this_thread::sleep_for(50ms);
    }
    int fd = ::open(source_disk_.c_str(), O_WRONLY);
    ASSERT_GE(fd, 0);
    const std::string garbage(4096, '\x5a');
    ASSERT_EQ(::pwrite(fd, garbage.data(), garbage.size(), static_cast<off_t>(host)),
              static_cast<ssize_t>(garbage.size()));
    ::close(fd);
    changed = true;
  };
  FakeContext ctx;
  Result<JobResult> r = RunColdJob(spec, env_, ctx);
  ASSERT_TRUE(changed);
  ASSERT_FALSE(r.ok()) << ctx.Events();
  EXPECT_EQ(r.status().code(), ErrorCode::kMismatch) << r.status().ToString();
  const uint64_t chunk = guest / (4 * kMiB);
  std::ostringstream want;
  want << "chunk " << chunk << " at offset 0x" << std::hex << chunk * 4 * kMiB;
  EXPECT_NE(r.status().message().find(want.str()), std::string::npos) << r.status().message();
  EXPECT_NE(r.status().message().find("of the bytes written"), std::string::npos)
      << r.status().message();
  EXPECT_FALSE(fs::exists(Staged("web1-disk0.vhd")));
  EXPECT_FALSE(fs::exists(dst_share_ + "/web1"));
}

TEST_F(ColdJobTest, ManualDeployWaitsForProceed) {
  MigrationJobSpec spec = Spec();
  spec.cold.deploy_auto = false;
  FakeContext ctx;
  std::thread proceeder([&] {
    for (int i = 0; i < 600; ++i) {
      {
        std::lock_guard<std::mutex> lock(ctx.mu);
        if (ctx.last.phase == "awaiting-deploy") break;
      }
      std::this_thread::sleep_for(100ms);
    }
    EXPECT_FALSE(fs::exists(dst_share_ + "/web1")) << "deployed before proceed";
    ctx.proceed = true;
  });
  Result<JobResult> r = RunColdJob(spec, env_, ctx);
  proceeder.join();
  ASSERT_TRUE(r.ok()) << r.status().ToString() << "\n" << ctx.Events();
  EXPECT_TRUE(fs::exists(Staged("vm.json")));
  EXPECT_NE(ctx.Events().find("awaiting-deploy"), std::string::npos);
}

TEST_F(ColdJobTest, InvalidSpecsAreRefused) {
  FakeContext ctx;
  MigrationJobSpec spec = Spec();
  spec.cold.vm.disks[0].file_name = "../escape.vhdx";
  Result<JobResult> r = RunColdJob(spec, env_, ctx);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("cold.vm.disks[0].file_name"), std::string::npos);

  spec = Spec();
  spec.cold.vm.disks[0].format = "qcow2";
  r = RunColdJob(spec, env_, ctx);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("cold.vm.disks[0].format"), std::string::npos);

  spec = Spec();
  spec.cold.target_share = "nope";
  r = RunColdJob(spec, env_, ctx);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), ErrorCode::kNotFound);
}

}  // namespace
}  // namespace ferry::agent
