// ScanShare / ReadShareVm (share.h): finds the VMs in an export share and describes them.
//
// A scan walks the share (not following symlinked folders, skipping dot entries such as a
// staging plan's `.<name>.ferry-part/`), classifies each file by name, describes every
// descriptor (OVA, OVF, Hyper-V XML or VMCX, vm.json, libvirt domain XML), and lists what is
// left of the disk images as bare disks. Each reference a descriptor makes is resolved with
// realpath and must stay inside the share.
#include "sources/share.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <set>

#include "common/file.h"
#include "disk/image.h"
#include "disk/ova/ova.h"
#include "sources/limits.h"

namespace ferry::sources {
namespace {

namespace fs = std::filesystem;

constexpr uint64_t kMiB = 1 << 20;
constexpr uint64_t kMaxMemoryMb = 16ull << 20;

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string BaseName(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

std::string Extension(const std::string& path) {
  const std::string base = BaseName(path);
  const size_t dot = base.find_last_of('.');
  return dot == std::string::npos || dot == 0 ? "" : Lower(base.substr(dot));
}

std::string Stem(const std::string& path) {
  const std::string base = BaseName(path);
  const size_t dot = base.find_last_of('.');
  return dot == std::string::npos || dot == 0 ? base : base.substr(0, dot);
}

// "a/b/c" -> "a/b"; "c" -> "".
std::string RelDir(const std::string& rel) {
  const size_t slash = rel.find_last_of('/');
  return slash == std::string::npos ? "" : rel.substr(0, slash);
}

Result<std::string> RealPath(const std::string& path) {
  char buf[PATH_MAX];
  if (::realpath(path.c_str(), buf) == nullptr) {
    return Status::NotFound(path + ": " + std::strerror(errno));
  }
  return std::string(buf);
}

bool IsInside(const std::string& root, const std::string& real) {
  return real == root || (real.size() > root.size() && real.compare(0, root.size(), root) == 0 &&
                          (root == "/" || real[root.size()] == '/'));
}

bool IsDiskExtension(const std::string& ext) {
  return ext == ".qcow2" || ext == ".raw" || ext == ".img" || ext == ".vhdx" || ext == ".vhd" ||
         ext == ".vmdk";
}

bool IsHyperVDiskExtension(const std::string& ext) {
  return ext == ".vhdx" || ext == ".vhd" || ext == ".avhdx" || ext == ".avhd";
}

enum class Kind { kNone, kOva, kOvf, kHyperVXml, kHyperVVmcx, kFerryJson, kXml, kBareDisk };

// What a file is, by its name and place. kXml is a libvirt domain only if its root is <domain>.
Kind Classify(const std::string& rel) {
  const std::string base = BaseName(rel);
  const std::string ext = Extension(rel);
  const std::string dir = Lower(BaseName(RelDir(rel)));
  if (base == "vm.json") return Kind::kFerryJson;
  if (ext == ".ova") return Kind::kOva;
  if (ext == ".ovf") return Kind::kOvf;
  if (dir == "virtual machines" && ext == ".xml") return Kind::kHyperVXml;
  if (dir == "virtual machines" && ext == ".vmcx") return Kind::kHyperVVmcx;
  if (ext == ".xml") return Kind::kXml;
  if (IsDiskExtension(ext)) return Kind::kBareDisk;
  return Kind::kNone;
}

// One share being read: its name, its real root, and the policy.
struct ShareContext {
  std::string name;
  std::string root;  // realpath of the share's folder
  ScanOptions options;

  std::string Abs(const std::string& rel) const { return rel.empty() ? root : root + "/" + rel; }
};

// Errors and problems start with the descriptor's id; add it when a lower layer named the
// file by its absolute path or not at all.
Status Named(const Status& s, const std::string& rel) {
  if (s.ok() || s.message().compare(0, rel.size(), rel) == 0) return s;
  return s.WithContext(rel);
}

// Resolves `reference` found in descriptor `rel` (relative to the descriptor's folder, or
// absolute) to a real regular file inside the share.
Result<std::string> ResolveInShare(const ShareContext& share, const std::string& rel,
                                   const std::string& reference, const std::string& what) {
  if (reference.empty()) return Status::Corrupt(rel + ": " + what + ": empty file name");
  if (reference.find('\0') != std::string::npos) {
    return Status::Corrupt(rel + ": " + what + ": file name has a NUL byte");
  }
  const std::string candidate =
      reference[0] == '/' ? reference : JoinPath(share.Abs(RelDir(rel)), reference);
  auto real = RealPath(candidate);
  if (!real.ok()) {
    return Status::NotFound(rel + ": " + what + " '" + reference + "' not found (looked for " +
                            candidate + ")");
  }
  if (!IsInside(share.root, *real)) {
    return Status::PermissionDenied(rel + ": " + what + " '" + reference + "' resolves to " +
                                    *real + ", outside the share " + share.root);
  }
  struct stat st;
  if (::stat(real->c_str(), &st) != 0 || !S_ISREG(st.st_mode)) {
    return Status::Corrupt(rel + ": " + what + " '" + reference + "' is not a regular file");
  }
  return *real;
}

// Reads a descriptor of at most max_descriptor_bytes.
Result<std::string> ReadDescriptor(const ShareContext& share, const std::string& rel) {
  const std::string path = share.Abs(rel);
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    return Status::NotFound(rel + ": " + std::strerror(errno));
  }
  if (static_cast<uint64_t>(st.st_size) > share.options.max_descriptor_bytes) {
    return Status::TooLarge(rel + ": " + std::to_string(st.st_size) +
                            " bytes, more than the descriptor cap of " +
                            std::to_string(share.options.max_descriptor_bytes));
  }
  FERRY_ASSIGN_OR_RETURN(auto file, PosixEnv()->Open(path, OpenMode::kRead));
  FERRY_ASSIGN_OR_RETURN(const uint64_t size, file->Size());
  if (size > share.options.max_descriptor_bytes) {
    return Status::TooLarge(rel + ": grew past the descriptor cap while being read");
  }
  std::string text(size, '\0');
  FERRY_TRY(file->ReadAt(0, std::span<uint8_t>(reinterpret_cast<uint8_t*>(text.data()), size)));
  return text;
}

// What opening a disk image found.
struct OpenedDisk {
  std::string format;
  uint64_t capacity = 0;
  uint64_t allocated = 0;
  std::vector<std::string> files;  // real paths of every file of the image (chain, extents)
};

// Opens `real` (headers only) under the share's policy: every file it refers to must be in
// the share.
Result<OpenedDisk> OpenDisk(const ShareContext& share, const std::string& rel,
                            const std::string& real, const std::string& format) {
  OpenOptions options;
  options.allowed_dirs = {share.root};
  if (!format.empty()) {
    auto parsed = ParseImageFormat(format);
    if (!parsed.ok()) return Status::Unsupported(rel + ": disk format '" + format + "'");
    options.format = *parsed;
  }
  auto source = OpenImage(real, options);
  if (!source.ok()) return Named(source.status(), rel);
  const ImageInfo info = (*source)->info();
  OpenedDisk d;
  d.format = info.format;
  d.capacity = (*source)->size();
  d.allocated = info.allocated_bytes;
  for (const std::string& f : info.files) {
    auto f_real = RealPath(f);
    if (!f_real.ok()) return Status::NotFound(rel + ": image file " + f + " vanished");
    if (!IsInside(share.root, *f_real)) {
      return Status::PermissionDenied(rel + ": " + real + " refers to " + *f_real +
                                      ", outside the share " + share.root);
    }
    d.files.push_back(*f_real);
  }
  if (d.files.empty()) d.files.push_back(real);
  return d;
}

// A described VM and the real paths of the files it consists of.
struct Described {
  ShareVm vm;
  std::set<std::string> files;
};

Status AddOpenedDisk(const ShareContext& share, const std::string& rel, const std::string& real,
                     DiskDescription& disk, Described& out) {
  FERRY_ASSIGN_OR_RETURN(const OpenedDisk opened, OpenDisk(share, rel, real, disk.format));
  disk.file = real;
  disk.format = opened.format;
  disk.capacity_bytes = opened.capacity;
  disk.allocated_bytes = opened.allocated;
  out.files.insert(opened.files.begin(), opened.files.end());
  return Status::Ok();
}

// Sets what every share VM has in common and checks that it can be sent as JSON (a file
// name that is not UTF-8 cannot).
Status Finish(const ShareContext& share, const std::string& rel, Described& d) {
  d.vm.id = rel;
  d.vm.share = share.name;
  d.vm.vm.descriptor = share.Abs(rel);
  for (size_t i = 0; i < d.vm.vm.disks.size(); ++i) {
    d.vm.vm.disks[i].id = "disk" + std::to_string(i);
    d.vm.vm.disks[i].datastore = share.name;
  }
  for (size_t i = 0; i < d.vm.vm.nics.size(); ++i) d.vm.vm.nics[i].id = "nic" + std::to_string(i);
  ComputeMissing(d.vm.vm);
  d.files.insert(share.Abs(rel));
  return CheckDescriptionLimits(d.vm.vm, rel);
}

std::string OvfFirmware(const std::string& firmware, VmDescription& vm) {
  if (firmware == "efi") return "uefi";
  if (firmware == "bios" || firmware.empty()) return "bios";  // VMware's default is BIOS
  AddProblem(vm, "OVF: unknown firmware '" + firmware.substr(0, 32) + "'");
  return "";
}

// The machine parts of an OVF: name, vCPUs, memory, firmware, NICs.
Status FromOvf(const OvfDescriptor& ovf, const std::string& rel, VmDescription& vm) {
  vm.platform = Platform::kVmware;
  vm.name = ovf.vm_name.empty() ? Stem(rel) : ovf.vm_name;
  if (ovf.vcpus > 4096) {
    return Status::Corrupt(rel + ": OVF: " + std::to_string(ovf.vcpus) + " vCPUs, more than 4096");
  }
  vm.vcpus = static_cast<int>(ovf.vcpus);
  if (ovf.memory_mb > kMaxMemoryMb) {
    return Status::Corrupt(rel + ": OVF: " + std::to_string(ovf.memory_mb) +
                           " MB of memory, more than 16 TiB");
  }
  vm.memory_bytes = ovf.memory_mb * kMiB;
  vm.firmware = OvfFirmware(ovf.firmware, vm);
  if (ovf.disks.size() > kMaxDisks) {
    return Status::TooLarge(rel + ": OVF: " + std::to_string(ovf.disks.size()) +
                            " disks, more than the cap of " + std::to_string(kMaxDisks));
  }
  for (const OvfNic& n : ovf.nics) {
    NicDescription nic;
    nic.network = n.network;
    nic.model = Lower(n.adapter);
    if (!n.mac.empty()) {
      auto mac = NormalizeMac(n.mac);
      if (mac.ok()) {
        nic.mac = *mac;
      } else {
        AddProblem(vm, "OVF: " + n.name + ": " + mac.status().message());
      }
    }
    vm.nics.push_back(std::move(nic));
  }
  return Status::Ok();
}

Result<Described> DescribeOva(const ShareContext& share, const std::string& rel) {
  FERRY_ASSIGN_OR_RETURN(const std::string real, ResolveInShare(share, rel, BaseName(rel), "OVA"));
  auto file = PosixEnv()->Open(real, OpenMode::kRead);
  if (!file.ok()) return Named(file.status(), rel);
  auto package = ReadOvaPackage(**file);
  if (!package.ok()) return Named(package.status(), rel);
  Described d;
  FERRY_TRY(FromOvf(package->ovf, rel, d.vm.vm));
  for (const std::string& p : package->problems) AddProblem(d.vm.vm, p);
  for (size_t i = 0; i < package->ovf.disks.size(); ++i) {
    const OvfDisk& od = package->ovf.disks[i];
    bool present = false;
    for (const OvaMember& m : package->members) present = present || m.name == od.file_href;
    if (!present) {
      return Status::Corrupt(rel + ": OVF disk " + od.disk_id + ": file '" + od.file_href +
                             "' is not in the package");
    }
    DiskDescription disk;
    disk.file = real;
    disk.format = "ova";
    disk.ova_disk_index = static_cast<int>(i);
    disk.capacity_bytes = od.capacity;
    disk.allocated_bytes = od.populated_size;
    disk.source_ref = od.disk_id;
    d.vm.vm.disks.push_back(std::move(disk));
  }
  d.files.insert(real);
  return d;
}

Result<Described> DescribeOvf(const ShareContext& share, const std::string& rel) {
  FERRY_ASSIGN_OR_RETURN(const std::string text, ReadDescriptor(share, rel));
  auto ovf = ParseOvf(text, rel);
  if (!ovf.ok()) return Named(ovf.status(), rel);
  Described d;
  FERRY_TRY(FromOvf(*ovf, rel, d.vm.vm));
  for (const OvfDisk& od : ovf->disks) {
    const OvfFile* ref = nullptr;
    for (const OvfFile& f : ovf->files) {
      if (f.id == od.file_ref) ref = &f;
    }
    if (ref != nullptr && (!ref->compression.empty() || ref->chunk_size != 0)) {
      return Status::Unsupported(rel + ": OVF disk " + od.disk_id + ": file '" + ref->href +
                                 "' is compressed or chunked; unpack it first");
    }
    const std::string& href = ref != nullptr ? ref->href : od.file_href;
    FERRY_ASSIGN_OR_RETURN(const std::string real,
                           ResolveInShare(share, rel, href, "OVF disk " + od.disk_id));
    DiskDescription disk;
    disk.source_ref = od.disk_id;
    FERRY_TRY(AddOpenedDisk(share, rel, real, disk, d));
    d.vm.vm.disks.push_back(std::move(disk));
  }
  return d;
}

// DIR of DIR/Virtual Machines/x, and DIR/Virtual Hard Disks (whatever its case) if present.
struct HyperVFolders {
  std::string export_rel;
  std::string disks_rel;  // "" if there is none
};

HyperVFolders FindHyperVFolders(const ShareContext& share, const std::string& rel) {
  HyperVFolders f;
  f.export_rel = RelDir(RelDir(rel));
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(share.Abs(f.export_rel), ec)) {
    const std::string name = entry.path().filename().string();
    if (Lower(name) == "virtual hard disks" && entry.is_directory(ec) && !entry.is_symlink(ec)) {
      f.disks_rel = f.export_rel.empty() ? name : f.export_rel + "/" + name;
    }
  }
  return f;
}

// Regular files of a folder (names), sorted.
std::vector<std::string> ListFiles(const std::string& dir) {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (!name.empty() && name[0] != '.') names.push_back(name);
  }
  std::sort(names.begin(), names.end());
  return names;
}

Result<Described> DescribeHyperVXml(const ShareContext& share, const std::string& rel) {
  FERRY_ASSIGN_OR_RETURN(const std::string text, ReadDescriptor(share, rel));
  FERRY_ASSIGN_OR_RETURN(VmDescription vm, ParseHyperVConfig(text, rel));
  const HyperVFolders folders = FindHyperVFolders(share, rel);
  const std::vector<std::string> names = folders.disks_rel.empty()
                                             ? std::vector<std::string>{}
                                             : ListFiles(share.Abs(folders.disks_rel));
  Described d;
  for (DiskDescription& disk : vm.disks) {
    // Hyper-V records where the disk was on the Windows host; the export holds it by name.
    const std::string& windows_path = disk.source_ref;
    const size_t sep = windows_path.find_last_of("\\/");
    const std::string file_name =
        sep == std::string::npos ? windows_path : windows_path.substr(sep + 1);
    std::string found;
    for (const std::string& n : names) {
      if (n == file_name) found = n;
    }
    if (found.empty()) {
      for (const std::string& n : names) {
        if (Lower(n) == Lower(file_name)) found = n;
      }
    }
    if (found.empty() || file_name.empty()) {
      return Status::NotFound(rel + ": disk '" + windows_path + "': no " + file_name + " in " +
                              (folders.export_rel.empty() ? "" : folders.export_rel + "/") +
                              "Virtual Hard Disks/");
    }
    FERRY_ASSIGN_OR_RETURN(
        const std::string real,
        ResolveInShare(share, rel, share.Abs(folders.disks_rel + "/" + found), "disk"));
    disk.format.clear();  // probe: the extension Hyper-V wrote is a hint only
    FERRY_TRY(AddOpenedDisk(share, rel, real, disk, d));
  }
  d.vm.vm = std::move(vm);
  return d;
}

// Bare disk images among `rels`: opened, and those that are files of another (a VMDK's
// extents, a differencing disk's parent) dropped. Returns rel -> (opened, real); problems for
// the ones that cannot be opened.
struct BareDisk {
  std::string rel;
  std::string real;
  OpenedDisk opened;
};

std::vector<BareDisk> OpenBareDisks(const ShareContext& share, const std::vector<std::string>& rels,
                                    std::vector<std::string>* problems,
                                    std::map<std::string, Status>* errors = nullptr) {
  std::vector<BareDisk> disks;
  std::set<std::string> parts;
  for (const std::string& rel : rels) {
    auto real = ResolveInShare(share, rel, share.Abs(rel), "disk");
    Result<OpenedDisk> opened =
        real.ok() ? OpenDisk(share, rel, *real, "") : Result<OpenedDisk>(real.status());
    if (!opened.ok()) {
      if (problems != nullptr) problems->push_back(opened.status().message() + " (skipped)");
      if (errors != nullptr) errors->emplace(rel, opened.status());
      continue;
    }
    for (const std::string& f : opened->files) {
      if (f != *real) parts.insert(f);
    }
    disks.push_back({rel, *real, std::move(*opened)});
  }
  std::vector<BareDisk> out;
  for (BareDisk& d : disks) {
    if (parts.count(d.real) == 0) out.push_back(std::move(d));
  }
  return out;
}

Result<Described> DescribeHyperVVmcx(const ShareContext& share, const std::string& rel) {
  FERRY_TRY(ResolveInShare(share, rel, share.Abs(rel), "configuration").status());
  const HyperVFolders folders = FindHyperVFolders(share, rel);
  Described d;
  VmDescription& vm = d.vm.vm;
  vm.platform = Platform::kHyperV;
  vm.name = folders.export_rel.empty() ? Stem(rel) : BaseName(folders.export_rel);
  vm.firmware.clear();
  AddProblem(vm, BaseName(rel) +
                     ": .vmcx is a binary format Ferry does not read; the plan must supply "
                     "vcpus, memory and firmware");
  std::vector<std::string> rels;
  if (!folders.disks_rel.empty()) {
    for (const std::string& n : ListFiles(share.Abs(folders.disks_rel))) {
      if (IsHyperVDiskExtension(Extension(n))) rels.push_back(folders.disks_rel + "/" + n);
    }
  }
  std::vector<std::string> problems;
  for (BareDisk& b : OpenBareDisks(share, rels, &problems)) {
    if (vm.disks.size() >= kMaxDisks) {
      return Status::TooLarge(rel + ": more than " + std::to_string(kMaxDisks) + " disks");
    }
    DiskDescription disk;
    disk.file = b.real;
    disk.format = b.opened.format;
    disk.capacity_bytes = b.opened.capacity;
    disk.allocated_bytes = b.opened.allocated;
    disk.source_ref = BaseName(b.rel);
    d.files.insert(b.opened.files.begin(), b.opened.files.end());
    vm.disks.push_back(std::move(disk));
  }
  if (!problems.empty()) {
    return Status::Corrupt(rel + ": a disk cannot be read: " + problems.front());
  }
  return d;
}

Result<Described> DescribeFerryJson(const ShareContext& share, const std::string& rel) {
  FERRY_ASSIGN_OR_RETURN(const std::string text, ReadDescriptor(share, rel));
  FERRY_ASSIGN_OR_RETURN(VmDescription vm, VmDescriptionFromJson(text, rel));
  vm.running = false;
  Described d;
  for (size_t i = 0; i < vm.disks.size(); ++i) {
    DiskDescription& disk = vm.disks[i];
    FERRY_ASSIGN_OR_RETURN(
        const std::string real,
        ResolveInShare(share, rel, disk.file, "disks[" + std::to_string(i) + "].file"));
    if (disk.format == "ova") {
      // Opening an OVA's disk can mean reading its whole stream; the JSON has the size.
      disk.file = real;
      d.files.insert(real);
      continue;
    }
    FERRY_TRY(AddOpenedDisk(share, rel, real, disk, d));
  }
  d.vm.vm = std::move(vm);
  return d;
}

// Resolves a path from a libvirt domain XML: relative to the XML's folder or absolute inside
// the share; an absolute path outside the share (the original host's /var/lib/libvirt/...) is
// taken as the file of that name beside the XML when there is one, else refused.
Result<std::string> ResolveLibvirtPath(const ShareContext& share, const std::string& rel,
                                       const std::string& path, const std::string& what,
                                       VmDescription& vm) {
  auto real = ResolveInShare(share, rel, path, what);
  if (real.ok() || path.empty() || path[0] != '/') return real;
  const std::string beside = share.Abs(RelDir(rel)) + "/" + BaseName(path);
  if (BaseName(path).empty() || !RealPath(beside).ok()) return real;
  auto resolved = ResolveInShare(share, rel, beside, what);
  if (resolved.ok()) {
    AddProblem(vm, what + ": " + path + " is not in the share; using " + BaseName(path) +
                       " beside the domain XML");
  }
  return resolved;
}

Result<Described> DescribeLibvirt(const ShareContext& share, const std::string& rel,
                                  const std::string& text) {
  FERRY_ASSIGN_OR_RETURN(VmDescription vm, ParseLibvirtDomain(text, rel));
  Described d;
  for (DiskDescription& disk : vm.disks) {
    FERRY_ASSIGN_OR_RETURN(const std::string real,
                           ResolveLibvirtPath(share, rel, disk.file, disk.source_ref, vm));
    FERRY_TRY(AddOpenedDisk(share, rel, real, disk, d));
  }
  for (auto [field, what] :
       {std::pair{&vm.direct_boot.kernel, "kernel"}, std::pair{&vm.direct_boot.initrd, "initrd"}}) {
    if (field->empty()) continue;
    FERRY_ASSIGN_OR_RETURN(*field, ResolveLibvirtPath(share, rel, *field, what, vm));
    d.files.insert(*field);
  }
  d.vm.vm = std::move(vm);
  return d;
}

// True if the XML's root element is <domain> (cheap: the first element tag of the text).
bool LooksLikeDomain(std::string_view text) {
  size_t at = 0;
  while ((at = text.find('<', at)) != std::string_view::npos) {
    const std::string_view rest = text.substr(at + 1);
    if (rest.substr(0, 1) == "?" || rest.substr(0, 1) == "!") {
      ++at;
      continue;
    }
    return rest.substr(0, 6) == "domain" &&
           (rest.size() == 6 || rest[6] == '>' || rest[6] == ' ' || rest[6] == '\t' ||
            rest[6] == '\n' || rest[6] == '\r' || rest[6] == '/');
  }
  return false;
}

// Describes the VM of descriptor `rel` of kind `kind` (not kBareDisk). For kXml, kNotFound
// with `not_a_vm` set if the XML is not a libvirt domain.
Result<Described> DescribeDescriptor(const ShareContext& share, const std::string& rel, Kind kind,
                                     bool* not_a_vm) {
  Result<Described> d = Status::Internal(rel + ": not a descriptor");
  switch (kind) {
    case Kind::kOva: d = DescribeOva(share, rel); break;
    case Kind::kOvf: d = DescribeOvf(share, rel); break;
    case Kind::kHyperVXml: d = DescribeHyperVXml(share, rel); break;
    case Kind::kHyperVVmcx: d = DescribeHyperVVmcx(share, rel); break;
    case Kind::kFerryJson: d = DescribeFerryJson(share, rel); break;
    case Kind::kXml: {
      auto text = ReadDescriptor(share, rel);
      if (!text.ok()) return text.status();
      if (!LooksLikeDomain(*text)) {
        if (not_a_vm != nullptr) *not_a_vm = true;
        return Status::NotFound(rel + ": not a libvirt <domain> XML");
      }
      d = DescribeLibvirt(share, rel, *text);
      break;
    }
    case Kind::kNone:
    case Kind::kBareDisk: break;
  }
  if (!d.ok()) return Named(d.status(), rel);
  FERRY_TRY(Finish(share, rel, *d));
  return d;
}

Result<Described> DescribeBare(const ShareContext& share, const BareDisk& b) {
  Described d;
  VmDescription& vm = d.vm.vm;
  vm.name = Stem(b.rel);
  vm.platform = Platform::kUnknown;
  DiskDescription disk;
  disk.file = b.real;
  disk.format = b.opened.format;
  disk.capacity_bytes = b.opened.capacity;
  disk.allocated_bytes = b.opened.allocated;
  disk.source_ref = BaseName(b.rel);
  vm.disks.push_back(std::move(disk));
  d.files.insert(b.opened.files.begin(), b.opened.files.end());
  FERRY_TRY(Finish(share, b.rel, d));
  return d;
}

// The share's files (relative paths, sorted), within the depth and entry caps.
struct Walked {
  std::vector<std::string> files;
  std::vector<std::string> problems;
  size_t entries = 0;
  bool capped = false;
};

void Walk(const ShareContext& share, const std::string& rel_dir, int depth, Walked& w) {
  std::error_code ec;
  fs::directory_iterator it(share.Abs(rel_dir), ec);
  if (ec) {
    w.problems.push_back((rel_dir.empty() ? "." : rel_dir) + "/: " + ec.message() + " (skipped)");
    return;
  }
  std::vector<std::string> names;
  for (const auto& entry : it) names.push_back(entry.path().filename().string());
  std::sort(names.begin(), names.end());
  for (const std::string& name : names) {
    if (name.empty() || name[0] == '.') continue;  // hidden, or a staging `.x.ferry-part/`
    if (++w.entries > share.options.max_entries) {
      w.capped = true;
      return;
    }
    const std::string rel = rel_dir.empty() ? name : rel_dir + "/" + name;
    const std::string abs = share.Abs(rel);
    struct stat lst;
    if (::lstat(abs.c_str(), &lst) != 0) continue;  // vanished
    if (S_ISLNK(lst.st_mode)) {
      auto real = RealPath(abs);
      if (!real.ok()) {
        w.problems.push_back(rel + ": broken symbolic link (skipped)");
        continue;
      }
      if (!IsInside(share.root, *real)) {
        w.problems.push_back(rel + ": symbolic link to " + *real + ", outside the share (skipped)");
        continue;
      }
      struct stat st;
      if (::stat(abs.c_str(), &st) != 0) continue;
      if (S_ISDIR(st.st_mode)) {
        w.problems.push_back(rel + ": symbolic link to a folder is not followed (skipped)");
        continue;
      }
      if (S_ISREG(st.st_mode)) w.files.push_back(rel);
      continue;
    }
    if (S_ISDIR(lst.st_mode)) {
      if (depth + 1 > share.options.max_depth) {
        w.problems.push_back(rel + "/: deeper than " + std::to_string(share.options.max_depth) +
                             " folder levels (not scanned)");
        continue;
      }
      Walk(share, rel, depth + 1, w);
      if (w.capped) return;
      continue;
    }
    if (S_ISREG(lst.st_mode)) w.files.push_back(rel);
  }
}

Result<ShareContext> OpenShare(const std::string& name, const std::string& root,
                               const ScanOptions& options) {
  auto real = RealPath(root);
  struct stat st;
  if (!real.ok() || ::stat(real->c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return Status::NotFound("share " + name + ": " + root + " is not a folder");
  }
  return ShareContext{name, *real, options};
}

// Runs the whole scan; `errors` (optional) receives each skipped descriptor's Status by id.
ShareScan Scan(const ShareContext& share, std::map<std::string, Status>* errors) {
  ShareScan scan;
  Walked w;
  Walk(share, "", 0, w);
  scan.problems = w.problems;
  std::set<std::string> claimed;  // real paths of files that belong to a described VM
  std::vector<std::string> bare;
  std::set<std::string> hyperv_disk_folders;
  for (const std::string& rel : w.files) {
    const Kind kind = Classify(rel);
    if (kind == Kind::kNone) continue;
    if (kind == Kind::kBareDisk) {
      bare.push_back(rel);
      continue;
    }
    if (kind == Kind::kHyperVXml || kind == Kind::kHyperVVmcx) {
      const HyperVFolders f = FindHyperVFolders(share, rel);
      if (!f.disks_rel.empty()) hyperv_disk_folders.insert(f.disks_rel + "/");
    }
    bool not_a_vm = false;
    auto d = DescribeDescriptor(share, rel, kind, &not_a_vm);
    if (!d.ok()) {
      if (not_a_vm) continue;
      scan.problems.push_back(d.status().message() + " (skipped)");
      if (errors != nullptr) errors->emplace(rel, d.status());
      continue;
    }
    claimed.insert(d->files.begin(), d->files.end());
    scan.vms.push_back(std::move(d->vm));
  }
  // A Hyper-V export's disk folder belongs to its VM whole (parents, snapshots).
  std::vector<std::string> candidates;
  for (const std::string& rel : bare) {
    bool in_hyperv = false;
    for (const std::string& folder : hyperv_disk_folders) {
      in_hyperv = in_hyperv || rel.compare(0, folder.size(), folder) == 0;
    }
    auto real = RealPath(share.Abs(rel));
    if (in_hyperv || (real.ok() && claimed.count(*real) != 0)) continue;
    candidates.push_back(rel);
  }
  for (const BareDisk& b : OpenBareDisks(share, candidates, &scan.problems, errors)) {
    auto d = DescribeBare(share, b);
    if (!d.ok()) {
      scan.problems.push_back(d.status().message() + " (skipped)");
      if (errors != nullptr) errors->emplace(b.rel, d.status());
      continue;
    }
    scan.vms.push_back(std::move(d->vm));
  }
  std::sort(scan.vms.begin(), scan.vms.end(),
            [](const ShareVm& a, const ShareVm& b) { return a.id < b.id; });
  // Problems start with the file's id: sorted, they read in the share's order. File names
  // need not be UTF-8; the JSON they travel in must be.
  for (std::string& p : scan.problems) p = SanitizeUtf8(p);
  std::sort(scan.problems.begin(), scan.problems.end());
  if (w.capped) {
    scan.problems.push_back("share " + share.name + ": more than " +
                            std::to_string(share.options.max_entries) +
                            " entries; the rest was not scanned");
  }
  return scan;
}

}  // namespace

Result<ShareScan> ScanShare(const std::string& name, const std::string& root,
                            const ScanOptions& options) {
  FERRY_ASSIGN_OR_RETURN(const ShareContext share, OpenShare(name, root, options));
  return Scan(share, nullptr);
}

Result<ShareVm> ReadShareVm(const std::string& name, const std::string& root, const std::string& id,
                            const ScanOptions& options) {
  FERRY_ASSIGN_OR_RETURN(const ShareContext share, OpenShare(name, root, options));
  if (id.empty() || id[0] == '/' || id.find('\0') != std::string::npos) {
    return Status::PermissionDenied("share " + name + ": VM id '" + id.substr(0, 256) +
                                    "' is not a path relative to the share");
  }
  int depth = 0;
  for (size_t start = 0; start <= id.size();) {
    const size_t end = std::min(id.find('/', start), id.size());
    const std::string part = id.substr(start, end - start);
    if (part == ".." || part == "." || part.empty()) {
      return Status::PermissionDenied("share " + name + ": VM id '" + id.substr(0, 256) +
                                      "' leaves the share or is not a plain path");
    }
    if (part[0] == '.') return Status::NotFound("share " + name + ": no VM '" + id + "'");
    if (end < id.size()) ++depth;
    start = end + 1;
  }
  auto real = RealPath(share.Abs(id));
  if (!real.ok()) return Status::NotFound("share " + name + ": no VM '" + id + "'");
  if (!IsInside(share.root, *real)) {
    return Status::PermissionDenied("share " + name + ": " + id + " resolves to " + *real +
                                    ", outside the share " + share.root);
  }
  if (depth > options.max_depth) {
    return Status::NotFound("share " + name + ": " + id + " is deeper than the scan looks");
  }
  const Kind kind = Classify(id);
  if (kind == Kind::kNone) return Status::NotFound("share " + name + ": " + id + " is not a VM");
  if (kind != Kind::kBareDisk) {
    bool not_a_vm = false;
    FERRY_ASSIGN_OR_RETURN(Described d, DescribeDescriptor(share, id, kind, &not_a_vm));
    return std::move(d.vm);
  }
  // A bare disk is a VM only if no descriptor claims it: that takes the whole scan.
  std::map<std::string, Status> errors;
  ShareScan scan = Scan(share, &errors);
  for (ShareVm& vm : scan.vms) {
    if (vm.id == id) return std::move(vm);
  }
  if (auto e = errors.find(id); e != errors.end()) return e->second;
  return Status::NotFound("share " + name + ": " + id +
                          " is part of another VM of the share, not a VM of its own");
}

}  // namespace ferry::sources
