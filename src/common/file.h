// Env and File: the only way Ferry's logic reaches the filesystem.
//
// Everything that reads or writes image files goes through an Env so that tests can inject
// short reads, failed writes and failed syncs (see tests/fault_env.h). PosixEnv() is the real
// one.
//
// Thread-safety: a File's ReadAt/WriteAt are positional (pread/pwrite) and may be called
// concurrently from several threads. Env methods are thread-safe.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "common/status.h"

namespace ferry {

class File {
 public:
  virtual ~File() = default;
  File() = default;
  File(const File&) = delete;
  File& operator=(const File&) = delete;

  // The path this file was opened with (for error messages).
  virtual const std::string& path() const = 0;

  // Reads exactly buf.size() bytes at `offset`. Reading past the end is kCorrupt ("short
  // read"), naming the path and offset.
  virtual Status ReadAt(uint64_t offset, std::span<uint8_t> buf) const = 0;
  // Reads up to buf.size() bytes; returns how many were read (0 at end of file).
  virtual Result<size_t> ReadSomeAt(uint64_t offset, std::span<uint8_t> buf) const = 0;
  virtual Status WriteAt(uint64_t offset, std::span<const uint8_t> data) = 0;
  virtual Result<uint64_t> Size() const = 0;
  virtual Status Truncate(uint64_t size) = 0;
  // Makes the length and data durable (fdatasync).
  virtual Status Sync() = 0;
  // Starts writing [offset, offset+length) back to storage without waiting, so that a later
  // Sync() has little left to do. A hint: may do nothing.
  virtual void StartWriteback(uint64_t offset, uint64_t length) {}
  // Waits until [offset, offset+length) is written back to storage, then drops it from the
  // page cache. A hint: may do nothing.
  virtual void ReleaseWritten(uint64_t offset, uint64_t length) {}
  // Deallocates [offset, offset+length) so it reads as zeros, keeping the size. Falls back
  // to writing zeros where the filesystem cannot punch holes.
  virtual Status PunchHole(uint64_t offset, uint64_t length) = 0;
  // Preallocates [offset, offset+length) (fallocate), extending the file if needed.
  virtual Status Allocate(uint64_t offset, uint64_t length) = 0;
  // Lists the data ranges [start, end) of the file via SEEK_DATA/SEEK_HOLE within
  // [offset, offset+length); returns one range covering everything if the OS cannot tell.
  virtual Status DataRanges(uint64_t offset, uint64_t length,
                            std::vector<std::pair<uint64_t, uint64_t>>* out) const = 0;
};

enum class OpenMode {
  kRead,             // existing file, read-only
  kReadWrite,        // existing file
  kCreateTruncate,   // create or truncate to 0
  kCreateExclusive,  // create; kAlreadyExists if present
};

class Env {
 public:
  virtual ~Env() = default;
  virtual Result<std::unique_ptr<File>> Open(const std::string& path, OpenMode mode) = 0;
  virtual bool Exists(const std::string& path) = 0;
  virtual Status Remove(const std::string& path) = 0;
  // Atomically renames and syncs the containing directory.
  virtual Status Rename(const std::string& from, const std::string& to) = 0;
  // Absolute, symlink-free path of an existing file.
  virtual Result<std::string> RealPath(const std::string& path) = 0;
  // Last modification time in nanoseconds since the epoch.
  virtual Result<int64_t> ModifiedTimeNanos(const std::string& path) = 0;
};

// Keeps the page cache a bulk writer fills small: after each data write the writer calls
// Wrote(); that starts the range's writeback, and once more than `window_bytes` written since
// are still held, waits for the oldest ranges to reach storage and drops them from the cache
// (as nbdcopy does for its file target). Without it a copy of a large disk fills the page
// cache with dirty pages, the kernel throttles every writer, and each new cache page costs
// more than the copy into it (measured in docs/benchmarks.md, "Write-behind"); the
// migrated disk's data also stops crowding out what the host's running guests have cached.
// Metadata writes (tables, headers) are not reported: they are small and are read again.
// Thread-safe: several writer threads may share one WriteBehind.
class WriteBehind {
 public:
  static constexpr uint64_t kDefaultWindowBytes = 64ull << 20;

  explicit WriteBehind(File* file, uint64_t window_bytes = kDefaultWindowBytes)
      : file_(file), window_bytes_(window_bytes) {}

  void Wrote(uint64_t offset, uint64_t length);

 private:
  File* file_;
  const uint64_t window_bytes_;
  std::mutex mu_;
  std::deque<std::pair<uint64_t, uint64_t>> held_;  // GUARDED_BY(mu_): oldest first
  uint64_t held_bytes_ = 0;                          // GUARDED_BY(mu_)
};

// A read-only window [offset, offset+length) of `base`, seen as a whole file named `name`
// (e.g. "vm.ova/disk1.vmdk"). Used to read OVA members in place. Writes fail.
std::unique_ptr<File> NewSliceFile(std::shared_ptr<File> base, uint64_t offset, uint64_t length,
                                   std::string name);

// An in-memory file holding `bytes` (fuzz targets and unit tests). Writes grow it.
std::unique_ptr<File> NewMemoryFile(std::vector<uint8_t> bytes, std::string name);

// The process-wide real filesystem. Never null; lives forever.
Env* PosixEnv();

// Directory part of a path ("." when it has none).
std::string DirName(const std::string& path);
// Joins a directory and a relative name; an absolute `name` is returned unchanged.
std::string JoinPath(const std::string& dir, const std::string& name);

}  // namespace ferry
