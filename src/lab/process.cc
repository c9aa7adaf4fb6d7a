// Implementation of process.h.
#include "lab/process.h"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

namespace ferry::lab {
namespace {

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

std::vector<char*> ArgvPointers(const std::vector<std::string>& argv) {
  std::vector<char*> out;
  out.reserve(argv.size() + 1);
  for (const auto& a : argv) out.push_back(const_cast<char*>(a.c_str()));
  out.push_back(nullptr);
  return out;
}

std::string CommandText(const std::vector<std::string>& argv) {
  std::string s;
  for (const auto& a : argv) {
    if (!s.empty()) s += ' ';
    s += QuoteArg(a);
  }
  return s;
}

int DecodeStatus(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

// Async-signal-safe error report from a forked child, then exit.
[[noreturn]] void ChildFail(const char* what) {
  const char* err = strerror(errno);
  ssize_t ignored = write(STDERR_FILENO, what, strlen(what));
  ignored = write(STDERR_FILENO, ": ", 2);
  ignored = write(STDERR_FILENO, err, strlen(err));
  ignored = write(STDERR_FILENO, "\n", 1);
  (void)ignored;
  _exit(127);
}

bool AliveImpl(pid_t pid) {
  int status = 0;
  pid_t r = waitpid(pid, &status, WNOHANG);
  if (r == pid) return false;  // our child, now reaped
  if (kill(pid, 0) != 0) return errno != ESRCH;
  // A zombie that is not ours still answers kill(0); treat it as gone.
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  std::getline(stat, line);
  auto close_paren = line.rfind(')');
  if (close_paren != std::string::npos && close_paren + 2 < line.size()) {
    return line[close_paren + 2] != 'Z';
  }
  return true;
}

// The child's stdin: /dev/null, or a memfd holding `input` (no pipe to keep fed while the
// output is read, so any size works without a deadlock).
Result<int> StdinFor(const std::string* input) {
  if (input == nullptr) return open("/dev/null", O_RDONLY | O_CLOEXEC);
  int fd = memfd_create("ferry-stdin", MFD_CLOEXEC);
  if (fd < 0) return Status::Io("memfd_create: " + std::string(strerror(errno)));
  size_t done = 0;
  while (done < input->size()) {
    ssize_t n = write(fd, input->data() + done, input->size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      close(fd);
      return Status::Io("memfd write: " + std::string(strerror(errno)));
    }
    done += static_cast<size_t>(n);
  }
  lseek(fd, 0, SEEK_SET);
  return fd;
}

Result<ProcessResult> RunImpl(const std::vector<std::string>& argv, const std::string* input,
                              int64_t timeout_ms) {
  if (argv.empty()) return Status::InvalidArgument("run: empty command");
  FERRY_ASSIGN_OR_RETURN(int stdin_fd, StdinFor(input));
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) {
    if (stdin_fd >= 0) close(stdin_fd);
    return Status::Io("pipe: " + std::string(strerror(errno)));
  }
  std::vector<char*> args = ArgvPointers(argv);
  pid_t pid = fork();
  if (pid < 0) {
    close(fds[0]);
    close(fds[1]);
    if (stdin_fd >= 0) close(stdin_fd);
    return Status::Io("fork: " + std::string(strerror(errno)));
  }
  if (pid == 0) {
    if (stdin_fd >= 0) dup2(stdin_fd, STDIN_FILENO);
    dup2(fds[1], STDOUT_FILENO);
    dup2(fds[1], STDERR_FILENO);
    execvp(args[0], args.data());
    ChildFail(args[0]);
  }
  close(fds[1]);
  if (stdin_fd >= 0) close(stdin_fd);
  ProcessResult result;
  const int64_t deadline = NowMs() + timeout_ms;
  bool timed_out = false;
  char buf[4096];
  for (;;) {
    int64_t left = deadline - NowMs();
    if (left <= 0) {
      timed_out = true;
      break;
    }
    pollfd p{fds[0], POLLIN, 0};
    int r = poll(&p, 1, static_cast<int>(std::min<int64_t>(left, 1000)));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) continue;
    ssize_t n = read(fds[0], buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    result.output.append(buf, static_cast<size_t>(n));
  }
  close(fds[0]);
  if (timed_out) kill(pid, SIGKILL);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (timed_out) {
    return Status::Io(CommandText(argv) + ": timed out after " + std::to_string(timeout_ms) +
                      " ms; output: " + result.output);
  }
  result.exit_code = DecodeStatus(status);
  return result;
}

Result<std::string> CheckedOutput(const std::vector<std::string>& argv, Result<ProcessResult> run) {
  FERRY_ASSIGN_OR_RETURN(ProcessResult r, std::move(run));
  if (r.exit_code != 0) {
    std::string out = r.output;
    while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
    return Status::Io(CommandText(argv) + " exited with " + std::to_string(r.exit_code) + ": " +
                      out);
  }
  return std::move(r.output);
}

}  // namespace

bool InPath(const std::string& program) {
  const char* path = std::getenv("PATH");
  std::stringstream ss(path != nullptr ? path : "/usr/sbin:/usr/bin:/sbin:/bin");
  std::string dir;
  while (std::getline(ss, dir, ':')) {
    if (!dir.empty() && access((dir + "/" + program).c_str(), X_OK) == 0) return true;
  }
  return false;
}

std::string QuoteArg(const std::string& arg) {
  if (!arg.empty() && arg.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                            "0123456789-_./=:+,@") == std::string::npos) {
    return arg;
  }
  std::string q = "'";
  for (char c : arg) {
    if (c == '\'') {
      q += "'\\''";
    } else {
      q += c;
    }
  }
  return q + "'";
}

Result<ProcessResult> RunProcess(const std::vector<std::string>& argv, int64_t timeout_ms) {
  return RunImpl(argv, nullptr, timeout_ms);
}

Result<std::string> RunChecked(const std::vector<std::string>& argv, int64_t timeout_ms) {
  return CheckedOutput(argv, RunImpl(argv, nullptr, timeout_ms));
}

Result<std::string> RunCheckedWithInput(const std::vector<std::string>& argv,
                                        const std::string& input, int64_t timeout_ms) {
  return CheckedOutput(argv, RunImpl(argv, &input, timeout_ms));
}

Result<pid_t> Spawn(const std::vector<std::string>& argv, const SpawnOptions& o) {
  if (argv.empty()) return Status::InvalidArgument("spawn: empty command");
  std::vector<char*> args = ArgvPointers(argv);
  const char* out_path = o.output_path.empty() ? "/dev/null" : o.output_path.c_str();
  pid_t pid = fork();
  if (pid < 0) return Status::Io("fork: " + std::string(strerror(errno)));
  if (pid == 0) {
    int out = open(out_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
    int devnull = open("/dev/null", O_RDONLY);
    if (devnull >= 0) dup2(devnull, STDIN_FILENO);
    if (out >= 0) {
      dup2(out, STDOUT_FILENO);
      dup2(out, STDERR_FILENO);
    }
    close_range(3, ~0U, 0);
    if (o.new_session) setsid();
    if (o.new_mount_uts_namespace) {
      if (unshare(CLONE_NEWNS | CLONE_NEWUTS) != 0) ChildFail("unshare");
      if (mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) {
        ChildFail("make / private");
      }
      if (!o.hostname.empty() && sethostname(o.hostname.c_str(), o.hostname.size()) != 0) {
        ChildFail("sethostname");
      }
      for (const auto& [source, target] : o.bind_mounts) {
        if (mount(source.c_str(), target.c_str(), nullptr, MS_BIND, nullptr) != 0) {
          ChildFail(target.c_str());
        }
      }
    }
    execvp(args[0], args.data());
    ChildFail(args[0]);
  }
  return pid;
}

bool ProcessAlive(pid_t pid) { return pid > 0 && AliveImpl(pid); }

bool ProcessMatches(pid_t pid, const std::string& needle) {
  if (pid <= 0) return false;
  std::ifstream f("/proc/" + std::to_string(pid) + "/cmdline", std::ios::binary);
  if (!f) return false;
  std::string cmdline((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  for (char& c : cmdline) {
    if (c == '\0') c = ' ';
  }
  return cmdline.find(needle) != std::string::npos;
}

bool TerminateProcess(pid_t pid, int64_t grace_ms) {
  if (pid <= 0) return true;
  for (int sig : {SIGTERM, SIGKILL}) {
    if (!AliveImpl(pid)) return true;
    kill(pid, sig);
    const int64_t deadline = NowMs() + (sig == SIGTERM ? grace_ms : 5000);
    while (NowMs() < deadline) {
      if (!AliveImpl(pid)) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  return !AliveImpl(pid);
}

std::vector<pid_t> FindProcesses(const std::string& needle) {
  std::vector<pid_t> out;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/proc", ec)) {
    const std::string name = entry.path().filename().string();
    if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) continue;
    pid_t pid = static_cast<pid_t>(std::stol(name));
    if (pid != getpid() && ProcessMatches(pid, needle)) out.push_back(pid);
  }
  return out;
}

}  // namespace ferry::lab
