// Sizes and rates as people write them: "4G", "512MiB", "100M/s", "1.5T".
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "common/status.h"

namespace ferry {

constexpr uint64_t kKiB = 1024;
constexpr uint64_t kMiB = 1024 * kKiB;
constexpr uint64_t kGiB = 1024 * kMiB;
constexpr uint64_t kTiB = 1024 * kGiB;

// Parses "1048576", "64K", "64k", "64KiB", "1.5G", "2T" (binary multiples). A trailing "/s"
// is accepted so rates parse too.
Result<uint64_t> ParseSize(std::string_view text);

// "1.50 GiB", "512 B".
std::string FormatBytes(uint64_t bytes);

}  // namespace ferry
