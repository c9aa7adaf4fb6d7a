// Parsers for libvirt's domain, pool, network and capabilities XML (see domain_xml.h).
#include "hypervisor/domain_xml.h"

#include <charconv>
#include <cstring>
#include <pugixml.hpp>
#include <string>

namespace ferry::hypervisor {
namespace {

struct Unit {
  const char* name;
  uint64_t factor;
};

constexpr uint64_t kKi = 1024;
constexpr uint64_t kK = 1000;

// libvirt's docs, "Memory Allocation" / storage "capacity" units.
constexpr Unit kUnits[] = {
    {"b", 1},
    {"bytes", 1},
    {"KB", kK},
    {"MB", kK* kK},
    {"GB", kK* kK* kK},
    {"TB", kK* kK* kK* kK},
    {"PB", kK* kK* kK* kK* kK},
    {"EB", kK* kK* kK* kK* kK* kK},
    {"k", kKi},
    {"KiB", kKi},
    {"M", kKi* kKi},
    {"MiB", kKi* kKi},
    {"G", kKi* kKi* kKi},
    {"GiB", kKi* kKi* kKi},
    {"T", kKi* kKi* kKi* kKi},
    {"TiB", kKi* kKi* kKi* kKi},
    {"P", kKi* kKi* kKi* kKi* kKi},
    {"PiB", kKi* kKi* kKi* kKi* kKi},
    {"E", kKi* kKi* kKi* kKi* kKi* kKi},
    {"EiB", kKi* kKi* kKi* kKi* kKi* kKi},
};

std::string_view Trim(std::string_view s) {
  constexpr std::string_view kSpace = " \t\r\n";
  const size_t b = s.find_first_not_of(kSpace);
  if (b == std::string_view::npos) return {};
  const size_t e = s.find_last_not_of(kSpace);
  return s.substr(b, e - b + 1);
}

Result<uint64_t> ParseU64(std::string_view text, std::string_view what) {
  const std::string_view t = Trim(text);
  uint64_t v = 0;
  const auto [ptr, ec] = std::from_chars(t.data(), t.data() + t.size(), v);
  if (t.empty() || ec != std::errc() || ptr != t.data() + t.size()) {
    return Status::Corrupt(std::string(what) + ": '" + std::string(t.substr(0, 64)) +
                           "' is not a non-negative integer");
  }
  return v;
}

// Loads `xml` and returns its root element if it is named `root_name`.
Result<pugi::xml_node> Load(pugi::xml_document& doc, std::string_view xml, const char* kind,
                            const char* root_name) {
  if (xml.size() > kMaxXmlBytes) {
    return Status::TooLarge(std::string(kind) + ": " + std::to_string(xml.size()) +
                            " bytes, more than the cap of " + std::to_string(kMaxXmlBytes));
  }
  const pugi::xml_parse_result r =
      doc.load_buffer(xml.data(), xml.size(), pugi::parse_default, pugi::encoding_utf8);
  if (!r) {
    return Status::Corrupt(std::string(kind) + ": malformed XML at byte " +
                           std::to_string(r.offset) + ": " + r.description());
  }
  pugi::xml_node root = doc.document_element();
  if (std::strcmp(root.name(), root_name) != 0) {
    return Status::Corrupt(std::string(kind) + ": root element is <" + root.name() +
                           ">, expected <" + root_name + ">");
  }
  return root;
}

// The size in `node` with its unit attribute (default `default_unit`), in bytes.
Result<uint64_t> NodeSize(pugi::xml_node node, std::string_view default_unit,
                          const std::string& what) {
  return ScaleXmlSize(node.child_value(), node.attribute("unit").value(), default_unit, what);
}

Result<VmDisk> ParseDisk(pugi::xml_node disk, size_t index) {
  VmDisk d;
  d.type = disk.attribute("type").value();
  d.device = disk.attribute("device").as_string("disk");
  const pugi::xml_node target = disk.child("target");
  d.target = target.attribute("dev").value();
  d.bus = target.attribute("bus").value();
  if (d.target.empty()) {
    return Status::Corrupt("domain XML: <disk> #" + std::to_string(index) +
                           ": no <target dev=...>");
  }
  d.format = disk.child("driver").attribute("type").value();
  const pugi::xml_node source = disk.child("source");
  if (source) {
    if (d.type == "file") {
      d.source_path = source.attribute("file").value();
    } else if (d.type == "block") {
      d.source_path = source.attribute("dev").value();
    } else if (d.type == "dir") {
      d.source_path = source.attribute("dir").value();
    } else if (d.type == "volume") {
      d.pool = source.attribute("pool").value();
      d.volume = source.attribute("volume").value();
      if (d.pool.empty() || d.volume.empty()) {
        return Status::Corrupt("domain XML: <disk> " + d.target +
                               ": <source> of a volume disk needs pool and volume");
      }
    }
    // type "network" (rbd, iscsi, nbd, ...) has no local path; the protocol stays in `type`.
  }
  return d;
}

VmNic ParseInterface(pugi::xml_node iface) {
  VmNic n;
  n.type = iface.attribute("type").value();
  n.mac = iface.child("mac").attribute("address").value();
  n.model = iface.child("model").attribute("type").value();
  const pugi::xml_node source = iface.child("source");
  n.bridge = source.attribute("bridge").value();
  if (n.type == "network") {
    n.network = source.attribute("network").value();
  } else if (n.type == "bridge") {
    n.network = n.bridge;
  } else if (n.type == "direct") {
    n.network = source.attribute("dev").value();
  }
  return n;
}

Firmware FirmwareOf(pugi::xml_node os) {
  const std::string_view fw = os.attribute("firmware").value();
  if (fw == "efi") return Firmware::kUefi;
  const pugi::xml_node loader = os.child("loader");
  if (loader) {
    if (std::string_view(loader.attribute("type").value()) == "pflash") return Firmware::kUefi;
    const std::string_view path = Trim(loader.child_value());
    for (const char* marker : {"OVMF", "edk2", "AAVMF", "efi"}) {
      if (path.find(marker) != std::string_view::npos) return Firmware::kUefi;
    }
  }
  return Firmware::kBios;
}

}  // namespace

Result<uint64_t> ScaleXmlSize(std::string_view number, std::string_view unit,
                              std::string_view default_unit, std::string_view what) {
  FERRY_ASSIGN_OR_RETURN(const uint64_t n, ParseU64(number, what));
  const std::string_view u = unit.empty() ? default_unit : unit;
  for (const Unit& known : kUnits) {
    if (u == known.name) {
      if (n != 0 && known.factor > UINT64_MAX / n) {
        return Status::Corrupt(std::string(what) + ": " + std::to_string(n) + " " + std::string(u) +
                               " overflows 64 bits");
      }
      return n * known.factor;
    }
  }
  return Status::Corrupt(std::string(what) + ": unknown unit '" + std::string(u.substr(0, 16)) +
                         "'");
}

Result<VmInfo> ParseDomainXml(std::string_view xml) {
  pugi::xml_document doc;
  FERRY_ASSIGN_OR_RETURN(const pugi::xml_node dom, Load(doc, xml, "domain XML", "domain"));
  VmInfo vm;
  vm.domain_type = dom.attribute("type").value();
  vm.name = Trim(dom.child_value("name"));
  vm.uuid = Trim(dom.child_value("uuid"));
  if (vm.name.empty()) return Status::Corrupt("domain XML: no <name>");

  const pugi::xml_node vcpu = dom.child("vcpu");
  if (!vcpu) return Status::Corrupt("domain XML: " + vm.name + ": no <vcpu>");
  FERRY_ASSIGN_OR_RETURN(const uint64_t max_vcpus,
                         ParseU64(vcpu.child_value(), "domain XML: <vcpu>"));
  uint64_t current = max_vcpus;
  if (const pugi::xml_attribute cur = vcpu.attribute("current")) {
    FERRY_ASSIGN_OR_RETURN(current, ParseU64(cur.value(), "domain XML: <vcpu current=...>"));
  }
  if (max_vcpus == 0 || max_vcpus > static_cast<uint64_t>(kMaxVcpus) || current == 0 ||
      current > max_vcpus) {
    return Status::Corrupt("domain XML: <vcpu>: " + std::to_string(current) + " of " +
                           std::to_string(max_vcpus) + " vCPUs is out of range (1.." +
                           std::to_string(kMaxVcpus) + ")");
  }
  vm.max_vcpus = static_cast<int>(max_vcpus);
  vm.vcpus = static_cast<int>(current);

  const pugi::xml_node memory = dom.child("memory");
  if (!memory) return Status::Corrupt("domain XML: " + vm.name + ": no <memory>");
  FERRY_ASSIGN_OR_RETURN(vm.memory_bytes, NodeSize(memory, "KiB", "domain XML: <memory>"));

  const pugi::xml_node os = dom.child("os");
  if (!os) return Status::Corrupt("domain XML: " + vm.name + ": no <os>");
  const pugi::xml_node os_type = os.child("type");
  vm.machine_type = os_type.attribute("machine").value();
  vm.arch = os_type.attribute("arch").value();
  vm.firmware = FirmwareOf(os);

  const pugi::xml_node devices = dom.child("devices");
  size_t disk_index = 0;
  for (const pugi::xml_node disk : devices.children("disk")) {
    if (vm.disks.size() + vm.nics.size() >= kMaxDevices) {
      return Status::TooLarge("domain XML: " + vm.name + ": more than " +
                              std::to_string(kMaxDevices) + " disks and interfaces");
    }
    FERRY_ASSIGN_OR_RETURN(VmDisk d, ParseDisk(disk, disk_index++));
    vm.disks.push_back(std::move(d));
  }
  for (const pugi::xml_node iface : devices.children("interface")) {
    if (vm.disks.size() + vm.nics.size() >= kMaxDevices) {
      return Status::TooLarge("domain XML: " + vm.name + ": more than " +
                              std::to_string(kMaxDevices) + " disks and interfaces");
    }
    vm.nics.push_back(ParseInterface(iface));
  }
  return vm;
}

void MergeConfiguredNics(VmInfo& live, const VmInfo& config) {
  for (VmNic& nic : live.nics) {
    if (nic.mac.empty()) continue;
    for (const VmNic& configured : config.nics) {
      if (configured.mac != nic.mac || configured.type != "network") continue;
      if (nic.bridge.empty() && nic.type == "bridge") nic.bridge = nic.network;
      nic.type = configured.type;
      nic.network = configured.network;
      break;
    }
  }
}

Result<PoolInfo> ParsePoolXml(std::string_view xml) {
  pugi::xml_document doc;
  FERRY_ASSIGN_OR_RETURN(const pugi::xml_node pool, Load(doc, xml, "pool XML", "pool"));
  PoolInfo p;
  p.name = Trim(pool.child_value("name"));
  if (p.name.empty()) return Status::Corrupt("pool XML: no <name>");
  p.type = pool.attribute("type").value();
  p.path = Trim(pool.child("target").child_value("path"));
  return p;
}

Result<NetworkInfo> ParseNetworkXml(std::string_view xml) {
  pugi::xml_document doc;
  FERRY_ASSIGN_OR_RETURN(const pugi::xml_node net, Load(doc, xml, "network XML", "network"));
  NetworkInfo n;
  n.name = Trim(net.child_value("name"));
  if (n.name.empty()) return Status::Corrupt("network XML: no <name>");
  n.bridge = net.child("bridge").attribute("name").value();
  const pugi::xml_node forward = net.child("forward");
  if (!forward) {
    n.forward_mode = "isolated";
  } else {
    n.forward_mode = forward.attribute("mode").as_string("nat");  // libvirt's default mode
  }
  return n;
}

Result<HostFacts> ParseCapabilitiesXml(std::string_view xml) {
  pugi::xml_document doc;
  FERRY_ASSIGN_OR_RETURN(const pugi::xml_node caps,
                         Load(doc, xml, "capabilities XML", "capabilities"));
  HostFacts f;
  const pugi::xml_node cpu = caps.child("host").child("cpu");
  f.cpu_arch = Trim(cpu.child_value("arch"));
  f.cpu_model = Trim(cpu.child_value("model"));
  for (const pugi::xml_node guest : caps.children("guest")) {
    for (const pugi::xml_node domain : guest.child("arch").children("domain")) {
      const std::string type = domain.attribute("type").value();
      if (type.empty()) continue;
      bool seen = false;
      for (const auto& t : f.domain_types) seen = seen || t == type;
      if (!seen) {
        if (f.domain_types.size() >= kMaxDevices) {
          return Status::TooLarge("capabilities XML: too many domain types");
        }
        f.domain_types.push_back(type);
      }
    }
  }
  return f;
}

}  // namespace ferry::hypervisor
