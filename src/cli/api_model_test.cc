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
