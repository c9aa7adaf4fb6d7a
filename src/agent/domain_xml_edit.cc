// Implementation of domain_xml_edit.h over pugixml (kept inside this file).
#include "agent/domain_xml_edit.h"

#include <pugixml.hpp>
#include <set>
#include <sstream>

#include "hypervisor/domain_xml.h"

namespace ferry::agent {
namespace {

Result<pugi::xml_node> LoadDomain(pugi::xml_document& doc, std::string_view xml) {
  if (xml.size() > hypervisor::kMaxXmlBytes) {
    return Status::TooLarge("domain XML: " + std::to_string(xml.size()) + " bytes, over the " +
                            std::to_string(hypervisor::kMaxXmlBytes) + " byte cap");
  }
  const pugi::xml_parse_result r =
      doc.load_buffer(xml.data(), xml.size(), pugi::parse_default, pugi::encoding_utf8);
  if (!r) {
    return Status::Corrupt(std::string("domain XML: ") + r.description() + " at offset " +
                           std::to_string(r.offset));
  }
  pugi::xml_node root = doc.document_element();
  if (std::string_view(root.name()) != "domain") {
    return Status::Corrupt("domain XML: root element <" + std::string(root.name()) +
                           ">, expected <domain>");
  }
  return root;
}

}  // namespace

Result<std::string> SerialLogPath(std::string_view domain_xml) {
  pugi::xml_document doc;
  FERRY_ASSIGN_OR_RETURN(pugi::xml_node dom, LoadDomain(doc, domain_xml));
  const pugi::xml_node devices = dom.child("devices");
  for (const char* kind : {"serial", "console"}) {
    for (const pugi::xml_node dev : devices.children(kind)) {
      if (std::string_view(dev.attribute("type").value()) == "file") {
        const std::string path = dev.child("source").attribute("path").value();
        if (!path.empty()) return path;
      }
      const std::string log = dev.child("log").attribute("file").value();
      if (!log.empty()) return log;
    }
  }
  return std::string();
}

Result<std::map<std::string, std::string>> DiskFileSources(std::string_view domain_xml) {
  pugi::xml_document doc;
  FERRY_ASSIGN_OR_RETURN(pugi::xml_node dom, LoadDomain(doc, domain_xml));
  std::map<std::string, std::string> out;
  for (const pugi::xml_node disk : dom.child("devices").children("disk")) {
    const std::string target = disk.child("target").attribute("dev").value();
    if (target.empty()) continue;
    out[target] = disk.child("source").attribute("file").value();
  }
  return out;
}

Result<std::string> ReplaceDiskSources(std::string_view domain_xml,
                                       const std::map<std::string, NewDiskSource>& changes) {
  pugi::xml_document doc;
  FERRY_ASSIGN_OR_RETURN(pugi::xml_node dom, LoadDomain(doc, domain_xml));
  std::set<std::string> done;
  for (pugi::xml_node disk : dom.child("devices").children("disk")) {
    const std::string target = disk.child("target").attribute("dev").value();
    const auto it = changes.find(target);
    if (it == changes.end()) continue;
    if (!disk.attribute("type")) disk.append_attribute("type");
    disk.attribute("type").set_value("file");
    pugi::xml_node source = disk.child("source");
    if (!source) source = disk.insert_child_after("source", disk.child("driver"));
    // A new <source> replaces the old one whole: pool/volume, dev or protocol attributes and
    // children (seclabels, reservations) described the old storage.
    pugi::xml_node fresh = disk.insert_child_before("source", source);
    disk.remove_child(source);
    fresh.append_attribute("file").set_value(it->second.path.c_str());
    pugi::xml_node driver = disk.child("driver");
    if (!driver) {
      driver = disk.prepend_child("driver");
      driver.append_attribute("name").set_value("qemu");
    }
    if (!driver.attribute("type")) driver.append_attribute("type");
    driver.attribute("type").set_value(it->second.format.c_str());
    // A backing chain described by the old XML belongs to the old file.
    while (pugi::xml_node backing = disk.child("backingStore")) disk.remove_child(backing);
    done.insert(target);
  }
  for (const auto& [target, unused] : changes) {
    if (!done.count(target)) {
      return Status::NotFound("domain XML: no disk with target '" + target + "'");
    }
  }
  std::ostringstream out;
  doc.save(out, "  ", pugi::format_default | pugi::format_no_declaration);
  return out.str();
}

}  // namespace ferry::agent
