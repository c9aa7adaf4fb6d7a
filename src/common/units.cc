#include "common/units.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>

namespace ferry {

Result<uint64_t> ParseSize(std::string_view text) {
  std::string s(text);
  if (s.size() >= 2 && s.compare(s.size() - 2, 2, "/s") == 0) s.resize(s.size() - 2);
  if (s.empty()) return Status::InvalidArgument("empty size");
  char* end = nullptr;
  double v = std::strtod(s.c_str(), &end);
  if (end == s.c_str() || !(v >= 0) || std::isinf(v)) {
    return Status::InvalidArgument("bad size '" + std::string(text) + "'");
  }
  std::string unit(end);
  for (auto& c : unit) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  uint64_t mult = 1;
  if (unit.empty() || unit == "B") {
    mult = 1;
  } else if (unit == "K" || unit == "KB" || unit == "KIB") {
    mult = kKiB;
  } else if (unit == "M" || unit == "MB" || unit == "MIB") {
    mult = kMiB;
  } else if (unit == "G" || unit == "GB" || unit == "GIB") {
    mult = kGiB;
  } else if (unit == "T" || unit == "TB" || unit == "TIB") {
    mult = kTiB;
  } else {
    return Status::InvalidArgument("bad size unit in '" + std::string(text) + "'");
  }
  double bytes = v * static_cast<double>(mult);
  if (bytes > 9.0e18) return Status::InvalidArgument("size too large: '" + std::string(text) + "'");
  return static_cast<uint64_t>(std::llround(bytes));
}

std::string FormatBytes(uint64_t bytes) {
  static const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024.0 && u < 5) {
    v /= 1024.0;
    ++u;
  }
  char buf[32];
  if (u == 0) {
    std::snprintf(buf, sizeof buf, "%llu B", static_cast<unsigned long long>(bytes));
  } else {
    std::snprintf(buf, sizeof buf, "%.2f %s", v, kUnits[u]);
  }
  return buf;
}

}  // namespace ferry
