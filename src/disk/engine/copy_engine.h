// The copy engine: moves a BlockSource onto a BlockSink, extent-driven, in parallel, with
// bounded memory, zero detection, optional hashing, a rate limit and checkpoints.
//
// Data flow:
//   workers (N threads): take the next chunk index, ask the source for its extents, read only
//     kData ranges into a pooled buffer, split them into sink-granularity pieces, detect zero
//     pieces, write data/zeros to the sink (random-access sinks), hash the chunk.
//   committer (1 thread): takes chunks in index order, feeds the whole-disk hash, writes to
//     sequential sinks, returns buffers, reports progress, and takes checkpoints.
// At most `window` chunks are in flight (each holding one buffer), so memory is
// window x chunk_size whatever the disk size.
//
// Checkpoints are barriers: the committer stops dispatch, lets every in-flight chunk finish,
// calls sink.Checkpoint() and appends a journal record with the frontier (all chunks below it
// are durable). A resume restarts at that frontier, so at most one checkpoint interval plus
// the in-flight window is copied again.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <optional>
#include <vector>

#include "common/checksum.h"
#include "common/clock.h"
#include "common/status.h"
#include "disk/block_sink.h"
#include "disk/block_source.h"
#include "disk/engine/checkpoint_journal.h"

namespace ferry {

struct CopyProgress {
  uint64_t virtual_size = 0;
  uint64_t done_bytes = 0;      // virtual bytes below the committed frontier
  uint64_t start_bytes = 0;     // frontier the copy (re)started from
  uint64_t read_bytes = 0;      // bytes read from the source (data only)
  uint64_t written_bytes = 0;   // data bytes written to the sink
  uint64_t zero_bytes = 0;      // bytes found zero (holes, zero extents, zeros in data)
  uint64_t skipped_bytes = 0;   // kSkip extents left untouched
  double elapsed_seconds = 0;
  uint64_t checkpoints = 0;
};

struct CopyOptions {
  uint64_t chunk_size = 4ull << 20;  // rounded up to a multiple of the sink granularity
  int workers = 4;
  int window = 0;                    // chunks in flight; 0: 2 x workers
  uint64_t checkpoint_bytes = 1ull << 30;   // data bytes read between checkpoints
  double checkpoint_seconds = 30;           // or this long, whichever comes first
  uint64_t rate_limit = 0;           // bytes/s read from the source, 0 = unlimited
  bool hash = false;                 // per-chunk hashes and whole-disk SHA-256 of the virtual disk
  bool hash_whole_disk = true;       // with hash: also the whole-disk SHA-256 (one thread, in
                                     // order); false: the per-chunk hashes only
  ChunkHashAlgorithm chunk_hash = ChunkHashAlgorithm::kSha256;  // of the per-chunk hashes
  CheckpointJournal* journal = nullptr;  // record checkpoints here (and resume from its last)
  std::function<void(const CopyProgress&)> on_progress;  // from the committer thread
  const std::atomic<bool>* cancel = nullptr;
  Clock* clock = SystemClock();
};

struct CopyResult {
  CopyProgress progress;
  uint64_t chunk_size = 0;
  std::optional<Sha256Digest> disk_sha256;  // set when options.hash and hash_whole_disk
  std::vector<ChunkDigest> chunk_hashes;    // one per chunk when options.hash (chunk_hash)
};

// Copies all of `source` to `sink` (which must be at least as large). If options.journal has
// a checkpoint, starts from its frontier with the hash state it saved; the caller must have
// opened `sink` with Resume from that checkpoint's sink_state.
// Does not Finalize the sink.
Result<CopyResult> CopyDisk(BlockSource& source, BlockSink& sink, const CopyOptions& options);

struct CompareResult {
  bool identical = true;
  uint64_t first_difference = 0;  // valid when !identical
  bool size_differs = false;
};

// Compares the virtual contents of two disks chunk by chunk in parallel; ranges both sides
// report as holes/zeros are not read. Disks of different sizes are identical only if the
// longer one's tail reads as zeros (as qemu-img compare does without --strict).
Result<CompareResult> CompareDisks(BlockSource& a, BlockSource& b, int workers = 4,
                                   bool strict_size = false);

}  // namespace ferry
