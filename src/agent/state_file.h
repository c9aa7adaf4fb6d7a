// Small durable state files of ferry-agent (state_dir/jobs/<id>.json, state_dir/exports/<id>.json):
// an atomic replace (temporary file, fsync, rename, fsync of the folder) and a capped read.
//
// Thread-safety: pure functions over the filesystem; callers serialise writes of one file.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "common/status.h"

namespace ferry::agent {

// The suffix of a write in progress; a file with it left in a state folder is a write the
// last run did not finish (remove it when reloading).
inline constexpr char kStateTempSuffix[] = ".tmp";

// Replaces dir/name with `data` atomically and durably. kIo naming the file on failure.
Status WriteFileAtomic(const std::string& dir, const std::string& name, const std::string& data);

// Reads the whole file; kTooLarge past max_bytes, kIo naming the path.
Result<std::string> ReadSmallFile(const std::string& path, size_t max_bytes);

bool EndsWith(std::string_view s, std::string_view suffix);

}  // namespace ferry::agent
