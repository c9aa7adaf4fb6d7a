#include "test_util.h"

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <stdexcept>

namespace ferry::testing {

TempDir::TempDir() {
  const char* base = std::getenv("TMPDIR");
  std::string templ = std::string(base && *base ? base : "/var/tmp") + "/ferry-test-XXXXXX";
  std::vector<char> buf(templ.begin(), templ.end());
  buf.push_back('\0');
  if (::mkdtemp(buf.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
  path_ = buf.data();
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

CommandResult Run(const std::string& command) {
  CommandResult r;
  std::string full = command + " 2>&1";
  FILE* p = ::popen(full.c_str(), "r");
  if (p == nullptr) return r;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) r.output.append(buf, n);
  int status = ::pclose(p);
  if (WIFEXITED(status)) {
    r.exit_code = WEXITSTATUS(status);
  } else if (WIFSIGNALED(status)) {
    r.exit_code = 128 + WTERMSIG(status);
  }
  return r;
}

std::string ShellQuote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out += c;
    }
  }
  return out + "'";
}

std::string SourceDir() {
  const char* d = std::getenv("FERRY_SOURCE_DIR");
  return d ? d : FERRY_SOURCE_DIR_DEFAULT;
}

std::string BinaryDir() {
  const char* d = std::getenv("FERRY_BINARY_DIR");
  return d ? d : FERRY_BINARY_DIR_DEFAULT;
}

std::string FerryBinary() { return BinaryDir() + "/src/cli/ferry"; }

std::string SharedCorpusDir() {
  const char* d = std::getenv("FERRY_SHARED_DIR");
  return std::string(d ? d : SourceDir() + "/../shared") + "/corpus";
}

bool WritePatternRaw(const std::string& path, const PatternSpec& spec) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) return false;
  std::mt19937_64 rng(spec.seed);
  std::uniform_real_distribution<double> pick(0.0, 1.0);
  std::vector<uint8_t> block(spec.block);
  bool ok = true;
  for (uint64_t off = 0; off < spec.size && ok; off += spec.block) {
    size_t len = static_cast<size_t>(std::min<uint64_t>(spec.block, spec.size - off));
    double r = pick(rng);
    if (r < spec.data_fraction) {
      for (size_t i = 0; i < len; i += 8) {
        uint64_t v = rng();
        std::memcpy(block.data() + i, &v, std::min<size_t>(8, len - i));
      }
      // Some data blocks are partly zero, to exercise zero detection inside data.
      if ((rng() & 3) == 0) std::fill(block.begin(), block.begin() + len / 2, 0);
    } else if (r < spec.data_fraction + spec.zero_fraction) {
      std::fill(block.begin(), block.begin() + len, 0);
    } else {
      continue;  // hole
    }
    ok = std::fseek(f, static_cast<long>(off), SEEK_SET) == 0 &&
         std::fwrite(block.data(), 1, len, f) == len;
  }
  ok = ok && ::ftruncate(fileno(f), static_cast<off_t>(spec.size)) == 0;
  return std::fclose(f) == 0 && ok;
}

std::vector<uint8_t> ReadFileBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

bool WriteFileBytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  return static_cast<bool>(out);
}

int QemuImgCompare(const std::string& a, const std::string& b, const std::string& fmt_a,
                   const std::string& fmt_b) {
  std::string cmd = "qemu-img compare -q";
  if (!fmt_a.empty()) cmd += " -f " + fmt_a;
  if (!fmt_b.empty()) cmd += " -F " + fmt_b;
  cmd += " " + ShellQuote(a) + " " + ShellQuote(b);
  return Run(cmd).exit_code;
}

}  // namespace ferry::testing
