#include "nbd/nbd_server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <utility>

namespace ferry {
namespace {

constexpr int kListenBacklog = 128;
// The accept loop wakes at least this often to join finished connection threads.
constexpr int kReapIntervalMs = 1000;

std::string Errno(const std::string& what) { return what + ": " + std::strerror(errno); }

// RFC 3986 percent-encoding of everything but unreserved characters and '/'.
std::string UriEscape(std::string_view s) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~' || c == '/') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

std::string SockaddrString(const sockaddr* sa) {
  char host[NI_MAXHOST] = "";
  char serv[NI_MAXSERV] = "";
  if (sa->sa_family == AF_UNIX) return "unix client";
  socklen_t len = sa->sa_family == AF_INET6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in);
  if (::getnameinfo(sa, len, host, sizeof host, serv, sizeof serv,
                    NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
    return "?";
  }
  if (sa->sa_family == AF_INET6) return std::string("[") + host + "]:" + serv;
  return std::string(host) + ":" + serv;
}

// Splits "HOST:PORT", "[V6]:PORT" or ":PORT".
Status SplitHostPort(const std::string& addr, std::string* host, uint16_t* port) {
  std::string port_str;
  if (!addr.empty() && addr[0] == '[') {
    size_t close = addr.find(']');
    if (close == std::string::npos || close + 1 >= addr.size() || addr[close + 1] != ':') {
      return Status::InvalidArgument("NBD listen address '" + addr + "': expected [IPv6]:PORT");
    }
    *host = addr.substr(1, close - 1);
    port_str = addr.substr(close + 2);
  } else {
    size_t colon = addr.rfind(':');
    if (colon == std::string::npos) {
      return Status::InvalidArgument("NBD listen address '" + addr + "': expected HOST:PORT");
    }
    *host = addr.substr(0, colon);
    port_str = addr.substr(colon + 1);
  }
  unsigned value = 0;
  auto [end, ec] = std::from_chars(port_str.data(), port_str.data() + port_str.size(), value);
  if (port_str.empty() || ec != std::errc() || end != port_str.data() + port_str.size() ||
      value > 65535) {
    return Status::InvalidArgument("NBD listen address '" + addr + "': bad port '" + port_str +
                                   "'");
  }
  *port = static_cast<uint16_t>(value);
  return Status::Ok();
}

struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
  int release() { return std::exchange(fd, -1); }
};

Result<int> ListenTcp(const std::string& addr, std::string* bound_host, uint16_t* bound_port) {
  std::string host;
  uint16_t port = 0;
  FERRY_TRY(SplitHostPort(addr, &host, &port));
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* res = nullptr;
  std::string port_str = std::to_string(port);
  int rc = ::getaddrinfo(host.empty() ? nullptr : host.c_str(), port_str.c_str(), &hints, &res);
  if (rc != 0) {
    return Status::InvalidArgument("NBD listen address '" + addr + "': " + ::gai_strerror(rc));
  }
  std::string last_error = "no addresses";
  int result = -1;
  for (addrinfo* ai = res; ai != nullptr && result < 0; ai = ai->ai_next) {
    Fd s{::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, 0)};
    if (s.fd < 0) {
      last_error = Errno("socket");
      continue;
    }
    int one = 1;
    ::setsockopt(s.fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (::bind(s.fd, ai->ai_addr, ai->ai_addrlen) != 0) {
      last_error = Errno("bind");
      continue;
    }
    if (::listen(s.fd, kListenBacklog) != 0) {
      last_error = Errno("listen");
      continue;
    }
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    if (::getsockname(s.fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) {
      last_error = Errno("getsockname");
      continue;
    }
    char h[NI_MAXHOST] = "";
    char p[NI_MAXSERV] = "";
    ::getnameinfo(reinterpret_cast<sockaddr*>(&ss), len, h, sizeof h, p, sizeof p,
                  NI_NUMERICHOST | NI_NUMERICSERV);
    *bound_host = h;
    *bound_port = static_cast<uint16_t>(std::atoi(p));
    result = s.release();
  }
  ::freeaddrinfo(res);
  if (result < 0) return Status::Io("NBD listen on " + addr + ": " + last_error);
  return result;
}

Result<int> ListenUnix(const std::string& path) {
  sockaddr_un sun{};
  sun.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof sun.sun_path) {
    return Status::InvalidArgument("NBD socket path '" + path + "': empty or longer than " +
                                   std::to_string(sizeof sun.sun_path - 1) + " bytes");
  }
  std::memcpy(sun.sun_path, path.c_str(), path.size() + 1);
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      return Status::AlreadyExists("NBD socket path " + path + " exists and is not a socket");
    }
    Fd probe{::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)};
    if (probe.fd >= 0 && ::connect(probe.fd, reinterpret_cast<sockaddr*>(&sun), sizeof sun) == 0) {
      return Status::AlreadyExists("NBD socket " + path + " is in use by another server");
    }
    ::unlink(path.c_str());  // stale socket of a server that is gone
  }
  Fd s{::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0)};
  if (s.fd < 0) return Status::Io(Errno("NBD socket " + path + ": socket"));
  if (::bind(s.fd, reinterpret_cast<sockaddr*>(&sun), sizeof sun) != 0) {
    return Status::Io(Errno("NBD socket " + path + ": bind"));
  }
  if (::listen(s.fd, kListenBacklog) != 0) {
    return Status::Io(Errno("NBD socket " + path + ": listen"));
  }
  return s.release();
}

}  // namespace

NbdServer::NbdServer(PrivateTag, const NbdServerOptions& options) : options_(options) {
  exports_.SetPrivate(options.private_exports);
}

Result<std::unique_ptr<NbdServer>> NbdServer::Listen(const NbdServerOptions& options) {
  if (options.tcp_address.empty() == options.unix_socket_path.empty()) {
    return Status::InvalidArgument(
        "NBD server: give exactly one of a TCP address or a socket path");
  }
  auto server = std::make_unique<NbdServer>(PrivateTag{}, options);
  if (!options.unix_socket_path.empty()) {
    FERRY_ASSIGN_OR_RETURN(server->listen_fd_, ListenUnix(options.unix_socket_path));
    server->is_unix_ = true;
    server->host_ = options.unix_socket_path;
  } else {
    FERRY_ASSIGN_OR_RETURN(server->listen_fd_,
                           ListenTcp(options.tcp_address, &server->host_, &server->port_));
  }
  server->wake_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (server->wake_fd_ < 0) return Status::Io(Errno("NBD server: eventfd"));
  return server;
}

NbdServer::~NbdServer() {
  Stop();
  if (wake_fd_ >= 0) ::close(wake_fd_);
}

Status NbdServer::Serve(std::shared_ptr<BlockSource> source, const std::string& export_name,
                        const std::string& description) {
  return exports_.Add({export_name, description, std::move(source)});
}

Status NbdServer::Start() {
  std::lock_guard lock(run_mu_);
  if (running_ || stopped_) return Status::InvalidArgument("NBD server already started or stopped");
  running_ = true;
  accept_thread_ = std::thread([this] { AcceptLoop(); });
  return Status::Ok();
}

Status NbdServer::Run() {
  {
    std::lock_guard lock(run_mu_);
    if (running_ || stopped_) {
      return Status::InvalidArgument("NBD server already started or stopped");
    }
    running_ = true;
  }
  AcceptLoop();
  ReapConnections(/*all=*/true);
  {
    std::lock_guard lock(run_mu_);
    running_ = false;
  }
  run_cv_.notify_all();
  return Status::Ok();
}

void NbdServer::RequestStop() {
  stop_requested_.store(true);
  if (wake_fd_ >= 0) {
    uint64_t one = 1;
    [[maybe_unused]] ssize_t n = ::write(wake_fd_, &one, sizeof one);
  }
}

void NbdServer::Stop() {
  RequestStop();
  {
    std::unique_lock lock(run_mu_);
    if (stopped_) return;
    if (accept_thread_.joinable()) {
      accept_thread_.join();
      running_ = false;
    } else {
      run_cv_.wait(lock, [&] { return !running_; });
    }
    stopped_ = true;
  }
  ReapConnections(/*all=*/true);
  if (listen_fd_ >= 0) {
    ::close(listen_fd_);
    listen_fd_ = -1;
    if (is_unix_) ::unlink(options_.unix_socket_path.c_str());
  }
}

std::string NbdServer::address() const {
  if (is_unix_) return host_;
  if (host_.find(':') != std::string::npos) return "[" + host_ + "]:" + std::to_string(port_);
  return host_ + ":" + std::to_string(port_);
}

std::string NbdServer::uri(const std::string& export_name) const {
  if (is_unix_) return "nbd+unix:///" + UriEscape(export_name) + "?socket=" + UriEscape(host_);
  std::string host = host_;
  if (host == "0.0.0.0" || host == "::") host = "localhost";
  if (host.find(':') != std::string::npos) host = "[" + host + "]";
  return "nbd://" + host + ":" + std::to_string(port_) + "/" + UriEscape(export_name);
}

size_t NbdServer::connection_count() const {
  std::lock_guard lock(conn_mu_);
  size_t n = 0;
  for (const Connection& c : connections_) n += c.done.load() ? 0 : 1;
  return n;
}

void NbdServer::Log(const std::string& line) const {
  if (options_.log) {
    options_.log(line);
  } else {
    std::fprintf(stderr, "ferry nbd: %s\n", line.c_str());
  }
}

void NbdServer::AcceptLoop() {
  while (!stop_requested_.load()) {
    pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {wake_fd_, POLLIN, 0}};
    int r = ::poll(fds, 2, kReapIntervalMs);
    ReapConnections(/*all=*/false);
    if (r < 0) {
      if (errno == EINTR) continue;
      Log(Errno("poll"));
      return;
    }
    if (fds[1].revents != 0 || stop_requested_.load()) return;
    if ((fds[0].revents & POLLIN) == 0) continue;

    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    int fd = ::accept4(listen_fd_, reinterpret_cast<sockaddr*>(&ss), &len, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
        Log(Errno("accept"));
        ::poll(nullptr, 0, 100);  // out of descriptors: back off instead of spinning
      }
      continue;
    }
    std::string peer = SockaddrString(reinterpret_cast<sockaddr*>(&ss));
    if (!is_unix_) {
      int one = 1;
      ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    std::lock_guard lock(conn_mu_);
    size_t open = 0;
    for (const Connection& c : connections_) open += c.done.load() ? 0 : 1;
    if (open >= static_cast<size_t>(std::max(1, options_.max_connections))) {
      Log(peer + ": refused, " + std::to_string(open) + " connections already open");
      ::close(fd);
      continue;
    }
    Connection& c = connections_.emplace_back();
    c.fd = fd;
    c.peer = std::move(peer);
    c.thread = std::thread([this, &c] { HandleConnection(&c); });
  }
}

void NbdServer::HandleConnection(Connection* c) {
  std::unique_ptr<NbdStream> stream = NewSocketStream(c->fd, options_.write_timeout);
  {
    std::lock_guard lock(conn_mu_);
    c->stream = stream.get();
  }
  if (stop_requested_.load()) stream->Shutdown();

  NbdSessionOptions so;
  so.handshake_timeout = options_.handshake_timeout;
  so.idle_timeout = options_.idle_timeout;
  so.workers = options_.workers_per_connection;
  so.max_request_bytes = options_.max_request_bytes;
  so.peer = c->peer;
  so.payload_bytes_sent = &payload_bytes_sent_;
  so.log = [this](std::string_view line) { Log(std::string(line)); };
  Status s = RunNbdSession(*stream, exports_, so);
  (void)s;  // the session logged anything worth saying

  {
    std::lock_guard lock(conn_mu_);
    c->stream = nullptr;
  }
  stream.reset();  // closes the socket
  c->done.store(true);
}

void NbdServer::ReapConnections(bool all) {
  std::list<Connection> finished;
  {
    std::lock_guard lock(conn_mu_);
    for (auto it = connections_.begin(); it != connections_.end();) {
      auto next = std::next(it);
      if (all && it->stream != nullptr) it->stream->Shutdown();
      if (all || it->done.load()) finished.splice(finished.end(), connections_, it);
      it = next;
    }
  }
  for (Connection& c : finished) c.thread.join();
}

}  // namespace ferry
