// AgentService over real loopback HTTP through AgentClient, with a fake job runner and a fake
// host: jobs (start, progress, events, success, failure, cancel, idempotent start, restart
// reload), auth, errors naming the field, the host endpoints; and the config file's checks.
#include "agent/agent_service.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <map>
#include <thread>
#include <tuple>

#include "agent/agent_config.h"
#include "api/agent_client.h"
#include "api/http.h"
#include "test_util.h"

namespace ferry::agent {
namespace {

using api::AgentClient;
using api::AgentJob;
using api::AgentJobState;
using namespace std::chrono_literals;

constexpr char kToken[] = "s3cret-token";

// A runner whose jobs report progress and an event, then wait until the test finishes them
// (Finish) or they are cancelled.
class FakeRunner {
 public:
  Result<JobResult> Run(const MigrationJobSpec& spec, JobContext& ctx) {
    ++calls;
    ctx.Event("phase", "copying");
    JobProgress p;
    p.phase = "copying";
    p.bytes_total = 100;
    p.bytes_done = 10;
    ctx.Progress(p);
    for (int i = 0; i < spec.max_downtime_ms - 1000 && spec.max_downtime_ms > 1000; ++i) {
      ctx.Event("info", "event " + std::to_string(i));  // max_downtime_ms > 1000: flood
    }
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      if (ctx.cancelled()) return Status::Cancelled(spec.vm + " stays on the source");
      if (spec.kind == MigrationKind::kCold && ctx.proceed_requested()) return JobResult{};
      auto it = outcomes_.find(spec.id);
      if (it != outcomes_.end()) return it->second;
      cv_.wait_for(lock, 5ms);
    }
  }

  void Finish(const std::string& id, Result<JobResult> outcome) {
    std::lock_guard<std::mutex> lock(mu_);
    outcomes_.emplace(id, std::move(outcome));
    cv_.notify_all();
  }

  std::atomic<int> calls{0};

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, Result<JobResult>> outcomes_;
};

class FakeHost final : public HostOps {
 public:
  Status Connect() override { return Status::Ok(); }
  Result<hypervisor::Inventory> Inventory() override {
    hypervisor::Inventory inv;
    inv.host.hostname = "host1";
    hypervisor::VmInfo vm;
    vm.name = "g1";
    vm.state = hypervisor::VmState::kRunning;
    vm.disks.push_back({.target = "vda", .pool = "nas1"});
    inv.vms.push_back(vm);
    inv.pools.push_back({.name = "nas1", .type = "dir", .active = true});
    if (!local_pool_path.empty()) {
      inv.pools.push_back(
          {.name = "local", .type = "dir", .path = local_pool_path, .active = true});
    }
    inv.networks.push_back({.name = "lab", .active = true});
    return inv;
  }
  Result<hypervisor::VmInfo> GetVm(const std::string& name) override {
    if (name != "g1") return Status::NotFound("vm " + name + " not found on host1");
    return Inventory()->vms[0];
  }
  Result<std::string> DomainXml(const std::string& name, bool inactive, bool migratable) override {
    if (name != "g1") return Status::NotFound("vm " + name + " not found on host1");
    if (inactive && !migratable) {  // the definition a cold migration describes
      return std::string(
          "<domain type='qemu'><name>g1</name><memory unit='MiB'>256</memory><vcpu>2</vcpu>"
          "<os><type arch='x86_64' machine='pc'>hvm</type><kernel>/lab/vmlinuz</kernel></os>"
          "<devices><disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
          "<source file='/lab/nas1/g1.qcow2'/><target dev='vda' bus='virtio'/></disk>"
          "<interface type='network'><mac address='52:54:00:AA:BB:CC'/>"
          "<source network='lab'/><model type='virtio'/></interface></devices></domain>");
    }
    if (inactive || !migratable) return Status::Internal("wanted the live migratable XML");
    return std::string(
        "<domain type='qemu'><name>g1</name><cpu mode='custom' match='exact'>"
        "<model fallback='forbid'>qemu64</model></cpu><devices/></domain>");
  }
  Result<hypervisor::CpuCheck> CompareCpu(const std::string& cpu_xml,
                                          const hypervisor::CpuTarget& target) override {
    last_cpu_xml = cpu_xml;
    last_virttype = target.virttype;
    if (cpu_xml.find("Icelake") != std::string::npos) {
      return hypervisor::CpuCheck{hypervisor::CpuCompatibility::kIncompatible, "no avx512"};
    }
    return hypervisor::CpuCheck{hypervisor::CpuCompatibility::kIdentical, ""};
  }
  Result<std::vector<std::string>> MachineTypes(const std::string& arch) override {
    return std::vector<std::string>{"pc", "pc-i440fx-7.2", "q35"};
  }
  Result<bool> SupportsUefi(const std::string&, const std::string& machine) override {
    return machine == "q35";
  }
  std::string last_cpu_xml;
  std::string last_virttype;
  std::string local_pool_path;  // "" = no pool "local"
};

struct TempDir {
  std::string path;
  TempDir() {
    char tmpl[] = "/tmp/ferry-agent-test-XXXXXX";
    const char* made = mkdtemp(tmpl);
    path = made != nullptr ? made : "";
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
};

AgentConfig TestConfig(const std::string& state_dir) {
  AgentConfig c;
  c.listen = "127.0.0.1:0";
  c.token = kToken;
  c.libvirt_uri = "qemu+tcp://127.0.0.11/system";
  c.migration_uri = "tcp://127.0.0.11";
  c.host_id = "host1";
  c.state_dir = state_dir;
  return c;
}

template <typename Pred>
bool WaitFor(Pred pred, std::chrono::milliseconds limit = 10s) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(5ms);
  }
  return pred();
}

MigrationJobSpec Spec(const std::string& id, const std::string& vm = "g1") {
  MigrationJobSpec s;
  s.id = id;
  s.kind = MigrationKind::kLive;
  s.vm = vm;
  s.target_uri = "qemu+tcp://127.0.0.12/system";
  s.target_migration_uri = "tcp://127.0.0.12";
  return s;
}

class AgentServiceTest : public ::testing::Test {
 protected:
  void SetUp() override { StartService(dir_.path); }

  void StartService(const std::string& state_dir) {
    AgentServiceOptions o;
    o.config = TestConfig(state_dir);
    o.config.shares = shares_;
    o.runner = [this](const MigrationJobSpec& s, JobContext& c) { return runner_.Run(s, c); };
    auto host = std::make_unique<FakeHost>();
    host_ = host.get();
    o.host = std::move(host);
    o.max_events = 20;
    o.log = [](const std::string&) {};
    service_ = std::make_unique<AgentService>(std::move(o));
    Status s = service_->Start();
    ASSERT_TRUE(s.ok()) << s.ToString();
    url_ = "http://127.0.0.1:" + std::to_string(service_->port());
    client_ = std::make_unique<AgentClient>(url_, kToken);
  }

  // Polls GetJob until the job is final.
  AgentJob WaitFinal(const std::string& id) {
    AgentJob last;
    EXPECT_TRUE(WaitFor([&] {
      auto j = client_->GetJob(id);
      if (!j.ok()) return false;
      last = *j;
      return api::IsFinal(j->state);
    })) << "job "
        << id << " never finished";
    return last;
  }

  std::string JobFile(const std::string& id) const { return dir_.path + "/jobs/" + id + ".json"; }

  TempDir dir_;
  std::vector<std::pair<std::string, std::string>> shares_;
  FakeRunner runner_;
  FakeHost* host_ = nullptr;
  std::unique_ptr<AgentService> service_;
  std::string url_;
  std::unique_ptr<AgentClient> client_;
};

TEST_F(AgentServiceTest, JobRunsReportsProgressAndSucceeds) {
  auto started = client_->StartJob(Spec("m1"));
  ASSERT_TRUE(started.ok()) << started.status().ToString();
  EXPECT_EQ(started->id, "m1");
  EXPECT_EQ(started->state, AgentJobState::kRunning);
  EXPECT_EQ(started->vm, "g1");
  EXPECT_GT(started->started_at_ms, 0);
  // Persisted at once.
  EXPECT_TRUE(std::filesystem::exists(JobFile("m1")));

  ASSERT_TRUE(WaitFor([&] {
    auto j = client_->GetJob("m1");
    return j.ok() && j->progress.bytes_done == 10;
  }));
  auto running = client_->GetJob("m1");
  ASSERT_TRUE(running.ok());
  EXPECT_EQ(running->progress.phase, "copying");
  EXPECT_EQ(running->progress.bytes_total, 100u);
  ASSERT_GE(running->events.size(), 2u);
  EXPECT_EQ(running->events[0].kind, "state");
  EXPECT_EQ(running->events[1].kind, "phase");
  EXPECT_EQ(running->events[1].message, "copying");
  EXPECT_EQ(service_->RunningJobs(), 1u);

  JobResult result;
  result.total_ms = 42;
  result.notes = {"downtime limit 300 -> 600 ms"};
  runner_.Finish("m1", result);
  AgentJob done = WaitFinal("m1");
  EXPECT_EQ(done.state, AgentJobState::kSucceeded);
  ASSERT_TRUE(done.result.has_value());
  EXPECT_EQ(done.result->total_ms, 42);
  EXPECT_EQ(done.result->notes, result.notes);
  EXPECT_TRUE(done.error.ok());
  EXPECT_GE(done.finished_at_ms, done.started_at_ms);

  // The file says so too (written at the end).
  ASSERT_TRUE(WaitFor([&] {
    std::ifstream in(JobFile("m1"));
    std::string text((std::istreambuf_iterator<char>(in)), {});
    return text.find("\"state\":\"succeeded\"") != std::string::npos;
  }));

  auto list = client_->ListJobs();
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->size(), 1u);
  EXPECT_EQ((*list)[0].id, "m1");
  EXPECT_EQ(runner_.calls, 1);
}

TEST_F(AgentServiceTest, FailedJobCarriesTheErrorCode) {
  ASSERT_TRUE(client_->StartJob(Spec("f1")).ok());
  runner_.Finish("f1", Status::Io("virDomainMigrateToURI3 g1: connection reset"));
  AgentJob done = WaitFinal("f1");
  EXPECT_EQ(done.state, AgentJobState::kFailed);
  EXPECT_EQ(done.error.code(), ErrorCode::kIo);
  EXPECT_EQ(done.error.message(), "virDomainMigrateToURI3 g1: connection reset");
  EXPECT_FALSE(done.result.has_value());
}

TEST_F(AgentServiceTest, StartIsIdempotentForTheSameSpec) {
  auto first = client_->StartJob(Spec("i1"));
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  auto again = client_->StartJob(Spec("i1"));
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(again->id, "i1");
  EXPECT_EQ(again->started_at_ms, first->started_at_ms);

  // (HttpClient hides 202 vs 200; the service's own API tells a retry apart.)
  bool existed = false;
  auto direct = service_->StartJob(Spec("i1"), &existed);
  ASSERT_TRUE(direct.ok());
  EXPECT_TRUE(existed);

  MigrationJobSpec other = Spec("i1", "g2");
  auto clash = client_->StartJob(other);
  ASSERT_FALSE(clash.ok());
  EXPECT_EQ(clash.status().code(), ErrorCode::kAlreadyExists);
  EXPECT_NE(clash.status().message().find("different spec"), std::string::npos);

  runner_.Finish("i1", JobResult{});
  WaitFinal("i1");
  // Still the same job after it finished; the runner ran once.
  auto after = client_->StartJob(Spec("i1"));
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->state, AgentJobState::kSucceeded);
  EXPECT_EQ(runner_.calls, 1);
}

TEST_F(AgentServiceTest, CancelStopsTheJob) {
  ASSERT_TRUE(client_->StartJob(Spec("c1")).ok());
  ASSERT_TRUE(WaitFor([&] { return runner_.calls == 1; }));
  auto cancelled = client_->CancelJob("c1");
  ASSERT_TRUE(cancelled.ok()) << cancelled.status().ToString();
  AgentJob done = WaitFinal("c1");
  EXPECT_EQ(done.state, AgentJobState::kCancelled);
  EXPECT_EQ(done.error.code(), ErrorCode::kCancelled);
  EXPECT_NE(done.error.message().find("stays on the source"), std::string::npos);
  bool saw_request = false;
  for (const auto& e : done.events) saw_request |= e.message == "cancel requested";
  EXPECT_TRUE(saw_request);
  // Cancelling a final job returns it unchanged.
  auto again = client_->CancelJob("c1");
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->state, AgentJobState::kCancelled);
}

TEST_F(AgentServiceTest, ProceedLetsAWaitingColdJobGoOn) {
  MigrationJobSpec s = Spec("c1");
  s.kind = MigrationKind::kCold;
  s.cold.source = {"host2", "http://127.0.0.1:1", "t"};
  s.cold.export_spec.id = "c1";
  s.cold.export_spec.vm = "g1";
  s.cold.vm.name = "g1";
  s.cold.vm.disks.push_back({"disk0", "local", "g1-disk0.qcow2", "qcow2", "", 0, "virtio", "vda"});
  s.cold.deploy_auto = false;
  auto started = client_->StartJob(s);  // the cold spec crosses the wire as JSON
  ASSERT_TRUE(started.ok()) << started.status().ToString();
  EXPECT_EQ(started->kind, MigrationKind::kCold);
  std::this_thread::sleep_for(50ms);
  auto running = client_->GetJob("c1");
  ASSERT_TRUE(running.ok());
  EXPECT_EQ(running->state, AgentJobState::kRunning) << "finished without proceed";

  auto proceeded = client_->ProceedJob("c1");
  ASSERT_TRUE(proceeded.ok()) << proceeded.status().ToString();
  AgentJob done = WaitFinal("c1");
  EXPECT_EQ(done.state, AgentJobState::kSucceeded);
  bool saw = false;
  for (const auto& e : done.events) saw = saw || e.message == "proceed requested";
  EXPECT_TRUE(saw);
  // A final job is returned as it is.
  auto again = client_->ProceedJob("c1");
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->state, AgentJobState::kSucceeded);

  // Only cold jobs wait for proceed.
  ASSERT_TRUE(client_->StartJob(Spec("l1")).ok());
  auto live = client_->ProceedJob("l1");
  ASSERT_FALSE(live.ok());
  EXPECT_EQ(live.status().code(), ErrorCode::kFailedPrecondition) << live.status().ToString();
  ASSERT_TRUE(client_->CancelJob("l1").ok());
  WaitFinal("l1");
  auto unknown = client_->ProceedJob("nope");
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.status().code(), ErrorCode::kNotFound);
}

TEST_F(AgentServiceTest, EventListIsCapped) {
  MigrationJobSpec s = Spec("e1");
  s.max_downtime_ms = 1500;  // the fake runner emits 500 events
  ASSERT_TRUE(client_->StartJob(s).ok());
  ASSERT_TRUE(WaitFor([&] {
    auto j = client_->GetJob("e1");
    return j.ok() && !j->events.empty() && j->events.back().message == "event 499";
  }));
  auto j = client_->GetJob("e1");
  ASSERT_TRUE(j.ok());
  EXPECT_EQ(j->events.size(), 20u);
  runner_.Finish("e1", JobResult{});
  EXPECT_EQ(WaitFinal("e1").events.size(), 20u);
}

TEST_F(AgentServiceTest, RestartMarksRunningJobsFailedAndKeepsFinishedOnes) {
  ASSERT_TRUE(client_->StartJob(Spec("done1")).ok());
  runner_.Finish("done1", JobResult{.total_ms = 7});
  WaitFinal("done1");
  // The file is written just after the state changes in memory: wait for it before copying.
  ASSERT_TRUE(WaitFor([&] {
    std::ifstream in(JobFile("done1"));
    std::string text((std::istreambuf_iterator<char>(in)), {});
    return text.find("\"state\":\"succeeded\"") != std::string::npos;
  }));
  ASSERT_TRUE(client_->StartJob(Spec("run1")).ok());
  ASSERT_TRUE(WaitFor([&] { return runner_.calls == 2; }));

  // What a killed agent leaves behind: copy the files while run1 is still running.
  TempDir second;
  std::filesystem::create_directories(second.path + "/jobs");
  for (const char* id : {"done1", "run1"}) {
    std::filesystem::copy_file(JobFile(id), second.path + "/jobs/" + id + ".json");
  }
  std::ofstream(second.path + "/jobs/junk.json") << "{not json";
  std::ofstream(second.path + "/jobs/run1.json.tmp") << "half written";

  service_.reset();  // the first agent goes away (cancels run1 in its own folder)
  StartService(second.path);

  auto run1 = client_->GetJob("run1");
  ASSERT_TRUE(run1.ok()) << run1.status().ToString();
  EXPECT_EQ(run1->state, AgentJobState::kFailed);
  EXPECT_EQ(run1->error.code(), ErrorCode::kIo);
  EXPECT_EQ(run1->error.message(), "agent restarted during the job");
  EXPECT_GT(run1->finished_at_ms, 0);
  auto done1 = client_->GetJob("done1");
  ASSERT_TRUE(done1.ok());
  EXPECT_EQ(done1->state, AgentJobState::kSucceeded);
  ASSERT_TRUE(done1->result.has_value());
  EXPECT_EQ(done1->result->total_ms, 7);
  EXPECT_FALSE(std::filesystem::exists(second.path + "/jobs/run1.json.tmp"));
  auto list = client_->ListJobs();
  ASSERT_TRUE(list.ok());
  EXPECT_EQ(list->size(), 2u);  // junk.json ignored

  // The failure was written back: a third start reads it as failed, not as running.
  {
    std::ifstream in(second.path + "/jobs/run1.json");
    std::string text((std::istreambuf_iterator<char>(in)), {});
    EXPECT_NE(text.find("\"state\":\"failed\""), std::string::npos) << text;
  }
  // A retried start of the same spec answers the failed job (ferryd sees the outcome).
  auto retry = client_->StartJob(Spec("run1"));
  ASSERT_TRUE(retry.ok()) << retry.status().ToString();
  EXPECT_EQ(retry->state, AgentJobState::kFailed);
}

TEST_F(AgentServiceTest, WrongTokenUnknownJobAndBadJson) {
  AgentClient wrong(url_, "not-the-token");
  auto denied = wrong.ListJobs();
  ASSERT_FALSE(denied.ok());
  EXPECT_EQ(denied.status().code(), ErrorCode::kPermissionDenied);
  EXPECT_NE(denied.status().message().find("401"), std::string::npos);
  EXPECT_FALSE(wrong.Health().ok());

  auto missing = client_->GetJob("nope");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), ErrorCode::kNotFound);
  EXPECT_EQ(missing.status().message(), "job nope not found on host1");
  EXPECT_EQ(client_->CancelJob("nope").status().code(), ErrorCode::kNotFound);

  api::HttpClient http(url_, kToken);
  auto bad =
      http.Post("/agent/v1/jobs", R"({"id":"b1","kind":"live","vm":"g1","max_downtime_ms":"300"})");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(bad.status().message(), "max_downtime_ms: expected an integer");
  auto bad_kind = http.Post("/agent/v1/jobs", R"({"id":"b1","kind":"warp","vm":"g1"})");
  ASSERT_FALSE(bad_kind.ok());
  EXPECT_EQ(bad_kind.status().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(bad_kind.status().message().rfind("kind: unknown value \"warp\"", 0), 0u)
      << bad_kind.status().message();
  auto not_json = http.Post("/agent/v1/jobs", "{\"id\":");
  EXPECT_EQ(not_json.status().code(), ErrorCode::kInvalidArgument);
  auto bad_check = http.Post("/agent/v1/checks/platform", R"({"arch":"x86_64","machine":"pc"})");
  EXPECT_EQ(bad_check.status().message(), "firmware: missing required field");
  EXPECT_EQ(runner_.calls, 0);
}

TEST_F(AgentServiceTest, HostEndpoints) {
  auto health = client_->Health();
  ASSERT_TRUE(health.ok()) << health.status().ToString();
  EXPECT_EQ(health->host_id, "host1");
  EXPECT_EQ(health->libvirt_uri, "qemu+tcp://127.0.0.11/system");
  EXPECT_EQ(health->migration_uri, "tcp://127.0.0.11");
  EXPECT_FALSE(health->version.empty());

  auto inv = client_->Inventory();
  ASSERT_TRUE(inv.ok()) << inv.status().ToString();
  EXPECT_EQ(inv->migration_uri, "tcp://127.0.0.11");
  EXPECT_EQ(inv->inventory.host.hostname, "host1");
  ASSERT_EQ(inv->inventory.vms.size(), 1u);
  EXPECT_EQ(inv->inventory.vms[0].disks[0].pool, "nas1");

  auto vm = client_->GetVm("g1");
  ASSERT_TRUE(vm.ok());
  EXPECT_EQ(vm->state, hypervisor::VmState::kRunning);
  auto no_vm = client_->GetVm("g9");
  EXPECT_EQ(no_vm.status().code(), ErrorCode::kNotFound);
  EXPECT_EQ(no_vm.status().message(), "vm g9 not found on host1");

  auto xml = client_->GetVmXml("g1");
  ASSERT_TRUE(xml.ok()) << xml.status().ToString();
  EXPECT_NE(xml->xml.find("<name>g1</name>"), std::string::npos);
  EXPECT_EQ(xml->cpu_xml,
            "<cpu mode=\"custom\" match=\"exact\"><model fallback=\"forbid\">qemu64</model></cpu>");

  auto cpu = client_->CheckCpu(xml->cpu_xml, {.virttype = "qemu"});
  ASSERT_TRUE(cpu.ok()) << cpu.status().ToString();
  EXPECT_EQ(cpu->result, hypervisor::CpuCompatibility::kIdentical);
  EXPECT_EQ(host_->last_cpu_xml, xml->cpu_xml);
  EXPECT_EQ(host_->last_virttype, "qemu");
  auto cpu_bad = client_->CheckCpu("<cpu><model>Icelake</model></cpu>");
  ASSERT_TRUE(cpu_bad.ok());
  EXPECT_EQ(cpu_bad->result, hypervisor::CpuCompatibility::kIncompatible);
  EXPECT_EQ(cpu_bad->message, "no avx512");

  auto ok = client_->CheckPlatform({"x86_64", "q35", hypervisor::Firmware::kUefi});
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  EXPECT_TRUE(ok->machine_ok);
  EXPECT_TRUE(ok->firmware_ok);
  EXPECT_EQ(ok->message, "");
  auto no = client_->CheckPlatform({"x86_64", "pc-q35-9.9", hypervisor::Firmware::kUefi});
  ASSERT_TRUE(no.ok());
  EXPECT_FALSE(no->machine_ok);
  EXPECT_FALSE(no->firmware_ok);
  EXPECT_NE(no->message.find("machine type pc-q35-9.9 is not supported"), std::string::npos)
      << no->message;
  EXPECT_NE(no->message.find("no UEFI firmware"), std::string::npos) << no->message;
}

// The status line of a raw request (HttpClient hides 200 vs 201).
int RawStatus(int port, const std::string& method, const std::string& path,
              const std::string& body) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  ::inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd);
    return -1;
  }
  const std::string request =
      method + " " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\n" + "Authorization: Bearer " + kToken +
      "\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
      "\r\nConnection: close\r\n\r\n" + body;
  if (::send(fd, request.data(), request.size(), MSG_NOSIGNAL) !=
      static_cast<ssize_t>(request.size())) {
    ::close(fd);
    return -1;
  }
  std::string reply;
  char buf[4096];
  ssize_t n = 0;
  while (reply.find("\r\n") == std::string::npos && (n = ::recv(fd, buf, sizeof(buf), 0)) > 0) {
    reply.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  // "HTTP/1.1 201 Created"
  if (reply.size() < 12) return -1;
  return std::atoi(reply.substr(9, 3).c_str());
}

// The cold-migration endpoints: shares, VM descriptions, exports of a share VM.
class AgentServiceExportTest : public AgentServiceTest {
 protected:
  void SetUp() override {
    share_ = dir_.path + "/share";
    std::filesystem::create_directories(share_);
    const std::string raw = dir_.path + "/pattern.raw";
    testing::PatternSpec spec;
    spec.size = 8 << 20;
    ASSERT_TRUE(testing::WritePatternRaw(raw, spec));
    auto r = testing::Run("qemu-img convert -O qcow2 " + testing::ShellQuote(raw) + " " +
                          testing::ShellQuote(share_ + "/web1.qcow2"));
    ASSERT_EQ(r.exit_code, 0) << r.output;
    shares_ = {{"exports", share_}};
    StartService(dir_.path + "/state");
  }

  agent::ExportInfo WaitHashed(const std::string& id) {
    agent::ExportInfo last;
    EXPECT_TRUE(WaitFor(
        [&] {
          auto e = client_->GetExport(id);
          if (!e.ok()) return false;
          last = *e;
          return e->state == ExportState::kServing && !e->disks.empty() &&
                 e->disks[0].hash_state == HashState::kDone;
        },
        30s))
        << "export " << id << ": " << ExportStateName(last.state) << " " << last.error.ToString();
    return last;
  }

  std::string share_;
};

TEST_F(AgentServiceExportTest, SharesAndVmDescriptions) {
  auto shares = client_->ListShares();
  ASSERT_TRUE(shares.ok()) << shares.status().ToString();
  ASSERT_EQ(shares->size(), 1u);
  EXPECT_EQ((*shares)[0].name, "exports");
  EXPECT_EQ((*shares)[0].path, share_);
  EXPECT_TRUE((*shares)[0].writable);

  auto listing = client_->ListShareVms("exports");
  ASSERT_TRUE(listing.ok()) << listing.status().ToString();
  ASSERT_EQ(listing->vms.size(), 1u) << (listing->problems.empty() ? "" : listing->problems[0]);
  const sources::ShareVm& vm = listing->vms[0];
  EXPECT_EQ(vm.id, "web1.qcow2");
  EXPECT_EQ(vm.share, "exports");
  EXPECT_EQ(vm.vm.name, "web1");
  ASSERT_EQ(vm.vm.disks.size(), 1u);
  EXPECT_EQ(vm.vm.disks[0].file, share_ + "/web1.qcow2");
  EXPECT_EQ(vm.vm.disks[0].format, "qcow2");
  EXPECT_EQ(vm.vm.disks[0].capacity_bytes, 8u << 20);
  EXPECT_EQ(client_->ListShareVms("nope").status().code(), ErrorCode::kNotFound);

  auto g1 = client_->DescribeVm("g1");
  ASSERT_TRUE(g1.ok()) << g1.status().ToString();
  EXPECT_EQ(g1->name, "g1");
  EXPECT_EQ(g1->platform, sources::Platform::kKvm);
  EXPECT_EQ(g1->vcpus, 2);
  EXPECT_EQ(g1->memory_bytes, 256u << 20);
  EXPECT_TRUE(g1->running);
  EXPECT_EQ(g1->direct_boot.kernel, "/lab/vmlinuz");
  ASSERT_EQ(g1->disks.size(), 1u);
  EXPECT_EQ(g1->disks[0].file, "/lab/nas1/g1.qcow2");
  EXPECT_EQ(g1->disks[0].datastore, "nas1");  // the pool, from the inventory
  ASSERT_EQ(g1->nics.size(), 1u);
  EXPECT_EQ(g1->nics[0].mac, "52:54:00:aa:bb:cc");
  EXPECT_EQ(g1->nics[0].network, "lab");
  auto g9 = client_->DescribeVm("g9");
  EXPECT_EQ(g9.status().code(), ErrorCode::kNotFound);
  EXPECT_EQ(g9.status().message(), "vm g9 not found on host1");
}

TEST_F(AgentServiceExportTest, ExportsOverHttp) {
  ExportSpec spec;
  spec.id = "m1";
  spec.share = "exports";
  spec.share_vm = "web1.qcow2";
  const int port = service_->port();
  EXPECT_EQ(RawStatus(port, "POST", "/agent/v1/exports", api::ToJson(spec)), 201);
  EXPECT_EQ(RawStatus(port, "POST", "/agent/v1/exports", api::ToJson(spec)), 200);
  auto again = client_->CreateExport(spec);
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(again->id, "m1");
  EXPECT_EQ(again->spec, spec);

  ExportSpec other = spec;
  other.hash_chunk_size = 1 << 20;
  EXPECT_EQ(RawStatus(port, "POST", "/agent/v1/exports", api::ToJson(other)), 409);
  auto clash = client_->CreateExport(other);
  EXPECT_EQ(clash.status().code(), ErrorCode::kAlreadyExists);

  agent::ExportInfo e = WaitHashed("m1");
  ASSERT_EQ(e.disks.size(), 1u);
  EXPECT_EQ(e.disks[0].size, 8u << 20);
  EXPECT_EQ(e.disks[0].chunk_hashes.size(), 2u);
  EXPECT_EQ(e.vm.name, "web1");
  auto cmp =
      testing::Run("qemu-img compare -f raw -F qcow2 " + testing::ShellQuote(e.disks[0].uri) + " " +
                   testing::ShellQuote(share_ + "/web1.qcow2"));
  EXPECT_EQ(cmp.exit_code, 0) << cmp.output;
  EXPECT_GT(client_->GetExport("m1")->bytes_served, 0u);

  EXPECT_EQ(client_->GetExport("m9").status().code(), ErrorCode::kNotFound);
  EXPECT_EQ(client_->CloseExport("m9", false).status().code(), ErrorCode::kNotFound);
  EXPECT_EQ(RawStatus(port, "DELETE", "/agent/v1/exports/m1?restore_power=maybe", ""), 400);

  api::HttpClient http(url_, kToken);
  auto both = http.Post("/agent/v1/exports", R"({"id":"b1","vm":"g1","share":"exports"})");
  EXPECT_EQ(both.status().code(), ErrorCode::kInvalidArgument);
  auto no_vm_name = http.Post("/agent/v1/exports", R"({"id":"b1","share":"exports"})");
  EXPECT_EQ(no_vm_name.status().message(), "share_vm: missing (share is given)");
  auto bad_timeout =
      http.Post("/agent/v1/exports", R"({"id":"b1","vm":"g1","shutdown":{"timeout_ms":"2m"}})");
  EXPECT_EQ(bad_timeout.status().message(), "shutdown.timeout_ms: expected an integer");
  auto no_share =
      http.Post("/agent/v1/exports", R"({"id":"b2","share":"elsewhere","share_vm":"web1.qcow2"})");
  EXPECT_EQ(no_share.status().code(), ErrorCode::kNotFound);

  auto closed = client_->CloseExport("m1", true);
  ASSERT_TRUE(closed.ok()) << closed.status().ToString();
  EXPECT_EQ(closed->state, ExportState::kClosed);
  EXPECT_NE(
      testing::Run("nbdinfo --size " + testing::ShellQuote(e.disks[0].uri) + " 2>&1").exit_code, 0);
  EXPECT_EQ(client_->GetExport("m1")->state, ExportState::kClosed);
}

TEST_F(AgentServiceTest, PoolFilesListTheFolder) {
  TempDir pool;
  host_->local_pool_path = pool.path;
  for (const char* name : {"g1-disk0.qcow2", ".g2-disk0.qcow2.ferry-part"}) {
    std::ofstream(pool.path + "/" + name) << "x";
  }
  auto files = client_->ListPoolFiles("local");
  ASSERT_TRUE(files.ok()) << files.status().ToString();
  EXPECT_EQ(files->pool, "local");
  EXPECT_EQ(files->files,
            (std::vector<std::string>{".g2-disk0.qcow2.ferry-part", "g1-disk0.qcow2"}));
  EXPECT_EQ(client_->ListPoolFiles("nope").status().code(), ErrorCode::kNotFound);
  EXPECT_EQ(client_->ListPoolFiles("nas1").status().code(), ErrorCode::kUnsupported);
}

TEST(AgentClientTest, UnreachableAgentIsIoNamingTheUrl) {
  AgentClient client("http://127.0.0.1:1", kToken, {.connect_timeout_ms = 500});
  auto r = client.Health();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), ErrorCode::kIo);
  EXPECT_NE(r.status().message().find("http://127.0.0.1:1"), std::string::npos)
      << r.status().message();
}

TEST(MigrationKindNames, WireNamesMatchTheJobsLibrary) {
  for (MigrationKind k :
       {MigrationKind::kLive, MigrationKind::kLiveStorage, MigrationKind::kLiveVsm,
        MigrationKind::kQuick, MigrationKind::kReregister}) {
    EXPECT_EQ(api::MigrationKindWireName(k), MigrationKindName(k));
    auto parsed = ParseMigrationKind(api::MigrationKindWireName(k));
    ASSERT_TRUE(parsed.ok());
    EXPECT_EQ(*parsed, k);
  }
}

TEST(ExtractCpuXmlTest, FindsOrMissesTheCpuElement) {
  auto none = ExtractCpuXml("<domain><name>x</name></domain>");
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(*none, "");
  auto broken = ExtractCpuXml("<domain><cpu>");
  EXPECT_EQ(broken.status().code(), ErrorCode::kCorrupt);
}

TEST(AgentConfigTest, ValidatesEveryField) {
  const std::string good =
      R"({"listen": "127.0.0.11:7801", "token": "secret", "libvirt_uri":
          "qemu+tcp://127.0.0.11/system", "migration_uri": "tcp://127.0.0.11",
          "host_id": "host1", "state_dir": "/var/lib/ferry-agent"})";
  auto c = ParseAgentConfig(good);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->listen, "127.0.0.11:7801");
  EXPECT_EQ(c->state_dir, "/var/lib/ferry-agent");

  auto expect_bad = [&](const std::string& from, const std::string& to,
                        const std::string& message_start) {
    std::string text = good;
    const size_t at = text.find(from);
    ASSERT_NE(at, std::string::npos) << from;
    text.replace(at, from.size(), to);
    auto r = ParseAgentConfig(text);
    ASSERT_FALSE(r.ok()) << text;
    EXPECT_EQ(r.status().code(), ErrorCode::kInvalidArgument);
    EXPECT_EQ(r.status().message().rfind(message_start, 0), 0u) << r.status().message();
  };
  expect_bad("\"listen\"", "\"lisen\"", "unknown field \"lisen\"");
  expect_bad("127.0.0.11:7801", "127.0.0.11", "listen: \"127.0.0.11\" is not HOST:PORT");
  expect_bad("127.0.0.11:7801", "127.0.0.11:99999", "listen: port \"99999\"");
  expect_bad("127.0.0.11:7801", "127.0.0.11:0", "listen: port \"0\"");
  expect_bad("\"secret\"", "\"\"", "token: must not be empty");
  expect_bad("\"secret\"", "\"a b\"", "token: contains a space");
  expect_bad("\"secret\"", "42", "token: expected a string");
  expect_bad("qemu+tcp://127.0.0.11/system", "127.0.0.11", "libvirt_uri: \"127.0.0.11\" is not");
  expect_bad("\"host1\"", "\"host/1\"", "host_id:");
  expect_bad("/var/lib/ferry-agent", "var/lib", "state_dir: \"var/lib\" is not absolute");
  expect_bad(", \"migration_uri\": \"tcp://127.0.0.11\"", "", "migration_uri: missing");

  // The cold-job fields: defaults, values, bad values.
  EXPECT_EQ(c->default_domain_type, "kvm");
  EXPECT_EQ(c->copy_workers, 4);
  const std::string cold =
      good.substr(0, good.size() - 1) + R"(, "default_domain_type": "qemu", "copy_workers": 2})";
  auto cc = ParseAgentConfig(cold);
  ASSERT_TRUE(cc.ok()) << cc.status().ToString();
  EXPECT_EQ(cc->default_domain_type, "qemu");
  EXPECT_EQ(cc->copy_workers, 2);
  for (const auto& [from, to, start] :
       std::vector<std::tuple<std::string, std::string, std::string>>{
           {"\"qemu\"", "\"tcg\"", "default_domain_type: \"tcg\": expected kvm or qemu"},
           {"\"qemu\"", "1", "default_domain_type: expected a string"},
           {"\"copy_workers\": 2", "\"copy_workers\": 0", "copy_workers: expected an integer"},
           {"\"copy_workers\": 2", "\"copy_workers\": \"2\"", "copy_workers: expected an integer"},
       }) {
    std::string text = cold;
    text.replace(text.find(from), from.size(), to);
    auto r = ParseAgentConfig(text);
    ASSERT_FALSE(r.ok()) << text;
    EXPECT_EQ(r.status().message().rfind(start, 0), 0u) << r.status().message();
  }

  TempDir dir;
  auto missing = LoadAgentConfig(dir.path + "/none.json");
  EXPECT_EQ(missing.status().code(), ErrorCode::kNotFound);
  std::ofstream(dir.path + "/bad.json") << "{\"listen\": 5}";
  auto bad = LoadAgentConfig(dir.path + "/bad.json");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().message(), dir.path + "/bad.json: listen: expected a string");
}

TEST(AgentConfigTest, SharesAndDataAddress) {
  const std::string base =
      R"({"listen": "127.0.0.11:7801", "token": "secret", "libvirt_uri":
          "qemu+tcp://127.0.0.11/system", "migration_uri": "tcp://127.0.0.11",
          "host_id": "host1", "state_dir": "/var/lib/ferry-agent")";
  auto plain = ParseAgentConfig(base + "}");
  ASSERT_TRUE(plain.ok()) << plain.status().ToString();
  EXPECT_TRUE(plain->shares.empty());
  EXPECT_EQ(plain->data_address, "127.0.0.11");  // the host of listen

  auto full = ParseAgentConfig(
      base + R"(, "shares": {"exports": "/srv/exports/", "staging": "/srv/staging"},
                 "data_address": "127.0.0.21"})");
  ASSERT_TRUE(full.ok()) << full.status().ToString();
  ASSERT_EQ(full->shares.size(), 2u);
  EXPECT_EQ(full->shares[0], (std::pair<std::string, std::string>{"exports", "/srv/exports"}));
  EXPECT_EQ(full->shares[1], (std::pair<std::string, std::string>{"staging", "/srv/staging"}));
  EXPECT_EQ(full->data_address, "127.0.0.21");

  auto expect_bad = [&](const std::string& tail, const std::string& message) {
    auto r = ParseAgentConfig(base + tail);
    ASSERT_FALSE(r.ok()) << tail;
    EXPECT_EQ(r.status().code(), ErrorCode::kInvalidArgument);
    EXPECT_EQ(r.status().message(), message);
  };
  expect_bad(R"(, "shares": ["/srv"]})", "shares: expected an object of name: folder");
  expect_bad(R"(, "shares": {"a/b": "/srv"}})",
             "shares.a/b: a share name must be 1-64 characters of [A-Za-z0-9._-]");
  expect_bad(R"(, "shares": {"exports": "srv"}})",
             "shares.exports: \"srv\" is not an absolute path");
  expect_bad(R"(, "shares": {"exports": 7}})",
             "shares.exports: expected a string (the share's folder)");
  expect_bad(R"(, "data_address": "127.0.0.21:7000/x"})",
             "data_address: \"127.0.0.21:7000/x\" is not a host name or address (no port)");
  expect_bad(R"(, "data_address": ""})", "data_address: must not be empty");
  EXPECT_EQ(ListenHost("[::1]:7801"), "::1");
}

}  // namespace
}  // namespace ferry::agent
