// The per-connection half of Ferry's NBD server: the protocol conversation with one client
// (fixed newstyle handshake, then the transmission phase), over any byte stream.
//
// NbdServer (nbd_server.h) accepts sockets and runs one session per connection; the fuzz
// target runs sessions over an in-memory stream. Nothing here knows about listening sockets.
//
// Ownership: a session borrows its stream and export table for the duration of RunNbdSession;
// exports hold shared_ptrs to their BlockSources, so a source outlives every session using it.
// Thread-safety: NbdExportTable is thread-safe. An NbdStream is used by one reader thread and
// (serialised by the session's write mutex) several writer threads; Shutdown() may be called
// from any thread at any time. RunNbdSession may run concurrently for different streams.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "disk/block_source.h"

namespace ferry {

struct NbdExport {
  std::string name;
  std::string description;
  std::shared_ptr<BlockSource> source;
};

// The exports a server offers. The first export added is also the default export (the one
// a client gets by asking for the empty name).
class NbdExportTable {
 public:
  // kAlreadyExists if the name is taken; kInvalidArgument if the name or description is
  // longer than the protocol's 4096-byte string limit or the source is null.
  Status Add(NbdExport e);
  // "" finds the default export.
  std::optional<NbdExport> Find(std::string_view name) const;
  std::vector<NbdExport> List() const;

  // Private exports: names are secrets (they carry a token). There is no default export and
  // NBD_OPT_LIST is refused, so a client reaches an export only by knowing its full name.
  void SetPrivate(bool is_private);
  bool is_private() const;

 private:
  mutable std::mutex mu_;
  std::vector<NbdExport> exports_;  // GUARDED_BY(mu_)
  bool private_ = false;            // GUARDED_BY(mu_)
};

using NbdDeadline = std::chrono::steady_clock::time_point;
inline constexpr NbdDeadline kNoDeadline = NbdDeadline::max();

// A connected, bidirectional byte stream (a socket, or memory in tests and fuzzing).
class NbdStream {
 public:
  virtual ~NbdStream() = default;
  // Reads exactly buf.size() bytes. Errors: kCancelled when the deadline passes, kIo when the
  // peer closes the stream or the read fails (also after Shutdown()).
  virtual Status ReadFull(std::span<uint8_t> buf, NbdDeadline deadline) = 0;
  // Waits until at least one byte (or end of stream) can be read. Returns false on timeout.
  virtual bool WaitReadable(NbdDeadline deadline) = 0;
  // Writes all pieces, in order. Callers serialise writes.
  virtual Status Write(std::span<const std::span<const uint8_t>> pieces) = 0;
  // Makes blocked and future reads and writes fail. Thread-safe, idempotent.
  virtual void Shutdown() = 0;
};

// A stream over a connected socket. Takes ownership of `fd` (closed on destruction).
// Writes use MSG_NOSIGNAL; a peer that stops reading makes writes fail after write_timeout.
std::unique_ptr<NbdStream> NewSocketStream(int fd, std::chrono::milliseconds write_timeout);

struct NbdSessionOptions {
  // From accepting the connection to the end of option haggling.
  std::chrono::milliseconds handshake_timeout{30000};
  // Transmission phase: a connection with no request in flight and none arriving for this
  // long is closed. 0: never.
  std::chrono::milliseconds idle_timeout{0};
  // Threads serving requests of one connection in parallel (replies may come out of order,
  // as the protocol allows). 0: the reading thread serves each request itself, in order.
  int workers = 4;
  // Largest NBD_CMD_READ/BLOCK_STATUS length served and largest write payload drained
  // (also advertised as the maximum block size). Longer reads fail with EOVERFLOW.
  uint32_t max_request_bytes = 32u << 20;
  // Receives one line per notable event (protocol violations, timeouts). May be empty.
  std::function<void(std::string_view)> log;
  // Prefix for log lines, e.g. the peer address.
  std::string peer;
  // If set, the data bytes of every READ reply are added here as the reply is written (holes
  // sent as NBD_REPLY_TYPE_OFFSET_HOLE carry no payload and are not counted).
  std::atomic<uint64_t>* payload_bytes_sent = nullptr;
};

// Runs the conversation with one client until it disconnects (NBD_OPT_ABORT, NBD_CMD_DISC,
// end of stream), breaks the protocol, times out, or the stream is shut down. Returns OK for
// a clean disconnect and an error naming what went wrong otherwise. Never throws; the source
// is only read.
Status RunNbdSession(NbdStream& stream, const NbdExportTable& exports,
                     const NbdSessionOptions& options);

}  // namespace ferry
