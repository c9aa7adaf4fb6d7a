// Compression of qcow2 clusters: raw deflate (compression_type 0) and zstd (type 1).
//
// zlib and zstd types stay inside qcow2_codec.cc. Decompression is bounded: the output buffer
// is exactly one cluster, and a stream that does not fill it exactly is an error.
//
// Thread-safety: free functions without shared state; call them from any thread.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "common/status.h"

namespace ferry::qcow2 {

enum class Codec : uint8_t { kZlib = 0, kZstd = 1 };  // values = header compression_type

// Decompresses `in` (which may carry trailing bytes: qcow2 stores compressed sizes rounded to
// 512-byte sectors) into exactly out.size() bytes. Returns a short description of the
// failure (e.g. "inflate: invalid distance too far back") as kCorrupt; the caller adds the
// file, guest and host offsets.
Status Decompress(Codec codec, std::span<const uint8_t> in, std::span<uint8_t> out);

// Compresses one cluster. Returns false if the result would not be smaller than
// `max_size` (store the cluster uncompressed then). The zlib stream uses a 4 KiB window
// (windowBits -12) because QEMU inflates with that window.
bool Compress(Codec codec, std::span<const uint8_t> in, size_t max_size,
              std::vector<uint8_t>* out);

}  // namespace ferry::qcow2
