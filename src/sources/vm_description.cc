// VmDescription's JSON form (docs/formats/vm-description.md) and its helpers.
#include "sources/vm_description.h"

#include <cctype>
#include <nlohmann/json.hpp>
#include <set>

#include "sources/limits.h"

namespace ferry::sources {
namespace {

using nlohmann::json;

// Version of the JSON form; bump it for any change an older reader would misread.
constexpr int kFormatVersion = 1;
constexpr const char* kVersionKey = "ferry_vm_description";

// Caps on untrusted descriptions beyond limits.h.
constexpr size_t kMaxJsonBytes = 16 << 20;
constexpr size_t kMaxNesting = 16;  // the format needs 3 levels; more is not a description
constexpr int64_t kMaxOvaDiskIndex = 1023;

// The deepest bracket nesting of `text`, outside strings. nlohmann's parser is iterative, but
// a value nested 100000 deep is never a description and costs memory to build and free.
size_t NestingDepth(std::string_view text) {
  size_t depth = 0, deepest = 0;
  bool in_string = false, escaped = false;
  for (const char c : text) {
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      deepest = std::max(deepest, ++depth);
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
  return deepest;
}

// Reads the fields of one JSON object, each at most once, and rejects keys it was not asked
// for: a typo in a hand-written vm.json must not silently become a default.
class ObjectReader {
 public:
  ObjectReader(const json& object, std::string where, std::string path)
      : object_(object), where_(std::move(where)), path_(std::move(path)) {}

  Status Error(const std::string& field, const std::string& why) const {
    return Status::Corrupt(where_ + ": " + Path(field) + ": " + why);
  }
  std::string Path(const std::string& field) const {
    return path_.empty() ? field : path_ + "." + field;
  }
  const std::string& where() const { return where_; }

  const json* Find(const char* key) {
    seen_.insert(key);
    const auto it = object_.find(key);
    return it == object_.end() ? nullptr : &*it;
  }

  Status String(const char* key, std::string* out, bool required = false) {
    const json* v = Find(key);
    if (v == nullptr) return required ? Error(key, "missing (required)") : Status::Ok();
    if (!v->is_string()) return Error(key, "expected a string");
    const auto& s = v->get_ref<const std::string&>();
    if (s.size() > kMaxStringBytes) {
      return Error(key, std::to_string(s.size()) + " bytes, more than the cap of " +
                            std::to_string(kMaxStringBytes));
    }
    *out = s;
    return Status::Ok();
  }

  Status Unsigned(const char* key, uint64_t* out, uint64_t max) {
    const json* v = Find(key);
    if (v == nullptr) return Status::Ok();
    if (!v->is_number_unsigned()) return Error(key, "expected an unsigned integer");
    const uint64_t n = v->get<uint64_t>();
    if (n > max) return Error(key, std::to_string(n) + " is more than " + std::to_string(max));
    *out = n;
    return Status::Ok();
  }

  Status Integer(const char* key, int64_t* out, int64_t min, int64_t max) {
    const json* v = Find(key);
    if (v == nullptr) return Status::Ok();
    if (!v->is_number_integer()) return Error(key, "expected an integer");
    if (v->is_number_unsigned() && v->get<uint64_t>() > static_cast<uint64_t>(max)) {
      return Error(key, std::to_string(v->get<uint64_t>()) + " is out of range " +
                            std::to_string(min) + ".." + std::to_string(max));
    }
    const int64_t n = v->get<int64_t>();
    if (n < min || n > max) {
      return Error(key, std::to_string(n) + " is out of range " + std::to_string(min) + ".." +
                            std::to_string(max));
    }
    *out = n;
    return Status::Ok();
  }

  Status Bool(const char* key, bool* out) {
    const json* v = Find(key);
    if (v == nullptr) return Status::Ok();
    if (!v->is_boolean()) return Error(key, "expected true or false");
    *out = v->get<bool>();
    return Status::Ok();
  }

  Status StringList(const char* key, std::vector<std::string>* out) {
    const json* v = Find(key);
    if (v == nullptr) return Status::Ok();
    if (!v->is_array()) return Error(key, "expected an array of strings");
    if (v->size() > kMaxListStrings) {
      return Error(key, std::to_string(v->size()) + " entries, more than the cap of " +
                            std::to_string(kMaxListStrings));
    }
    out->clear();
    for (size_t i = 0; i < v->size(); ++i) {
      const json& e = (*v)[i];
      const std::string field = std::string(key) + "[" + std::to_string(i) + "]";
      if (!e.is_string()) return Error(field, "expected a string");
      if (e.get_ref<const std::string&>().size() > kMaxStringBytes) {
        return Error(field, "more than " + std::to_string(kMaxStringBytes) + " bytes");
      }
      out->push_back(e.get<std::string>());
    }
    return Status::Ok();
  }

  // Every key of the object must have been asked for.
  Status NoUnknownKeys() const {
    for (const auto& [key, value] : object_.items()) {
      if (seen_.count(key) == 0) {
        return Error(key.substr(0, 64), "unknown key (see docs/formats/vm-description.md)");
      }
    }
    return Status::Ok();
  }

 private:
  const json& object_;
  std::string where_;
  std::string path_;
  std::set<std::string> seen_;
};

// A format is a name, not necessarily one Ferry reads: a KVM source's qed disk is described as
// it is, and plan validation (disk_format) says that Ferry cannot read it.
Status CheckFormat(ObjectReader& r, const std::string& format) {
  if (IsFormatName(format)) return Status::Ok();
  return r.Error("format", "'" + format.substr(0, 32) +
                               "' is not a format name ([a-z0-9._-], at most 32, such as qcow2)");
}

Result<DiskDescription> DiskFromJson(const json& j, const std::string& where,
                                     const std::string& path) {
  if (!j.is_object()) return Status::Corrupt(where + ": " + path + ": expected an object");
  ObjectReader r(j, where, path);
  DiskDescription d;
  FERRY_TRY(r.String("id", &d.id));
  FERRY_TRY(r.String("file", &d.file, /*required=*/true));
  FERRY_TRY(r.String("format", &d.format));
  FERRY_TRY(CheckFormat(r, d.format));
  int64_t index = -1;
  FERRY_TRY(r.Integer("ova_disk_index", &index, -1, kMaxOvaDiskIndex));
  d.ova_disk_index = static_cast<int>(index);
  if (d.format == "ova" && d.ova_disk_index < 0) {
    return r.Error("ova_disk_index", "required for format ova (0 = the OVF's first disk)");
  }
  FERRY_TRY(r.Unsigned("capacity_bytes", &d.capacity_bytes, UINT64_MAX));
  FERRY_TRY(r.Unsigned("allocated_bytes", &d.allocated_bytes, UINT64_MAX));
  FERRY_TRY(r.String("bus", &d.bus));
  FERRY_TRY(r.String("datastore", &d.datastore));
  FERRY_TRY(r.String("source_ref", &d.source_ref));
  FERRY_TRY(r.NoUnknownKeys());
  if (d.file.empty()) return r.Error("file", "empty");
  if (d.file.find('\0') != std::string::npos) return r.Error("file", "has a NUL byte");
  return d;
}

Result<NicDescription> NicFromJson(const json& j, const std::string& where,
                                   const std::string& path) {
  if (!j.is_object()) return Status::Corrupt(where + ": " + path + ": expected an object");
  ObjectReader r(j, where, path);
  NicDescription n;
  FERRY_TRY(r.String("id", &n.id));
  FERRY_TRY(r.String("network", &n.network));
  std::string mac;
  FERRY_TRY(r.String("mac", &mac));
  if (!mac.empty()) {
    auto normalized = NormalizeMac(mac);
    if (!normalized.ok()) return r.Error("mac", normalized.status().message());
    n.mac = *normalized;
  }
  FERRY_TRY(r.String("model", &n.model));
  FERRY_TRY(r.NoUnknownKeys());
  return n;
}

}  // namespace

std::string_view PlatformName(Platform p) {
  switch (p) {
    case Platform::kUnknown: return "unknown";
    case Platform::kKvm: return "kvm";
    case Platform::kVmware: return "vmware";
    case Platform::kHyperV: return "hyperv";
    case Platform::kFerry: return "ferry";
  }
  return "unknown";
}

Result<Platform> ParsePlatform(std::string_view name) {
  for (const Platform p : {Platform::kUnknown, Platform::kKvm, Platform::kVmware, Platform::kHyperV,
                           Platform::kFerry}) {
    if (name == PlatformName(p)) return p;
  }
  return Status::InvalidArgument("unknown platform '" + std::string(name.substr(0, 32)) +
                                 "' (known: unknown, kvm, vmware, hyperv, ferry)");
}

Result<std::string> NormalizeMac(std::string_view text) {
  std::string hex;
  for (const char c : text) {
    if (c == ':' || c == '-' || c == '.') continue;
    if (!std::isxdigit(static_cast<unsigned char>(c)) || hex.size() >= 12) {
      hex.clear();
      break;
    }
    hex.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
  }
  if (hex.size() != 12) {
    return Status::Corrupt("'" + std::string(text.substr(0, 32)) +
                           "' is not a MAC address (12 hex digits)");
  }
  std::string mac;
  for (size_t i = 0; i < 12; i += 2) {
    if (i > 0) mac.push_back(':');
    mac.append(hex, i, 2);
  }
  return mac;
}

std::string ToJson(const VmDescription& vm) {
  json disks = json::array();
  for (const DiskDescription& d : vm.disks) {
    json jd = {{"id", d.id},
               {"file", d.file},
               {"format", d.format},
               {"capacity_bytes", d.capacity_bytes},
               {"allocated_bytes", d.allocated_bytes},
               {"bus", d.bus},
               {"datastore", d.datastore},
               {"source_ref", d.source_ref}};
    if (d.ova_disk_index >= 0) jd["ova_disk_index"] = d.ova_disk_index;
    disks.push_back(std::move(jd));
  }
  json nics = json::array();
  for (const NicDescription& n : vm.nics) {
    nics.push_back({{"id", n.id}, {"network", n.network}, {"mac", n.mac}, {"model", n.model}});
  }
  json j = {{kVersionKey, kFormatVersion},
            {"name", vm.name},
            {"uuid", vm.uuid},
            {"platform", std::string(PlatformName(vm.platform))},
            {"vcpus", vm.vcpus},
            {"memory_bytes", vm.memory_bytes},
            {"firmware", vm.firmware},
            {"machine", vm.machine},
            {"arch", vm.arch},
            {"os", vm.os},
            {"running", vm.running},
            {"disks", std::move(disks)},
            {"nics", std::move(nics)},
            {"missing", vm.missing},
            {"problems", vm.problems},
            {"descriptor", vm.descriptor}};
  if (!vm.direct_boot.kernel.empty() || !vm.direct_boot.initrd.empty() ||
      !vm.direct_boot.cmdline.empty()) {
    j["direct_boot"] = {{"kernel", vm.direct_boot.kernel},
                        {"initrd", vm.direct_boot.initrd},
                        {"cmdline", vm.direct_boot.cmdline}};
  }
  // Replace invalid UTF-8 (a descriptor's odd bytes) rather than throw.
  return j.dump(2, ' ', false, json::error_handler_t::replace);
}

Result<VmDescription> VmDescriptionFromJson(std::string_view text, const std::string& where) {
  if (text.size() > kMaxJsonBytes) {
    return Status::TooLarge(where + ": " + std::to_string(text.size()) +
                            " bytes, more than the cap of " + std::to_string(kMaxJsonBytes));
  }
  if (NestingDepth(text) > kMaxNesting) {
    return Status::Corrupt(where + ": nested more than " + std::to_string(kMaxNesting) +
                           " levels deep");
  }
  json j;
  try {
    j = json::parse(text.begin(), text.end());
  } catch (const json::parse_error& e) {
    // e.what() reads "[json.exception.parse_error.101] parse error at line 1, column 9: ...".
    std::string why = e.what();
    const size_t bracket = why.find("] ");
    if (bracket != std::string::npos) why = why.substr(bracket + 2);
    return Status::Corrupt(where + ": malformed JSON: " + why);
  } catch (const json::exception& e) {
    return Status::Corrupt(where + ": malformed JSON: " + std::string(e.what()));
  }
  if (!j.is_object()) return Status::Corrupt(where + ": expected a JSON object");
  ObjectReader r(j, where, "");

  int64_t version = 0;
  if (r.Find(kVersionKey) == nullptr) {
    return r.Error(kVersionKey, "missing: not a Ferry VM description");
  }
  FERRY_TRY(r.Integer(kVersionKey, &version, 0, INT32_MAX));
  if (version != kFormatVersion) {
    return Status::Unsupported(where + ": " + kVersionKey + " " + std::to_string(version) +
                               ": this Ferry reads version " + std::to_string(kFormatVersion));
  }

  VmDescription vm;
  FERRY_TRY(r.String("name", &vm.name, /*required=*/true));
  if (vm.name.empty()) return r.Error("name", "empty");
  FERRY_TRY(r.String("uuid", &vm.uuid));
  for (char& c : vm.uuid) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  std::string platform = "unknown";
  FERRY_TRY(r.String("platform", &platform));
  auto parsed_platform = ParsePlatform(platform);
  if (!parsed_platform.ok()) return r.Error("platform", parsed_platform.status().message());
  vm.platform = *parsed_platform;
  int64_t vcpus = 0;
  FERRY_TRY(r.Integer("vcpus", &vcpus, 0, kMaxVcpus));
  vm.vcpus = static_cast<int>(vcpus);
  FERRY_TRY(r.Unsigned("memory_bytes", &vm.memory_bytes, kMaxMemoryBytes));
  FERRY_TRY(r.String("firmware", &vm.firmware));
  if (vm.firmware != "" && vm.firmware != "bios" && vm.firmware != "uefi") {
    return r.Error("firmware", "'" + vm.firmware.substr(0, 32) + "' is not bios, uefi or \"\"");
  }
  FERRY_TRY(r.String("machine", &vm.machine));
  FERRY_TRY(r.String("arch", &vm.arch));
  if (vm.arch.empty()) vm.arch = "x86_64";
  FERRY_TRY(r.String("os", &vm.os));
  FERRY_TRY(r.Bool("running", &vm.running));

  if (const json* boot = r.Find("direct_boot")) {
    if (!boot->is_object()) return r.Error("direct_boot", "expected an object");
    ObjectReader b(*boot, where, "direct_boot");
    FERRY_TRY(b.String("kernel", &vm.direct_boot.kernel));
    FERRY_TRY(b.String("initrd", &vm.direct_boot.initrd));
    FERRY_TRY(b.String("cmdline", &vm.direct_boot.cmdline));
    FERRY_TRY(b.NoUnknownKeys());
    if (vm.direct_boot.kernel.empty() &&
        (!vm.direct_boot.initrd.empty() || !vm.direct_boot.cmdline.empty())) {
      return b.Error("kernel", "empty, but initrd or cmdline is set");
    }
  }

  const json* disks = r.Find("disks");
  if (disks == nullptr) return r.Error("disks", "missing (required; [] for none)");
  if (!disks->is_array()) return r.Error("disks", "expected an array");
  if (disks->size() > kMaxDisks) {
    return r.Error("disks", std::to_string(disks->size()) + " disks, more than the cap of " +
                                std::to_string(kMaxDisks));
  }
  std::set<std::string> disk_ids;
  for (size_t i = 0; i < disks->size(); ++i) {
    const std::string path = "disks[" + std::to_string(i) + "]";
    FERRY_ASSIGN_OR_RETURN(DiskDescription d, DiskFromJson((*disks)[i], where, path));
    if (d.id.empty()) d.id = "disk" + std::to_string(i);
    if (!disk_ids.insert(d.id).second) {
      return Status::Corrupt(where + ": " + path + ".id: '" + d.id.substr(0, 64) +
                             "' is used by an earlier disk");
    }
    vm.disks.push_back(std::move(d));
  }

  if (const json* nics = r.Find("nics")) {
    if (!nics->is_array()) return r.Error("nics", "expected an array");
    if (nics->size() > kMaxNics) {
      return r.Error("nics", std::to_string(nics->size()) + " NICs, more than the cap of " +
                                 std::to_string(kMaxNics));
    }
    std::set<std::string> nic_ids;
    for (size_t i = 0; i < nics->size(); ++i) {
      const std::string path = "nics[" + std::to_string(i) + "]";
      FERRY_ASSIGN_OR_RETURN(NicDescription n, NicFromJson((*nics)[i], where, path));
      if (n.id.empty()) n.id = "nic" + std::to_string(i);
      if (!nic_ids.insert(n.id).second) {
        return Status::Corrupt(where + ": " + path + ".id: '" + n.id.substr(0, 64) +
                               "' is used by an earlier NIC");
      }
      vm.nics.push_back(std::move(n));
    }
  }

  FERRY_TRY(r.StringList("missing", &vm.missing));
  for (size_t i = 0; i < vm.missing.size(); ++i) {
    const std::string& m = vm.missing[i];
    if (m != "vcpus" && m != "memory" && m != "firmware") {
      return r.Error("missing[" + std::to_string(i) + "]",
                     "'" + m.substr(0, 32) + "' is not vcpus, memory or firmware");
    }
  }
  FERRY_TRY(r.StringList("problems", &vm.problems));
  FERRY_TRY(r.String("descriptor", &vm.descriptor));
  FERRY_TRY(r.NoUnknownKeys());
  return vm;
}

namespace {

// Length of the well-formed UTF-8 sequence at s[i], or 0 (RFC 3629, table 3-7 of Unicode).
size_t Utf8SequenceAt(std::string_view s, size_t i) {
  const auto b = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char c = b(i);
  if (c < 0x80) return 1;
  size_t n = 0;
  unsigned char lo = 0x80, hi = 0xbf;
  if (c >= 0xc2 && c <= 0xdf) {
    n = 2;
  } else if (c >= 0xe0 && c <= 0xef) {
    n = 3;
    if (c == 0xe0) lo = 0xa0;
    if (c == 0xed) hi = 0x9f;
  } else if (c >= 0xf0 && c <= 0xf4) {
    n = 4;
    if (c == 0xf0) lo = 0x90;
    if (c == 0xf4) hi = 0x8f;
  } else {
    return 0;
  }
  if (i + n > s.size()) return 0;
  if (b(i + 1) < lo || b(i + 1) > hi) return 0;
  for (size_t k = 2; k < n; ++k) {
    if (b(i + k) < 0x80 || b(i + k) > 0xbf) return 0;
  }
  return n;
}

}  // namespace

bool IsFormatName(std::string_view s) {
  if (s.size() > 32) return false;
  for (const char c : s) {
    const bool ok =
        (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

bool IsValidUtf8(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    const size_t n = Utf8SequenceAt(s, i);
    if (n == 0) return false;
    i += n;
  }
  return true;
}

std::string SanitizeUtf8(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    const size_t n = Utf8SequenceAt(s, i);
    if (n == 0) {
      out.push_back('?');
      ++i;
    } else {
      out.append(s.substr(i, n));
      i += n;
    }
  }
  return out;
}

Status CheckDescriptionLimits(const VmDescription& vm, const std::string& where) {
  auto check = [&](const std::string& value, const std::string& field) -> Status {
    if (value.size() > kMaxStringBytes) {
      return Status::Corrupt(where + ": " + field + ": " + std::to_string(value.size()) +
                             " bytes, more than the cap of " + std::to_string(kMaxStringBytes));
    }
    if (!IsValidUtf8(value)) return Status::Corrupt(where + ": " + field + ": not valid UTF-8");
    return Status::Ok();
  };
  FERRY_TRY(check(vm.name, "name"));
  FERRY_TRY(check(vm.uuid, "uuid"));
  FERRY_TRY(check(vm.firmware, "firmware"));
  FERRY_TRY(check(vm.machine, "machine"));
  FERRY_TRY(check(vm.arch, "arch"));
  FERRY_TRY(check(vm.os, "os"));
  FERRY_TRY(check(vm.descriptor, "descriptor"));
  FERRY_TRY(check(vm.direct_boot.kernel, "direct_boot.kernel"));
  FERRY_TRY(check(vm.direct_boot.initrd, "direct_boot.initrd"));
  FERRY_TRY(check(vm.direct_boot.cmdline, "direct_boot.cmdline"));
  if (vm.disks.size() > kMaxDisks) {
    return Status::TooLarge(where + ": " + std::to_string(vm.disks.size()) +
                            " disks, more than the cap of " + std::to_string(kMaxDisks));
  }
  if (vm.nics.size() > kMaxNics) {
    return Status::TooLarge(where + ": " + std::to_string(vm.nics.size()) +
                            " NICs, more than the cap of " + std::to_string(kMaxNics));
  }
  for (size_t i = 0; i < vm.disks.size(); ++i) {
    const DiskDescription& d = vm.disks[i];
    const std::string at = "disks[" + std::to_string(i) + "].";
    if (!IsFormatName(d.format)) {
      return Status::Corrupt(where + ": " + at + "format: '" +
                             SanitizeUtf8(d.format.substr(0, 32)) + "' is not a format name");
    }
    for (const auto& [value, field] :
         {std::pair{&d.id, "id"}, std::pair{&d.file, "file"}, std::pair{&d.format, "format"},
          std::pair{&d.bus, "bus"}, std::pair{&d.datastore, "datastore"},
          std::pair{&d.source_ref, "source_ref"}}) {
      FERRY_TRY(check(*value, at + field));
    }
  }
  for (size_t i = 0; i < vm.nics.size(); ++i) {
    const NicDescription& n = vm.nics[i];
    const std::string at = "nics[" + std::to_string(i) + "].";
    for (const auto& [value, field] : {std::pair{&n.id, "id"}, std::pair{&n.network, "network"},
                                       std::pair{&n.mac, "mac"}, std::pair{&n.model, "model"}}) {
      FERRY_TRY(check(*value, at + field));
    }
  }
  return Status::Ok();
}

void AddProblem(VmDescription& vm, std::string line) {
  if (vm.problems.size() >= kMaxListStrings) return;
  if (vm.problems.size() == kMaxListStrings - 1) {
    line = "more problems were not recorded (at most " + std::to_string(kMaxListStrings) + ")";
  }
  line = SanitizeUtf8(line);
  if (line.size() > kMaxStringBytes) {
    // Cut on a character boundary so that the line stays valid UTF-8.
    size_t cut = kMaxStringBytes;
    while (cut > 0 && (static_cast<unsigned char>(line[cut]) & 0xc0) == 0x80) --cut;
    line.resize(cut);
  }
  vm.problems.push_back(std::move(line));
}

void ComputeMissing(VmDescription& vm) {
  vm.missing.clear();
  if (vm.vcpus <= 0) vm.missing.push_back("vcpus");
  if (vm.memory_bytes == 0) vm.missing.push_back("memory");
  if (vm.firmware.empty()) vm.missing.push_back("firmware");
}

}  // namespace ferry::sources
