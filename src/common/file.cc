#include "common/file.h"

#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <algorithm>
#include <vector>

namespace ferry {
namespace {

Status ErrnoStatus(const std::string& what, int err) {
  std::string m = what + ": " + std::strerror(err);
  if (err == ENOENT) return Status::NotFound(std::move(m));
  if (err == EEXIST) return Status::AlreadyExists(std::move(m));
  if (err == EACCES || err == EPERM) return Status::PermissionDenied(std::move(m));
  return Status::Io(std::move(m));
}

class PosixFile final : public File {
 public:
  PosixFile(std::string path, int fd) : path_(std::move(path)), fd_(fd) {}
  ~PosixFile() override { ::close(fd_); }

  const std::string& path() const override { return path_; }

  Status ReadAt(uint64_t offset, std::span<uint8_t> buf) const override {
    FERRY_ASSIGN_OR_RETURN(size_t done, ReadSomeAt(offset, buf));
    if (done < buf.size()) {
      return Status::Corrupt(path_ + ": short read at " + Hex(offset + done) + ": wanted " +
                             std::to_string(buf.size() - done) + " more bytes, file ends");
    }
    return Status::Ok();
  }

  Result<size_t> ReadSomeAt(uint64_t offset, std::span<uint8_t> buf) const override {
    size_t done = 0;
    while (done < buf.size()) {
      ssize_t n = ::pread(fd_, buf.data() + done, buf.size() - done,
                          static_cast<off_t>(offset + done));
      if (n < 0) {
        if (errno == EINTR) continue;
        return ErrnoStatus(path_ + ": read at " + Hex(offset + done), errno);
      }
      if (n == 0) break;
      done += static_cast<size_t>(n);
    }
    return done;
  }

  Status WriteAt(uint64_t offset, std::span<const uint8_t> data) override {
    size_t done = 0;
    while (done < data.size()) {
      ssize_t n = ::pwrite(fd_, data.data() + done, data.size() - done,
                           static_cast<off_t>(offset + done));
      if (n < 0) {
        if (errno == EINTR) continue;
        return ErrnoStatus(path_ + ": write at " + Hex(offset + done), errno);
      }
      done += static_cast<size_t>(n);
    }
    return Status::Ok();
  }

  Result<uint64_t> Size() const override {
    struct stat st;
    if (::fstat(fd_, &st) != 0) return ErrnoStatus(path_ + ": stat", errno);
    if (S_ISBLK(st.st_mode)) {
      off_t end = ::lseek(fd_, 0, SEEK_END);
      if (end < 0) return ErrnoStatus(path_ + ": seek", errno);
      return static_cast<uint64_t>(end);
    }
    return static_cast<uint64_t>(st.st_size);
  }

  Status Truncate(uint64_t size) override {
    if (::ftruncate(fd_, static_cast<off_t>(size)) != 0) {
      return ErrnoStatus(path_ + ": truncate to " + std::to_string(size), errno);
    }
    return Status::Ok();
  }

  Status Sync() override {
    if (::fdatasync(fd_) != 0) return ErrnoStatus(path_ + ": sync", errno);
    return Status::Ok();
  }

  void StartWriteback(uint64_t offset, uint64_t length) override {
    ::sync_file_range(fd_, static_cast<off_t>(offset), static_cast<off_t>(length),
                      SYNC_FILE_RANGE_WRITE);
  }

  void ReleaseWritten(uint64_t offset, uint64_t length) override {
    ::sync_file_range(fd_, static_cast<off_t>(offset), static_cast<off_t>(length),
                      SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE |
                          SYNC_FILE_RANGE_WAIT_AFTER);
    ::posix_fadvise(fd_, static_cast<off_t>(offset), static_cast<off_t>(length),
                    POSIX_FADV_DONTNEED);
  }

  Status PunchHole(uint64_t offset, uint64_t length) override {
    if (length == 0) return Status::Ok();
    if (::fallocate(fd_, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(offset),
                    static_cast<off_t>(length)) == 0) {
      return Status::Ok();
    }
    // Not supported here: write zeros instead.
    static const std::vector<uint8_t> zeros(1 << 20, 0);
    uint64_t pos = offset;
    while (pos < offset + length) {
      size_t n = static_cast<size_t>(std::min<uint64_t>(zeros.size(), offset + length - pos));
      FERRY_TRY(WriteAt(pos, std::span<const uint8_t>(zeros.data(), n)));
      pos += n;
    }
    return Status::Ok();
  }

  Status Allocate(uint64_t offset, uint64_t length) override {
    if (length == 0) return Status::Ok();
    int rc = ::posix_fallocate(fd_, static_cast<off_t>(offset), static_cast<off_t>(length));
    if (rc != 0) return ErrnoStatus(path_ + ": preallocate", rc);
    return Status::Ok();
  }

  Status DataRanges(uint64_t offset, uint64_t length,
                    std::vector<std::pair<uint64_t, uint64_t>>* out) const override {
    out->clear();
    const uint64_t end = offset + length;
    uint64_t pos = offset;
    while (pos < end) {
      off_t data = ::lseek(fd_, static_cast<off_t>(pos), SEEK_DATA);
      if (data < 0) {
        if (errno == ENXIO) break;  // only a hole remains
        out->clear();
        out->emplace_back(offset, end);  // the OS cannot tell: treat all as data
        return Status::Ok();
      }
      if (static_cast<uint64_t>(data) >= end) break;
      off_t hole = ::lseek(fd_, data, SEEK_HOLE);
      uint64_t hole_u = hole < 0 ? end : std::min<uint64_t>(static_cast<uint64_t>(hole), end);
      out->emplace_back(static_cast<uint64_t>(data), hole_u);
      pos = hole_u;
    }
    return Status::Ok();
  }

 private:
  std::string path_;
  int fd_;
};

class RealEnv final : public Env {
 public:
  Result<std::unique_ptr<File>> Open(const std::string& path, OpenMode mode) override {
    int flags = O_CLOEXEC;
    switch (mode) {
      case OpenMode::kRead: flags |= O_RDONLY; break;
      case OpenMode::kReadWrite: flags |= O_RDWR; break;
      case OpenMode::kCreateTruncate: flags |= O_RDWR | O_CREAT | O_TRUNC; break;
      case OpenMode::kCreateExclusive: flags |= O_RDWR | O_CREAT | O_EXCL; break;
    }
    int fd = ::open(path.c_str(), flags, 0644);
    if (fd < 0) return ErrnoStatus(path + ": open", errno);
    struct stat st;
    if (::fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
      ::close(fd);
      return Status::InvalidArgument(path + ": is a directory");
    }
    return std::unique_ptr<File>(std::make_unique<PosixFile>(path, fd));
  }

  bool Exists(const std::string& path) override { return ::access(path.c_str(), F_OK) == 0; }

  Status Remove(const std::string& path) override {
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
      return ErrnoStatus(path + ": remove", errno);
    }
    return Status::Ok();
  }

  Status Rename(const std::string& from, const std::string& to) override {
    if (::rename(from.c_str(), to.c_str()) != 0) {
      return ErrnoStatus("rename " + from + " to " + to, errno);
    }
    int dfd = ::open(DirName(to).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
      ::fsync(dfd);
      ::close(dfd);
    }
    return Status::Ok();
  }

  Result<std::string> RealPath(const std::string& path) override {
    char buf[PATH_MAX];
    if (::realpath(path.c_str(), buf) == nullptr) return ErrnoStatus(path + ": resolve", errno);
    return std::string(buf);
  }

  Result<int64_t> ModifiedTimeNanos(const std::string& path) override {
    struct stat st;
    if (::stat(path.c_str(), &st) != 0) return ErrnoStatus(path + ": stat", errno);
    return static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
  }
};

class SliceFile final : public File {
 public:
  SliceFile(std::shared_ptr<File> base, uint64_t offset, uint64_t length, std::string name)
      : base_(std::move(base)), offset_(offset), length_(length), name_(std::move(name)) {}

  const std::string& path() const override { return name_; }

  Status ReadAt(uint64_t offset, std::span<uint8_t> buf) const override {
    if (offset > length_ || buf.size() > length_ - offset) {
      return Status::Corrupt(name_ + ": short read at " + Hex(offset) + ": wanted " +
                             std::to_string(buf.size()) + " bytes, member is " +
                             std::to_string(length_) + " bytes");
    }
    return base_->ReadAt(offset_ + offset, buf);
  }
  Result<size_t> ReadSomeAt(uint64_t offset, std::span<uint8_t> buf) const override {
    if (offset >= length_) return size_t{0};
    size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), length_ - offset));
    FERRY_TRY(base_->ReadAt(offset_ + offset, buf.first(n)));
    return n;
  }
  Status WriteAt(uint64_t, std::span<const uint8_t>) override { return ReadOnly(); }
  Result<uint64_t> Size() const override { return length_; }
  Status Truncate(uint64_t) override { return ReadOnly(); }
  Status Sync() override { return Status::Ok(); }
  Status PunchHole(uint64_t, uint64_t) override { return ReadOnly(); }
  Status Allocate(uint64_t, uint64_t) override { return ReadOnly(); }
  Status DataRanges(uint64_t offset, uint64_t length,
                    std::vector<std::pair<uint64_t, uint64_t>>* out) const override {
    out->assign(1, {offset, offset + length});
    return Status::Ok();
  }

 private:
  Status ReadOnly() const { return Status::InvalidArgument(name_ + ": read-only"); }
  std::shared_ptr<File> base_;
  uint64_t offset_;
  uint64_t length_;
  std::string name_;
};

class MemoryFile final : public File {
 public:
  MemoryFile(std::vector<uint8_t> bytes, std::string name)
      : bytes_(std::move(bytes)), name_(std::move(name)) {}

  const std::string& path() const override { return name_; }

  Status ReadAt(uint64_t offset, std::span<uint8_t> buf) const override {
    if (offset > bytes_.size() || buf.size() > bytes_.size() - offset) {
      return Status::Corrupt(name_ + ": short read at " + Hex(offset) + ": wanted " +
                             std::to_string(buf.size()) + " bytes, file is " +
                             std::to_string(bytes_.size()) + " bytes");
    }
    if (!buf.empty()) std::memcpy(buf.data(), bytes_.data() + offset, buf.size());
    return Status::Ok();
  }
  Result<size_t> ReadSomeAt(uint64_t offset, std::span<uint8_t> buf) const override {
    if (offset >= bytes_.size()) return size_t{0};
    size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), bytes_.size() - offset));
    std::memcpy(buf.data(), bytes_.data() + offset, n);
    return n;
  }
  Status WriteAt(uint64_t offset, std::span<const uint8_t> data) override {
    if (offset + data.size() > kMaxSize) return Status::TooLarge(name_ + ": memory file cap");
    if (offset + data.size() > bytes_.size()) bytes_.resize(offset + data.size());
    if (!data.empty()) std::memcpy(bytes_.data() + offset, data.data(), data.size());
    return Status::Ok();
  }
  Result<uint64_t> Size() const override { return static_cast<uint64_t>(bytes_.size()); }
  Status Truncate(uint64_t size) override {
    if (size > kMaxSize) return Status::TooLarge(name_ + ": memory file cap");
    bytes_.resize(size);
    return Status::Ok();
  }
  Status Sync() override { return Status::Ok(); }
  Status PunchHole(uint64_t offset, uint64_t length) override {
    if (offset < bytes_.size()) {
      uint64_t end = std::min<uint64_t>(bytes_.size(), offset + length);
      std::memset(bytes_.data() + offset, 0, end - offset);
    }
    return Status::Ok();
  }
  Status Allocate(uint64_t offset, uint64_t length) override {
    if (offset + length > bytes_.size()) return Truncate(offset + length);
    return Status::Ok();
  }
  Status DataRanges(uint64_t offset, uint64_t length,
                    std::vector<std::pair<uint64_t, uint64_t>>* out) const override {
    out->assign(1, {offset, offset + length});
    return Status::Ok();
  }

 private:
  static constexpr uint64_t kMaxSize = 1ull << 30;
  std::vector<uint8_t> bytes_;
  std::string name_;
};

}  // namespace

std::unique_ptr<File> NewMemoryFile(std::vector<uint8_t> bytes, std::string name) {
  return std::make_unique<MemoryFile>(std::move(bytes), std::move(name));
}

std::unique_ptr<File> NewSliceFile(std::shared_ptr<File> base, uint64_t offset, uint64_t length,
                                   std::string name) {
  return std::make_unique<SliceFile>(std::move(base), offset, length, std::move(name));
}

Env* PosixEnv() {
  static RealEnv* env = new RealEnv();  // never destroyed: used until exit
  return env;
}

void WriteBehind::Wrote(uint64_t offset, uint64_t length) {
  if (length == 0) return;
  file_->StartWriteback(offset, length);
  std::vector<std::pair<uint64_t, uint64_t>> release;
  {
    std::lock_guard<std::mutex> l(mu_);
    held_.emplace_back(offset, length);
    held_bytes_ += length;
    while (held_bytes_ > window_bytes_ && held_.size() > 1) {
      release.push_back(held_.front());
      held_bytes_ -= held_.front().second;
      held_.pop_front();
    }
  }
  // Outside the lock: waiting for writeback must not hold up the other writers' bookkeeping.
  for (const auto& [off, len] : release) file_->ReleaseWritten(off, len);
}

std::string DirName(const std::string& path) {
  auto pos = path.find_last_of('/');
  if (pos == std::string::npos) return ".";
  if (pos == 0) return "/";
  return path.substr(0, pos);
}

std::string JoinPath(const std::string& dir, const std::string& name) {
  if (!name.empty() && name[0] == '/') return name;
  if (dir.empty() || dir == ".") return name;
  if (dir.back() == '/') return dir + name;
  return dir + "/" + name;
}

}  // namespace ferry
