// The control plane end to end on the real lab: two libvirtd hosts, a ferry-agent per host,
// ferryd with a SQLite file, the `ferry` CLI, and guests whose heartbeat and disk writer
// prove what happened. Every transfer type moves a running (or, for reregister, a shut-off)
// guest; two VMs over a limit of one run one after the other; a failed validation creates
// and changes nothing; a cancel leaves the source running; ferryd killed with SIGKILL
// mid-migration and restarted ends with the VM in exactly one place and one correct record.
// ctest runs each test in its own process and so its own lab (gtest_discover_tests): every
// test makes the guests it needs, under names of its own, and removes them at its end, so the
// tests hold in any order and also when the binary runs them all in one lab.
// Needs root and scripts/lab-deps (label "lab").
#include <gtest/gtest.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "api/http.h"
#include "lab/console.h"
#include "lab/lab.h"
#include "lab/process.h"
#include "test_util.h"

namespace ferry {
namespace {

using nlohmann::json;

constexpr int kAddressBase = 90;  // 127.0.0.91, .92: apart from other labs' bases
constexpr char kToken[] = "lab-test-token-1";
constexpr int64_t kBootTimeoutMs = 90000;
constexpr int64_t kMigrationTimeoutMs = 180000;

std::string BinaryDir() { return testing::BinaryDir(); }

Status AsStatus(const Status& s) { return s; }
template <typename T>
Status AsStatus(const Result<T>& r) {
  return r.ok() ? Status::Ok() : r.status();
}

// Waits on a ConsoleWatcher; on failure the message names what was awaited and the console's
// last lines, so a failed run says what the guest was doing.
#define ASSERT_WAITED(expr)                                        \
  do {                                                             \
    const Status waited_status_ = AsStatus(expr);                  \
    ASSERT_TRUE(waited_status_.ok()) << waited_status_.ToString(); \
  } while (0)

void WriteFile(const std::string& path, const std::string& text) {
  std::ofstream out(path);
  out << text;
}

class ControlPlaneLab : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    char tmpl[] = "/var/tmp/ferry-cp-test-XXXXXX";
    const char* made = mkdtemp(tmpl);
    ASSERT_NE(made, nullptr);
    dir_ = made;
    lab::LabConfig config;
    config.root = dir_ + "/lab";
    config.hosts = 2;
    config.address_base = kAddressBase;
    config.accel = lab::Accel::kTcg;
    config.guest_binary = BinaryDir() + "/src/lab/ferry_guest";
    auto up = lab::Lab::Up(config);
    ASSERT_TRUE(up.ok()) << up.status().ToString();
    lab_ = up->release();

    for (int h = 1; h <= 2; ++h) {
      const lab::HostInfo& host = lab_->host(h);
      std::string cfg = dir_ + "/agent" + std::to_string(h) + ".json";
      WriteFile(cfg, json{{"listen", host.address + ":7801"},
                          {"token", kToken},
                          {"libvirt_uri", host.uri},
                          {"migration_uri", host.migration_uri},
                          {"host_id", host.name},
                          {"state_dir", dir_ + "/agent" + std::to_string(h)}}
                         .dump());
      lab::SpawnOptions opts;
      opts.output_path = dir_ + "/agent" + std::to_string(h) + ".log";
      auto pid = lab::Spawn({BinaryDir() + "/src/agent/ferry-agent", "--config", cfg}, opts);
      ASSERT_TRUE(pid.ok()) << pid.status().ToString();
      agent_pids_.push_back(*pid);
    }
    // Agents first, as a deployment would have them: ferryd reads every host when it starts.
    for (int h = 1; h <= 2; ++h) {
      api::HttpClient agent("http://" + lab_->host(h).address + ":7801", kToken);
      bool up = false;
      for (int i = 0; i < 600 && !up; ++i) {
        up = agent.Get("/agent/v1/health").ok();
        if (!up) std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
      ASSERT_TRUE(up) << "agent " << h << " did not answer; see " << dir_ << "/agent" << h
                      << ".log";
    }
    StartFerryd();
  }

  static void StartFerryd() {
    std::string cfg = dir_ + "/ferryd.json";
    json hosts = json::array();
    for (int h = 1; h <= 2; ++h) {
      hosts.push_back({{"id", lab_->host(h).name},
                       {"cluster", "lab"},
                       {"agent_url", "http://" + lab_->host(h).address + ":7801"},
                       {"agent_token", kToken}});
    }
    WriteFile(cfg, json{{"listen", "127.0.0.90:7800"},
                        {"token", kToken},
                        {"database", dir_ + "/ferry.db"},
                        {"limits", {{"live_per_host", 1}, {"storage_per_host", 1}, {"total", 4}}},
                        {"poll_ms", 200},
                        {"inventory_refresh_ms", 5000},
                        {"hosts", hosts}}
                       .dump());
    lab::SpawnOptions opts;
    opts.output_path = dir_ + "/ferryd.log";
    auto pid = lab::Spawn({BinaryDir() + "/src/server/ferryd", "--config", cfg}, opts);
    ASSERT_TRUE(pid.ok()) << pid.status().ToString();
    ferryd_pid_ = *pid;
    api::HttpClient probe(kServer, kToken);
    for (int i = 0; i < 600; ++i) {
      if (probe.Get("/api/v1/health").ok()) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    FAIL() << "ferryd did not answer; see " << dir_ << "/ferryd.log";
  }

  static void TearDownTestSuite() {
    if (ferryd_pid_ > 0) lab::TerminateProcess(ferryd_pid_, 5000);
    for (pid_t p : agent_pids_) lab::TerminateProcess(p, 5000);
    if (lab_ != nullptr) {
      (void)lab_->Down();
      delete lab_;
    }
    std::error_code ec;
    if (!dir_.empty() && getenv("FERRY_KEEP_LAB") == nullptr) {
      std::filesystem::remove_all(dir_, ec);
    }
  }

  // Runs the ferry CLI against ferryd; returns exit code and output.
  static testing::CommandResult Cli(const std::string& args) {
    return testing::Run("FERRY_SERVER=" + std::string(kServer) + " FERRY_TOKEN=" + kToken + " " +
                        testing::ShellQuote(BinaryDir() + "/src/cli/ferry") + " " + args + " 2>&1");
  }

  static json Api(const std::string& method, const std::string& path,
                  const std::string& body = "") {
    api::HttpClient client(kServer, kToken);
    Result<std::string> r = client.Send(method, path, body, nullptr);
    EXPECT_TRUE(r.ok()) << method << " " << path << ": " << r.status().ToString();
    return r.ok() ? json::parse(*r) : json();
  }

  static json WaitFinal(const std::string& id, int64_t timeout_ms = kMigrationTimeoutMs) {
    json m;
    for (int64_t waited = 0; waited < timeout_ms; waited += 250) {
      m = Api("GET", "/api/v1/migrations/" + id);
      std::string st = m.value("state", "");
      if (st == "completed" || st == "failed" || st == "cancelled") return m;
      std::this_thread::sleep_for(std::chrono::milliseconds(250));
    }
    ADD_FAILURE() << "migration " << id << " not final after " << timeout_ms << " ms: " << m.dump();
    return m;
  }

  static std::vector<int> RunningOn(const std::string& vm) {
    auto r = lab_->HostsRunning(vm);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? *r : std::vector<int>{};
  }

  static std::string ConsoleLog(const std::string& vm) {
    return lab_->state().root + "/guests/" + vm + "/console.log";
  }

  // A guest of the test's own on `host` (disks on nas1): a heartbeat, and the given workload.
  static lab::GuestSpec Guest(const std::string& name, int host, int dirty_mib = 0,
                              int dirty_rate_mib = 0, lab::DiskMode disk = lab::DiskMode::kNone) {
    lab::GuestSpec spec;
    spec.name = name;
    spec.host = host;
    spec.pool = "nas1";
    spec.dirty_mib = dirty_mib;
    spec.dirty_rate_mib = dirty_rate_mib;
    spec.disk_mode = disk;
    return spec;
  }

  // Destroys and undefines the named guests wherever they are when the test ends, so a run of
  // every test in one lab does not pile up guests on the two cores.
  struct ScopedGuests {
    std::vector<std::string> names;
    ~ScopedGuests() {
      for (const std::string& name : names) {
        for (int h = 1; h <= 2; ++h) {
          (void)lab_->Virsh(h, {"destroy", name});
          (void)lab_->Virsh(h, {"undefine", name});
        }
      }
    }
  };

  // Creates the guest (and schedules its removal); fails the test if it cannot.
  static void MakeGuest(ScopedGuests& scope, const lab::GuestSpec& spec) {
    scope.names.push_back(spec.name);
    auto g = lab_->CreateGuest(spec);
    ASSERT_TRUE(g.ok()) << spec.name << ": " << g.status().ToString();
  }

  static json Migrate(const std::string& body) {
    json r = Api("POST", "/api/v1/migrations", body);
    EXPECT_TRUE(r.contains("migrations")) << r.dump();
    return r.contains("migrations") ? r["migrations"] : json::array();
  }

  static constexpr char kServer[] = "http://127.0.0.90:7800";
  static inline std::string dir_;
  static inline lab::Lab* lab_ = nullptr;
  static inline std::vector<pid_t> agent_pids_;
  static inline pid_t ferryd_pid_ = 0;
};

// The migration of `vm` in ferryd's list (the newest, if it moved more than once).
json MigrationOf(const json& list, const std::string& vm) {
  for (const json& m : list) {
    if (m["vm"] == vm) return m;
  }
  return json();
}

TEST_F(ControlPlaneLab, HostsAndVmsThroughTheCli) {
  testing::CommandResult hosts = Cli("hosts --output json");
  ASSERT_EQ(hosts.exit_code, 0) << hosts.output;
  json h = json::parse(hosts.output, nullptr, false);
  ASSERT_TRUE(h.is_object() || h.is_array()) << hosts.output;
  json list = h.is_object() ? h["hosts"] : h;
  ASSERT_EQ(list.size(), 2u) << hosts.output;
  for (const json& host : list) EXPECT_EQ(host["status"], "up") << host.dump();
  // Guests defined after ferryd's last inventory read: `ferry vms` shows them at once.
  ScopedGuests guests;
  ASSERT_NO_FATAL_FAILURE(MakeGuest(guests, Guest("inv1", 1)));
  lab::GuestSpec off = Guest("inv2", 1);
  off.start = false;
  ASSERT_NO_FATAL_FAILURE(MakeGuest(guests, off));
  testing::CommandResult vms = Cli("vms --host host1");
  ASSERT_EQ(vms.exit_code, 0) << vms.output;
  bool running = false, shut_off = false;
  std::istringstream lines(vms.output);
  for (std::string line; std::getline(lines, line);) {
    running |= line.find("inv1") != std::string::npos && line.find("running") != std::string::npos;
    shut_off |= line.find("inv2") != std::string::npos && line.find("shut") != std::string::npos;
  }
  EXPECT_TRUE(running && shut_off) << vms.output;
  testing::CommandResult all = Cli("vms --output json");
  ASSERT_EQ(all.exit_code, 0) << all.output;
  json j = json::parse(all.output, nullptr, false);
  ASSERT_TRUE(j.is_object()) << all.output;
  int found = 0;
  for (const json& v : j["vms"]) found += v["name"] == "inv1" && v["host"] == "host1" ? 1 : 0;
  EXPECT_EQ(found, 1) << all.output;
}

TEST_F(ControlPlaneLab, FailedValidationCreatesAndChangesNothing) {
  ScopedGuests guests;
  ASSERT_NO_FATAL_FAILURE(MakeGuest(guests, Guest("val1", 1)));
  // A pool host2 does not have: the check is named.
  testing::CommandResult r = Cli("migrate val1 --to host2 --storage nosuchpool");
  EXPECT_EQ(r.exit_code, 10) << r.output;
  EXPECT_NE(r.output.find("pool_capacity"), std::string::npos) << r.output;
  // The same host as target for a live move.
  r = Cli("migrate val1 --to host1 --type live");
  EXPECT_EQ(r.exit_code, 10) << r.output;
  EXPECT_NE(r.output.find("not_same_host"), std::string::npos) << r.output;
  EXPECT_TRUE(MigrationOf(Api("GET", "/api/v1/migrations")["migrations"], "val1").is_null());
  EXPECT_EQ(RunningOn("val1"), std::vector<int>{1});
}

TEST_F(ControlPlaneLab, LiveMigrationKeepsTheHeartbeat) {
  ScopedGuests guests;
  ASSERT_NO_FATAL_FAILURE(MakeGuest(guests, Guest("live1", 1, 16, 8, lab::DiskMode::kWrite)));
  lab::ConsoleWatcher console(ConsoleLog("live1"));
  console.Start();
  ASSERT_WAITED(console.WaitForLine("FERRY-READY", kBootTimeoutMs));
  ASSERT_WAITED(console.WaitForHeartbeats(50, kBootTimeoutMs));
  const int64_t t0 = lab::ConsoleWatcher::NowNs();
  testing::CommandResult r = Cli("migrate live1 --to host2 --max-downtime 500 --wait");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  json m = MigrationOf(Api("GET", "/api/v1/migrations")["migrations"], "live1");
  ASSERT_TRUE(m.is_object());
  EXPECT_EQ(m["type"], "live");
  EXPECT_EQ(m["state"], "completed") << m.dump();
  EXPECT_EQ(RunningOn("live1"), std::vector<int>{2});
  ASSERT_WAITED(console.WaitForHeartbeats(50, 30000, lab::ConsoleWatcher::NowNs()));
  lab::HeartbeatStats hb = console.Heartbeats(t0);
  EXPECT_EQ(hb.missing, 0u);
  ASSERT_TRUE(m["result"].is_object()) << m.dump();
  int64_t reported = m["result"].value("guest_downtime_ms", int64_t{-1});
  EXPECT_GE(reported, 0) << m.dump();
  std::printf(
      "live: %s ms total, QEMU downtime %s ms, reported guest downtime %lld ms, "
      "test-seen heartbeat gap %.1f ms\n",
      m["result"]["total_ms"].dump().c_str(), m["result"]["qemu_downtime_ms"].dump().c_str(),
      static_cast<long long>(reported), hb.max_gap_ns / 1e6);
  // The events tell the story.
  json events = Api("GET", "/api/v1/migrations/" + m["id"].get<std::string>() + "/events");
  EXPECT_GE(events["events"].size(), 4u) << events.dump();
}

TEST_F(ControlPlaneLab, LiveStorageThenLiveVsmKeepEveryWrite) {
  // st1 runs on host2 with its disk on nas1 and writes checksummed blocks: move the disk to
  // host2's local pool while it runs, then move host and storage together to host1's local
  // pool.
  ScopedGuests guests;
  ASSERT_NO_FATAL_FAILURE(MakeGuest(guests, Guest("st1", 2, 16, 8, lab::DiskMode::kWrite)));
  lab::ConsoleWatcher console(ConsoleLog("st1"));
  console.Start();
  ASSERT_WAITED(console.WaitForLine("FERRY-DISK-SEQ", kBootTimeoutMs));
  ASSERT_WAITED(console.WaitForHeartbeats(20, kBootTimeoutMs));
  json m = Migrate(R"({"vms":["st1"],"storage":"local"})");
  ASSERT_EQ(m.size(), 1u);
  EXPECT_EQ(m[0]["type"], "live-storage");
  EXPECT_EQ(m[0]["source"], "host2");
  json done = WaitFinal(m[0]["id"]);
  ASSERT_EQ(done["state"], "completed") << done.dump();
  json vm = Api("GET", "/api/v1/vms?host=host2");
  std::string path;
  for (const json& v : vm["vms"]) {
    if (v["name"] == "st1") path = v["disks"][0]["source_path"];
  }
  EXPECT_NE(path.find("/hosts/host2/local/"), std::string::npos) << vm.dump();
  EXPECT_EQ(RunningOn("st1"), std::vector<int>{2});

  m = Migrate(R"({"vms":["st1"],"to":"host1","storage":"local"})");
  ASSERT_EQ(m.size(), 1u);
  EXPECT_EQ(m[0]["type"], "live-vsm");
  done = WaitFinal(m[0]["id"]);
  ASSERT_EQ(done["state"], "completed") << done.dump();
  EXPECT_EQ(RunningOn("st1"), std::vector<int>{1});
  const int64_t t_done = lab::ConsoleWatcher::NowNs();
  ASSERT_WAITED(console.WaitForLine("FERRY-DISK-SEQ", 30000, t_done));
  ASSERT_WAITED(console.WaitForHeartbeats(20, 30000, t_done));

  // Hard stop, then verify the disk: every block up to the last durable one is there.
  auto xml = lab_->Virsh(1, {"domblklist", "st1"});
  ASSERT_TRUE(xml.ok());
  ASSERT_NE(xml->find("/hosts/host1/local/"), std::string::npos) << *xml;
  std::string disk = xml->substr(xml->find('/'));
  disk = disk.substr(0, disk.find_first_of(" \n"));
  ASSERT_TRUE(lab_->Virsh(1, {"destroy", "st1"}).ok());
  long long durable = -1;
  for (const auto& line : console.Lines()) {
    long long seq;
    if (std::sscanf(line.text.c_str(), "FERRY-DISK-SEQ %lld", &seq) == 1) durable = seq;
  }
  ASSERT_GT(durable, 0);
  std::string raw = dir_ + "/st1-verify.raw";
  testing::CommandResult conv =
      testing::Run("qemu-img convert -O raw " + testing::ShellQuote(disk) + " " + raw + " 2>&1");
  ASSERT_EQ(conv.exit_code, 0) << conv.output;
  testing::CommandResult verify =
      testing::Run(testing::ShellQuote(BinaryDir() + "/src/lab/ferry_guest") +
                   " ferry.disk=" + raw + " ferry.disk_mode=verify 2>&1");
  long long found = -2;
  ASSERT_NE(verify.output.find("FERRY-DISK-OK"), std::string::npos) << verify.output;
  std::sscanf(verify.output.c_str() + verify.output.find("FERRY-DISK-OK"), "FERRY-DISK-OK %lld",
              &found);
  EXPECT_GE(found, durable) << verify.output;
  std::printf("after live-storage + live-vsm: %s (last durable %lld)\n", verify.output.c_str(),
              durable);
}

TEST_F(ControlPlaneLab, QuickAndReregister) {
  ScopedGuests guests;
  ASSERT_NO_FATAL_FAILURE(MakeGuest(guests, Guest("q1", 1, 16, 8)));
  lab::GuestSpec off = Guest("r1", 1);
  off.start = false;
  ASSERT_NO_FATAL_FAILURE(MakeGuest(guests, off));
  lab::ConsoleWatcher console(ConsoleLog("q1"));
  console.Start();
  ASSERT_WAITED(console.WaitForHeartbeats(20, kBootTimeoutMs));
  json m = Migrate(R"({"vms":["q1"],"to":"host2","type":"quick"})");
  ASSERT_EQ(m.size(), 1u);
  json done = WaitFinal(m[0]["id"]);
  ASSERT_EQ(done["state"], "completed") << done.dump();
  EXPECT_EQ(RunningOn("q1"), std::vector<int>{2});
  ASSERT_WAITED(console.WaitForHeartbeats(20, 30000, lab::ConsoleWatcher::NowNs()));

  m = Migrate(R"({"vms":["r1"],"to":"host2"})");
  ASSERT_EQ(m.size(), 1u);
  EXPECT_EQ(m[0]["type"], "reregister");
  done = WaitFinal(m[0]["id"]);
  ASSERT_EQ(done["state"], "completed") << done.dump();
  auto on2 = lab_->Virsh(2, {"list", "--all", "--name"});
  auto on1 = lab_->Virsh(1, {"list", "--all", "--name"});
  ASSERT_TRUE(on1.ok() && on2.ok());
  EXPECT_NE(on2->find("r1"), std::string::npos) << *on2;
  EXPECT_EQ(on1->find("r1"), std::string::npos) << *on1;
}

TEST_F(ControlPlaneLab, TwoVmsOverALimitOfOneRunOneAfterTheOther) {
  // Two running guests on host2, both asked to host1 at once; the limit is one live move per
  // host.
  ScopedGuests guests;
  ASSERT_NO_FATAL_FAILURE(MakeGuest(guests, Guest("two1", 2, 16, 8)));
  ASSERT_NO_FATAL_FAILURE(MakeGuest(guests, Guest("two2", 2, 16, 8)));
  for (const char* name : {"two1", "two2"}) {
    lab::ConsoleWatcher c(ConsoleLog(name));
    c.Start();
    ASSERT_WAITED(c.WaitForHeartbeats(20, kBootTimeoutMs));
  }
  json m = Migrate(R"({"vms":["two1","two2"],"to":"host1"})");
  ASSERT_EQ(m.size(), 2u);
  json a = WaitFinal(m[0]["id"]);
  json b = WaitFinal(m[1]["id"]);
  ASSERT_EQ(a["state"], "completed") << a.dump();
  ASSERT_EQ(b["state"], "completed") << b.dump();
  EXPECT_EQ(b["waiting_for"], nullptr);
  // One after the other: the second started after the first ended.
  json ea = Api("GET", "/api/v1/migrations/" + a["id"].get<std::string>() + "/events")["events"];
  json eb = Api("GET", "/api/v1/migrations/" + b["id"].get<std::string>() + "/events")["events"];
  int64_t a_end = 0, b_start = 0;
  bool b_waited = false;
  for (const json& e : ea) {
    if (e["kind"] == "state" && e["message"].get<std::string>().rfind("completed", 0) == 0) {
      a_end = e["at_ms"];
    }
  }
  for (const json& e : eb) {
    std::string msg = e["message"];
    if (msg.find("waiting for a slot") != std::string::npos) b_waited = true;
    if (e["kind"] == "state" && msg.rfind("running", 0) == 0) b_start = e["at_ms"];
  }
  EXPECT_TRUE(b_waited) << eb.dump();
  EXPECT_GT(a_end, 0);
  EXPECT_GE(b_start, a_end) << ea.dump() << eb.dump();
  EXPECT_EQ(RunningOn("two1"), std::vector<int>{1});
  EXPECT_EQ(RunningOn("two2"), std::vector<int>{1});
}

TEST_F(ControlPlaneLab, CancelLeavesTheSourceRunning) {
  // A heavy dirtier and a thin link: the move cannot finish quickly, so there is time.
  ScopedGuests guests;
  ASSERT_NO_FATAL_FAILURE(MakeGuest(guests, Guest("c1", 1, 64, 64)));
  lab::ConsoleWatcher console(ConsoleLog("c1"));
  console.Start();
  ASSERT_WAITED(console.WaitForLine("FERRY-DIRTY-READY", kBootTimeoutMs));
  json m = Migrate(R"({"vms":["c1"],"to":"host2","bandwidth":8388608})");
  ASSERT_EQ(m.size(), 1u);
  std::string id = m[0]["id"];
  for (int i = 0; i < 200; ++i) {
    json now = Api("GET", "/api/v1/migrations/" + id);
    if (now["state"] == "running" && now["progress"].value("bytes_done", 0) > 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  testing::CommandResult r = Cli("cancel " + id + " --wait");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  json done = WaitFinal(id);
  EXPECT_EQ(done["state"], "cancelled") << done.dump();
  EXPECT_EQ(RunningOn("c1"), std::vector<int>{1});
  ASSERT_WAITED(console.WaitForHeartbeats(20, 30000, lab::ConsoleWatcher::NowNs()));
}

TEST_F(ControlPlaneLab, FerrydKilledMidMigrationEndsInOnePlace) {
  // k1 (on host1, dirtying 64 MiB) moves with a cap that makes it take several seconds;
  // ferryd dies with SIGKILL in the middle and comes back.
  ScopedGuests guests;
  ASSERT_NO_FATAL_FAILURE(MakeGuest(guests, Guest("k1", 1, 64, 64)));
  lab::ConsoleWatcher console(ConsoleLog("k1"));
  console.Start();
  ASSERT_WAITED(console.WaitForLine("FERRY-DIRTY-READY", kBootTimeoutMs));
  json m = Migrate(R"({"vms":["k1"],"to":"host2","bandwidth":33554432,"max_downtime_ms":2000})");
  ASSERT_EQ(m.size(), 1u);
  std::string id = m[0]["id"];
  for (int i = 0; i < 200; ++i) {
    if (Api("GET", "/api/v1/migrations/" + id)["state"] == "running") break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  ASSERT_EQ(kill(ferryd_pid_, SIGKILL), 0);
  lab::TerminateProcess(ferryd_pid_, 5000);
  std::this_thread::sleep_for(std::chrono::milliseconds(1000));
  StartFerryd();
  json done = WaitFinal(id);
  std::string state = done["state"];
  EXPECT_TRUE(state == "completed" || state == "failed") << done.dump();
  std::vector<int> where = RunningOn("k1");
  ASSERT_EQ(where.size(), 1u) << "k1 must run in exactly one place";
  EXPECT_EQ(where[0], state == "completed" ? 2 : 1) << done.dump();
  json all = Api("GET", "/api/v1/migrations")["migrations"];
  int records = 0;
  for (const json& x : all) records += x["vm"] == "k1" ? 1 : 0;
  EXPECT_EQ(records, 1);
  std::printf("after the ferryd restart: %s on host%d\n", state.c_str(), where[0]);
}

}  // namespace
}  // namespace ferry
