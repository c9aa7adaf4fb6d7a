#include "nbd/nbd_session.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <thread>

#include "common/bytes.h"
#include "nbd/nbd_protocol.h"

namespace ferry {

// ---------------------------------------------------------------------------------------------
// NbdExportTable

Status NbdExportTable::Add(NbdExport e) {
  if (e.source == nullptr) return Status::InvalidArgument("NBD export '" + e.name + "': no source");
  if (e.name.size() > nbd::kMaxString || e.description.size() > nbd::kMaxString) {
    return Status::InvalidArgument("NBD export name or description longer than 4096 bytes");
  }
  std::lock_guard lock(mu_);
  for (const NbdExport& x : exports_) {
    if (x.name == e.name) return Status::AlreadyExists("NBD export '" + e.name + "' exists");
  }
  exports_.push_back(std::move(e));
  return Status::Ok();
}

std::optional<NbdExport> NbdExportTable::Find(std::string_view name) const {
  std::lock_guard lock(mu_);
  if (exports_.empty()) return std::nullopt;
  if (name.empty()) {
    if (private_) return std::nullopt;
    return exports_.front();
  }
  for (const NbdExport& x : exports_) {
    if (x.name == name) return x;
  }
  return std::nullopt;
}

std::vector<NbdExport> NbdExportTable::List() const {
  std::lock_guard lock(mu_);
  return exports_;
}

void NbdExportTable::SetPrivate(bool is_private) {
  std::lock_guard lock(mu_);
  private_ = is_private;
}

bool NbdExportTable::is_private() const {
  std::lock_guard lock(mu_);
  return private_;
}

// ---------------------------------------------------------------------------------------------
// Socket stream

namespace {

int PollTimeoutMs(NbdDeadline deadline) {
  if (deadline == kNoDeadline) return -1;
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      deadline - std::chrono::steady_clock::now());
  if (left.count() <= 0) return 0;
  return static_cast<int>(std::min<int64_t>(left.count(), 1 << 30));
}

class SocketStream final : public NbdStream {
 public:
  SocketStream(int fd, std::chrono::milliseconds write_timeout) : fd_(fd) {
    if (write_timeout.count() > 0) {
      timeval tv{};
      tv.tv_sec = static_cast<time_t>(write_timeout.count() / 1000);
      tv.tv_usec = static_cast<suseconds_t>((write_timeout.count() % 1000) * 1000);
      ::setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    }
  }
  ~SocketStream() override { ::close(fd_); }

  bool WaitReadable(NbdDeadline deadline) override {
    while (true) {
      pollfd p{fd_, POLLIN, 0};
      int r = ::poll(&p, 1, PollTimeoutMs(deadline));
      if (r > 0) return true;
      if (r == 0) return false;
      if (errno != EINTR) return true;  // let the read report the error
    }
  }

  Status ReadFull(std::span<uint8_t> buf, NbdDeadline deadline) override {
    size_t done = 0;
    while (done < buf.size()) {
      if (shut_.load()) return Status::Io("connection shut down");
      if (!WaitReadable(deadline)) return Status::Cancelled("timed out waiting for the client");
      ssize_t n = ::recv(fd_, buf.data() + done, buf.size() - done, 0);
      if (n == 0) return Status::Io("connection closed by the client");
      if (n < 0) {
        if (errno == EINTR || errno == EAGAIN) continue;
        return Status::Io(std::string("recv: ") + std::strerror(errno));
      }
      done += static_cast<size_t>(n);
    }
    return Status::Ok();
  }

  Status Write(std::span<const std::span<const uint8_t>> pieces) override {
    std::vector<iovec> iov;
    iov.reserve(pieces.size());
    for (auto p : pieces) {
      if (!p.empty()) iov.push_back({const_cast<uint8_t*>(p.data()), p.size()});
    }
    size_t first = 0;
    while (first < iov.size()) {
      if (shut_.load()) return Status::Io("connection shut down");
      msghdr msg{};
      msg.msg_iov = iov.data() + first;
      msg.msg_iovlen = std::min<size_t>(iov.size() - first, IOV_MAX);
      ssize_t n = ::sendmsg(fd_, &msg, MSG_NOSIGNAL);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
          return Status::Io("send timed out: the client stopped reading");
        }
        return Status::Io(std::string("send: ") + std::strerror(errno));
      }
      size_t left = static_cast<size_t>(n);
      while (first < iov.size() && left >= iov[first].iov_len) {
        left -= iov[first].iov_len;
        ++first;
      }
      if (left > 0) {
        iov[first].iov_base = static_cast<uint8_t*>(iov[first].iov_base) + left;
        iov[first].iov_len -= left;
      }
    }
    return Status::Ok();
  }

  void Shutdown() override {
    if (!shut_.exchange(true)) ::shutdown(fd_, SHUT_RDWR);
  }

 private:
  const int fd_;
  std::atomic<bool> shut_{false};
};

}  // namespace

std::unique_ptr<NbdStream> NewSocketStream(int fd, std::chrono::milliseconds write_timeout) {
  return std::make_unique<SocketStream>(fd, write_timeout);
}

// ---------------------------------------------------------------------------------------------
// The protocol

namespace nbd {
namespace {

// Option data larger than this ends the connection: no option we understand needs more
// (NBD_OPT_GO: 4 + name (<= 4096) + 2 + 2 * infos; meta context queries are short), and
// draining gigabytes on a client's say-so is a denial of service.
constexpr uint32_t kMaxOptionLength = 64 * 1024;
// Options accepted before transmission must start (the handshake deadline also applies).
constexpr int kMaxOptions = 1024;
// Meta context queries per NBD_OPT_{LIST,SET}_META_CONTEXT.
constexpr uint32_t kMaxMetaQueries = 128;
// Our context ID for base:allocation (any nonzero value the server chooses).
constexpr uint32_t kBaseAllocationId = 1;
// Block status: descriptors per reply (the spec lets a server return fewer than asked) and
// the window of source extents looked at per step.
constexpr size_t kMaxDescriptors = 16384;
constexpr uint64_t kExtentsWindow = 1ull << 30;
// Structured READ replies: past this many chunks we send the range as one data chunk.
constexpr size_t kMaxReadChunks = 1024;
// Advertised block sizes (NBD_INFO_BLOCK_SIZE): any alignment, 4 KiB preferred.
constexpr uint32_t kMinBlockSize = 1;
constexpr uint32_t kPreferredBlockSize = 4096;
// Queued requests per worker before the reader stops reading (back-pressure).
constexpr size_t kQueuePerWorker = 2;

// Appends big-endian fields.
class Builder {
 public:
  Builder& U16(uint16_t v) { return Put<2>(v, StoreBE16); }
  Builder& U32(uint32_t v) { return Put<4>(v, StoreBE32); }
  Builder& U64(uint64_t v) { return Put<8>(v, StoreBE64); }
  Builder& Str(std::string_view s) {
    b_.insert(b_.end(), s.begin(), s.end());
    return *this;
  }
  Builder& Zeros(size_t n) {
    b_.resize(b_.size() + n, 0);
    return *this;
  }
  std::vector<uint8_t>& bytes() { return b_; }

 private:
  template <size_t N, typename T, typename F>
  Builder& Put(T v, F store) {
    size_t at = b_.size();
    b_.resize(at + N);
    store(b_.data() + at, v);
    return *this;
  }
  std::vector<uint8_t> b_;
};

// Reads big-endian fields from untrusted bytes; every getter fails past the end.
class Parser {
 public:
  explicit Parser(std::span<const uint8_t> b) : b_(b) {}
  bool U16(uint16_t* v) {
    return Get(2, [&](const uint8_t* p) { *v = LoadBE16(p); });
  }
  bool U32(uint32_t* v) {
    return Get(4, [&](const uint8_t* p) { *v = LoadBE32(p); });
  }
  bool Str(uint32_t n, std::string* s) {
    return Get(n, [&](const uint8_t* p) { s->assign(reinterpret_cast<const char*>(p), n); });
  }
  bool done() const { return pos_ == b_.size(); }

 private:
  template <typename F>
  bool Get(size_t n, F f) {
    if (b_.size() - pos_ < n) return false;
    f(b_.data() + pos_);
    pos_ += n;
    return true;
  }
  std::span<const uint8_t> b_;
  size_t pos_ = 0;
};

std::span<const uint8_t> AsBytes(std::string_view s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

struct Request {
  uint16_t flags = 0;
  uint16_t type = 0;
  uint64_t handle = 0;
  uint64_t offset = 0;
  uint32_t length = 0;
};

// A piece of a READ reply: data to send, or zeros to send as a hole chunk.
struct ReadRun {
  uint64_t offset;
  uint64_t length;
  bool zero;
};

enum class HandshakeEnd { kTransmission, kAborted };

class Session {
 public:
  Session(NbdStream& stream, const NbdExportTable& exports, const NbdSessionOptions& options)
      : stream_(stream), exports_(exports), options_(options) {}

  Status Run() {
    auto end = Handshake();
    if (!end.ok()) {
      Log("handshake: " + end.status().message());
      return end.status().WithContext("NBD handshake");
    }
    if (*end == HandshakeEnd::kAborted) return Status::Ok();
    Status s = Transmission();
    if (!s.ok()) Log(s.message());
    return s;
  }

 private:
  void Log(const std::string& msg) const {
    if (options_.log) options_.log((options_.peer.empty() ? "" : options_.peer + ": ") + msg);
  }

  NbdDeadline HandshakeDeadline() const {
    if (options_.handshake_timeout.count() <= 0) return kNoDeadline;
    return start_ + options_.handshake_timeout;
  }

  Status WriteBytes(std::span<const uint8_t> b) {
    std::span<const uint8_t> pieces[] = {b};
    return stream_.Write(pieces);
  }

  // ----- handshake (proto.md "Fixed newstyle negotiation") -----

  Result<HandshakeEnd> Handshake() {
    start_ = std::chrono::steady_clock::now();
    Builder hello;
    hello.U64(kNbdMagic).U64(kIHaveOpt).U16(kFlagFixedNewstyle | kFlagNoZeroes);
    FERRY_TRY(WriteBytes(hello.bytes()));

    uint8_t cf[4];
    FERRY_TRY(stream_.ReadFull(cf, HandshakeDeadline()));
    uint32_t client_flags = LoadBE32(cf);
    // "the server MUST drop the TCP connection if the client sets an unknown flag".
    if (client_flags & ~(kClientFlagFixedNewstyle | kClientFlagNoZeroes)) {
      return Status::Corrupt("unknown client flags " + Hex(client_flags));
    }
    no_zeroes_ = (client_flags & kClientFlagNoZeroes) != 0;

    for (int n = 0; n < kMaxOptions; ++n) {
      uint8_t h[16];
      FERRY_TRY(stream_.ReadFull(h, HandshakeDeadline()));
      if (LoadBE64(h) != kIHaveOpt) {
        return Status::Corrupt("bad option magic " + Hex(LoadBE64(h)));
      }
      uint32_t opt = LoadBE32(h + 8);
      uint32_t len = LoadBE32(h + 12);
      if (len > kMaxOptionLength) {
        return Status::TooLarge("option " + std::to_string(opt) + " has " + std::to_string(len) +
                                " bytes of data (limit " + std::to_string(kMaxOptionLength) + ")");
      }
      std::vector<uint8_t> data(len);
      FERRY_TRY(stream_.ReadFull(data, HandshakeDeadline()));

      switch (opt) {
        case kOptExportName: {
          // No error reply is possible: an unknown export ends the session.
          if (len > kMaxString) return Status::Corrupt("export name longer than 4096 bytes");
          std::string name(data.begin(), data.end());
          auto e = exports_.Find(name);
          if (!e) return Status::NotFound("client asked for unknown export '" + name + "'");
          SelectExport(std::move(*e));
          Builder r;
          r.U64(export_->source->size()).U16(transmission_flags_);
          if (!no_zeroes_) r.Zeros(124);
          FERRY_TRY(WriteBytes(r.bytes()));
          return HandshakeEnd::kTransmission;
        }
        case kOptAbort:
          // The client may already have closed the connection; that is fine.
          (void)OptReply(opt, kRepAck, {});
          return HandshakeEnd::kAborted;
        case kOptList: FERRY_TRY(HandleList(opt, len)); break;
        case kOptStartTls:
          FERRY_TRY(OptError(opt, kRepErrPolicy, "TLS is not supported by this server"));
          break;
        case kOptInfo:
        case kOptGo: {
          bool go = false;
          FERRY_TRY(HandleInfoOrGo(opt, data, &go));
          if (go) return HandshakeEnd::kTransmission;
          break;
        }
        case kOptStructuredReply:
          if (len != 0) {
            FERRY_TRY(OptError(opt, kRepErrInvalid, "NBD_OPT_STRUCTURED_REPLY takes no data"));
          } else {
            structured_ = true;
            FERRY_TRY(OptReply(opt, kRepAck, {}));
          }
          break;
        case kOptListMetaContext:
        case kOptSetMetaContext: FERRY_TRY(HandleMetaContext(opt, data)); break;
        default:
          FERRY_TRY(OptError(opt, kRepErrUnsup, "unknown option " + std::to_string(opt)));
          break;
      }
    }
    return Status::TooLarge("more than " + std::to_string(kMaxOptions) + " options");
  }

  Status OptReply(uint32_t opt, uint32_t type, std::span<const uint8_t> data) {
    Builder h;
    h.U64(kOptReplyMagic).U32(opt).U32(type).U32(static_cast<uint32_t>(data.size()));
    std::span<const uint8_t> pieces[] = {h.bytes(), data};
    return stream_.Write(pieces);
  }

  Status OptError(uint32_t opt, uint32_t type, std::string_view msg) {
    Log("option " + std::to_string(opt) + ": " + std::string(msg));
    return OptReply(opt, type, AsBytes(msg));
  }

  Status HandleList(uint32_t opt, uint32_t len) {
    if (len != 0) return OptError(opt, kRepErrInvalid, "NBD_OPT_LIST takes no data");
    if (exports_.is_private()) {
      return OptError(opt, kRepErrPolicy, "this server does not list its exports");
    }
    for (const NbdExport& e : exports_.List()) {
      Builder r;
      r.U32(static_cast<uint32_t>(e.name.size())).Str(e.name).Str(e.description);
      FERRY_TRY(OptReply(opt, kRepServer, r.bytes()));
    }
    return OptReply(opt, kRepAck, {});
  }

  // NBD_OPT_INFO / NBD_OPT_GO (INFO extension): u32 name length, name, u16 count, u16 infos.
  Status HandleInfoOrGo(uint32_t opt, std::span<const uint8_t> data, bool* go) {
    Parser p(data);
    uint32_t name_len = 0;
    std::string name;
    uint16_t n_infos = 0;
    if (!p.U32(&name_len) || name_len > kMaxString || !p.Str(name_len, &name) || !p.U16(&n_infos)) {
      return OptError(opt, kRepErrInvalid, "malformed NBD_OPT_INFO/GO data");
    }
    bool want_name = false, want_description = false;
    for (uint16_t i = 0; i < n_infos; ++i) {
      uint16_t info = 0;
      if (!p.U16(&info)) return OptError(opt, kRepErrInvalid, "truncated NBD_OPT_INFO/GO list");
      want_name |= info == kInfoName;
      want_description |= info == kInfoDescription;
    }
    if (!p.done()) return OptError(opt, kRepErrInvalid, "trailing bytes in NBD_OPT_INFO/GO");
    auto e = exports_.Find(name);
    if (!e) return OptError(opt, kRepErrUnknown, "unknown export '" + name + "'");

    uint16_t flags = TransmissionFlags();
    Builder ex;
    ex.U16(kInfoExport).U64(e->source->size()).U16(flags);
    FERRY_TRY(OptReply(opt, kRepInfo, ex.bytes()));
    if (want_name) {
      Builder r;
      r.U16(kInfoName).Str(e->name);
      FERRY_TRY(OptReply(opt, kRepInfo, r.bytes()));
    }
    if (want_description && !e->description.empty()) {
      Builder r;
      r.U16(kInfoDescription).Str(e->description);
      FERRY_TRY(OptReply(opt, kRepInfo, r.bytes()));
    }
    // Our minimum is 1, so sending block sizes unasked imposes nothing on the client.
    Builder bs;
    bs.U16(kInfoBlockSize)
        .U32(kMinBlockSize)
        .U32(kPreferredBlockSize)
        .U32(options_.max_request_bytes);
    FERRY_TRY(OptReply(opt, kRepInfo, bs.bytes()));
    FERRY_TRY(OptReply(opt, kRepAck, {}));
    if (opt == kOptGo) {
      SelectExport(std::move(*e));
      *go = true;
    }
    return Status::Ok();
  }

  // NBD_OPT_{LIST,SET}_META_CONTEXT: u32 name length, name, u32 query count, then queries
  // (u32 length, string). We offer base:allocation only.
  Status HandleMetaContext(uint32_t opt, std::span<const uint8_t> data) {
    const bool set = opt == kOptSetMetaContext;
    if (!structured_) {
      return OptError(opt, kRepErrInvalid, "meta contexts need structured replies first");
    }
    Parser p(data);
    uint32_t name_len = 0, n_queries = 0;
    std::string name;
    if (!p.U32(&name_len) || name_len > kMaxString || !p.Str(name_len, &name) ||
        !p.U32(&n_queries) || n_queries > kMaxMetaQueries) {
      return OptError(opt, kRepErrInvalid, "malformed meta context request");
    }
    std::vector<std::string> queries;
    for (uint32_t i = 0; i < n_queries; ++i) {
      uint32_t qlen = 0;
      std::string q;
      if (!p.U32(&qlen) || qlen > kMaxString || !p.Str(qlen, &q)) {
        return OptError(opt, kRepErrInvalid, "malformed meta context query");
      }
      queries.push_back(std::move(q));
    }
    if (!p.done()) return OptError(opt, kRepErrInvalid, "trailing bytes in meta context request");
    auto e = exports_.Find(name);
    if (!e) return OptError(opt, kRepErrUnknown, "unknown export '" + name + "'");

    bool match = false;
    if (set) {
      for (const std::string& q : queries) match |= q == kBaseAllocation;
      base_allocation_ = match;
      meta_export_ = e->name;
    } else {
      match = queries.empty();
      for (const std::string& q : queries) match |= q == kBaseAllocation || q == "base:";
    }
    if (match) {
      Builder r;
      // LIST replies carry context ID 0 ("reserved and SHOULD be set to zero").
      r.U32(set ? kBaseAllocationId : 0).Str(kBaseAllocation);
      FERRY_TRY(OptReply(opt, kRepMetaContext, r.bytes()));
    }
    return OptReply(opt, kRepAck, {});
  }

  uint16_t TransmissionFlags() const {
    uint16_t f =
        kFlagHasFlags | kFlagReadOnly | kFlagSendFlush | kFlagCanMultiConn | kFlagSendCache;
    if (structured_) f |= kFlagSendDf;  // "MUST leave this flag clear" without structured
    return f;
  }

  void SelectExport(NbdExport e) {
    // Contexts were negotiated for a named export; going to another one drops them.
    if (base_allocation_ && meta_export_ != e.name) base_allocation_ = false;
    transmission_flags_ = TransmissionFlags();
    export_ = std::move(e);
  }

  // ----- transmission -----

  Status Transmission() {
    const int workers = std::max(0, options_.workers);
    std::vector<std::thread> threads;
    for (int i = 0; i < workers; ++i) threads.emplace_back([this] { WorkerLoop(); });
    std::vector<uint8_t> scratch;  // the reader's buffer when it serves requests itself
    Status result = ReadLoop(workers, scratch);
    {
      std::lock_guard lock(queue_mu_);
      closing_ = true;
    }
    queue_cv_.notify_all();
    for (auto& t : threads) t.join();  // DISC: "MUST handle all outstanding requests"
    if (result.ok() && broken_.load()) return Status::Io("writing a reply failed");
    return result;
  }

  Status ReadLoop(int workers, std::vector<uint8_t>& scratch) {
    const size_t queue_cap = std::max<size_t>(1, static_cast<size_t>(workers) * kQueuePerWorker);
    while (!broken_.load()) {
      if (options_.idle_timeout.count() > 0) {
        auto deadline = std::chrono::steady_clock::now() + options_.idle_timeout;
        if (!stream_.WaitReadable(deadline)) {
          if (in_flight_.load() > 0) continue;
          return Status::Cancelled("idle for " + std::to_string(options_.idle_timeout.count()) +
                                   " ms: closing the connection");
        }
      }
      uint8_t h[kRequestHeaderSize];
      Status s = stream_.ReadFull(h, kNoDeadline);
      if (!s.ok()) {
        // A client that just drops the connection is common (and not our problem).
        return broken_.load() ? Status::Ok() : s.WithContext("reading a request");
      }
      if (LoadBE32(h) != kRequestMagic) {
        return Status::Corrupt("bad request magic " + Hex(LoadBE32(h)));
      }
      Request r;
      r.flags = LoadBE16(h + 4);
      r.type = LoadBE16(h + 6);
      r.handle = LoadBE64(h + 8);
      r.offset = LoadBE64(h + 16);
      r.length = LoadBE32(h + 24);

      if (r.type == kCmdDisc) return Status::Ok();
      if (r.type == kCmdWrite) {
        // The payload follows the header: drain it to stay in sync, then refuse.
        if (r.length > options_.max_request_bytes) {
          return Status::TooLarge("write of " + std::to_string(r.length) +
                                  " bytes: payload too large to drain");
        }
        FERRY_TRY(Drain(r.length));
        SendError(r, kEperm, "the export is read-only");
        continue;
      }
      if (workers == 0) {
        Serve(r, scratch);
        continue;
      }
      std::unique_lock lock(queue_mu_);
      queue_space_cv_.wait(lock, [&] { return queue_.size() < queue_cap || broken_.load(); });
      queue_.push_back(r);
      in_flight_.fetch_add(1);
      lock.unlock();
      queue_cv_.notify_one();
    }
    return Status::Ok();
  }

  Status Drain(uint32_t length) {
    std::vector<uint8_t> sink(std::min<uint32_t>(length, 64 * 1024));
    uint32_t left = length;
    while (left > 0) {
      uint32_t n = std::min<uint32_t>(left, static_cast<uint32_t>(sink.size()));
      FERRY_TRY(stream_.ReadFull(std::span(sink.data(), n), DrainDeadline()));
      left -= n;
    }
    return Status::Ok();
  }

  NbdDeadline DrainDeadline() const {
    auto t = std::max(options_.handshake_timeout, options_.idle_timeout);
    if (t.count() <= 0) return kNoDeadline;
    return std::chrono::steady_clock::now() + t;
  }

  void WorkerLoop() {
    std::vector<uint8_t> scratch;
    while (true) {
      Request r;
      {
        std::unique_lock lock(queue_mu_);
        queue_cv_.wait(lock, [&] { return !queue_.empty() || closing_; });
        if (queue_.empty()) return;
        r = queue_.front();
        queue_.pop_front();
      }
      queue_space_cv_.notify_one();
      if (!broken_.load()) Serve(r, scratch);
      in_flight_.fetch_sub(1);
    }
  }

  void Serve(const Request& r, std::vector<uint8_t>& scratch) {
    switch (r.type) {
      case kCmdRead: return ServeRead(r, scratch);
      case kCmdBlockStatus: return ServeBlockStatus(r);
      case kCmdFlush:
        // Nothing is ever written, so everything is always "on stable storage".
        if (r.flags & ~kCmdFlagFua) return SendError(r, kEinval, "unknown flags on flush");
        return SendOk(r);
      case kCmdCache:
        if (r.flags & ~kCmdFlagFua) return SendError(r, kEinval, "unknown flags on cache");
        if (!InBounds(r)) return SendError(r, kEinval, "cache request past the end");
        return SendOk(r);
      case kCmdTrim:
      case kCmdWriteZeroes: return SendError(r, kEperm, "the export is read-only");
      default: return SendError(r, kEinval, "unknown command " + std::to_string(r.type));
    }
  }

  bool InBounds(const Request& r) const {
    uint64_t end = 0;
    return CheckedAdd(r.offset, r.length, &end) && end <= export_->source->size();
  }

  void ServeRead(const Request& r, std::vector<uint8_t>& buf) {
    const uint16_t allowed = kCmdFlagFua | (structured_ ? kCmdFlagDf : 0);
    if (r.flags & ~allowed) return SendError(r, kEinval, "unknown flags on read");
    if (r.length == 0) return SendError(r, kEinval, "zero-length read");
    if (r.length > options_.max_request_bytes) {
      return SendError(r, kEoverflow,
                       "read of " + std::to_string(r.length) + " bytes exceeds the maximum of " +
                           std::to_string(options_.max_request_bytes));
    }
    if (!InBounds(r)) {
      return SendError(r, kEinval,
                       "read at " + Hex(r.offset) + " of " + std::to_string(r.length) +
                           " bytes ends past the export size " + Hex(export_->source->size()));
    }
    BlockSource& src = *export_->source;
    buf.resize(r.length);

    std::vector<ReadRun> runs;
    if (structured_ && !(r.flags & kCmdFlagDf)) runs = ReadRuns(r);
    if (runs.empty()) runs.push_back({r.offset, r.length, false});

    for (const ReadRun& run : runs) {
      if (run.zero) continue;
      Status s = src.Read(run.offset, std::span(buf.data() + (run.offset - r.offset), run.length));
      if (!s.ok()) {
        Log("read at " + Hex(run.offset) + ": " + s.ToString());
        return SendError(r, kEio, "read at " + Hex(run.offset) + " failed: " + s.message());
      }
    }

    if (!structured_) {
      Builder h;
      h.U32(kSimpleReplyMagic).U32(0).U64(r.handle);
      std::span<const uint8_t> pieces[] = {h.bytes(), std::span(buf.data(), r.length)};
      CountPayload(r.length);  // before the write: a client that has the data sees it counted
      Send(pieces);
      return;
    }
    std::vector<std::array<uint8_t, kStructuredReplyHeaderSize + 12>> headers(runs.size());
    std::vector<std::span<const uint8_t>> pieces;
    uint64_t data_bytes = 0;
    for (size_t i = 0; i < runs.size(); ++i) {
      const ReadRun& run = runs[i];
      uint8_t* h = headers[i].data();
      const uint16_t flags = i + 1 == runs.size() ? kReplyFlagDone : 0;
      StoreBE32(h, kStructuredReplyMagic);
      StoreBE16(h + 4, flags);
      StoreBE64(h + 8, r.handle);
      StoreBE64(h + 20, run.offset);
      if (run.zero) {
        StoreBE16(h + 6, kReplyTypeOffsetHole);
        StoreBE32(h + 16, 12);
        StoreBE32(h + 28, static_cast<uint32_t>(run.length));
        pieces.push_back(std::span<const uint8_t>(h, kStructuredReplyHeaderSize + 12));
      } else {
        StoreBE16(h + 6, kReplyTypeOffsetData);
        StoreBE32(h + 16, static_cast<uint32_t>(8 + run.length));
        pieces.push_back(std::span<const uint8_t>(h, kStructuredReplyHeaderSize + 8));
        pieces.push_back(
            std::span<const uint8_t>(buf.data() + (run.offset - r.offset), run.length));
        data_bytes += run.length;
      }
    }
    CountPayload(data_bytes);
    Send(pieces);
  }

  // Splits a read into data and zero runs from the source's extents. Empty: read it all.
  std::vector<ReadRun> ReadRuns(const Request& r) {
    std::vector<ReadRun> runs;
    std::vector<Extent> ext;
    if (!export_->source->Extents(r.offset, r.length, &ext).ok() || !Covers(ext, r)) {
      runs.clear();
      return runs;
    }
    for (const Extent& e : ext) {
      if (e.length == 0) continue;
      const bool zero = e.kind == ExtentKind::kZero || e.kind == ExtentKind::kHole;
      if (!runs.empty() && runs.back().zero == zero) {
        runs.back().length += e.length;
      } else {
        runs.push_back({e.offset, e.length, zero});
      }
    }
    if (runs.size() > kMaxReadChunks) runs.clear();
    return runs;
  }

  // True if `ext` covers [r.offset, r.offset + r.length) contiguously (sources are ours, but
  // a buggy reader must not make us send a malformed reply).
  static bool Covers(const std::vector<Extent>& ext, const Request& r) {
    uint64_t pos = r.offset;
    for (const Extent& e : ext) {
      if (e.offset != pos || e.length > r.offset + r.length - pos) return false;
      pos += e.length;
    }
    return pos == r.offset + r.length;
  }

  void ServeBlockStatus(const Request& r) {
    if (!structured_ || !base_allocation_) {
      return SendError(r, kEinval, "block status without a negotiated meta context");
    }
    if (r.flags & ~(kCmdFlagFua | kCmdFlagReqOne)) {
      return SendError(r, kEinval, "unknown flags on block status");
    }
    if (r.length == 0) return SendError(r, kEinval, "zero-length block status");
    if (!InBounds(r)) return SendError(r, kEinval, "block status past the end of the export");

    const size_t max_desc = (r.flags & kCmdFlagReqOne) ? 1 : kMaxDescriptors;
    std::vector<std::pair<uint32_t, uint32_t>> desc;  // length, flags
    const uint64_t end = r.offset + r.length;
    uint64_t pos = r.offset;
    bool full = false;
    while (pos < end && !full) {
      const uint64_t win = std::min(end - pos, kExtentsWindow);
      std::vector<Extent> ext;
      Request part{r.flags, r.type, r.handle, pos, static_cast<uint32_t>(win)};
      Status s = export_->source->Extents(pos, win, &ext);
      if (!s.ok() || !Covers(ext, part)) {
        // "a server MAY reply with a single block status descriptor ... status of 0".
        if (!s.ok()) Log("block status at " + Hex(pos) + ": " + s.ToString());
        if (desc.empty()) desc.push_back({static_cast<uint32_t>(win), 0});
        break;
      }
      for (const Extent& e : ext) {
        if (e.length == 0) continue;
        uint32_t flags = 0;
        if (e.kind == ExtentKind::kHole) flags = kStateHole | kStateZero;
        if (e.kind == ExtentKind::kZero) flags = kStateZero;
        if (!desc.empty() && desc.back().second == flags) {
          desc.back().first += static_cast<uint32_t>(e.length);  // total <= r.length (u32)
        } else if (desc.size() < max_desc) {
          desc.push_back({static_cast<uint32_t>(e.length), flags});
        } else {
          full = true;
          break;
        }
      }
      pos += win;
    }

    Builder b;
    b.U32(kStructuredReplyMagic).U16(kReplyFlagDone).U16(kReplyTypeBlockStatus).U64(r.handle);
    b.U32(static_cast<uint32_t>(4 + 8 * desc.size())).U32(kBaseAllocationId);
    for (auto [len, flags] : desc) b.U32(len).U32(flags);
    std::span<const uint8_t> pieces[] = {b.bytes()};
    Send(pieces);
  }

  void SendOk(const Request& r) {
    Builder h;
    h.U32(kSimpleReplyMagic).U32(0).U64(r.handle);
    std::span<const uint8_t> pieces[] = {h.bytes()};
    Send(pieces);
  }

  void SendError(const Request& r, uint32_t error, std::string msg) {
    Builder h;
    if (structured_) {
      // Structured errors carry a message ("SHOULD prefer sending errors via a structured
      // reply"); a READ must not get a simple reply once structured replies are on.
      if (msg.size() > kMaxString) msg.resize(kMaxString);
      h.U32(kStructuredReplyMagic).U16(kReplyFlagDone).U16(kReplyTypeError).U64(r.handle);
      h.U32(static_cast<uint32_t>(6 + msg.size())).U32(error);
      h.U16(static_cast<uint16_t>(msg.size())).Str(msg);
    } else {
      h.U32(kSimpleReplyMagic).U32(error).U64(r.handle);
    }
    std::span<const uint8_t> pieces[] = {h.bytes()};
    Send(pieces);
  }

  // Returns whether the reply went out.
  bool Send(std::span<const std::span<const uint8_t>> pieces) {
    std::lock_guard lock(write_mu_);
    if (broken_.load()) return false;
    Status s = stream_.Write(pieces);
    if (!s.ok()) {
      Log("sending a reply: " + s.message());
      broken_.store(true);
      stream_.Shutdown();  // wakes the reader so the connection ends
      queue_space_cv_.notify_all();
      return false;
    }
    return true;
  }

  void CountPayload(uint64_t bytes) {
    if (options_.payload_bytes_sent != nullptr) options_.payload_bytes_sent->fetch_add(bytes);
  }

  NbdStream& stream_;
  const NbdExportTable& exports_;
  const NbdSessionOptions& options_;
  std::chrono::steady_clock::time_point start_;

  // Negotiated in the handshake (only the reading thread touches these before transmission;
  // workers only read them afterwards).
  bool no_zeroes_ = false;
  bool structured_ = false;
  bool base_allocation_ = false;
  std::string meta_export_;
  std::optional<NbdExport> export_;
  uint16_t transmission_flags_ = 0;

  std::mutex write_mu_;  // serialises whole replies on the stream
  std::atomic<bool> broken_{false};
  std::atomic<int> in_flight_{0};

  std::mutex queue_mu_;
  std::condition_variable queue_cv_;        // requests queued or closing
  std::condition_variable queue_space_cv_;  // room in the queue
  std::deque<Request> queue_;               // GUARDED_BY(queue_mu_)
  bool closing_ = false;                    // GUARDED_BY(queue_mu_)
};

}  // namespace
}  // namespace nbd

Status RunNbdSession(NbdStream& stream, const NbdExportTable& exports,
                     const NbdSessionOptions& options) {
  nbd::Session session(stream, exports, options);
  return session.Run();
}

}  // namespace ferry
