// LibvirtHost's operations over the libvirt C API: domain definitions and power, live
// migration and its steering, dirty-rate measurement, save/restore, block copy, CPU and
// machine-type checks, storage volumes. See libvirt_host.h for the contract and
// docs/hypervisor.md for which libvirt call does what and the libvirt 9.0 behaviour found.
//
// Thread-safety: as LibvirtHost: no state besides the connection; Migrate blocks its caller's
// thread while other threads may watch and steer the same domain through the same object.
#include <algorithm>
#include <chrono>
#include <climits>
#include <pugixml.hpp>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "hypervisor/domain_xml.h"
#include "hypervisor/libvirt_host.h"
#include "hypervisor/libvirt_impl.h"

namespace ferry::hypervisor {
namespace {

constexpr uint64_t kMiB = 1024 * 1024;
// libvirt's largest migration speed (QEMU_DOMAIN_MIG_BANDWIDTH_MAX, MiB/s): "unlimited".
constexpr uint64_t kUnlimitedMiBs = LLONG_MAX / kMiB;
constexpr int kMaxDirtyRateSeconds = 60;
// MeasureDirtyRate polls the stats this often, and gives QEMU this long beyond `seconds`.
constexpr std::chrono::milliseconds kDirtyRatePoll{50};
constexpr std::chrono::seconds kDirtyRateSlack{15};

// A typed-parameter list being built for libvirt; freed on destruction.
class TypedParams {
 public:
  TypedParams() = default;
  ~TypedParams() { virTypedParamsFree(params_, n_); }
  TypedParams(const TypedParams&) = delete;
  TypedParams& operator=(const TypedParams&) = delete;

  bool AddString(const char* name, const std::string& value) {
    return virTypedParamsAddString(&params_, &n_, &max_, name, value.c_str()) == 0;
  }
  bool AddULLong(const char* name, uint64_t value) {
    return virTypedParamsAddULLong(&params_, &n_, &max_, name, value) == 0;
  }
  virTypedParameterPtr get() const { return params_; }
  int size() const { return n_; }

 private:
  virTypedParameterPtr params_ = nullptr;
  int n_ = 0;
  int max_ = 0;
};

// Typed parameters libvirt returned (virDomainGetJobStats); freed on destruction.
struct ReturnedParams {
  virTypedParameterPtr params = nullptr;
  int n = 0;
  ~ReturnedParams() { virTypedParamsFree(params, n); }
  uint64_t ULLong(const char* name) const {
    unsigned long long v = 0;  // NOLINT(runtime/int): libvirt's type
    return virTypedParamsGetULLong(params, n, name, &v) == 1 ? v : 0;
  }
  int Int(const char* name) const {
    int v = 0;
    return virTypedParamsGetInt(params, n, name, &v) == 1 ? v : 0;
  }
};

struct StatsFree {
  void operator()(virDomainStatsRecordPtr* p) const { virDomainStatsRecordListFree(p); }
};
using StatsList = std::unique_ptr<virDomainStatsRecordPtr, StatsFree>;

// bytes/s -> libvirt's MiB/s, rounded up so a small cap does not become "none".
uint64_t MiBsFromBytes(uint64_t bytes_per_s) { return (bytes_per_s + kMiB - 1) / kMiB; }

std::string EscapeXml(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (const char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '\'': out += "&apos;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

Status CheckFormat(const std::string& format, const std::string& what) {
  if (format == "qcow2" || format == "raw") return Status::Ok();
  return Status::InvalidArgument(what + ": format '" + format + "' is not qcow2 or raw");
}

const char* JobTypeName(int type) {
  switch (type) {
    case VIR_DOMAIN_JOB_NONE: return "none";
    case VIR_DOMAIN_JOB_BOUNDED: return "bounded";
    case VIR_DOMAIN_JOB_UNBOUNDED: return "unbounded";
    case VIR_DOMAIN_JOB_COMPLETED: return "completed";
    case VIR_DOMAIN_JOB_FAILED: return "failed";
    case VIR_DOMAIN_JOB_CANCELLED: return "cancelled";
    default: return "unknown";
  }
}

const char* JobOperationName(int op) {
  switch (op) {
    case VIR_DOMAIN_JOB_OPERATION_START: return "start";
    case VIR_DOMAIN_JOB_OPERATION_SAVE: return "save";
    case VIR_DOMAIN_JOB_OPERATION_RESTORE: return "restore";
    case VIR_DOMAIN_JOB_OPERATION_MIGRATION_IN: return "migration-in";
    case VIR_DOMAIN_JOB_OPERATION_MIGRATION_OUT: return "migration-out";
    case VIR_DOMAIN_JOB_OPERATION_SNAPSHOT: return "snapshot";
    case VIR_DOMAIN_JOB_OPERATION_SNAPSHOT_REVERT: return "snapshot-revert";
    case VIR_DOMAIN_JOB_OPERATION_DUMP: return "dump";
    case VIR_DOMAIN_JOB_OPERATION_BACKUP: return "backup";
    case VIR_DOMAIN_JOB_OPERATION_SNAPSHOT_DELETE: return "snapshot-delete";
    default: return "unknown";
  }
}

const char* BlockJobTypeName(int type) {
  switch (type) {
    case VIR_DOMAIN_BLOCK_JOB_TYPE_PULL: return "pull";
    case VIR_DOMAIN_BLOCK_JOB_TYPE_COPY: return "copy";
    case VIR_DOMAIN_BLOCK_JOB_TYPE_COMMIT: return "commit";
    case VIR_DOMAIN_BLOCK_JOB_TYPE_ACTIVE_COMMIT: return "active-commit";
    case VIR_DOMAIN_BLOCK_JOB_TYPE_BACKUP: return "backup";
    default: return "unknown";
  }
}

Result<pugi::xml_document> ParseXml(std::string_view xml, const std::string& what) {
  if (xml.size() > kMaxXmlBytes) {
    return Status::TooLarge(what + ": " + std::to_string(xml.size()) + " bytes of XML");
  }
  pugi::xml_document doc;
  const pugi::xml_parse_result r = doc.load_buffer(xml.data(), xml.size());
  if (!r) return Status::Corrupt(what + ": " + r.description());
  return doc;
}

std::string NodeToString(const pugi::xml_node& node) {
  std::ostringstream out;
  node.print(out, "", pugi::format_raw);
  return out.str();
}

// A domain's <cpu> and where it runs, from a whole domain XML or a bare <cpu> element.
struct CpuInput {
  bool has_cpu = false;
  std::string cpu_xml;
  CpuTarget target;
};

Result<CpuInput> ParseCpuInput(const std::string& xml) {
  FERRY_ASSIGN_OR_RETURN(const pugi::xml_document doc, ParseXml(xml, "CPU XML"));
  const pugi::xml_node root = doc.document_element();
  CpuInput in;
  if (std::string_view(root.name()) == "cpu") {
    in.has_cpu = true;
    in.cpu_xml = NodeToString(root);
    return in;
  }
  if (std::string_view(root.name()) != "domain") {
    return Status::InvalidArgument("CPU XML: root element <" + std::string(root.name()) +
                                   "> is neither <cpu> nor <domain>");
  }
  in.target.virttype = root.attribute("type").as_string();
  const pugi::xml_node type = root.child("os").child("type");
  in.target.arch = type.attribute("arch").as_string();
  in.target.machine = type.attribute("machine").as_string();
  const pugi::xml_node cpu = root.child("cpu");
  if (cpu) {
    in.has_cpu = true;
    in.cpu_xml = NodeToString(cpu);
  }
  return in;
}

const char* OrNull(const std::string& s) { return s.empty() ? nullptr : s.c_str(); }

}  // namespace

// --- Domain definitions and power ----------------------------------------------------------

Result<std::string> LibvirtHost::DomainXml(const std::string& name, bool inactive,
                                           bool migratable) const {
  FERRY_ASSIGN_OR_RETURN(const Domain dom, impl_->LookupDomain(name));
  unsigned int flags = 0;
  if (inactive) flags |= VIR_DOMAIN_XML_INACTIVE;
  if (migratable) flags |= VIR_DOMAIN_XML_MIGRATABLE;
  CString xml(virDomainGetXMLDesc(dom.get(), flags));
  if (!xml) return impl_->Error("virDomainGetXMLDesc " + name);
  return std::string(xml.get());
}

Status LibvirtHost::DefineXml(const std::string& xml) const {
  Domain dom(virDomainDefineXML(impl_->conn, xml.c_str()));
  if (!dom) return impl_->Error("virDomainDefineXML");
  return Status::Ok();
}

Status LibvirtHost::Undefine(const std::string& name) const {
  FERRY_ASSIGN_OR_RETURN(const Domain dom, impl_->LookupDomain(name));
  if (virDomainUndefineFlags(dom.get(), VIR_DOMAIN_UNDEFINE_NVRAM) < 0) {
    return impl_->Error("virDomainUndefineFlags " + name);
  }
  return Status::Ok();
}

Status LibvirtHost::Start(const std::string& name) const {
  FERRY_ASSIGN_OR_RETURN(const Domain dom, impl_->LookupDomain(name));
  if (virDomainCreate(dom.get()) < 0) return impl_->Error("virDomainCreate " + name);
  return Status::Ok();
}

Status LibvirtHost::Destroy(const std::string& name) const {
  FERRY_ASSIGN_OR_RETURN(const Domain dom, impl_->LookupDomain(name));
  if (virDomainDestroy(dom.get()) < 0) return impl_->Error("virDomainDestroy " + name);
  return Status::Ok();
}

Status LibvirtHost::Shutdown(const std::string& name) const {
  FERRY_ASSIGN_OR_RETURN(const Domain dom, impl_->LookupDomain(name));
  if (virDomainShutdown(dom.get()) < 0) return impl_->Error("virDomainShutdown " + name);
  return Status::Ok();
}

Status LibvirtHost::Suspend(const std::string& name) const {
  FERRY_ASSIGN_OR_RETURN(const Domain dom, impl_->LookupDomain(name));
  if (virDomainSuspend(dom.get()) < 0) return impl_->Error("virDomainSuspend " + name);
  return Status::Ok();
}

Status LibvirtHost::Resume(const std::string& name) const {
  FERRY_ASSIGN_OR_RETURN(const Domain dom, impl_->LookupDomain(name));
  if (virDomainResume(dom.get()) < 0) return impl_->Error("virDomainResume " + name);
  return Status::Ok();
}

Result<VmState> LibvirtHost::State(const std::string& name) const {
  FERRY_ASSIGN_OR_RETURN(const Domain dom, impl_->LookupDomain(name));
  int state = 0;
  int reason = 0;
  if (virDomainGetState(dom.get(), &state, &reason, 0) < 0) {
    return impl_->Error("virDomainGetState " + name);
  }
  return StateFromLibvirt(state);
}

// --- Live migration -----------------------------------------------------------------------

Status LibvirtHost::Migrate(const std::string& name, const MigrateParams& p) const {
  if (p.dest_uri.empty()) return Status::InvalidArgument("migrate " + name + ": no dest_uri");
  if (p.max_downtime_ms < 0) {
    return Status::InvalidArgument("migrate " + name + ": max_downtime_ms < 0");
  }
  if (!p.migrate_disks.empty() && !p.non_shared_disk) {
    return Status::InvalidArgument("migrate " + name + ": migrate_disks without non_shared_disk");
  }
  // Its own connection, so that other threads can watch, steer and abort meanwhile.
  FERRY_ASSIGN_OR_RETURN(const Connection side, impl_->OpenSideConnection());
  FERRY_ASSIGN_OR_RETURN(const Domain dom, impl_->LookupDomain(side.get(), name));
  TypedParams params;
  bool added = true;
  if (!p.migration_uri.empty()) added &= params.AddString(VIR_MIGRATE_PARAM_URI, p.migration_uri);
  if (!p.dest_xml.empty()) added &= params.AddString(VIR_MIGRATE_PARAM_DEST_XML, p.dest_xml);
  if (!p.persist_xml.empty()) {
    added &= params.AddString(VIR_MIGRATE_PARAM_PERSIST_XML, p.persist_xml);
  }
  if (!p.dest_name.empty()) added &= params.AddString(VIR_MIGRATE_PARAM_DEST_NAME, p.dest_name);
  if (p.bandwidth > 0) {
    added &= params.AddULLong(VIR_MIGRATE_PARAM_BANDWIDTH, MiBsFromBytes(p.bandwidth));
  }
  for (const std::string& disk : p.migrate_disks) {
    added &= params.AddString(VIR_MIGRATE_PARAM_MIGRATE_DISKS, disk);
  }
  if (!added) return impl_->Error("migrate " + name + ": virTypedParamsAdd");

  unsigned int flags = VIR_MIGRATE_PEER2PEER;
  if (p.live) flags |= VIR_MIGRATE_LIVE;
  if (p.persist_dest) flags |= VIR_MIGRATE_PERSIST_DEST;
  if (p.undefine_source) flags |= VIR_MIGRATE_UNDEFINE_SOURCE;
  if (p.non_shared_disk) flags |= VIR_MIGRATE_NON_SHARED_DISK;
  if (p.auto_converge) flags |= VIR_MIGRATE_AUTO_CONVERGE;
  if (p.allow_postcopy) flags |= VIR_MIGRATE_POSTCOPY;
  if (p.unsafe) flags |= VIR_MIGRATE_UNSAFE;

  // libvirt 9.0 has no migration parameter for the downtime limit; QEMU keeps a limit set
  // before the migration for it.
  if (p.max_downtime_ms > 0) {
    if (virDomainMigrateSetMaxDowntime(dom.get(), static_cast<uint64_t>(p.max_downtime_ms), 0) <
        0) {
      return impl_->Error("virDomainMigrateSetMaxDowntime " + name);
    }
  }
  if (virDomainMigrateToURI3(dom.get(), p.dest_uri.c_str(), params.get(), params.size(), flags) <
      0) {
    return impl_->Error("virDomainMigrateToURI3 " + name + " to " + p.dest_uri);
  }
  return Status::Ok();
}

Result<JobStats> LibvirtHost::GetJobStats(const std::string& name, bool completed) const {
  FERRY_ASSIGN_OR_RETURN(const Domain dom, impl_->LookupDomain(name));
  int type = VIR_DOMAIN_JOB_NONE;
  ReturnedParams r;
  if (virDomainGetJobStats(dom.get(), &type, &r.params, &r.n,
                           completed ? VIR_DOMAIN_JOB_STATS_COMPLETED : 0) < 0) {
    return impl_->Error("virDomainGetJobStats " + name);
  }
  JobStats s;
  s.type = JobTypeName(type);
  s.active = type == VIR_DOMAIN_JOB_BOUNDED || type == VIR_DOMAIN_JOB_UNBOUNDED;
  s.operation = JobOperationName(r.Int(VIR_DOMAIN_JOB_OPERATION));
  s.elapsed_ms = static_cast<int64_t>(r.ULLong(VIR_DOMAIN_JOB_TIME_ELAPSED));
  s.data_total = r.ULLong(VIR_DOMAIN_JOB_DATA_TOTAL);
  s.data_processed = r.ULLong(VIR_DOMAIN_JOB_DATA_PROCESSED);
  s.data_remaining = r.ULLong(VIR_DOMAIN_JOB_DATA_REMAINING);
  s.memory_total = r.ULLong(VIR_DOMAIN_JOB_MEMORY_TOTAL);
  s.memory_processed = r.ULLong(VIR_DOMAIN_JOB_MEMORY_PROCESSED);
  s.memory_remaining = r.ULLong(VIR_DOMAIN_JOB_MEMORY_REMAINING);
  s.memory_bps = r.ULLong(VIR_DOMAIN_JOB_MEMORY_BPS);
  s.memory_dirty_rate =
      r.ULLong(VIR_DOMAIN_JOB_MEMORY_DIRTY_RATE) * r.ULLong(VIR_DOMAIN_JOB_MEMORY_PAGE_SIZE);
  s.memory_iteration = r.ULLong(VIR_DOMAIN_JOB_MEMORY_ITERATION);
  s.memory_postcopy_requests = r.ULLong(VIR_DOMAIN_JOB_MEMORY_POSTCOPY_REQS);
  s.disk_total = r.ULLong(VIR_DOMAIN_JOB_DISK_TOTAL);
  s.disk_processed = r.ULLong(VIR_DOMAIN_JOB_DISK_PROCESSED);
  s.disk_remaining = r.ULLong(VIR_DOMAIN_JOB_DISK_REMAINING);
  s.downtime_ms = static_cast<int64_t>(r.ULLong(VIR_DOMAIN_JOB_DOWNTIME));
  s.downtime_is_expected = s.active && s.downtime_ms > 0;
  s.auto_converge_throttle = r.Int(VIR_DOMAIN_JOB_AUTO_CONVERGE_THROTTLE);
  // The source of a migration in post-copy is paused with reason "post-copy".
  int state = 0;
  int reason = 0;
  if (!completed && virDomainGetState(dom.get(), &state, &reason, 0) == 0) {
    s.postcopy = state == VIR_DOMAIN_PAUSED && (reason == VIR_DOMAIN_PAUSED_POSTCOPY ||
                                                reason == VIR_DOMAIN_PAUSED_POSTCOPY_FAILED);
  }
  if (s.memory_postcopy_requests > 0) s.postcopy = true;
  return s;
}

Status LibvirtHost::AbortJob(const std::string& name) const {
  FERRY_ASSIGN_OR_RETURN(const Domain dom, impl_->LookupDomain(name));
  if (virDomainAbortJob(dom.get()) < 0) return impl_->Error("virDomainAbortJob " + name);
  return Status::Ok();
}

Status LibvirtHost::SetMaxDowntime(const std::string& name, int64_t ms) const {
  if (ms <= 0) {
    return Status::InvalidArgument("set max downtime " + name + ": " + std::to_string(ms) +
                                   " ms is not positive");
  }
  FERRY_ASSIGN_OR_RETURN(const Domain dom, impl_->LookupDomain(name));
  if (virDomainMigrateSetMaxDowntime(dom.get(), static_cast<uint64_t>(ms), 0) < 0) {
    return impl_->Error("virDomainMigrateSetMaxDowntime " + name);
  }
  return Status::Ok();
}

Status LibvirtHost::SetMaxSpeed(const std::string& name, uint64_t bytes_per_s) const {
  FERRY_ASSIGN_OR_RETURN(const Domain dom, impl_->LookupDomain(name));
  const uint64_t mibs = bytes_per_s == 0
                            ? kUnlimitedMiBs
                            : std::min<uint64_t>(MiBsFromBytes(bytes_per_s), kUnlimitedMiBs);
  if (virDomainMigrateSetMaxSpeed(dom.get(), static_cast<unsigned long>(mibs), 0) < 0) {
    return impl_->Error("virDomainMigrateSetMaxSpeed " + name);
  }
  return Status::Ok();
}

Status LibvirtHost::StartPostCopy(const std::string& name) const {
  FERRY_ASSIGN_OR_RETURN(const Domain dom, impl_->LookupDomain(name));
  if (virDomainMigrateStartPostCopy(dom.get(), 0) < 0) {
    return impl_->Error("virDomainMigrateStartPostCopy " + name);
  }
  return Status::Ok();
}

Result<uint64_t> LibvirtHost::MeasureDirtyRate(const std::string& name, int seconds) const {
  if (seconds < 1 || seconds > kMaxDirtyRateSeconds) {
    return Status::InvalidArgument("measure dirty rate " + name + ": " + std::to_string(seconds) +
                                   " s is not in 1.." + std::to_string(kMaxDirtyRateSeconds));
  }
  FERRY_ASSIGN_OR_RETURN(const Domain dom, impl_->LookupDomain(name));
  struct Calc {
    int status = VIR_DOMAIN_DIRTYRATE_UNSTARTED;
    long long start_time = -1;  // NOLINT(runtime/int): libvirt's type
    long long mib_per_s = -1;   // NOLINT(runtime/int)
  };
  virDomainPtr doms[] = {dom.get(), nullptr};
  auto read = [&]() -> Result<Calc> {
    virDomainStatsRecordPtr* records = nullptr;
    const int n = virDomainListGetStats(doms, VIR_DOMAIN_STATS_DIRTYRATE, &records, 0);
    if (n < 0) return impl_->Error("virDomainListGetStats(dirtyrate) " + name);
    StatsList list(records);
    Calc c;
    if (n == 0 || records == nullptr || records[0] == nullptr) return c;
    const virDomainStatsRecordPtr rec = records[0];
    (void)virTypedParamsGetInt(rec->params, rec->nparams, "dirtyrate.calc_status", &c.status);
    (void)virTypedParamsGetLLong(rec->params, rec->nparams, "dirtyrate.calc_start_time",
                                 &c.start_time);
    (void)virTypedParamsGetLLong(rec->params, rec->nparams, "dirtyrate.megabytes_per_second",
                                 &c.mib_per_s);
    return c;
  };
  FERRY_ASSIGN_OR_RETURN(const Calc before, read());
  // Page sampling: the only mode that works under TCG and without KVM's dirty ring.
  if (virDomainStartDirtyRateCalc(dom.get(), seconds, VIR_DOMAIN_DIRTYRATE_MODE_PAGE_SAMPLING) <
      0) {
    return impl_->Error("virDomainStartDirtyRateCalc " + name);
  }
  // QEMU runs the calculation on a thread: the status may still show the previous result for
  // a moment. A result counts once this calculation was seen measuring or has a new start time.
  bool seen_measuring = false;
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::seconds(seconds) + kDirtyRateSlack;
  while (std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(kDirtyRatePoll);
    FERRY_ASSIGN_OR_RETURN(const Calc c, read());
    if (c.status == VIR_DOMAIN_DIRTYRATE_MEASURING) seen_measuring = true;
    if (c.status == VIR_DOMAIN_DIRTYRATE_MEASURED &&
        (seen_measuring || c.start_time != before.start_time)) {
      if (c.mib_per_s < 0) {
        return Status::Io(impl_->uri + ": dirty rate of " + name +
                          ": measured, but no dirtyrate.megabytes_per_second reported");
      }
      return static_cast<uint64_t>(c.mib_per_s) * kMiB;
    }
  }
  return Status::Io(impl_->uri + ": dirty rate of " + name + ": no result within " +
                    std::to_string(seconds + kDirtyRateSlack.count()) + " s");
}

// --- Save / restore -----------------------------------------------------------------------

Status LibvirtHost::Save(const std::string& name, const std::string& path) const {
  if (path.empty()) return Status::InvalidArgument("save " + name + ": no path");
  FERRY_ASSIGN_OR_RETURN(const Connection side, impl_->OpenSideConnection());
  FERRY_ASSIGN_OR_RETURN(const Domain dom, impl_->LookupDomain(side.get(), name));
  if (virDomainSave(dom.get(), path.c_str()) < 0) {
    return impl_->Error("virDomainSave " + name + " to " + path);
  }
  return Status::Ok();
}

Status LibvirtHost::Restore(const std::string& path, const std::string& dest_xml) const {
  if (path.empty()) return Status::InvalidArgument("restore: no path");
  FERRY_ASSIGN_OR_RETURN(const Connection side, impl_->OpenSideConnection());
  if (virDomainRestoreFlags(side.get(), path.c_str(), OrNull(dest_xml), 0) < 0) {
    return impl_->Error("virDomainRestoreFlags " + path);
  }
  return Status::Ok();
}

// --- Block copy ---------------------------------------------------------------------------

Status LibvirtHost::BlockCopy(const std::string& name, const BlockCopyParams& p) const {
  const std::string what = "block copy " + name + " " + p.disk;
  if (p.disk.empty()) return Status::InvalidArgument("block copy " + name + ": no disk");
  if (p.dest_path.empty() || p.dest_path.front() != '/') {
    return Status::InvalidArgument(what + ": dest_path '" + p.dest_path + "' is not absolute");
  }
  FERRY_TRY(CheckFormat(p.dest_format, what));
  FERRY_ASSIGN_OR_RETURN(const Domain dom, impl_->LookupDomain(name));
  const std::string dest_xml = "<disk type='file'><source file='" + EscapeXml(p.dest_path) +
                               "'/><driver type='" + p.dest_format + "'/></disk>";
  TypedParams params;
  if (p.bandwidth > 0 && !params.AddULLong(VIR_DOMAIN_BLOCK_COPY_BANDWIDTH, p.bandwidth)) {
    return impl_->Error(what + ": virTypedParamsAdd");
  }
  // TRANSIENT_JOB: libvirt 9.0 refuses a block copy on a persistent domain without it.
  unsigned int flags = VIR_DOMAIN_BLOCK_COPY_TRANSIENT_JOB;
  if (p.reuse_existing) flags |= VIR_DOMAIN_BLOCK_COPY_REUSE_EXT;
  if (p.synchronous_writes) flags |= VIR_DOMAIN_BLOCK_COPY_SYNCHRONOUS_WRITES;
  if (virDomainBlockCopy(dom.get(), p.disk.c_str(), dest_xml.c_str(), params.get(), params.size(),
                         flags) < 0) {
    return impl_->Error("virDomainBlockCopy " + name + " " + p.disk + " to " + p.dest_path);
  }
  return Status::Ok();
}

Result<BlockJob> LibvirtHost::GetBlockJob(const std::string& name, const std::string& disk) const {
  FERRY_ASSIGN_OR_RETURN(const Domain dom, impl_->LookupDomain(name));
  virDomainBlockJobInfo info{};
  const int rc = virDomainGetBlockJobInfo(dom.get(), disk.c_str(), &info, 0);
  if (rc < 0) return impl_->Error("virDomainGetBlockJobInfo " + name + " " + disk);
  BlockJob job;
  if (rc == 0) return job;  // no job on that disk
  job.exists = true;
  job.type = BlockJobTypeName(info.type);
  job.cur = info.cur;
  job.end = info.end;
  if ((info.type == VIR_DOMAIN_BLOCK_JOB_TYPE_COPY ||
       info.type == VIR_DOMAIN_BLOCK_JOB_TYPE_ACTIVE_COMMIT) &&
      info.end > 0 && info.cur == info.end) {
    // cur == end is what virsh checks; the live XML's <mirror ready='yes'> is libvirt's own
    // record of QEMU's BLOCK_JOB_READY event, which a pivot requires.
    CString xml(virDomainGetXMLDesc(dom.get(), 0));
    if (!xml) return impl_->Error("virDomainGetXMLDesc " + name);
    FERRY_ASSIGN_OR_RETURN(const pugi::xml_document doc,
                           ParseXml(xml.get(), impl_->uri + ": domain XML of " + name));
    for (const pugi::xml_node d : doc.child("domain").child("devices").children("disk")) {
      if (disk == d.child("target").attribute("dev").as_string()) {
        job.ready = std::string_view(d.child("mirror").attribute("ready").as_string()) == "yes";
        break;
      }
    }
  }
  return job;
}

Status LibvirtHost::BlockJobAbort(const std::string& name, const std::string& disk,
                                  bool pivot) const {
  FERRY_ASSIGN_OR_RETURN(const Domain dom, impl_->LookupDomain(name));
  if (virDomainBlockJobAbort(dom.get(), disk.c_str(),
                             pivot ? VIR_DOMAIN_BLOCK_JOB_ABORT_PIVOT : 0) < 0) {
    return impl_->Error(std::string("virDomainBlockJobAbort") + (pivot ? "(pivot) " : " ") + name +
                        " " + disk);
  }
  return Status::Ok();
}

// --- Validation and storage -------------------------------------------------------------

Result<CpuCheck> LibvirtHost::CompareCpu(const std::string& xml, const CpuTarget& target) const {
  FERRY_ASSIGN_OR_RETURN(CpuInput in, ParseCpuInput(xml));
  CpuCheck check;
  if (!in.has_cpu) {
    check.result = CpuCompatibility::kIdentical;
    check.message = "no <cpu> element: the guest gets the hypervisor's default CPU model";
    return check;
  }
  if (!target.virttype.empty()) in.target.virttype = target.virttype;
  if (!target.arch.empty()) in.target.arch = target.arch;
  if (!target.machine.empty()) in.target.machine = target.machine;
  virResetLastError();
  const int rc = virConnectCompareHypervisorCPU(
      impl_->conn, nullptr, OrNull(in.target.arch), OrNull(in.target.machine),
      OrNull(in.target.virttype), in.cpu_xml.c_str(), VIR_CONNECT_COMPARE_CPU_FAIL_INCOMPATIBLE);
  switch (rc) {
    case VIR_CPU_COMPARE_IDENTICAL: check.result = CpuCompatibility::kIdentical; return check;
    case VIR_CPU_COMPARE_SUPERSET: check.result = CpuCompatibility::kSuperset; return check;
    case VIR_CPU_COMPARE_INCOMPATIBLE:
      check.result = CpuCompatibility::kIncompatible;
      check.message = "incompatible";
      return check;
    default: break;
  }
  if (virGetLastErrorCode() == VIR_ERR_CPU_INCOMPATIBLE) {
    check.result = CpuCompatibility::kIncompatible;
    check.message = LastError();
    return check;
  }
  return impl_->Error("virConnectCompareHypervisorCPU");
}

Result<std::vector<std::string>> LibvirtHost::MachineTypes(const std::string& arch) const {
  CString caps(virConnectGetCapabilities(impl_->conn));
  if (!caps) return impl_->Error("virConnectGetCapabilities");
  FERRY_ASSIGN_OR_RETURN(const pugi::xml_document doc,
                         ParseXml(caps.get(), impl_->uri + ": capabilities XML"));
  std::set<std::string> names;
  bool arch_found = false;
  for (const pugi::xml_node guest : doc.child("capabilities").children("guest")) {
    const pugi::xml_node a = guest.child("arch");
    if (arch != a.attribute("name").as_string()) continue;
    arch_found = true;
    auto add = [&](const pugi::xml_node parent) {
      for (const pugi::xml_node m : parent.children("machine")) {
        const std::string name = m.text().as_string();
        if (!name.empty()) names.insert(name);
      }
    };
    add(a);
    for (const pugi::xml_node d : a.children("domain")) add(d);
  }
  if (!arch_found) return Status::NotFound(impl_->uri + ": no guest arch '" + arch + "'");
  return std::vector<std::string>(names.begin(), names.end());
}

Result<bool> LibvirtHost::SupportsUefi(const std::string& arch, const std::string& machine) const {
  CString xml(virConnectGetDomainCapabilities(impl_->conn, nullptr, OrNull(arch), OrNull(machine),
                                              nullptr, 0));
  if (!xml) {
    return impl_->Error("virConnectGetDomainCapabilities " + arch + " " + machine);
  }
  FERRY_ASSIGN_OR_RETURN(const pugi::xml_document doc,
                         ParseXml(xml.get(), impl_->uri + ": domain capabilities XML"));
  const pugi::xml_node os = doc.child("domainCapabilities").child("os");
  // Firmware auto-selection lists "efi" when a UEFI firmware descriptor is installed;
  // otherwise a pflash loader with at least one known firmware image path.
  for (const pugi::xml_node e : os.children("enum")) {
    if (std::string_view(e.attribute("name").as_string()) != "firmware") continue;
    for (const pugi::xml_node v : e.children("value")) {
      if (std::string_view(v.text().as_string()) == "efi") return true;
    }
  }
  const pugi::xml_node loader = os.child("loader");
  if (std::string_view(loader.attribute("supported").as_string()) != "yes") return false;
  bool pflash = false;
  for (const pugi::xml_node e : loader.children("enum")) {
    if (std::string_view(e.attribute("name").as_string()) != "type") continue;
    for (const pugi::xml_node v : e.children("value")) {
      if (std::string_view(v.text().as_string()) == "pflash") pflash = true;
    }
  }
  return pflash && loader.child("value");
}

Result<std::string> LibvirtHost::CreateVolume(const std::string& pool_name, const std::string& name,
                                              uint64_t capacity, const std::string& format) const {
  const std::string what = "create volume " + pool_name + "/" + name;
  if (name.empty() || name == "." || name == ".." || name.find('/') != std::string::npos) {
    return Status::InvalidArgument(what + ": not a plain file name");
  }
  if (capacity == 0) return Status::InvalidArgument(what + ": capacity 0");
  FERRY_TRY(CheckFormat(format, what));
  Pool pool(virStoragePoolLookupByName(impl_->conn, pool_name.c_str()));
  if (!pool) return impl_->Error("virStoragePoolLookupByName " + pool_name);
  // Another host may have made files in a shared pool since this daemon last looked.
  if (virStoragePoolRefresh(pool.get(), 0) < 0) {
    return impl_->Error("virStoragePoolRefresh " + pool_name);
  }
  Vol existing(virStorageVolLookupByName(pool.get(), name.c_str()));
  if (existing) {
    return Status::AlreadyExists(impl_->uri + ": " + what + ": the pool has a volume of that name");
  }
  virResetLastError();
  const std::string xml = "<volume><name>" + EscapeXml(name) + "</name><capacity unit='bytes'>" +
                          std::to_string(capacity) + "</capacity><target><format type='" + format +
                          "'/></target></volume>";
  Vol vol(virStorageVolCreateXML(pool.get(), xml.c_str(), 0));
  if (!vol) return impl_->Error("virStorageVolCreateXML " + pool_name + "/" + name);
  CString path(virStorageVolGetPath(vol.get()));
  if (!path) return impl_->Error("virStorageVolGetPath " + pool_name + "/" + name);
  return std::string(path.get());
}

Status LibvirtHost::DeleteVolume(const std::string& path) const {
  Vol vol(virStorageVolLookupByPath(impl_->conn, path.c_str()));
  if (!vol && virGetLastErrorCode() == VIR_ERR_NO_STORAGE_VOL) {
    // The file may be newer than the pool's last refresh (another host made it).
    FERRY_ASSIGN_OR_RETURN(const std::vector<PoolInfo> pools, impl_->Pools());
    for (const PoolInfo& info : pools) {
      if (!info.active || !InFolder(path, info.path)) continue;
      Pool pool(virStoragePoolLookupByName(impl_->conn, info.name.c_str()));
      if (!pool || virStoragePoolRefresh(pool.get(), 0) < 0) {
        return impl_->Error("virStoragePoolRefresh " + info.name);
      }
    }
    vol.reset(virStorageVolLookupByPath(impl_->conn, path.c_str()));
  }
  if (!vol) return impl_->Error("virStorageVolLookupByPath " + path);
  if (virStorageVolDelete(vol.get(), 0) < 0) return impl_->Error("virStorageVolDelete " + path);
  return Status::Ok();
}

Status LibvirtHost::RefreshPool(const std::string& pool_name) const {
  Pool pool(virStoragePoolLookupByName(impl_->conn, pool_name.c_str()));
  if (!pool) return impl_->Error("virStoragePoolLookupByName " + pool_name);
  if (virStoragePoolRefresh(pool.get(), 0) < 0) {
    return impl_->Error("virStoragePoolRefresh " + pool_name);
  }
  return Status::Ok();
}

}  // namespace ferry::hypervisor
