#include "disk/image.h"

#include <algorithm>
#include <cstring>

#include "disk/ova/ova.h"
#include "disk/qcow2/qcow2.h"
#include "disk/raw/raw.h"
#include "disk/vhd/vhd.h"
#include "disk/vhdx/vhdx.h"
#include "disk/vmdk/vmdk.h"

namespace ferry {
namespace {

bool IsInside(const std::string& dir, const std::string& path) {
  if (dir == "/") return true;
  return path.size() > dir.size() && path.compare(0, dir.size(), dir) == 0 &&
         path[dir.size()] == '/';
}

bool StartsWith(std::span<const uint8_t> bytes, std::string_view magic, size_t at = 0) {
  return bytes.size() >= at + magic.size() &&
         std::memcmp(bytes.data() + at, magic.data(), magic.size()) == 0;
}

}  // namespace

std::string_view FormatName(ImageFormat format) {
  switch (format) {
    case ImageFormat::kRaw: return "raw";
    case ImageFormat::kQcow2: return "qcow2";
    case ImageFormat::kVmdk: return "vmdk";
    case ImageFormat::kVhd: return "vhd";
    case ImageFormat::kVhdx: return "vhdx";
    case ImageFormat::kOva: return "ova";
  }
  return "unknown";
}

Result<ImageFormat> ParseImageFormat(std::string_view name) {
  if (name == "raw" || name == "img") return ImageFormat::kRaw;
  if (name == "qcow2") return ImageFormat::kQcow2;
  if (name == "vmdk") return ImageFormat::kVmdk;
  if (name == "vhd" || name == "vpc") return ImageFormat::kVhd;
  if (name == "vhdx") return ImageFormat::kVhdx;
  if (name == "ova") return ImageFormat::kOva;
  return Status::InvalidArgument("unknown image format '" + std::string(name) +
                                 "' (known: raw, qcow2, vmdk, vhd, vhdx, ova)");
}

bool CanWrite(ImageFormat format) { return format != ImageFormat::kOva; }

OpenContext::OpenContext(const OpenOptions& options) : options_(options) {}

Result<std::string> OpenContext::ResolveReference(const std::string& image_path,
                                                  const std::string& reference,
                                                  std::string_view what) const {
  if (reference.empty()) {
    return Status::Corrupt(image_path + ": empty " + std::string(what) + " name");
  }
  if (reference.find('\0') != std::string::npos) {
    return Status::Corrupt(image_path + ": " + std::string(what) + " name has a NUL byte");
  }
  Env* env = options_.env;
  auto image_real = env->RealPath(image_path);
  std::string image_dir = image_real.ok() ? DirName(*image_real) : DirName(image_path);
  std::string candidate = JoinPath(image_dir, reference);
  auto real = env->RealPath(candidate);
  if (!real.ok()) {
    return Status::NotFound(image_path + ": " + std::string(what) + " '" + reference +
                            "' not found (looked for " + candidate + ")");
  }
  if (options_.allow_outside_files) return *real;
  if (IsInside(image_dir, *real)) return *real;
  for (const auto& dir : options_.allowed_dirs) {
    auto dir_real = env->RealPath(dir);
    if (dir_real.ok() && IsInside(*dir_real, *real)) return *real;
  }
  return Status::PermissionDenied(image_path + ": " + std::string(what) + " '" + reference +
                                  "' resolves to " + *real + ", outside the image's folder " +
                                  image_dir + " (allow it with --allow-outside-files)");
}

Result<OpenContext> OpenContext::Descend(const std::string& real_path) const {
  if (std::find(chain_.begin(), chain_.end(), real_path) != chain_.end()) {
    return Status::Corrupt(real_path + ": backing chain loop: the file refers back to itself");
  }
  if (static_cast<int>(chain_.size()) >= options_.max_chain_depth) {
    return Status::TooLarge(real_path + ": backing chain longer than " +
                            std::to_string(options_.max_chain_depth) + " images");
  }
  OpenContext next = *this;
  next.chain_.push_back(real_path);
  return next;
}

Result<std::unique_ptr<BlockSource>> OpenContext::OpenBacking(
    const std::string& path, std::optional<ImageFormat> format) const {
  return OpenImageIn(*this, path, format);
}

namespace {

// Reads the magic of an open file: the first 4 KiB and, for fixed VHD, the last 512 bytes.
Result<ImageFormat> ProbeFile(const File& file) {
  FERRY_ASSIGN_OR_RETURN(uint64_t size, file.Size());
  std::vector<uint8_t> head(std::min<uint64_t>(size, 4096));
  FERRY_TRY(file.ReadAt(0, head));
  if (StartsWith(head, "QFI\xfb")) return ImageFormat::kQcow2;
  if (StartsWith(head, "KDMV")) return ImageFormat::kVmdk;
  if (StartsWith(head, "# Disk DescriptorFile")) return ImageFormat::kVmdk;
  if (StartsWith(head, "vhdxfile")) return ImageFormat::kVhdx;
  if (StartsWith(head, "conectix")) return ImageFormat::kVhd;  // dynamic: footer copy at 0
  if (StartsWith(head, "ustar", 257)) return ImageFormat::kOva;
  if (size >= 512) {
    // A fixed VHD has its footer only at the end (511 bytes in very old images).
    std::vector<uint8_t> tail(512);
    FERRY_TRY(file.ReadAt(size - 512, tail));
    if (StartsWith(tail, "conectix")) return ImageFormat::kVhd;
    if (StartsWith(tail, "conectix", 1)) return ImageFormat::kVhd;
  }
  return ImageFormat::kRaw;
}

}  // namespace

Result<ImageFormat> ProbeFormat(Env* env, const std::string& path) {
  FERRY_ASSIGN_OR_RETURN(auto file, env->Open(path, OpenMode::kRead));
  return ProbeFile(*file);
}

Result<std::unique_ptr<BlockSource>> OpenImageIn(const OpenContext& ctx, const std::string& path,
                                                 std::optional<ImageFormat> format) {
  Env* env = ctx.env();
  auto real = env->RealPath(path);
  if (!real.ok()) return Status::NotFound(path + ": no such image");
  FERRY_ASSIGN_OR_RETURN(OpenContext inner, ctx.Descend(*real));
  FERRY_ASSIGN_OR_RETURN(auto file, env->Open(path, OpenMode::kRead));
  if (!format) {
    FERRY_ASSIGN_OR_RETURN(format, ProbeFile(*file));
  }
  switch (*format) {
    case ImageFormat::kRaw: return OpenRaw(inner, std::move(file));
    case ImageFormat::kQcow2: return OpenQcow2(inner, std::move(file));
    case ImageFormat::kVmdk: return OpenVmdk(inner, std::move(file));
    case ImageFormat::kVhd: return OpenVhd(inner, std::move(file));
    case ImageFormat::kVhdx: return OpenVhdx(inner, std::move(file));
    case ImageFormat::kOva: return OpenOva(inner, std::move(file));
  }
  return Status::Internal("unhandled format");
}

Result<std::unique_ptr<BlockSource>> OpenImage(const std::string& path,
                                               const OpenOptions& options) {
  OpenContext ctx(options);
  return OpenImageIn(ctx, path, options.format);
}

Result<std::unique_ptr<BlockSink>> CreateImage(ImageFormat format, const std::string& path,
                                               const CreateOptions& options) {
  switch (format) {
    case ImageFormat::kRaw: return CreateRaw(path, options);
    case ImageFormat::kQcow2: return CreateQcow2(path, options);
    case ImageFormat::kVmdk: return CreateVmdk(path, options);
    case ImageFormat::kVhd: return CreateVhd(path, options);
    case ImageFormat::kVhdx: return CreateVhdx(path, options);
    case ImageFormat::kOva: break;
  }
  return Status::Unsupported(std::string("writing ") + std::string(FormatName(format)) +
                             " is not supported");
}

Result<std::unique_ptr<BlockSink>> ResumeImage(ImageFormat format, const std::string& path,
                                               const CreateOptions& options,
                                               std::span<const uint8_t> state) {
  switch (format) {
    case ImageFormat::kRaw: return ResumeRaw(path, options, state);
    case ImageFormat::kQcow2: return ResumeQcow2(path, options, state);
    case ImageFormat::kVmdk: return ResumeVmdk(path, options, state);
    case ImageFormat::kVhd: return ResumeVhd(path, options, state);
    case ImageFormat::kVhdx: return ResumeVhdx(path, options, state);
    case ImageFormat::kOva: break;
  }
  return Status::Unsupported(std::string("writing ") + std::string(FormatName(format)) +
                             " is not supported");
}

}  // namespace ferry
