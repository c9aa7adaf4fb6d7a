// PRIVATE to src/hypervisor: LibvirtHost's Impl (the libvirt connection) and RAII holders for
// the objects libvirt hands out, shared by libvirt_host.cc (the read side) and
// libvirt_operations.cc (the operations). Include it only from this module's .cc files: it is
// the one header that names libvirt types, and no other module may see them.
//
// Thread-safety: as LibvirtHost (libvirt_host.h): Impl holds only the connection, which libvirt
// makes thread-safe, and its last-error slot is thread-local.
#pragma once

#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "hypervisor/inventory.h"
#include "hypervisor/libvirt_host.h"

namespace ferry::hypervisor {

struct DomainFree {
  void operator()(virDomainPtr p) const { virDomainFree(p); }
};
struct PoolFree {
  void operator()(virStoragePoolPtr p) const { virStoragePoolFree(p); }
};
struct VolFree {
  void operator()(virStorageVolPtr p) const { virStorageVolFree(p); }
};
struct NetworkFree {
  void operator()(virNetworkPtr p) const { virNetworkFree(p); }
};
struct CharFree {
  void operator()(char* p) const { free(p); }  // libvirt strings are malloc'd
};
using Domain = std::unique_ptr<virDomain, DomainFree>;
using Pool = std::unique_ptr<virStoragePool, PoolFree>;
using Vol = std::unique_ptr<virStorageVol, VolFree>;
using Network = std::unique_ptr<virNetwork, NetworkFree>;
struct ConnectionClose {
  void operator()(virConnectPtr p) const { virConnectClose(p); }
};
using CString = std::unique_ptr<char, CharFree>;
using Connection = std::unique_ptr<virConnect, ConnectionClose>;

// Takes ownership of an array virConnectListAll* returned (the array itself and each element).
template <typename Ptr, typename T>
std::vector<Ptr> TakeList(T** list, int n) {
  std::vector<Ptr> out;
  if (list == nullptr || n <= 0) {
    free(list);
    return out;
  }
  out.reserve(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) out.emplace_back(list[i]);
  free(list);
  return out;
}

// This thread's last libvirt error message.
std::string LastError();
VmState StateFromLibvirt(int state);
// True if `path` lies inside folder `dir` (both absolute, no trailing slash on `dir` needed).
bool InFolder(const std::string& path, std::string dir);

struct LibvirtHost::Impl {
  std::string uri;
  virConnectPtr conn = nullptr;

  ~Impl() {
    if (conn != nullptr) virConnectClose(conn);
  }

  // "URI: what: libvirt's message", the code from this thread's last libvirt error: kNotFound
  // for a missing domain, pool, volume or network, kCancelled for an aborted operation,
  // kAlreadyExists for a volume or domain that exists, else kIo.
  Status Error(const std::string& what) const;

  // The domain by name; kNotFound "URI: no VM named 'NAME'".
  Result<Domain> LookupDomain(const std::string& name) const;
  Result<Domain> LookupDomain(virConnectPtr c, const std::string& name) const;

  // A second connection to the same daemon, for calls that block for long (migration, save,
  // restore). Found in the lab: while one thread waits in virDomainMigrateToURI3 on a
  // connection, libvirt 9.0's client does not get other threads' calls on that connection
  // answered (virDomainGetState, virDomainAbortJob wait until the migration ends), which would
  // make steering and aborting a migration impossible.
  Result<Connection> OpenSideConnection() const;

  Result<HostFacts> Facts() const;
  Result<std::vector<PoolInfo>> Pools() const;
  Result<std::vector<NetworkInfo>> Networks() const;
  Result<VmInfo> DescribeDomain(virDomainPtr dom, const std::vector<PoolInfo>& pools) const;
  void FillDiskSize(VmDisk& disk, const std::vector<PoolInfo>& pools) const;
};

}  // namespace ferry::hypervisor
