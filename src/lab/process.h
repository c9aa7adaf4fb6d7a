// Running the lab's helper programs (virsh, ip, qemu-system-x86_64, libvirtd) with fork/exec:
// no shell, arguments passed as they are.
//
// Thread-safety: the functions are thread-safe; they only touch the child they start.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"

namespace ferry::lab {

struct ProcessResult {
  int exit_code = -1;  // exit status; 128+N if killed by signal N
  std::string output;  // stdout and stderr interleaved
};

// Runs argv[0] (looked up in PATH) and waits for it, at most `timeout_ms` (then it is killed
// and the result is kIo "timed out").
Result<ProcessResult> RunProcess(const std::vector<std::string>& argv, int64_t timeout_ms);

// Like RunProcess, but a non-zero exit is kIo naming the command and quoting its output.
Result<std::string> RunChecked(const std::vector<std::string>& argv, int64_t timeout_ms);

// Like RunChecked, with `input` as the child's stdin instead of /dev/null (sfdisk reads its
// script there).
Result<std::string> RunCheckedWithInput(const std::vector<std::string>& argv,
                                        const std::string& input, int64_t timeout_ms);

// True if `program` is an executable file in one of $PATH's folders.
bool InPath(const std::string& program);

// How a detached child is set up between fork and exec. Every string is prepared before the
// fork so the child only makes system calls.
struct SpawnOptions {
  std::string output_path;  // stdout+stderr appended here ("" = /dev/null)
  bool new_session = true;  // setsid(): outlives the caller's terminal and process
  // Namespaces and bind mounts for a libvirt "host" (unshare + mount + sethostname).
  bool new_mount_uts_namespace = false;
  std::string hostname;
  std::vector<std::pair<std::string, std::string>> bind_mounts;  // (source, target)
};

// Starts argv in the background and returns its pid (it is the caller's child until the
// caller exits). Errors before exec are written to output_path and the child exits 127.
Result<pid_t> Spawn(const std::vector<std::string>& argv, const SpawnOptions& options);

// True if `pid` exists and its /proc/PID/cmdline contains `needle` (guards against a pid
// that was reused by an unrelated process).
bool ProcessMatches(pid_t pid, const std::string& needle);

// True if `pid` exists and is not a zombie (reaps it if it is our exited child).
bool ProcessAlive(pid_t pid);

// Sends SIGTERM, waits up to `grace_ms`, then SIGKILL and waits again. Reaps the process if
// it is our child. Returns true if it is gone.
bool TerminateProcess(pid_t pid, int64_t grace_ms);

// Pids of processes whose command line contains `needle` (scanning /proc).
std::vector<pid_t> FindProcesses(const std::string& needle);

// Shell-quotes one argument, for messages only.
std::string QuoteArg(const std::string& arg);

}  // namespace ferry::lab
