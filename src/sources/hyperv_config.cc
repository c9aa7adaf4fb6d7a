// ParseHyperVConfig (share.h): the Hyper-V virtual machine configuration XML of Windows Server
// 2008 R2 / 2012 R2 exports (`Virtual Machines/<GUID>.xml`). docs/formats/vm-description.md
// ("Hyper-V configuration XML") lists the elements read.
//
// The file is a tree of typed values: every leaf has a `type` attribute ("string", "integer",
// "bool", "bytes"), devices are top-level elements named after a GUID in underscores
// (`<_83f8638b-8dca-4152-9eda-2ca8b33039b4_>` is the IDE controller pair), and element order
// and the set of devices vary between versions. So: lenient about where things are and what
// else is there, strict about the values read (types, ranges, sizes).
#include <algorithm>
#include <charconv>
#include <cstring>
#include <pugixml.hpp>
#include <string>

#include "sources/limits.h"
#include "sources/share.h"

namespace ferry::sources {
namespace {

constexpr size_t kMaxXmlBytes = 16 << 20;
constexpr uint64_t kMaxMemoryMb = 16ull << 20;  // 16 TiB in MB
constexpr uint64_t kMiB = 1 << 20;
// The emulated IDE controllers' device GUID; every other controller section is SCSI.
constexpr std::string_view kIdeDeviceGuid = "83f8638b-8dca-4152-9eda-2ca8b33039b4";

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string Trim(std::string_view s) {
  constexpr std::string_view kSpace = " \t\r\n";
  const size_t b = s.find_first_not_of(kSpace);
  if (b == std::string_view::npos) return {};
  const size_t e = s.find_last_not_of(kSpace);
  return std::string(s.substr(b, e - b + 1));
}

// Path of `node` for messages: "<settings><processors><count>".
std::string PathOf(pugi::xml_node node) {
  std::string path;
  for (pugi::xml_node n = node; n && n.type() == pugi::node_element; n = n.parent()) {
    if (std::strcmp(n.name(), "configuration") == 0) break;
    path = "<" + std::string(n.name()).substr(0, 64) + ">" + path;
  }
  return path;
}

class Reader {
 public:
  explicit Reader(const std::string& where) : where_(where) {}

  Status Error(pugi::xml_node node, const std::string& why) const {
    return Status::Corrupt(where_ + ": Hyper-V configuration: " + PathOf(node) + ": " + why);
  }

  // A leaf's text, checked against its declared type (if any) and the size cap.
  Result<std::string> String(pugi::xml_node node) const {
    const std::string_view type = node.attribute("type").value();
    if (!type.empty() && type != "string") {
      return Error(node, "type '" + std::string(type.substr(0, 16)) + "', expected string");
    }
    std::string text = Trim(node.child_value());
    if (text.size() > kMaxStringBytes) {
      return Error(node, std::to_string(text.size()) + " bytes, more than the cap of " +
                             std::to_string(kMaxStringBytes));
    }
    return text;
  }

  Result<uint64_t> Integer(pugi::xml_node node, uint64_t min, uint64_t max) const {
    const std::string_view type = node.attribute("type").value();
    if (!type.empty() && type != "integer") {
      return Error(node, "type '" + std::string(type.substr(0, 16)) + "', expected integer");
    }
    const std::string text = Trim(node.child_value());
    uint64_t v = 0;
    const auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
    if (text.empty() || ec != std::errc() || ptr != text.data() + text.size()) {
      return Error(node, "'" + text.substr(0, 32) + "' is not a non-negative integer");
    }
    if (v < min || v > max) {
      return Error(node, std::to_string(v) + " is out of range " + std::to_string(min) + ".." +
                             std::to_string(max));
    }
    return v;
  }

  Result<bool> Bool(pugi::xml_node node) const {
    const std::string_view type = node.attribute("type").value();
    if (!type.empty() && type != "bool") {
      return Error(node, "type '" + std::string(type.substr(0, 16)) + "', expected bool");
    }
    const std::string text = Lower(Trim(node.child_value()));
    if (text == "true") return true;
    if (text == "false") return false;
    return Error(node, "'" + text.substr(0, 32) + "' is not True or False");
  }

 private:
  const std::string& where_;
};

// "controller3" -> 3; -1 if `name` is not `prefix` followed by digits.
int NumberedName(const char* name, std::string_view prefix) {
  const std::string_view n(name);
  if (n.size() <= prefix.size() || n.substr(0, prefix.size()) != prefix) return -1;
  int v = 0;
  const auto [ptr, ec] = std::from_chars(n.data() + prefix.size(), n.data() + n.size(), v);
  if (ec != std::errc() || ptr != n.data() + n.size() || v < 0) return -1;
  return v;
}

// Children of `parent` named PREFIX<n>, ordered by n.
std::vector<pugi::xml_node> Numbered(pugi::xml_node parent, std::string_view prefix) {
  std::vector<std::pair<int, pugi::xml_node>> found;
  for (const pugi::xml_node child : parent.children()) {
    const int n = NumberedName(child.name(), prefix);
    if (n >= 0) found.emplace_back(n, child);
  }
  std::stable_sort(found.begin(), found.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  std::vector<pugi::xml_node> out;
  for (const auto& [n, node] : found) out.push_back(node);
  return out;
}

std::string FormatFromPath(const std::string& path) {
  const std::string lower = Lower(path);
  auto ends = [&](std::string_view ext) {
    return lower.size() >= ext.size() &&
           lower.compare(lower.size() - ext.size(), ext.size(), ext) == 0;
  };
  if (ends(".vhdx") || ends(".avhdx")) return "vhdx";
  if (ends(".vhd") || ends(".avhd")) return "vhd";
  return "";
}

// Disks of one controller section (controllerN/driveN with type VHD and a pathname).
Status ReadControllers(const Reader& r, pugi::xml_node section, const std::string& bus,
                       VmDescription& vm) {
  for (const pugi::xml_node controller : Numbered(section, "controller")) {
    for (const pugi::xml_node drive : Numbered(controller, "drive")) {
      std::string type;
      if (const pugi::xml_node t = drive.child("type")) {
        FERRY_ASSIGN_OR_RETURN(type, r.String(t));
      }
      std::string path;
      if (const pugi::xml_node p = drive.child("pathname")) {
        FERRY_ASSIGN_OR_RETURN(path, r.String(p));
      }
      if (Lower(type) != "vhd") {
        // ISO, VFD, NONE, PHYSICAL: not a virtual hard disk file.
        if (!path.empty()) {
          AddProblem(vm, std::string(controller.name()) + "/" + drive.name() + ": " +
                             type.substr(0, 16) + " drive " + path + " is not moved");
        }
        continue;
      }
      if (path.empty()) continue;  // an empty slot
      if (vm.disks.size() >= kMaxDisks) {
        return r.Error(drive, "more than " + std::to_string(kMaxDisks) + " disks");
      }
      DiskDescription d;
      d.id = "disk" + std::to_string(vm.disks.size());
      d.source_ref = path;
      d.format = FormatFromPath(path);
      d.bus = bus;
      vm.disks.push_back(std::move(d));
    }
  }
  return Status::Ok();
}

// A network adapter section: a MAC (MacAddress, 2012 R2; Address, 2008 R2) with a switch
// connection (Connection/AltSwitchName, or SwitchName).
bool IsNicSection(pugi::xml_node node) {
  const bool has_mac = node.child("MacAddress") || node.child("Address");
  const bool has_switch =
      node.child("Connection") || node.child("SwitchName") || node.child("AltSwitchName");
  return has_mac && has_switch;
}

Status ReadNic(const Reader& r, pugi::xml_node section, VmDescription& vm) {
  if (vm.nics.size() >= kMaxNics) {
    return r.Error(section, "more than " + std::to_string(kMaxNics) + " network adapters");
  }
  NicDescription nic;
  nic.id = "nic" + std::to_string(vm.nics.size());
  // The switch's friendly name; SwitchName is its GUID, the fallback.
  for (const pugi::xml_node n : {section.child("Connection").child("AltSwitchName"),
                                 section.child("AltSwitchName"), section.child("SwitchName")}) {
    if (!n) continue;
    FERRY_ASSIGN_OR_RETURN(nic.network, r.String(n));
    if (!nic.network.empty()) break;
  }
  pugi::xml_node mac = section.child("MacAddress");
  if (!mac) mac = section.child("Address");
  FERRY_ASSIGN_OR_RETURN(const std::string mac_text, r.String(mac));
  if (!mac_text.empty()) {
    auto normalized = NormalizeMac(mac_text);
    if (!normalized.ok()) return r.Error(mac, normalized.status().message());
    // Hyper-V writes 000000000000 for a dynamic MAC not yet assigned.
    if (*normalized != "00:00:00:00:00:00") nic.mac = *normalized;
  }
  // Synthetic adapters are VMBus channels; legacy ones are an emulated DEC 21140.
  nic.model = section.child("ChannelInstanceGuid") ? "hyperv-synthetic" : "hyperv-legacy";
  vm.nics.push_back(std::move(nic));
  return Status::Ok();
}

}  // namespace

Result<VmDescription> ParseHyperVConfig(std::string_view xml, const std::string& where) {
  if (xml.size() > kMaxXmlBytes) {
    return Status::TooLarge(where + ": " + std::to_string(xml.size()) +
                            " bytes, more than the cap of " + std::to_string(kMaxXmlBytes));
  }
  pugi::xml_document doc;
  // Hyper-V writes UTF-16 with a byte order mark; pugixml converts by the BOM/declaration.
  const pugi::xml_parse_result parsed =
      doc.load_buffer(xml.data(), xml.size(), pugi::parse_default, pugi::encoding_auto);
  if (!parsed) {
    return Status::Corrupt(where + ": malformed XML at byte " + std::to_string(parsed.offset) +
                           ": " + parsed.description());
  }
  const pugi::xml_node root = doc.document_element();
  if (std::strcmp(root.name(), "configuration") != 0) {
    return Status::Corrupt(where + ": root element is <" + std::string(root.name()).substr(0, 64) +
                           ">, expected <configuration> (a Hyper-V configuration)");
  }
  const Reader r(where);
  VmDescription vm;
  vm.platform = Platform::kHyperV;

  const pugi::xml_node properties = root.child("properties");
  const pugi::xml_node name = properties.child("name");
  if (!name) {
    return Status::Corrupt(where + ": Hyper-V configuration: <properties><name>: missing");
  }
  FERRY_ASSIGN_OR_RETURN(vm.name, r.String(name));
  if (vm.name.empty()) return r.Error(name, "empty");
  if (const pugi::xml_node id = properties.child("global_id")) {
    FERRY_ASSIGN_OR_RETURN(std::string uuid, r.String(id));
    uuid.erase(
        std::remove_if(uuid.begin(), uuid.end(), [](char c) { return c == '{' || c == '}'; }),
        uuid.end());
    vm.uuid = Lower(uuid);
  }
  // subtype 0 = generation 1 (BIOS), 1 = generation 2 (UEFI); 2008 R2 has no subtype.
  vm.firmware = "bios";
  if (const pugi::xml_node subtype = properties.child("subtype")) {
    FERRY_ASSIGN_OR_RETURN(const uint64_t generation, r.Integer(subtype, 0, UINT32_MAX));
    if (generation == 1) {
      vm.firmware = "uefi";
    } else if (generation != 0) {
      vm.firmware.clear();
      AddProblem(vm, "Hyper-V configuration: unknown VM subtype " + std::to_string(generation) +
                         " (firmware unknown)");
    }
  }

  const pugi::xml_node settings = root.child("settings");
  if (const pugi::xml_node count = settings.child("processors").child("count")) {
    FERRY_ASSIGN_OR_RETURN(const uint64_t vcpus,
                           r.Integer(count, 1, static_cast<uint64_t>(kMaxVcpus)));
    vm.vcpus = static_cast<int>(vcpus);
  }
  const pugi::xml_node bank = settings.child("memory").child("bank");
  if (const pugi::xml_node size = bank.child("size")) {
    FERRY_ASSIGN_OR_RETURN(const uint64_t mb, r.Integer(size, 1, kMaxMemoryMb));
    vm.memory_bytes = mb * kMiB;
    if (const pugi::xml_node dynamic = bank.child("dynamic_memory_enabled")) {
      FERRY_ASSIGN_OR_RETURN(const bool enabled, r.Bool(dynamic));
      if (enabled) {
        AddProblem(vm, "Hyper-V configuration: dynamic memory: the startup size " +
                           std::to_string(mb) + " MB is used");
      }
    }
  }

  // IDE first (generation 1 boots from IDE), then SCSI, each in document order.
  std::vector<std::pair<pugi::xml_node, std::string>> controller_sections;
  for (const pugi::xml_node child : root.children()) {
    if (child.name()[0] != '_' || Numbered(child, "controller").empty()) continue;
    const bool ide = Lower(child.name()).find(kIdeDeviceGuid) != std::string::npos;
    controller_sections.emplace_back(child, ide ? "ide" : "scsi");
  }
  // Configurations rebuilt by export tools put them under <vm-controllers> (IDE directly,
  // SCSI in <scsi>).
  if (const pugi::xml_node rebuilt = root.child("vm-controllers")) {
    controller_sections.emplace_back(rebuilt, "ide");
    for (const pugi::xml_node scsi : rebuilt.children("scsi")) {
      controller_sections.emplace_back(scsi, "scsi");
    }
  }
  std::stable_partition(controller_sections.begin(), controller_sections.end(),
                        [](const auto& s) { return s.second == "ide"; });
  for (const auto& [section, bus] : controller_sections) {
    FERRY_TRY(ReadControllers(r, section, bus, vm));
  }

  for (const pugi::xml_node child : root.children()) {
    if (child.name()[0] == '_' && IsNicSection(child)) FERRY_TRY(ReadNic(r, child, vm));
  }
  if (vm.nics.empty()) {
    if (const pugi::xml_node alt = root.child("AltSwitchName")) {
      NicDescription nic;
      nic.id = "nic0";
      FERRY_ASSIGN_OR_RETURN(nic.network, r.String(alt));
      nic.model = "hyperv-synthetic";
      vm.nics.push_back(std::move(nic));
    }
  }
  ComputeMissing(vm);
  FERRY_TRY(CheckDescriptionLimits(vm, where + ": Hyper-V configuration"));
  return vm;
}

}  // namespace ferry::sources
