// Implementation of console.h.
#include "lab/console.h"

#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <cinttypes>
#include <cstdio>

namespace ferry::lab {
namespace {
constexpr int64_t kPollNs = 1000000;  // 1 ms between reads of the log
constexpr const char kHeartbeatPrefix[] = "FERRY-HB ";
constexpr size_t kTailLines = 8;
}  // namespace

ConsoleWatcher::ConsoleWatcher(std::string path) : path_(std::move(path)) {}

ConsoleWatcher::~ConsoleWatcher() {
  {
    std::lock_guard<std::mutex> l(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

int64_t ConsoleWatcher::NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

void ConsoleWatcher::Start() {
  if (!thread_.joinable()) thread_ = std::thread([this] { Run(); });
}

void ConsoleWatcher::Run() {
  int fd = -1;
  std::string partial;
  char buf[65536];
  for (;;) {
    {
      std::unique_lock<std::mutex> l(mu_);
      if (cv_.wait_for(l, std::chrono::nanoseconds(kPollNs), [this] { return stop_; })) break;
    }
    if (fd < 0) fd = open(path_.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) continue;
    for (;;) {
      ssize_t n = read(fd, buf, sizeof(buf));
      if (n <= 0) break;
      const int64_t now = NowNs();
      partial.append(buf, static_cast<size_t>(n));
      size_t start = 0;
      for (size_t nl; (nl = partial.find('\n', start)) != std::string::npos; start = nl + 1) {
        std::string line = partial.substr(start, nl - start);
        while (!line.empty() && (line.back() == '\r' || line.back() == '\0')) line.pop_back();
        TakeLine(std::move(line), now);
      }
      partial.erase(0, start);
    }
  }
  if (fd >= 0) close(fd);
}

void ConsoleWatcher::TakeLine(std::string text, int64_t now) {
  // Kernel messages may share a line with ours; find our marker anywhere in it.
  auto pos = text.find("FERRY-");
  if (pos != std::string::npos && pos > 0) text.erase(0, pos);
  std::lock_guard<std::mutex> l(mu_);
  unsigned long long counter = 0;
  long long guest_ms = 0;
  if (text.rfind(kHeartbeatPrefix, 0) == 0 &&
      std::sscanf(text.c_str() + sizeof(kHeartbeatPrefix) - 1, "%llu %lld", &counter, &guest_ms) ==
          2) {
    beats_.push_back({now, counter, guest_ms});
  } else {
    lines_.push_back({now, std::move(text)});
  }
  cv_.notify_all();
}

std::string ConsoleWatcher::Tail() const {
  std::string out;
  size_t from = lines_.size() > kTailLines ? lines_.size() - kTailLines : 0;
  for (size_t i = from; i < lines_.size(); ++i) out += "\n  " + lines_[i].text;
  out += "\n  (" + std::to_string(beats_.size()) + " heartbeats)";
  return out;
}

Result<ConsoleLine> ConsoleWatcher::WaitForLine(const std::string& prefix, int64_t timeout_ms,
                                                int64_t since_ns) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  std::unique_lock<std::mutex> l(mu_);
  size_t scanned = 0;
  for (;;) {
    for (; scanned < lines_.size(); ++scanned) {
      const auto& line = lines_[scanned];
      if (line.host_ns >= since_ns && line.text.rfind(prefix, 0) == 0) return line;
    }
    if (cv_.wait_until(l, deadline) == std::cv_status::timeout && scanned == lines_.size()) {
      return Status::NotFound(path_ + ": no line starting with \"" + prefix + "\" within " +
                              std::to_string(timeout_ms) + " ms; last lines:" + Tail());
    }
  }
}

Status ConsoleWatcher::WaitForHeartbeats(uint64_t count, int64_t timeout_ms, int64_t since_ns) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  std::unique_lock<std::mutex> l(mu_);
  for (;;) {
    uint64_t seen = 0;
    for (auto it = beats_.rbegin(); it != beats_.rend() && it->host_ns >= since_ns; ++it) ++seen;
    if (seen >= count) return Status::Ok();
    if (cv_.wait_until(l, deadline) == std::cv_status::timeout) {
      return Status::NotFound(path_ + ": " + std::to_string(seen) + " of " + std::to_string(count) +
                              " heartbeats within " + std::to_string(timeout_ms) +
                              " ms; last lines:" + Tail());
    }
  }
}

HeartbeatStats ConsoleWatcher::Heartbeats(int64_t since_ns, int64_t until_ns) const {
  std::lock_guard<std::mutex> l(mu_);
  HeartbeatStats s;
  const Beat* prev = nullptr;
  for (const auto& b : beats_) {
    if (b.host_ns < since_ns || b.host_ns >= until_ns) continue;
    if (prev == nullptr) {
      s.first_counter = b.counter;
    } else {
      if (b.host_ns - prev->host_ns > s.max_gap_ns) {
        s.max_gap_ns = b.host_ns - prev->host_ns;
        s.max_gap_end_ns = b.host_ns;
      }
      s.max_guest_gap_ms = std::max<int64_t>(s.max_guest_gap_ms, b.guest_ms - prev->guest_ms);
      if (b.counter > prev->counter + 1) s.missing += b.counter - prev->counter - 1;
    }
    ++s.count;
    s.last_counter = b.counter;
    s.last_ns = b.host_ns;
    prev = &b;
  }
  return s;
}

std::vector<ConsoleLine> ConsoleWatcher::Lines() const {
  std::lock_guard<std::mutex> l(mu_);
  return lines_;
}

}  // namespace ferry::lab
