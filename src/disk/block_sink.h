// BlockSink: a writable virtual disk (a format writer, an NBD client).
//
// Contract with the copy engine:
//  - Write/WriteZeroes ranges start on a multiple of granularity() and are a multiple of it
//    long, except a range that ends at size().
//  - Between Create/Resume and Finalize, each granule is written at most once, except that
//    after Resume the ranges past the checkpoint may be written again.
//  - If sequential() is true, ranges arrive in ascending order, without overlap.
//  - Checkpoint() and Finalize() are never called while a write is in progress.
//  - A target that has not been finalized must not look like a finished image: writers keep
//    the file under a temporary name (the engine renames on success) and/or leave it marked
//    incomplete in its header.
//
// Thread-safety: unless sequential() is true, Write and WriteZeroes may be called
// concurrently from several threads for distinct ranges.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "common/status.h"

namespace ferry {

class BlockSink {
 public:
  virtual ~BlockSink() = default;

  virtual uint64_t size() const = 0;
  // Allocation unit the writer wants ranges aligned to (cluster/block/grain size).
  virtual uint32_t granularity() const = 0;
  virtual bool sequential() const { return false; }
  // True if ranges never written read back as zeros (a freshly created image). The engine
  // then skips zero ranges instead of calling WriteZeroes.
  virtual bool zero_initialized() const { return true; }

  virtual Status Write(uint64_t offset, std::span<const uint8_t> data) = 0;
  // Makes [offset, offset+length) read as zeros, deallocating where the format can.
  virtual Status WriteZeroes(uint64_t offset, uint64_t length) = 0;

  // Makes everything written so far durable and returns an opaque blob from which the
  // format's Resume function can continue this image after a crash. Small: it must fit in a
  // journal record (keep it well under 16 MiB; put large tables in the image itself).
  virtual Result<std::vector<uint8_t>> Checkpoint() = 0;

  // Writes final metadata (tables, footers, headers), syncs; after OK the image is complete.
  virtual Status Finalize() = 0;
};

}  // namespace ferry
