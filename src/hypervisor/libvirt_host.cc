// LibvirtHost over the libvirt C API (see libvirt_host.h, docs/hypervisor.md).
#include "hypervisor/libvirt_host.h"

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <mutex>
#include <utility>
#include <vector>

#include "hypervisor/domain_xml.h"
#include "hypervisor/libvirt_impl.h"

namespace ferry::hypervisor {
namespace {

constexpr uint64_t kKiB = 1024;

void IgnoreLibvirtError(void* /*data*/, virErrorPtr /*error*/) {}

Status InitLibvirtOnce() {
  static std::once_flag once;
  static int init_rc = 0;
  std::call_once(once, [] {
    init_rc = virInitialize();
    virSetErrorFunc(nullptr, IgnoreLibvirtError);
  });
  if (init_rc < 0) return Status::Internal("libvirt: virInitialize failed");
  return Status::Ok();
}

}  // namespace

std::string LastError() {
  const char* m = virGetLastErrorMessage();
  return m != nullptr ? m : "unknown libvirt error";
}

Status LibvirtHost::Impl::Error(const std::string& what) const {
  const std::string message = uri + ": " + what + ": " + LastError();
  switch (virGetLastErrorCode()) {
    case VIR_ERR_NO_DOMAIN:
    case VIR_ERR_NO_STORAGE_POOL:
    case VIR_ERR_NO_STORAGE_VOL:
    case VIR_ERR_NO_NETWORK:
      return Status::NotFound(message);
    case VIR_ERR_OPERATION_ABORTED:
      return Status::Cancelled(message);
    case VIR_ERR_STORAGE_VOL_EXIST:
    case VIR_ERR_DOM_EXIST:
      return Status::AlreadyExists(message);
    default:
      return Status::Io(message);
  }
}

VmState StateFromLibvirt(int s) {
  switch (s) {
    case VIR_DOMAIN_NOSTATE: return VmState::kNoState;
    case VIR_DOMAIN_RUNNING: return VmState::kRunning;
    case VIR_DOMAIN_BLOCKED: return VmState::kBlocked;
    case VIR_DOMAIN_PAUSED: return VmState::kPaused;
    case VIR_DOMAIN_SHUTDOWN: return VmState::kShutdown;
    case VIR_DOMAIN_SHUTOFF: return VmState::kShutoff;
    case VIR_DOMAIN_CRASHED: return VmState::kCrashed;
    case VIR_DOMAIN_PMSUSPENDED: return VmState::kPmSuspended;
    default: return VmState::kUnknown;
  }
}

bool InFolder(const std::string& path, std::string dir) {
  if (dir.empty()) return false;
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  return path.size() > dir.size() && path.compare(0, dir.size(), dir) == 0 &&
         path[dir.size()] == '/';
}

namespace {

std::string Lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

}  // namespace

Result<HostFacts> LibvirtHost::Impl::Facts() const {
  CString caps(virConnectGetCapabilities(conn));
  if (!caps) return Error("virConnectGetCapabilities");
  FERRY_ASSIGN_OR_RETURN(HostFacts f, ParseCapabilitiesXml(caps.get()).WithContext(uri));
  f.uri = uri;
  CString hostname(virConnectGetHostname(conn));
  if (!hostname) return Error("virConnectGetHostname");
  f.hostname = hostname.get();

  virNodeInfo node{};
  if (virNodeGetInfo(conn, &node) < 0) return Error("virNodeGetInfo");
  f.cpus = static_cast<int>(node.cpus);
  f.memory_bytes = static_cast<uint64_t>(node.memory) * kKiB;  // virNodeInfo.memory is KiB
  if (f.cpu_arch.empty()) f.cpu_arch = node.model;

  virResetLastError();
  const unsigned long long free_bytes = virNodeGetFreeMemory(conn);
  if (free_bytes == 0 && virGetLastErrorCode() != VIR_ERR_OK) {
    return Error("virNodeGetFreeMemory");
  }
  f.free_memory_bytes = free_bytes;

  unsigned long lib_version = 0;
  if (virConnectGetLibVersion(conn, &lib_version) < 0) return Error("virConnectGetLibVersion");
  // major * 1,000,000 + minor * 1,000 + release
  f.libvirt_version = std::to_string(lib_version / 1000000) + "." +
                      std::to_string(lib_version / 1000 % 1000) + "." +
                      std::to_string(lib_version % 1000);
  const char* type = virConnectGetType(conn);  // static string, not freed
  if (type == nullptr) return Error("virConnectGetType");
  f.hypervisor = Lower(type);
  return f;
}

Result<std::vector<PoolInfo>> LibvirtHost::Impl::Pools() const {
  virStoragePoolPtr* list = nullptr;
  const int n = virConnectListAllStoragePools(conn, &list, 0);
  if (n < 0) return Error("virConnectListAllStoragePools");
  std::vector<Pool> pools = TakeList<Pool>(list, n);
  std::vector<PoolInfo> out;
  for (const Pool& pool : pools) {
    const char* name = virStoragePoolGetName(pool.get());
    const std::string pool_name = name != nullptr ? name : "?";
    CString xml(virStoragePoolGetXMLDesc(pool.get(), 0));
    if (!xml) return Error("pool " + pool_name + ": virStoragePoolGetXMLDesc");
    FERRY_ASSIGN_OR_RETURN(PoolInfo p, ParsePoolXml(xml.get()).WithContext(uri));
    virStoragePoolInfo info{};
    if (virStoragePoolGetInfo(pool.get(), &info) < 0) {
      return Error("pool " + pool_name + ": virStoragePoolGetInfo");
    }
    p.active = info.state == VIR_STORAGE_POOL_RUNNING || info.state == VIR_STORAGE_POOL_DEGRADED;
    p.capacity_bytes = info.capacity;
    p.allocation_bytes = info.allocation;
    p.available_bytes = info.available;
    out.push_back(std::move(p));
  }
  std::sort(out.begin(), out.end(),
            [](const PoolInfo& a, const PoolInfo& b) { return a.name < b.name; });
  return out;
}

Result<std::vector<NetworkInfo>> LibvirtHost::Impl::Networks() const {
  virNetworkPtr* list = nullptr;
  const int n = virConnectListAllNetworks(conn, &list, 0);
  if (n < 0) return Error("virConnectListAllNetworks");
  std::vector<Network> nets = TakeList<Network>(list, n);
  std::vector<NetworkInfo> out;
  for (const Network& net : nets) {
    const char* name = virNetworkGetName(net.get());
    const std::string net_name = name != nullptr ? name : "?";
    CString xml(virNetworkGetXMLDesc(net.get(), 0));
    if (!xml) return Error("network " + net_name + ": virNetworkGetXMLDesc");
    FERRY_ASSIGN_OR_RETURN(NetworkInfo info, ParseNetworkXml(xml.get()).WithContext(uri));
    const int active = virNetworkIsActive(net.get());
    if (active < 0) return Error("network " + net_name + ": virNetworkIsActive");
    info.active = active == 1;
    out.push_back(std::move(info));
  }
  std::sort(out.begin(), out.end(),
            [](const NetworkInfo& a, const NetworkInfo& b) { return a.name < b.name; });
  return out;
}

// Capacity/allocation from the storage volume behind the disk, and its pool. A disk that is
// not a volume libvirt knows (e.g. a file in no pool, or a pool not refreshed since another
// host created it) keeps sizes 0; its pool is then the one whose folder holds the path.
void LibvirtHost::Impl::FillDiskSize(VmDisk& disk, const std::vector<PoolInfo>& pools) const {
  Vol vol;
  if (!disk.pool.empty() && !disk.volume.empty()) {
    Pool pool(virStoragePoolLookupByName(conn, disk.pool.c_str()));
    if (pool) vol.reset(virStorageVolLookupByName(pool.get(), disk.volume.c_str()));
    if (vol && disk.source_path.empty()) {
      CString path(virStorageVolGetPath(vol.get()));
      if (path) disk.source_path = path.get();
    }
  } else if (!disk.source_path.empty()) {
    vol.reset(virStorageVolLookupByPath(conn, disk.source_path.c_str()));
    if (vol) {
      Pool pool(virStoragePoolLookupByVolume(vol.get()));
      const char* pool_name = pool ? virStoragePoolGetName(pool.get()) : nullptr;
      if (pool_name != nullptr) disk.pool = pool_name;
      const char* vol_name = virStorageVolGetName(vol.get());
      if (vol_name != nullptr) disk.volume = vol_name;
    }
  }
  if (vol) {
    virStorageVolInfo info{};
    if (virStorageVolGetInfo(vol.get(), &info) == 0) {
      disk.capacity_bytes = info.capacity;
      disk.allocation_bytes = info.allocation;
    }
  }
  virResetLastError();  // lookups that found nothing are not errors here
  if (disk.pool.empty() && !disk.source_path.empty()) {
    for (const PoolInfo& p : pools) {
      if (InFolder(disk.source_path, p.path)) {
        disk.pool = p.name;
        break;
      }
    }
  }
}

Result<VmInfo> LibvirtHost::Impl::DescribeDomain(virDomainPtr dom,
                                                 const std::vector<PoolInfo>& pools) const {
  const char* name = virDomainGetName(dom);
  const std::string dom_name = name != nullptr ? name : "?";
  CString xml(virDomainGetXMLDesc(dom, 0));
  if (!xml) return Error("domain " + dom_name + ": virDomainGetXMLDesc");
  FERRY_ASSIGN_OR_RETURN(VmInfo vm, ParseDomainXml(xml.get()).WithContext(uri));
  if (virDomainIsActive(dom) == 1) {
    // Live XML shows NICs on bridge-mode networks as plain bridges; the configured network
    // name is what the agent and validation need.
    CString config_xml(virDomainGetXMLDesc(dom, VIR_DOMAIN_XML_INACTIVE));
    if (!config_xml) return Error("domain " + dom_name + ": virDomainGetXMLDesc(inactive)");
    FERRY_ASSIGN_OR_RETURN(const VmInfo config,
                           ParseDomainXml(config_xml.get()).WithContext(uri + ": inactive"));
    MergeConfiguredNics(vm, config);
  }
  int state = 0;
  int reason = 0;
  if (virDomainGetState(dom, &state, &reason, 0) < 0) {
    return Error("domain " + dom_name + ": virDomainGetState");
  }
  vm.state = StateFromLibvirt(state);
  const int persistent = virDomainIsPersistent(dom);
  if (persistent < 0) return Error("domain " + dom_name + ": virDomainIsPersistent");
  vm.persistent = persistent == 1;
  for (VmDisk& disk : vm.disks) FillDiskSize(disk, pools);
  return vm;
}

LibvirtHost::LibvirtHost(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
LibvirtHost::~LibvirtHost() = default;

const std::string& LibvirtHost::uri() const { return impl_->uri; }

Result<std::unique_ptr<LibvirtHost>> LibvirtHost::Connect(const std::string& uri) {
  FERRY_TRY(InitLibvirtOnce());
  auto impl = std::make_unique<Impl>();
  impl->uri = uri;
  impl->conn = virConnectOpen(uri.c_str());
  if (impl->conn == nullptr) return impl->Error("virConnectOpen");
  return std::make_unique<LibvirtHost>(std::move(impl));
}

Result<HostFacts> LibvirtHost::Facts() const { return impl_->Facts(); }

Result<Domain> LibvirtHost::Impl::LookupDomain(const std::string& name) const {
  return LookupDomain(conn, name);
}

Result<Domain> LibvirtHost::Impl::LookupDomain(virConnectPtr c, const std::string& name) const {
  Domain dom(virDomainLookupByName(c, name.c_str()));
  if (!dom) {
    if (virGetLastErrorCode() == VIR_ERR_NO_DOMAIN) {
      return Status::NotFound(uri + ": no VM named '" + name + "'");
    }
    return Error("virDomainLookupByName " + name);
  }
  return dom;
}

Result<Connection> LibvirtHost::Impl::OpenSideConnection() const {
  Connection c(virConnectOpen(uri.c_str()));
  if (!c) return Error("virConnectOpen (side connection)");
  return c;
}

Result<VmInfo> LibvirtHost::GetVm(const std::string& name) const {
  FERRY_ASSIGN_OR_RETURN(const Domain dom, impl_->LookupDomain(name));
  FERRY_ASSIGN_OR_RETURN(const std::vector<PoolInfo> pools, impl_->Pools());
  return impl_->DescribeDomain(dom.get(), pools);
}

Result<hypervisor::Inventory> LibvirtHost::Inventory() const {
  hypervisor::Inventory inv;
  FERRY_ASSIGN_OR_RETURN(inv.host, impl_->Facts());
  FERRY_ASSIGN_OR_RETURN(inv.pools, impl_->Pools());
  FERRY_ASSIGN_OR_RETURN(inv.networks, impl_->Networks());
  virDomainPtr* list = nullptr;
  const int n = virConnectListAllDomains(impl_->conn, &list, 0);
  if (n < 0) return impl_->Error("virConnectListAllDomains");
  const std::vector<Domain> doms = TakeList<Domain>(list, n);
  for (const Domain& dom : doms) {
    virResetLastError();
    auto vm = impl_->DescribeDomain(dom.get(), inv.pools);
    if (!vm.ok()) {
      // A domain undefined between the listing and the lookup is not an error.
      if (virGetLastErrorCode() == VIR_ERR_NO_DOMAIN) continue;
      return std::move(vm).status();
    }
    inv.vms.push_back(std::move(*vm));
  }
  std::sort(inv.vms.begin(), inv.vms.end(),
            [](const VmInfo& a, const VmInfo& b) { return a.name < b.name; });
  return inv;
}

}  // namespace ferry::hypervisor
