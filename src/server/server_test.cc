// ferryd's logic without hosts: planning and validation over made-up inventories, the
// scheduler's limits, the config parser, and the whole server (real SQLite store, real HTTP)
// driving fake agents: queueing under limits, cancel, restart reconciliation.
#include <gtest/gtest.h>

#include <atomic>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "api/http.h"
#include "server/config.h"
#include "server/ferryd.h"
#include "server/limits.h"
#include "server/planning.h"
#include "store/store.h"
#include "test_util.h"

namespace ferry::server {
namespace {

using hypervisor::CpuCompatibility;
using hypervisor::VmState;

constexpr uint64_t kMiB = 1 << 20;

hypervisor::VmInfo MakeVm(const std::string& name, VmState state, const std::string& disk_path) {
  hypervisor::VmInfo vm;
  vm.name = name;
  vm.uuid = "uuid-" + name;
  vm.state = state;
  vm.vcpus = 1;
  vm.memory_bytes = 256 * kMiB;
  vm.machine_type = "pc-i440fx-7.2";
  vm.arch = "x86_64";
  hypervisor::VmDisk d;
  d.target = "vda";
  d.device = "disk";
  d.format = "qcow2";
  d.source_path = disk_path;
  d.capacity_bytes = 32 * kMiB;
  d.allocation_bytes = 8 * kMiB;
  vm.disks.push_back(d);
  hypervisor::VmNic nic;
  nic.type = "network";
  nic.network = "lab";
  nic.mac = "52:54:00:00:00:01";
  vm.nics.push_back(nic);
  return vm;
}

HostView MakeHost(const std::string& id) {
  HostView h;
  h.id = id;
  h.reachable = true;
  h.inventory.host.hostname = id;
  h.inventory.host.free_memory_bytes = 4096 * kMiB;
  h.inventory.pools.push_back({"nas1", "dir", "/lab/nas1", 0, 0, 10240 * kMiB, true});
  h.inventory.pools.push_back({"local", "dir", "/lab/" + id + "/local", 0, 0, 10240 * kMiB, true});
  h.inventory.networks.push_back({"lab", true, "virbr-lab", "nat"});
  return h;
}

struct PlanFixture {
  HostView src = MakeHost("host1");
  HostView dst = MakeHost("host2");
  MigrationRequest req;
  hypervisor::VmInfo vm = MakeVm("g1", VmState::kRunning, "/lab/nas1/g1.qcow2");

  MigrationPlan Plan(bool same_host = false) {
    PlanInput in;
    in.source = &src;
    in.target = same_host ? &src : &dst;
    in.vm = &vm;
    in.request = &req;
    in.cpu = hypervisor::CpuCheck{CpuCompatibility::kIdentical, ""};
    in.platform = api::PlatformCheck{true, true, ""};
    return PlanMigration(in);
  }
};

const Check* FindCheck(const MigrationPlan& p, const std::string& name) {
  for (const Check& c : p.checks) {
    if (c.name == name) return &c;
  }
  return nullptr;
}

TEST(PlanningTest, ChoosesTheTransferTypeFromTopologyAndState) {
  PlanFixture f;
  EXPECT_EQ(f.Plan().type, "live");
  EXPECT_TRUE(f.Plan().ok()) << f.Plan().FailureSummary();

  f.req.storage = "nas2";
  f.dst.inventory.pools.push_back({"nas2", "dir", "/lab/nas2", 0, 0, 10240 * kMiB, true});
  f.src.inventory.pools.push_back({"nas2", "dir", "/lab/nas2", 0, 0, 10240 * kMiB, true});
  EXPECT_EQ(f.Plan(/*same_host=*/true).type, "live-storage");
  EXPECT_TRUE(f.Plan(true).ok()) << f.Plan(true).FailureSummary();
  EXPECT_EQ(f.Plan().type, "live-vsm");

  f.req.storage.clear();
  f.vm.state = VmState::kShutoff;
  EXPECT_EQ(f.Plan().type, "reregister");
  EXPECT_TRUE(f.Plan().ok());
}

TEST(PlanningTest, IncompatibleCpuFallsBackToQuickWhenAutomatic) {
  PlanFixture f;
  PlanInput in;
  in.source = &f.src;
  in.target = &f.dst;
  in.vm = &f.vm;
  in.request = &f.req;
  in.cpu = hypervisor::CpuCheck{CpuCompatibility::kIncompatible, "host lacks avx512f"};
  in.platform = api::PlatformCheck{true, true, ""};
  MigrationPlan p = PlanMigration(in);
  EXPECT_EQ(p.type, "quick");
  // Quick still needs the CPU to run the guest: the check fails and says why.
  ASSERT_NE(FindCheck(p, "cpu_compatible"), nullptr);
  EXPECT_FALSE(FindCheck(p, "cpu_compatible")->ok);
  EXPECT_NE(FindCheck(p, "cpu_compatible")->message.find("avx512f"), std::string::npos);
}

TEST(PlanningTest, LocalDisksNeedATargetPool) {
  PlanFixture f;
  f.vm.disks[0].source_path = "/lab/host1/local/g1.qcow2";
  MigrationPlan p = f.Plan();
  EXPECT_EQ(p.type, "");
  EXPECT_FALSE(p.ok());
  ASSERT_NE(FindCheck(p, "type_applicable"), nullptr);
  EXPECT_NE(p.FailureSummary().find("--storage"), std::string::npos) << p.FailureSummary();
  f.req.type = "live";
  p = f.Plan();
  ASSERT_NE(FindCheck(p, "storage_visible"), nullptr);
  EXPECT_FALSE(FindCheck(p, "storage_visible")->ok);
}

TEST(PlanningTest, EveryFailedCheckIsNamed) {
  PlanFixture f;
  f.dst.inventory.networks.clear();
  f.dst.inventory.host.free_memory_bytes = 100 * kMiB;
  f.dst.inventory.vms.push_back(MakeVm("g1", VmState::kShutoff, "/x"));
  MigrationPlan p = f.Plan();
  EXPECT_FALSE(p.ok());
  for (const char* name : {"networks", "memory", "name_clash", "uuid_clash"}) {
    ASSERT_NE(FindCheck(p, name), nullptr) << name;
    EXPECT_FALSE(FindCheck(p, name)->ok) << name;
  }
  EXPECT_TRUE(FindCheck(p, "cpu_compatible")->ok);
  EXPECT_NE(p.FailureSummary().find("lacks the network"), std::string::npos);
}

TEST(PlanningTest, PoolCapacityAndSameHost) {
  PlanFixture f;
  f.req.storage = "local";
  f.dst.inventory.pools[1].available_bytes = 4 * kMiB;  // host2's local pool is nearly full
  MigrationPlan p = f.Plan();
  EXPECT_EQ(p.type, "live-vsm");
  ASSERT_NE(FindCheck(p, "pool_capacity"), nullptr);
  EXPECT_FALSE(FindCheck(p, "pool_capacity")->ok);
  f.req.storage = "nas1";  // already there
  p = f.Plan(/*same_host=*/true);
  EXPECT_FALSE(FindCheck(p, "pool_capacity")->ok);
  f.req.storage.clear();
  f.req.type = "live";
  p = f.Plan(/*same_host=*/true);
  EXPECT_FALSE(FindCheck(p, "not_same_host")->ok);
}

TEST(PlanningTest, UnreachableTargetFailsFirst) {
  PlanFixture f;
  f.dst.reachable = false;
  f.dst.error = "io: connection refused";
  MigrationPlan p = f.Plan();
  ASSERT_EQ(p.checks.size(), 1u);
  EXPECT_EQ(p.checks[0].name, "target_reachable");
  EXPECT_NE(p.checks[0].message.find("connection refused"), std::string::npos);
}

TEST(PlanningTest, RequestParsingNamesTheField) {
  EXPECT_TRUE(ParseMigrationRequest(R"({"vms":["g1"],"to":"host2"})").ok());
  struct Bad {
    const char* body;
    const char* field;
  } bad[] = {
      {R"({"vms":"g1"})", "vms"},
      {R"({"vms":["g1"],"type":"teleport"})", "type"},
      {R"({"vms":["g1"],"max_downtime_ms":-5})", "max_downtime_ms"},
      {R"({"vms":[""]})", "vms[0]"},
      {R"({"to":"host2"})", "either vms"},
      {R"({"vms":["g1"],"evacuate":"host1"})", "either vms"},
      {R"({"vms":["g1"],"allow_postcopy":"yes"})", "allow_postcopy"},
      {R"([1,2])", "not a JSON object"},
  };
  for (const Bad& b : bad) {
    Result<MigrationRequest> r = ParseMigrationRequest(b.body);
    ASSERT_FALSE(r.ok()) << b.body;
    EXPECT_EQ(r.status().code(), ErrorCode::kInvalidArgument);
    EXPECT_NE(r.status().message().find(b.field), std::string::npos) << r.status().message();
  }
  Result<MigrationRequest> round = ParseMigrationRequest(MigrationRequestToJson(
      *ParseMigrationRequest(R"({"vms":["a","b"],"to":"h","bandwidth":1000,"priority":3})")));
  ASSERT_TRUE(round.ok());
  EXPECT_EQ(round->vms.size(), 2u);
  EXPECT_EQ(round->bandwidth, 1000u);
  EXPECT_EQ(round->priority, 3);
}

TEST(LimitsTest, CountsWhereTheLoadIs) {
  Limits l{.live_per_host = 1, .storage_per_host = 1, .total = 3};
  std::vector<SlotUse> running = {{"live", "host1", "host2"}};
  EXPECT_TRUE(BlockedBy({"live", "host1", "host3"}, running, l).has_value());
  EXPECT_TRUE(BlockedBy({"live", "host3", "host2"}, running, l).has_value());
  EXPECT_FALSE(BlockedBy({"live", "host3", "host4"}, running, l).has_value());
  // A storage move on host1 uses a storage slot, not a live one.
  EXPECT_FALSE(BlockedBy({"live-storage", "host1", "host1"}, running, l).has_value());
  running.push_back({"live-storage", "host3", "host3"});
  EXPECT_TRUE(BlockedBy({"live-vsm", "host3", "host4"}, running, l).has_value());
  running.push_back({"reregister", "host5", "host6"});
  std::optional<std::string> why = BlockedBy({"reregister", "host7", "host8"}, running, l);
  ASSERT_TRUE(why.has_value());
  EXPECT_NE(why->find("in total"), std::string::npos);
  EXPECT_FALSE(BlockedBy({"live", "host1", "host2"}, {}, Limits{0, 0, 0}).has_value());
}

TEST(LimitsTest, ColdMigrationsTakeACopySlotPerDiskOnlyWhileCopying) {
  Limits l{.live_per_host = 1,
           .storage_per_host = 1,
           .total = 8,
           .copies_per_source_host = 3,
           .copies_per_target_pool = 2};
  SlotUse two_disks{"cold", "host1", "host2", {"host2/local", "host2/local"}};
  std::vector<SlotUse> running = {two_disks};
  // The pool has 2 disks coming in: full. Another pool of the same host is not.
  std::optional<std::string> why =
      BlockedBy({"cold", "host3", "host2", {"host2/local"}}, running, l);
  ASSERT_TRUE(why.has_value());
  EXPECT_NE(why->find("pool host2/local"), std::string::npos) << *why;
  EXPECT_FALSE(BlockedBy({"cold", "host3", "host2", {"host2/nas1"}}, running, l).has_value());
  // Source host1 copies 2 disks out: one more fits (limit 3), two more do not.
  EXPECT_FALSE(BlockedBy({"stage", "host1", "host3", {"host3/share:staging"}}, running, l));
  why = BlockedBy({"cold", "host1", "host3", {"host3/a", "host3/b"}}, running, l);
  ASSERT_TRUE(why.has_value());
  EXPECT_NE(why->find("per source host"), std::string::npos) << *why;
  // Cold moves take no live slot: a live move of host1 still fits.
  EXPECT_FALSE(BlockedBy({"live", "host1", "host2"}, running, l).has_value());
  // Waiting for its deploy (or defining, booting) it holds nothing, not even a total slot.
  running[0].copying = false;
  EXPECT_FALSE(BlockedBy({"cold", "host1", "host2", {"host2/local", "host2/local"}}, running,
                         Limits{.total = 1, .copies_per_target_pool = 2}));
  // A migration with more disks than the limit starts alone, never next to others.
  SlotUse five{"cold", "host4", "host5", {"p", "p", "p", "p", "p"}};
  EXPECT_FALSE(BlockedBy(five, {}, l).has_value());
  EXPECT_TRUE(BlockedBy(five, {{"cold", "host4", "host6", {"q"}}}, l).has_value());
  EXPECT_TRUE(CopiesInPhase("copying"));
  EXPECT_TRUE(CopiesInPhase("starting"));
  EXPECT_FALSE(CopiesInPhase("awaiting-deploy"));
  EXPECT_FALSE(CopiesInPhase("booting"));
}

TEST(ConfigTest, ParsesAndNamesBadFields) {
  Result<ServerConfig> c = ParseServerConfig(
      R"({"token":"0123456789","limits":{"live_per_host":1},"hosts":[{"id":"h1","agent_url":"http://x"}]})");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->limits.live_per_host, 1);
  EXPECT_EQ(c->limits.total, 8);
  ASSERT_EQ(c->hosts.size(), 1u);
  EXPECT_EQ(c->hosts[0].name, "h1");
  Result<ServerConfig> bad = ParseServerConfig(R"({"token":"0123456789","hosts":[{"id":"h1"}]})");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("hosts[0].agent_url"), std::string::npos);
  bad = ParseServerConfig(R"({"token":"0123456789","limits":{"total":-1}})");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("limits.total"), std::string::npos);
  EXPECT_FALSE(ParseServerConfig(R"({"token":"short"})").ok());
  c = ParseServerConfig(
      R"({"token":"0123456789","limits":{"copies_per_source_host":2,"copies_per_target_pool":1}})");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->limits.copies_per_source_host, 2);
  EXPECT_EQ(c->limits.copies_per_target_pool, 1);
  EXPECT_EQ(ParseServerConfig(R"({"token":"0123456789"})")->limits.copies_per_target_pool, 4);
  bad = ParseServerConfig(R"({"token":"0123456789","limits":{"copies_per_target_pool":"x"}})");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("limits.copies_per_target_pool"), std::string::npos);
}

// --- The whole server with fake agents ---------------------------------------------------

// The hosts' shared truth: where each VM runs, and the jobs each agent runs.
struct FakeWorld {
  std::mutex mu;
  std::map<std::string, std::string> vm_host;  // vm -> host running it
  std::map<std::string, int> job_polls;        // vm -> GetJob polls a job takes
  struct Job {
    agent::MigrationJobSpec spec;
    std::string host;
    int polls_left = 0;
    api::AgentJobState state = api::AgentJobState::kRunning;
  };
  std::map<std::string, Job> jobs;  // id -> job
  int starts = 0;
  int max_concurrent = 0;
  bool lose_jobs = false;  // the agent forgets its jobs (as if restarted without its files)
  std::set<std::string> unreachable;

  int RunningNow() {
    int n = 0;
    for (auto& [id, j] : jobs) n += j.state == api::AgentJobState::kRunning ? 1 : 0;
    return n;
  }
};

class FakeAgent : public AgentLink {
 public:
  FakeAgent(std::shared_ptr<FakeWorld> world, std::string host)
      : world_(std::move(world)), host_(std::move(host)) {}

  Result<api::AgentHealth> Health() override {
    std::lock_guard<std::mutex> l(world_->mu);
    if (world_->unreachable.count(host_)) return Status::Io(host_ + ": connection refused");
    return api::AgentHealth{host_, "test", "qemu+tcp://" + host_ + "/system", "tcp://" + host_};
  }
  Result<hypervisor::Inventory> Inventory() override {
    std::lock_guard<std::mutex> l(world_->mu);
    HostView h = MakeHost(host_);
    for (auto& [vm, where] : world_->vm_host) {
      if (where == host_)
        h.inventory.vms.push_back(MakeVm(vm, VmState::kRunning, "/lab/nas1/" + vm));
    }
    return h.inventory;
  }
  Result<api::VmXml> GetVmXml(const std::string& vm) override {
    return api::VmXml{"<domain/>", "<cpu/>"};
  }
  Result<hypervisor::CpuCheck> CheckCpu(const std::string&, const hypervisor::CpuTarget&) override {
    return hypervisor::CpuCheck{CpuCompatibility::kIdentical, ""};
  }
  Result<api::PlatformCheck> CheckPlatform(const api::PlatformCheckRequest&) override {
    return api::PlatformCheck{true, true, ""};
  }
  Result<api::AgentJob> StartJob(const agent::MigrationJobSpec& spec) override {
    std::lock_guard<std::mutex> l(world_->mu);
    if (world_->unreachable.count(host_)) return Status::Io(host_ + ": connection refused");
    auto it = world_->jobs.find(spec.id);
    if (it == world_->jobs.end()) {
      FakeWorld::Job j;
      j.spec = spec;
      j.host = host_;
      j.polls_left = world_->job_polls.count(spec.vm) ? world_->job_polls[spec.vm] : 3;
      world_->jobs[spec.id] = j;
      ++world_->starts;
      world_->max_concurrent = std::max(world_->max_concurrent, world_->RunningNow());
    }
    return View(world_->jobs[spec.id]);
  }
  Result<api::AgentJob> GetJob(const std::string& id) override {
    std::lock_guard<std::mutex> l(world_->mu);
    if (world_->unreachable.count(host_)) return Status::Io(host_ + ": connection refused");
    auto it = world_->jobs.find(id);
    if (it == world_->jobs.end() || world_->lose_jobs) return Status::NotFound("no job " + id);
    FakeWorld::Job& j = it->second;
    if (j.state == api::AgentJobState::kRunning && --j.polls_left <= 0) {
      j.state = api::AgentJobState::kSucceeded;
      world_->vm_host[j.spec.vm] = HostOfUri(j.spec.target_uri);
    }
    return View(j);
  }
  Result<api::AgentJob> CancelJob(const std::string& id) override {
    std::lock_guard<std::mutex> l(world_->mu);
    auto it = world_->jobs.find(id);
    if (it == world_->jobs.end()) return Status::NotFound("no job " + id);
    if (it->second.state == api::AgentJobState::kRunning) {
      it->second.state = api::AgentJobState::kCancelled;
    }
    return View(it->second);
  }

 private:
  static std::string HostOfUri(const std::string& uri) {  // qemu+tcp://host2/system
    size_t a = uri.find("://") + 3;
    return uri.substr(a, uri.find('/', a) - a);
  }
  api::AgentJob View(const FakeWorld::Job& j) {
    api::AgentJob out;
    out.id = j.spec.id;
    out.kind = j.spec.kind;
    out.vm = j.spec.vm;
    out.state = j.state;
    out.progress.phase = j.state == api::AgentJobState::kRunning ? "copying" : "done";
    out.progress.bytes_total = 100;
    out.progress.bytes_done = j.state == api::AgentJobState::kRunning ? 50 : 100;
    out.started_at_ms = 1;
    out.events.push_back({1, "info", "job started on " + j.host});
    if (j.state == api::AgentJobState::kSucceeded) {
      agent::JobResult r;
      r.total_ms = 1234;
      r.qemu_downtime_ms = 20;
      r.guest_downtime_ms = 35;
      out.result = r;
    }
    if (j.state == api::AgentJobState::kCancelled) out.error = Status::Cancelled("cancelled");
    return out;
  }
  std::shared_ptr<FakeWorld> world_;
  std::string host_;
};

class FerrydTest : public ::testing::Test {
 protected:
  void SetUp() override {
    world_ = std::make_shared<FakeWorld>();
    world_->vm_host = {{"g1", "host1"}, {"g2", "host1"}, {"g3", "host1"}};
  }

  void StartServer(Limits limits) {
    ServerConfig c;
    c.listen = "127.0.0.1:0";
    c.token = "test-token-123";
    c.database = dir_.Join("ferry.db");
    c.limits = limits;
    c.poll_ms = 20;
    c.inventory_refresh_ms = 100000;
    for (const char* h : {"host1", "host2"}) {
      c.hosts.push_back({h, h, "lab", std::string("http://") + h, "t"});
    }
    Result<std::unique_ptr<Store>> store = OpenSqliteStore(c.database);
    ASSERT_TRUE(store.ok());
    std::shared_ptr<FakeWorld> world = world_;
    server_ = std::make_unique<Ferryd>(c, std::move(*store),
                                       [world](const std::string& url, const std::string&) {
                                         return std::make_unique<FakeAgent>(world, url.substr(7));
                                       });
    ASSERT_TRUE(server_->Start().ok());
    client_ = std::make_unique<api::HttpClient>(
        "http://127.0.0.1:" + std::to_string(server_->port()), "test-token-123");
  }

  nlohmann::json Get(const std::string& path) {
    Result<std::string> r = client_->Get(path);
    EXPECT_TRUE(r.ok()) << path << ": " << r.status().ToString();
    return r.ok() ? nlohmann::json::parse(*r) : nlohmann::json();
  }

  // Waits until every migration is final; returns them.
  nlohmann::json WaitAllFinal(int timeout_ms = 10000) {
    for (int waited = 0; waited < timeout_ms; waited += 20) {
      nlohmann::json list = Get("/api/v1/migrations?active=true")["migrations"];
      if (list.empty()) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return Get("/api/v1/migrations")["migrations"];
  }

  testing::TempDir dir_;
  std::shared_ptr<FakeWorld> world_;
  std::unique_ptr<Ferryd> server_;
  std::unique_ptr<api::HttpClient> client_;
};

TEST_F(FerrydTest, TwoVmsOverALimitOfOneRunOneAfterTheOther) {
  StartServer(Limits{.live_per_host = 1, .storage_per_host = 1, .total = 8});
  world_->job_polls = {{"g1", 10}, {"g2", 10}};
  Result<std::string> r =
      client_->Post("/api/v1/migrations", R"({"vms":["g1","g2"],"to":"host2"})");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  nlohmann::json created = nlohmann::json::parse(*r)["migrations"];
  ASSERT_EQ(created.size(), 2u);
  EXPECT_EQ(created[0]["type"], "live");
  nlohmann::json done = WaitAllFinal();
  ASSERT_EQ(done.size(), 2u);
  for (const auto& m : done) {
    EXPECT_EQ(m["state"], "completed") << m.dump();
    EXPECT_EQ(m["result"]["guest_downtime_ms"], 35);
    EXPECT_EQ(m["location"], "host2");
  }
  EXPECT_EQ(world_->max_concurrent, 1);
  EXPECT_EQ(world_->vm_host["g1"], "host2");
  EXPECT_EQ(world_->vm_host["g2"], "host2");
  // The second one said why it waited.
  std::string second = created[1]["id"];
  nlohmann::json events = Get("/api/v1/migrations/" + second + "/events")["events"];
  bool waited = false;
  for (const auto& e : events) {
    if (e["message"].get<std::string>().find("waiting for a slot") != std::string::npos) {
      waited = true;
    }
  }
  EXPECT_TRUE(waited) << events.dump();
}

TEST_F(FerrydTest, VmListReadsTheHostsNowUnlessCachedIsAsked) {
  StartServer(Limits{});
  {
    std::lock_guard<std::mutex> l(world_->mu);
    world_->vm_host["g9"] = "host2";  // started after ferryd's last inventory read
  }
  auto names = [](const nlohmann::json& answer) {
    std::set<std::string> out;
    for (const auto& v : answer["vms"])
      out.insert(v["host"].get<std::string>() + "/" + v["name"].get<std::string>());
    return out;
  };
  // The periodic refresh is 100 s away: the cache does not know g9 yet.
  EXPECT_EQ(names(Get("/api/v1/vms?cached=true")).count("host2/g9"), 0u);
  nlohmann::json now = Get("/api/v1/vms?host=host2");
  EXPECT_EQ(names(now), std::set<std::string>{"host2/g9"});
  ASSERT_EQ(now["hosts"].size(), 1u);
  EXPECT_EQ(now["hosts"][0]["id"], "host2");
  EXPECT_EQ(now["hosts"][0]["status"], "up");
  EXPECT_EQ(names(Get("/api/v1/vms")).count("host1/g1"), 1u);
  // A host that cannot be read is reported down with why; its last-seen VMs still show.
  {
    std::lock_guard<std::mutex> l(world_->mu);
    world_->unreachable.insert("host2");
  }
  now = Get("/api/v1/vms");
  EXPECT_EQ(names(now).count("host2/g9"), 1u);
  for (const auto& h : now["hosts"]) {
    EXPECT_EQ(h["status"], h["id"] == "host2" ? "down" : "up") << h.dump();
    if (h["id"] == "host2") {
      EXPECT_NE(h["error"].get<std::string>().find("connection refused"), std::string::npos);
    }
  }
  EXPECT_EQ(client_->Get("/api/v1/vms?cached=yes").status().code(), ErrorCode::kInvalidArgument);
}

TEST_F(FerrydTest, HostListSeesAnAgentThatCameUpAfterTheStart) {
  world_->unreachable.insert("host2");  // its agent is not listening yet when ferryd starts
  StartServer(Limits{});
  auto status_of = [this](const std::string& path, const std::string& id) {
    const nlohmann::json answer = Get(path);
    for (const auto& h : answer["hosts"]) {
      if (h["id"] == id) return h["status"].get<std::string>();
    }
    return std::string("absent");
  };
  EXPECT_EQ(status_of("/api/v1/hosts", "host2"), "down");
  {
    std::lock_guard<std::mutex> l(world_->mu);
    world_->unreachable.clear();
  }
  EXPECT_EQ(status_of("/api/v1/hosts?cached=true", "host2"), "down");  // the periodic view
  EXPECT_EQ(status_of("/api/v1/hosts", "host2"), "up");
  EXPECT_EQ(Get("/api/v1/hosts/host2")["vm_count"], 0);
  {
    std::lock_guard<std::mutex> l(world_->mu);
    world_->vm_host["g9"] = "host2";
  }
  EXPECT_EQ(Get("/api/v1/hosts/host2?cached=true")["vm_count"], 0);
  EXPECT_EQ(Get("/api/v1/hosts/host2")["vm_count"], 1);
}

TEST_F(FerrydTest, ValidationFailureCreatesNothing) {
  StartServer(Limits{});
  std::string details;
  Result<std::string> r = client_->Send(
      "POST", "/api/v1/migrations", R"({"vms":["g1"],"to":"host2","storage":"nope"})", &details);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), ErrorCode::kFailedPrecondition);
  EXPECT_NE(r.status().message().find("pool_capacity"), std::string::npos) << r.status().message();
  EXPECT_NE(details.find("\"checks\""), std::string::npos) << details;
  EXPECT_TRUE(Get("/api/v1/migrations")["migrations"].empty());
  EXPECT_EQ(world_->starts, 0);
  // An unknown VM is not found, also without creating anything.
  r = client_->Post("/api/v1/migrations", R"({"vms":["nosuch"],"to":"host2"})");
  EXPECT_EQ(r.status().code(), ErrorCode::kNotFound);
  // validate-only answers the plan and creates nothing.
  r = client_->Post("/api/v1/migrations/validate", R"({"vms":["g1"],"to":"host2"})");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(nlohmann::json::parse(*r)["ok"], true);
  EXPECT_TRUE(Get("/api/v1/migrations")["migrations"].empty());
}

TEST_F(FerrydTest, CancelQueuedAndRunning) {
  StartServer(Limits{.live_per_host = 1, .storage_per_host = 1, .total = 8});
  world_->job_polls = {{"g1", 1000000}, {"g2", 1000000}};
  Result<std::string> r =
      client_->Post("/api/v1/migrations", R"({"vms":["g1","g2"],"to":"host2"})");
  ASSERT_TRUE(r.ok());
  nlohmann::json created = nlohmann::json::parse(*r)["migrations"];
  std::string first = created[0]["id"], second = created[1]["id"];
  for (int i = 0; i < 200 && Get("/api/v1/migrations/" + first)["state"] != "running"; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_TRUE(client_->Post("/api/v1/migrations/" + second + "/cancel", "").ok());
  EXPECT_EQ(Get("/api/v1/migrations/" + second)["state"], "cancelled");
  ASSERT_TRUE(client_->Post("/api/v1/migrations/" + first + "/cancel", "").ok());
  nlohmann::json done = WaitAllFinal();
  for (const auto& m : done) EXPECT_EQ(m["state"], "cancelled") << m.dump();
  EXPECT_EQ(world_->vm_host["g1"], "host1");
  EXPECT_EQ(world_->starts, 1);
  // A final migration cannot be cancelled again.
  EXPECT_EQ(client_->Post("/api/v1/migrations/" + first + "/cancel", "").status().code(),
            ErrorCode::kFailedPrecondition);
}

TEST_F(FerrydTest, RestartFollowsTheSameJobWithoutDuplicating) {
  StartServer(Limits{});
  world_->job_polls = {{"g1", 60}};
  Result<std::string> r = client_->Post("/api/v1/migrations", R"({"vms":["g1"],"to":"host2"})");
  ASSERT_TRUE(r.ok());
  std::string id = nlohmann::json::parse(*r)["migrations"][0]["id"];
  for (int i = 0; i < 200 && world_->starts == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  server_->Stop();
  server_.reset();
  {
    std::lock_guard<std::mutex> l(world_->mu);
    EXPECT_EQ(world_->jobs[id].state, api::AgentJobState::kRunning);
  }
  StartServer(Limits{});
  nlohmann::json done = WaitAllFinal();
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0]["id"], id);
  EXPECT_EQ(done[0]["state"], "completed");
  EXPECT_EQ(world_->starts, 1);
  EXPECT_EQ(world_->vm_host["g1"], "host2");
}

TEST_F(FerrydTest, LostJobIsDecidedByWhereTheVmRuns) {
  StartServer(Limits{});
  world_->job_polls = {{"g1", 1000000}, {"g2", 1000000}};
  Result<std::string> r =
      client_->Post("/api/v1/migrations", R"({"vms":["g1","g2"],"to":"host2"})");
  ASSERT_TRUE(r.ok());
  for (int i = 0; i < 300 && world_->starts < 2; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  {
    std::lock_guard<std::mutex> l(world_->mu);
    world_->vm_host["g1"] = "host2";  // g1's switch-over happened before the agent died
    world_->lose_jobs = true;
  }
  nlohmann::json done = WaitAllFinal();
  ASSERT_EQ(done.size(), 2u);
  for (const auto& m : done) {
    if (m["vm"] == "g1") {
      EXPECT_EQ(m["state"], "completed") << m.dump();
    } else {
      EXPECT_EQ(m["state"], "failed") << m.dump();
      EXPECT_NE(m["error"]["message"].get<std::string>().find("runs on host1"), std::string::npos);
    }
  }
}

}  // namespace
}  // namespace ferry::server
