// Plan documents: parsing (YAML and JSON, every key, defaults, units, caps, error paths), the
// canonical JSON round trip, and the resolution + validation of VMs over hand-made
// descriptions and inventories.
#include "plan/plan.h"

#include <gtest/gtest.h>

#include "common/units.h"
#include "test_util.h"

namespace ferry::plan {
namespace {

bool Has(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// The doc's example (docs/plans.md, "The plan document"), every key used.
constexpr char kFullYaml[] = R"(
name: wave-1                      # unique among plans
source: {type: share, host: host1, share: exports}
target: {type: kvm, host: host2}
vms:
  - name: web1
  - name: db1
    target: {name: db1-kvm, vcpus: 4, memory: 4GiB, disk_bus: scsi}
  - id: "hv-db/Virtual Machines/5C1E0000.xml"
    target:
      machine: pc-q35-7.2
      firmware: uefi
      start: false
      delete_disks_with_vm: true
      boot_check: {marker: "", timeout: 90s}
      preserve_mac: false
networks:
  - {source: "VM Network", target: lab}
  - {source: "*", target: lab}
preserve_mac: true
target_defaults:
  disk_bus: virtio
  machine: q35
  firmware: bios
  vcpus: 2
  memory: 2GiB
  start: true
  delete_disks_with_vm: false
  boot_check: {marker: "login:", timeout: 5m}
storage:
  - {source: "db1/disk1", pool: fast, format: raw}
  - {source: "*", pool: local, format: qcow2}
options:
  start: later
  shutdown_source: true
  shutdown_timeout: 2m
  force_shutdown: false
  deploy: manual
  priority: 7
  verify: false
  checkpoint_interval: 512MiB
)";

constexpr char kMinimalYaml[] = R"(
name: m
source: {host: host1}
target: {host: host2}
vms: [{name: g1}]
)";

PlanDocument MustParse(const std::string& text) {
  auto p = ParsePlan(text);
  EXPECT_TRUE(p.ok()) << p.status().ToString() << "\n" << text;
  return p.ok() ? *p : PlanDocument{};
}

// The error ParsePlan gives for `text` (expects one).
std::string ErrorOf(const std::string& text) {
  auto p = ParsePlan(text);
  EXPECT_FALSE(p.ok()) << text;
  if (p.ok()) return "";
  EXPECT_TRUE(p.status().code() == ErrorCode::kInvalidArgument ||
              p.status().code() == ErrorCode::kTooLarge)
      << p.status().ToString();
  return p.status().message();
}

// kMinimalYaml with `extra` appended (top-level keys).
std::string Minimal(const std::string& extra) { return std::string(kMinimalYaml) + extra; }

// A minimal plan whose one VM has these per-VM target options (a flow mapping body).
std::string WithTarget(const std::string& target) {
  return "name: m\nsource: {host: h1}\ntarget: {host: h2}\nvms:\n  - name: a\n  - name: g1\n"
         "    target: {" +
         target + "}\n";
}

std::string WithOption(const std::string& option) { return Minimal("options: {" + option + "}\n"); }

TEST(ParsePlanTest, FullExampleReadsEveryKey) {
  PlanDocument p = MustParse(kFullYaml);
  EXPECT_EQ(p.name, "wave-1");
  EXPECT_EQ(p.source.type, EndpointType::kShare);
  EXPECT_EQ(p.source.host, "host1");
  EXPECT_EQ(p.source.share, "exports");
  EXPECT_EQ(p.target.type, EndpointType::kKvm);
  EXPECT_EQ(p.target.host, "host2");
  EXPECT_EQ(p.target.format, "");
  ASSERT_EQ(p.vms.size(), 3u);
  EXPECT_EQ(p.vms[0].name, "web1");
  EXPECT_EQ(p.vms[0].target, TargetOptions{});
  EXPECT_EQ(p.vms[1].target.name, "db1-kvm");
  EXPECT_EQ(p.vms[1].target.vcpus, 4);
  EXPECT_EQ(p.vms[1].target.memory_bytes, 4 * kGiB);
  EXPECT_EQ(p.vms[1].target.disk_bus, "scsi");
  EXPECT_EQ(p.vms[2].name, "");
  EXPECT_EQ(p.vms[2].id, "hv-db/Virtual Machines/5C1E0000.xml");
  EXPECT_EQ(p.vms[2].target.machine, "pc-q35-7.2");
  EXPECT_EQ(p.vms[2].target.firmware, "uefi");
  EXPECT_EQ(p.vms[2].target.start, false);
  EXPECT_EQ(p.vms[2].target.delete_disks_with_vm, true);
  EXPECT_EQ(p.vms[2].target.boot_check, (BootCheck{"", 90000}));
  EXPECT_EQ(p.vms[2].target.preserve_mac, false);
  ASSERT_EQ(p.networks.size(), 2u);
  EXPECT_EQ(p.networks[0].source, "VM Network");
  EXPECT_EQ(p.networks[1].source, "*");
  EXPECT_EQ(p.networks[1].target, "lab");
  EXPECT_TRUE(p.preserve_mac);
  EXPECT_EQ(p.defaults.disk_bus, "virtio");
  EXPECT_EQ(p.defaults.machine, "q35");
  EXPECT_EQ(p.defaults.firmware, "bios");
  EXPECT_EQ(p.defaults.vcpus, 2);
  EXPECT_EQ(p.defaults.memory_bytes, 2 * kGiB);
  EXPECT_EQ(p.defaults.start, true);
  EXPECT_EQ(p.defaults.delete_disks_with_vm, false);
  EXPECT_EQ(p.defaults.boot_check, (BootCheck{"login:", 300000}));
  ASSERT_EQ(p.storage.size(), 2u);
  EXPECT_EQ(p.storage[0].source, "db1/disk1");
  EXPECT_EQ(p.storage[0].pool, "fast");
  EXPECT_EQ(p.storage[0].format, "raw");
  EXPECT_EQ(p.storage[1].format, "qcow2");
  EXPECT_EQ(p.options.start, StartMode::kLater);
  EXPECT_TRUE(p.options.shutdown_source);
  EXPECT_EQ(p.options.shutdown_timeout_ms, 120000);
  EXPECT_FALSE(p.options.force_shutdown);
  EXPECT_EQ(p.options.deploy, DeployMode::kManual);
  EXPECT_EQ(p.options.priority, 7);
  EXPECT_EQ(p.options.verify, VerifyMode::kOff);
  EXPECT_EQ(p.options.checkpoint_bytes, 512 * kMiB);
}

TEST(ParsePlanTest, MinimalTakesTheDefaults) {
  PlanDocument p = MustParse(kMinimalYaml);
  EXPECT_EQ(p.source.type, EndpointType::kKvm);
  EXPECT_EQ(p.target.type, EndpointType::kKvm);
  ASSERT_EQ(p.vms.size(), 1u);
  EXPECT_TRUE(p.networks.empty());
  EXPECT_TRUE(p.storage.empty());
  EXPECT_TRUE(p.preserve_mac);
  EXPECT_EQ(p.defaults, TargetOptions{});
  EXPECT_EQ(p.options, MigrationOptions{});
  EXPECT_EQ(p.options.start, StartMode::kNow);
  EXPECT_TRUE(p.options.shutdown_source);
  EXPECT_EQ(p.options.shutdown_timeout_ms, 120000);
  EXPECT_TRUE(p.options.force_shutdown);
  EXPECT_EQ(p.options.deploy, DeployMode::kAuto);
  EXPECT_EQ(p.options.verify, VerifyMode::kStream);
  EXPECT_EQ(p.options.checkpoint_bytes, 256 * kMiB);
}

TEST(ParsePlanTest, JsonAndYamlFlowReadTheSame) {
  const PlanDocument yaml = MustParse(kMinimalYaml);
  EXPECT_EQ(MustParse(R"({"name": "m", "source": {"host": "host1"}, "target": {"host": "host2"},
                          "vms": [{"name": "g1"}]})"),
            yaml);
  EXPECT_EQ(MustParse("{name: m, source: {host: host1}, target: {host: host2}, vms: [{name: g1}]}"),
            yaml);
  // JSON's own escapes and whitespace (tabs).
  PlanDocument p = MustParse(
      "{\t\"name\": \"m\", \"source\": {\"host\": \"host1\"}, \"target\": {\"host\": \"host2\"},"
      "\"vms\": [{\"name\": \"caf\\u00e9 \\/ 1\"}]}");
  EXPECT_EQ(p.vms[0].name, "caf\xc3\xa9 / 1");
  // A UTF-8 byte order mark is skipped.
  EXPECT_EQ(MustParse("\xEF\xBB\xBF" + std::string(kMinimalYaml)), yaml);
}

TEST(ParsePlanTest, CanonicalJsonRoundTrips) {
  for (const std::string& text :
       {std::string(kFullYaml), std::string(kMinimalYaml),
        std::string("name: s\nsource: {type: kvm, host: h1}\n"
                    "target: {type: share, host: h3, share: staging, format: vhd}\n"
                    "vms: [{name: g1, target: {name: g1-az}}]\n"
                    "options: {start: \"2026-12-03T22:00:00.250+01:00\", priority: -3, "
                    "shutdown_timeout: 1500ms}\n")}) {
    PlanDocument p = MustParse(text);
    const std::string json = PlanToJson(p);
    auto again = ParsePlan(json);
    ASSERT_TRUE(again.ok()) << again.status().ToString() << "\n" << json;
    EXPECT_EQ(*again, p) << json;
    EXPECT_EQ(PlanToJson(*again), json);  // canonical: a fixed point
  }
  PlanDocument s = MustParse(
      "name: s\nsource: {host: h1}\ntarget: {type: share, host: h3, share: staging}\n"
      "vms: [{name: g1}]\n");
  EXPECT_EQ(s.target.format, "vhdx");  // the default, spelled out
  EXPECT_TRUE(Has(PlanToJson(s),
                  R"("target":{"type":"share","host":"h3","share":"staging","format":"vhdx"})"))
      << PlanToJson(s);
}

TEST(ParsePlanTest, VerifyModes) {
  auto mode = [](const std::string& v) {
    return MustParse("name: s\nsource: {host: h1}\ntarget: {host: h2}\nvms: [{name: g1}]\n"
                     "options: {verify: " + v + "}\n")
        .options.verify;
  };
  EXPECT_EQ(mode("stream"), VerifyMode::kStream);
  EXPECT_EQ(mode("true"), VerifyMode::kStream);
  EXPECT_EQ(mode("readback"), VerifyMode::kReadBack);
  EXPECT_EQ(mode("off"), VerifyMode::kOff);
  EXPECT_EQ(mode("false"), VerifyMode::kOff);
  EXPECT_EQ(mode("\"readback\""), VerifyMode::kReadBack);
  const PlanDocument p = MustParse(
      "name: s\nsource: {host: h1}\ntarget: {host: h2}\nvms: [{name: g1}]\n"
      "options: {verify: readback}\n");
  EXPECT_TRUE(Has(PlanToJson(p), R"("verify":"readback")")) << PlanToJson(p);
  EXPECT_EQ(*ParsePlan(PlanToJson(p)), p);
  const std::string base = "name: s\nsource: {host: h1}\ntarget: {host: h2}\nvms: [{name: g1}]\n";
  EXPECT_EQ(ErrorOf(base + "options: {verify: 1}\n"),
            "options.verify: expected stream, readback, off, true or false, got \"1\"");
  EXPECT_TRUE(Has(ErrorOf(base + "options: {verify: sometimes}\n"), "got \"sometimes\""));
  EXPECT_TRUE(Has(ErrorOf(base + "options: {verify: [true]}\n"), "got a list"));
}

TEST(ParsePlanTest, VerifyHash) {
  const std::string base = "name: s\nsource: {host: h1}\ntarget: {host: h2}\nvms: [{name: g1}]\n";
  EXPECT_EQ(MustParse(base).options.verify_hash, ChunkHashAlgorithm::kXxh3_128);
  const PlanDocument p = MustParse(base + "options: {verify_hash: sha256}\n");
  EXPECT_EQ(p.options.verify_hash, ChunkHashAlgorithm::kSha256);
  EXPECT_TRUE(Has(PlanToJson(p), R"("verify_hash":"sha256")")) << PlanToJson(p);
  EXPECT_EQ(*ParsePlan(PlanToJson(p)), p);
  EXPECT_EQ(ErrorOf(base + "options: {verify_hash: md5}\n"),
            "options.verify_hash: expected one of xxh3-128, sha256, got \"md5\"");
}

TEST(ParsePlanTest, Sizes) {
  auto memory = [](const std::string& v) {
    return MustParse(WithTarget("memory: " + v)).vms[1].target.memory_bytes.value_or(0);
  };
  EXPECT_EQ(memory("512MiB"), 512 * kMiB);
  EXPECT_EQ(memory("4G"), 4 * kGiB);
  EXPECT_EQ(memory("4g"), 4 * kGiB);
  EXPECT_EQ(memory("1.5GiB"), 1536 * kMiB);
  EXPECT_EQ(memory("\"2 GiB\""), 2 * kGiB);
  EXPECT_EQ(memory("1073741824"), kGiB);
  EXPECT_EQ(memory("1024K"), kMiB);
  EXPECT_EQ(MustParse(R"({"name":"m","source":{"host":"a"},"target":{"host":"b"},
                          "vms":[{"name":"g","target":{"memory":2147483648}}]})")
                .vms[0]
                .target.memory_bytes,
            2 * kGiB);

  EXPECT_EQ(ErrorOf(WithTarget("memory: lots")),
            "vms[1].target.memory: expected a size such as 2GiB, got \"lots\"");
  EXPECT_TRUE(Has(ErrorOf(WithTarget("memory: -1G")), "expected a size such as 2GiB"));
  EXPECT_TRUE(Has(ErrorOf(WithTarget("memory: 4 PiB")), "expected a size"));
  EXPECT_TRUE(Has(ErrorOf(WithTarget("memory: 0x100000")), "expected a size"));
  EXPECT_TRUE(Has(ErrorOf(WithTarget("memory: 1e9")), "expected a size"));
  EXPECT_TRUE(Has(ErrorOf(WithTarget("memory: 1.0000000001G")), "expected a size"));
  EXPECT_TRUE(Has(ErrorOf(WithTarget("memory: 99999999999999999999999T")), "expected a size"));
  EXPECT_TRUE(Has(ErrorOf(WithTarget("memory: 1000")), "vms[1].target.memory: must be between"));
  EXPECT_TRUE(Has(ErrorOf(WithTarget("memory: 32T")), "must be between 1.00 MiB and 16.00 TiB"));
  EXPECT_EQ(ErrorOf(WithTarget("memory: 1000000001")),
            "vms[1].target.memory: must be a whole number of KiB, got 1000000001");
  EXPECT_TRUE(Has(ErrorOf(WithTarget("memory: true")), "expected a size"));
  EXPECT_EQ(ErrorOf(WithTarget("memory: ")),
            "vms[1].target.memory: expected a size such as 2GiB, got nothing");
  EXPECT_EQ(ErrorOf(WithOption("checkpoint_interval: 1K")),
            "options.checkpoint_interval: must be between 1.00 MiB and 1.00 TiB, got 1.00 KiB");
}

TEST(ParsePlanTest, Durations) {
  auto timeout = [](const std::string& v) {
    return MustParse(WithOption("shutdown_timeout: " + v)).options.shutdown_timeout_ms;
  };
  EXPECT_EQ(timeout("90s"), 90000);
  EXPECT_EQ(timeout("5m"), 300000);
  EXPECT_EQ(timeout("1500ms"), 1500);
  EXPECT_EQ(timeout("2500"), 2500);
  EXPECT_EQ(timeout("1m30s"), 90000);
  EXPECT_EQ(timeout("1.5s"), 1500);
  EXPECT_EQ(timeout("1h"), 3600000);
  EXPECT_EQ(timeout("0"), 0);
  EXPECT_EQ(ErrorOf(WithOption("shutdown_timeout: 5 minutes")),
            "options.shutdown_timeout: expected a duration such as 90s, 5m or 1500ms, got \"5 "
            "minutes\"");
  EXPECT_TRUE(Has(ErrorOf(WithOption("shutdown_timeout: -1s")), "expected a duration"));
  EXPECT_TRUE(Has(ErrorOf(WithOption("shutdown_timeout: 1.0005s")), "expected a duration"));
  EXPECT_TRUE(Has(ErrorOf(WithOption("shutdown_timeout: 10s5")), "expected a duration"));
  EXPECT_TRUE(Has(ErrorOf(WithOption("shutdown_timeout: 30d")),
                  "options.shutdown_timeout: must be between 0ms and 10080m, got 43200m"));
  EXPECT_EQ(ErrorOf(WithTarget("boot_check: {marker: x, timeout: 10ms}")),
            "vms[1].target.boot_check.timeout: must be between 1s and 10080m, got 10ms");
}

TEST(ParsePlanTest, StartTimes) {
  EXPECT_EQ(MustParse(WithOption("start: now")).options.start, StartMode::kNow);
  EXPECT_EQ(MustParse(WithOption("start: later")).options.start, StartMode::kLater);
  auto at = [](const std::string& v) {
    PlanDocument p = MustParse(WithOption("start: " + v));
    EXPECT_EQ(p.options.start, StartMode::kAt) << v;
    return p.options.start_at_ms;
  };
  EXPECT_EQ(at("2026-12-03T22:00:00Z"), 1796335200000);
  EXPECT_EQ(at("\"2026-12-03T23:00:00+01:00\""), 1796335200000);
  EXPECT_EQ(at("2026-12-03t21:30:00.5-00:30"), 1796335200500);
  EXPECT_EQ(at("\"2026-12-03 22:00:00.123456789Z\""), 1796335200123);
  EXPECT_EQ(at("2024-02-29T12:30:15Z"), 1709209815000);
  for (const std::string bad :
       {"tomorrow", "2026-13-01T00:00:00Z", "2026-02-29T00:00:00Z", "2026-12-03T24:00:00Z",
        "2026-12-03T22:00:00", "2026-12-03", "1969-12-31T23:59:59Z", "2026-12-03T22:00:00+25:00",
        "2026-12-03T22:00:00.Z", "2026-12-03T22:00:00Zjunk", "5"}) {
    EXPECT_TRUE(Has(ErrorOf(WithOption("start: \"" + bad + "\"")),
                    "options.start: expected now, later or an RFC 3339 time"))
        << bad;
  }
}

TEST(ParsePlanTest, UnknownKeysAreErrorsNamingThePath) {
  EXPECT_TRUE(Has(ErrorOf(Minimal("nmae: x\n")), "nmae: unknown key (expected one of: name,"));
  EXPECT_TRUE(Has(ErrorOf(WithTarget("memroy: 2G")),
                  "vms[1].target.memroy: unknown key (expected one of: name, vcpus, memory"));
  EXPECT_TRUE(Has(ErrorOf(WithOption("strat: now")), "options.strat: unknown key"));
  EXPECT_TRUE(Has(ErrorOf(Minimal("storage: [{source: '*', pool: p, fromat: raw}]\n")),
                  "storage[0].fromat: unknown key"));
  EXPECT_TRUE(Has(ErrorOf(Minimal("networks: [{source: a, target: b, vlan: 3}]\n")),
                  "networks[0].vlan: unknown key"));
  EXPECT_TRUE(Has(ErrorOf(WithTarget("boot_check: {marker: x, timout: 5m}")),
                  "vms[1].target.boot_check.timout: unknown key"));
  EXPECT_TRUE(
      Has(ErrorOf("name: m\nsource: {host: a, pool: x}\ntarget: {host: b}\nvms: [{name: g}]\n"),
          "source.pool: unknown key"));
  EXPECT_TRUE(
      Has(ErrorOf("name: m\nsource: {host: a}\ntarget: {host: b}\nvms: [{name: g, vcpus: 2}]\n"),
          "vms[0].vcpus: unknown key (expected one of: name, id, target)"));
  EXPECT_EQ(ErrorOf(Minimal("target_defaults: {name: x}\n")),
            "target_defaults.name: a per-VM key (vms[].target.name)");
  EXPECT_TRUE(Has(ErrorOf(Minimal("target_defaults: {preserve_mac: true}\n")),
                  "target_defaults.preserve_mac: use the top-level preserve_mac"));
  EXPECT_TRUE(Has(ErrorOf(Minimal("base: &b {vcpus: 2}\n")), "base: unknown key"));
  EXPECT_TRUE(Has(ErrorOf(Minimal("target_defaults: {<<: {vcpus: 2}}\n")),
                  "target_defaults.<<: YAML merge keys are not supported"));
}

TEST(ParsePlanTest, RequiredFieldsAndEndpointShapes) {
  EXPECT_EQ(ErrorOf("source: {host: a}\ntarget: {host: b}\nvms: [{name: g}]\n"), "name: missing");
  EXPECT_EQ(ErrorOf("name: m\ntarget: {host: b}\nvms: [{name: g}]\n"), "source: missing");
  EXPECT_EQ(ErrorOf("name: m\nsource: {host: a}\nvms: [{name: g}]\n"), "target: missing");
  EXPECT_EQ(ErrorOf("name: m\nsource: {host: a}\ntarget: {host: b}\n"), "vms: missing");
  EXPECT_EQ(ErrorOf("name: m\nsource: {host: a}\ntarget: {host: b}\nvms: []\n"),
            "vms: lists no VM");
  EXPECT_TRUE(Has(ErrorOf("name: m\nsource: {type: kvm}\ntarget: {host: b}\nvms: [{name: g}]\n"),
                  "source.host: missing"));
  EXPECT_TRUE(Has(ErrorOf("name: m\nsource: {host: a}\ntarget: {host: \"\"}\nvms: [{name: g}]\n"),
                  "target.host: must not be empty"));
  EXPECT_TRUE(Has(ErrorOf("name: m\nsource: {type: share, host: a}\ntarget: {host: b}\n"
                          "vms: [{name: g}]\n"),
                  "source.share: missing"));
  EXPECT_EQ(ErrorOf("name: m\nsource: {host: a, share: x}\ntarget: {host: b}\nvms: [{name: g}]\n"),
            "source.share: only for type share");
  EXPECT_TRUE(Has(ErrorOf("name: m\nsource: {type: vmware, host: a}\ntarget: {host: b}\n"
                          "vms: [{name: g}]\n"),
                  "source.type: expected one of kvm, share, got \"vmware\""));
  EXPECT_TRUE(Has(ErrorOf("name: m\nsource: {host: a}\ntarget: {host: b, format: vhdx}\n"
                          "vms: [{name: g}]\n"),
                  "target.format: only for type share"));
  EXPECT_TRUE(Has(ErrorOf("name: m\nsource: {host: a}\ntarget: {type: share, host: b, share: s, "
                          "format: qcow2}\nvms: [{name: g}]\n"),
                  "target.format: expected one of vhdx, vhd"));
  EXPECT_TRUE(Has(ErrorOf("name: m\nsource: {host: a}\ntarget: {type: share, host: b}\n"
                          "vms: [{name: g}]\n"),
                  "target.share: missing"));
  EXPECT_TRUE(Has(ErrorOf("name: m\nsource: {host: a}\ntarget: {type: share, host: b, share: s}\n"
                          "vms: [{name: g}]\nstorage: [{source: '*', pool: p}]\n"),
                  "storage: a share target takes no storage rules"));
  EXPECT_EQ(ErrorOf(Minimal("storage: [{source: '*'}]\n")),
            "storage[0].pool: missing (the target host's pool)");
  EXPECT_TRUE(Has(ErrorOf(Minimal("storage: [{source: '*', pool: p, format: vmdk}]\n")),
                  "storage[0].format: expected one of qcow2, raw, got \"vmdk\""));
  EXPECT_EQ(ErrorOf(Minimal("networks: [{source: a}]\n")), "networks[0].target: missing");
}

TEST(ParsePlanTest, VmEntries) {
  EXPECT_TRUE(Has(ErrorOf("name: m\nsource: {type: share, host: a, share: s}\ntarget: {host: b}\n"
                          "vms: [{name: g, id: g.ova}]\n"),
                  "vms[0]: give the VM's name or (share sources) its id, not both"));
  EXPECT_TRUE(Has(ErrorOf("name: m\nsource: {host: a}\ntarget: {host: b}\nvms: [{target: {}}]\n"),
                  "vms[0]: give the VM's name"));
  EXPECT_TRUE(Has(ErrorOf("name: m\nsource: {host: a}\ntarget: {host: b}\nvms: [{id: x.ova}]\n"),
                  "vms[0].id: only for share sources"));
  EXPECT_EQ(ErrorOf("name: m\nsource: {host: a}\ntarget: {host: b}\nvms: [{name: g}, {name: h}, "
                    "{name: g}]\n"),
            "vms[2]: the VM with name \"g\" is listed twice (also vms[0])");
  EXPECT_TRUE(Has(ErrorOf("name: m\nsource: {host: a}\ntarget: {host: b}\nvms: [{name: g, target: "
                          "{name: x}}, {name: h, target: {name: x}}]\n"),
                  "vms[1].target.name: \"x\" is also the name of vms[0]'s target"));
  EXPECT_TRUE(Has(ErrorOf("name: m\nsource: {host: a}\ntarget: {host: b}\nvms: g1\n"),
                  "vms: expected a list, got \"g1\""));
  EXPECT_TRUE(Has(ErrorOf("name: m\nsource: {host: a}\ntarget: {host: b}\nvms: [g1]\n"),
                  "vms[0]: expected a mapping, got \"g1\""));
  // Source names are the source platform's: spaces and non-ASCII are fine.
  EXPECT_EQ(MustParse("name: m\nsource: {host: a}\ntarget: {host: b}\nvms: [{name: Web Server "
                      "\xc3\xa9}]\n")
                .vms[0]
                .name,
            "Web Server \xc3\xa9");
}

TEST(ParsePlanTest, ValuesOfTheWrongTypeOrRange) {
  EXPECT_EQ(ErrorOf(WithTarget("vcpus: \"4\"")),
            "vms[1].target.vcpus: expected an integer, got \"4\"");
  EXPECT_EQ(ErrorOf(WithTarget("vcpus: 0")),
            "vms[1].target.vcpus: must be between 1 and 4096, got 0");
  EXPECT_TRUE(Has(ErrorOf(WithTarget("vcpus: 1.5")), "expected an integer"));
  EXPECT_TRUE(Has(ErrorOf(WithTarget("vcpus: 99999999999999999999")), "expected an integer"));
  EXPECT_TRUE(Has(ErrorOf(WithTarget("vcpus: [2]")), "expected an integer, got a list"));
  EXPECT_EQ(ErrorOf(R"({"name":"m","source":{"host":"a"},"target":{"host":"b"},
                       "vms":[{"name":"g","target":{"vcpus":"4"}}]})"),
            "vms[0].target.vcpus: expected an integer, got \"4\"");
  EXPECT_TRUE(Has(ErrorOf(R"({"name":"m","source":{"host":"a"},"target":{"host":"b"},
                            "vms":[{"name":"g","target":{"vcpus":2.0}}]})"),
                  "vms[0].target.vcpus: expected an integer, got 2.0"));
  EXPECT_EQ(
      ErrorOf(R"({"name":5,"source":{"host":"a"},"target":{"host":"b"},"vms":[{"name":"g"}]})"),
      "name: expected a string, got 5");
  EXPECT_EQ(ErrorOf(WithTarget("start: yes")),
            "vms[1].target.start: expected true or false, got \"yes\"");
  EXPECT_TRUE(Has(ErrorOf(WithTarget("start: \"true\"")), "expected true or false"));
  EXPECT_EQ(ErrorOf(WithTarget("disk_bus: usb")),
            "vms[1].target.disk_bus: expected one of virtio, scsi, sata, ide, got \"usb\"");
  EXPECT_TRUE(Has(ErrorOf(WithTarget("firmware: efi")), "expected one of bios, uefi"));
  EXPECT_TRUE(Has(ErrorOf(WithTarget("machine: \"pc q35\"")), "use only letters, digits"));
  EXPECT_TRUE(Has(ErrorOf(WithTarget("name: ../etc")), "vms[1].target.name: \"../etc\": use only"));
  EXPECT_TRUE(Has(ErrorOf(WithTarget("name: .hidden")), "must not start with '.' or '-'"));
  EXPECT_TRUE(Has(ErrorOf(WithTarget("name: " + std::string(65, 'a'))), "longer than 64"));
  EXPECT_TRUE(Has(ErrorOf(WithTarget("boot_check: {timeout: 5m}")),
                  "vms[1].target.boot_check.marker: missing"));
  EXPECT_TRUE(Has(ErrorOf(WithTarget("boot_check: login")), "expected a mapping, got \"login\""));
  EXPECT_TRUE(
      Has(ErrorOf("name: \"wave 1\"\nsource: {host: a}\ntarget: {host: b}\nvms: [{name: g}]\n"),
          "name: \"wave 1\": use only letters"));
  EXPECT_TRUE(Has(ErrorOf("name: \"\"\nsource: {host: a}\ntarget: {host: b}\nvms: [{name: g}]\n"),
                  "name: must not be empty"));
  EXPECT_TRUE(
      Has(ErrorOf("name: m\nsource: {host: \"a\\tb\"}\ntarget: {host: b}\nvms: [{name: g}]\n"),
          "source.host: must not contain control characters"));
  EXPECT_TRUE(
      Has(ErrorOf("name: m\nsource: {host: \"a\xff\"}\ntarget: {host: b}\nvms: [{name: g}]\n"),
          "not valid UTF-8"));
  EXPECT_TRUE(Has(ErrorOf(WithOption("priority: 2000000")), "options.priority: must be between"));
  EXPECT_EQ(MustParse(WithOption("priority: -5")).options.priority, -5);
  EXPECT_TRUE(Has(ErrorOf(WithOption("deploy: later")), "expected one of auto, manual"));
  EXPECT_TRUE(Has(ErrorOf(Minimal("preserve_mac: 1\n")), "preserve_mac: expected true or false"));
  EXPECT_TRUE(Has(ErrorOf(Minimal("networks: {source: a, target: b}\n")),
                  "networks: expected a list, got a mapping"));
  EXPECT_TRUE(Has(ErrorOf(Minimal("networks: [{source: a, target: b}, {source: a, target: c}]\n")),
                  "networks[1].source: \"a\" is mapped twice (also networks[0])"));
  EXPECT_TRUE(Has(ErrorOf(Minimal("storage: [{source: x, pool: a}, {source: x, pool: b}]\n")),
                  "storage[1].source: \"x\" has a rule already (storage[0])"));
  EXPECT_TRUE(Has(ErrorOf(Minimal("target_defaults: 3\n")), "target_defaults: expected a mapping"));
  EXPECT_TRUE(Has(ErrorOf(Minimal("options: ~\n")), "options: expected a mapping, got nothing"));
}

TEST(ParsePlanTest, SyntaxAndStructure) {
  EXPECT_TRUE(Has(ErrorOf("name: m\nsource: {host: a\ntarget: b\n"), "YAML syntax error at line"));
  EXPECT_EQ(ErrorOf(""), "plan: the document is empty");
  EXPECT_EQ(ErrorOf("# only a comment\n"), "plan: the document is empty");
  EXPECT_TRUE(Has(ErrorOf("- a\n- b\n"),
                  "plan: expected a mapping (name, source, target, vms, ...), got a list"));
  EXPECT_TRUE(Has(ErrorOf("just text"), "plan: expected a mapping"));
  EXPECT_EQ(ErrorOf(std::string(kMinimalYaml) + "---\nname: other\n"),
            "plan: more than one YAML document (---)");
  EXPECT_EQ(ErrorOf("name: m\nname: n\nsource: {host: a}\ntarget: {host: b}\nvms: [{name: g}]\n"),
            "name: given twice");
  EXPECT_EQ(
      ErrorOf(
          R"({"name":"m","source":{"host":"a","host":"c"},"target":{"host":"b"},"vms":[{"name":"g"}]})"),
      "source.host: given twice");
  EXPECT_TRUE(Has(ErrorOf(R"({"name": "m", "source": })"), "plan: not valid JSON: parse error"));
  EXPECT_TRUE(Has(ErrorOf(R"({"name": "m", "vms": [],})"), "plan: not valid JSON: parse error"));
  // Not JSON, but a YAML flow mapping: YAML's reading applies.
  EXPECT_EQ(ErrorOf("{name: m, source: {host: a}, target: {host: b}}"), "vms: missing");
  EXPECT_TRUE(Has(ErrorOf("{name: m, source: {host: a}"), "plan: not valid JSON"));
  EXPECT_TRUE(Has(ErrorOf(std::string(kMinimalYaml) + std::string("\0tail", 5)), "NUL byte"));
  EXPECT_TRUE(Has(ErrorOf("name: !!binary aGVsbG8=\nsource: {host: a}\n"), "YAML tag"));
  EXPECT_EQ(
      MustParse("name: !!str m\nsource: {host: a}\ntarget: {host: b}\nvms: [{name: g}]\n").name,
      "m");
  EXPECT_TRUE(Has(ErrorOf("name: m\n? [a, b]\n: c\n"), "a key must be a string"));
  EXPECT_TRUE(Has(ErrorOf("name: m\nsource: {host: *nope}\n"),
                  "YAML syntax error at line 2, column 16: the referenced anchor is not defined"));
  EXPECT_EQ(ErrorOf("name: m\nsource: &s {host: [*s]}\n"),
            "source.host[0]: alias to an anchor that contains it (a cycle)");
  EXPECT_TRUE(Has(ErrorOf("name: m\n\tsource: x\n"), "illegal tab"));
}

TEST(ParsePlanTest, AliasesWorkAndBombsStopAtTheCap) {
  PlanDocument p = MustParse(R"(
name: m
source: {host: a}
target: {host: b}
target_defaults:
  boot_check: &check {marker: "login:", timeout: 2m}
vms:
  - name: g1
    target: {boot_check: *check}
)");
  EXPECT_EQ(p.vms[0].target.boot_check, (BootCheck{"login:", 120000}));

  // Billion laughs: each level references the previous one nine times.
  std::string bomb = "a0: &a0 [x, x, x, x, x, x, x, x, x]\n";
  for (int i = 1; i < 10; ++i) {
    bomb += "a" + std::to_string(i) + ": &a" + std::to_string(i) + " [";
    for (int k = 0; k < 9; ++k) bomb += (k ? ", *a" : "*a") + std::to_string(i - 1);
    bomb += "]\n";
  }
  auto r = ParsePlan(bomb);
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(Has(r.status().message(), "more than 100000 values")) << r.status().ToString();

  std::string deep = "name: " + std::string(100, '[') + std::string(100, ']') + "\n";
  EXPECT_TRUE(Has(ErrorOf(deep), "nested more than 32 levels deep"));
  std::string deep_json = "{\"name\": " + std::string(5000, '[') + std::string(5000, ']') + "}";
  EXPECT_TRUE(Has(ErrorOf(deep_json), "nested more than 32 levels deep"));
}

TEST(ParsePlanTest, SizeCaps) {
  auto big = ParsePlan(std::string(kMinimalYaml) + "#" + std::string(2 << 20, 'x') + "\n");
  ASSERT_FALSE(big.ok());
  EXPECT_EQ(big.status().code(), ErrorCode::kTooLarge);
  std::string many = "name: m\nsource: {host: a}\ntarget: {host: b}\nvms:\n";
  for (int i = 0; i < 1001; ++i) many += "  - name: g" + std::to_string(i) + "\n";
  EXPECT_EQ(ErrorOf(many), "vms: more than 1000 entries (1001)");
  EXPECT_TRUE(Has(ErrorOf(WithTarget("boot_check: {marker: \"" + std::string(300, 'm') + "\"}")),
                  "vms[1].target.boot_check.marker: longer than 256 characters"));
  EXPECT_TRUE(Has(ErrorOf("name: m\nsource: {host: \"" + std::string(70000, 'h') + "\"}\n"),
                  "source.host: a value longer than 65536 bytes"));
}

// --- Resolution ---------------------------------------------------------------------------

sources::DiskDescription Disk(const std::string& id, const std::string& bus, uint64_t capacity,
                              uint64_t allocated, const std::string& datastore = "local",
                              const std::string& format = "qcow2") {
  sources::DiskDescription d;
  d.id = id;
  d.file = "/pools/" + datastore + "/" + id + "." + format;
  d.format = format;
  d.capacity_bytes = capacity;
  d.allocated_bytes = allocated;
  d.bus = bus;
  d.datastore = datastore;
  return d;
}

sources::NicDescription Nic(const std::string& id, const std::string& network,
                            const std::string& mac, const std::string& model) {
  return sources::NicDescription{id, network, mac, model};
}

// A KVM VM as a KVM host's agent describes it.
sources::VmDescription KvmVm() {
  sources::VmDescription vm;
  vm.name = "g1";
  vm.uuid = "5a1e0000-0000-4000-8000-000000000001";
  vm.platform = sources::Platform::kKvm;
  vm.vcpus = 2;
  vm.memory_bytes = 512 * kMiB;
  vm.firmware = "bios";
  vm.machine = "pc-i440fx-7.2";
  vm.running = false;
  vm.disks = {Disk("disk0", "virtio", 4 * kGiB, kGiB), Disk("disk1", "virtio", 2 * kGiB, 0)};
  vm.nics = {Nic("nic0", "default", "52:54:00:FE:00:01", "virtio")};
  return vm;
}

// A VMware VM from an OVA in a share.
sources::VmDescription VmwareVm() {
  sources::VmDescription vm;
  vm.name = "Web Server (prod)";
  vm.platform = sources::Platform::kVmware;
  vm.vcpus = 4;
  vm.memory_bytes = 4 * kGiB;
  vm.firmware = "uefi";
  vm.disks = {Disk("disk0", "scsi", 10 * kGiB, 3 * kGiB, "exports", "ova"),
              Disk("disk1", "scsi", 20 * kGiB, 5 * kGiB, "exports", "ova"),
              Disk("disk2", "ide", 1 * kGiB, 0, "exports", "ova")};
  vm.nics = {Nic("nic0", "VM Network", "00:50:56:aa:bb:cc", "vmxnet3"),
             Nic("nic1", "Backup LAN", "00:50:56:aa:bb:cd", "e1000")};
  vm.descriptor = "web1.ova";
  return vm;
}

hypervisor::Inventory TargetHost() {
  hypervisor::Inventory inv;
  inv.host.hostname = "host2";
  hypervisor::PoolInfo local;
  local.name = "local";
  local.capacity_bytes = 100 * kGiB;
  local.available_bytes = 50 * kGiB;
  local.active = true;
  hypervisor::PoolInfo fast = local;
  fast.name = "fast";
  fast.capacity_bytes = 10 * kGiB;
  fast.available_bytes = 2 * kGiB;
  inv.pools = {local, fast};
  hypervisor::NetworkInfo lab;
  lab.name = "lab";
  lab.active = true;
  hypervisor::NetworkInfo off;
  off.name = "off";
  off.active = false;
  inv.networks = {lab, off};
  hypervisor::VmInfo other;
  other.name = "existing";
  other.uuid = "00000000-0000-4000-8000-00000000abcd";
  inv.vms = {other};
  return inv;
}

constexpr char kKvmPlan[] = R"(
name: p
source: {type: kvm, host: host1}
target: {type: kvm, host: host2}
vms: [{name: g1}]
networks: [{source: "*", target: lab}]
storage: [{source: "*", pool: local}]
)";

// Everything a passing kvm -> kvm resolution needs; tests change one thing.
struct Fixture {
  PlanDocument plan;
  sources::VmDescription vm;
  hypervisor::Inventory target = TargetHost();
  ResolveInput in;

  Fixture(const std::string& plan_text, sources::VmDescription v)
      : plan(MustParse(plan_text)), vm(std::move(v)) {
    Refresh();
    in.machine_ok = true;
    in.firmware_ok = true;
  }
  // REQUIRES: after any change to plan, vm or target.
  void Refresh() {
    in.plan = &plan;
    in.entry = &plan.vms[0];
    in.vm = &vm;
    in.target = &target;
  }
  Resolution Resolve() {
    Refresh();
    return ResolvePlanVm(in);
  }
};

const Check* Find(const Resolution& r, const std::string& name) {
  for (const Check& c : r.checks) {
    if (c.name == name) return &c;
  }
  return nullptr;
}

std::vector<std::string> Names(const Resolution& r) {
  std::vector<std::string> out;
  for (const Check& c : r.checks) out.push_back(c.name);
  return out;
}

// The check `name` must be there and failed, with `part` in its message.
void ExpectFailed(const Resolution& r, const std::string& name, const std::string& part) {
  const Check* c = Find(r, name);
  ASSERT_NE(c, nullptr) << name;
  EXPECT_FALSE(c->ok) << name << ": " << c->message;
  EXPECT_TRUE(Has(c->message, part)) << name << ": " << c->message;
  EXPECT_FALSE(r.ok());
  EXPECT_TRUE(Has(r.FailureSummary(), name + ": ")) << r.FailureSummary();
  for (const Check& other : r.checks) {
    if (other.name != name) {
      EXPECT_TRUE(other.ok) << other.name << ": " << other.message;
    }
  }
}

TEST(ResolvePlanVmTest, KvmToKvmPassesEveryCheck) {
  Fixture f(kKvmPlan, KvmVm());
  Resolution r = f.Resolve();
  EXPECT_TRUE(r.ok()) << r.FailureSummary();
  EXPECT_EQ(Names(r), (std::vector<std::string>{
                          "source_reachable", "target_reachable", "vm_found",
                          "description_complete", "source_state", "networks_mapped",
                          "target_networks", "storage_mapped", "pool_capacity", "name_clash",
                          "machine_type", "firmware", "disk_bus", "disk_format"}));
  for (const Check& c : r.checks) EXPECT_TRUE(c.ok) << c.name << ": " << c.message;
  const TargetVm& t = r.vm;
  EXPECT_EQ(t.name, "g1");
  EXPECT_EQ(t.vcpus, 2);
  EXPECT_EQ(t.memory_bytes, 512 * kMiB);
  EXPECT_EQ(t.machine, "pc-i440fx-7.2");  // the source's
  EXPECT_EQ(t.firmware, "bios");
  EXPECT_EQ(t.arch, "x86_64");
  EXPECT_TRUE(t.start);
  EXPECT_FALSE(t.delete_disks_with_vm);
  EXPECT_EQ(t.boot_check, BootCheck{});
  ASSERT_EQ(t.disks.size(), 2u);
  EXPECT_EQ(t.disks[0], (TargetDisk{"disk0", "local", "g1-disk0.qcow2", "qcow2", "", 4 * kGiB,
                                    "virtio", "vda"}));
  EXPECT_EQ(t.disks[1].dev, "vdb");
  EXPECT_EQ(t.disks[1].file_name, "g1-disk1.qcow2");
  ASSERT_EQ(t.nics.size(), 1u);
  EXPECT_EQ(t.nics[0], (TargetNic{"nic0", "lab", "52:54:00:fe:00:01", "virtio"}));
  EXPECT_EQ(Find(r, "pool_capacity")->message, "pool local: 3.03 GiB needed, 50.00 GiB available");
  EXPECT_EQ(r.FailureSummary(), "");
}

TEST(ResolvePlanVmTest, VmwareShareToKvmMapsBusesModelsAndStorage) {
  Fixture f(R"yaml(
name: p
source: {type: share, host: host1, share: exports}
target: {host: host2}
vms: [{name: "Web Server (prod)"}]
networks: [{source: "VM Network", target: lab}, {source: "*", target: lab}]
storage:
  - {source: "*", pool: local}
  - {source: exports, pool: local, format: raw}
  - {source: "Web Server (prod)/disk1", pool: fast, format: qcow2}
)yaml",
            VmwareVm());
  f.target.pools[1].available_bytes = 8 * kGiB;
  f.target.pools[1].capacity_bytes = 30 * kGiB;
  Resolution r = f.Resolve();
  EXPECT_TRUE(r.ok()) << r.FailureSummary();
  EXPECT_EQ(Find(r, "source_state"), nullptr);  // a share VM does not run
  const TargetVm& t = r.vm;
  EXPECT_EQ(t.name, "Web-Server-prod");
  EXPECT_EQ(t.firmware, "uefi");
  EXPECT_EQ(t.machine, "pc");
  ASSERT_EQ(t.disks.size(), 3u);
  // Not a KVM VM: sata whatever the source's bus, sd* in order.
  EXPECT_EQ(t.disks[0].bus, "sata");
  EXPECT_EQ(t.disks[0].dev, "sda");
  EXPECT_EQ(t.disks[2].dev, "sdc");
  // VM/DISK beats the datastore, which beats "*" (whatever their order in the list).
  EXPECT_EQ(t.disks[0].pool, "local");
  EXPECT_EQ(t.disks[0].format, "raw");
  EXPECT_EQ(t.disks[0].file_name, "Web-Server-prod-disk0.raw");
  EXPECT_EQ(t.disks[1].pool, "fast");
  EXPECT_EQ(t.disks[1].format, "qcow2");
  EXPECT_EQ(t.disks[2].format, "raw");
  ASSERT_EQ(t.nics.size(), 2u);
  EXPECT_EQ(t.nics[0].model, "virtio");  // vmxnet3 has no KVM device
  EXPECT_EQ(t.nics[1].model, "e1000");
  EXPECT_EQ(t.nics[1].mac, "00:50:56:aa:bb:cd");
  EXPECT_EQ(t.nics[1].network, "lab");
}

TEST(ResolvePlanVmTest, PrecedenceOfTargetSettings) {
  const std::string plan = std::string(kKvmPlan) +
                           "target_defaults: {vcpus: 8, memory: 8GiB, firmware: uefi, machine: "
                           "q35, disk_bus: scsi, start: false, delete_disks_with_vm: true, "
                           "boot_check: {marker: 'login:'}}\n";
  {
    // The description's vCPUs, memory and firmware beat target_defaults; machine and bus do not.
    Fixture f(plan, KvmVm());
    Resolution r = f.Resolve();
    EXPECT_EQ(r.vm.vcpus, 2);
    EXPECT_EQ(r.vm.memory_bytes, 512 * kMiB);
    EXPECT_EQ(r.vm.firmware, "bios");
    EXPECT_EQ(r.vm.machine, "q35");
    EXPECT_EQ(r.vm.disks[0].bus, "scsi");
    EXPECT_EQ(r.vm.disks[1].dev, "sdb");
    EXPECT_FALSE(r.vm.start);
    EXPECT_TRUE(r.vm.delete_disks_with_vm);
    EXPECT_EQ(r.vm.boot_check, (BootCheck{"login:", 300000}));
  }
  {
    // The description lacks them: target_defaults fill in.
    sources::VmDescription vm = KvmVm();
    vm.vcpus = 0;
    vm.memory_bytes = 0;
    vm.firmware = "";
    vm.machine = "";
    Fixture f(kKvmPlan + std::string("target_defaults: {vcpus: 8, memory: 8GiB, firmware: uefi}\n"),
              vm);
    Resolution r = f.Resolve();
    EXPECT_TRUE(r.ok()) << r.FailureSummary();
    EXPECT_EQ(r.vm.vcpus, 8);
    EXPECT_EQ(r.vm.memory_bytes, 8 * kGiB);
    EXPECT_EQ(r.vm.firmware, "uefi");
    EXPECT_EQ(r.vm.machine, "pc");
  }
  {
    // Per-VM settings beat everything.
    std::string per_vm = plan;
    per_vm.replace(per_vm.find("vms: [{name: g1}]"), 17,
                   "vms: [{name: g1, target: {name: g1-new, vcpus: 3, memory: 1GiB, firmware: "
                   "uefi, machine: pc, disk_bus: ide, start: true, delete_disks_with_vm: false, "
                   "boot_check: {marker: '#', timeout: 20s}, preserve_mac: false}}]");
    Fixture f(per_vm, KvmVm());
    Resolution r = f.Resolve();
    EXPECT_EQ(r.vm.name, "g1-new");
    EXPECT_EQ(r.vm.vcpus, 3);
    EXPECT_EQ(r.vm.memory_bytes, kGiB);
    EXPECT_EQ(r.vm.firmware, "uefi");
    EXPECT_EQ(r.vm.machine, "pc");
    EXPECT_EQ(r.vm.disks[0].dev, "hda");
    EXPECT_EQ(r.vm.disks[1].dev, "hdb");
    EXPECT_EQ(r.vm.disks[0].file_name, "g1-new-disk0.qcow2");
    EXPECT_TRUE(r.vm.start);
    EXPECT_FALSE(r.vm.delete_disks_with_vm);
    EXPECT_EQ(r.vm.boot_check, (BootCheck{"#", 20000}));
    EXPECT_EQ(r.vm.nics[0].mac, "");  // libvirt assigns one
  }
}

TEST(ResolvePlanVmTest, PreserveMacAndMixedBuses) {
  sources::VmDescription vm = KvmVm();
  vm.disks = {Disk("disk0", "virtio", kGiB, 0), Disk("disk1", "scsi", kGiB, 0),
              Disk("disk2", "sata", kGiB, 0), Disk("disk3", "usb", kGiB, 0),
              Disk("disk4", "virtio", kGiB, 0)};
  vm.nics.push_back(Nic("nic1", "default", "not-a-mac", "rtl8139"));
  Fixture f(kKvmPlan + std::string("preserve_mac: false\n"), vm);
  Resolution r = f.Resolve();
  EXPECT_TRUE(r.ok()) << r.FailureSummary();
  std::vector<std::string> devs;
  for (const TargetDisk& d : r.vm.disks) devs.push_back(d.bus + ":" + d.dev);
  EXPECT_EQ(devs, (std::vector<std::string>{"virtio:vda", "scsi:sda", "sata:sdb", "sata:sdc",
                                            "virtio:vdb"}));
  EXPECT_EQ(r.vm.nics[0].mac, "");
  EXPECT_EQ(r.vm.nics[1].model, "rtl8139");

  f.plan.preserve_mac = true;
  r = f.Resolve();
  EXPECT_EQ(r.vm.nics[0].mac, "52:54:00:fe:00:01");
  EXPECT_EQ(r.vm.nics[1].mac, "");  // a malformed source MAC is not copied
}

TEST(ResolvePlanVmTest, ManyDisksGetLibvirtNames) {
  sources::VmDescription vm = KvmVm();
  vm.disks.clear();
  for (int i = 0; i < 28; ++i)
    vm.disks.push_back(Disk("disk" + std::to_string(i), "virtio", kMiB, 0));
  Fixture f(kKvmPlan, vm);
  Resolution r = f.Resolve();
  EXPECT_EQ(r.vm.disks[25].dev, "vdz");
  EXPECT_EQ(r.vm.disks[26].dev, "vdaa");
  EXPECT_EQ(r.vm.disks[27].dev, "vdab");
  EXPECT_EQ(r.vm.disks[27].file_name, "g1-disk27.qcow2");
}

TEST(ResolvePlanVmTest, UnreachableSourceTargetAndMissingVm) {
  {
    Fixture f(kKvmPlan, KvmVm());
    f.in.source_reachable = false;
    f.in.source_error = "connection refused";
    f.in.vm = nullptr;
    f.Refresh();
    f.in.vm = nullptr;
    Resolution r = ResolvePlanVm(f.in);
    EXPECT_FALSE(r.ok());
    EXPECT_EQ(Names(r), (std::vector<std::string>{"source_reachable", "target_reachable"}));
    EXPECT_EQ(Find(r, "source_reachable")->message, "host1 cannot be read: connection refused");
  }
  {
    Fixture f(kKvmPlan, KvmVm());
    f.Refresh();
    f.in.vm = nullptr;
    Resolution r = ResolvePlanVm(f.in);
    EXPECT_EQ(Names(r),
              (std::vector<std::string>{"source_reachable", "target_reachable", "vm_found"}));
    EXPECT_EQ(Find(r, "vm_found")->message, "no VM \"g1\" in host1");
    f.in.source_error = "two VMs named g1 in share exports: a.ova, b/vm.json (name them by id)";
    r = ResolvePlanVm(f.in);
    ExpectFailed(r, "vm_found", "name them by id");
  }
  {
    // The target cannot be read: no target checks, the source's still run.
    Fixture f(kKvmPlan, KvmVm());
    f.Refresh();
    f.in.target = nullptr;
    f.in.target_error = "host2: agent answered 502";
    Resolution r = ResolvePlanVm(f.in);
    ExpectFailed(r, "target_reachable", "host2 cannot be read: host2: agent answered 502");
    EXPECT_EQ(Names(r),
              (std::vector<std::string>{"source_reachable", "target_reachable", "vm_found",
                                        "description_complete", "source_state", "networks_mapped",
                                        "storage_mapped", "disk_bus", "disk_format"}));
  }
}

TEST(ResolvePlanVmTest, DescriptionIncomplete) {
  sources::VmDescription vm = KvmVm();
  vm.vcpus = 0;
  vm.memory_bytes = 0;
  Fixture f(kKvmPlan, vm);
  Resolution r = f.Resolve();
  ExpectFailed(r, "description_complete",
               "vCPUs unknown (set vms[0].target.vcpus or target_defaults.vcpus); memory unknown "
               "(set vms[0].target.memory or target_defaults.memory)");
  vm = KvmVm();
  vm.name = "\xe6\x97\xa5\xe6\x9c\xac";  // nothing usable in a file name
  Fixture g(kKvmPlan, vm);
  g.plan.vms[0].name = vm.name;
  ExpectFailed(g.Resolve(), "description_complete", "set vms[0].target.name");
  vm = KvmVm();
  vm.firmware = "";
  Fixture h(kKvmPlan, vm);
  r = h.Resolve();
  EXPECT_TRUE(r.ok());
  EXPECT_TRUE(Has(Find(r, "description_complete")->message, "bios assumed"));
}

TEST(ResolvePlanVmTest, RunningSourceNeedsShutdown) {
  sources::VmDescription vm = KvmVm();
  vm.running = true;
  Fixture f(kKvmPlan + std::string("options: {shutdown_source: false}\n"), vm);
  ExpectFailed(f.Resolve(), "source_state", "g1 is running and options.shutdown_source is false");
  Fixture g(kKvmPlan, vm);
  Resolution r = g.Resolve();
  EXPECT_TRUE(r.ok());
  EXPECT_TRUE(Has(Find(r, "source_state")->message, "shut down at cutover")) << r.checks[4].message;
}

TEST(ResolvePlanVmTest, NetworksMappedAndOnTheTarget) {
  sources::VmDescription vm = VmwareVm();
  vm.disks.resize(1);
  const std::string plan =
      "name: p\nsource: {type: share, host: host1, share: exports}\ntarget: {host: host2}\n"
      "vms: [{name: w}]\nstorage: [{source: '*', pool: local}]\n";
  Fixture f(plan + "networks: [{source: VM Network, target: lab}]\n", vm);
  ExpectFailed(f.Resolve(), "networks_mapped",
               "NIC nic1's network \"Backup LAN\" has no mapping (add {source: \"Backup LAN\", "
               "target: ...})");
  vm.nics.push_back(Nic("nic2", "", "", "e1000"));
  Fixture g(plan +
                "networks: [{source: VM Network, target: lab}, {source: Backup LAN, "
                "target: lab}]\n",
            vm);
  ExpectFailed(g.Resolve(), "networks_mapped", "NIC nic2's network is not known");

  vm.nics.pop_back();
  Fixture h(plan + "networks: [{source: VM Network, target: lab}, {source: '*', target: nope}]\n",
            vm);
  ExpectFailed(h.Resolve(), "target_networks",
               "network \"nope\" does not exist on host2 (it has: lab, off)");
  Fixture i(plan + "networks: [{source: '*', target: off}]\n", vm);
  ExpectFailed(i.Resolve(), "target_networks", "network \"off\" on host2 is not active");
}

TEST(ResolvePlanVmTest, StorageMappedAndPoolCapacity) {
  const std::string base =
      "name: p\nsource: {host: host1}\ntarget: {host: host2}\nvms: [{name: g1}]\n"
      "networks: [{source: '*', target: lab}]\n";
  {
    Fixture f(base + "storage: [{source: other, pool: local}]\n", KvmVm());
    ExpectFailed(f.Resolve(), "storage_mapped",
                 "disk disk0 (datastore \"local\") matches no storage rule (add {source: "
                 "\"local\", pool: ...})");
  }
  {
    // Data: 1 GiB + 2 GiB (disk1's allocation is unknown: its capacity counts) + 1% > 2 GiB.
    Fixture f(base + "storage: [{source: '*', pool: fast}]\n", KvmVm());
    ExpectFailed(f.Resolve(), "pool_capacity",
                 "pool fast has 2.00 GiB available; disks of this plan need 3.03 GiB");
  }
  {
    Fixture f(base + "storage: [{source: '*', pool: fast}]\n", KvmVm());
    f.target.pools[1].available_bytes = 10 * kGiB;
    f.target.pools[1].capacity_bytes = 5 * kGiB;
    ExpectFailed(f.Resolve(), "pool_capacity",
                 "pool fast holds 5.00 GiB; disks of this plan are 6.00 GiB (virtual size)");
  }
  {
    // What earlier VMs of the plan claimed counts too.
    Fixture f(base + "storage: [{source: '*', pool: local}]\n", KvmVm());
    EXPECT_TRUE(f.Resolve().ok());
    f.in.pool_claims = {{"fast", {90 * kGiB, 90 * kGiB}}, {"local", {10 * kGiB, 47 * kGiB}}};
    ExpectFailed(f.Resolve(), "pool_capacity",
                 "pool local has 50.00 GiB available; disks of this plan need 50.50 GiB");
  }
  {
    Fixture f(base + "storage: [{source: '*', pool: nas9}]\n", KvmVm());
    ExpectFailed(f.Resolve(), "pool_capacity",
                 "pool nas9 does not exist on host2 (it has: local, fast)");
    f.plan.storage[0].pool = "local";
    f.target.pools[0].active = false;
    ExpectFailed(f.Resolve(), "pool_capacity", "pool local on host2 is not active");
  }
  {
    sources::VmDescription vm = KvmVm();
    vm.disks[1].capacity_bytes = 0;
    Fixture f(base + "storage: [{source: '*', pool: local}]\n", vm);
    ExpectFailed(f.Resolve(), "pool_capacity", "disk disk1's virtual size is not known");
  }
}

TEST(ResolvePlanVmTest, AddPoolClaimsAccumulates) {
  Fixture f(kKvmPlan, KvmVm());
  Resolution r = f.Resolve();
  std::vector<std::pair<std::string, std::pair<uint64_t, uint64_t>>> claims;
  AddPoolClaims(r, f.vm, &claims);
  AddPoolClaims(r, f.vm, &claims);
  ASSERT_EQ(claims.size(), 1u);
  EXPECT_EQ(claims[0].first, "local");
  EXPECT_EQ(claims[0].second.first, 12 * kGiB);
  EXPECT_EQ(claims[0].second.second, 6 * kGiB);
}

TEST(ResolvePlanVmTest, NameClash) {
  {
    Fixture f(kKvmPlan, KvmVm());
    f.target.vms[0].name = "g1";
    ExpectFailed(f.Resolve(), "name_clash", "host2 already has a VM named g1");
  }
  {
    Fixture f(kKvmPlan, KvmVm());
    f.target.vms[0].uuid = "5A1E0000-0000-4000-8000-000000000001";
    ExpectFailed(f.Resolve(), "name_clash",
                 "host2 already has the source's UUID 5a1e0000-0000-4000-8000-000000000001 (VM "
                 "existing)");
  }
  {
    Fixture f(kKvmPlan, KvmVm());
    f.in.pool_files = {{"fast", {"g1-disk0.qcow2"}}, {"local", {"a.qcow2", "g1-disk1.qcow2"}}};
    ExpectFailed(f.Resolve(), "name_clash", "file g1-disk1.qcow2 already exists in pool local");
    EXPECT_FALSE(Has(Find(f.Resolve(), "name_clash")->message, "g1-disk0"));
  }
  {
    Fixture f(kKvmPlan, KvmVm());
    f.in.claimed_names = {"g1"};
    ExpectFailed(f.Resolve(), "name_clash", "another VM of this plan is also named g1");
  }
}

TEST(ResolvePlanVmTest, PlatformChecks) {
  Fixture f(kKvmPlan, KvmVm());
  f.in.machine_ok = false;
  f.in.platform_message = "no machine type pc-i440fx-7.2 for x86_64";
  ExpectFailed(f.Resolve(), "machine_type",
               "host2 cannot run machine type pc-i440fx-7.2 for x86_64: no machine type");
  f.in.machine_ok = true;
  f.in.firmware_ok = false;
  f.in.platform_message = "no OVMF firmware";
  ExpectFailed(f.Resolve(), "firmware", "host2 cannot boot bios guests: no OVMF firmware");
  // Not asked yet (the first pass): both fail as not checked.
  f.in.machine_ok.reset();
  f.in.firmware_ok.reset();
  f.in.platform_message.clear();
  Resolution r = f.Resolve();
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(Find(r, "machine_type")->message, "not checked: the platform check was not run");
  EXPECT_FALSE(Find(r, "firmware")->ok);
}

TEST(ResolvePlanVmTest, DiskBusAndFormat) {
  sources::VmDescription vm = KvmVm();
  for (int i = 2; i < 5; ++i) vm.disks.push_back(Disk("disk" + std::to_string(i), "ide", kMiB, 0));
  Fixture f(kKvmPlan + std::string("target_defaults: {disk_bus: ide}\n"), vm);
  ExpectFailed(f.Resolve(), "disk_bus", "5 disks on ide, which takes at most 4");

  vm = KvmVm();
  vm.disks[1].format = "iso";
  vm.disks[1].file = "/isos/x.iso";
  Fixture g(kKvmPlan, vm);
  ExpectFailed(g.Resolve(), "disk_format",
               "disk disk1 (/isos/x.iso) is \"iso\", which Ferry cannot read");

  Fixture h(kKvmPlan, KvmVm());  // a document built in code, not parsed
  h.plan.defaults.disk_bus = "usb";
  h.plan.storage[0].format = "vmdk";
  Resolution r = h.Resolve();
  EXPECT_TRUE(Has(Find(r, "disk_bus")->message, "bus \"usb\" is not virtio, scsi, sata or ide"));
  EXPECT_TRUE(Has(Find(r, "disk_format")->message, "target format \"vmdk\" is not qcow2 or raw"));
}

TEST(ResolvePlanVmTest, ShareTargetStagesVhdxOrFixedVhd) {
  const std::string plan =
      "name: s\nsource: {host: host1}\ntarget: {type: share, host: host3, share: staging}\n"
      "vms: [{name: g1}]\nnetworks: [{source: '*', target: Hyper-V Switch}]\n"
      "target_defaults: {boot_check: {marker: 'login:'}}\n";
  Fixture f(plan, KvmVm());
  f.in.target = nullptr;
  f.in.share_writable = true;
  f.in.share_entries = {"other", ".g1.ferry-part"};
  f.in.machine_ok.reset();
  f.in.firmware_ok.reset();
  f.Refresh();
  f.in.target = nullptr;
  Resolution r = ResolvePlanVm(f.in);
  EXPECT_TRUE(r.ok()) << r.FailureSummary();
  EXPECT_EQ(Names(r),
            (std::vector<std::string>{"source_reachable", "target_reachable", "vm_found",
                                      "description_complete", "source_state", "networks_mapped",
                                      "storage_mapped", "name_clash", "disk_bus", "disk_format"}));
  EXPECT_EQ(Find(r, "storage_mapped")->message, "disks go to staging/g1/ as VHDX");
  EXPECT_EQ(r.vm.disks[0],
            (TargetDisk{"disk0", "", "g1-disk0.vhdx", "vhdx", "", 4 * kGiB, "virtio", "vda"}));
  EXPECT_EQ(r.vm.nics[0].model, "virtio");  // the source's, as it is
  EXPECT_EQ(r.vm.nics[0].network, "Hyper-V Switch");
  EXPECT_FALSE(r.vm.start);
  EXPECT_EQ(r.vm.boot_check, BootCheck{});

  f.plan.target.format = "vhd";
  r = ResolvePlanVm(f.in);
  EXPECT_EQ(r.vm.disks[1].file_name, "g1-disk1.vhd");
  EXPECT_EQ(r.vm.disks[1].format, "vhd");
  EXPECT_EQ(r.vm.disks[1].subformat, "fixed");

  f.in.share_entries.push_back("g1");
  ExpectFailed(ResolvePlanVm(f.in), "name_clash", "folder g1 already exists in share staging");
  f.in.share_entries.pop_back();
  f.in.share_writable = false;
  r = ResolvePlanVm(f.in);
  EXPECT_FALSE(r.ok());
  EXPECT_TRUE(Has(Find(r, "target_reachable")->message, "share staging on host3 is not writable"));
  EXPECT_EQ(Find(r, "name_clash"), nullptr);
}

TEST(ResolvePlanVmTest, FailureSummaryListsEveryFailedCheck) {
  sources::VmDescription vm = KvmVm();
  vm.running = true;
  Fixture f(kKvmPlan + std::string("options: {shutdown_source: false}\n"), vm);
  f.target.vms[0].name = "g1";
  Resolution r = f.Resolve();
  EXPECT_EQ(r.FailureSummary(),
            "source_state: g1 is running and options.shutdown_source is false: a cold migration "
            "needs it shut off (shut it down, or set shutdown_source: true); name_clash: host2 "
            "already has a VM named g1");
  EXPECT_FALSE(Resolution{}.ok());
}

// The plans shown to users must be plans: every ```yaml block of README.md and docs/plans.md
// that is a whole plan (has `name:` and `vms:` at the start of a line) parses.
TEST(PlanDocsTest, EveryPlanInTheDocsParses) {
  int plans = 0;
  for (const char* doc : {"README.md", "docs/plans.md"}) {
    const std::vector<uint8_t> bytes = testing::ReadFileBytes(testing::SourceDir() + "/" + doc);
    ASSERT_FALSE(bytes.empty()) << doc;
    const std::string text(bytes.begin(), bytes.end());
    for (size_t at = text.find("```yaml\n"); at != std::string::npos;
         at = text.find("```yaml\n", at + 1)) {
      const size_t begin = at + 8;
      const size_t end = text.find("```", begin);
      ASSERT_NE(end, std::string::npos) << doc;
      const std::string block = text.substr(begin, end - begin);
      if (block.rfind("name:", 0) != 0 || block.find("\nvms:") == std::string::npos) continue;
      ++plans;
      auto parsed = ParsePlan(block);
      EXPECT_TRUE(parsed.ok()) << doc << ":\n" << block << "\n" << parsed.status().ToString();
    }
  }
  EXPECT_GE(plans, 2);
}

}  // namespace
}  // namespace ferry::plan
