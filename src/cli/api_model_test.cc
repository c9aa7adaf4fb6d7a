// The JSON mapping of ferryd's answers: good answers read completely, malformed ones give
// kCorrupt naming the field, and no input crashes the parser.
#include "cli/api_model.h"

#include <gtest/gtest.h>

namespace ferry::cli {
namespace {

constexpr char kHosts[] = R"({"hosts": [
  {"id": "host1", "name": "Host 1", "cluster": "lab", "agent_url": "http://127.0.0.11:7801",
   "status": "up", "last_seen_at_ms": 1700000000000, "vm_count": 2,
   "facts": {"hostname": "h1", "cpu_model": "Skylake-Client", "cpu_arch": "x86_64", "cpus": 4,
             "memory_bytes": 8589934592, "free_memory_bytes": 4294967296,
             "domain_types": ["qemu"], "migration_uri": "tcp://127.0.0.11"}},
  {"id": "host2", "status": "down", "facts": {}, "vm_count": 0}]})";

constexpr char kMigration[] = R"({"id": "m1", "vm": "g1", "vm_uuid": "u-1", "source": "host1",
  "target": "host2", "type": "live", "state": "completed", "phase": "finalizing", "priority": -3,
  "options": {"max_downtime_ms": 300},
  "progress": {"phase": "finalizing", "bytes_total": 100, "bytes_done": 100, "rate": 10,
               "eta_ms": -1, "dirty_rate": 0, "downtime_limit_ms": 300, "percent": 100},
  "result": {"total_ms": 4200, "bytes_sent": 1234, "qemu_downtime_ms": 35,
             "guest_downtime_ms": -1, "notes": ["downtime limit 300 -> 600 ms"], "disks": []},
  "error": null, "created_at_ms": 1700000000000, "updated_at_ms": 1700000004200})";

TEST(ApiModelTest, ReadsHosts) {
  auto hosts = ParseHostList(kHosts);
  ASSERT_TRUE(hosts.ok()) << hosts.status().ToString();
  ASSERT_EQ(hosts->size(), 2u);
  const HostRecord& h = (*hosts)[0];
  EXPECT_EQ(h.id, "host1");
  EXPECT_EQ(h.cluster, "lab");
  EXPECT_EQ(h.status, "up");
  EXPECT_TRUE(h.has_facts);
  EXPECT_EQ(h.facts.cpu_model, "Skylake-Client");
  EXPECT_EQ(h.facts.free_memory_bytes, 4294967296u);
  EXPECT_EQ(h.facts.migration_uri, "tcp://127.0.0.11");
  EXPECT_EQ(h.vm_count, 2);
  EXPECT_FALSE((*hosts)[1].has_facts);
  EXPECT_EQ((*hosts)[1].status, "down");
  EXPECT_NE(h.json.find("\"agent_url\""), std::string::npos);
}

TEST(ApiModelTest, ReadsAMigration) {
  auto m = ParseMigration(kMigration);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(m->id, "m1");
  EXPECT_EQ(m->priority, -3);
  EXPECT_TRUE(m->IsFinal());
  EXPECT_EQ(m->progress.bytes_done, 100u);
  EXPECT_EQ(m->progress.eta_ms, -1);
  ASSERT_TRUE(m->progress.percent.has_value());
  EXPECT_DOUBLE_EQ(*m->progress.percent, 100.0);
  ASSERT_TRUE(m->result.has_value());
  EXPECT_EQ(m->result->qemu_downtime_ms, 35);
  EXPECT_EQ(m->result->guest_downtime_ms, -1);
  ASSERT_EQ(m->result->notes.size(), 1u);
  EXPECT_FALSE(m->error.has_value());  // null = absent
}

TEST(ApiModelTest, ReadsVmsEventsAndChecks) {
  auto vms = ParseVmList(R"({"vms": [{"host": "host1", "name": "g1", "state": "running",
      "vcpus": 2, "memory_bytes": 268435456, "firmware": "bios",
      "disks": [{"target": "vda", "capacity_bytes": 1073741824}], "nics": [{}, {}]}]})");
  ASSERT_TRUE(vms.ok()) << vms.status().ToString();
  ASSERT_EQ(vms->size(), 1u);
  EXPECT_EQ((*vms)[0].disks.size(), 1u);
  EXPECT_EQ((*vms)[0].nic_count, 2u);

  auto events = ParseEventList(R"({"events": [{"seq": 3, "at_ms": 5, "kind": "state",
      "message": "queued", "data": {"x": 1}}]})");
  ASSERT_TRUE(events.ok()) << events.status().ToString();
  EXPECT_EQ((*events)[0].seq, 3);
  EXPECT_EQ((*events)[0].message, "queued");

  auto checks = ParseValidationDetails(R"({"checks": [{"name": "memory", "ok": true},
      {"name": "cpu_compatible", "ok": false, "message": "lacks avx512"}]})");
  ASSERT_TRUE(checks.ok()) << checks.status().ToString();
  ASSERT_EQ(checks->size(), 2u);
  EXPECT_FALSE((*checks)[1].ok);
  auto plans = ParseValidationDetails(R"({"plans": [{"vm": "g1", "type": "live",
      "checks": [{"name": "firmware", "ok": false}]}]})");
  ASSERT_TRUE(plans.ok()) << plans.status().ToString();
  ASSERT_EQ(plans->size(), 1u);
  EXPECT_EQ((*plans)[0].vm, "g1");
  EXPECT_FALSE(ParseValidationDetails("{}").ok());

  auto v = ParseValidation(R"({"ok": false, "plans": [{"vm": "g1", "type": "live",
      "checks": [{"name": "cpu_compatible", "ok": false, "message": "no"}]}]})");
  ASSERT_TRUE(v.ok()) << v.status().ToString();
  EXPECT_FALSE(v->ok);
  EXPECT_EQ(v->plans[0].checks[0].vm, "g1");
}

// Each malformed answer fails with kCorrupt and a message naming the field.
TEST(ApiModelTest, MalformedAnswersNameTheField) {
  struct Case {
    const char* body;
    const char* field;
  };
  const Case cases[] = {
      {R"({"hosts": [{"id": "a", "status": "up"}, {"id": "b", "status": "up", "vm_count": "2"}]})",
       "hosts[1].vm_count"},
      {R"({"hosts": [{"status": "up"}]})", "hosts[0].id: missing"},
      {R"({"hosts": [{"id": "a", "status": "sideways"}]})", "hosts[0].status"},
      {R"({"hosts": [{"id": "a", "status": "up", "facts": {"free_memory_bytes": -5}}]})",
       "hosts[0].facts.free_memory_bytes"},
      {R"({"hosts": {}})", "hosts: expected an array"},
      {R"({"nothing": []})", "hosts: missing"},
      {R"([1, 2])", "expected an object"},
      {R"(<html>502</html>)", "not JSON"},
  };
  for (const Case& c : cases) {
    auto r = ParseHostList(c.body);
    ASSERT_FALSE(r.ok()) << c.body;
    EXPECT_EQ(r.status().code(), ErrorCode::kCorrupt) << c.body;
    EXPECT_NE(r.status().message().find(c.field), std::string::npos)
        << c.body << " -> " << r.status().message();
  }
  auto m = ParseMigration(R"({"id": "m1", "vm": "g1", "type": "live", "state": "running",
      "progress": {"percent": 140}})");
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find("progress.percent"), std::string::npos);
  m = ParseMigration(R"({"id": "m1", "vm": "g1", "type": "live", "state": "running",
      "result": {"notes": ["a", 3]}})");
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find("result.notes[1]"), std::string::npos);
  m = ParseMigration(R"({"id": "m1", "vm": "g1", "type": "live", "state": "failed",
      "error": {"message": "x"}})");
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find("error.code: missing"), std::string::npos);
  auto e = ParseEventList(R"({"events": [{"seq": 1.5, "kind": "info"}]})");
  ASSERT_FALSE(e.ok());
  EXPECT_NE(e.status().message().find("events[0].seq"), std::string::npos);
}

// Every prefix and many byte flips of valid answers: an answer or an error, never a crash.
TEST(ApiModelTest, DamagedAnswersNeverCrash) {
  for (const std::string& good : {std::string(kHosts), std::string(kMigration)}) {
    for (size_t n = 0; n < good.size(); ++n) {
      std::string cut = good.substr(0, n);
      (void)ParseHostList(cut);
      (void)ParseMigration(cut);
    }
    for (size_t i = 0; i < good.size(); i += 3) {
      for (char c : {'"', '1', '-', '{', ']', 'x', '\0'}) {
        std::string bad = good;
        bad[i] = c;
        auto h = ParseHostList(bad);
        auto m = ParseMigration(bad);
        if (!h.ok()) {
          EXPECT_EQ(h.status().code(), ErrorCode::kCorrupt);
        }
        if (!m.ok()) {
          EXPECT_EQ(m.status().code(), ErrorCode::kCorrupt);
        }
      }
    }
  }
}

constexpr char kPlan[] = R"({"id": "p-1", "name": "wave-1", "state": "partial",
  "document": {"name": "wave-1"}, "created_at_ms": 5, "updated_at_ms": 6,
  "vms": [
    {"vm": "web1", "target_name": "web1", "migration": "m-1", "state": "completed",
     "phase": "done", "progress": {"bytes_total": 10, "bytes_done": 10, "percent": 100},
     "result": {"total_ms": 60000, "defined_vm": "web1",
                "boot": {"checked": true, "ok": true, "elapsed_ms": 12300, "message": "seen"}},
     "error": null},
    {"vm": "db1", "target_name": "db1-kvm", "migration": null, "state": "failed",
     "phase": "booting", "progress": {}, "result": null,
     "error": {"code": "io", "message": "boot check: no 'login:' on the console within 300 s"}}]})";

TEST(ApiModelTest, ReadsPlansSharesAndPlanValidations) {
  auto plan = ParsePlanStatus(kPlan);
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  EXPECT_EQ(plan->id, "p-1");
  EXPECT_EQ(plan->state, "partial");
  EXPECT_TRUE(plan->IsFinal());
  ASSERT_EQ(plan->vms.size(), 2u);
  const PlanVmRecord& web1 = plan->vms[0];
  EXPECT_EQ(web1.migration, "m-1");
  EXPECT_EQ(web1.progress.percent, 100.0);
  ASSERT_TRUE(web1.result && web1.result->boot);
  EXPECT_EQ(web1.result->defined_vm, "web1");
  EXPECT_TRUE(web1.result->boot->ok);
  EXPECT_EQ(web1.result->boot->elapsed_ms, 12300);
  EXPECT_EQ(plan->vms[1].migration, "");
  ASSERT_TRUE(plan->vms[1].error);
  EXPECT_EQ(plan->vms[1].error->code, "io");
  EXPECT_TRUE(plan->json.find("\"document\":{\"name\":\"wave-1\"}") != std::string::npos);
  auto list = ParsePlanList(std::string(R"({"plans": [)") + kPlan + "]}");
  ASSERT_TRUE(list.ok()) << list.status().ToString();
  EXPECT_EQ(list->size(), 1u);

  auto shares = ParseShareVmList(R"({"vms": [{"host": "h1", "id": "a/vm.json", "share": "s",
    "vm": {"name": "a", "platform": "ferry", "vcpus": 2, "memory_bytes": 1024,
           "disks": [{"capacity_bytes": 7}, {"capacity_bytes": 8}], "nics": [{}],
           "missing": ["firmware"], "some_future_field": 1}}]})");
  ASSERT_TRUE(shares.ok()) << shares.status().ToString();
  EXPECT_EQ((*shares)[0].disk_count, 2u);
  EXPECT_EQ((*shares)[0].disk_bytes, 15u);
  EXPECT_EQ((*shares)[0].nic_count, 1u);
  EXPECT_EQ((*shares)[0].missing, std::vector<std::string>{"firmware"});

  auto v = ParsePlanValidation(R"({"vms": [{"vm": "a", "checks": [{"name": "x", "ok": true}]},
    {"vm": "b", "checks": [{"name": "y", "ok": false, "message": "no"}]}]})");
  ASSERT_TRUE(v.ok()) << v.status().ToString();
  EXPECT_FALSE(v->ok);
  EXPECT_EQ(v->plans[1].checks[0].vm, "b");
  v = ParsePlanValidation(R"({"vms": [{"vm": "a", "checks": [{"name": "x", "ok": true}]}]})");
  ASSERT_TRUE(v.ok());
  EXPECT_TRUE(v->ok);
  v = ParsePlanValidation(R"({"ok": false, "vms": []})");
  ASSERT_TRUE(v.ok());
  EXPECT_FALSE(v->ok);

  auto details = ParseValidationDetails(
      R"({"vms": [{"vm": "db1", "checks": [{"name": "pool_capacity", "ok": false}]}]})");
  ASSERT_TRUE(details.ok()) << details.status().ToString();
  ASSERT_EQ(details->size(), 1u);
  EXPECT_EQ((*details)[0].vm, "db1");
}

TEST(ApiModelTest, MalformedPlansNameTheField) {
  auto expect = [](const Status& s, const std::string& part) {
    EXPECT_EQ(s.code(), ErrorCode::kCorrupt) << s.ToString();
    EXPECT_TRUE(s.message().find(part) != std::string::npos) << s.ToString();
  };
  expect(ParsePlanStatus(R"({"id": "p", "name": "n", "state": "sleeping"})").status(),
         "state: unknown value \"sleeping\"");
  expect(
      ParsePlanStatus(R"({"id": "p", "name": "n", "state": "ready", "vms": [{"vm": 3}]})").status(),
      "vms[0].vm: expected a string");
  expect(ParsePlanStatus(R"({"id": "p", "name": "n", "state": "ready", "document": []})").status(),
         "document: expected an object");
  expect(ParsePlanStatus(R"({"id": "p", "name": "n", "state": "ready",
    "vms": [{"vm": "a", "result": {"boot": {"ok": "yes"}}}]})")
             .status(),
         "vms[0].result.boot.ok: expected true or false");
  expect(ParseShareVmList(R"({"vms": [{"id": "x", "vm": {"missing": [1]}}]})").status(),
         "vms[0].vm.missing[0]: expected a string");
  expect(ParseShareVmList(R"({"vms": [{"id": "x"}]})").status(), "vms[0].vm: missing");
  expect(ParsePlanList(R"({"plan": []})").status(), "plans: missing");
  const std::string good = kPlan;
  for (size_t i = 0; i < good.size(); i += 2) {
    for (char c : {'"', '1', '{', ']', '\0'}) {
      std::string bad = good;
      bad[i] = c;
      auto p = ParsePlanStatus(bad);
      if (!p.ok()) {
        EXPECT_EQ(p.status().code(), ErrorCode::kCorrupt);
      }
    }
  }
}

TEST(ApiModelTest, BuildsRequests) {
  MigrationRequest r;
  r.vms = {"g1", "g2"};
  r.to = "host2";
  r.type = "live";
  r.bandwidth = 100u << 20;
  r.max_downtime_ms = 300;
  EXPECT_EQ(MigrationRequestJson(r),
            R"({"bandwidth":104857600,"max_downtime_ms":300,"to":"host2","type":"live",)"
            R"("vms":["g1","g2"]})");
  MigrationRequest e;
  e.evacuate = "host1";
  e.allow_postcopy = true;
  e.priority = 5;
  EXPECT_EQ(MigrationRequestJson(e), R"({"allow_postcopy":true,"evacuate":"host1","priority":5})");
  EXPECT_EQ(HostCreateJson("h3", "", "lab", "http://x:1", "t"),
            R"({"agent_token":"t","agent_url":"http://x:1","cluster":"lab","id":"h3"})");
  EXPECT_EQ(JsonObject({{"a", JsonArray({"1", "{}"})}, {"b", JsonString("q\"")}}),
            R"({"a":[1,{}],"b":"q\""})");
}

}  // namespace
}  // namespace ferry::cli
