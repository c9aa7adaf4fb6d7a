// The agent API's JSON mapping: round trips of every type, and untrusted input refused with
// the field named.
#include "api/agent_json.h"

#include <gtest/gtest.h>

#include <fstream>
#include <sstream>
#include <string>

#include "common/checksum.h"
#include "test_util.h"

namespace ferry::api {
namespace {

using agent::JobProgress;
using agent::JobResult;
using agent::MigrationJobSpec;
using agent::MigrationKind;
using hypervisor::CpuCheck;
using hypervisor::CpuCompatibility;
using hypervisor::Firmware;
using hypervisor::VmInfo;
using hypervisor::VmState;

AgentInventory SampleInventory() {
  AgentInventory a;
  a.migration_uri = "tcp://127.0.0.11";
  hypervisor::Inventory& inv = a.inventory;
  inv.host.hostname = "host1";
  inv.host.uri = "qemu+tcp://127.0.0.11/system";
  inv.host.cpu_model = "Skylake-Client-IBRS";
  inv.host.cpu_arch = "x86_64";
  inv.host.cpus = 2;
  inv.host.memory_bytes = 24ull << 30;
  inv.host.free_memory_bytes = 20ull << 30;
  inv.host.libvirt_version = "9.0.0";
  inv.host.hypervisor = "qemu";
  inv.host.domain_types = {"qemu", "kvm"};
  VmInfo vm;
  vm.name = "g1";
  vm.uuid = "6b1c0a4e-8a4e-4c53-9e51-3f1e2b7c9d10";
  vm.state = VmState::kRunning;
  vm.persistent = true;
  vm.vcpus = 1;
  vm.max_vcpus = 2;
  vm.memory_bytes = 256ull << 20;
  vm.machine_type = "pc-i440fx-7.2";
  vm.arch = "x86_64";
  vm.firmware = Firmware::kUefi;
  vm.domain_type = "qemu";
  vm.disks.push_back({"vda", "virtio", "disk", "file", "qcow2", "/lab/nas1/g1.qcow2", "nas1",
                      "g1.qcow2", 32ull << 20, 1ull << 20});
  vm.nics.push_back({"52:54:00:aa:bb:cc", "virtio", "lab", "network", "br-lab"});
  inv.vms.push_back(vm);
  inv.vms.push_back(VmInfo{.name = "g2", .state = VmState::kShutoff});
  inv.pools.push_back({"nas1", "dir", "/lab/nas1", 100, 40, 60, true});
  inv.networks.push_back({"lab", true, "br-lab", "bridge"});
  return a;
}

AgentJob SampleJob() {
  AgentJob job;
  job.id = "m-42";
  job.kind = MigrationKind::kLiveVsm;
  job.vm = "g1";
  job.state = AgentJobState::kFailed;
  job.progress.phase = "converging";
  job.progress.bytes_total = 1000;
  job.progress.bytes_done = 600;
  job.progress.bytes_remaining = 400;
  job.progress.rate = 50;
  job.progress.eta_ms = -1;
  job.progress.dirty_rate = 7;
  job.progress.iteration = 3;
  job.progress.downtime_limit_ms = 600;
  job.progress.throttle_percent = 20;
  job.progress.postcopy = true;
  JobResult r;
  r.total_ms = 1234;
  r.bytes_sent = 999;
  r.qemu_downtime_ms = 12;
  r.guest_downtime_ms = -1;
  r.notes = {"downtime limit 300 -> 600 ms"};
  r.disks.push_back({"vda", "/a/g1.qcow2", "/b/g1.qcow2", true});
  job.result = r;
  job.error = Status::Io("virDomainMigrateToURI3 g1: connection reset");
  job.events.push_back({1700000000000, "phase", "copying"});
  job.events.push_back({1700000000500, "warning", "not converging"});
  job.started_at_ms = 1700000000000;
  job.finished_at_ms = 1700000001234;
  return job;
}

void ExpectSameJob(const AgentJob& a, const AgentJob& b) {
  EXPECT_EQ(ToJson(a), ToJson(b));
  EXPECT_EQ(a.id, b.id);
  EXPECT_EQ(a.kind, b.kind);
  EXPECT_EQ(a.state, b.state);
  EXPECT_EQ(a.error, b.error);
  EXPECT_EQ(a.progress.bytes_done, b.progress.bytes_done);
  EXPECT_EQ(a.progress.eta_ms, b.progress.eta_ms);
  ASSERT_EQ(a.result.has_value(), b.result.has_value());
  if (a.result) {
    EXPECT_EQ(a.result->notes, b.result->notes);
    ASSERT_EQ(a.result->disks.size(), b.result->disks.size());
  }
  ASSERT_EQ(a.events.size(), b.events.size());
}

TEST(AgentJson, InventoryRoundTrip) {
  const AgentInventory in = SampleInventory();
  const std::string text = ToJson(in);
  // The documented shape: snake-case fields, enums by name, migration_uri inside host.
  EXPECT_NE(text.find("\"state\":\"running\""), std::string::npos) << text;
  EXPECT_NE(text.find("\"firmware\":\"uefi\""), std::string::npos) << text;
  EXPECT_NE(text.find("\"migration_uri\":\"tcp://127.0.0.11\""), std::string::npos) << text;
  EXPECT_NE(text.find("\"free_memory_bytes\":"), std::string::npos) << text;
  AgentInventory out;
  ASSERT_TRUE(FromJson(text, &out).ok()) << FromJson(text, &out).ToString();
  EXPECT_EQ(ToJson(out), text);
  EXPECT_EQ(out.migration_uri, "tcp://127.0.0.11");
  ASSERT_EQ(out.inventory.vms.size(), 2u);
  const VmInfo& vm = out.inventory.vms[0];
  EXPECT_EQ(vm.state, VmState::kRunning);
  EXPECT_EQ(vm.firmware, Firmware::kUefi);
  ASSERT_EQ(vm.disks.size(), 1u);
  EXPECT_EQ(vm.disks[0].capacity_bytes, 32ull << 20);
  EXPECT_EQ(vm.disks[0].pool, "nas1");
  ASSERT_EQ(vm.nics.size(), 1u);
  EXPECT_EQ(vm.nics[0].bridge, "br-lab");
  EXPECT_EQ(out.inventory.vms[1].state, VmState::kShutoff);
  EXPECT_EQ(out.inventory.host.domain_types, (std::vector<std::string>{"qemu", "kvm"}));
  EXPECT_EQ(out.inventory.pools[0].available_bytes, 60u);
  EXPECT_EQ(out.inventory.networks[0].forward_mode, "bridge");

  // Every VM state name survives.
  for (VmState s : {VmState::kNoState, VmState::kBlocked, VmState::kPaused, VmState::kShutdown,
                    VmState::kCrashed, VmState::kPmSuspended, VmState::kUnknown}) {
    VmInfo v{.name = "x", .state = s};
    VmInfo back;
    ASSERT_TRUE(FromJson(ToJson(v), &back).ok());
    EXPECT_EQ(back.state, s);
  }
}

TEST(AgentJson, JobAndSpecRoundTrip) {
  const AgentJob job = SampleJob();
  AgentJob back;
  ASSERT_TRUE(FromJson(ToJson(job), &back).ok()) << FromJson(ToJson(job), &back).ToString();
  ExpectSameJob(job, back);
  EXPECT_EQ(back.error.code(), ErrorCode::kIo);

  // A running job: result and error are null.
  AgentJob running;
  running.id = "r1";
  running.vm = "g1";
  running.started_at_ms = 5;
  const std::string text = ToJson(running);
  EXPECT_NE(text.find("\"result\":null"), std::string::npos) << text;
  EXPECT_NE(text.find("\"error\":null"), std::string::npos) << text;
  ASSERT_TRUE(FromJson(text, &back).ok());
  EXPECT_TRUE(back.error.ok());
  EXPECT_FALSE(back.result.has_value());

  std::vector<AgentJob> list = {job, running};
  std::vector<AgentJob> list_back;
  ASSERT_TRUE(FromJson(ToJson(list), &list_back).ok());
  ASSERT_EQ(list_back.size(), 2u);
  ExpectSameJob(list[1], list_back[1]);

  MigrationJobSpec spec;
  spec.id = "m-1";
  spec.kind = MigrationKind::kLiveStorage;
  spec.vm = "g1";
  spec.source_uri = "qemu+tcp://127.0.0.11/system";
  spec.target_pool = "nas2";
  spec.target_format = "raw";
  spec.max_downtime_ms = 500;
  spec.bandwidth = 1 << 30;
  spec.allow_postcopy = true;
  spec.allow_auto_converge = false;
  spec.timeout_ms = 60000;
  MigrationJobSpec spec_back;
  ASSERT_TRUE(FromJson(ToJson(spec), &spec_back).ok());
  EXPECT_EQ(ToJson(spec_back), ToJson(spec));
  EXPECT_NE(ToJson(spec).find("\"kind\":\"live-storage\""), std::string::npos);

  AgentJobRecord record{spec, running};
  record.job.id = spec.id;
  AgentJobRecord record_back;
  ASSERT_TRUE(FromJson(ToJson(record), &record_back).ok());
  EXPECT_EQ(ToJson(record_back), ToJson(record));

  // A minimal spec: only the required fields, defaults for the rest.
  MigrationJobSpec minimal;
  ASSERT_TRUE(FromJson(R"({"id":"a","kind":"quick","vm":"g1"})", &minimal).ok());
  EXPECT_EQ(minimal.kind, MigrationKind::kQuick);
  EXPECT_EQ(minimal.max_downtime_ms, 300);
  EXPECT_TRUE(minimal.allow_auto_converge);
}

void ExpectBadCpu(const std::string& json, const std::string& message) {
  CpuCheckRequest r;
  Status s = FromJson(json, &r);
  EXPECT_EQ(s.code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(s.message(), message);
}

TEST(AgentJson, SmallTypesRoundTrip) {
  AgentHealth h{"host1", "0.1.0", "qemu+tcp://127.0.0.11/system", "tcp://127.0.0.11"};
  AgentHealth hb;
  ASSERT_TRUE(FromJson(ToJson(h), &hb).ok());
  EXPECT_EQ(ToJson(hb), ToJson(h));

  for (CpuCompatibility c : {CpuCompatibility::kIdentical, CpuCompatibility::kSuperset,
                             CpuCompatibility::kIncompatible, CpuCompatibility::kError}) {
    CpuCheck check{c, "because"};
    CpuCheck back;
    ASSERT_TRUE(FromJson(ToJson(check), &back).ok()) << ToJson(check);
    EXPECT_EQ(back.result, c);
    EXPECT_EQ(back.message, "because");
  }
  EXPECT_NE(ToJson(CpuCheck{CpuCompatibility::kSuperset, ""}).find("\"compatible\":true"),
            std::string::npos);

  PlatformCheckRequest req{"x86_64", "q35", Firmware::kUefi};
  PlatformCheckRequest req_back;
  ASSERT_TRUE(FromJson(ToJson(req), &req_back).ok());
  EXPECT_EQ(req_back.firmware, Firmware::kUefi);
  PlatformCheck pc{true, false, "no OVMF"};
  PlatformCheck pc_back;
  ASSERT_TRUE(FromJson(ToJson(pc), &pc_back).ok());
  EXPECT_FALSE(pc_back.firmware_ok);
  EXPECT_TRUE(pc_back.machine_ok);

  VmXml x{"<domain/>", "<cpu mode='custom'/>"};
  VmXml xb;
  ASSERT_TRUE(FromJson(ToJson(x), &xb).ok());
  EXPECT_EQ(xb.cpu_xml, x.cpu_xml);

  CpuCheckRequest cr{"<cpu/>", {"qemu", "x86_64", "pc"}};
  CpuCheckRequest cr_back;
  ASSERT_TRUE(FromJson(ToJson(cr), &cr_back).ok());
  EXPECT_EQ(cr_back.cpu_xml, "<cpu/>");
  EXPECT_EQ(cr_back.target.virttype, "qemu");
  EXPECT_EQ(cr_back.target.machine, "pc");
  ASSERT_TRUE(FromJson(R"({"cpu_xml":"<cpu/>"})", &cr_back).ok());
  ExpectBadCpu(R"({"cpu_xml":""})", "cpu_xml: must not be empty");
  ExpectBadCpu(R"({"cpu_xml":"<cpu/>","arch":7})", "arch: expected a string");
}

// Asserts that parsing fails with kInvalidArgument and the message starts with `field: ` and
// contains `what`.
template <typename T>
void ExpectBad(const std::string& json, const std::string& field, const std::string& what) {
  T out{};
  Status s = FromJson(json, &out);
  ASSERT_FALSE(s.ok()) << json;
  EXPECT_EQ(s.code(), ErrorCode::kInvalidArgument) << s.ToString();
  EXPECT_EQ(s.message().rfind(field + ": ", 0), 0u) << s.message();
  EXPECT_NE(s.message().find(what), std::string::npos) << s.message();
}

TEST(AgentJson, BadInputNamesTheField) {
  // Wrong types, deep in a list.
  std::vector<AgentJob> jobs = {SampleJob(), SampleJob(), SampleJob()};
  std::string text = ToJson(jobs);
  const std::string good = "\"bytes_done\":600";
  size_t third = text.rfind(good);
  ASSERT_NE(third, std::string::npos);
  std::string bad = text;
  bad.replace(third, good.size(), "\"bytes_done\":\"600\"");
  ExpectBad<std::vector<AgentJob>>(bad, "jobs[2].progress.bytes_done",
                                   "expected an unsigned integer");
  bad = text;
  bad.replace(third, good.size(), "\"bytes_done\":-1");
  ExpectBad<std::vector<AgentJob>>(bad, "jobs[2].progress.bytes_done",
                                   "expected an unsigned integer");
  bad = text;
  bad.replace(third, good.size(), "\"bytes_done\":1.5");
  ExpectBad<std::vector<AgentJob>>(bad, "jobs[2].progress.bytes_done",
                                   "expected an unsigned integer");
  bad = text;
  bad.replace(third, good.size(), "\"bytes_done\":1e30");
  ExpectBad<std::vector<AgentJob>>(bad, "jobs[2].progress.bytes_done",
                                   "expected an unsigned integer");

  // Missing required fields.
  ExpectBad<MigrationJobSpec>(R"({"kind":"live","vm":"g1"})", "id", "missing required field");
  ExpectBad<MigrationJobSpec>(R"({"id":"a","vm":"g1"})", "kind", "missing required field");
  ExpectBad<AgentInventory>(R"({"vms":[]})", "host", "missing required field");
  ExpectBad<AgentInventory>(R"({"host":{"hostname":"h"},"vms":[{"name":"a","state":"running"},
                                {"name":"b"}]})",
                            "vms[1].state", "missing required field");
  ExpectBad<AgentJob>(R"({"id":"a","kind":"live","vm":"g","started_at_ms":1})", "state",
                      "missing required field");

  // Unknown enum names.
  ExpectBad<MigrationJobSpec>(R"({"id":"a","kind":"teleport","vm":"g1"})", "kind",
                              "unknown value \"teleport\"");
  ExpectBad<AgentInventory>(
      R"({"host":{"hostname":"h"},"vms":[{"name":"a","state":"running","firmware":"coreboot"}]})",
      "vms[0].firmware", "unknown value");
  ExpectBad<AgentJob>(R"({"id":"a","kind":"live","vm":"g","state":"exploded","started_at_ms":1})",
                      "state", "unknown value");
  ExpectBad<AgentJob>(R"({"id":"a","kind":"live","vm":"g","state":"failed","started_at_ms":1,
                          "error":{"code":"oops","message":"x"}})",
                      "error.code", "unknown error code");
  ExpectBad<MigrationJobSpec>(R"({"id":"a","kind":"live","vm":"g1","target_format":"vmdk"})",
                              "target_format", "unknown value");

  // Negative or absurd numbers.
  ExpectBad<MigrationJobSpec>(R"({"id":"a","kind":"live","vm":"g1","max_downtime_ms":-5})",
                              "max_downtime_ms", "out of range");
  ExpectBad<MigrationJobSpec>(
      R"({"id":"a","kind":"live","vm":"g1","timeout_ms":18446744073709551615})", "timeout_ms",
      "out of range");
  ExpectBad<MigrationJobSpec>(R"({"id":"a","kind":"live","vm":"g1","bandwidth":-1})", "bandwidth",
                              "expected an unsigned integer");
  ExpectBad<JobProgress>(R"({"throttle_percent":101})", "throttle_percent", "out of range");
  ExpectBad<JobProgress>(R"({"eta_ms":-2})", "eta_ms", "out of range");
  ExpectBad<AgentInventory>(R"({"host":{"hostname":"h","cpus":-1}})", "host.cpus", "out of range");
  ExpectBad<AgentInventory>(
      R"({"host":{"hostname":"h"},"vms":[{"name":"a","state":"running","vcpus":99999999}]})",
      "vms[0].vcpus", "out of range");
  ExpectBad<AgentJob>(R"({"id":"a","kind":"live","vm":"g","state":"running",
                          "started_at_ms":99999999999999999})",
                      "started_at_ms", "out of range");

  // Ids that would escape the jobs folder.
  ExpectBad<MigrationJobSpec>(R"({"id":"../x","kind":"live","vm":"g1"})", "id", "must be");
  ExpectBad<MigrationJobSpec>(R"({"id":".hidden","kind":"live","vm":"g1"})", "id", "must be");
  ExpectBad<MigrationJobSpec>(R"({"id":"","kind":"live","vm":"g1"})", "id", "must be");

  // Wrong structure.
  ExpectBad<MigrationJobSpec>("[1,2]", "(document)", "expected a JSON object");
  ExpectBad<AgentInventory>(R"({"host":{"hostname":"h"},"vms":{}})", "vms", "expected an array");
  ExpectBad<AgentInventory>(R"({"host":{"hostname":"h"},"vms":[{"name":"a","state":"running",
                                "disks":[{"target":"vda"},7]}]})",
                            "vms[0].disks[1]", "expected an object");
  ExpectBad<CpuCheck>(R"({"compatible":true,"result":"incompatible"})", "compatible",
                      "contradicts");
  ExpectBad<AgentJobRecord>(R"({"version":2,"spec":{},"job":{}})", "version", "unsupported");
  ExpectBad<PlatformCheckRequest>(R"({"arch":"x86_64","machine":"","firmware":"bios"})", "machine",
                                  "must not be empty");

  // Too many events, too deep, not JSON at all.
  std::string events = "[";
  for (size_t i = 0; i <= kMaxJobEvents; ++i) {
    events += std::string(i ? "," : "") + R"({"at_ms":1,"kind":"info","message":""})";
  }
  events += "]";
  ExpectBad<AgentJob>(R"({"id":"a","kind":"live","vm":"g","state":"running","started_at_ms":1,
                          "events":)" +
                          events + "}",
                      "events", "too many items");
  ExpectBad<JobProgress>(std::string(100, '[') + std::string(100, ']'), "(document)",
                         "nested deeper");
  JobProgress p;
  Status s = FromJson("{\"phase\": ", &p);
  EXPECT_EQ(s.code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(s.message().find("not valid JSON"), std::string::npos) << s.message();
}

// --- Cold migrations: shares and exports ------------------------------------------------

sources::VmDescription SampleDescription() {
  sources::VmDescription vm;
  vm.name = "g1";
  vm.uuid = "6b1c0a4e-8a4e-4c53-9e51-3f1e2b7c9d10";
  vm.platform = sources::Platform::kKvm;
  vm.vcpus = 2;
  vm.memory_bytes = 256ull << 20;
  vm.firmware = "bios";
  vm.machine = "pc-i440fx-7.2";
  vm.running = true;
  sources::DiskDescription d;
  d.id = "disk0";
  d.file = "/lab/nas1/g1.qcow2";
  d.format = "qcow2";
  d.capacity_bytes = 32ull << 20;
  d.bus = "virtio";
  d.datastore = "nas1";
  d.source_ref = "vda";
  vm.disks.push_back(d);
  vm.nics.push_back({"nic0", "lab", "52:54:00:aa:bb:cc", "virtio"});
  return vm;
}

agent::ExportInfo SampleExport() {
  agent::ExportInfo e;
  e.id = "m-7";
  e.spec.id = "m-7";
  e.spec.vm = "g1";
  e.spec.shutdown_timeout_ms = 90000;
  e.spec.force_shutdown = false;
  e.state = agent::ExportState::kServing;
  e.vm = SampleDescription();
  agent::ExportDisk d;
  d.id = "disk0";
  d.uri = "nbd://127.0.0.11:40123/00112233445566778899aabbccddeeff-disk0";
  d.size = 32ull << 20;
  d.format = "qcow2";
  d.allocated_bytes = 5 << 20;
  d.hash_state = agent::HashState::kDone;
  d.hashed_bytes = d.size;
  for (uint8_t i = 0; i < 8; ++i) d.chunk_hashes.push_back(Sha256::Of(std::vector<uint8_t>{i}));
  e.disks.push_back(d);
  e.was_running = true;
  e.bytes_served = 12345;
  e.created_at_ms = 1700000000000;
  return e;
}

TEST(AgentJson, ExportSpecRoundTrip) {
  agent::ExportSpec vm;
  vm.id = "m-1";
  vm.vm = "g1";
  const std::string text = ToJson(vm);
  EXPECT_EQ(text, R"({"id":"m-1","vm":"g1","shutdown":{"enabled":true,"timeout_ms":120000,)"
                  R"("force":true},"hash_chunk_size":4194304,"hash_algorithm":"sha256"})");
  agent::ExportSpec back;
  ASSERT_TRUE(FromJson(text, &back).ok());
  EXPECT_EQ(back, vm);

  agent::ExportSpec share;
  share.id = "m-2";
  share.share = "exports";
  share.share_vm = "hv-db/Virtual Machines/5C1E.xml";
  share.shutdown = false;
  share.hash_chunk_size = 0;
  ASSERT_TRUE(FromJson(ToJson(share), &back).ok());
  EXPECT_EQ(back, share);
  EXPECT_EQ(ToJson(share).find("\"vm\""), std::string::npos);
  // Defaults for what is left out.
  ASSERT_TRUE(FromJson(R"({"id":"m-3","vm":"g2"})", &back).ok());
  EXPECT_TRUE(back.shutdown);
  EXPECT_EQ(back.shutdown_timeout_ms, 120000);
  EXPECT_TRUE(back.force_shutdown);
  EXPECT_EQ(back.hash_chunk_size, 4u << 20);
  EXPECT_EQ(back.hash_algorithm, ChunkHashAlgorithm::kSha256);  // a spec from before xxh3-128
  ASSERT_TRUE(FromJson(R"({"id":"m-3","vm":"g2","hash_algorithm":"xxh3-128"})", &back).ok());
  EXPECT_EQ(back.hash_algorithm, ChunkHashAlgorithm::kXxh3_128);
  Status bad = FromJson(R"({"id":"m-3","vm":"g2","hash_algorithm":"md5"})", &back);
  EXPECT_FALSE(bad.ok());
  EXPECT_NE(bad.message().find("hash_algorithm"), std::string::npos) << bad.message();
}

// An export hashed with xxh3-128 carries 32-digit hashes; 64-digit ones are refused there.
TEST(AgentJson, ExportInfoHashesFollowTheSpecsAlgorithm) {
  agent::ExportInfo in = SampleExport();
  in.spec.hash_algorithm = ChunkHashAlgorithm::kXxh3_128;
  for (ChunkDigest& d : in.disks[0].chunk_hashes) std::fill(d.begin() + 16, d.end(), 0);
  const std::string text = ToJson(in);
  const std::string h0 = ChunkDigestHex(in.disks[0].chunk_hashes[0], ChunkHashAlgorithm::kXxh3_128);
  ASSERT_EQ(h0.size(), 32u);
  EXPECT_NE(text.find("\"chunk_hashes\":[\"" + h0 + "\""), std::string::npos) << text;
  agent::ExportInfo out;
  Status s = FromJson(text, &out);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(out.disks[0].chunk_hashes, in.disks[0].chunk_hashes);
  std::string sha_len = ToJson(SampleExport());
  const std::string key = "\"hash_algorithm\":\"sha256\"";
  ASSERT_NE(sha_len.find(key), std::string::npos) << sha_len;
  sha_len.replace(sha_len.find(key), key.size(), "\"hash_algorithm\":\"xxh3-128\"");
  s = FromJson(sha_len, &out);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.message(),
            "disks[0].chunk_hashes[0]: expected 32 hex digits (xxh3-128), got 64 characters");
}

TEST(AgentJson, ExportInfoRoundTrip) {
  const agent::ExportInfo in = SampleExport();
  const std::string text = ToJson(in);
  EXPECT_NE(text.find("\"state\":\"serving\""), std::string::npos) << text;
  EXPECT_NE(text.find("\"hash_state\":\"done\""), std::string::npos) << text;
  EXPECT_NE(text.find("\"chunk_hashes\":[\"" + ToHex(in.disks[0].chunk_hashes[0]) + "\""),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("\"error\":null"), std::string::npos) << text;
  // The description is src/sources' own JSON, embedded.
  EXPECT_NE(text.find("\"ferry_vm_description\":1"), std::string::npos) << text;
  agent::ExportInfo out;
  Status s = FromJson(text, &out);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(ToJson(out), text);
  EXPECT_EQ(out.spec, in.spec);
  EXPECT_EQ(out.vm.disks[0].datastore, "nas1");
  EXPECT_EQ(out.disks[0].chunk_hashes, in.disks[0].chunk_hashes);
  EXPECT_TRUE(out.was_running);
  EXPECT_EQ(out.bytes_served, 12345u);

  // Every state; a failed export carries its error; a preparing one has no description yet.
  for (agent::ExportState st :
       {agent::ExportState::kPreparing, agent::ExportState::kShuttingDown,
        agent::ExportState::kServing, agent::ExportState::kFailed, agent::ExportState::kClosed}) {
    agent::ExportInfo e;
    e.id = "m-8";
    e.spec.id = "m-8";
    e.spec.vm = "g1";
    e.state = st;
    if (st == agent::ExportState::kFailed) {
      e.error = Status::FailedPrecondition("g1 did not shut down within 120 s");
    }
    agent::ExportInfo back;
    const std::string t = ToJson(e);
    ASSERT_TRUE(FromJson(t, &back).ok()) << t;
    EXPECT_EQ(back.state, st);
    EXPECT_EQ(back.error, e.error);
    EXPECT_EQ(back.vm.name, "");
    EXPECT_NE(t.find("\"vm\":null"), std::string::npos) << t;
  }
}

TEST(AgentJson, SharesRoundTrip) {
  std::vector<ShareInfo> shares = {{"exports", "/srv/exports", false}, {"staging", "/srv/s", true}};
  const std::string text = ToJson(shares);
  EXPECT_EQ(text, R"({"shares":[{"name":"exports","path":"/srv/exports","writable":false},)"
                  R"({"name":"staging","path":"/srv/s","writable":true}]})");
  std::vector<ShareInfo> back;
  ASSERT_TRUE(FromJson(text, &back).ok());
  ASSERT_EQ(back.size(), 2u);
  EXPECT_EQ(back[1].name, "staging");
  EXPECT_TRUE(back[1].writable);

  ShareListing listing;
  sources::ShareVm vm{"g1/vm.json", "exports", SampleDescription()};
  listing.vms.push_back(vm);
  listing.problems = {"odd.ovf: OVF: no VirtualSystem (skipped)"};
  ShareListing lback;
  Status s = FromJson(ToJson(listing), &lback);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(ToJson(lback), ToJson(listing));
  ASSERT_EQ(lback.vms.size(), 1u);
  EXPECT_EQ(lback.vms[0].id, "g1/vm.json");
  EXPECT_EQ(lback.vms[0].vm.nics[0].mac, "52:54:00:aa:bb:cc");
  EXPECT_EQ(lback.problems, listing.problems);
  sources::ShareVm vback;
  ASSERT_TRUE(FromJson(ToJson(vm), &vback).ok());
  EXPECT_EQ(vback.share, "exports");
}

TEST(AgentJson, BadExportsAndSharesNameTheField) {
  auto spec_error = [](const std::string& text) {
    agent::ExportSpec s;
    return FromJson(text, &s);
  };
  auto info_error = [](const std::string& text) {
    agent::ExportInfo e;
    return FromJson(text, &e);
  };
  EXPECT_EQ(spec_error(R"({"id":"m1"})").message(),
            "vm: exactly one of vm or share + share_vm must be given");
  EXPECT_EQ(spec_error(R"({"id":"m1","vm":"g1","share":"x","share_vm":"y"})").message(),
            "vm: exactly one of vm or share + share_vm must be given");
  EXPECT_EQ(spec_error(R"({"id":"m1","share_vm":"y"})").message(),
            "share: missing (share_vm is given)");
  EXPECT_EQ(spec_error(R"({"id":"a/b","vm":"g1"})").message(),
            "id: must be 1-128 characters of [A-Za-z0-9._-], not starting with '.'");
  EXPECT_EQ(spec_error(R"({"id":"m1","vm":"g1","shutdown":{"timeout_ms":-5}})").message(),
            "shutdown.timeout_ms: out of range (0 to 86400000)");
  EXPECT_EQ(spec_error(R"({"id":"m1","vm":"g1","shutdown":{"force":"yes"}})").message(),
            "shutdown.force: expected true or false");
  EXPECT_EQ(spec_error(R"({"id":"m1","vm":"g1","hash_chunk_size":1000})").message(),
            "hash_chunk_size: expected 0 (no hashing) or a multiple of 4096 from 4096 to "
            "268435456");
  EXPECT_EQ(spec_error(R"({"id":"m1","vm":"g1"})").code(), ErrorCode::kOk);

  agent::ExportInfo good = SampleExport();
  std::string text = ToJson(good);
  auto replaced = [&](const std::string& from, const std::string& to) {
    std::string t = text;
    const size_t at = t.find(from);
    EXPECT_NE(at, std::string::npos) << from;
    if (at != std::string::npos) t.replace(at, from.size(), to);
    return t;
  };
  const std::string h1 = ToHex(good.disks[0].chunk_hashes[1]);
  Status bad_hash = info_error(replaced(h1, "abc"));
  EXPECT_EQ(bad_hash.code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(bad_hash.message(),
            "disks[0].chunk_hashes[1]: expected 64 hex digits (sha256), got 3 characters");
  EXPECT_EQ(info_error(replaced("\"" + h1 + "\"", "7")).message(),
            "disks[0].chunk_hashes[1]: expected a string");
  EXPECT_EQ(info_error(replaced("\"state\":\"serving\"", "\"state\":\"open\"")).message(),
            "state: unknown value \"open\" (expected one of preparing, shutting-down, serving, "
            "failed, closed)");
  EXPECT_EQ(info_error(replaced("\"state\":\"serving\"", "\"state\":\"failed\"")).message(),
            "error: missing (state is failed)");
  EXPECT_EQ(info_error(replaced("\"hash_state\":\"done\"", "\"hash_state\":1")).message(),
            "disks[0].hash_state: expected a string");
  EXPECT_EQ(info_error(replaced("\"id\":\"m-7\",\"state\"", "\"id\":\"m-6\",\"state\"")).message(),
            "spec.id: differs from id");
  EXPECT_EQ(info_error(replaced("\"bytes_served\":12345", "\"bytes_served\":-1")).message(),
            "bytes_served: expected an unsigned integer");
  Status bad_vm = info_error(replaced("\"vcpus\":2", "\"vcpus\":\"two\""));
  EXPECT_EQ(bad_vm.code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(bad_vm.message().rfind("vm: ", 0), 0u) << bad_vm.message();
  EXPECT_NE(bad_vm.message().find("vcpus"), std::string::npos) << bad_vm.message();
  {
    std::string many = R"({"id":"m1","state":"serving","disks":[)";
    for (int i = 0; i < 65; ++i) many += std::string(i ? "," : "") + R"({"id":"d"})";
    many += "]}";
    EXPECT_EQ(info_error(many).message(), "disks: too many items (65, at most 64)");
  }

  std::vector<ShareInfo> shares;
  EXPECT_EQ(FromJson(R"({"shares":[{"path":"/x"}]})", &shares).message(),
            "shares[0].name: missing required field");
  EXPECT_EQ(FromJson(R"({"share":[]})", &shares).message(), "shares: missing required field");
  ShareListing listing;
  EXPECT_EQ(FromJson(R"({"vms":[{"id":"a.ova","share":"s"}]})", &listing).message(),
            "vms[0].vm: missing required field");
  Status bad_desc = FromJson(R"({"vms":[{"id":"a.ova","share":"s","vm":{"name":3}}]})", &listing);
  EXPECT_EQ(bad_desc.code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(bad_desc.message().rfind("vms[0].vm: ", 0), 0u) << bad_desc.message();
  EXPECT_EQ(FromJson(R"({"vms":[],"problems":[1]})", &listing).message(),
            "problems[0]: expected a string");
}

TEST(AgentJson, JobIdsAndKindNames) {
  EXPECT_TRUE(IsValidJobId("m-1_2.3"));
  EXPECT_FALSE(IsValidJobId("a/b"));
  EXPECT_FALSE(IsValidJobId(std::string(129, 'a')));
  for (MigrationKind k :
       {MigrationKind::kLive, MigrationKind::kLiveStorage, MigrationKind::kLiveVsm,
        MigrationKind::kQuick, MigrationKind::kReregister}) {
    auto back = MigrationKindFromWireName(MigrationKindWireName(k));
    ASSERT_TRUE(back.ok());
    EXPECT_EQ(*back, k);
  }
  EXPECT_FALSE(MigrationKindFromWireName("LIVE").ok());
}

TEST(AgentJson, PoolFiles) {
  PoolFiles files{"local", {"a.qcow2", ".b.ferry-part"}};
  PoolFiles back;
  ASSERT_TRUE(FromJson(ToJson(files), &back).ok());
  EXPECT_EQ(back.pool, "local");
  EXPECT_EQ(back.files, files.files);
  Status s = FromJson(R"({"pool":"local"})", &back);
  EXPECT_EQ(s.code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(s.message().find("files"), std::string::npos) << s.message();
  s = FromJson(R"({"pool":"local","files":["a",7]})", &back);
  EXPECT_NE(s.message().find("files[1]"), std::string::npos) << s.message();
}

}  // namespace
}  // namespace ferry::api

namespace ferry::api {
namespace {

agent::MigrationJobSpec ColdSpec() {
  agent::MigrationJobSpec s;
  s.id = "m-7.a2";
  s.kind = agent::MigrationKind::kCold;
  s.vm = "web1";
  s.bandwidth = 100 << 20;
  agent::ColdJobSpec& c = s.cold;
  c.source = {"host1", "http://127.0.0.11:7801", "tok"};
  c.export_spec.id = "m-7";
  c.export_spec.vm = "web1";
  c.export_spec.shutdown_timeout_ms = 60000;
  c.export_spec.force_shutdown = false;
  c.target_type = plan::EndpointType::kKvm;
  c.plan_name = "wave-1";
  c.verify = plan::VerifyMode::kReadBack;
  c.deploy_auto = false;
  c.checkpoint_bytes = 64 << 20;
  c.source_retry_timeout_ms = 120000;
  c.domain_type = "qemu";
  plan::TargetVm& vm = c.vm;
  vm.name = "web1-kvm";
  vm.vcpus = 4;
  vm.memory_bytes = 4ull << 30;
  vm.machine = "q35";
  vm.firmware = "uefi";
  vm.direct_boot = {"/boot/vmlinuz", "/boot/initrd", "console=ttyS0"};
  vm.disks.push_back(
      {"disk0", "local", "web1-kvm-disk0.qcow2", "qcow2", "", 10ull << 30, "scsi", "sda"});
  vm.disks.push_back({"disk1", "nas1", "web1-kvm-disk1.raw", "raw", "", 1ull << 30, "scsi", "sdb"});
  vm.nics.push_back({"nic0", "lab", "52:54:00:01:02:03", "virtio"});
  vm.start = false;
  vm.delete_disks_with_vm = true;
  vm.boot_check = {"login:", 90000};
  return s;
}

TEST(AgentJsonCold, ColdSpecRoundTrip) {
  const agent::MigrationJobSpec spec = ColdSpec();
  const std::string text = ToJson(spec);
  EXPECT_NE(text.find("\"kind\":\"cold\""), std::string::npos) << text;
  agent::MigrationJobSpec back;
  Status s = FromJson(text, &back);
  ASSERT_TRUE(s.ok()) << s.ToString() << "\n" << text;
  EXPECT_EQ(ToJson(back), text);
  EXPECT_EQ(back.kind, agent::MigrationKind::kCold);
  EXPECT_EQ(back.cold.source, spec.cold.source);
  EXPECT_EQ(back.cold.export_spec, spec.cold.export_spec);
  EXPECT_EQ(back.cold.vm.disks.size(), 2u);
  EXPECT_EQ(back.cold.vm.disks[1].pool, "nas1");
  EXPECT_EQ(back.cold.vm.boot_check, spec.cold.vm.boot_check);
  EXPECT_EQ(back.cold.vm.direct_boot, spec.cold.vm.direct_boot);
  EXPECT_FALSE(back.cold.deploy_auto);
  EXPECT_EQ(back.cold.checkpoint_bytes, 64u << 20);

  // Non-cold kinds carry no "cold" object.
  agent::MigrationJobSpec live = spec;
  live.kind = agent::MigrationKind::kLive;
  EXPECT_EQ(ToJson(live).find("\"cold\""), std::string::npos);

  plan::TargetVm vm_back;
  ASSERT_TRUE(FromJson(ToJson(spec.cold.vm), &vm_back).ok());
  EXPECT_EQ(ToJson(vm_back), ToJson(spec.cold.vm));

  // A share target.
  agent::MigrationJobSpec stage = spec;
  stage.cold.target_type = plan::EndpointType::kShare;
  stage.cold.target_share = "staging";
  stage.cold.vm.disks = {{"disk0", "", "web1-disk0.vhd", "vhd", "fixed", 0, "sata", "sda"}};
  ASSERT_TRUE(FromJson(ToJson(stage), &back).ok());
  EXPECT_EQ(back.cold.target_type, plan::EndpointType::kShare);
  EXPECT_EQ(back.cold.vm.disks[0].subformat, "fixed");
}

TEST(AgentJsonCold, ProgressAndResultCarryTheColdFields) {
  agent::JobProgress p;
  p.phase = "copying";
  p.disks.push_back({"disk0", "copying", 100, 40, 32, 38});
  p.disks.push_back({"disk1", "waiting", 200, 0, 0, 0});
  agent::JobProgress pb;
  ASSERT_TRUE(FromJson(ToJson(p), &pb).ok());
  ASSERT_EQ(pb.disks.size(), 2u);
  EXPECT_EQ(pb.disks[0].checkpointed, 32u);
  EXPECT_EQ(pb.disks[0].read_bytes, 38u);
  EXPECT_EQ(pb.disks[1].state, "waiting");

  agent::JobResult r;
  agent::JobResult::MovedDisk d;
  d.disk = "vda";
  d.from = "/src/web1.qcow2";
  d.to = "/pool/web1-disk0.qcow2";
  d.verified = true;
  d.bytes_read = 1000;
  d.resumed_from = 400;
  d.recopied_bytes = 50;
  r.disks.push_back(d);
  r.defined_vm = "web1";
  r.boot = {true, true, 12345, "'FERRY-READY' after 12.3 s"};
  agent::JobResult rb;
  ASSERT_TRUE(FromJson(ToJson(r), &rb).ok());
  ASSERT_EQ(rb.disks.size(), 1u);
  EXPECT_EQ(rb.disks[0].bytes_read, 1000u);
  EXPECT_EQ(rb.disks[0].resumed_from, 400u);
  EXPECT_EQ(rb.disks[0].recopied_bytes, 50u);
  EXPECT_EQ(rb.defined_vm, "web1");
  EXPECT_TRUE(rb.boot.checked);
  EXPECT_EQ(rb.boot.elapsed_ms, 12345);
  EXPECT_EQ(rb.boot.message, r.boot.message);
}

// Replaces the first `from` in `text` with `to`.
std::string With(std::string text, const std::string& from, const std::string& to) {
  const size_t at = text.find(from);
  EXPECT_NE(at, std::string::npos) << from << " not in " << text;
  if (at != std::string::npos) text.replace(at, from.size(), to);
  return text;
}

void ExpectBadSpec(const std::string& json, const std::string& field, const std::string& what) {
  agent::MigrationJobSpec out;
  Status s = FromJson(json, &out);
  ASSERT_FALSE(s.ok()) << json;
  EXPECT_EQ(s.code(), ErrorCode::kInvalidArgument) << s.ToString();
  EXPECT_EQ(s.message().rfind(field + ": ", 0), 0u) << s.message();
  EXPECT_NE(s.message().find(what), std::string::npos) << s.message();
}

TEST(AgentJsonCold, BadColdSpecsNameTheField) {
  const std::string good = ToJson(ColdSpec());
  ExpectBadSpec(R"({"id":"a","kind":"cold","vm":"g1"})", "cold", "missing required field");
  ExpectBadSpec(With(good, "\"url\":\"http://127.0.0.11:7801\"", "\"url\":\"ftp://x\""),
                "cold.source.url", "http");
  ExpectBadSpec(With(good, "\"target_type\":\"kvm\"", "\"target_type\":\"xen\""),
                "cold.target_type", "unknown value");
  ExpectBadSpec(With(good, "\"target_type\":\"kvm\"", "\"target_type\":\"share\""),
                "cold.target_share", "required when target_type is share");
  ExpectBadSpec(With(good, "\"file_name\":\"web1-kvm-disk1.raw\"", "\"file_name\":\"../x\""),
                "cold.vm.disks[1].file_name", "plain file name");
  ExpectBadSpec(With(good, "\"format\":\"raw\"", "\"format\":\"vdi\""), "cold.vm.disks[1].format",
                "unknown value");
  ExpectBadSpec(With(good, "\"vcpus\":4", "\"vcpus\":-4"), "cold.vm.vcpus", "out of range");
  ExpectBadSpec(With(good, "\"firmware\":\"uefi\"", "\"firmware\":\"efi\""), "cold.vm.firmware",
                "unknown value");
  ExpectBadSpec(With(good, "\"checkpoint_bytes\":67108864", "\"checkpoint_bytes\":0"),
                "cold.checkpoint_bytes", "must not be zero");
  ExpectBadSpec(With(good, "\"domain_type\":\"qemu\"", "\"domain_type\":\"tcg\""),
                "cold.domain_type", "unknown value");
  ExpectBadSpec(With(good, "\"timeout_ms\":90000", "\"timeout_ms\":\"5m\""),
                "cold.vm.boot_check.timeout_ms", "expected an integer");
  ExpectBadSpec(With(good, "\"network\":\"lab\"", "\"network\":7"), "cold.vm.nics[0].network",
                "expected a string");
  ExpectBadSpec(With(good, "\"verify\":\"readback\"", "\"verify\":\"sometimes\""), "cold.verify",
                "expected stream, readback or off");
  ExpectBadSpec(With(good, "\"verify\":\"readback\"", "\"verify\":3"), "cold.verify",
                "expected a string");

  agent::JobProgress p;
  Status s = FromJson(R"({"disks":[{"id":"d","bytes_done":"x"}]})", &p);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.message().rfind("disks[0].bytes_done: ", 0), 0u) << s.message();
  agent::JobResult r;
  s = FromJson(R"({"boot":{"elapsed_ms":-5}})", &r);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.message().rfind("boot.elapsed_ms: ", 0), 0u) << s.message();
}

}  // namespace
}  // namespace ferry::api

namespace ferry::api {
namespace {

std::string CorpusFile(const std::string& name) {
  std::ifstream in(ferry::testing::SourceDir() + "/fuzz/corpus/agent_json_fuzz/" + name);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// The fuzz corpus' cold seeds are what they say: valid ones parse, the bad one names its field.
TEST(AgentJsonCold, CorpusSeedsParse) {
  agent::MigrationJobSpec spec;
  Status s = FromJson(CorpusFile("cold_spec.json"), &spec);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(spec.cold.vm.disks.size(), 2u);
  s = FromJson(CorpusFile("cold_share_spec.json"), &spec);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(spec.cold.target_type, plan::EndpointType::kShare);
  s = FromJson(CorpusFile("cold_bad_spec.json"), &spec);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.message().rfind("cold.target_share: ", 0), 0u) << s.message();
  plan::TargetVm vm;
  s = FromJson(CorpusFile("target_vm.json"), &vm);
  ASSERT_TRUE(s.ok()) << s.ToString();
  AgentJob job;
  s = FromJson(CorpusFile("cold_job.json"), &job);
  ASSERT_TRUE(s.ok()) << s.ToString();
  ASSERT_TRUE(job.result.has_value());
  EXPECT_EQ(job.result->disks[0].recopied_bytes, 4u);
  EXPECT_EQ(job.progress.disks[0].read_bytes, 60u);
}

}  // namespace
}  // namespace ferry::api
