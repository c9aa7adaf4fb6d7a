// CheckpointJournal: the append-only file that lets a copy resume after a crash.
//
// Layout (byte by byte in docs/formats/checkpoint-journal.md): a header naming the copy it
// belongs to (source, target, chunk size, options: the "identity"), then one record per
// checkpoint. A checkpoint says: every chunk below `frontier` is durable on the target; here is
// the target writer's state blob, the whole-disk hash state at the frontier, and the hashes of
// the chunks the frontier passed since the previous record. Records carry a CRC-32; reading
// stops at the first torn or corrupt record, so a crash while appending loses at most that one
// checkpoint.
//
// Thread-safety: not thread-safe; the copy engine appends from one thread.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/checksum.h"
#include "common/file.h"
#include "common/status.h"

namespace ferry {

struct CheckpointRecord {
  uint64_t sequence = 0;   // 1, 2, 3 ... in file order
  uint64_t frontier = 0;   // bytes of virtual disk, from 0, durable on the target
  std::vector<uint8_t> sink_state;   // BlockSink::Checkpoint() blob
  std::vector<uint8_t> hash_state;   // Sha256::SaveState() of the whole-disk hash, or empty
  std::vector<ChunkDigest> chunk_hashes;  // chunks newly below the frontier, in order
};

class CheckpointJournal {
 public:
  // Creates (truncating) a journal for the copy described by `identity`.
  static Result<std::unique_ptr<CheckpointJournal>> Create(Env* env, const std::string& path,
                                                           const std::string& identity);
  // Opens an existing journal, reading every valid record. A torn tail is ignored (and
  // truncated on the next append).
  static Result<std::unique_ptr<CheckpointJournal>> Open(Env* env, const std::string& path);

  const std::string& path() const { return file_->path(); }
  const std::string& identity() const { return identity_; }

  // The last valid checkpoint, or null if none was recorded.
  const CheckpointRecord* last() const { return has_last_ ? &last_ : nullptr; }
  // Hashes of all chunks below the last frontier, in order (concatenated from every record).
  const std::vector<ChunkDigest>& chunk_hashes() const { return all_chunk_hashes_; }

  // Appends a record and makes it durable. Sets record.sequence.
  Status Append(CheckpointRecord record);

  // Decodes a journal image; used by Open and the fuzz target.
  static Result<std::unique_ptr<CheckpointJournal>> Parse(std::unique_ptr<File> file);

 private:
  explicit CheckpointJournal(std::unique_ptr<File> file) : file_(std::move(file)) {}

  std::unique_ptr<File> file_;
  std::string identity_;
  uint64_t end_ = 0;  // offset after the last valid record
  bool has_last_ = false;
  CheckpointRecord last_;
  std::vector<ChunkDigest> all_chunk_hashes_;
};

}  // namespace ferry
