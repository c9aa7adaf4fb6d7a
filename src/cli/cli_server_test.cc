// The real `ferry` binary against a small in-test ferryd stand-in: an api::HttpServer on
// loopback that answers canned JSON per docs/control-plane.md. Checks tables, --output json,
// the request bodies the CLI sends, the exit codes scripts rely on (docs/cli.md): validation
// failures (10), watch outcomes (0 / error code / 9), unreachable server (6), malformed
// answers (4).
#include <gtest/gtest.h>

#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>

#include "api/http.h"
#include "common/status.h"
#include "test_util.h"

namespace ferry {
namespace {

using api::HttpRequest;
using api::HttpResponse;
using Json = nlohmann::json;
using testing::ShellQuote;

constexpr char kToken[] = "t0ken";

Json Host(const std::string& id, const std::string& status, int vms) {
  Json h = {{"id", id},         {"name", id + "-name"},   {"cluster", "lab"},
            {"agent_url", "x"}, {"status", status},       {"last_seen_at_ms", 1},
            {"vm_count", vms},  {"facts", Json::object()}};
  if (status == "up") {
    h["facts"] = {{"hostname", id},
                  {"cpu_model", "Skylake-Client"},
                  {"cpus", 4},
                  {"memory_bytes", 8ull << 30},
                  {"free_memory_bytes", 3ull << 30}};
  }
  return h;
}

// Per migration id, the scenario: m-ok completes, m-fail fails with code io, m-cancel is
// cancelled once cancel was called, m-garbage answers a malformed record.
class FakeFerryd {
 public:
  FakeFerryd() : server_(kToken) {
    server_.Route("GET /api/v1/hosts", [](const HttpRequest&) {
      return HttpResponse::Json(
          Json({{"hosts", {Host("host1", "up", 2), Host("host2", "down", 0)}}}).dump());
    });
    server_.Route("POST /api/v1/hosts", [this](const HttpRequest& r) {
      Record("POST /api/v1/hosts", r.body);
      Json b = Json::parse(r.body);
      return HttpResponse::Json(Host(b["id"], "up", 0).dump(), 201);
    });
    server_.Route("DELETE /api/v1/hosts/{id}", [](const HttpRequest& r) {
      if (r.Param("id") != "host1") {
        return HttpResponse::Error(Status::NotFound("host " + r.Param("id") + " not found"));
      }
      return HttpResponse::NoContent();
    });
    server_.Route("POST /api/v1/hosts/{id}/refresh", [](const HttpRequest& r) {
      return HttpResponse::Json(Host(r.Param("id"), "up", 7).dump());
    });
    server_.Route("GET /api/v1/vms", [this](const HttpRequest& r) {
      Record("GET /api/v1/vms", r.Query("host", "(all)"));
      Record("GET /api/v1/vms cached", r.Query("cached", "(absent)"));
      Json vm = {{"host", "host1"},
                 {"name", "g1"},
                 {"state", "running"},
                 {"vcpus", 2},
                 {"memory_bytes", 256 << 20},
                 {"firmware", "bios"},
                 {"disks",
                  {{{"target", "vda"}, {"capacity_bytes", 1ull << 30}},
                   {{"target", "vdb"}, {"capacity_bytes", 1ull << 30}}}},
                 {"nics", Json::array()}};
      Json hosts = {Host("host1", "up", 1)};
      if (r.Query("host") == "host2") {
        hosts = {Host("host2", "down", 0)};
        hosts[0]["error"] = "io: host2: connection refused";
      }
      return HttpResponse::Json(Json({{"vms", {vm}}, {"hosts", hosts}}).dump());
    });
    server_.Route("POST /api/v1/migrations", [this](const HttpRequest& r) {
      Record("POST /api/v1/migrations", r.body);
      Json b = Json::parse(r.body);
      std::string first = b.contains("vms") ? b["vms"][0].get<std::string>() : "";
      if (first == "bad") {
        return HttpResponse::Error(Status::FailedPrecondition("1 of 2 checks failed"),
                                   Checks().dump());
      }
      if (first == "bad-doc") {  // the doc's wire code for the same answer
        Json e = {
            {"error",
             {{"code", "validation_failed"}, {"message", "checks failed"}, {"details", Checks()}}}};
        return HttpResponse::Json(e.dump(), 422);
      }
      Json list = Json::array();
      for (const std::string id : {"m-ok", "m-fail"}) list.push_back(Migration(id, 0));
      return HttpResponse::Json(Json({{"migrations", list}}).dump(), 201);
    });
    server_.Route("POST /api/v1/migrations/validate", [](const HttpRequest& r) {
      Json b = Json::parse(r.body);
      bool ok = b["vms"][0] != "bad";
      Json checks = ok ? Json::array({{{"name", "memory"}, {"ok", true}}}) : Checks()["checks"];
      return HttpResponse::Json(
          Json({{"ok", ok},
                {"plans", {{{"vm", b["vms"][0]}, {"type", "live"}, {"checks", checks}}}}})
              .dump());
    });
    server_.Route("GET /api/v1/migrations", [this](const HttpRequest& r) {
      Record("GET /api/v1/migrations", r.Query("active", "(absent)"));
      return HttpResponse::Json(Json({{"migrations", {Migration("m-ok", 1)}}}).dump());
    });
    server_.Route("GET /api/v1/migrations/{id}", [this](const HttpRequest& r) {
      const std::string& id = r.Param("id");
      if (id == "m-garbage") {
        return HttpResponse::Json(R"({"id":"m-garbage","vm":5,"type":"live","state":"running"})");
      }
      if (id.rfind("m-", 0) != 0) return HttpResponse::Error(Status::NotFound("no " + id));
      std::lock_guard lock(mu_);
      return HttpResponse::Json(Migration(id, ++gets_[id]).dump());
    });
    server_.Route("GET /api/v1/migrations/{id}/events", [this](const HttpRequest& r) {
      const std::string& id = r.Param("id");
      int after = std::stoi(r.Query("after", "0"));
      std::lock_guard lock(mu_);
      Json events = Json::array();
      for (const Json& e : Events(id, gets_[id])) {
        if (e["seq"].get<int>() > after) events.push_back(e);
      }
      return HttpResponse::Json(Json({{"events", events}}).dump());
    });
    server_.Route("POST /api/v1/migrations/{id}/cancel", [this](const HttpRequest& r) {
      std::lock_guard lock(mu_);
      cancelled_ = true;
      Json m = Migration(r.Param("id"), gets_[r.Param("id")]);
      m["state"] = "cancelling";
      return HttpResponse::Json(m.dump());
    });
    EXPECT_TRUE(server_.Start("127.0.0.1:0").ok());
  }

  std::string url() const { return "http://127.0.0.1:" + std::to_string(server_.port()); }

  std::string Seen(const std::string& what) {
    std::lock_guard lock(mu_);
    return seen_[what];
  }

 private:
  static Json Checks() {
    return {{"checks",
             {{{"name", "memory"}, {"ok", true}, {"message", "enough"}},
              {{"name", "cpu_compatible"}, {"ok", false}, {"message", "host2 lacks avx512"}}}}};
  }

  // The record after `polls` GETs: running for the first two, then the scenario's end.
  Json Migration(const std::string& id, int polls) const {
    bool final = polls >= 3 && (id != "m-cancel" || cancelled_);
    Json m = {{"id", id},
              {"vm", "vm-" + id},
              {"vm_uuid", "u"},
              {"source", "host1"},
              {"target", "host2"},
              {"type", "live"},
              {"state", "running"},
              {"phase", "converging"},
              {"priority", 0},
              {"options", Json::object()},
              {"progress",
               {{"phase", "converging"},
                {"bytes_total", 1ull << 30},
                {"bytes_done", 1ull << 29},
                {"rate", 10 << 20},
                {"eta_ms", 50000},
                {"dirty_rate", 1 << 20},
                {"downtime_limit_ms", 300},
                {"percent", 50.0}}},
              {"result", nullptr},
              {"error", nullptr},
              {"created_at_ms", 1},
              {"updated_at_ms", 2}};
    if (!final) return m;
    if (id == "m-fail") {
      m["state"] = "failed";
      m["error"] = {{"code", "io"}, {"message", "agent restarted during the job"}};
    } else if (id == "m-cancel") {
      m["state"] = "cancelled";
    } else {
      m["state"] = "completed";
      m["result"] = {{"total_ms", 4200},
                     {"bytes_sent", 1ull << 30},
                     {"qemu_downtime_ms", 35},
                     {"guest_downtime_ms", 120},
                     {"notes", Json::array()}};
    }
    return m;
  }

  Json Events(const std::string& id, int polls) const {
    Json events = {{{"seq", 1}, {"at_ms", 1}, {"kind", "state"}, {"message", "queued"}},
                   {{"seq", 2}, {"at_ms", 2}, {"kind", "phase"}, {"message", "converging"}}};
    Json m = Migration(id, polls);
    if (m["state"] != "running") {
      events.push_back({{"seq", 3},
                        {"at_ms", 3},
                        {"kind", "state"},
                        {"message", "now " + m["state"].get<std::string>()}});
    }
    return events;
  }

  void Record(const std::string& what, const std::string& value) {
    std::lock_guard lock(mu_);
    seen_[what] = value;
  }

  api::HttpServer server_;
  std::mutex mu_;
  std::map<std::string, int> gets_;
  std::map<std::string, std::string> seen_;
  bool cancelled_ = false;
};

class CliServerTest : public ::testing::Test {
 protected:
  // Runs `ferry ARGS` against the fake ferryd (stdout and stderr together).
  testing::CommandResult Ferry(const std::string& args) {
    return testing::Run(ShellQuote(testing::FerryBinary()) + " --server " + fake_.url() +
                        " --token " + kToken + " " + args);
  }
  // stdout only, split into lines.
  std::vector<std::string> JsonLines(const std::string& args, int* exit_code) {
    auto r = Ferry(args + " 2>/dev/null");
    *exit_code = r.exit_code;
    std::vector<std::string> lines;
    std::istringstream in(r.output);
    for (std::string line; std::getline(in, line);) lines.push_back(line);
    return lines;
  }

  FakeFerryd fake_;
};

bool Has(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

TEST_F(CliServerTest, HostsTableAndJson) {
  auto r = Ferry("hosts");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(Has(r.output, "ID     NAME        CLUSTER  STATUS  CPU MODEL       FREE MEMORY  VMS"))
      << r.output;
  EXPECT_TRUE(Has(r.output, "host1  host1-name  lab      up      Skylake-Client  3.00 GiB     2"))
      << r.output;
  EXPECT_TRUE(Has(r.output, "host2  host2-name  lab      down    -               -            0"))
      << r.output;

  r = Ferry("hosts --output json 2>/dev/null");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  Json j = Json::parse(r.output, nullptr, false);
  ASSERT_TRUE(j.is_object()) << r.output;
  EXPECT_EQ(j["hosts"][1]["status"], "down");
  EXPECT_EQ(j["hosts"][0]["facts"]["cpus"], 4);
}

TEST_F(CliServerTest, HostsAddRemoveRefresh) {
  auto r = Ferry("hosts add host3 --agent http://127.0.0.13:7801 --agent-token s --cluster c9");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(Has(r.output, "host3")) << r.output;
  Json sent = Json::parse(fake_.Seen("POST /api/v1/hosts"));
  EXPECT_EQ(sent["id"], "host3");
  EXPECT_EQ(sent["agent_url"], "http://127.0.0.13:7801");
  EXPECT_EQ(sent["agent_token"], "s");
  EXPECT_EQ(sent["cluster"], "c9");

  r = Ferry("hosts remove host1");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(Has(r.output, "host host1 removed")) << r.output;
  r = Ferry("hosts remove host9");
  EXPECT_EQ(r.exit_code, ExitCodeFor(ErrorCode::kNotFound)) << r.output;
  EXPECT_TRUE(Has(r.output, "host host9 not found")) << r.output;

  r = Ferry("hosts refresh host2 --output json 2>/dev/null");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(Json::parse(r.output)["vm_count"], 7);
}

TEST_F(CliServerTest, VmsWithEnvironmentSettings) {
  auto r = testing::Run("FERRY_SERVER=" + fake_.url() + " FERRY_TOKEN=" + kToken + " " +
                        ShellQuote(testing::FerryBinary()) + " vms --host host1");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(Has(r.output, "HOST   NAME  STATE    VCPUS  MEMORY      DISKS         FIRMWARE"))
      << r.output;
  EXPECT_TRUE(Has(r.output, "host1  g1    running  2      256.00 MiB  2 / 2.00 GiB  bios"))
      << r.output;
  EXPECT_EQ(fake_.Seen("GET /api/v1/vms"), "host1");
  EXPECT_EQ(fake_.Seen("GET /api/v1/vms cached"), "(absent)");  // ferryd reads the hosts now
  EXPECT_FALSE(Has(r.output, "is down")) << r.output;

  // --cached asks for the periodic inventory; a host that is down is named on stderr.
  r = testing::Run("FERRY_SERVER=" + fake_.url() + " FERRY_TOKEN=" + kToken + " " +
                   ShellQuote(testing::FerryBinary()) + " vms --host host2 --cached");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(fake_.Seen("GET /api/v1/vms cached"), "true");
  EXPECT_TRUE(Has(r.output,
                  "ferry vms: host host2 is down (io: host2: connection refused); its "
                  "VMs are listed as last seen"))
      << r.output;

  r = testing::Run("FERRY_SERVER=" + fake_.url() + " FERRY_TOKEN=wrong " +
                   ShellQuote(testing::FerryBinary()) + " vms");
  EXPECT_EQ(r.exit_code, ExitCodeFor(ErrorCode::kPermissionDenied)) << r.output;
  EXPECT_TRUE(Has(r.output, "refused the token")) << r.output;
}

TEST_F(CliServerTest, ValidationFailurePrintsTheFailedChecksAndExits10) {
  for (const std::string vm : {"bad", "bad-doc"}) {
    auto r = Ferry("migrate " + vm + " --to host2");
    EXPECT_EQ(r.exit_code, 10) << r.output;
    EXPECT_TRUE(Has(r.output, "✗ cpu_compatible: host2 lacks avx512")) << r.output;
    EXPECT_FALSE(Has(r.output, "memory")) << r.output;  // passing checks are not listed
    EXPECT_TRUE(Has(r.output, "validation failed")) << r.output;
  }
  auto r = Ferry("migrate bad --to host2 --output json 2>/dev/null");
  EXPECT_EQ(r.exit_code, 10) << r.output;
  Json j = Json::parse(r.output, nullptr, false);
  ASSERT_TRUE(j.is_object()) << r.output;
  EXPECT_EQ(j["error"]["code"], "failed_precondition");
  EXPECT_EQ(j["error"]["details"]["checks"][1]["name"], "cpu_compatible");

  r = Ferry("migrate bad --to host2 --validate-only");
  EXPECT_EQ(r.exit_code, 10) << r.output;
  EXPECT_TRUE(Has(r.output, "✗ cpu_compatible: host2 lacks avx512")) << r.output;
  EXPECT_TRUE(Has(r.output, "validation failed")) << r.output;
  r = Ferry("migrate g1 --to host2 --validate-only");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(Has(r.output, "✓ memory")) << r.output;
}

TEST_F(CliServerTest, MigrateSendsTheRequestAndPrintsTheMigrations) {
  auto r = Ferry(
      "migrate g1 g2 --to host2 --storage nas2 --type live --max-downtime 250 "
      "--bandwidth 100M --allow-postcopy --priority 3");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(Has(r.output, "m-ok    vm-m-ok    live  host1 → host2  running")) << r.output;
  EXPECT_TRUE(Has(r.output, "m-fail  vm-m-fail  live  host1 → host2  running")) << r.output;
  Json sent = Json::parse(fake_.Seen("POST /api/v1/migrations"));
  EXPECT_EQ(sent["vms"], Json::array({"g1", "g2"}));
  EXPECT_EQ(sent["to"], "host2");
  EXPECT_EQ(sent["storage"], "nas2");
  EXPECT_EQ(sent["type"], "live");
  EXPECT_EQ(sent["max_downtime_ms"], 250);
  EXPECT_EQ(sent["bandwidth"], 100ull << 20);
  EXPECT_EQ(sent["allow_postcopy"], true);
  EXPECT_EQ(sent["priority"], 3);

  r = Ferry("migrate --evacuate host1 --to host2");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  sent = Json::parse(fake_.Seen("POST /api/v1/migrations"));
  EXPECT_EQ(sent["evacuate"], "host1");
  EXPECT_FALSE(sent.contains("vms"));

  // Usage mistakes never reach the server.
  EXPECT_EQ(Ferry("migrate g1 --evacuate host1").exit_code, 2);
  EXPECT_EQ(Ferry("migrate g1 --bandwidth lots").exit_code, 2);
  EXPECT_EQ(Ferry("migrate g1 --type teleport").exit_code, 2);
}

TEST_F(CliServerTest, MigrateWaitExitsWithTheFirstFailure) {
  // m-ok completes, m-fail fails with code io.
  auto r = Ferry("migrate g1 g2 --to host2 --wait");
  EXPECT_EQ(r.exit_code, ExitCodeFor(ErrorCode::kIo)) << r.output;
  EXPECT_TRUE(Has(r.output, "m-ok (vm-m-ok): completed in 4.2 s")) << r.output;
  EXPECT_TRUE(Has(r.output, "m-fail (vm-m-fail): failed: io: agent restarted")) << r.output;
  EXPECT_TRUE(Has(r.output, "[vm-m-ok]")) << r.output;
}

TEST_F(CliServerTest, WatchExitStatusIsTheOutcome) {
  auto r = Ferry("watch m-ok");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(Has(r.output, "phase     converging")) << r.output;
  EXPECT_TRUE(Has(r.output, "state     now completed")) << r.output;
  EXPECT_TRUE(Has(r.output, "QEMU downtime 35 ms, guest downtime 120 ms")) << r.output;

  r = Ferry("watch m-fail");
  EXPECT_EQ(r.exit_code, ExitCodeFor(ErrorCode::kIo)) << r.output;
  EXPECT_TRUE(Has(r.output, "agent restarted during the job")) << r.output;

  // m-cancel ends only after a cancel.
  r = Ferry("cancel m-cancel");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(Has(r.output, "m-cancel (vm-m-cancel): cancelling")) << r.output;
  r = Ferry("watch m-cancel");
  EXPECT_EQ(r.exit_code, ExitCodeFor(ErrorCode::kCancelled)) << r.output;

  r = Ferry("watch nothing");
  EXPECT_EQ(r.exit_code, ExitCodeFor(ErrorCode::kNotFound)) << r.output;
}

TEST_F(CliServerTest, WatchJsonIsOneObjectPerLine) {
  int rc = -1;
  std::vector<std::string> lines = JsonLines("watch m-fail --output json", &rc);
  EXPECT_EQ(rc, ExitCodeFor(ErrorCode::kIo));
  ASSERT_GE(lines.size(), 3u);
  int events = 0;
  for (size_t i = 0; i < lines.size(); ++i) {
    Json j = Json::parse(lines[i], nullptr, false);
    ASSERT_TRUE(j.is_object()) << lines[i];
    if (i + 1 < lines.size()) {
      EXPECT_EQ(j["type"], "poll") << lines[i];
      events += static_cast<int>(j["events"].size());
    } else {
      EXPECT_EQ(j["type"], "final") << lines[i];
      EXPECT_EQ(j["migration"]["state"], "failed");
      EXPECT_EQ(j["migration"]["error"]["code"], "io");
    }
  }
  EXPECT_EQ(events, 3);  // each event once
}

TEST_F(CliServerTest, CancelWaitEndsWhenCancelled) {
  auto r = Ferry("cancel m-cancel --wait");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(Has(r.output, "m-cancel (vm-m-cancel): cancelled")) << r.output;
  r = Ferry("cancel m-ok --wait");  // completes before the cancel takes
  EXPECT_EQ(r.exit_code, 1) << r.output;
}

TEST_F(CliServerTest, MigrationsListAndDetails) {
  auto r = Ferry("migrations");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(fake_.Seen("GET /api/v1/migrations"), "true");
  EXPECT_TRUE(Has(r.output, "ID    VM       TYPE  ROUTE          STATE    PHASE       DONE   AGE"))
      << r.output;
  EXPECT_TRUE(Has(r.output, "m-ok  vm-m-ok  live  host1 → host2  running  converging  50.0%"))
      << r.output;
  r = Ferry("migrations --all --output json 2>/dev/null");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(fake_.Seen("GET /api/v1/migrations"), "(absent)");
  EXPECT_EQ(Json::parse(r.output)["migrations"][0]["id"], "m-ok");

  r = Ferry("migration m-ok");  // the first GET: running, with progress
  EXPECT_TRUE(Has(r.output, "progress:       vm-m-ok converging 50.0%")) << r.output;
  Ferry("migration m-ok");
  r = Ferry("migration m-ok");  // the third GET: completed
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(Has(r.output, "state:          completed")) << r.output;
  EXPECT_TRUE(Has(r.output, "total time:     4.2 s")) << r.output;
  EXPECT_TRUE(Has(r.output, "QEMU downtime:  35 ms")) << r.output;
  EXPECT_TRUE(Has(r.output, "guest downtime: 120 ms")) << r.output;
  EXPECT_TRUE(Has(r.output, "now completed")) << r.output;
}

TEST_F(CliServerTest, MalformedAnswerIsAnErrorNamingTheField) {
  auto r = Ferry("migration m-garbage");
  EXPECT_EQ(r.exit_code, ExitCodeFor(ErrorCode::kCorrupt)) << r.output;
  EXPECT_TRUE(Has(r.output, "vm: expected a string")) << r.output;
}

// --- Migration plans (docs/plans.md, "ferryd API additions") ------------------------------

// A stand-in for ferryd's plan endpoints. Plans by name (and id p-NAME): wave-1 runs for two
// polls and completes; wave-fail ends partial (db1's boot check failed, code io); wave-cancel
// ends cancelled after POST .../cancel; wave-garbage answers a malformed record. A posted
// document containing "bad" fails validation (422 with details.vms[].checks).
class FakePlanFerryd {
 public:
  FakePlanFerryd() : server_(kToken) {
    server_.Route("POST /api/v1/plans", [this](const HttpRequest& r) {
      Record("POST /api/v1/plans", r.body);
      Record("content-type", r.content_type);
      Record("validate_only", r.Query("validate_only", "(absent)"));
      const bool bad = r.body.find("bad") != std::string::npos;
      if (r.Query("validate_only") == "1") {
        return HttpResponse::Json(Json({{"vms", VmChecks(bad)}}).dump());
      }
      if (bad) {
        return HttpResponse::Error(Status::FailedPrecondition("2 of 2 VMs failed validation"),
                                   Json({{"vms", VmChecks(true)}}).dump());
      }
      return HttpResponse::Json(Plan("wave-1", 0).dump(), 201);
    });
    server_.Route("GET /api/v1/plans", [](const HttpRequest&) {
      return HttpResponse::Json(
          Json({{"plans", {Plan("wave-1", 0), Plan("wave-fail", 3)}}}).dump());
    });
    server_.Route("GET /api/v1/plans/{id}", [this](const HttpRequest& r) {
      std::string name = r.Param("id");
      if (name.rfind("p-", 0) == 0) name = name.substr(2);
      if (name == "wave-garbage") {
        return HttpResponse::Json(R"({"id":"p-x","name":"wave-garbage","state":"sleeping"})");
      }
      if (name.rfind("wave-", 0) != 0) {
        return HttpResponse::Error(Status::NotFound("plan " + r.Param("id") + " not found"));
      }
      std::lock_guard lock(mu_);
      return HttpResponse::Json(Plan(name, ++polls_[name], cancelled_).dump());
    });
    for (const std::string action : {"start", "cancel", "deploy"}) {
      server_.Route("POST /api/v1/plans/{id}/" + action, [this, action](const HttpRequest& r) {
        Record("action", action + " " + r.Param("id"));
        if (r.Param("id").rfind("p-", 0) != 0) {  // actions take the id, not the name
          return HttpResponse::Error(Status::NotFound("plan " + r.Param("id") + " not found"));
        }
        const std::string name = r.Param("id").substr(2);
        if (action == "start" && name == "wave-bad") {
          return HttpResponse::Error(Status::FailedPrecondition("re-validation failed"),
                                     Json({{"vms", VmChecks(true)}}).dump());
        }
        std::lock_guard lock(mu_);
        if (action == "cancel") cancelled_ = true;
        return HttpResponse::Json(Plan(name, polls_[name], cancelled_).dump());
      });
    }
    server_.Route("DELETE /api/v1/plans/{id}", [this](const HttpRequest& r) {
      Record("DELETE", r.Param("id"));
      if (r.Param("id") == "p-wave-fail") {
        return HttpResponse::Error(
            Status::FailedPrecondition("plan wave-fail has active migrations"));
      }
      return HttpResponse::NoContent();
    });
    server_.Route("GET /api/v1/shares", [this](const HttpRequest& r) {
      Record("GET /api/v1/shares", r.Query("host", "(all)"));
      Json web1 = {{"host", "host1"},
                   {"id", "web1.ova"},
                   {"share", "exports"},
                   {"vm",
                    {{"name", "web1"},
                     {"platform", "vmware"},
                     {"vcpus", 2},
                     {"memory_bytes", 2ull << 30},
                     {"firmware", "bios"},
                     {"disks", {{{"id", "disk0"}, {"capacity_bytes", 10ull << 30}}}},
                     {"nics", {{{"id", "nic0"}}}},
                     {"missing", Json::array()}}}};
      Json disk7 = {{"host", "host1"},
                    {"id", "disk7.qcow2"},
                    {"share", "exports"},
                    {"vm",
                     {{"name", "disk7"},
                      {"platform", "unknown"},
                      {"disks", {{{"id", "disk0"}, {"capacity_bytes", 1ull << 30}}}},
                      {"missing", {"vcpus", "memory", "firmware"}}}}};
      return HttpResponse::Json(Json({{"vms", {web1, disk7}}}).dump());
    });
    EXPECT_TRUE(server_.Start("127.0.0.1:0").ok());
  }

  std::string url() const { return "http://127.0.0.1:" + std::to_string(server_.port()); }

  std::string Seen(const std::string& what) {
    std::lock_guard lock(mu_);
    return seen_[what];
  }

 private:
  static Json VmChecks(bool bad) {
    Json web1 = {{"vm", "web1"},
                 {"checks",
                  {{{"name", "vm_found"}, {"ok", true}, {"message", "web1.ova"}},
                   {{"name", "networks_mapped"},
                    {"ok", !bad},
                    {"message", bad ? "NIC nic1's network \"Backup LAN\" has no mapping"
                                    : "every NIC's network has a mapping"}}}}};
    Json db1 = {{"vm", "db1"},
                {"checks",
                 {{{"name", "pool_capacity"},
                   {"ok", !bad},
                   {"message", bad ? "pool local has 1.20 GiB available; disks of this plan need "
                                     "4.00 GiB"
                                   : "pool local: 4.00 GiB needed"}}}}};
    return {web1, db1};
  }

  // The plan after `polls` GETs.
  static Json Plan(const std::string& name, int polls, bool cancelled = false) {
    const bool final = polls >= 3 && (name != "wave-cancel" || cancelled);
    Json web1 = {
        {"vm", "web1"},
        {"target_name", "web1"},
        {"migration", "m-w1"},
        {"state", "running"},
        {"phase", "copying"},
        {"progress",
         {{"bytes_total", 10ull << 30}, {"bytes_done", 4ull << 30}, {"rate", 50ull << 20}}},
        {"result", nullptr},
        {"error", nullptr}};
    Json db1 = {
        {"vm", "db1"}, {"target_name", "db1-kvm"},   {"migration", "m-d1"}, {"state", "queued"},
        {"phase", ""}, {"progress", Json::object()}, {"result", nullptr},   {"error", nullptr}};
    std::string state = "running";
    if (final) {
      web1["state"] = "completed";
      web1["phase"] = "done";
      web1["result"] = {{"total_ms", 60000},
                        {"defined_vm", "web1"},
                        {"boot",
                         {{"checked", true},
                          {"ok", true},
                          {"elapsed_ms", 12300},
                          {"message", "login: after 12.3 s"}}}};
      if (name == "wave-fail") {
        db1["state"] = "failed";
        db1["phase"] = "booting";
        db1["error"] = {{"code", "io"},
                        {"message", "boot check: no 'login:' on the console within 300 s"}};
        state = "partial";
      } else if (name == "wave-cancel") {
        db1["state"] = "cancelled";
        state = "cancelled";
      } else {
        db1["state"] = "completed";
        db1["phase"] = "done";
        state = "completed";
      }
    }
    return {{"id", "p-" + name},  {"name", name},
            {"state", state},     {"document", {{"name", name}}},
            {"created_at_ms", 1}, {"updated_at_ms", 2},
            {"vms", {web1, db1}}};
  }

  void Record(const std::string& what, const std::string& value) {
    std::lock_guard lock(mu_);
    seen_[what] = value;
  }

  api::HttpServer server_;
  std::mutex mu_;
  std::map<std::string, int> polls_;
  std::map<std::string, std::string> seen_;
  bool cancelled_ = false;
};

class CliPlanTest : public ::testing::Test {
 protected:
  testing::CommandResult Ferry(const std::string& args) {
    return testing::Run(ShellQuote(testing::FerryBinary()) + " --server " + fake_.url() +
                        " --token " + kToken + " " + args);
  }
  std::string Write(const std::string& name, const std::string& text) {
    const std::string path = dir_.Join(name);
    EXPECT_TRUE(testing::WriteFileBytes(path, std::vector<uint8_t>(text.begin(), text.end())));
    return path;
  }

  testing::TempDir dir_;
  FakePlanFerryd fake_;
};

constexpr char kPlanYaml[] =
    "name: wave-1\nsource: {type: share, host: host1, share: exports}\n"
    "target: {host: host2}\nvms: [{name: web1}, {name: db1}]\n";

TEST_F(CliPlanTest, ApplySendsTheFileAsItIs) {
  const std::string yaml = Write("plan.yaml", kPlanYaml);
  auto r = Ferry("plan apply -f " + yaml);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(fake_.Seen("POST /api/v1/plans"), kPlanYaml);
  EXPECT_EQ(fake_.Seen("content-type"), "application/yaml");
  EXPECT_EQ(fake_.Seen("validate_only"), "(absent)");
  EXPECT_TRUE(Has(r.output, "plan wave-1 (p-wave-1): running")) << r.output;
  EXPECT_TRUE(Has(r.output, "VM    TARGET   STATE    PHASE    DONE   RATE         BOOT CHECK"))
      << r.output;
  EXPECT_TRUE(Has(r.output, "web1  web1     running  copying  40.0%  50.00 MiB/s  -")) << r.output;
  EXPECT_TRUE(Has(r.output, "db1   db1-kvm  queued   -        -      -            -")) << r.output;

  const std::string json_text = R"({"name": "wave-1", "source": {"host": "h"}})";
  const std::string json = Write("plan.json", json_text);
  r = Ferry("plan apply -f " + json + " --output json");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(fake_.Seen("POST /api/v1/plans"), json_text);
  EXPECT_EQ(fake_.Seen("content-type"), "application/json");
  Json j = Json::parse(r.output, nullptr, false);
  ASSERT_TRUE(j.is_object()) << r.output;
  EXPECT_EQ(j["id"], "p-wave-1");
  EXPECT_EQ(j["vms"][1]["target_name"], "db1-kvm");

  r = testing::Run("printf 'name: from-stdin\\n' | " + ShellQuote(testing::FerryBinary()) +
                   " --server " + fake_.url() + " --token " + kToken + " plan apply -f -");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(fake_.Seen("POST /api/v1/plans"), "name: from-stdin\n");
  EXPECT_EQ(fake_.Seen("content-type"), "application/yaml");

  // Nothing is sent for a missing or empty file, or without -f.
  EXPECT_EQ(Ferry("plan apply -f " + dir_.Join("nope.yaml")).exit_code, 3);
  EXPECT_EQ(Ferry("plan apply -f " + Write("empty.yaml", " \n")).exit_code, 2);
  EXPECT_EQ(Ferry("plan apply -f " + dir_.path()).exit_code, 2);
  EXPECT_EQ(Ferry("plan apply").exit_code, 2);
  EXPECT_EQ(Ferry("plan").exit_code, 2);
}

TEST_F(CliPlanTest, FailedValidationPrintsEveryVmsFailedChecksAndExits10) {
  const std::string bad = Write("bad.yml", "name: bad\n");
  auto r = Ferry("plan apply -f " + bad);
  EXPECT_EQ(r.exit_code, 10) << r.output;
  EXPECT_TRUE(Has(r.output,
                  "✗ web1: networks_mapped: NIC nic1's network \"Backup LAN\" has no "
                  "mapping"))
      << r.output;
  EXPECT_TRUE(Has(r.output, "✗ db1: pool_capacity: pool local has 1.20 GiB available")) << r.output;
  EXPECT_FALSE(Has(r.output, "vm_found")) << r.output;  // passing checks are not listed
  EXPECT_TRUE(Has(r.output, "validation failed")) << r.output;
  EXPECT_EQ(fake_.Seen("content-type"), "application/yaml");

  r = Ferry("plan apply -f " + bad + " --output json 2>/dev/null");
  EXPECT_EQ(r.exit_code, 10) << r.output;
  Json j = Json::parse(r.output, nullptr, false);
  ASSERT_TRUE(j.is_object()) << r.output;
  EXPECT_EQ(j["error"]["code"], "failed_precondition");
  EXPECT_EQ(j["error"]["details"]["vms"][1]["vm"], "db1");

  // validate: every check of every VM.
  r = Ferry("plan validate -f " + bad);
  EXPECT_EQ(r.exit_code, 10) << r.output;
  EXPECT_EQ(fake_.Seen("validate_only"), "1");
  EXPECT_TRUE(Has(r.output, "web1:\n  ✓ vm_found: web1.ova\n  ✗ networks_mapped:")) << r.output;
  EXPECT_TRUE(Has(r.output, "db1:\n  ✗ pool_capacity")) << r.output;
  EXPECT_TRUE(Has(r.output, "validation failed")) << r.output;
  r = Ferry("plan validate -f " + Write("good.yaml", kPlanYaml));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(Has(r.output, "✓ pool_capacity: pool local: 4.00 GiB needed")) << r.output;
  EXPECT_TRUE(Has(r.output, "validation passed")) << r.output;
  r = Ferry("plan validate -f " + bad + " --output json");
  EXPECT_EQ(r.exit_code, 10) << r.output;
  EXPECT_EQ(Json::parse(r.output, nullptr, false)["vms"][0]["checks"][1]["ok"], false) << r.output;

  // start re-validates; a refusal there is the same.
  r = Ferry("plan start wave-bad");
  EXPECT_EQ(r.exit_code, 10) << r.output;
  EXPECT_TRUE(Has(r.output, "✗ db1: pool_capacity")) << r.output;
}

TEST_F(CliPlanTest, ApplyWaitAndStatusWatchExitWithThePlansOutcome) {
  auto r = Ferry("plan apply -f " + Write("plan.yaml", kPlanYaml) + " --wait");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(Has(r.output, "web1: running (copying)")) << r.output;
  EXPECT_TRUE(Has(r.output, "db1: completed (done)")) << r.output;
  EXPECT_TRUE(Has(r.output, "web1  web1     completed  done   100.0%  -     ok (12.3 s)"))
      << r.output;
  EXPECT_TRUE(Has(r.output, "plan wave-1 completed: 2 completed")) << r.output;

  r = Ferry("plan status wave-fail --watch");
  EXPECT_EQ(r.exit_code, ExitCodeFor(ErrorCode::kIo)) << r.output;
  EXPECT_TRUE(Has(r.output, "db1: failed (booting)")) << r.output;
  EXPECT_TRUE(Has(r.output, "db1   db1-kvm  failed     booting  -       -     failed")) << r.output;
  EXPECT_TRUE(Has(r.output, "db1: io: boot check: no 'login:' on the console within 300 s"))
      << r.output;
  EXPECT_TRUE(Has(r.output, "plan wave-fail partial: 1 completed, 1 failed")) << r.output;

  // Cancelled: exit 9, once the cancel was asked for.
  r = Ferry("plan cancel wave-cancel");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(fake_.Seen("action"), "cancel p-wave-cancel");
  r = Ferry("plan status wave-cancel --watch");
  EXPECT_EQ(r.exit_code, ExitCodeFor(ErrorCode::kCancelled)) << r.output;

  EXPECT_EQ(Ferry("plan status nothing --watch").exit_code, 3);
}

TEST_F(CliPlanTest, WatchJsonIsOneObjectPerLine) {
  auto r = Ferry("plan status wave-fail --watch --output json 2>/dev/null");
  EXPECT_EQ(r.exit_code, ExitCodeFor(ErrorCode::kIo)) << r.output;
  std::istringstream in(r.output);
  std::vector<Json> lines;
  for (std::string line; std::getline(in, line);)
    lines.push_back(Json::parse(line, nullptr, false));
  ASSERT_GE(lines.size(), 3u) << r.output;
  for (size_t i = 0; i + 1 < lines.size(); ++i) EXPECT_EQ(lines[i]["type"], "poll") << r.output;
  EXPECT_EQ(lines.back()["type"], "final");
  EXPECT_EQ(lines.back()["plan"]["state"], "partial");
  EXPECT_EQ(lines.back()["plan"]["vms"][1]["error"]["code"], "io");

  // apply --wait --output json: the created plan on one line, then the watch lines.
  r = Ferry("plan apply -f " + Write("p.yaml", kPlanYaml) + " --wait --output json 2>/dev/null");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  std::istringstream in2(r.output);
  std::string first;
  std::getline(in2, first);
  EXPECT_EQ(Json::parse(first, nullptr, false)["id"], "p-wave-1") << r.output;
}

TEST_F(CliPlanTest, ListStatusActionsAndDelete) {
  auto r = Ferry("plans");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(Has(r.output, "NAME       ID           STATE    VMS  DONE  AGE")) << r.output;
  EXPECT_TRUE(Has(r.output, "wave-1     p-wave-1     running  2    0/2")) << r.output;
  EXPECT_TRUE(Has(r.output, "wave-fail  p-wave-fail  partial  2    1/2")) << r.output;
  r = Ferry("plans --output json");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(Json::parse(r.output, nullptr, false)["plans"][1]["state"], "partial") << r.output;

  r = Ferry("plan status wave-1");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(Has(r.output, "plan wave-1 (p-wave-1): running")) << r.output;
  r = Ferry("plan status wave-1 --output json");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(Json::parse(r.output, nullptr, false)["document"]["name"], "wave-1") << r.output;
  EXPECT_EQ(Ferry("plan status nothing").exit_code, 3);

  // Actions resolve the name to the plan's id.
  for (const std::string action : {"start", "deploy", "cancel"}) {
    r = Ferry("plan " + action + " wave-1");
    EXPECT_EQ(r.exit_code, 0) << r.output;
    EXPECT_EQ(fake_.Seen("action"), action + " p-wave-1");
    EXPECT_TRUE(Has(r.output, "plan wave-1 (p-wave-1)")) << r.output;
  }
  EXPECT_EQ(Ferry("plan start nothing").exit_code, 3);

  r = Ferry("plan delete wave-1");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(fake_.Seen("DELETE"), "p-wave-1");
  EXPECT_TRUE(Has(r.output, "plan wave-1 (p-wave-1) deleted")) << r.output;
  r = Ferry("plan delete wave-1 --output json");
  EXPECT_EQ(Json::parse(r.output, nullptr, false)["deleted"], "wave-1") << r.output;
  r = Ferry("plan delete wave-fail");
  EXPECT_EQ(r.exit_code, 10) << r.output;
  EXPECT_TRUE(Has(r.output, "has active migrations")) << r.output;

  r = Ferry("plan status wave-garbage");
  EXPECT_EQ(r.exit_code, ExitCodeFor(ErrorCode::kCorrupt)) << r.output;
  EXPECT_TRUE(Has(r.output, "state: unknown value \"sleeping\"")) << r.output;
}

TEST_F(CliPlanTest, Shares) {
  auto r = Ferry("shares --host host1");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(fake_.Seen("GET /api/v1/shares"), "host1");
  EXPECT_TRUE(Has(r.output,
                  "HOST   SHARE    ID           NAME   PLATFORM  VCPUS  MEMORY    DISKS          "
                  "NICS  MISSING"))
      << r.output;
  EXPECT_TRUE(Has(r.output,
                  "host1  exports  web1.ova     web1   vmware    2      2.00 GiB  1 / 10.00 GiB  "
                  "1     -"))
      << r.output;
  EXPECT_TRUE(Has(r.output,
                  "disk7.qcow2  disk7  unknown   ?      ?         1 / 1.00 GiB   0     "
                  "vcpus,memory,firmware"))
      << r.output;
  r = Ferry("shares --output json");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(fake_.Seen("GET /api/v1/shares"), "(all)");
  EXPECT_EQ(Json::parse(r.output, nullptr, false)["vms"][1]["vm"]["missing"][0], "vcpus");
}

TEST(CliUnreachableTest, UnreachableServerIsAnIoError) {
  for (const std::string out : {"table", "json"}) {
    auto r = testing::Run(ShellQuote(testing::FerryBinary()) +
                          " --server http://127.0.0.1:1 --output " + out + " migrations");
    EXPECT_EQ(r.exit_code, ExitCodeFor(ErrorCode::kIo)) << r.output;
    EXPECT_TRUE(Has(r.output, "127.0.0.1:1")) << r.output;
  }
  auto r = testing::Run(ShellQuote(testing::FerryBinary()) + " --server ftp://x hosts");
  EXPECT_EQ(r.exit_code, ExitCodeFor(ErrorCode::kInvalidArgument)) << r.output;
}

}  // namespace
}  // namespace ferry
