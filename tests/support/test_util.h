// Helpers shared by Ferry's tests: temporary folders, running real tools (qemu-img, nbdinfo,
// the ferry binary), and deterministic test images.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace ferry::testing {

// A fresh folder under $TMPDIR (or /var/tmp), removed with everything in it on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string Join(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

struct CommandResult {
  int exit_code = -1;   // the command's exit status; 128+N if killed by signal N
  std::string output;   // stdout and stderr interleaved
};

// Runs `command` with /bin/sh and captures its output.
CommandResult Run(const std::string& command);

// Quotes a string for /bin/sh.
std::string ShellQuote(const std::string& s);

// The built `ferry` binary.
// The build tree ($FERRY_BINARY_DIR, else the one this test was built in).
std::string BinaryDir();
std::string FerryBinary();
// The source tree (FERRY_SOURCE_DIR).
std::string SourceDir();
// ../shared/corpus next to the source tree.
std::string SharedCorpusDir();

// A layout for a raw test image: which 64 KiB blocks hold data (deterministic pseudo-random
// bytes from `seed`), which are allocated but all zero, and which are holes.
struct PatternSpec {
  uint64_t size = 64ull << 20;
  double data_fraction = 0.25;
  double zero_fraction = 0.05;  // allocated blocks full of zeros
  uint32_t seed = 1;
  uint32_t block = 64 * 1024;
};
// Writes a sparse raw image following `spec`. Returns false on I/O failure.
bool WritePatternRaw(const std::string& path, const PatternSpec& spec);

// Reads a whole file into memory (test-size files only).
std::vector<uint8_t> ReadFileBytes(const std::string& path);
bool WriteFileBytes(const std::string& path, const std::vector<uint8_t>& bytes);

// qemu-img compare exit status: 0 identical, 1 differ, 2+ error.
int QemuImgCompare(const std::string& a, const std::string& b, const std::string& fmt_a = "",
                   const std::string& fmt_b = "");

}  // namespace ferry::testing
