// ferryd's migration plans and cold migrations (docs/plans.md) with fake agents: the real
// SQLite store and HTTP API, agents that describe VMs, list pools and shares, check platforms
// and run cold jobs as small state machines the test steers (io failures, manual deploy,
// held copies, forgotten jobs, unreachable hosts, failing export closes).
#include <gtest/gtest.h>

#include <ctime>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "api/http.h"
#include "server/cold_migration.h"
#include "server/config.h"
#include "server/ferryd.h"
#include "store/store.h"
#include "test_util.h"

namespace ferry::server {
namespace {

using nlohmann::json;

constexpr uint64_t kMiB = 1 << 20;
constexpr uint64_t kGiB = 1ull << 30;

sources::VmDescription KvmVm(const std::string& host, const std::string& name) {
  sources::VmDescription vm;
  vm.name = name;
  vm.uuid = "uuid-" + name;
  vm.platform = sources::Platform::kKvm;
  vm.vcpus = 1;
  vm.memory_bytes = 256 * kMiB;
  vm.firmware = "bios";
  vm.machine = "pc";
  vm.running = true;
  sources::DiskDescription d;
  d.id = "disk0";
  d.file = "/lab/" + host + "/local/" + name + ".qcow2";
  d.format = "qcow2";
  d.capacity_bytes = 64 * kMiB;
  d.allocated_bytes = 16 * kMiB;
  d.bus = "virtio";
  d.datastore = "local";
  d.source_ref = "vda";
  vm.disks.push_back(d);
  sources::NicDescription n;
  n.id = "nic0";
  n.network = "lab";
  n.mac = "52:54:00:00:00:01";
  n.model = "virtio";
  vm.nics.push_back(n);
  return vm;
}

// The hosts' shared truth.
struct ColdWorld {
  std::mutex mu;
  std::map<std::string, std::map<std::string, sources::VmDescription>> vms;  // host -> libvirt
  std::map<std::string, std::vector<sources::ShareVm>> shares;  // "host/share" -> its VMs
  std::map<std::string, std::vector<std::string>> pool_files;   // "host/pool" -> files
  std::set<std::string> defined;                                // "host/name"
  struct Job {
    agent::MigrationJobSpec spec;
    std::string host;
    api::AgentJobState state = api::AgentJobState::kRunning;
    std::string phase = "exporting";
    int copy_polls_left = 0;
    int64_t eta_ms = -1;  // reported while copying
    bool proceeded = false;
    bool cancel = false;
    Status error;
    std::vector<api::AgentJobEvent> events;
  };
  std::map<std::string, Job> jobs;
  std::vector<std::string> starts;         // job ids, in start order
  std::map<std::string, int> io_failures;  // vm -> attempts that fail with io while copying
  int copy_polls = 2;
  int64_t copy_eta_ms = -1;  // the ETA the jobs report while copying (-1: unknown)
  bool hold = false;  // jobs stay in copying until false
  struct Close {
    std::string host;
    std::string id;
    bool restore_power = false;
  };
  std::vector<Close> closes;
  int close_failures = 0;  // CloseExport fails with io this many times first
  std::set<std::string> unreachable;
  bool forget_jobs = false;  // the agents lost their job files
  int max_copying = 0;
  int platform_checks = 0;

  int CopyingNow() {
    int n = 0;
    for (auto& [id, j] : jobs) {
      n += j.state == api::AgentJobState::kRunning &&
                   (j.phase == "exporting" || j.phase == "copying" || j.phase == "verifying")
               ? 1
               : 0;
    }
    return n;
  }

  // One step of a job's life per poll.
  void Advance(Job& j) {
    if (j.state != api::AgentJobState::kRunning) return;
    auto event = [&](const std::string& kind, const std::string& msg) {
      j.events.push_back({static_cast<int64_t>(j.events.size() + 1), kind, msg});
    };
    if (j.cancel) {
      j.state = api::AgentJobState::kCancelled;
      j.error = Status::Cancelled("cancelled; export closed, source restored");
      return;
    }
    const std::string& vm = j.spec.vm;
    if (j.phase == "exporting") {
      j.phase = "copying";
      j.copy_polls_left = copy_polls;
      j.eta_ms = copy_eta_ms;
      event("phase", "copying");
      if (io_failures[vm] > 0) {
        --io_failures[vm];
        j.state = api::AgentJobState::kFailed;
        j.error = Status::Io("disk0: NBD connection lost and the source did not come back");
      }
    } else if (j.phase == "copying") {
      if (hold) return;
      if (--j.copy_polls_left <= 0) j.phase = "verifying";
    } else if (j.phase == "verifying") {
      j.phase = j.spec.cold.deploy_auto ? "defining" : "awaiting-deploy";
    } else if (j.phase == "awaiting-deploy") {
      if (j.proceeded) j.phase = "defining";
    } else if (j.phase == "defining") {
      j.phase = "booting";
      defined.insert(j.host + "/" + j.spec.cold.vm.name);
    } else if (j.phase == "booting") {
      j.state = api::AgentJobState::kSucceeded;
      j.phase = "done";
    }
  }
};

class FakeColdAgent : public AgentLink {
 public:
  FakeColdAgent(std::shared_ptr<ColdWorld> world, std::string host)
      : w_(std::move(world)), host_(std::move(host)) {}

  Result<api::AgentHealth> Health() override {
    std::lock_guard<std::mutex> l(w_->mu);
    FERRY_TRY(Reachable());
    return api::AgentHealth{host_, "test", "qemu+tcp://" + host_ + "/system", "tcp://" + host_};
  }
  Result<hypervisor::Inventory> Inventory() override {
    std::lock_guard<std::mutex> l(w_->mu);
    FERRY_TRY(Reachable());
    hypervisor::Inventory inv;
    inv.host.hostname = host_;
    inv.host.free_memory_bytes = 8 * kGiB;
    inv.pools.push_back(
        {"local", "dir", "/lab/" + host_ + "/local", 10 * kGiB, 0, 10 * kGiB, true});
    inv.pools.push_back(
        {"small", "dir", "/lab/" + host_ + "/small", 100 * kMiB, 0, 100 * kMiB, true});
    inv.networks.push_back({"lab", true, "virbr-lab", "nat"});
    for (const auto& [name, vm] : w_->vms[host_]) {
      hypervisor::VmInfo v;
      v.name = name;
      v.uuid = vm.uuid;
      v.state = vm.running ? hypervisor::VmState::kRunning : hypervisor::VmState::kShutoff;
      inv.vms.push_back(v);
    }
    for (const std::string& d : w_->defined) {
      if (d.rfind(host_ + "/", 0) != 0) continue;
      hypervisor::VmInfo v;
      v.name = d.substr(host_.size() + 1);
      v.uuid = "new-" + v.name;
      v.state = hypervisor::VmState::kRunning;
      inv.vms.push_back(v);
    }
    return inv;
  }
  Result<api::VmXml> GetVmXml(const std::string&) override { return api::VmXml{"<domain/>", ""}; }
  Result<hypervisor::CpuCheck> CheckCpu(const std::string&, const hypervisor::CpuTarget&) override {
    return hypervisor::CpuCheck{hypervisor::CpuCompatibility::kIdentical, ""};
  }
  Result<api::PlatformCheck> CheckPlatform(const api::PlatformCheckRequest& r) override {
    std::lock_guard<std::mutex> l(w_->mu);
    FERRY_TRY(Reachable());
    ++w_->platform_checks;
    bool machine_ok = r.machine == "pc" || r.machine == "q35";
    return api::PlatformCheck{machine_ok, true,
                              machine_ok ? "" : "machine type " + r.machine + " is not supported"};
  }
  Result<sources::VmDescription> DescribeVm(const std::string& vm) override {
    std::lock_guard<std::mutex> l(w_->mu);
    FERRY_TRY(Reachable());
    auto it = w_->vms[host_].find(vm);
    if (it == w_->vms[host_].end()) return Status::NotFound("vm " + vm + " not found on " + host_);
    return it->second;
  }
  Result<std::vector<api::ShareInfo>> ListShares() override {
    std::lock_guard<std::mutex> l(w_->mu);
    FERRY_TRY(Reachable());
    std::vector<api::ShareInfo> out;
    for (const auto& [key, vms] : w_->shares) {
      if (key.rfind(host_ + "/", 0) != 0) continue;
      std::string name = key.substr(host_.size() + 1);
      out.push_back({name, "/srv/" + name, true});
    }
    return out;
  }
  Result<api::ShareListing> ListShareVms(const std::string& share) override {
    std::lock_guard<std::mutex> l(w_->mu);
    FERRY_TRY(Reachable());
    auto it = w_->shares.find(host_ + "/" + share);
    if (it == w_->shares.end()) return Status::NotFound("no share " + share);
    return api::ShareListing{it->second, {"odd.ovf: OVF: not XML (skipped)"}};
  }
  Result<std::vector<std::string>> ListPoolFiles(const std::string& pool) override {
    std::lock_guard<std::mutex> l(w_->mu);
    FERRY_TRY(Reachable());
    return w_->pool_files[host_ + "/" + pool];
  }
  Result<api::AgentJob> StartJob(const agent::MigrationJobSpec& spec) override {
    std::lock_guard<std::mutex> l(w_->mu);
    FERRY_TRY(Reachable());
    if (spec.kind != agent::MigrationKind::kCold) return Status::InvalidArgument("not cold");
    auto it = w_->jobs.find(spec.id);
    if (it == w_->jobs.end()) {
      ColdWorld::Job j;
      j.spec = spec;
      j.host = host_;
      j.events.push_back({1, "info", "cold job started on " + host_});
      it = w_->jobs.emplace(spec.id, j).first;
      w_->starts.push_back(spec.id);
      w_->max_copying = std::max(w_->max_copying, w_->CopyingNow());
    }
    return View(it->second);
  }
  Result<api::AgentJob> GetJob(const std::string& id) override {
    std::lock_guard<std::mutex> l(w_->mu);
    FERRY_TRY(Reachable());
    auto it = w_->jobs.find(id);
    if (it == w_->jobs.end() || w_->forget_jobs) return Status::NotFound("no job " + id);
    w_->Advance(it->second);
    w_->max_copying = std::max(w_->max_copying, w_->CopyingNow());
    return View(it->second);
  }
  Result<api::AgentJob> CancelJob(const std::string& id) override {
    std::lock_guard<std::mutex> l(w_->mu);
    FERRY_TRY(Reachable());
    auto it = w_->jobs.find(id);
    if (it == w_->jobs.end()) return Status::NotFound("no job " + id);
    it->second.cancel = true;
    return View(it->second);
  }
  Result<api::AgentJob> ProceedJob(const std::string& id) override {
    std::lock_guard<std::mutex> l(w_->mu);
    FERRY_TRY(Reachable());
    auto it = w_->jobs.find(id);
    if (it == w_->jobs.end()) return Status::NotFound("no job " + id);
    it->second.proceeded = true;
    return View(it->second);
  }
  Result<agent::ExportInfo> CloseExport(const std::string& id, bool restore_power) override {
    std::lock_guard<std::mutex> l(w_->mu);
    FERRY_TRY(Reachable());
    if (w_->close_failures > 0) {
      --w_->close_failures;
      return Status::Io(host_ + ": agent busy");
    }
    w_->closes.push_back({host_, id, restore_power});
    agent::ExportInfo e;
    e.id = id;
    e.state = agent::ExportState::kClosed;
    return e;
  }

 private:
  Status Reachable() const {
    if (w_->unreachable.count(host_)) return Status::Io(host_ + ": connection refused");
    return Status::Ok();
  }
  static api::AgentJob View(const ColdWorld::Job& j) {
    api::AgentJob out;
    out.id = j.spec.id;
    out.kind = agent::MigrationKind::kCold;
    out.vm = j.spec.vm;
    out.state = j.state;
    out.progress.phase = j.phase;
    out.progress.bytes_total = 64 * kMiB;
    out.progress.bytes_done = j.phase == "exporting" ? 0 : 32 * kMiB;
    if (j.phase == "copying") out.progress.eta_ms = j.eta_ms;
    out.progress.disks.push_back({"disk0", j.phase, 64 * kMiB, 32 * kMiB, 16 * kMiB, 32 * kMiB});
    out.events = j.events;
    out.started_at_ms = 1;
    out.error = j.error;
    if (j.state == api::AgentJobState::kSucceeded) {
      agent::JobResult r;
      r.total_ms = 4321;
      r.defined_vm = j.spec.cold.vm.name;
      r.boot = {true, true, 2100, "login: seen after 2.1 s"};
      out.result = r;
    }
    return out;
  }
  std::shared_ptr<ColdWorld> w_;
  std::string host_;
};

std::string Rfc3339(int64_t ms) {
  time_t t = static_cast<time_t>(ms / 1000);
  struct tm tm {};
  gmtime_r(&t, &tm);
  char buf[64];
  strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

// A plan of kvm VMs from host1 to host2's pool `local`.
std::string KvmPlan(const std::string& name, const std::vector<std::string>& vms,
                    const std::string& options = "") {
  std::string text = "name: " + name +
                     "\n"
                     "source: {type: kvm, host: host1}\n"
                     "target: {type: kvm, host: host2}\n"
                     "vms:\n";
  for (const std::string& vm : vms) text += "  - name: " + vm + "\n";
  text +=
      "networks:\n"
      "  - {source: \"*\", target: lab}\n"
      "storage:\n"
      "  - {source: \"*\", pool: local, format: qcow2}\n";
  if (!options.empty()) text += "options: {" + options + "}\n";
  return text;
}

class PlansTest : public ::testing::Test {
 protected:
  void SetUp() override {
    world_ = std::make_shared<ColdWorld>();
    for (const char* vm : {"g1", "g2", "g3"}) world_->vms["host1"][vm] = KvmVm("host1", vm);
  }

  void StartServer(Limits limits = {}, int64_t poll_ms = 20) {
    limits_ = limits;
    ServerConfig c;
    c.listen = "127.0.0.1:0";
    c.token = "test-token-123";
    c.database = dir_.Join("ferry.db");
    c.limits = limits;
    c.poll_ms = poll_ms;
    c.inventory_refresh_ms = 100000;
    c.cold_retry_delay_ms = 30;
    for (const char* h : {"host1", "host2", "host3"}) {
      c.hosts.push_back({h, h, "lab", std::string("http://") + h, std::string("tok-") + h});
    }
    Result<std::unique_ptr<Store>> store = OpenSqliteStore(c.database);
    ASSERT_TRUE(store.ok());
    std::shared_ptr<ColdWorld> world = world_;
    server_ = std::make_unique<Ferryd>(
        c, std::move(*store), [world](const std::string& url, const std::string&) {
          return std::make_unique<FakeColdAgent>(world, url.substr(7));
        });
    Status s = server_->Start();
    ASSERT_TRUE(s.ok()) << s.ToString();
    client_ = std::make_unique<api::HttpClient>(
        "http://127.0.0.1:" + std::to_string(server_->port()), "test-token-123");
  }

  void Restart() {
    server_->Stop();
    server_.reset();
    StartServer(limits_);
  }

  json Get(const std::string& path) {
    Result<std::string> r = client_->Get(path);
    EXPECT_TRUE(r.ok()) << path << ": " << r.status().ToString();
    return r.ok() ? json::parse(*r) : json();
  }

  // POST a plan; expects 201.
  json Apply(const std::string& text) {
    Result<std::string> r = client_->Post("/api/v1/plans", text);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? json::parse(*r) : json();
  }

  // Polls the plan until `pred` holds (or 10 s pass); returns it.
  json WaitPlan(const std::string& name, const std::function<bool(const json&)>& pred,
                int timeout_ms = 10000) {
    json p;
    for (int waited = 0; waited < timeout_ms; waited += 20) {
      p = Get("/api/v1/plans/" + name);
      if (pred(p)) return p;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    ADD_FAILURE() << "plan " << name << " never got there: " << p.dump();
    return p;
  }
  // Applies a one-VM plan (g1) named `name` and returns the milliseconds until it completed.
  int64_t MsToComplete(const std::string& name, int timeout_ms) {
    const auto start = std::chrono::steady_clock::now();
    Apply(KvmPlan(name, {"g1"}));
    json p = WaitPlan(
        name, [](const json& q) { return q.value("state", "") == "completed"; }, timeout_ms);
    EXPECT_EQ(p.value("state", ""), "completed") << p.dump();
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::steady_clock::now() - start)
        .count();
  }
  json WaitPlanState(const std::string& name, const std::string& state) {
    return WaitPlan(name, [&](const json& p) { return p.value("state", "") == state; });
  }
  json WaitMigration(const std::string& id, const std::function<bool(const json&)>& pred) {
    json m;
    for (int waited = 0; waited < 10000; waited += 20) {
      m = Get("/api/v1/migrations/" + id);
      if (pred(m)) return m;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    ADD_FAILURE() << "migration " << id << " never got there: " << m.dump();
    return m;
  }
  bool HasEvent(const std::string& id, const std::string& text) {
    json events = Get("/api/v1/migrations/" + id + "/events");  // outlives the loop
    for (const json& e : events["events"]) {
      if (e["message"].get<std::string>().find(text) != std::string::npos) return true;
    }
    return false;
  }
  // Changes or reads the world under its lock (the server's threads use it too).
  template <typename F>
  auto World(F f) {
    std::lock_guard<std::mutex> l(world_->mu);
    return f(*world_);
  }
  std::vector<std::string> Starts() {
    std::lock_guard<std::mutex> l(world_->mu);
    return world_->starts;
  }

  testing::TempDir dir_;
  std::shared_ptr<ColdWorld> world_;
  Limits limits_;
  std::unique_ptr<Ferryd> server_;
  std::unique_ptr<api::HttpClient> client_;
};

TEST(ColdMigrationTest, OptionsRoundTripAndJobSpecs) {
  Result<plan::PlanDocument> doc = plan::ParsePlan(
      KvmPlan("w", {"g1"}, "deploy: manual, verify: false, checkpoint_interval: 64MiB"));
  ASSERT_TRUE(doc.ok()) << doc.status().ToString();
  plan::TargetVm vm;
  vm.name = "g1";
  vm.vcpus = 2;
  vm.memory_bytes = 512 * kMiB;
  vm.machine = "pc";
  vm.firmware = "bios";
  vm.disks.push_back({"disk0", "local", "g1-disk0.qcow2", "qcow2", "", 64 * kMiB, "virtio", "vda"});
  ColdOptions o = MakeColdOptions("p-1", *doc, doc->vms[0], "", vm);
  EXPECT_EQ(o.copy_pools, std::vector<std::string>{"host2/local"});
  EXPECT_FALSE(o.deploy_auto);
  Result<ColdOptions> back = ParseColdOptions(ToJson(o));
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->vm, vm);
  EXPECT_EQ(back->checkpoint_bytes, 64 * kMiB);
  EXPECT_EQ(back->verify, plan::VerifyMode::kOff);
  EXPECT_EQ(back->verify_hash, ChunkHashAlgorithm::kXxh3_128);  // the plans' default
  // Records stored before the verify modes have a boolean; before xxh3-128, no verify_hash.
  {
    nlohmann::json old = nlohmann::json::parse(ToJson(o));
    old.erase("verify_hash");
    Result<ColdOptions> sha = ParseColdOptions(old.dump());
    ASSERT_TRUE(sha.ok()) << sha.status().ToString();
    EXPECT_EQ(sha->verify_hash, ChunkHashAlgorithm::kSha256);
    old["verify_hash"] = "crc";
    EXPECT_EQ(ParseColdOptions(old.dump()).status().code(), ErrorCode::kCorrupt);
    old.erase("verify_hash");
    old["verify"] = true;
    Result<ColdOptions> legacy = ParseColdOptions(old.dump());
    ASSERT_TRUE(legacy.ok()) << legacy.status().ToString();
    EXPECT_EQ(legacy->verify, plan::VerifyMode::kStream);
    old["verify"] = "sometimes";
    EXPECT_EQ(ParseColdOptions(old.dump()).status().code(), ErrorCode::kCorrupt);
  }
  EXPECT_EQ(ParseColdOptions(R"({"plan_id":7})").status().code(), ErrorCode::kCorrupt);
  EXPECT_NE(ParseColdOptions(R"({"plan_id":7})").status().message().find("plan_id"),
            std::string::npos);

  agent::SourceAgentRef src{"host1", "http://host1", "tok"};
  agent::MigrationJobSpec first = ColdJobSpecFor("m-1", 1, "g1", *back, src, false);
  EXPECT_EQ(first.id, "m-1");
  EXPECT_EQ(first.kind, agent::MigrationKind::kCold);
  EXPECT_EQ(first.cold.export_spec.id, "m-1");
  EXPECT_EQ(first.cold.export_spec.vm, "g1");
  EXPECT_EQ(first.cold.source, src);
  EXPECT_FALSE(first.cold.deploy_auto);
  // verify: off asks the source for no hashes; otherwise the plan's algorithm.
  EXPECT_EQ(first.cold.export_spec.hash_chunk_size, 0u);
  {
    ColdOptions on = *back;
    on.verify = plan::VerifyMode::kStream;
    agent::MigrationJobSpec s = ColdJobSpecFor("m-1", 1, "g1", on, src, false);
    EXPECT_EQ(s.cold.export_spec.hash_chunk_size, 4u << 20);
    EXPECT_EQ(s.cold.export_spec.hash_algorithm, ChunkHashAlgorithm::kXxh3_128);
  }
  agent::MigrationJobSpec third = ColdJobSpecFor("m-1", 3, "g1", *back, src, true);
  EXPECT_EQ(third.id, "m-1.a3");
  EXPECT_EQ(third.cold.export_spec, first.cold.export_spec);  // the same export every time
  EXPECT_TRUE(third.cold.deploy_auto);                        // deploy was already asked for

  EXPECT_TRUE(ColdFailureIsRetryable(ErrorCode::kIo, "copying"));
  EXPECT_FALSE(ColdFailureIsRetryable(ErrorCode::kMismatch, "verifying"));
  EXPECT_FALSE(ColdFailureIsRetryable(ErrorCode::kIo, "booting"));  // the VM exists there
  EXPECT_TRUE(ColdRestorePowerAfter("defining"));
  EXPECT_FALSE(ColdRestorePowerAfter("booting"));
}

TEST(ColdMigrationTest, TheFuzzSeedsParseOrNameTheField) {
  std::string dir = testing::SourceDir() + "/fuzz/corpus/cold_options_fuzz/";
  for (const char* good : {"kvm.json", "stage.json"}) {
    std::vector<uint8_t> bytes = testing::ReadFileBytes(dir + good);
    Result<ColdOptions> o = ParseColdOptions(std::string(bytes.begin(), bytes.end()));
    ASSERT_TRUE(o.ok()) << good << ": " << o.status().ToString();
    EXPECT_FALSE(o->copy_pools.empty());
  }
  std::vector<uint8_t> bad = testing::ReadFileBytes(dir + "bad_enum.json");
  Result<ColdOptions> o = ParseColdOptions(std::string(bad.begin(), bad.end()));
  EXPECT_EQ(o.status().code(), ErrorCode::kCorrupt);
  EXPECT_NE(o.status().message().find("source_type"), std::string::npos) << o.status().message();
}

TEST_F(PlansTest, ThreeVmsWithOneSlotPerPoolRunOneAfterTheOther) {
  StartServer(Limits{.copies_per_target_pool = 1});
  World([](ColdWorld& w) { w.copy_polls = 4; });
  json p = Apply(KvmPlan("wave-1", {"g1", "g2", "g3"}));
  EXPECT_EQ(p["state"], "running") << p.dump();
  ASSERT_EQ(p["vms"].size(), 3u);
  EXPECT_EQ(p["vms"][0]["target_name"], "g1");
  EXPECT_EQ(p["vms"][2]["state"], "queued");  // the first may have started already
  p = WaitPlanState("wave-1", "completed");
  for (const json& v : p["vms"]) {
    EXPECT_EQ(v["state"], "completed") << v.dump();
    EXPECT_EQ(v["result"]["boot"]["ok"], true) << v.dump();
  }
  EXPECT_EQ(World([](ColdWorld& w) { return w.max_copying; }), 1);
  // In creation order, each on the target host's agent, pulling from host1's export.
  std::vector<std::string> starts = Starts();
  ASSERT_EQ(starts.size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    std::lock_guard<std::mutex> l(world_->mu);
    const ColdWorld::Job& j = world_->jobs[starts[i]];
    EXPECT_EQ(j.host, "host2");
    EXPECT_EQ(j.spec.vm, "g" + std::to_string(i + 1));
    EXPECT_EQ(j.spec.cold.source.url, "http://host1");
    EXPECT_EQ(j.spec.cold.source.token, "tok-host1");
    EXPECT_EQ(j.spec.cold.export_spec.id, j.spec.id);
    EXPECT_EQ(j.spec.cold.vm.disks[0].pool, "local");
    EXPECT_EQ(j.spec.cold.plan_name, "wave-1");
  }
  json m = Get("/api/v1/migrations/" + p["vms"][2]["migration"].get<std::string>());
  EXPECT_EQ(m["type"], "cold");
  EXPECT_EQ(m["plan_id"], p["id"]);
  EXPECT_EQ(m["source"], "host1");
  EXPECT_EQ(m["target"], "host2");
  EXPECT_TRUE(HasEvent(m["id"], "waiting for a slot")) << m.dump();
  EXPECT_TRUE(HasEvent(m["id"], "pool host2/local"));
  // A successful job closes its export itself: ferryd does not.
  EXPECT_TRUE(World([](ColdWorld& w) { return w.closes.empty(); }));
  // The list shows it too.
  json plans = Get("/api/v1/plans")["plans"];
  ASSERT_EQ(plans.size(), 1u);
  EXPECT_EQ(plans[0]["name"], "wave-1");
  EXPECT_EQ(plans[0]["document"]["name"], "wave-1");
}

// After a phase change ferryd looks again within 25 ms, backing off to poll_ms: a job that
// goes through its last phases quickly is seen to the end without waiting a poll_ms per phase.
// The fake agent moves one step per poll: at a fixed 2 s poll this plan's seven steps would
// take 14 s.
TEST_F(PlansTest, PhaseChangesAreFollowedSoonerThanPollMs) {
  StartServer({}, /*poll_ms=*/2000);
  EXPECT_LT(MsToComplete("quick", 12000), 8000) << "the loop waited a whole poll_ms between phases";
}

// A copy whose ETA is under four polls is followed closely even without phase changes: ten
// polls of copying at a 2 s poll would take 20 s.
TEST_F(PlansTest, ACopyAboutToEndIsFollowedClosely) {
  StartServer({}, /*poll_ms=*/2000);
  World([](ColdWorld& w) {
    w.copy_polls = 10;
    w.copy_eta_ms = 300;
  });
  EXPECT_LT(MsToComplete("eta", 15000), 8000) << "the loop did not follow the ending copy closely";
}

TEST_F(PlansTest, FailedValidationStoresNothing) {
  StartServer();
  World([](ColdWorld& w) { w.pool_files["host2/local"] = {"g2-disk0.qcow2"}; });  // taken
  std::string text = KvmPlan("wave-1", {"g1", "g2", "nosuch"});
  std::string details;
  Result<std::string> r = client_->Send("POST", "/api/v1/plans", text, &details);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), ErrorCode::kFailedPrecondition);
  EXPECT_NE(r.status().message().find("nothing was stored"), std::string::npos)
      << r.status().message();
  json d = json::parse(details);
  ASSERT_EQ(d["vms"].size(), 3u) << details;
  EXPECT_EQ(d["vms"][0]["ok"], true) << details;
  auto failed = [&](size_t vm, const std::string& check) {
    for (const json& c : d["vms"][vm]["checks"]) {
      if (c["name"] == check) return !c["ok"].get<bool>();
    }
    return false;
  };
  EXPECT_TRUE(failed(1, "name_clash")) << details;
  EXPECT_TRUE(failed(2, "vm_found")) << details;
  EXPECT_TRUE(Get("/api/v1/plans")["plans"].empty());
  EXPECT_TRUE(Get("/api/v1/migrations")["migrations"].empty());
  EXPECT_TRUE(Starts().empty());

  // validate_only answers the same checks, stores nothing, even when all pass.
  r = client_->Post("/api/v1/plans?validate_only=1", KvmPlan("wave-1", {"g1", "g3"}));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(json::parse(*r)["ok"], true) << *r;
  EXPECT_TRUE(Get("/api/v1/plans")["plans"].empty());

  // Two VMs whose disks do not fit the pool together, though each alone would.
  std::string small = KvmPlan("wave-2", {"g1", "g2"});
  small.replace(small.find("pool: local"), 11, "pool: small");
  r = client_->Send("POST", "/api/v1/plans", small, &details);
  EXPECT_EQ(r.status().code(), ErrorCode::kFailedPrecondition);
  EXPECT_NE(r.status().message().find("pool_capacity"), std::string::npos) << r.status().message();
  // The source agent down: source_reachable, nothing stored.
  World([](ColdWorld& w) { w.unreachable.insert("host1"); });
  r = client_->Send("POST", "/api/v1/plans", KvmPlan("wave-3", {"g1"}), &details);
  EXPECT_EQ(r.status().code(), ErrorCode::kFailedPrecondition);
  EXPECT_NE(r.status().message().find("source_reachable"), std::string::npos)
      << r.status().message();
  World([](ColdWorld& w) { w.unreachable.clear(); });
  // A document that does not parse is a bad argument naming the field.
  r = client_->Post("/api/v1/plans", "name: x\nsource: {type: kvm, host: host1}\n");
  EXPECT_EQ(r.status().code(), ErrorCode::kInvalidArgument);
  r = client_->Post("/api/v1/plans", KvmPlan("w", {"g1"}, "deploy: sometimes"));
  EXPECT_EQ(r.status().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("options.deploy"), std::string::npos) << r.status().message();
  EXPECT_TRUE(Get("/api/v1/plans")["plans"].empty());
  EXPECT_TRUE(Get("/api/v1/migrations")["migrations"].empty());
}

TEST_F(PlansTest, AnIoFailureIsRetriedWithANewJobIdAndCompletes) {
  StartServer();
  World([](ColdWorld& w) { w.io_failures["g1"] = 2; });
  json p = Apply(KvmPlan("wave-1", {"g1"}));
  p = WaitPlanState("wave-1", "completed");
  std::string id = p["vms"][0]["migration"];
  EXPECT_EQ(Starts(), (std::vector<std::string>{id, id + ".a2", id + ".a3"}));
  json m = Get("/api/v1/migrations/" + id);
  EXPECT_EQ(m["state"], "completed");
  EXPECT_EQ(m["attempt"], 3);
  EXPECT_EQ(m["job_id"], id + ".a3");
  EXPECT_TRUE(HasEvent(id, "attempt 1 failed in copying"));
  EXPECT_TRUE(HasEvent(id, "attempt 2: starting job " + id + ".a2"));
  EXPECT_TRUE(HasEvent(id, "cold job started on host2"));  // the agent's events, per attempt
  EXPECT_TRUE(World([](ColdWorld& w) { return w.closes.empty(); }));
}

TEST_F(PlansTest, FiveIoFailuresFailTheMigrationAndCloseTheExportWithRestorePower) {
  StartServer();
  World([](ColdWorld& w) { w.io_failures["g1"] = 5; });
  World(
      [](ColdWorld& w) { w.close_failures = 2; });  // the source agent answers only the third close
  json p = Apply(KvmPlan("wave-1", {"g1"}));
  p = WaitPlanState("wave-1", "failed");
  std::string id = p["vms"][0]["migration"];
  EXPECT_EQ(Starts().size(), 5u);
  EXPECT_EQ(Starts().back(), id + ".a5");
  json m = WaitMigration(id, [](const json& j) {
    return j.contains("export_close") && j["export_close"].value("done", false);
  });
  EXPECT_EQ(m["state"], "failed");
  EXPECT_EQ(m["error"]["code"], "io");
  EXPECT_NE(m["error"]["message"].get<std::string>().find("attempt 5 of 5"), std::string::npos)
      << m.dump();
  {
    std::lock_guard<std::mutex> l(world_->mu);
    ASSERT_EQ(world_->closes.size(), 1u);
    EXPECT_EQ(world_->closes[0].host, "host1");
    EXPECT_EQ(world_->closes[0].id, id);
    EXPECT_TRUE(world_->closes[0].restore_power);
  }
  EXPECT_TRUE(HasEvent(id, "; trying again"));
  EXPECT_TRUE(HasEvent(id, "closed on host1"));
}

TEST_F(PlansTest, AFailureThatIsNotIoIsNotRetried) {
  StartServer();
  World([](ColdWorld& w) { w.hold = true; });  // stays in copying until the test fails it
  json p = Apply(KvmPlan("wave-1", {"g1"}));
  std::string id = p["vms"][0]["migration"];
  WaitMigration(id, [](const json& j) { return j["phase"] == "copying"; });
  {
    std::lock_guard<std::mutex> l(world_->mu);
    ColdWorld::Job& j = world_->jobs[id];
    j.state = api::AgentJobState::kFailed;
    j.error = Status::Mismatch("disk0: chunk 3 differs from the source");
  }
  p = WaitPlanState("wave-1", "failed");
  json m = WaitMigration(id, [](const json& j) {
    return j.contains("export_close") && j["export_close"].value("done", false);
  });
  EXPECT_EQ(m["error"]["code"], "mismatch");
  EXPECT_EQ(Starts().size(), 1u);
  std::lock_guard<std::mutex> l(world_->mu);
  ASSERT_EQ(world_->closes.size(), 1u);
  EXPECT_TRUE(world_->closes[0].restore_power);
}

TEST_F(PlansTest, CancelARunningAndAQueuedMigration) {
  StartServer(Limits{.copies_per_target_pool = 1});
  World([](ColdWorld& w) { w.hold = true; });
  json p = Apply(KvmPlan("wave-1", {"g1", "g2"}));
  std::string first = p["vms"][0]["migration"], second = p["vms"][1]["migration"];
  WaitMigration(first, [](const json& j) { return j["phase"] == "copying"; });
  Result<std::string> r = client_->Post("/api/v1/plans/wave-1/cancel", "");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(Get("/api/v1/migrations/" + second)["state"], "cancelled");
  p = WaitPlanState("wave-1", "cancelled");
  EXPECT_EQ(p["vms"][0]["state"], "cancelled");
  EXPECT_EQ(Starts().size(), 1u);
  WaitMigration(first, [](const json& j) {
    return j.contains("export_close") && j["export_close"].value("done", false);
  });
  std::lock_guard<std::mutex> l(world_->mu);
  ASSERT_EQ(world_->closes.size(), 1u);
  EXPECT_EQ(world_->closes[0].id, first);
  EXPECT_TRUE(world_->closes[0].restore_power);
}

TEST_F(PlansTest, CancelWithTheTargetAgentUnreachableRestoresTheSource) {
  StartServer();
  World([](ColdWorld& w) { w.hold = true; });
  json p = Apply(KvmPlan("wave-1", {"g1"}));
  std::string id = p["vms"][0]["migration"];
  WaitMigration(id, [](const json& j) { return j["phase"] == "copying"; });
  World([](ColdWorld& w) { w.unreachable.insert("host2"); });
  Result<std::string> r = client_->Post("/api/v1/migrations/" + id + "/cancel", "");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  json m = json::parse(*r);
  EXPECT_EQ(m["state"], "cancelled") << m.dump();
  EXPECT_NE(m["error"]["message"].get<std::string>().find("cannot be reached"), std::string::npos);
  WaitPlanState("wave-1", "cancelled");
  std::lock_guard<std::mutex> l(world_->mu);
  ASSERT_EQ(world_->closes.size(), 1u);
  EXPECT_TRUE(world_->closes[0].restore_power);
}

TEST_F(PlansTest, ARestartedFerrydFollowsTheSameJob) {
  StartServer();
  World([](ColdWorld& w) { w.hold = true; });
  json p = Apply(KvmPlan("wave-1", {"g1"}));
  std::string id = p["vms"][0]["migration"];
  WaitMigration(id, [](const json& j) { return j["phase"] == "copying"; });
  Restart();
  World([](ColdWorld& w) { w.hold = false; });
  p = WaitPlanState("wave-1", "completed");
  EXPECT_EQ(Starts(), std::vector<std::string>{id});  // not started twice
  EXPECT_EQ(Get("/api/v1/migrations/" + id)["attempt"], 1);
}

TEST_F(PlansTest, ARestartedFerrydStartsAJobTheAgentLostAgain) {
  StartServer();
  World([](ColdWorld& w) { w.hold = true; });
  json p = Apply(KvmPlan("wave-1", {"g1"}));
  std::string id = p["vms"][0]["migration"];
  WaitMigration(id, [](const json& j) { return j["phase"] == "copying"; });
  server_->Stop();
  {
    std::lock_guard<std::mutex> l(world_->mu);
    world_->jobs.clear();  // the target agent came back without its job files
    world_->hold = false;
  }
  StartServer(limits_);
  p = WaitPlanState("wave-1", "completed");
  EXPECT_EQ(Starts(), (std::vector<std::string>{id, id + ".a2"}));
  EXPECT_TRUE(HasEvent(id, "has no record of job " + id));
}

TEST_F(PlansTest, ManualDeployWaitsWithoutHoldingACopySlot) {
  StartServer(Limits{.copies_per_target_pool = 1});
  json p = Apply(KvmPlan("wave-1", {"g1", "g2"}, "deploy: manual"));
  // Both copy (one after the other) and wait: the first holds no slot while it waits.
  p = WaitPlan("wave-1", [](const json& j) {
    for (const json& v : j["vms"]) {
      if (v["phase"] != "awaiting-deploy") return false;
    }
    return true;
  });
  EXPECT_EQ(p["state"], "running");
  EXPECT_EQ(World([](ColdWorld& w) { return w.max_copying; }), 1);
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_EQ(Get("/api/v1/plans/wave-1")["vms"][0]["phase"], "awaiting-deploy");  // it waits
  Result<std::string> r = client_->Post("/api/v1/plans/wave-1/deploy", "");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  p = WaitPlanState("wave-1", "completed");
  std::lock_guard<std::mutex> l(world_->mu);
  for (auto& [id, j] : world_->jobs) EXPECT_TRUE(j.proceeded) << id;
  EXPECT_TRUE(world_->defined.count("host2/g1"));
  EXPECT_TRUE(world_->defined.count("host2/g2"));
}

TEST_F(PlansTest, DeployAskedWhileCopyingAndAPartialPlan) {
  StartServer();
  World([](ColdWorld& w) { w.hold = true; });
  World([](ColdWorld& w) { w.io_failures["g2"] = kColdMaxAttempts; });  // g2 never gets through
  json p = Apply(KvmPlan("wave-1", {"g1", "g2"}, "deploy: manual"));
  std::string g1 = p["vms"][0]["migration"];
  WaitMigration(g1, [](const json& j) { return j["phase"] == "copying"; });
  ASSERT_TRUE(client_->Post("/api/v1/plans/wave-1/deploy", "").ok());
  World([](ColdWorld& w) { w.hold = false; });
  p = WaitPlanState("wave-1", "partial");
  EXPECT_EQ(p["vms"][0]["state"], "completed");
  EXPECT_EQ(p["vms"][1]["state"], "failed");
  EXPECT_TRUE(HasEvent(g1, "deploy requested"));
  std::lock_guard<std::mutex> l(world_->mu);
  EXPECT_TRUE(world_->jobs[g1].proceeded);  // asked when it got to awaiting-deploy
}

TEST_F(PlansTest, StartLaterOrAtATime) {
  StartServer();
  json p = Apply(KvmPlan("later", {"g1"}, "start: later"));
  EXPECT_EQ(p["state"], "ready");
  EXPECT_TRUE(p["vms"][0]["migration"].is_null());
  EXPECT_TRUE(Get("/api/v1/migrations")["migrations"].empty());
  // Started on request, once.
  ASSERT_TRUE(client_->Post("/api/v1/plans/later/start", "").ok());
  EXPECT_EQ(client_->Post("/api/v1/plans/later/start", "").status().code(),
            ErrorCode::kFailedPrecondition);
  WaitPlanState("later", "completed");

  int64_t soon = (std::chrono::duration_cast<std::chrono::seconds>(
                      std::chrono::system_clock::now().time_since_epoch())
                      .count() +
                  2) *
                 1000;
  p = Apply(KvmPlan("at", {"g2"}, "start: \"" + Rfc3339(soon) + "\""));
  EXPECT_EQ(p["state"], "ready");
  p = WaitPlanState("at", "completed");
  json m = Get("/api/v1/migrations/" + p["vms"][0]["migration"].get<std::string>());
  EXPECT_GE(m["created_at_ms"].get<int64_t>(), soon);

  p = Apply(KvmPlan("past", {"g3"}, "start: \"2020-01-01T00:00:00Z\""));
  EXPECT_EQ(p["state"], "running");  // its time had come
  WaitPlanState("past", "completed");
}

TEST_F(PlansTest, DeleteOnlyWithoutActiveMigrations) {
  StartServer();
  World([](ColdWorld& w) { w.hold = true; });
  json p = Apply(KvmPlan("wave-1", {"g1"}));
  std::string id = p["vms"][0]["migration"];
  EXPECT_EQ(client_->Delete("/api/v1/plans/wave-1").status().code(),
            ErrorCode::kFailedPrecondition);
  // A second plan for the same VM is refused while the first moves it.
  std::string details;
  Result<std::string> r =
      client_->Send("POST", "/api/v1/plans", KvmPlan("again", {"g1"}), &details);
  EXPECT_EQ(r.status().code(), ErrorCode::kFailedPrecondition);
  EXPECT_NE(r.status().message().find("already being moved by migration " + id), std::string::npos)
      << r.status().message();
  // Same name: already exists.
  EXPECT_EQ(client_->Post("/api/v1/plans", KvmPlan("wave-1", {"g2"})).status().code(),
            ErrorCode::kAlreadyExists);
  World([](ColdWorld& w) { w.hold = false; });
  WaitPlanState("wave-1", "completed");
  ASSERT_TRUE(client_->Delete("/api/v1/plans/" + p["id"].get<std::string>()).ok());
  EXPECT_EQ(client_->Get("/api/v1/plans/wave-1").status().code(), ErrorCode::kNotFound);
  EXPECT_EQ(client_->Get("/api/v1/migrations/" + id).status().code(), ErrorCode::kNotFound);
}

TEST_F(PlansTest, ShareSourceToAStagingShare) {
  sources::ShareVm web;
  web.id = "web1.ova";
  web.share = "exports";
  web.vm = KvmVm("host1", "web1");
  web.vm.platform = sources::Platform::kVmware;
  web.vm.running = false;
  web.vm.disks[0].file = "/srv/exports/web1.ova";
  web.vm.disks[0].format = "ova";
  web.vm.disks[0].datastore = "exports";
  world_->shares["host1/exports"] = {web};
  world_->shares["host3/staging"] = {};
  StartServer();
  std::string text =
      "name: stage-1\n"
      "source: {type: share, host: host1, share: exports}\n"
      "target: {type: share, host: host3, share: staging, format: vhd}\n"
      "vms:\n  - name: web1\n"
      "networks:\n  - {source: \"*\", target: lab}\n";
  json p = Apply(text);
  p = WaitPlanState("stage-1", "completed");
  json m = Get("/api/v1/migrations/" + p["vms"][0]["migration"].get<std::string>());
  EXPECT_EQ(m["type"], "stage");
  EXPECT_EQ(m["target"], "host3");
  std::vector<std::string> starts = Starts();
  ASSERT_EQ(starts.size(), 1u);
  std::lock_guard<std::mutex> l(world_->mu);
  const agent::ColdJobSpec& c = world_->jobs[starts[0]].spec.cold;
  EXPECT_EQ(c.export_spec.share, "exports");
  EXPECT_EQ(c.export_spec.share_vm, "web1.ova");
  EXPECT_EQ(c.export_spec.vm, "");
  EXPECT_EQ(c.target_type, plan::EndpointType::kShare);
  EXPECT_EQ(c.target_share, "staging");
  EXPECT_EQ(c.vm.disks[0].format, "vhd");
}

TEST_F(PlansTest, SharesListsEveryHostsShareVms) {
  sources::ShareVm a;
  a.id = "db1/vm.json";
  a.share = "exports";
  a.vm = KvmVm("host1", "db1");
  world_->shares["host1/exports"] = {a, a};
  world_->shares["host1/exports"][1].id = "db1-copy/vm.json";
  StartServer();
  json all = Get("/api/v1/shares");
  ASSERT_EQ(all["vms"].size(), 2u) << all.dump();
  EXPECT_EQ(all["vms"][0]["host"], "host1");
  EXPECT_EQ(all["vms"][0]["id"], "db1/vm.json");
  EXPECT_FALSE(all["problems"].empty());
  EXPECT_TRUE(Get("/api/v1/shares?host=host2")["vms"].empty());
  EXPECT_EQ(client_->Get("/api/v1/shares?host=nohost").status().code(), ErrorCode::kNotFound);
  // Two VMs of one name: the plan must name one by id.
  std::string text =
      "name: s\nsource: {type: share, host: host1, share: exports}\n"
      "target: {type: kvm, host: host2}\nvms:\n  - name: db1\n"
      "networks:\n  - {source: \"*\", target: lab}\n"
      "storage:\n  - {source: \"*\", pool: local}\n";
  Result<std::string> r = client_->Post("/api/v1/plans", text);
  EXPECT_EQ(r.status().code(), ErrorCode::kFailedPrecondition);
  EXPECT_NE(r.status().message().find("name it by id"), std::string::npos) << r.status().message();
  std::string by_id = text;
  by_id.replace(by_id.find("- name: db1"), 11, "- id: db1-copy/vm.json");
  json p = Apply(by_id);
  EXPECT_EQ(p["state"], "running") << p.dump();
}

}  // namespace
}  // namespace ferry::server
