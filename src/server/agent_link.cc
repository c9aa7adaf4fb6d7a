#include "server/agent_link.h"

#include "api/agent_client.h"

namespace ferry::server {

namespace {
Status NotSupportedByLink(const std::string& call) {
  return Status::Unsupported("this agent link does not support " + call);
}
}  // namespace

Result<api::AgentJob> AgentLink::ProceedJob(const std::string&) {
  return NotSupportedByLink("ProceedJob");
}
Result<std::vector<api::ShareInfo>> AgentLink::ListShares() {
  return NotSupportedByLink("ListShares");
}
Result<api::ShareListing> AgentLink::ListShareVms(const std::string&) {
  return NotSupportedByLink("ListShareVms");
}
Result<sources::VmDescription> AgentLink::DescribeVm(const std::string&) {
  return NotSupportedByLink("DescribeVm");
}
Result<agent::ExportInfo> AgentLink::GetExport(const std::string&) {
  return NotSupportedByLink("GetExport");
}
Result<agent::ExportInfo> AgentLink::CloseExport(const std::string&, bool) {
  return NotSupportedByLink("CloseExport");
}
Result<std::vector<std::string>> AgentLink::ListPoolFiles(const std::string&) {
  return NotSupportedByLink("ListPoolFiles");
}

namespace {

class HttpAgentLink : public AgentLink {
 public:
  HttpAgentLink(const std::string& url, const std::string& token, int64_t timeout_ms)
      : client_(url, token,
                api::HttpClientOptions{.connect_timeout_ms = std::min<int64_t>(timeout_ms, 3000),
                                       .read_timeout_ms = timeout_ms}) {}

  Result<api::AgentHealth> Health() override { return client_.Health(); }
  Result<hypervisor::Inventory> Inventory() override {
    FERRY_ASSIGN_OR_RETURN(api::AgentInventory inv, client_.Inventory());
    return std::move(inv.inventory);
  }
  Result<api::VmXml> GetVmXml(const std::string& vm) override { return client_.GetVmXml(vm); }
  Result<hypervisor::CpuCheck> CheckCpu(const std::string& cpu_xml,
                                        const hypervisor::CpuTarget& target) override {
    return client_.CheckCpu(cpu_xml, target);
  }
  Result<api::PlatformCheck> CheckPlatform(const api::PlatformCheckRequest& request) override {
    return client_.CheckPlatform(request);
  }
  Result<api::AgentJob> StartJob(const agent::MigrationJobSpec& spec) override {
    return client_.StartJob(spec);
  }
  Result<api::AgentJob> GetJob(const std::string& id) override { return client_.GetJob(id); }
  Result<api::AgentJob> CancelJob(const std::string& id) override { return client_.CancelJob(id); }
  Result<std::vector<api::ShareInfo>> ListShares() override { return client_.ListShares(); }
  Result<api::ShareListing> ListShareVms(const std::string& share) override {
    return client_.ListShareVms(share);
  }
  Result<sources::VmDescription> DescribeVm(const std::string& vm) override {
    return client_.DescribeVm(vm);
  }
  Result<agent::ExportInfo> GetExport(const std::string& id) override {
    return client_.GetExport(id);
  }
  Result<agent::ExportInfo> CloseExport(const std::string& id, bool restore_power) override {
    return client_.CloseExport(id, restore_power);
  }
  Result<api::AgentJob> ProceedJob(const std::string& id) override {
    return client_.ProceedJob(id);
  }
  Result<std::vector<std::string>> ListPoolFiles(const std::string& pool) override {
    FERRY_ASSIGN_OR_RETURN(api::PoolFiles files, client_.ListPoolFiles(pool));
    return std::move(files.files);
  }

 private:
  api::AgentClient client_;
};

}  // namespace

std::unique_ptr<AgentLink> MakeHttpAgentLink(const std::string& url, const std::string& token,
                                             int64_t timeout_ms) {
  return std::make_unique<HttpAgentLink>(url, token, timeout_ms);
}

}  // namespace ferry::server
