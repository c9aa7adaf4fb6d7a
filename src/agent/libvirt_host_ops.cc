// HostOps over hypervisor::LibvirtHost, with reconnection (see host_ops.h).
#include <memory>
#include <mutex>
#include <utility>

#include "agent/host_ops.h"
#include "hypervisor/libvirt_host.h"

namespace ferry::agent {

namespace {

using hypervisor::LibvirtHost;

class LibvirtHostOps final : public HostOps {
 public:
  explicit LibvirtHostOps(std::string uri) : uri_(std::move(uri)) {}

  Status Connect() override {
    Result<std::shared_ptr<LibvirtHost>> c = Connection();
    return c.ok() ? Status::Ok() : c.status();
  }
  Result<hypervisor::Inventory> Inventory() override {
    return Call([](const LibvirtHost& h) { return h.Inventory(); });
  }
  Result<hypervisor::VmInfo> GetVm(const std::string& name) override {
    return Call([&](const LibvirtHost& h) { return h.GetVm(name); });
  }
  Result<std::string> DomainXml(const std::string& name, bool inactive, bool migratable) override {
    return Call([&](const LibvirtHost& h) { return h.DomainXml(name, inactive, migratable); });
  }
  Result<hypervisor::CpuCheck> CompareCpu(const std::string& cpu_xml,
                                          const hypervisor::CpuTarget& target) override {
    return Call([&](const LibvirtHost& h) { return h.CompareCpu(cpu_xml, target); });
  }
  Result<std::vector<std::string>> MachineTypes(const std::string& arch) override {
    return Call([&](const LibvirtHost& h) { return h.MachineTypes(arch); });
  }
  Result<bool> SupportsUefi(const std::string& arch, const std::string& machine) override {
    return Call([&](const LibvirtHost& h) { return h.SupportsUefi(arch, machine); });
  }

 private:
  // The current connection, opened if there is none. Shared so that a request still using a
  // connection another request dropped keeps it alive until it returns.
  Result<std::shared_ptr<LibvirtHost>> Connection() {
    std::lock_guard<std::mutex> lock(mu_);
    if (conn_ == nullptr) {
      Result<std::unique_ptr<LibvirtHost>> c = LibvirtHost::Connect(uri_);
      if (!c.ok()) return std::move(c).status();
      conn_ = std::move(*c);
    }
    return conn_;
  }

  void Drop(const std::shared_ptr<LibvirtHost>& broken) {
    std::lock_guard<std::mutex> lock(mu_);
    if (conn_ == broken) conn_.reset();
  }

  template <typename F>
  auto Call(F f) -> decltype(f(std::declval<const LibvirtHost&>())) {
    constexpr int kAttempts = 2;
    for (int attempt = 1;; ++attempt) {
      Result<std::shared_ptr<LibvirtHost>> c = Connection();
      if (!c.ok()) return std::move(c).status();
      auto r = f(**c);
      if (r.ok() || r.status().code() != ErrorCode::kIo || attempt == kAttempts) return r;
      Drop(*c);
    }
  }

  const std::string uri_;
  std::mutex mu_;
  std::shared_ptr<LibvirtHost> conn_;  // GUARDED_BY(mu_)
};

}  // namespace

std::unique_ptr<HostOps> NewLibvirtHostOps(std::string uri) {
  return std::make_unique<LibvirtHostOps>(std::move(uri));
}

}  // namespace ferry::agent
