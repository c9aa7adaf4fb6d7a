// Caps every VmDescription obeys (docs/formats/vm-description.md, "Limits"), shared by the
// JSON reader and the descriptor parsers of this module so that whatever a parser accepts can
// be written as JSON and read back. Internal to ferry_sources.
//
// Thread-safety: constants and pure functions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "common/status.h"
#include "sources/vm_description.h"

namespace ferry::sources {

inline constexpr size_t kMaxDisks = 64;
inline constexpr size_t kMaxNics = 64;
inline constexpr size_t kMaxStringBytes = 4096;
inline constexpr size_t kMaxListStrings = 1024;  // missing, problems
inline constexpr int kMaxVcpus = 4096;
inline constexpr uint64_t kMaxMemoryBytes = 16ull << 40;  // 16 TiB

// "" or [a-z0-9._-]{1,32}: what DiskDescription::format may hold.
bool IsFormatName(std::string_view s);

// True if `s` is well-formed UTF-8 (no overlong forms, surrogates or code points past U+10FFFF).
bool IsValidUtf8(std::string_view s);
// `s` with every byte that is not part of well-formed UTF-8 replaced by '?'.
std::string SanitizeUtf8(std::string_view s);

// kCorrupt "WHERE: FIELD: ..." for the first string over kMaxStringBytes or not valid UTF-8
// (JSON carries UTF-8 only), or kTooLarge for a list over its cap. Problem lines are not
// checked: AddProblem keeps them in bounds.
Status CheckDescriptionLimits(const VmDescription& vm, const std::string& where);

// Appends a problem line, made valid UTF-8 and cut to kMaxStringBytes; past kMaxListStrings - 1
// lines, the last one says how many more were dropped.
void AddProblem(VmDescription& vm, std::string line);

}  // namespace ferry::sources
