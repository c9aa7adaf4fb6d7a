// Tests for Ferry's NBD server and client against real peers: nbdinfo, nbdcopy, qemu-img,
// qemu-nbd, qemu-io and nbdkit, plus raw-socket clients that break the protocol.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

#include "common/bytes.h"
#include "disk/image.h"
#include "nbd/nbd_client.h"
#include "nbd/nbd_protocol.h"
#include "nbd/nbd_server.h"
#include "test_util.h"

extern char** environ;

namespace ferry {
namespace {

using testing::PatternSpec;
using testing::ShellQuote;
using testing::TempDir;

testing::CommandResult Sh(const std::string& command) { return testing::Run(command); }

constexpr uint64_t kImageSize = 16ull << 20;
constexpr uint32_t kBlock = 64 * 1024;

// ----- helpers -------------------------------------------------------------------------------

// A background process (qemu-nbd, nbdkit), killed and reaped on destruction.
class Child {
 public:
  Child(const std::vector<std::string>& argv, const std::string& log_path) {
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    if (posix_spawnp(&pid_, args[0], &fa, nullptr, args.data(), environ) != 0) pid_ = -1;
    posix_spawn_file_actions_destroy(&fa);
  }
  ~Child() { Stop(); }
  bool ok() const { return pid_ > 0; }
  // SIGTERM and wait: qemu-nbd flushes its image on the way out.
  void Stop() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGTERM);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
  }

 private:
  pid_t pid_ = -1;
};

int ConnectUnix(const std::string& path) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un sun{};
  sun.sun_family = AF_UNIX;
  std::strncpy(sun.sun_path, path.c_str(), sizeof sun.sun_path - 1);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&sun), sizeof sun) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

int ConnectTcp(uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_port = htons(port);
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&sin), sizeof sin) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// Polls until something accepts on the Unix socket (the child started), with a deadline.
bool WaitForSocket(const std::string& path) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(15);
  while (std::chrono::steady_clock::now() < deadline) {
    int fd = ConnectUnix(path);
    if (fd >= 0) {
      ::close(fd);
      return true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

template <typename Pred>
bool WaitFor(Pred pred, std::chrono::milliseconds limit = std::chrono::seconds(10)) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return pred();
}

std::string UnixUri(const std::string& sock, const std::string& name = "") {
  return "nbd+unix:///" + name + "?socket=" + sock;
}

std::vector<uint8_t> ReadAll(BlockSource& src) {
  std::vector<uint8_t> out(src.size());
  constexpr size_t kChunk = 4 << 20;
  for (uint64_t off = 0; off < src.size(); off += kChunk) {
    size_t n = static_cast<size_t>(std::min<uint64_t>(kChunk, src.size() - off));
    Status s = src.Read(off, std::span(out.data() + off, n));
    EXPECT_TRUE(s.ok()) << s.ToString();
  }
  return out;
}

// Reads everything from `threads` threads at once, in interleaved 1 MiB pieces.
std::vector<uint8_t> ReadAllParallel(BlockSource& src, int threads) {
  std::vector<uint8_t> out(src.size());
  constexpr uint64_t kPiece = 1 << 20;
  std::atomic<uint64_t> next{0};
  std::atomic<bool> ok{true};
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; ++t) {
    ts.emplace_back([&] {
      for (uint64_t off; (off = next.fetch_add(kPiece)) < src.size();) {
        size_t n = static_cast<size_t>(std::min<uint64_t>(kPiece, src.size() - off));
        if (!src.Read(off, std::span(out.data() + off, n)).ok()) ok = false;
      }
    });
  }
  for (auto& t : ts) t.join();
  EXPECT_TRUE(ok.load());
  return out;
}

// Extents as (offset, length, base:allocation flags), adjacent equal flags merged.
using FlagRuns = std::vector<std::tuple<uint64_t, uint64_t, uint32_t>>;

FlagRuns ToFlagRuns(const std::vector<Extent>& ext) {
  FlagRuns runs;
  for (const Extent& e : ext) {
    uint32_t f = e.kind == ExtentKind::kHole ? 3 : e.kind == ExtentKind::kZero ? 2 : 0;
    if (!runs.empty() && std::get<2>(runs.back()) == f) {
      std::get<1>(runs.back()) += e.length;
    } else {
      runs.push_back({e.offset, e.length, f});
    }
  }
  return runs;
}

std::vector<Extent> AllExtents(BlockSource& src) {
  std::vector<Extent> ext;
  Status s = src.Extents(0, src.size(), &ext);
  EXPECT_TRUE(s.ok()) << s.ToString();
  return ext;
}

// Checks that `ext` tiles [0, size) and that holes/zero extents read as zeros in `bytes`.
void ExpectExtentsConsistent(const std::vector<Extent>& ext, const std::vector<uint8_t>& bytes) {
  uint64_t pos = 0;
  for (const Extent& e : ext) {
    ASSERT_EQ(e.offset, pos);
    ASSERT_GT(e.length, 0u);
    if (e.kind == ExtentKind::kHole || e.kind == ExtentKind::kZero) {
      EXPECT_TRUE(IsAllZero(bytes.data() + e.offset, e.length)) << "extent at " << e.offset;
    }
    pos += e.length;
  }
  EXPECT_EQ(pos, bytes.size());
}

// What the copy engine does with a sink, in small: reads every chunk that has data, sends
// all-zero granules as WriteZeroes (the sink is not zero-initialized) and the rest as Writes.
Status CopyToSink(BlockSource& src, BlockSink& sink) {
  constexpr uint64_t kChunk = 4 << 20;
  const uint32_t g = sink.granularity();
  std::vector<uint8_t> buf(kChunk);
  for (uint64_t off = 0; off < src.size(); off += kChunk) {
    const uint64_t n = std::min(kChunk, src.size() - off);
    std::vector<Extent> ext;
    FERRY_TRY(src.Extents(off, n, &ext));
    bool any_data = false;
    for (const Extent& e : ext) any_data |= e.kind == ExtentKind::kData;
    if (!any_data) {
      FERRY_TRY(sink.WriteZeroes(off, n));
      continue;
    }
    FERRY_TRY(src.Read(off, std::span(buf.data(), n)));
    uint64_t run_start = 0;
    bool run_zero = false;
    for (uint64_t p = 0; p <= n; p += g) {
      const bool at_end = p >= n;
      const bool zero = !at_end && IsAllZero(buf.data() + p, std::min<uint64_t>(g, n - p));
      if (p > run_start && (at_end || zero != run_zero)) {
        if (run_zero) {
          FERRY_TRY(sink.WriteZeroes(off + run_start, p - run_start));
        } else {
          FERRY_TRY(sink.Write(off + run_start, std::span(buf.data() + run_start, p - run_start)));
        }
        run_start = p;
      }
      if (p == run_start) run_zero = zero;
    }
  }
  return sink.Finalize();
}

// ----- raw protocol client for hostile and edge-case tests -----------------------------------

class RawClient {
 public:
  explicit RawClient(int fd) : fd_(fd) {}
  ~RawClient() {
    if (fd_ >= 0) ::close(fd_);
  }
  bool connected() const { return fd_ >= 0; }

  bool Send(const std::vector<uint8_t>& b) {
    return ::send(fd_, b.data(), b.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(b.size());
  }
  bool Recv(size_t n, std::vector<uint8_t>* out, int timeout_ms = 5000) {
    out->resize(n);
    size_t got = 0;
    while (got < n) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, timeout_ms) <= 0) return false;
      ssize_t r = ::recv(fd_, out->data() + got, n - got, 0);
      if (r <= 0) return false;
      got += static_cast<size_t>(r);
    }
    return true;
  }
  // True if the server closes the connection (EOF or reset) within the timeout.
  bool WaitClosed(int timeout_ms = 5000) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    uint8_t b[4096];
    while (std::chrono::steady_clock::now() < deadline) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 100) <= 0) continue;
      ssize_t r = ::recv(fd_, b, sizeof b, 0);
      if (r <= 0) return true;
    }
    return false;
  }

  // Reads the greeting and answers with fixed newstyle + no zeroes.
  bool Greet() {
    std::vector<uint8_t> g;
    if (!Recv(18, &g)) return false;
    if (LoadBE64(g.data()) != nbd::kNbdMagic || LoadBE64(g.data() + 8) != nbd::kIHaveOpt) {
      return false;
    }
    return Send(BE32(nbd::kClientFlagFixedNewstyle | nbd::kClientFlagNoZeroes));
  }
  bool SendOption(uint32_t opt, const std::vector<uint8_t>& data) {
    std::vector<uint8_t> b = BE64(nbd::kIHaveOpt);
    Append(&b, BE32(opt));
    Append(&b, BE32(static_cast<uint32_t>(data.size())));
    Append(&b, data);
    return Send(b);
  }
  struct OptReply {
    uint32_t opt = 0, type = 0;
    std::vector<uint8_t> data;
  };
  bool ReadOptReply(OptReply* r) {
    std::vector<uint8_t> h;
    if (!Recv(20, &h) || LoadBE64(h.data()) != nbd::kOptReplyMagic) return false;
    r->opt = LoadBE32(h.data() + 8);
    r->type = LoadBE32(h.data() + 12);
    return Recv(LoadBE32(h.data() + 16), &r->data);
  }
  // Negotiates and enters transmission. Returns the export size, or 0 on failure.
  uint64_t Go(const std::string& name, bool structured, bool base_allocation) {
    OptReply r;
    if (structured) {
      if (!SendOption(nbd::kOptStructuredReply, {}) || !ReadOptReply(&r) ||
          r.type != nbd::kRepAck) {
        return 0;
      }
    }
    if (base_allocation) {
      std::vector<uint8_t> d = BE32(static_cast<uint32_t>(name.size()));
      Append(&d, Str(name));
      Append(&d, BE32(1));
      Append(&d, BE32(15));
      Append(&d, Str(nbd::kBaseAllocation));
      if (!SendOption(nbd::kOptSetMetaContext, d) || !ReadOptReply(&r) ||
          r.type != nbd::kRepMetaContext || !ReadOptReply(&r) || r.type != nbd::kRepAck) {
        return 0;
      }
    }
    std::vector<uint8_t> d = BE32(static_cast<uint32_t>(name.size()));
    Append(&d, Str(name));
    Append(&d, BE16(0));
    if (!SendOption(nbd::kOptGo, d)) return 0;
    uint64_t size = 0;
    while (ReadOptReply(&r)) {
      if (r.type == nbd::kRepInfo && r.data.size() == 12 && LoadBE16(r.data.data()) == 0) {
        size = LoadBE64(r.data.data() + 2);
      }
      if (r.type == nbd::kRepAck) return size;
      if (r.type & 0x80000000u) return 0;
    }
    return 0;
  }
  bool Request(uint16_t flags, uint16_t type, uint64_t handle, uint64_t offset, uint32_t length) {
    std::vector<uint8_t> b = BE32(nbd::kRequestMagic);
    Append(&b, BE16(flags));
    Append(&b, BE16(type));
    Append(&b, BE64(handle));
    Append(&b, BE64(offset));
    Append(&b, BE32(length));
    return Send(b);
  }
  // Simple reply header: error and handle.
  bool ReadSimple(uint32_t* error, uint64_t* handle) {
    std::vector<uint8_t> h;
    if (!Recv(16, &h) || LoadBE32(h.data()) != nbd::kSimpleReplyMagic) return false;
    *error = LoadBE32(h.data() + 4);
    *handle = LoadBE64(h.data() + 8);
    return true;
  }
  struct Chunk {
    uint16_t flags = 0, type = 0;
    uint64_t handle = 0;
    std::vector<uint8_t> payload;
  };
  bool ReadChunk(Chunk* c) {
    std::vector<uint8_t> h;
    if (!Recv(20, &h) || LoadBE32(h.data()) != nbd::kStructuredReplyMagic) return false;
    c->flags = LoadBE16(h.data() + 4);
    c->type = LoadBE16(h.data() + 6);
    c->handle = LoadBE64(h.data() + 8);
    return Recv(LoadBE32(h.data() + 16), &c->payload);
  }

  static std::vector<uint8_t> BE16(uint16_t v) {
    std::vector<uint8_t> b(2);
    StoreBE16(b.data(), v);
    return b;
  }
  static std::vector<uint8_t> BE32(uint32_t v) {
    std::vector<uint8_t> b(4);
    StoreBE32(b.data(), v);
    return b;
  }
  static std::vector<uint8_t> BE64(uint64_t v) {
    std::vector<uint8_t> b(8);
    StoreBE64(b.data(), v);
    return b;
  }
  static std::vector<uint8_t> Str(std::string_view s) { return {s.begin(), s.end()}; }
  static void Append(std::vector<uint8_t>* b, const std::vector<uint8_t>& x) {
    b->insert(b->end(), x.begin(), x.end());
  }

 private:
  int fd_;
};

// ----- fixture -------------------------------------------------------------------------------

class NbdTest : public ::testing::Test {
 protected:
  void SetUp() override {
    truth_ = dir_.Join("truth.raw");
    PatternSpec spec;
    spec.size = kImageSize;
    spec.block = kBlock;
    spec.data_fraction = 0.4;
    spec.zero_fraction = 0.1;
    spec.seed = 7;
    ASSERT_TRUE(testing::WritePatternRaw(truth_, spec));
    truth_bytes_ = testing::ReadFileBytes(truth_);
    auto src = OpenImage(truth_, OpenOptions{.format = ImageFormat::kRaw});
    ASSERT_TRUE(src.ok()) << src.status().ToString();
    source_ = std::shared_ptr<BlockSource>(std::move(src).value());
  }

  NbdServerOptions Options() {
    NbdServerOptions o;
    o.log = [this](std::string_view line) {
      std::lock_guard lock(log_mu_);
      log_.emplace_back(line);
    };
    return o;
  }

  std::unique_ptr<NbdServer> StartTcp(NbdServerOptions o = {}) {
    if (!o.log) o.log = Options().log;
    o.tcp_address = "127.0.0.1:0";
    auto s = NbdServer::Listen(o);
    EXPECT_TRUE(s.ok()) << s.status().ToString();
    if (!s.ok()) return nullptr;
    EXPECT_TRUE((*s)->Serve(source_, "disk", "pattern test disk").ok());
    EXPECT_TRUE((*s)->Start().ok());
    EXPECT_NE((*s)->port(), 0);
    return std::move(s).value();
  }

  std::unique_ptr<NbdServer> StartUnix() {
    NbdServerOptions o = Options();
    o.unix_socket_path = dir_.Join("ferry.sock");
    auto s = NbdServer::Listen(o);
    EXPECT_TRUE(s.ok()) << s.status().ToString();
    if (!s.ok()) return nullptr;
    EXPECT_TRUE((*s)->Serve(source_, "disk").ok());
    EXPECT_TRUE((*s)->Start().ok());
    return std::move(s).value();
  }

  bool LogContains(std::string_view needle) {
    std::lock_guard lock(log_mu_);
    for (const auto& l : log_) {
      if (l.find(needle) != std::string::npos) return true;
    }
    return false;
  }

  TempDir dir_;
  std::string truth_;
  std::vector<uint8_t> truth_bytes_;
  std::shared_ptr<BlockSource> source_;
  std::mutex log_mu_;
  std::vector<std::string> log_;
};

// ----- our server, real clients --------------------------------------------------------------

TEST_F(NbdTest, NbdinfoMapShowsTheSourceHoles) {
  auto server = StartTcp();
  ASSERT_NE(server, nullptr);
  auto r = Sh("nbdinfo --map " + ShellQuote(server->uri("disk")));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  // "    offset     length  type  description"
  FlagRuns got;
  std::istringstream in(r.output);
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    uint64_t off = 0, len = 0;
    uint32_t type = 0;
    if (!(ls >> off >> len >> type)) continue;
    if (!got.empty() && std::get<2>(got.back()) == type) {
      std::get<1>(got.back()) += len;
    } else {
      got.push_back({off, len, type});
    }
  }
  FlagRuns want = ToFlagRuns(AllExtents(*source_));
  EXPECT_EQ(got, want) << r.output;
  // The pattern has holes, so the map must show some.
  bool has_hole = false;
  for (auto& [o, l, f] : want) has_hole |= f == 3;
  EXPECT_TRUE(has_hole);
}

TEST_F(NbdTest, NbdinfoListShowsEveryExport) {
  auto server = StartTcp();
  ASSERT_NE(server, nullptr);
  ASSERT_TRUE(server->Serve(source_, "second").ok());
  EXPECT_EQ(server->Serve(source_, "second").code(), ErrorCode::kAlreadyExists);
  auto r = Sh("nbdinfo --list " + ShellQuote(server->uri()));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("export=\"disk\""), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("export=\"second\""), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("pattern test disk"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("export-size: " + std::to_string(kImageSize)), std::string::npos);
  EXPECT_NE(r.output.find("is_read_only: true"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("can_multi_conn: true"), std::string::npos) << r.output;
}

TEST_F(NbdTest, NbdcopyOverTcpAndUnixIsIdentical) {
  auto tcp = StartTcp();
  auto unix_server = StartUnix();
  ASSERT_NE(tcp, nullptr);
  ASSERT_NE(unix_server, nullptr);
  std::string out1 = dir_.Join("out1.raw");
  std::string out2 = dir_.Join("out2.raw");
  auto r = Sh("nbdcopy " + ShellQuote(tcp->uri("disk")) + " " + ShellQuote(out1));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(testing::ReadFileBytes(out1), truth_bytes_);
  // The default export ("") is the first one served.
  r = Sh("nbdcopy --connections=4 --requests=16 " + ShellQuote(unix_server->uri()) + " " +
         ShellQuote(out2));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(testing::ReadFileBytes(out2), truth_bytes_);
}

TEST_F(NbdTest, NbdcopyWithManyConnectionsAndRequests) {
  auto server = StartTcp();
  ASSERT_NE(server, nullptr);
  std::string out = dir_.Join("out.raw");
  auto r = Sh("nbdcopy --connections=4 --requests=16 --request-size=262144 " +
              ShellQuote(server->uri("disk")) + " " + ShellQuote(out));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(testing::ReadFileBytes(out), truth_bytes_);
  // Several nbdcopy runs at once against one server.
  std::vector<std::thread> ts;
  std::atomic<int> failures{0};
  for (int i = 0; i < 3; ++i) {
    ts.emplace_back([&, i] {
      std::string o = dir_.Join("par" + std::to_string(i) + ".raw");
      auto rr =
          Sh("nbdcopy --connections=2 " + ShellQuote(server->uri("disk")) + " " + ShellQuote(o));
      if (rr.exit_code != 0 || testing::ReadFileBytes(o) != truth_bytes_) ++failures;
    });
  }
  for (auto& t : ts) t.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_TRUE(WaitFor([&] { return server->connection_count() == 0; }));
}

TEST_F(NbdTest, QemuImgConvertFromOurServer) {
  auto server = StartTcp();
  ASSERT_NE(server, nullptr);
  std::string raw = dir_.Join("conv.raw");
  std::string qcow = dir_.Join("conv.qcow2");
  auto r = Sh("qemu-img convert -f raw -O raw " + ShellQuote(server->uri("disk")) + " " +
              ShellQuote(raw));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(testing::ReadFileBytes(raw), truth_bytes_);
  r = Sh("qemu-img convert -f raw -O qcow2 " + ShellQuote(server->uri("disk")) + " " +
         ShellQuote(qcow));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(testing::QemuImgCompare(truth_, qcow, "raw", "qcow2"), 0);
  EXPECT_EQ(Sh("qemu-img check -f qcow2 " + ShellQuote(qcow)).exit_code, 0);
}

// ----- our client ----------------------------------------------------------------------------

TEST_F(NbdTest, OurClientAgainstOurServer) {
  auto server = StartTcp();
  ASSERT_NE(server, nullptr);
  auto src = OpenNbdSource(server->uri("disk"));
  ASSERT_TRUE(src.ok()) << src.status().ToString();
  EXPECT_EQ((*src)->size(), kImageSize);
  EXPECT_EQ((*src)->info().format, "nbd");
  EXPECT_EQ(ReadAllParallel(**src, 4), truth_bytes_);
  EXPECT_EQ(ToFlagRuns(AllExtents(**src)), ToFlagRuns(AllExtents(*source_)));
  // Several connections were opened (we advertise multi-conn): all four asked for, the
  // extra ones at once.
  EXPECT_GE(server->connection_count(), 4u);
  const auto details = (*src)->info().details;
  EXPECT_NE(std::find(details.begin(), details.end(),
                      std::pair<std::string, std::string>{"connections", "4"}),
            details.end());
  // Extents of an unaligned sub-range are exact too.
  std::vector<Extent> a, b;
  ASSERT_TRUE((*src)->Extents(12345, 3 << 20, &a).ok());
  ASSERT_TRUE(source_->Extents(12345, 3 << 20, &b).ok());
  EXPECT_EQ(ToFlagRuns(a), ToFlagRuns(b));

  // Unix socket too.
  auto unix_server = StartUnix();
  ASSERT_NE(unix_server, nullptr);
  auto src2 = OpenNbdSource(unix_server->uri("disk"), {.connections = 1});
  ASSERT_TRUE(src2.ok()) << src2.status().ToString();
  EXPECT_EQ(ReadAll(**src2), truth_bytes_);

  // Our server is read-only; it offers no dirty bitmaps.
  auto sink = OpenNbdSink(server->uri("disk"));
  EXPECT_EQ(sink.status().code(), ErrorCode::kPermissionDenied) << sink.status().ToString();
  auto bitmap = OpenNbdSource(server->uri("disk"), {.meta_context = "qemu:dirty-bitmap:b0"});
  EXPECT_EQ(bitmap.status().code(), ErrorCode::kNotFound) << bitmap.status().ToString();
  auto bad = OpenNbdSource(server->uri("disk"), {.meta_context = "nonsense"});
  EXPECT_EQ(bad.status().code(), ErrorCode::kInvalidArgument);
}

TEST_F(NbdTest, CountsThePayloadBytesOfReadReplies) {
  auto server = StartTcp();
  ASSERT_NE(server, nullptr);
  EXPECT_EQ(server->payload_bytes_sent(), 0u);
  std::vector<Extent> extents = AllExtents(*source_);
  auto data = std::find_if(extents.begin(), extents.end(),
                           [](const Extent& e) { return e.kind == ExtentKind::kData; });
  auto hole = std::find_if(extents.begin(), extents.end(),
                           [](const Extent& e) { return e.kind == ExtentKind::kHole; });
  ASSERT_NE(data, extents.end());
  ASSERT_NE(hole, extents.end());
  auto src = OpenNbdSource(server->uri("disk"), {.connections = 1});
  ASSERT_TRUE(src.ok()) << src.status().ToString();
  std::vector<uint8_t> buf(std::min<uint64_t>(data->length, 65536));
  ASSERT_TRUE((*src)->Read(data->offset, buf).ok());
  EXPECT_EQ(server->payload_bytes_sent(), buf.size());
  // A hole goes out as a hole chunk: no payload.
  std::vector<uint8_t> zeros(std::min<uint64_t>(hole->length, 65536));
  ASSERT_TRUE((*src)->Read(hole->offset, zeros).ok());
  EXPECT_EQ(server->payload_bytes_sent(), buf.size());
  // A whole copy sends at most the disk's size.
  auto r = Sh("nbdcopy " + ShellQuote(server->uri("disk")) + " " + ShellQuote(dir_.Join("c.raw")));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_GT(server->payload_bytes_sent(), buf.size());
  EXPECT_LE(server->payload_bytes_sent(), buf.size() + kImageSize);
}

TEST_F(NbdTest, PrivateExportsAreReachableOnlyByName) {
  NbdServerOptions o = Options();
  o.private_exports = true;
  auto server = StartTcp(o);
  ASSERT_NE(server, nullptr);
  auto list = Sh("nbdinfo --list " + ShellQuote(server->uri()) + " 2>&1");
  EXPECT_EQ(list.output.find("export=\"disk\""), std::string::npos) << list.output;
  EXPECT_EQ(list.output.find("pattern test disk"), std::string::npos) << list.output;
  EXPECT_NE(Sh("nbdinfo --size " + ShellQuote(server->uri()) + " 2>&1").exit_code, 0);
  auto named = Sh("nbdinfo --size " + ShellQuote(server->uri("disk")));
  ASSERT_EQ(named.exit_code, 0) << named.output;
  EXPECT_EQ(named.output, std::to_string(kImageSize) + "\n");
}

TEST_F(NbdTest, OurClientErrorsNameTheUri) {
  auto unknown = OpenNbdSource(UnixUri(dir_.Join("nobody.sock")));
  ASSERT_FALSE(unknown.ok());
  EXPECT_NE(unknown.status().message().find("nobody.sock"), std::string::npos)
      << unknown.status().ToString();
  auto server = StartTcp();
  ASSERT_NE(server, nullptr);
  auto missing = OpenNbdSource(server->uri("no-such-export"));
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("no-such-export"), std::string::npos);
  EXPECT_TRUE(IsNbdUri("nbd://h:1/x"));
  EXPECT_TRUE(IsNbdUri("nbd+unix:///x?socket=/s"));
  EXPECT_FALSE(IsNbdUri("/var/tmp/nbd.raw"));
  EXPECT_FALSE(IsNbdUri("http://nbd"));
}

TEST_F(NbdTest, OurClientAgainstQemuNbd) {
  std::string sock = dir_.Join("qemu.sock");
  Child qemu({"qemu-nbd", "-r", "-f", "raw", "--shared=4", "--persistent", "-k", sock, truth_},
             dir_.Join("qemu-nbd.log"));
  ASSERT_TRUE(qemu.ok());
  ASSERT_TRUE(WaitForSocket(sock));
  auto src = OpenNbdSource(UnixUri(sock));
  ASSERT_TRUE(src.ok()) << src.status().ToString();
  EXPECT_EQ((*src)->size(), kImageSize);
  std::vector<uint8_t> bytes = ReadAllParallel(**src, 4);
  EXPECT_EQ(bytes, truth_bytes_);
  std::vector<Extent> ext = AllExtents(**src);
  ExpectExtentsConsistent(ext, bytes);
  // qemu-nbd reports the file's holes as we do.
  EXPECT_EQ(ToFlagRuns(ext), ToFlagRuns(AllExtents(*source_)));
}

TEST_F(NbdTest, SinkIntoQemuNbdQcow2) {
  std::string target = dir_.Join("target.qcow2");
  ASSERT_EQ(
      Sh("qemu-img create -q -f qcow2 " + ShellQuote(target) + " " + std::to_string(kImageSize))
          .exit_code,
      0);
  // Garbage everywhere first: WriteZeroes must really zero (zero_initialized is false).
  ASSERT_EQ(Sh("qemu-io -f qcow2 -c 'write -P 0xee 0 16M' " + ShellQuote(target)).exit_code, 0);
  std::string sock = dir_.Join("qemu-w.sock");
  Child qemu({"qemu-nbd", "-f", "qcow2", "--shared=4", "--persistent", "-k", sock, target},
             dir_.Join("qemu-nbd-w.log"));
  ASSERT_TRUE(qemu.ok());
  ASSERT_TRUE(WaitForSocket(sock));
  auto sink = OpenNbdSink(UnixUri(sock));
  ASSERT_TRUE(sink.ok()) << sink.status().ToString();
  EXPECT_EQ((*sink)->size(), kImageSize);
  EXPECT_FALSE((*sink)->zero_initialized());
  EXPECT_EQ((*sink)->granularity(), 64u * 1024);
  Status s = CopyToSink(*source_, **sink);
  ASSERT_TRUE(s.ok()) << s.ToString();
  auto blob = (*sink)->Checkpoint();
  ASSERT_TRUE(blob.ok());
  EXPECT_TRUE(blob->empty());
  sink->reset();
  qemu.Stop();
  EXPECT_EQ(Sh("qemu-img check -q -f qcow2 " + ShellQuote(target)).exit_code, 0);
  EXPECT_EQ(testing::QemuImgCompare(truth_, target, "raw", "qcow2"), 0);
}

TEST_F(NbdTest, SinkIntoNbdkitMemory) {
  std::string sock = dir_.Join("kit.sock");
  Child kit(
      {"nbdkit", "-f", "--exit-with-parent", "-U", sock, "memory", std::to_string(kImageSize)},
      dir_.Join("nbdkit.log"));
  ASSERT_TRUE(kit.ok());
  ASSERT_TRUE(WaitForSocket(sock));
  // Fill the export with garbage through the sink itself, from several threads at once.
  {
    auto sink = OpenNbdSink(UnixUri(sock));
    ASSERT_TRUE(sink.ok()) << sink.status().ToString();
    std::vector<uint8_t> junk(kImageSize / 4, 0x5a);
    std::vector<std::thread> ts;
    std::atomic<bool> ok{true};
    for (int i = 0; i < 4; ++i) {
      ts.emplace_back([&, i] {
        if (!(*sink)->Write(uint64_t(i) * junk.size(), junk).ok()) ok = false;
      });
    }
    for (auto& t : ts) t.join();
    ASSERT_TRUE(ok.load());
    ASSERT_TRUE((*sink)->Finalize().ok());
  }
  auto sink = OpenNbdSink(UnixUri(sock));
  ASSERT_TRUE(sink.ok()) << sink.status().ToString();
  Status s = CopyToSink(*source_, **sink);
  ASSERT_TRUE(s.ok()) << s.ToString();
  auto back = OpenNbdSource(UnixUri(sock));
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  std::vector<uint8_t> bytes = ReadAll(**back);
  EXPECT_EQ(bytes, truth_bytes_);
  ExpectExtentsConsistent(AllExtents(**back), bytes);
}

TEST_F(NbdTest, DirtyBitmapFromQemuNbd) {
  std::string img = dir_.Join("bitmap.qcow2");
  std::string q = ShellQuote(img);
  ASSERT_EQ(Sh("qemu-img create -q -f qcow2 " + q + " 16M").exit_code, 0);
  // Written before the bitmap exists: clean.
  ASSERT_EQ(Sh("qemu-io -f qcow2 -c 'write -P 0x11 0 1M' " + q).exit_code, 0);
  auto r = Sh("qemu-img bitmap --add --enable -f qcow2 " + q + " b0");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  // Written while the bitmap records: dirty (granularity 64 KiB).
  r =
      Sh("qemu-io -f qcow2 -c 'write -P 0x55 2M 64k' -c 'write -P 0x66 5M 1M' -c "
         "'write -P 0x77 10M 4k' " +
         q);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::string sock = dir_.Join("bitmap.sock");
  Child qemu({"qemu-nbd", "-r", "-f", "qcow2", "-B", "b0", "--persistent", "-k", sock, img},
             dir_.Join("qemu-nbd-b.log"));
  ASSERT_TRUE(qemu.ok());
  ASSERT_TRUE(WaitForSocket(sock));
  auto src = OpenNbdSource(UnixUri(sock), {.meta_context = "qemu:dirty-bitmap:b0"});
  ASSERT_TRUE(src.ok()) << src.status().ToString();
  std::vector<Extent> ext = AllExtents(**src);
  std::vector<Extent> want = {
      {0, 2 << 20, ExtentKind::kSkip},
      {2 << 20, 64 << 10, ExtentKind::kData},
      {(2 << 20) + (64 << 10), (3 << 20) - (64 << 10), ExtentKind::kSkip},
      {5 << 20, 1 << 20, ExtentKind::kData},
      {6 << 20, 4 << 20, ExtentKind::kSkip},
      {10 << 20, 64 << 10, ExtentKind::kData},  // a 4 KiB write dirties its 64 KiB granule
      {(10 << 20) + (64 << 10), (6 << 20) - (64 << 10), ExtentKind::kSkip},
  };
  EXPECT_EQ(ext, want);
  std::vector<uint8_t> b(64 << 10);
  ASSERT_TRUE((*src)->Read(2 << 20, b).ok());
  EXPECT_EQ(b, std::vector<uint8_t>(64 << 10, 0x55));
}

// ----- hostile and broken clients ------------------------------------------------------------

TEST_F(NbdTest, BadMagicAndHugeOptionsCloseTheConnection) {
  auto server = StartTcp();
  ASSERT_NE(server, nullptr);
  auto good = OpenNbdSource(server->uri("disk"), {.connections = 1});
  ASSERT_TRUE(good.ok());
  {
    RawClient c(ConnectTcp(server->port()));
    ASSERT_TRUE(c.Greet());
    std::vector<uint8_t> bad = RawClient::BE64(0x1122334455667788);
    RawClient::Append(&bad, RawClient::BE32(nbd::kOptGo));
    RawClient::Append(&bad, RawClient::BE32(0));
    ASSERT_TRUE(c.Send(bad));
    EXPECT_TRUE(c.WaitClosed());
  }
  {
    RawClient c(ConnectTcp(server->port()));
    ASSERT_TRUE(c.Greet());
    std::vector<uint8_t> huge = RawClient::BE64(nbd::kIHaveOpt);
    RawClient::Append(&huge, RawClient::BE32(nbd::kOptGo));
    RawClient::Append(&huge, RawClient::BE32(0xffffffff));
    ASSERT_TRUE(c.Send(huge));
    EXPECT_TRUE(c.WaitClosed());
  }
  {
    RawClient c(ConnectTcp(server->port()));
    std::vector<uint8_t> g;
    ASSERT_TRUE(c.Recv(18, &g));
    ASSERT_TRUE(c.Send(RawClient::BE32(0x80)));  // unknown client flag
    EXPECT_TRUE(c.WaitClosed());
  }
  {
    // NBD_OPT_EXPORT_NAME cannot fail politely: an unknown name closes the connection.
    RawClient c(ConnectTcp(server->port()));
    ASSERT_TRUE(c.Greet());
    ASSERT_TRUE(c.SendOption(nbd::kOptExportName, RawClient::Str("nope")));
    EXPECT_TRUE(c.WaitClosed());
  }
  {
    // A client that stops mid-option.
    RawClient c(ConnectTcp(server->port()));
    ASSERT_TRUE(c.Greet());
    ASSERT_TRUE(c.Send(RawClient::BE64(nbd::kIHaveOpt)));
  }
  EXPECT_TRUE(LogContains("bad option magic"));
  EXPECT_TRUE(LogContains("limit"));
  EXPECT_TRUE(LogContains("unknown client flags"));
  EXPECT_TRUE(LogContains("unknown export 'nope'"));
  // The established client is unaffected.
  EXPECT_EQ(ReadAll(**good), truth_bytes_);
}

TEST_F(NbdTest, OptionErrorsAreRepliedAndNegotiationContinues) {
  auto server = StartTcp();
  ASSERT_NE(server, nullptr);
  RawClient c(ConnectTcp(server->port()));
  ASSERT_TRUE(c.Greet());
  RawClient::OptReply r;
  ASSERT_TRUE(c.SendOption(99, {}));
  ASSERT_TRUE(c.ReadOptReply(&r));
  EXPECT_EQ(r.type, nbd::kRepErrUnsup);
  ASSERT_TRUE(c.SendOption(nbd::kOptStartTls, {}));
  ASSERT_TRUE(c.ReadOptReply(&r));
  EXPECT_EQ(r.type, nbd::kRepErrPolicy);
  ASSERT_TRUE(c.SendOption(nbd::kOptList, {1, 2, 3}));
  ASSERT_TRUE(c.ReadOptReply(&r));
  EXPECT_EQ(r.type, nbd::kRepErrInvalid);
  // Meta contexts before structured replies are refused.
  ASSERT_TRUE(c.SendOption(nbd::kOptListMetaContext, {0, 0, 0, 0, 0, 0, 0, 0}));
  ASSERT_TRUE(c.ReadOptReply(&r));
  EXPECT_EQ(r.type, nbd::kRepErrInvalid);
  // GO with a malformed body, then with an unknown export.
  ASSERT_TRUE(c.SendOption(nbd::kOptGo, {0, 0, 0, 9, 'x'}));
  ASSERT_TRUE(c.ReadOptReply(&r));
  EXPECT_EQ(r.type, nbd::kRepErrInvalid);
  std::vector<uint8_t> go = RawClient::BE32(4);
  RawClient::Append(&go, RawClient::Str("nope"));
  RawClient::Append(&go, RawClient::BE16(0));
  ASSERT_TRUE(c.SendOption(nbd::kOptGo, go));
  ASSERT_TRUE(c.ReadOptReply(&r));
  EXPECT_EQ(r.type, nbd::kRepErrUnknown);
  // LIST_META_CONTEXT with no query lists base:allocation.
  ASSERT_TRUE(c.SendOption(nbd::kOptStructuredReply, {}));
  ASSERT_TRUE(c.ReadOptReply(&r));
  EXPECT_EQ(r.type, nbd::kRepAck);
  std::vector<uint8_t> list = RawClient::BE32(4);
  RawClient::Append(&list, RawClient::Str("disk"));
  RawClient::Append(&list, RawClient::BE32(0));
  ASSERT_TRUE(c.SendOption(nbd::kOptListMetaContext, list));
  ASSERT_TRUE(c.ReadOptReply(&r));
  ASSERT_EQ(r.type, nbd::kRepMetaContext);
  EXPECT_EQ(std::string(r.data.begin() + 4, r.data.end()), "base:allocation");
  ASSERT_TRUE(c.ReadOptReply(&r));
  EXPECT_EQ(r.type, nbd::kRepAck);
  // And the connection still reaches transmission.
  EXPECT_EQ(c.Go("disk", true, true), kImageSize);
  ASSERT_TRUE(c.Request(0, nbd::kCmdDisc, 1, 0, 0));
  EXPECT_TRUE(c.WaitClosed());
}

TEST_F(NbdTest, BadRequestsGetErrorsWithSimpleReplies) {
  auto server = StartTcp();
  ASSERT_NE(server, nullptr);
  RawClient c(ConnectTcp(server->port()));
  ASSERT_TRUE(c.Greet());
  ASSERT_EQ(c.Go("disk", false, false), kImageSize);
  uint32_t err = 0;
  uint64_t handle = 0;
  std::vector<uint8_t> data;

  ASSERT_TRUE(c.Request(0, nbd::kCmdRead, 1, kImageSize - 4096, 8192));  // past the end
  ASSERT_TRUE(c.ReadSimple(&err, &handle));
  EXPECT_EQ(err, nbd::kEinval);
  EXPECT_EQ(handle, 1u);
  ASSERT_TRUE(c.Request(0, nbd::kCmdRead, 2, 0, 1u << 30));  // 1 GiB
  ASSERT_TRUE(c.ReadSimple(&err, &handle));
  EXPECT_EQ(err, nbd::kEoverflow);
  ASSERT_TRUE(c.Request(0, nbd::kCmdRead, 3, ~0ull - 10, 100));  // offset overflow
  ASSERT_TRUE(c.ReadSimple(&err, &handle));
  EXPECT_EQ(err, nbd::kEinval);
  ASSERT_TRUE(c.Request(0, 99, 4, 0, 0));  // unknown command
  ASSERT_TRUE(c.ReadSimple(&err, &handle));
  EXPECT_EQ(err, nbd::kEinval);
  ASSERT_TRUE(c.Request(0, nbd::kCmdBlockStatus, 5, 0, 4096));  // no context negotiated
  ASSERT_TRUE(c.ReadSimple(&err, &handle));
  EXPECT_EQ(err, nbd::kEinval);
  ASSERT_TRUE(c.Request(nbd::kCmdFlagDf, nbd::kCmdRead, 6, 0, 4096));  // DF needs structured
  ASSERT_TRUE(c.ReadSimple(&err, &handle));
  EXPECT_EQ(err, nbd::kEinval);
  // A write (payload included) is refused and the stream stays in sync.
  ASSERT_TRUE(c.Request(0, nbd::kCmdWrite, 7, 0, 3000));
  ASSERT_TRUE(c.Send(std::vector<uint8_t>(3000, 0xab)));
  ASSERT_TRUE(c.ReadSimple(&err, &handle));
  EXPECT_EQ(err, nbd::kEperm);
  EXPECT_EQ(handle, 7u);
  for (uint16_t cmd : {nbd::kCmdTrim, nbd::kCmdWriteZeroes}) {
    ASSERT_TRUE(c.Request(0, cmd, 8, 0, 4096));
    ASSERT_TRUE(c.ReadSimple(&err, &handle));
    EXPECT_EQ(err, nbd::kEperm);
  }
  ASSERT_TRUE(c.Request(0, nbd::kCmdFlush, 9, 0, 0));
  ASSERT_TRUE(c.ReadSimple(&err, &handle));
  EXPECT_EQ(err, 0u);
  ASSERT_TRUE(c.Request(0, nbd::kCmdCache, 10, 0, 1 << 20));
  ASSERT_TRUE(c.ReadSimple(&err, &handle));
  EXPECT_EQ(err, 0u);
  // A good read still returns the right bytes.
  ASSERT_TRUE(c.Request(0, nbd::kCmdRead, 11, 3 * kBlock - 100, 2 * kBlock));
  ASSERT_TRUE(c.ReadSimple(&err, &handle));
  EXPECT_EQ(err, 0u);
  ASSERT_TRUE(c.Recv(2 * kBlock, &data));
  EXPECT_TRUE(std::equal(data.begin(), data.end(), truth_bytes_.begin() + 3 * kBlock - 100));
  // A write too large to drain ends the connection.
  ASSERT_TRUE(c.Request(0, nbd::kCmdWrite, 12, 0, 0xffffffff));
  EXPECT_TRUE(c.WaitClosed());
  // Bad request magic ends another.
  RawClient c2(ConnectTcp(server->port()));
  ASSERT_TRUE(c2.Greet());
  ASSERT_EQ(c2.Go("disk", false, false), kImageSize);
  ASSERT_TRUE(c2.Send(std::vector<uint8_t>(28, 0x42)));
  EXPECT_TRUE(c2.WaitClosed());
  EXPECT_TRUE(LogContains("bad request magic"));
  // A truncated request followed by a close is handled; the server keeps serving.
  {
    RawClient c3(ConnectTcp(server->port()));
    ASSERT_TRUE(c3.Greet());
    ASSERT_EQ(c3.Go("disk", false, false), kImageSize);
    ASSERT_TRUE(c3.Send(std::vector<uint8_t>{0x25, 0x60, 0x95, 0x13, 0, 0}));
  }
  EXPECT_TRUE(WaitFor([&] { return server->connection_count() == 0; }));
  auto r = Sh("nbdinfo " + ShellQuote(server->uri("disk")));
  EXPECT_EQ(r.exit_code, 0) << r.output;
}

TEST_F(NbdTest, StructuredReadsUseHolesAndRespectDf) {
  auto server = StartTcp();
  ASSERT_NE(server, nullptr);
  // A range with both data and holes in the truth.
  std::vector<Extent> ext = AllExtents(*source_);
  uint64_t start = 0;
  for (size_t i = 0; i + 1 < ext.size(); ++i) {
    if (ext[i].kind == ExtentKind::kData && ext[i + 1].kind == ExtentKind::kHole) {
      start = ext[i + 1].offset - 4096;
      break;
    }
  }
  ASSERT_NE(start, 0u);
  const uint32_t len = 1 << 20;
  RawClient c(ConnectTcp(server->port()));
  ASSERT_TRUE(c.Greet());
  ASSERT_EQ(c.Go("disk", true, true), kImageSize);

  for (uint16_t flags : {uint16_t{0}, nbd::kCmdFlagDf}) {
    ASSERT_TRUE(c.Request(flags, nbd::kCmdRead, 100 + flags, start, len));
    std::vector<uint8_t> got(len, 0xcc);
    int data_chunks = 0, hole_chunks = 0;
    RawClient::Chunk ch;
    do {
      ASSERT_TRUE(c.ReadChunk(&ch));
      EXPECT_EQ(ch.handle, 100u + flags);
      if (ch.type == nbd::kReplyTypeOffsetData) {
        ++data_chunks;
        uint64_t off = LoadBE64(ch.payload.data());
        std::copy(ch.payload.begin() + 8, ch.payload.end(), got.begin() + (off - start));
      } else if (ch.type == nbd::kReplyTypeOffsetHole) {
        ++hole_chunks;
        uint64_t off = LoadBE64(ch.payload.data());
        uint32_t n = LoadBE32(ch.payload.data() + 8);
        std::fill(got.begin() + (off - start), got.begin() + (off - start) + n, 0);
      } else {
        ADD_FAILURE() << "unexpected chunk type " << ch.type;
      }
    } while (!(ch.flags & nbd::kReplyFlagDone));
    EXPECT_TRUE(std::equal(got.begin(), got.end(), truth_bytes_.begin() + start));
    if (flags & nbd::kCmdFlagDf) {
      EXPECT_EQ(data_chunks, 1);
      EXPECT_EQ(hole_chunks, 0);
    } else {
      EXPECT_GE(hole_chunks, 1);
    }
  }
  // Errors come as structured error chunks with a message.
  ASSERT_TRUE(c.Request(0, nbd::kCmdRead, 7, kImageSize, 512));
  RawClient::Chunk ch;
  ASSERT_TRUE(c.ReadChunk(&ch));
  EXPECT_EQ(ch.type, nbd::kReplyTypeError);
  EXPECT_TRUE(ch.flags & nbd::kReplyFlagDone);
  EXPECT_EQ(LoadBE32(ch.payload.data()), nbd::kEinval);
  // Block status with REQ_ONE returns one descriptor.
  ASSERT_TRUE(c.Request(nbd::kCmdFlagReqOne, nbd::kCmdBlockStatus, 8, start, len));
  ASSERT_TRUE(c.ReadChunk(&ch));
  EXPECT_EQ(ch.type, nbd::kReplyTypeBlockStatus);
  EXPECT_EQ(ch.payload.size(), 12u);
  EXPECT_EQ(LoadBE32(ch.payload.data() + 4), 4096u);  // the data tail before the hole
  EXPECT_EQ(LoadBE32(ch.payload.data() + 8), 0u);
}

TEST_F(NbdTest, PipelinedRequestsAllGetTheirReplies) {
  NbdServerOptions o = Options();
  o.workers_per_connection = 4;
  auto server = StartTcp(o);
  ASSERT_NE(server, nullptr);
  RawClient c(ConnectTcp(server->port()));
  ASSERT_TRUE(c.Greet());
  ASSERT_EQ(c.Go("disk", false, false), kImageSize);
  constexpr int kRequests = 48;
  constexpr uint32_t kLen = 128 * 1024;
  std::vector<uint8_t> all;
  for (int i = 0; i < kRequests; ++i) {
    std::vector<uint8_t> b = RawClient::BE32(nbd::kRequestMagic);
    RawClient::Append(&b, RawClient::BE16(0));
    RawClient::Append(&b, RawClient::BE16(nbd::kCmdRead));
    RawClient::Append(&b, RawClient::BE64(1000 + i));
    RawClient::Append(&b, RawClient::BE64(uint64_t(i) * 300000));
    RawClient::Append(&b, RawClient::BE32(kLen));
    RawClient::Append(&all, b);
  }
  ASSERT_TRUE(c.Send(all));
  std::set<uint64_t> seen;
  for (int i = 0; i < kRequests; ++i) {
    uint32_t err = 1;
    uint64_t handle = 0;
    ASSERT_TRUE(c.ReadSimple(&err, &handle));
    ASSERT_EQ(err, 0u);
    ASSERT_GE(handle, 1000u);
    ASSERT_LT(handle, 1000u + kRequests);
    std::vector<uint8_t> data;
    ASSERT_TRUE(c.Recv(kLen, &data));
    uint64_t off = (handle - 1000) * 300000;
    EXPECT_TRUE(std::equal(data.begin(), data.end(), truth_bytes_.begin() + off)) << handle;
    seen.insert(handle);
  }
  EXPECT_EQ(seen.size(), size_t{kRequests});
}

TEST_F(NbdTest, HandshakeAndIdleTimeouts) {
  NbdServerOptions o = Options();
  o.handshake_timeout = std::chrono::milliseconds(300);
  o.idle_timeout = std::chrono::milliseconds(300);
  auto server = StartTcp(o);
  ASSERT_NE(server, nullptr);
  RawClient silent(ConnectTcp(server->port()));
  ASSERT_TRUE(silent.connected());
  EXPECT_TRUE(silent.WaitClosed(5000));  // greeting, then nothing from us: closed
  RawClient idle(ConnectTcp(server->port()));
  ASSERT_TRUE(idle.Greet());
  ASSERT_EQ(idle.Go("disk", false, false), kImageSize);
  EXPECT_TRUE(idle.WaitClosed(5000));
  EXPECT_TRUE(LogContains("timed out"));
  EXPECT_TRUE(LogContains("idle"));
  EXPECT_TRUE(WaitFor([&] { return server->connection_count() == 0; }));
}

TEST_F(NbdTest, StopDisconnectsClientsAndJoinsEverything) {
  auto server = StartTcp();
  ASSERT_NE(server, nullptr);
  RawClient a(ConnectTcp(server->port()));
  ASSERT_TRUE(a.Greet());
  ASSERT_EQ(a.Go("disk", true, true), kImageSize);
  RawClient b(ConnectTcp(server->port()));  // stuck in the handshake
  ASSERT_TRUE(b.connected());
  EXPECT_TRUE(WaitFor([&] { return server->connection_count() == 2; }));
  auto t0 = std::chrono::steady_clock::now();
  server->Stop();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5));
  EXPECT_EQ(server->connection_count(), 0u);
  EXPECT_TRUE(a.WaitClosed());
  EXPECT_TRUE(b.WaitClosed());
  EXPECT_EQ(ConnectTcp(server->port()), -1);
  server->Stop();  // idempotent
}

TEST_F(NbdTest, RunBlocksUntilRequestStop) {
  NbdServerOptions o = Options();
  o.tcp_address = "127.0.0.1:0";
  auto server = NbdServer::Listen(o);
  ASSERT_TRUE(server.ok());
  ASSERT_TRUE((*server)->Serve(source_, "").ok());
  std::thread runner([&] { EXPECT_TRUE((*server)->Run().ok()); });
  auto src = OpenNbdSource((*server)->uri(), {.connections = 1});
  ASSERT_TRUE(src.ok()) << src.status().ToString();
  std::vector<uint8_t> b(4096);
  EXPECT_TRUE((*src)->Read(0, b).ok());
  (*server)->RequestStop();
  runner.join();
  EXPECT_EQ((*server)->connection_count(), 0u);
  EXPECT_FALSE((*src)->Read(0, b).ok());  // disconnected
}

TEST_F(NbdTest, ListenAddressesAndSocketPaths) {
  NbdServerOptions o = Options();
  EXPECT_EQ(NbdServer::Listen(o).status().code(), ErrorCode::kInvalidArgument);
  o.tcp_address = "127.0.0.1";
  EXPECT_EQ(NbdServer::Listen(o).status().code(), ErrorCode::kInvalidArgument);
  o.tcp_address = "127.0.0.1:99999";
  EXPECT_EQ(NbdServer::Listen(o).status().code(), ErrorCode::kInvalidArgument);
  o.tcp_address = "[::1]:0";
  auto v6 = NbdServer::Listen(o);
  if (v6.ok()) {  // hosts without IPv6 cannot bind it
    EXPECT_EQ((*v6)->uri("a b").substr(0, 12), "nbd://[::1]:");
    EXPECT_NE((*v6)->uri("a b").find("/a%20b"), std::string::npos);
  }

  o.tcp_address.clear();
  o.unix_socket_path = dir_.Join("s.sock");
  auto first = NbdServer::Listen(o);
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  auto second = NbdServer::Listen(o);  // live socket: refused
  EXPECT_EQ(second.status().code(), ErrorCode::kAlreadyExists);
  // Leave a stale socket file behind (close without unlinking): it is replaced.
  int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un sun{};
  sun.sun_family = AF_UNIX;
  std::string stale = dir_.Join("stale.sock");
  std::strncpy(sun.sun_path, stale.c_str(), sizeof sun.sun_path - 1);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&sun), sizeof sun), 0);
  ::close(fd);
  o.unix_socket_path = stale;
  auto third = NbdServer::Listen(o);
  EXPECT_TRUE(third.ok()) << third.status().ToString();
  o.unix_socket_path = truth_;  // a regular file is never removed
  EXPECT_EQ(NbdServer::Listen(o).status().code(), ErrorCode::kAlreadyExists);
  (*first)->Stop();
  EXPECT_FALSE(std::filesystem::exists(dir_.Join("s.sock")));
}

TEST_F(NbdTest, TooManyConnectionsAreRefused) {
  NbdServerOptions o = Options();
  o.max_connections = 2;
  auto server = StartTcp(o);
  ASSERT_NE(server, nullptr);
  RawClient a(ConnectTcp(server->port())), b(ConnectTcp(server->port()));
  ASSERT_TRUE(a.Greet());
  ASSERT_TRUE(b.Greet());
  RawClient c(ConnectTcp(server->port()));
  EXPECT_TRUE(c.WaitClosed());
  EXPECT_TRUE(LogContains("refused"));
}

}  // namespace
}  // namespace ferry
