// The OVA reader: indexes the tar in place, parses the OVF (pugixml) and the manifest, and
// opens one disk as a VMDK through a slice of the .ova file.
//
// Ownership: an OvaSource owns the disk's source, which shares the .ova File with nothing
// else. Thread-safety: OvaSource forwards to the VMDK reader, which is thread-safe.
#include "disk/ova/ova.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstring>
#include <new>
#include <pugixml.hpp>
#include <set>

#include "common/bytes.h"
#include "disk/vmdk/vmdk.h"

namespace ferry {
namespace {

// POSIX ustar header (IEEE 1003.1): 512-byte blocks; field offsets and lengths.
constexpr uint64_t kBlock = 512;
constexpr size_t kNameOff = 0, kNameLen = 100;
constexpr size_t kSizeOff = 124, kSizeLen = 12;
constexpr size_t kChecksumOff = 148, kChecksumLen = 8;
constexpr size_t kTypeOff = 156;
constexpr size_t kMagicOff = 257;
constexpr size_t kPrefixOff = 345, kPrefixLen = 155;

// Caps on untrusted input.
constexpr size_t kMaxMembers = 10000;
constexpr uint64_t kMaxPaxHeader = 1 << 20;
constexpr uint64_t kMaxLongName = 64 * 1024;
constexpr uint64_t kMaxOvfBytes = 16 << 20;
constexpr uint64_t kMaxManifestBytes = 4 << 20;

std::string FieldString(const uint8_t* p, size_t len) {
  size_t n = 0;
  while (n < len && p[n] != 0) ++n;
  return std::string(reinterpret_cast<const char*>(p), n);
}

// An octal tar number (leading spaces, NUL/space terminated), or GNU base-256 if the high
// bit of the first byte is set.
bool ParseTarNumber(const uint8_t* p, size_t len, uint64_t* out) {
  uint64_t v = 0;
  if (p[0] & 0x80) {
    if (p[0] != 0x80) return false;  // negative or > 2^88: not a sane size
    for (size_t i = 1; i < len; ++i) {
      if (v >> 56) return false;
      v = (v << 8) | p[i];
    }
    *out = v;
    return true;
  }
  size_t i = 0;
  while (i < len && p[i] == ' ') ++i;
  bool any = false;
  for (; i < len && p[i] >= '0' && p[i] <= '7'; ++i) {
    if (v >> 60) return false;
    v = v * 8 + (p[i] - '0');
    any = true;
  }
  for (; i < len; ++i) {
    if (p[i] != 0 && p[i] != ' ') return false;
  }
  *out = v;
  return any;
}

bool EndsWithNoCase(std::string_view s, std::string_view suffix) {
  if (s.size() < suffix.size()) return false;
  for (size_t i = 0; i < suffix.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(s[s.size() - suffix.size() + i])) !=
        std::tolower(static_cast<unsigned char>(suffix[i]))) {
      return false;
    }
  }
  return true;
}

// pax extended header records: "<len> <key>=<value>\n".
Status ParsePax(std::string_view data, const std::string& where, std::string* path, bool* has_size,
                uint64_t* size) {
  while (!data.empty()) {
    size_t sp = data.find(' ');
    uint64_t len = 0;
    if (sp == std::string_view::npos ||
        std::from_chars(data.data(), data.data() + sp, len).ptr != data.data() + sp ||
        len <= sp + 1 || len > data.size() || data[len - 1] != '\n') {
      if (std::all_of(data.begin(), data.end(), [](char c) { return c == '\0'; })) break;
      return Status::Corrupt(where + ": malformed pax record");
    }
    std::string_view rec = data.substr(sp + 1, len - sp - 2);
    data.remove_prefix(len);
    size_t eq = rec.find('=');
    if (eq == std::string_view::npos) return Status::Corrupt(where + ": pax record without '='");
    std::string_view key = rec.substr(0, eq), value = rec.substr(eq + 1);
    if (key == "path") {
      *path = std::string(value);
    } else if (key == "size") {
      uint64_t v = 0;
      if (std::from_chars(value.data(), value.data() + value.size(), v).ptr !=
          value.data() + value.size()) {
        return Status::Corrupt(where + ": pax size '" + std::string(value) + "'");
      }
      *size = v;
      *has_size = true;
    }
  }
  return Status::Ok();
}

Status CheckMemberName(const std::string& name, const std::string& where) {
  if (name.empty() || name.find('/') != std::string::npos || name == "." || name == ".." ||
      name.find('\\') != std::string::npos || name.find('\0') != std::string::npos) {
    return Status::Corrupt(where + ": member name '" + name +
                           "' is not a plain file name (OVA members may not have paths)");
  }
  return Status::Ok();
}

Result<std::vector<OvaMember>> IndexTar(const File& file) {
  const std::string path = file.path();
  FERRY_ASSIGN_OR_RETURN(uint64_t file_size, file.Size());
  std::vector<OvaMember> members;
  std::set<std::string> seen;
  std::string long_name;
  std::string pax_path;
  bool has_pax_size = false;
  uint64_t pax_size = 0;
  std::vector<uint8_t> h(kBlock);
  uint64_t pos = 0;
  while (true) {
    if (pos == file_size) break;  // no end-of-archive blocks: tolerated
    if (file_size - pos < kBlock) {
      return Status::Corrupt(path + ": tar header at " + Hex(pos) + " is truncated");
    }
    FERRY_TRY(file.ReadAt(pos, h));
    if (IsAllZero(h.data(), kBlock)) break;  // end of archive
    const std::string where = path + ": tar header at " + Hex(pos);
    uint64_t stored = 0;
    if (!ParseTarNumber(h.data() + kChecksumOff, kChecksumLen, &stored)) {
      return Status::Corrupt(where + ": unreadable checksum field");
    }
    uint64_t sum = 0;
    int64_t signed_sum = 0;
    for (size_t i = 0; i < kBlock; ++i) {
      const uint8_t b = (i >= kChecksumOff && i < kChecksumOff + kChecksumLen) ? ' ' : h[i];
      sum += b;
      signed_sum += static_cast<int8_t>(b);
    }
    if (stored != sum && static_cast<int64_t>(stored) != signed_sum) {
      return Status::Corrupt(where + ": checksum " + std::to_string(stored) +
                             " does not match the header (" + std::to_string(sum) + ")");
    }
    uint64_t size = 0;
    if (!ParseTarNumber(h.data() + kSizeOff, kSizeLen, &size)) {
      return Status::Corrupt(where + ": unreadable size field");
    }
    const char type = static_cast<char>(h[kTypeOff]);
    std::string name = FieldString(h.data() + kNameOff, kNameLen);
    if (std::memcmp(h.data() + kMagicOff, "ustar\0", 6) == 0) {
      std::string prefix = FieldString(h.data() + kPrefixOff, kPrefixLen);
      if (!prefix.empty()) name = prefix + "/" + name;
    }
    if (type == 'x' || type == 'g') {
      // pax headers carry their own size, not a member's.
    } else if (has_pax_size) {
      size = pax_size;
    }
    const uint64_t data_off = pos + kBlock;
    if (size > file_size - data_off) {
      return Status::Corrupt(where + ": member '" + name + "' of " + std::to_string(size) +
                             " bytes runs past the end of the file (" + Hex(file_size) + ")");
    }
    const uint64_t next = data_off + RoundUp(size, kBlock);
    if (type == 'x' || type == 'L') {
      const uint64_t cap = type == 'x' ? kMaxPaxHeader : kMaxLongName;
      if (size > cap) {
        return Status::TooLarge(where + ": " + (type == 'x' ? "pax header" : "GNU long name") +
                                " of " + std::to_string(size) + " bytes");
      }
      std::vector<uint8_t> data(size);
      FERRY_TRY(file.ReadAt(data_off, data));
      std::string_view text(reinterpret_cast<const char*>(data.data()), data.size());
      if (type == 'x') {
        FERRY_TRY(ParsePax(text, where, &pax_path, &has_pax_size, &pax_size));
      } else {
        long_name = FieldString(data.data(), data.size());
      }
      pos = next;
      continue;
    }
    if (type == 'g' || type == 'K') {  // global pax / GNU long link name: nothing we use
      pos = next;
      continue;
    }
    if (!pax_path.empty()) {
      name = pax_path;
    } else if (!long_name.empty()) {
      name = long_name;
    }
    pax_path.clear();
    has_pax_size = false;
    long_name.clear();
    FERRY_TRY(CheckMemberName(name, where));
    if (type == '0' || type == '\0' || type == '7') {
      if (!seen.insert(name).second) {
        return Status::Corrupt(where + ": member '" + name + "' appears twice");
      }
      if (members.size() >= kMaxMembers) {
        return Status::TooLarge(path + ": more than " + std::to_string(kMaxMembers) +
                                " tar members");
      }
      members.push_back({name, data_off, size});
    }
    // Links, devices and other special members are never opened: skip them.
    pos = next;
  }
  return members;
}

// ---- OVF ----

std::string_view LocalName(const char* qname) {
  std::string_view n(qname);
  size_t colon = n.find(':');
  return colon == std::string_view::npos ? n : n.substr(colon + 1);
}

pugi::xml_node Child(pugi::xml_node node, std::string_view local) {
  for (pugi::xml_node c : node.children()) {
    if (c.type() == pugi::node_element && LocalName(c.name()) == local) return c;
  }
  return {};
}

std::string Attr(pugi::xml_node node, std::string_view local) {
  for (pugi::xml_attribute a : node.attributes()) {
    if (LocalName(a.name()) == local) return a.value();
  }
  return "";
}

std::string ChildText(pugi::xml_node node, std::string_view local) {
  return Child(node, local).text().as_string();
}

// Depth-first search for the first element named `local`.
pugi::xml_node Find(pugi::xml_node node, std::string_view local) {
  for (pugi::xml_node c : node.children()) {
    if (c.type() != pugi::node_element) continue;
    if (LocalName(c.name()) == local) return c;
    if (pugi::xml_node f = Find(c, local)) return f;
  }
  return {};
}

bool ParseDecimal(std::string_view s, uint64_t* out) {
  while (!s.empty() && s.front() == ' ') s.remove_prefix(1);
  while (!s.empty() && s.back() == ' ') s.remove_suffix(1);
  if (s.empty()) return false;
  auto r = std::from_chars(s.data(), s.data() + s.size(), *out);
  return r.ec == std::errc() && r.ptr == s.data() + s.size();
}

// DSP0004 programmatic units: "byte", "byte * 2^30", "byte * 10^9", "byte * 1024", and the
// older "KiloBytes"/"MegaBytes"/"GigaBytes". Returns the multiplier in bytes.
Result<uint64_t> ParseByteUnits(std::string units, const std::string& where) {
  std::string s;
  for (char c : units) {
    if (c != ' ' && c != '\t') s += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }
  if (s.empty() || s == "byte" || s == "bytes") return uint64_t{1};
  if (s == "kilobytes" || s == "kb") return uint64_t{1} << 10;
  if (s == "megabytes" || s == "mb") return uint64_t{1} << 20;
  if (s == "gigabytes" || s == "gb") return uint64_t{1} << 30;
  if (s.rfind("byte*", 0) == 0) {
    std::string_view rest = std::string_view(s).substr(5);
    size_t caret = rest.find('^');
    uint64_t base = 0, exp = 0;
    if (caret == std::string_view::npos) {
      if (ParseDecimal(rest, &base) && base > 0) return base;
    } else if (ParseDecimal(rest.substr(0, caret), &base) &&
               ParseDecimal(rest.substr(caret + 1), &exp) && (base == 2 || base == 10)) {
      uint64_t v = 1;
      for (uint64_t i = 0; i < exp; ++i) {
        if (!CheckedMul(v, base, &v))
          return Status::Corrupt(where + ": units '" + units + "' overflow");
      }
      return v;
    }
  }
  return Status::Corrupt(where + ": unknown allocation units '" + units + "'");
}

void ParseHardware(pugi::xml_node hw, OvfDescriptor* d) {
  for (pugi::xml_node item : hw.children()) {
    if (item.type() != pugi::node_element) continue;
    std::string_view name = LocalName(item.name());
    if (name == "Config" && Attr(item, "key") == "firmware") {
      d->firmware = Attr(item, "value");
      continue;
    }
    if (!name.ends_with("Item")) continue;  // Item, StorageItem, EthernetPortItem (OVF 2)
    uint64_t type = 0;
    if (!ParseDecimal(ChildText(item, "ResourceType"), &type)) continue;
    uint64_t quantity = 0;
    const bool has_quantity = ParseDecimal(ChildText(item, "VirtualQuantity"), &quantity);
    if (type == 3 && has_quantity) {  // CIM_ResourceAllocationSettingData: Processor
      d->vcpus = static_cast<uint32_t>(std::min<uint64_t>(quantity, 1u << 20));
    } else if (type == 4 && has_quantity) {  // Memory
      auto unit = ParseByteUnits(ChildText(item, "AllocationUnits"), "memory");
      uint64_t bytes = 0;
      // Memory units default to MB in practice (VMware always writes "byte * 2^20").
      if (ChildText(item, "AllocationUnits").empty()) {
        d->memory_mb = quantity;
      } else if (unit.ok() && CheckedMul(quantity, *unit, &bytes)) {
        d->memory_mb = bytes >> 20;
      }
    } else if (type == 10) {  // Ethernet adapter
      d->nics.push_back({ChildText(item, "ElementName"), ChildText(item, "Connection"),
                         ChildText(item, "ResourceSubType"), ChildText(item, "Address")});
    }
  }
}

std::string ResolveHref(const OvfDescriptor& d, const std::string& file_ref) {
  for (const OvfFile& f : d.files) {
    if (f.id == file_ref) return f.href;
  }
  return "";
}

// ---- Source ----

class OvaSource final : public BlockSource {
 public:
  OvaSource(std::unique_ptr<BlockSource> disk, ImageInfo info)
      : disk_(std::move(disk)), info_(std::move(info)) {}
  uint64_t size() const override { return disk_->size(); }
  ImageInfo info() const override {
    ImageInfo inner = disk_->info();
    ImageInfo info = info_;
    info.virtual_size = inner.virtual_size;
    info.allocated_bytes = inner.allocated_bytes;
    info.cluster_size = inner.cluster_size;
    info.subformat = inner.subformat;
    info.backing_chain = inner.backing_chain;
    for (auto& kv : inner.details) info.details.emplace_back("vmdk." + kv.first, kv.second);
    for (auto& p : inner.problems) info.problems.push_back(p);
    return info;
  }
  Status Extents(uint64_t offset, uint64_t length, std::vector<Extent>* out) override {
    return disk_->Extents(offset, length, out);
  }
  Status Read(uint64_t offset, std::span<uint8_t> buf) override { return disk_->Read(offset, buf); }

 private:
  std::unique_ptr<BlockSource> disk_;
  ImageInfo info_;
};

}  // namespace

Result<OvfDescriptor> ParseOvf(std::string_view xml, const std::string& where) {
  if (xml.size() > kMaxOvfBytes) {
    return Status::TooLarge(where + ": OVF descriptor of " + std::to_string(xml.size()) +
                            " bytes is over the " + std::to_string(kMaxOvfBytes) + "-byte cap");
  }
  pugi::xml_document doc;
  pugi::xml_parse_result parsed;
  try {
    parsed = doc.load_buffer(xml.data(), xml.size(), pugi::parse_default, pugi::encoding_auto);
  } catch (const std::bad_alloc&) {
    return Status::TooLarge(where + ": OVF descriptor too large to parse");
  }
  if (!parsed) {
    return Status::Corrupt(where + ": OVF is not well-formed XML: " + parsed.description() +
                           " at byte " + std::to_string(parsed.offset));
  }
  pugi::xml_node env = doc.document_element();
  if (LocalName(env.name()) != "Envelope") {
    return Status::Corrupt(where + ": root element is <" + std::string(env.name()) +
                           ">, not an OVF <Envelope>");
  }
  OvfDescriptor d;
  for (pugi::xml_node f : Child(env, "References").children()) {
    if (f.type() != pugi::node_element || LocalName(f.name()) != "File") continue;
    OvfFile file;
    file.id = Attr(f, "id");
    file.href = Attr(f, "href");
    file.compression = Attr(f, "compression");
    std::string size = Attr(f, "size");
    if (!size.empty() && !ParseDecimal(size, &file.size)) {
      return Status::Corrupt(where + ": References/File '" + file.id + "' size '" + size + "'");
    }
    std::string chunk = Attr(f, "chunkSize");
    if (!chunk.empty() && !ParseDecimal(chunk, &file.chunk_size)) {
      return Status::Corrupt(where + ": References/File '" + file.id + "' chunkSize '" + chunk +
                             "'");
    }
    d.files.push_back(std::move(file));
  }
  for (pugi::xml_node disk : Find(env, "DiskSection").children()) {
    if (disk.type() != pugi::node_element || LocalName(disk.name()) != "Disk") continue;
    OvfDisk od;
    od.disk_id = Attr(disk, "diskId");
    od.file_ref = Attr(disk, "fileRef");
    od.format_uri = Attr(disk, "format");
    od.file_href = ResolveHref(d, od.file_ref);
    const std::string what = where + ": Disk '" + od.disk_id + "'";
    uint64_t capacity = 0;
    const std::string cap = Attr(disk, "capacity");
    if (!ParseDecimal(cap, &capacity)) {
      return Status::Corrupt(what + ": capacity '" + cap + "' is not a number");
    }
    FERRY_ASSIGN_OR_RETURN(uint64_t unit,
                           ParseByteUnits(Attr(disk, "capacityAllocationUnits"), what));
    if (!CheckedMul(capacity, unit, &od.capacity)) {
      return Status::Corrupt(what + ": capacity overflows");
    }
    std::string populated = Attr(disk, "populatedSize");
    if (!populated.empty()) ParseDecimal(populated, &od.populated_size);
    d.disks.push_back(std::move(od));
  }
  if (pugi::xml_node vs = Find(env, "VirtualSystem")) {
    d.vm_id = Attr(vs, "id");
    d.vm_name = ChildText(vs, "Name");
    if (d.vm_name.empty()) d.vm_name = d.vm_id;
    if (pugi::xml_node hw = Child(vs, "VirtualHardwareSection")) ParseHardware(hw, &d);
  }
  return d;
}

Result<std::vector<ManifestEntry>> ParseManifest(std::string_view text, const std::string& where) {
  if (text.size() > kMaxManifestBytes) {
    return Status::TooLarge(where + ": manifest over the " + std::to_string(kMaxManifestBytes) +
                            "-byte cap");
  }
  std::vector<ManifestEntry> out;
  int line_no = 0;
  while (!text.empty()) {
    size_t eol = text.find('\n');
    std::string_view line = text.substr(0, eol);
    text.remove_prefix(eol == std::string_view::npos ? text.size() : eol + 1);
    ++line_no;
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.remove_suffix(1);
    if (line.empty()) continue;
    const size_t open = line.find('(');
    const size_t close = line.rfind(')');
    const size_t eq = line.rfind('=');
    if (open == std::string_view::npos || close == std::string_view::npos ||
        eq == std::string_view::npos || !(open < close && close < eq)) {
      return Status::Corrupt(where + ": manifest line " + std::to_string(line_no) +
                             " is not 'ALGO(file)= digest'");
    }
    ManifestEntry e;
    std::string_view algo = line.substr(0, open);
    while (!algo.empty() && algo.back() == ' ') algo.remove_suffix(1);
    e.algorithm = std::string(algo);
    e.file = std::string(line.substr(open + 1, close - open - 1));
    std::string_view digest = line.substr(eq + 1);
    while (!digest.empty() && digest.front() == ' ') digest.remove_prefix(1);
    for (char c : digest) {
      if (!std::isxdigit(static_cast<unsigned char>(c))) {
        return Status::Corrupt(where + ": manifest line " + std::to_string(line_no) +
                               ": digest is not hex");
      }
      e.digest_hex += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    }
    out.push_back(std::move(e));
  }
  return out;
}

Result<OvaPackage> ReadOvaPackage(const File& file) {
  const std::string path = file.path();
  OvaPackage pkg;
  FERRY_ASSIGN_OR_RETURN(pkg.members, IndexTar(file));
  const OvaMember* ovf = nullptr;
  const OvaMember* mf = nullptr;
  for (const OvaMember& m : pkg.members) {
    if (!ovf && EndsWithNoCase(m.name, ".ovf")) ovf = &m;
    if (!mf && EndsWithNoCase(m.name, ".mf")) mf = &m;
  }
  if (ovf == nullptr) return Status::Corrupt(path + ": no .ovf descriptor in the OVA");
  if (ovf != &pkg.members.front()) {
    pkg.problems.push_back(path + ": the OVF descriptor '" + ovf->name +
                           "' is not the first member (the OVF spec requires it first)");
  }
  pkg.ovf_member = ovf->name;
  if (ovf->size > kMaxOvfBytes) {
    return Status::TooLarge(path + ": OVF descriptor '" + ovf->name + "' of " +
                            std::to_string(ovf->size) + " bytes is over the cap");
  }
  std::vector<uint8_t> xml(ovf->size);
  FERRY_TRY(file.ReadAt(ovf->offset, xml));
  FERRY_ASSIGN_OR_RETURN(
      pkg.ovf, ParseOvf(std::string_view(reinterpret_cast<const char*>(xml.data()), xml.size()),
                        path + "/" + ovf->name));
  if (mf != nullptr) {
    if (mf->size > kMaxManifestBytes) {
      return Status::TooLarge(path + ": manifest '" + mf->name + "' is over the cap");
    }
    std::vector<uint8_t> text(mf->size);
    FERRY_TRY(file.ReadAt(mf->offset, text));
    FERRY_ASSIGN_OR_RETURN(
        pkg.ovf.manifest,
        ParseManifest(std::string_view(reinterpret_cast<const char*>(text.data()), text.size()),
                      path + "/" + mf->name));
  }
  return pkg;
}

Result<OvfDescriptor> ReadOvaDescriptor(const File& file) {
  FERRY_ASSIGN_OR_RETURN(OvaPackage pkg, ReadOvaPackage(file));
  return std::move(pkg.ovf);
}

Result<std::unique_ptr<BlockSource>> OpenOva(const OpenContext& ctx, std::unique_ptr<File> file) {
  const std::string path = file->path();
  FERRY_ASSIGN_OR_RETURN(OvaPackage pkg, ReadOvaPackage(*file));
  const OvfDescriptor& ovf = pkg.ovf;
  const int index = ctx.options().ova_disk_index;
  if (index < 0 || static_cast<size_t>(index) >= ovf.disks.size()) {
    return Status::NotFound(path + ": disk " + std::to_string(index) +
                            " requested, the OVF lists " + std::to_string(ovf.disks.size()));
  }
  const OvfDisk& disk = ovf.disks[index];
  if (disk.file_href.empty()) {
    return Status::Corrupt(path + ": Disk '" + disk.disk_id + "' refers to file '" + disk.file_ref +
                           "', which References does not list");
  }
  for (const OvfFile& f : ovf.files) {
    if (f.href != disk.file_href) continue;
    if (!f.compression.empty() && f.compression != "identity") {
      return Status::Unsupported(path + ": disk file '" + f.href + "' is " + f.compression +
                                 "-compressed in the package");
    }
    if (f.chunk_size != 0) {
      return Status::Unsupported(path + ": disk file '" + f.href + "' is split into chunks");
    }
  }
  const auto member = std::find_if(pkg.members.begin(), pkg.members.end(),
                                   [&](const OvaMember& m) { return m.name == disk.file_href; });
  if (member == pkg.members.end()) {
    return Status::NotFound(path + ": disk file '" + disk.file_href +
                            "' listed in the OVF is not in the archive");
  }
  const std::string member_path = path + "/" + member->name;
  FERRY_ASSIGN_OR_RETURN(uint64_t ova_size, file->Size());
  std::shared_ptr<File> shared(std::move(file));
  std::vector<uint8_t> magic(std::min<uint64_t>(member->size, 4));
  FERRY_TRY(shared->ReadAt(member->offset, magic));
  if (magic.size() < 4 || LoadLE32(magic.data()) != 0x564d444b) {  // "KDMV"
    return Status::Unsupported(member_path + ": disk format '" + disk.format_uri +
                               "' (Ferry reads VMDK disks inside OVAs)");
  }
  auto slice = NewSliceFile(shared, member->offset, member->size, member_path);
  FERRY_ASSIGN_OR_RETURN(auto vmdk, OpenVmdk(ctx, std::move(slice)));

  ImageInfo info;
  info.format = "ova";
  info.file_size = ova_size;
  info.files = {path};
  info.problems = pkg.problems;
  if (disk.capacity != 0 && disk.capacity != vmdk->size()) {
    info.problems.push_back(member_path + ": the OVF gives Disk '" + disk.disk_id +
                            "' a capacity of " + std::to_string(disk.capacity) +
                            " bytes, the VMDK holds " + std::to_string(vmdk->size()));
  }
  info.details.emplace_back("ovf", pkg.ovf_member);
  info.details.emplace_back("disk", disk.disk_id + " (" + member->name + ", " +
                                        std::to_string(index + 1) + " of " +
                                        std::to_string(ovf.disks.size()) + ")");
  if (!ovf.vm_name.empty()) info.details.emplace_back("vm", ovf.vm_name);
  if (ovf.vcpus != 0) info.details.emplace_back("vcpus", std::to_string(ovf.vcpus));
  if (ovf.memory_mb != 0) info.details.emplace_back("memory_mb", std::to_string(ovf.memory_mb));
  if (!ovf.firmware.empty()) info.details.emplace_back("firmware", ovf.firmware);
  for (const OvfNic& nic : ovf.nics) {
    info.details.emplace_back("nic", nic.adapter + " on '" + nic.network + "'");
  }
  info.details.emplace_back(
      "manifest", ovf.manifest.empty() ? "none" : std::to_string(ovf.manifest.size()) + " digests");
  return std::unique_ptr<BlockSource>(
      std::make_unique<OvaSource>(std::move(vmdk), std::move(info)));
}

}  // namespace ferry
