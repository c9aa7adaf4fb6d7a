// BuildDomainXml (domain_builder.h): the checks first, then the document through pugixml, so
// every value is escaped by the library and nothing is spliced into markup by hand.
#include "hypervisor/domain_builder.h"

#include <pugixml.hpp>
#include <set>
#include <sstream>
#include <string_view>

namespace ferry::hypervisor {
namespace {

constexpr std::string_view kFerryNamespace = "https://ferry.dev/xmlns/libvirt/1";
constexpr size_t kMaxText = 4096;  // any one value; libvirt's own names are far shorter

Status Bad(const std::string& field, const std::string& why) {
  return Status::InvalidArgument("domain spec: " + field + ": " + why);
}

bool OneOf(std::string_view v, std::initializer_list<std::string_view> allowed) {
  for (std::string_view a : allowed) {
    if (v == a) return true;
  }
  return false;
}

// XML 1.0 cannot carry most control characters, even escaped; libvirt would refuse them.
Status CheckText(const std::string& field, const std::string& value) {
  if (value.size() > kMaxText) {
    return Bad(field, "longer than " + std::to_string(kMaxText) + " bytes");
  }
  for (size_t i = 0; i < value.size(); ++i) {
    const auto c = static_cast<unsigned char>(value[i]);
    if (c < 0x20 && c != '\t' && c != '\n' && c != '\r') {
      return Bad(field, "control character 0x" + std::to_string(c) + " at byte " +
                            std::to_string(i) + " cannot be put into XML");
    }
  }
  return Status::Ok();
}

Status CheckNonEmpty(const std::string& field, const std::string& value) {
  if (value.empty()) return Bad(field, "must not be empty");
  return CheckText(field, value);
}

Status CheckAbsolutePath(const std::string& field, const std::string& value) {
  FERRY_TRY(CheckNonEmpty(field, value));
  if (value[0] != '/') return Bad(field, "\"" + value + "\" is not an absolute path");
  return Status::Ok();
}

bool IsHex(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

// 8-4-4-4-12 hex digits.
bool IsUuid(const std::string& u) {
  if (u.size() != 36) return false;
  for (size_t i = 0; i < u.size(); ++i) {
    const bool dash = i == 8 || i == 13 || i == 18 || i == 23;
    if (dash ? u[i] != '-' : !IsHex(u[i])) return false;
  }
  return true;
}

// "52:54:00:ab:cd:ef".
bool IsMac(const std::string& m) {
  if (m.size() != 17) return false;
  for (size_t i = 0; i < m.size(); ++i) {
    if (i % 3 == 2 ? m[i] != ':' : !IsHex(m[i])) return false;
  }
  return true;
}

// A device name libvirt accepts as a disk target: lower-case letters then optional digits.
bool IsDevName(const std::string& d) {
  if (d.empty() || d.size() > 32) return false;
  for (char c : d) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'))) return false;
  }
  return d[0] >= 'a' && d[0] <= 'z';
}

// An XML attribute name without a prefix (metadata keys become attributes).
bool IsXmlName(const std::string& k) {
  if (k.empty() || k.size() > 64) return false;
  auto start = [](char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; };
  if (!start(k[0])) return false;
  for (char c : k) {
    if (!(start(c) || (c >= '0' && c <= '9') || c == '-' || c == '.')) return false;
  }
  return k.rfind("xml", 0) != 0 && k.rfind("XML", 0) != 0;
}

Status Validate(const DomainSpec& s) {
  FERRY_TRY(CheckNonEmpty("name", s.name));
  if (s.name.find('/') != std::string::npos) return Bad("name", "must not contain '/'");
  if (!s.uuid.empty() && !IsUuid(s.uuid)) {
    return Bad("uuid", "\"" + s.uuid.substr(0, 64) + "\" is not a UUID (8-4-4-4-12 hex digits)");
  }
  if (!OneOf(s.domain_type, {"kvm", "qemu"})) {
    return Bad("domain_type", "\"" + s.domain_type.substr(0, 64) + "\": expected kvm or qemu");
  }
  if (s.vcpus <= 0) return Bad("vcpus", "must be at least 1");
  if (s.memory_bytes == 0) return Bad("memory_bytes", "must not be zero");
  FERRY_TRY(CheckNonEmpty("arch", s.arch));
  FERRY_TRY(CheckNonEmpty("machine", s.machine));
  if (!OneOf(s.firmware, {"bios", "uefi"})) {
    return Bad("firmware", "\"" + s.firmware.substr(0, 64) + "\": expected bios or uefi");
  }
  if (!s.kernel.empty()) {
    FERRY_TRY(CheckAbsolutePath("kernel", s.kernel));
    if (!s.initrd.empty()) FERRY_TRY(CheckAbsolutePath("initrd", s.initrd));
    FERRY_TRY(CheckText("cmdline", s.cmdline));
  } else if (!s.initrd.empty() || !s.cmdline.empty()) {
    return Bad(s.initrd.empty() ? "cmdline" : "initrd", "given without a kernel");
  }
  if (s.disks.empty() && s.kernel.empty()) {
    return Bad("disks", "a VM without a kernel needs at least one disk to boot from");
  }
  const bool q35 = s.machine.find("q35") != std::string::npos;
  std::set<std::string> devs;
  for (size_t i = 0; i < s.disks.size(); ++i) {
    const DomainDiskSpec& d = s.disks[i];
    const std::string p = "disks[" + std::to_string(i) + "]";
    FERRY_TRY(CheckAbsolutePath(p + ".path", d.path));
    if (!OneOf(d.format, {"qcow2", "raw"})) {
      return Bad(p + ".format", "\"" + d.format.substr(0, 64) + "\": expected qcow2 or raw");
    }
    if (!OneOf(d.bus, {"virtio", "scsi", "sata", "ide"})) {
      return Bad(p + ".bus", "\"" + d.bus.substr(0, 64) + "\": expected virtio, scsi, sata or ide");
    }
    if (d.bus == "ide" && q35) {
      return Bad(p + ".bus", "q35 machines have no IDE controller (use sata)");
    }
    if (!IsDevName(d.dev)) {
      return Bad(p + ".dev", "\"" + d.dev.substr(0, 64) + "\" is not a device name like vda");
    }
    if (!devs.insert(d.dev).second) return Bad(p + ".dev", d.dev + " is used twice");
  }
  for (size_t i = 0; i < s.nics.size(); ++i) {
    const DomainNicSpec& n = s.nics[i];
    const std::string p = "nics[" + std::to_string(i) + "]";
    FERRY_TRY(CheckNonEmpty(p + ".network", n.network));
    if (!n.mac.empty() && !IsMac(n.mac)) {
      return Bad(p + ".mac", "\"" + n.mac.substr(0, 64) + "\" is not a MAC like 52:54:00:ab:cd:ef");
    }
    if (!OneOf(n.model, {"virtio", "e1000", "e1000e", "rtl8139"})) {
      return Bad(p + ".model",
                 "\"" + n.model.substr(0, 64) + "\": expected virtio, e1000, e1000e or rtl8139");
    }
  }
  if (!s.console_log.empty()) FERRY_TRY(CheckAbsolutePath("console_log", s.console_log));
  std::set<std::string> keys;
  for (size_t i = 0; i < s.metadata.size(); ++i) {
    const auto& [key, value] = s.metadata[i];
    const std::string p = "metadata[" + std::to_string(i) + "]";
    if (!IsXmlName(key)) return Bad(p, "\"" + key.substr(0, 64) + "\" is not an XML name");
    if (!keys.insert(key).second) return Bad(p, "key " + key + " is given twice");
    FERRY_TRY(CheckText(p + "." + key, value));
  }
  return Status::Ok();
}

void Text(pugi::xml_node parent, const char* name, const std::string& value) {
  parent.append_child(name).text().set(value.c_str());
}

}  // namespace

Result<std::string> BuildDomainXml(const DomainSpec& spec) {
  FERRY_TRY(Validate(spec));
  pugi::xml_document doc;
  pugi::xml_node domain = doc.append_child("domain");
  domain.append_attribute("type") = spec.domain_type.c_str();
  Text(domain, "name", spec.name);
  if (!spec.uuid.empty()) Text(domain, "uuid", spec.uuid);

  if (!spec.metadata.empty()) {
    pugi::xml_node m = domain.append_child("metadata").append_child("ferry:migration");
    m.append_attribute("xmlns:ferry") = std::string(kFerryNamespace).c_str();
    for (const auto& [key, value] : spec.metadata) {
      m.append_attribute(key.c_str()) = value.c_str();
    }
  }

  pugi::xml_node memory = domain.append_child("memory");
  memory.append_attribute("unit") = "KiB";
  memory.text().set(std::to_string((spec.memory_bytes + 1023) / 1024).c_str());
  pugi::xml_node vcpu = domain.append_child("vcpu");
  vcpu.append_attribute("placement") = "static";
  vcpu.text().set(spec.vcpus);

  pugi::xml_node os = domain.append_child("os");
  if (spec.firmware == "uefi") os.append_attribute("firmware") = "efi";
  pugi::xml_node type = os.append_child("type");
  type.append_attribute("arch") = spec.arch.c_str();
  type.append_attribute("machine") = spec.machine.c_str();
  type.text().set("hvm");
  if (!spec.kernel.empty()) {
    Text(os, "kernel", spec.kernel);
    if (!spec.initrd.empty()) Text(os, "initrd", spec.initrd);
    if (!spec.cmdline.empty()) Text(os, "cmdline", spec.cmdline);
  } else {
    os.append_child("boot").append_attribute("dev") = "hd";
  }

  pugi::xml_node features = domain.append_child("features");
  features.append_child("acpi");
  features.append_child("apic");
  // host-model carries the host's features to the guest under KVM; under TCG QEMU's default
  // model is the one that works (a host model would ask TCG for features it lacks).
  if (spec.domain_type == "kvm") {
    domain.append_child("cpu").append_attribute("mode") = "host-model";
  }
  domain.append_child("clock").append_attribute("offset") = "utc";
  Text(domain, "on_poweroff", "destroy");
  Text(domain, "on_reboot", "restart");
  Text(domain, "on_crash", "destroy");

  pugi::xml_node devices = domain.append_child("devices");
  bool scsi_controller = false;
  for (const DomainDiskSpec& d : spec.disks) {
    if (d.bus == "scsi" && !scsi_controller) {
      pugi::xml_node c = devices.append_child("controller");
      c.append_attribute("type") = "scsi";
      c.append_attribute("index") = "0";
      c.append_attribute("model") = "virtio-scsi";
      scsi_controller = true;
    }
  }
  for (const DomainDiskSpec& d : spec.disks) {
    pugi::xml_node disk = devices.append_child("disk");
    disk.append_attribute("type") = "file";
    disk.append_attribute("device") = "disk";
    pugi::xml_node driver = disk.append_child("driver");
    driver.append_attribute("name") = "qemu";
    driver.append_attribute("type") = d.format.c_str();
    driver.append_attribute("cache") = "none";
    disk.append_child("source").append_attribute("file") = d.path.c_str();
    pugi::xml_node target = disk.append_child("target");
    target.append_attribute("dev") = d.dev.c_str();
    target.append_attribute("bus") = d.bus.c_str();
  }
  for (const DomainNicSpec& n : spec.nics) {
    pugi::xml_node nic = devices.append_child("interface");
    nic.append_attribute("type") = "network";
    nic.append_child("source").append_attribute("network") = n.network.c_str();
    if (!n.mac.empty()) nic.append_child("mac").append_attribute("address") = n.mac.c_str();
    nic.append_child("model").append_attribute("type") = n.model.c_str();
  }
  pugi::xml_node serial = devices.append_child("serial");
  serial.append_attribute("type") = "pty";
  if (!spec.console_log.empty()) {
    pugi::xml_node log = serial.append_child("log");
    log.append_attribute("file") = spec.console_log.c_str();
    log.append_attribute("append") = "on";
  }
  serial.append_child("target").append_attribute("port") = "0";
  pugi::xml_node console = devices.append_child("console");
  console.append_attribute("type") = "pty";
  pugi::xml_node console_target = console.append_child("target");
  console_target.append_attribute("type") = "serial";
  console_target.append_attribute("port") = "0";

  std::ostringstream out;
  doc.save(out, "  ", pugi::format_indent | pugi::format_no_declaration);
  return out.str();
}

}  // namespace ferry::hypervisor
