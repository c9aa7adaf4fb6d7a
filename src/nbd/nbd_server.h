// NbdServer: Ferry's read-only NBD server (`ferry serve`). Exports BlockSources over TCP or a
// Unix socket to any NBD client (qemu, nbdcopy, nbdinfo, the Linux kernel via nbd-client,
// Ferry's own OpenNbdSource).
//
// Usage:
//   FERRY_ASSIGN_OR_RETURN(auto server, NbdServer::Listen({.tcp_address = "127.0.0.1:0"}));
//   FERRY_TRY(server->Serve(source, "disk0"));
//   FERRY_TRY(server->Start());           // or Run() to serve in the calling thread
//   ... server->uri("disk0") ...           // nbd://127.0.0.1:40123/disk0
//   server->Stop();
//
// One thread accepts; each connection gets its own thread (handshake and request reading)
// plus `workers_per_connection` threads serving requests in parallel. Protocol details and
// limits: docs/formats/nbd.md and nbd_session.h.
//
// Ownership: the server shares ownership of every served source. Thread-safety: all methods
// are thread-safe; RequestStop() is also async-signal-safe. The destructor calls Stop().
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>

#include "common/status.h"
#include "disk/block_source.h"
#include "nbd/nbd_session.h"

namespace ferry {

struct NbdServerOptions {
  // Exactly one of these. tcp_address: "HOST:PORT", "[IPv6]:PORT" or ":PORT" (all
  // interfaces); port 0 picks a free port (see port()). unix_socket_path: a stale socket
  // file there is replaced; a live one (something accepts on it) is kAlreadyExists.
  std::string tcp_address;
  std::string unix_socket_path;

  int max_connections = 64;  // further clients are closed on accept, with a log line
  int workers_per_connection = 4;
  std::chrono::milliseconds handshake_timeout{30000};
  std::chrono::milliseconds idle_timeout{0};  // 0: an idle client may stay connected
  // A client that stops reading replies for this long is disconnected.
  std::chrono::milliseconds write_timeout{120000};
  uint32_t max_request_bytes = 32u << 20;
  // Export names are secrets (NbdExportTable::SetPrivate): no default export, no listing.
  bool private_exports = false;
  // One line per connection event and protocol error. Unset: written to stderr.
  std::function<void(std::string_view)> log;
};

class NbdServer {
  struct PrivateTag {};

 public:
  // Binds and listens. Errors: kInvalidArgument (bad address), kIo (bind/listen failed),
  // kAlreadyExists (a live Unix socket at the path).
  static Result<std::unique_ptr<NbdServer>> Listen(const NbdServerOptions& options);

  NbdServer(PrivateTag, const NbdServerOptions& options);  // use Listen()
  ~NbdServer();
  NbdServer(const NbdServer&) = delete;
  NbdServer& operator=(const NbdServer&) = delete;

  // Adds an export named `export_name` (<= 4096 bytes). The first export is also the default
  // export (empty name) unless private_exports. May be called before or after Start().
  Status Serve(std::shared_ptr<BlockSource> source, const std::string& export_name,
               const std::string& description = "");

  // Accepts connections on a background thread and returns.
  Status Start();
  // Accepts connections in the calling thread until Stop()/RequestStop(); then disconnects
  // every client and returns.
  Status Run();
  // Asks the accept loop to end (async-signal-safe: writes to an eventfd).
  void RequestStop();
  // Stops accepting, disconnects every client, joins every thread, removes the Unix socket.
  // Idempotent.
  void Stop();

  // "127.0.0.1:40123", "[::1]:40123" or the socket path.
  std::string address() const;
  // The TCP port actually bound (useful with port 0); 0 for a Unix socket.
  uint16_t port() const { return port_; }
  // An NBD URI for the export: nbd://HOST:PORT/NAME or nbd+unix:///NAME?socket=PATH.
  std::string uri(const std::string& export_name = "") const;
  // Connections currently open.
  size_t connection_count() const;
  // Data bytes sent in READ replies since the server was made, over every connection and
  // export (holes sent as such are not counted).
  uint64_t payload_bytes_sent() const { return payload_bytes_sent_.load(); }

 private:
  struct Connection {
    int fd = -1;
    std::string peer;
    std::thread thread;
    std::atomic<bool> done{false};
    NbdStream* stream = nullptr;  // valid while !done; GUARDED_BY(conn_mu_)
  };

  void AcceptLoop();
  void HandleConnection(Connection* c);
  void ReapConnections(bool all);
  void Log(const std::string& line) const;

  NbdServerOptions options_;
  NbdExportTable exports_;
  int listen_fd_ = -1;
  int wake_fd_ = -1;  // eventfd written by RequestStop
  std::string host_;  // as bound, for address()/uri()
  uint16_t port_ = 0;
  bool is_unix_ = false;

  std::mutex run_mu_;               // serialises Start/Run/Stop
  std::condition_variable run_cv_;  // Run() finished
  std::thread accept_thread_;       // GUARDED_BY(run_mu_)
  bool running_ = false;            // GUARDED_BY(run_mu_): Start() or Run() is accepting
  bool stopped_ = false;            // GUARDED_BY(run_mu_)
  std::atomic<bool> stop_requested_{false};
  std::atomic<uint64_t> payload_bytes_sent_{0};

  mutable std::mutex conn_mu_;
  std::list<Connection> connections_;  // GUARDED_BY(conn_mu_)
};

}  // namespace ferry
