#include "nbd/nbd_client.h"

#include <libnbd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <thread>
#include <utility>
#include <vector>

#include "common/bytes.h"

namespace ferry {
namespace {

constexpr std::string_view kDirtyBitmapPrefix = "qemu:dirty-bitmap:";
constexpr char kBaseAllocation[] = "base:allocation";
// base:allocation flags (NBD proto.md "Metadata contexts"); qemu:dirty-bitmap bit 0 = dirty.
constexpr uint32_t kStateHole = 1 << 0;
constexpr uint32_t kStateZero = 1 << 1;
constexpr uint32_t kStateDirty = 1 << 0;

// Per-request caps. Servers commonly refuse requests over 32 MiB (qemu-nbd's maximum block
// size); the protocol's lengths are 32-bit.
constexpr uint64_t kMaxIoBytes = 32ull << 20;
constexpr uint64_t kMaxZeroBytes = 1ull << 30;
constexpr uint64_t kMaxStatusBytes = 1ull << 30;
constexpr uint32_t kDefaultGranularity = 64 * 1024;
constexpr int kMaxConnections = 16;
constexpr size_t kZeroBufferBytes = 1 << 20;

struct HandleCloser {
  void operator()(nbd_handle* h) const {
    // Say goodbye (NBD_CMD_DISC) rather than drop the connection; a no-op on a handle that
    // never connected.
    if (nbd_aio_is_ready(h) == 1) nbd_shutdown(h, 0);
    nbd_close(h);
  }
};
using HandlePtr = std::unique_ptr<nbd_handle, HandleCloser>;

// Turns libnbd's thread-local error into a Status naming the URI and the operation.
Status LastError(const std::string& uri, const std::string& what) {
  const char* msg = nbd_get_error();
  const int err = nbd_get_errno();
  std::string m = uri + ": " + what + ": " + (msg != nullptr ? msg : "unknown libnbd error");
  switch (err) {
    case EPERM:
    case EACCES:
    case EROFS:
      return Status::PermissionDenied(std::move(m));
    case ENOENT:
      return Status::NotFound(std::move(m));
    case EINVAL:
      return Status::InvalidArgument(std::move(m));
    case ENOTSUP:
      return Status::Unsupported(std::move(m));
    case EOVERFLOW:
    case ERANGE:
    case E2BIG:
      return Status::TooLarge(std::move(m));
    default:
      return Status::Io(std::move(m));
  }
}

std::string RangeText(uint64_t offset, uint64_t length) {
  return "at " + Hex(offset) + " (" + std::to_string(length) + " bytes)";
}

Result<HandlePtr> Connect(const std::string& uri, const std::string& meta_context) {
  HandlePtr h(nbd_create());
  if (h == nullptr) return LastError(uri, "nbd_create");
  if (!meta_context.empty() && nbd_add_meta_context(h.get(), meta_context.c_str()) == -1) {
    return LastError(uri, "request meta context " + meta_context);
  }
  if (nbd_connect_uri(h.get(), uri.c_str()) == -1) return LastError(uri, "connect");
  return h;
}

// Opens the first connection, then up to `wanted` in all if the server allows multi-conn,
// the extra ones at the same time (a handshake with qemu-nbd takes 50-90 ms here: four one
// after the other cost 350 ms before a byte moved). Extra connections that fail are given up
// on quietly: one is enough to work.
Result<std::vector<HandlePtr>> ConnectPool(const std::string& uri, const std::string& meta,
                                           int wanted) {
  std::vector<HandlePtr> pool;
  FERRY_ASSIGN_OR_RETURN(HandlePtr first, Connect(uri, meta));
  const bool multi = nbd_can_multi_conn(first.get()) == 1;
  pool.push_back(std::move(first));
  const int n = multi ? std::clamp(wanted, 1, kMaxConnections) : 1;
  std::vector<HandlePtr> extra(static_cast<size_t>(n - 1));
  std::vector<std::thread> openers;
  for (size_t i = 0; i < extra.size(); ++i) {
    openers.emplace_back([&, i] {
      auto h = Connect(uri, meta);
      if (h.ok()) extra[i] = std::move(h).value();
    });
  }
  for (auto& t : openers) t.join();
  for (HandlePtr& h : extra) {
    if (h) pool.push_back(std::move(h));
  }
  return pool;
}

uint64_t MaxIo(nbd_handle* h) {
  const int64_t max = nbd_get_block_size(h, LIBNBD_SIZE_MAXIMUM);
  return max > 0 ? std::min<uint64_t>(static_cast<uint64_t>(max), kMaxIoBytes) : kMaxIoBytes;
}

// Collects the descriptors block status reports for one context.
struct StatusCollector {
  const char* context = nullptr;
  bool seen = false;
  std::vector<std::pair<uint32_t, uint32_t>> entries;  // length, flags
};

int CollectExtents(void* user, const char* metacontext, uint64_t /*offset*/, uint32_t* entries,
                   size_t nr_entries, int* error) {
  auto* c = static_cast<StatusCollector*>(user);
  if (std::strcmp(metacontext, c->context) != 0 || c->seen) return 0;
  c->seen = true;
  try {
    for (size_t i = 0; i + 1 < nr_entries; i += 2) c->entries.push_back({entries[i], entries[i + 1]});
  } catch (...) {  // no exception may cross libnbd's C frames
    *error = ENOMEM;
    return -1;
  }
  return 0;
}

class NbdSource final : public BlockSource {
 public:
  NbdSource(std::string uri, std::vector<HandlePtr> handles, std::string context, bool dirty,
            uint64_t size)
      : uri_(std::move(uri)),
        handles_(std::move(handles)),
        context_(std::move(context)),
        dirty_(dirty),
        size_(size),
        max_io_(MaxIo(handles_.front().get())) {}

  uint64_t size() const override { return size_; }

  ImageInfo info() const override {
    ImageInfo info;
    info.format = "nbd";
    info.virtual_size = size_;
    info.files = {uri_};
    nbd_handle* h = handles_.front().get();
    info.details.push_back({"connections", std::to_string(handles_.size())});
    if (const char* p = nbd_get_protocol(h)) info.details.push_back({"protocol", p});
    info.details.push_back({"meta_context", context_.empty() ? "(none)" : context_});
    info.details.push_back({"read_only", nbd_is_read_only(h) == 1 ? "true" : "false"});
    info.details.push_back({"can_multi_conn", nbd_can_multi_conn(h) == 1 ? "true" : "false"});
    const int64_t pref = nbd_get_block_size(h, LIBNBD_SIZE_PREFERRED);
    if (pref > 0) info.details.push_back({"block_size_preferred", std::to_string(pref)});
    return info;
  }

  Status Read(uint64_t offset, std::span<uint8_t> buf) override {
    uint64_t done = 0;
    while (done < buf.size()) {
      const size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size() - done, max_io_));
      if (nbd_pread(Next(), buf.data() + done, n, offset + done, 0) == -1) {
        return LastError(uri_, "read " + RangeText(offset + done, n));
      }
      done += n;
    }
    return Status::Ok();
  }

  Status Extents(uint64_t offset, uint64_t length, std::vector<Extent>* out) override {
    if (context_.empty()) {  // the server offers no allocation information
      if (length > 0) out->push_back({offset, length, ExtentKind::kData});
      return Status::Ok();
    }
    const uint64_t end = offset + length;
    uint64_t pos = offset;
    while (pos < end) {
      const uint64_t ask = std::min(end - pos, kMaxStatusBytes);
      StatusCollector c;
      c.context = context_.c_str();
      nbd_extent_callback cb{CollectExtents, &c, nullptr};
      if (nbd_block_status(Next(), ask, pos, cb, 0) == -1) {
        return LastError(uri_, "block status " + RangeText(pos, ask));
      }
      if (c.entries.empty()) {
        return Status::Corrupt(uri_ + ": block status " + RangeText(pos, ask) +
                               ": the server sent no extents for " + context_);
      }
      for (auto [len, flags] : c.entries) {
        if (pos >= end) break;
        if (len == 0) {
          return Status::Corrupt(uri_ + ": block status at " + Hex(pos) +
                                 ": the server sent a zero-length extent");
        }
        const uint64_t n = std::min<uint64_t>(len, end - pos);
        Append(out, {pos, n, KindOf(flags)});
        pos += n;
      }
    }
    return Status::Ok();
  }

 private:
  ExtentKind KindOf(uint32_t flags) const {
    if (dirty_) return (flags & kStateDirty) ? ExtentKind::kData : ExtentKind::kSkip;
    if ((flags & (kStateHole | kStateZero)) == (kStateHole | kStateZero)) return ExtentKind::kHole;
    // HOLE without ZERO has undefined contents: copy it like data.
    if (flags & kStateZero) return ExtentKind::kZero;
    return ExtentKind::kData;
  }

  static void Append(std::vector<Extent>* out, Extent e) {
    if (!out->empty() && out->back().kind == e.kind &&
        out->back().offset + out->back().length == e.offset) {
      out->back().length += e.length;
    } else {
      out->push_back(e);
    }
  }

  nbd_handle* Next() { return handles_[next_.fetch_add(1) % handles_.size()].get(); }

  const std::string uri_;
  const std::vector<HandlePtr> handles_;  // libnbd handles are thread-safe
  const std::string context_;             // "" if the server has no usable context
  const bool dirty_;
  const uint64_t size_;
  const uint64_t max_io_;
  std::atomic<uint64_t> next_{0};
};

class NbdSink final : public BlockSink {
 public:
  NbdSink(std::string uri, std::vector<HandlePtr> handles, uint64_t size)
      : uri_(std::move(uri)), handles_(std::move(handles)), size_(size) {
    nbd_handle* h = handles_.front().get();
    max_io_ = MaxIo(h);
    can_zero_ = nbd_can_zero(h) == 1;
    can_flush_ = nbd_can_flush(h) == 1;
    const int64_t pref = nbd_get_block_size(h, LIBNBD_SIZE_PREFERRED);
    granularity_ = kDefaultGranularity;
    if (pref > kDefaultGranularity && IsPowerOfTwo(static_cast<uint64_t>(pref)) &&
        static_cast<uint64_t>(pref) <= max_io_) {
      granularity_ = static_cast<uint32_t>(pref);
    }
  }

  uint64_t size() const override { return size_; }
  uint32_t granularity() const override { return granularity_; }
  bool zero_initialized() const override { return false; }

  Status Write(uint64_t offset, std::span<const uint8_t> data) override {
    uint64_t done = 0;
    while (done < data.size()) {
      const size_t n = static_cast<size_t>(std::min<uint64_t>(data.size() - done, max_io_));
      if (nbd_pwrite(Next(), data.data() + done, n, offset + done, 0) == -1) {
        return LastError(uri_, "write " + RangeText(offset + done, n));
      }
      done += n;
    }
    return Status::Ok();
  }

  Status WriteZeroes(uint64_t offset, uint64_t length) override {
    uint64_t done = 0;
    if (can_zero_) {
      while (done < length) {
        const uint64_t n = std::min(length - done, kMaxZeroBytes);
        // Flags 0: NBD_CMD_FLAG_NO_HOLE clear, so the server may punch holes.
        if (nbd_zero(Next(), n, offset + done, 0) == -1) {
          return LastError(uri_, "write zeroes " + RangeText(offset + done, n));
        }
        done += n;
      }
      return Status::Ok();
    }
    static const std::vector<uint8_t> kZeros(kZeroBufferBytes, 0);
    while (done < length) {
      const uint64_t n = std::min<uint64_t>(length - done, kZeros.size());
      FERRY_TRY(Write(offset + done, std::span(kZeros.data(), static_cast<size_t>(n))));
      done += n;
    }
    return Status::Ok();
  }

  Result<std::vector<uint8_t>> Checkpoint() override {
    FERRY_TRY(FlushAll());
    return std::vector<uint8_t>{};
  }

  Status Finalize() override { return FlushAll(); }

 private:
  // Each connection flushes what it wrote: correct with or without multi-conn.
  Status FlushAll() {
    if (!can_flush_) return Status::Ok();
    for (const HandlePtr& h : handles_) {
      if (nbd_flush(h.get(), 0) == -1) return LastError(uri_, "flush");
    }
    return Status::Ok();
  }

  nbd_handle* Next() { return handles_[next_.fetch_add(1) % handles_.size()].get(); }

  const std::string uri_;
  const std::vector<HandlePtr> handles_;
  const uint64_t size_;
  uint64_t max_io_ = kMaxIoBytes;
  uint32_t granularity_ = kDefaultGranularity;
  bool can_zero_ = false;
  bool can_flush_ = false;
  std::atomic<uint64_t> next_{0};
};

Result<uint64_t> ExportSize(const std::string& uri, nbd_handle* h) {
  const int64_t size = nbd_get_size(h);
  if (size < 0) return LastError(uri, "export size");
  return static_cast<uint64_t>(size);
}

}  // namespace

bool IsNbdUri(std::string_view s) {
  for (std::string_view scheme : {"nbd://", "nbds://", "nbd+unix://", "nbds+unix://",
                                  "nbd+vsock://", "nbds+vsock://"}) {
    if (s.substr(0, scheme.size()) == scheme) return true;
  }
  return false;
}

Result<std::unique_ptr<BlockSource>> OpenNbdSource(const std::string& uri,
                                                   const NbdSourceOptions& options) {
  const bool dirty = !options.meta_context.empty();
  if (dirty && options.meta_context.substr(0, kDirtyBitmapPrefix.size()) != kDirtyBitmapPrefix) {
    return Status::InvalidArgument(uri + ": meta context '" + options.meta_context +
                                   "': expected qemu:dirty-bitmap:NAME or nothing");
  }
  std::string context = dirty ? options.meta_context : kBaseAllocation;
  FERRY_ASSIGN_OR_RETURN(auto handles, ConnectPool(uri, context, options.connections));
  nbd_handle* h = handles.front().get();
  if (nbd_can_meta_context(h, context.c_str()) != 1) {
    if (dirty) {
      return Status::NotFound(uri + ": the server does not offer meta context " + context);
    }
    context.clear();  // no base:allocation: report everything as data
  }
  FERRY_ASSIGN_OR_RETURN(uint64_t size, ExportSize(uri, h));
  return std::unique_ptr<BlockSource>(
      std::make_unique<NbdSource>(uri, std::move(handles), std::move(context), dirty, size));
}

Result<std::unique_ptr<BlockSink>> OpenNbdSink(const std::string& uri,
                                               const NbdSinkOptions& options) {
  FERRY_ASSIGN_OR_RETURN(auto handles, ConnectPool(uri, "", options.connections));
  nbd_handle* h = handles.front().get();
  if (nbd_is_read_only(h) == 1) {
    return Status::PermissionDenied(uri + ": the NBD export is read-only");
  }
  FERRY_ASSIGN_OR_RETURN(uint64_t size, ExportSize(uri, h));
  return std::unique_ptr<BlockSink>(std::make_unique<NbdSink>(uri, std::move(handles), size));
}

}  // namespace ferry
