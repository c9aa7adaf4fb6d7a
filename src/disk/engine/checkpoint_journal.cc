#include "disk/engine/checkpoint_journal.h"

#include <cstring>

#include "common/bytes.h"

namespace ferry {
namespace {

// docs/formats/checkpoint-journal.md
constexpr char kJournalMagic[8] = {'F', 'E', 'R', 'R', 'Y', 'J', 'N', 'L'};
constexpr uint32_t kJournalVersion = 1;
constexpr uint32_t kRecordMagic = 0x46434B50;  // "FCKP" big-endian
constexpr size_t kFileHeaderFixed = 8 + 4 + 4;  // magic, version, identity length
constexpr uint32_t kMaxIdentity = 64 * 1024;
constexpr size_t kRecordHeader = 4 + 4 + 4;     // magic, payload length, payload CRC-32
constexpr uint32_t kMaxPayload = 64u << 20;
constexpr uint32_t kMaxBlob = 32u << 20;

void PutU32(std::vector<uint8_t>* out, uint32_t v) {
  size_t at = out->size();
  out->resize(at + 4);
  StoreLE32(out->data() + at, v);
}
void PutU64(std::vector<uint8_t>* out, uint64_t v) {
  size_t at = out->size();
  out->resize(at + 8);
  StoreLE64(out->data() + at, v);
}
void PutBlob(std::vector<uint8_t>* out, const std::vector<uint8_t>& blob) {
  PutU32(out, static_cast<uint32_t>(blob.size()));
  out->insert(out->end(), blob.begin(), blob.end());
}

// Bounds-checked cursor over a record payload.
class Reader {
 public:
  explicit Reader(std::span<const uint8_t> b) : b_(b) {}
  bool U32(uint32_t* v) {
    if (b_.size() - pos_ < 4) return false;
    *v = LoadLE32(b_.data() + pos_);
    pos_ += 4;
    return true;
  }
  bool U64(uint64_t* v) {
    if (b_.size() - pos_ < 8) return false;
    *v = LoadLE64(b_.data() + pos_);
    pos_ += 8;
    return true;
  }
  bool Bytes(size_t n, uint8_t* dst) {
    if (b_.size() - pos_ < n) return false;
    std::memcpy(dst, b_.data() + pos_, n);
    pos_ += n;
    return true;
  }
  bool Blob(std::vector<uint8_t>* v) {
    uint32_t n;
    if (!U32(&n) || n > kMaxBlob || b_.size() - pos_ < n) return false;
    v->assign(b_.begin() + static_cast<ptrdiff_t>(pos_),
              b_.begin() + static_cast<ptrdiff_t>(pos_ + n));
    pos_ += n;
    return true;
  }
  bool AtEnd() const { return pos_ == b_.size(); }

 private:
  std::span<const uint8_t> b_;
  size_t pos_ = 0;
};

}  // namespace

Result<std::unique_ptr<CheckpointJournal>> CheckpointJournal::Create(Env* env,
                                                                     const std::string& path,
                                                                     const std::string& identity) {
  if (identity.size() > kMaxIdentity) return Status::InvalidArgument("journal identity too long");
  FERRY_ASSIGN_OR_RETURN(auto file, env->Open(path, OpenMode::kCreateTruncate));
  std::vector<uint8_t> head(kJournalMagic, kJournalMagic + 8);
  PutU32(&head, kJournalVersion);
  PutU32(&head, static_cast<uint32_t>(identity.size()));
  head.insert(head.end(), identity.begin(), identity.end());
  PutU32(&head, Crc32(head));
  FERRY_TRY(file->WriteAt(0, head));
  FERRY_TRY(file->Sync());
  std::unique_ptr<CheckpointJournal> j(new CheckpointJournal(std::move(file)));
  j->identity_ = identity;
  j->end_ = head.size();
  return j;
}

Result<std::unique_ptr<CheckpointJournal>> CheckpointJournal::Open(Env* env,
                                                                   const std::string& path) {
  FERRY_ASSIGN_OR_RETURN(auto file, env->Open(path, OpenMode::kReadWrite));
  return Parse(std::move(file));
}

Result<std::unique_ptr<CheckpointJournal>> CheckpointJournal::Parse(std::unique_ptr<File> file) {
  const std::string name = file->path();
  FERRY_ASSIGN_OR_RETURN(uint64_t size, file->Size());
  uint8_t fixed[kFileHeaderFixed];
  if (size < kFileHeaderFixed + 4) {
    return Status::Corrupt(name + ": journal header truncated (" + std::to_string(size) +
                           " bytes)");
  }
  FERRY_TRY(file->ReadAt(0, fixed));
  if (std::memcmp(fixed, kJournalMagic, 8) != 0) {
    return Status::Corrupt(name + ": not a Ferry checkpoint journal (bad magic at 0x0)");
  }
  uint32_t version = LoadLE32(fixed + 8);
  if (version != kJournalVersion) {
    return Status::Unsupported(name + ": journal version " + std::to_string(version) +
                               " (this Ferry reads version 1)");
  }
  uint32_t id_len = LoadLE32(fixed + 12);
  if (id_len > kMaxIdentity || kFileHeaderFixed + id_len + 4 > size) {
    return Status::Corrupt(name + ": journal identity length " + std::to_string(id_len) +
                           " at 0xc is past the end of the file");
  }
  std::vector<uint8_t> head(kFileHeaderFixed + id_len + 4);
  FERRY_TRY(file->ReadAt(0, head));
  uint32_t stored = LoadLE32(head.data() + head.size() - 4);
  uint32_t computed = Crc32(std::span(head).first(head.size() - 4));
  if (stored != computed) {
    return Status::Corrupt(name + ": journal header checksum mismatch (stored " + Hex(stored) +
                           ", computed " + Hex(computed) + ")");
  }
  std::unique_ptr<CheckpointJournal> j(new CheckpointJournal(std::move(file)));
  j->identity_.assign(reinterpret_cast<const char*>(head.data() + kFileHeaderFixed), id_len);
  uint64_t pos = head.size();
  j->end_ = pos;
  while (pos + kRecordHeader <= size) {
    uint8_t rh[kRecordHeader];
    FERRY_TRY(j->file_->ReadAt(pos, rh));
    uint32_t magic = LoadBE32(rh);
    uint32_t len = LoadLE32(rh + 4);
    uint32_t crc = LoadLE32(rh + 8);
    if (magic != kRecordMagic || len > kMaxPayload || pos + kRecordHeader + len > size) break;
    std::vector<uint8_t> payload(len);
    FERRY_TRY(j->file_->ReadAt(pos + kRecordHeader, payload));
    if (Crc32(payload) != crc) break;  // torn write: the record never completed
    CheckpointRecord rec;
    Reader r(payload);
    uint32_t n_hashes = 0;
    bool ok = r.U64(&rec.sequence) && r.U64(&rec.frontier) && r.Blob(&rec.sink_state) &&
              r.Blob(&rec.hash_state) && r.U32(&n_hashes) && n_hashes <= len / 32;
    if (ok) {
      rec.chunk_hashes.resize(n_hashes);
      for (auto& h : rec.chunk_hashes) ok = ok && r.Bytes(32, h.data());
      ok = ok && r.AtEnd();
    }
    if (!ok) {
      return Status::Corrupt(name + ": checkpoint record at " + Hex(pos) +
                             " has a valid checksum but a malformed body");
    }
    uint64_t expected_seq = j->has_last_ ? j->last_.sequence + 1 : 1;
    if (rec.sequence != expected_seq || (j->has_last_ && rec.frontier < j->last_.frontier)) {
      return Status::Corrupt(name + ": checkpoint record at " + Hex(pos) + " has sequence " +
                             std::to_string(rec.sequence) + ", frontier " + Hex(rec.frontier) +
                             " out of order");
    }
    j->all_chunk_hashes_.insert(j->all_chunk_hashes_.end(), rec.chunk_hashes.begin(),
                                rec.chunk_hashes.end());
    j->last_ = std::move(rec);
    j->has_last_ = true;
    pos += kRecordHeader + len;
    j->end_ = pos;
  }
  return j;
}

Status CheckpointJournal::Append(CheckpointRecord record) {
  record.sequence = has_last_ ? last_.sequence + 1 : 1;
  std::vector<uint8_t> payload;
  PutU64(&payload, record.sequence);
  PutU64(&payload, record.frontier);
  if (record.sink_state.size() > kMaxBlob || record.hash_state.size() > kMaxBlob) {
    return Status::TooLarge(path() + ": checkpoint state blob over " + std::to_string(kMaxBlob) +
                            " bytes");
  }
  PutBlob(&payload, record.sink_state);
  PutBlob(&payload, record.hash_state);
  PutU32(&payload, static_cast<uint32_t>(record.chunk_hashes.size()));
  for (const auto& h : record.chunk_hashes) payload.insert(payload.end(), h.begin(), h.end());
  if (payload.size() > kMaxPayload) return Status::TooLarge(path() + ": checkpoint record too large");
  std::vector<uint8_t> rec(kRecordHeader);
  StoreBE32(rec.data(), kRecordMagic);
  StoreLE32(rec.data() + 4, static_cast<uint32_t>(payload.size()));
  StoreLE32(rec.data() + 8, Crc32(payload));
  rec.insert(rec.end(), payload.begin(), payload.end());
  FERRY_TRY(file_->Truncate(end_));  // drop a torn tail from an earlier crash
  FERRY_TRY(file_->WriteAt(end_, rec));
  FERRY_TRY(file_->Sync());
  end_ += rec.size();
  all_chunk_hashes_.insert(all_chunk_hashes_.end(), record.chunk_hashes.begin(),
                           record.chunk_hashes.end());
  last_ = std::move(record);
  has_last_ = true;
  return Status::Ok();
}

}  // namespace ferry
