#include "disk/engine/copy_engine.h"

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <memory>
#include <mutex>
#include <thread>

#include "common/bytes.h"
#include "disk/engine/chunk_hash.h"

namespace ferry {
namespace {

constexpr uint64_t kMaxWindowBytes = 128ull << 20;  // cap on buffered chunk memory

enum class PieceKind : uint8_t { kData, kZero, kSkip };

// A run of granules of one kind inside a chunk. Data pieces live in the chunk's buffer at
// (offset - chunk offset).
struct Piece {
  uint64_t offset;
  uint64_t length;
  PieceKind kind;
};

struct Slot {
  std::unique_ptr<uint8_t[]> buffer;
  std::vector<Piece> pieces;
  std::vector<Extent> extents;
  ChunkDigest hash{};
  uint64_t offset = 0;
  bool ready = false;
};

// Token bucket over bytes read from the source.
class RateLimiter {
 public:
  RateLimiter(uint64_t rate, Clock* clock) : rate_(rate), clock_(clock) {}
  void Acquire(uint64_t bytes) {
    if (rate_ == 0) return;
    int64_t wait_until;
    {
      std::lock_guard<std::mutex> l(mu_);
      int64_t now = clock_->NowNanos();
      if (next_ < now) next_ = now;
      wait_until = next_;
      next_ += static_cast<int64_t>(static_cast<double>(bytes) * 1e9 / static_cast<double>(rate_));
    }
    clock_->SleepNanos(wait_until - clock_->NowNanos());
  }

 private:
  uint64_t rate_;
  Clock* clock_;
  std::mutex mu_;
  int64_t next_ = 0;
};

Status CheckCoverage(const std::vector<Extent>& extents, uint64_t offset, uint64_t length) {
  uint64_t pos = offset;
  for (const auto& e : extents) {
    if (e.offset != pos || e.length == 0) {
      return Status::Internal("source extents do not cover " + Hex(offset) + "+" +
                              Hex(length) + " contiguously (gap or overlap at " + Hex(pos) + ")");
    }
    pos += e.length;
  }
  if (pos != offset + length) {
    return Status::Internal("source extents cover up to " + Hex(pos) + ", expected " +
                            Hex(offset + length));
  }
  return Status::Ok();
}

class CopyRun {
 public:
  CopyRun(BlockSource& source, BlockSink& sink, const CopyOptions& options)
      : source_(source), sink_(sink), options_(options), limiter_(options.rate_limit, options.clock) {}

  Result<CopyResult> Run() {
    FERRY_TRY(Setup());
    std::vector<std::thread> workers;
    for (int i = 0; i < workers_; ++i) workers.emplace_back([this] { WorkerLoop(); });
    Status commit_status = CommitterLoop();
    {
      std::lock_guard<std::mutex> l(mu_);
      if (!commit_status.ok() && error_.ok()) error_ = commit_status;
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& t : workers) t.join();
    if (!error_.ok()) return error_;
    CopyResult result;
    result.progress = Snapshot();
    result.chunk_size = chunk_;
    if (options_.hash) {
      if (options_.hash_whole_disk) result.disk_sha256 = disk_hash_.Finish();
      result.chunk_hashes = std::move(chunk_hashes_);
    }
    return result;
  }

 private:
  Status Setup() {
    size_ = source_.size();
    if (sink_.size() < size_) {
      return Status::InvalidArgument("target is smaller (" + std::to_string(sink_.size()) +
                                     " bytes) than the source (" + std::to_string(size_) + ")");
    }
    gran_ = std::max<uint64_t>(sink_.granularity(), 512);
    chunk_ = RoundUp(std::max<uint64_t>(options_.chunk_size, gran_), gran_);
    n_chunks_ = DivRoundUp(size_, chunk_);
    workers_ = std::max(1, options_.workers);
    window_ = options_.window > 0 ? options_.window : 2 * workers_;
    window_ = static_cast<int>(std::max<uint64_t>(
        1, std::min<uint64_t>(static_cast<uint64_t>(window_), kMaxWindowBytes / chunk_)));
    workers_ = std::min(workers_, window_);
    slots_.resize(static_cast<size_t>(window_));
    start_ns_ = options_.clock->NowNanos();
    last_checkpoint_ns_ = start_ns_;

    if (options_.journal != nullptr && options_.journal->last() != nullptr) {
      const CheckpointRecord& ck = *options_.journal->last();
      if (ck.frontier > size_ || (ck.frontier % chunk_ != 0 && ck.frontier != size_)) {
        return Status::Corrupt(options_.journal->path() + ": checkpoint frontier " +
                               Hex(ck.frontier) + " does not fit chunk size " + Hex(chunk_));
      }
      committed_ = DivRoundUp(ck.frontier, chunk_);
      if (options_.hash) {
        if ((options_.hash_whole_disk && ck.hash_state.empty()) ||
            options_.journal->chunk_hashes().size() != committed_) {
          return Status::Corrupt(options_.journal->path() +
                                 ": checkpoint lacks the hash state this copy needs");
        }
        if (options_.hash_whole_disk) {
          FERRY_TRY_CTX(disk_hash_.RestoreState(ck.hash_state), options_.journal->path());
        }
        chunk_hashes_ = options_.journal->chunk_hashes();
      }
    }
    next_dispatch_ = committed_;
    start_bytes_ = std::min(committed_ * chunk_, size_);
    return Status::Ok();
  }

  void WorkerLoop() {
    for (;;) {
      std::unique_lock<std::mutex> l(mu_);
      cv_.wait(l, [&] {
        return stop_ || next_dispatch_ >= n_chunks_ ||
               (!pause_ && next_dispatch_ < committed_ + static_cast<uint64_t>(window_));
      });
      if (stop_ || next_dispatch_ >= n_chunks_) return;
      if (options_.cancel != nullptr && options_.cancel->load()) {
        if (error_.ok()) error_ = Status::Cancelled("copy cancelled");
        stop_ = true;
        cv_.notify_all();
        return;
      }
      uint64_t index = next_dispatch_++;
      ++in_flight_;
      Slot& slot = slots_[index % static_cast<uint64_t>(window_)];
      l.unlock();
      Status s = ProcessChunk(index, slot);
      l.lock();
      --in_flight_;
      slot.ready = true;
      if (!s.ok() && error_.ok()) {
        error_ = s.WithContext("chunk at " + Hex(index * chunk_));
        stop_ = true;
      }
      cv_.notify_all();
    }
  }

  Status ProcessChunk(uint64_t index, Slot& slot) {
    const uint64_t off = index * chunk_;
    const uint64_t len = std::min(chunk_, size_ - off);
    slot.offset = off;
    slot.pieces.clear();
    slot.extents.clear();
    if (!slot.buffer) slot.buffer = std::make_unique_for_overwrite<uint8_t[]>(chunk_);
    FERRY_TRY(source_.Extents(off, len, &slot.extents));
    FERRY_TRY(CheckCoverage(slot.extents, off, len));

    // Classify each granule: all zero/hole -> zero; all skip -> skip; anything with data ->
    // read the whole granule and look at its bytes.
    const uint64_t n_gran = DivRoundUp(len, gran_);
    std::vector<uint8_t> kind(n_gran, 0);  // bit0 data, bit1 zero, bit2 skip
    for (const auto& e : slot.extents) {
      uint8_t bit = e.kind == ExtentKind::kData ? 1 : e.kind == ExtentKind::kSkip ? 4 : 2;
      uint64_t first = (e.offset - off) / gran_;
      uint64_t last = (e.offset + e.length - 1 - off) / gran_;
      for (uint64_t g = first; g <= last; ++g) kind[g] |= bit;
    }
    auto add_piece = [&](uint64_t p_off, uint64_t p_len, PieceKind k) {
      if (!slot.pieces.empty() && slot.pieces.back().kind == k &&
          slot.pieces.back().offset + slot.pieces.back().length == p_off) {
        slot.pieces.back().length += p_len;
      } else {
        slot.pieces.push_back({p_off, p_len, k});
      }
    };
    uint64_t g = 0;
    while (g < n_gran) {
      uint64_t run_start = g;
      if (kind[g] & 1) {
        while (g < n_gran && (kind[g] & 1)) ++g;
        uint64_t r_off = off + run_start * gran_;
        uint64_t r_len = std::min(off + g * gran_, off + len) - r_off;
        limiter_.Acquire(r_len);
        uint8_t* buf = slot.buffer.get() + (r_off - off);
        FERRY_TRY(source_.Read(r_off, std::span<uint8_t>(buf, r_len)));
        read_bytes_ += r_len;
        for (uint64_t p = 0; p < r_len; p += gran_) {
          uint64_t p_len = std::min(gran_, r_len - p);
          bool zero = IsAllZero(buf + p, p_len);
          add_piece(r_off + p, p_len, zero ? PieceKind::kZero : PieceKind::kData);
        }
      } else {
        PieceKind k = (kind[g] & 4) ? PieceKind::kSkip : PieceKind::kZero;
        while (g < n_gran && !(kind[g] & 1) &&
               ((kind[g] & 4) ? PieceKind::kSkip : PieceKind::kZero) == k) {
          ++g;
        }
        uint64_t r_off = off + run_start * gran_;
        add_piece(r_off, std::min(off + g * gran_, off + len) - r_off, k);
      }
    }

    if (options_.hash) {
      bool all_zero = true;
      for (const auto& p : slot.pieces) {
        if (p.kind == PieceKind::kSkip) {
          return Status::InvalidArgument(
              "cannot hash a copy that leaves ranges untouched (dirty-bitmap source)");
        }
        if (p.kind == PieceKind::kData) all_zero = false;
      }
      if (all_zero) {
        slot.hash = zero_digests_.Of(len);  // a hole: no 4 MiB of zeros through the hash
      } else {
        ChunkHasher h(options_.chunk_hash);
        for (const auto& p : slot.pieces) {
          if (p.kind == PieceKind::kData) {
            h.Update({slot.buffer.get() + (p.offset - off), p.length});
          } else {
            h.UpdateZeros(p.length);
          }
        }
        slot.hash = h.Finish();
      }
    }
    if (!sink_.sequential()) FERRY_TRY(WritePieces(slot));
    return Status::Ok();
  }

  Status WritePieces(const Slot& slot) {
    for (const auto& p : slot.pieces) {
      switch (p.kind) {
        case PieceKind::kData:
          FERRY_TRY(sink_.Write(p.offset, {slot.buffer.get() + (p.offset - slot.offset), p.length}));
          written_bytes_ += p.length;
          break;
        case PieceKind::kZero:
          zero_bytes_ += p.length;
          if (!sink_.zero_initialized()) FERRY_TRY(sink_.WriteZeroes(p.offset, p.length));
          break;
        case PieceKind::kSkip:
          skipped_bytes_ += p.length;
          break;
      }
    }
    return Status::Ok();
  }

  // Runs on the calling thread: commits chunks in order and takes checkpoints.
  Status CommitterLoop() {
    std::unique_lock<std::mutex> l(mu_);
    while (committed_ < n_chunks_) {
      if (pause_ && committed_ == next_dispatch_ && in_flight_ == 0) {
        l.unlock();
        Status s = TakeCheckpoint();
        l.lock();
        if (!s.ok()) return s;
        pause_ = false;
        cv_.notify_all();
        continue;
      }
      Slot& slot = slots_[committed_ % static_cast<uint64_t>(window_)];
      cv_.wait(l, [&] {
        return stop_ || slot.ready || (pause_ && committed_ == next_dispatch_ && in_flight_ == 0);
      });
      if (stop_) return error_;
      if (!slot.ready) continue;  // woke for a checkpoint
      l.unlock();
      Status s = CommitChunk(slot);
      l.lock();
      if (!s.ok()) return s.WithContext("chunk at " + Hex(slot.offset));
      slot.ready = false;
      ++committed_;
      cv_.notify_all();
      if (options_.on_progress) {
        l.unlock();
        options_.on_progress(Snapshot());
        l.lock();
      }
      if (options_.journal != nullptr && committed_ < n_chunks_ && CheckpointDue()) pause_ = true;
    }
    return Status::Ok();
  }

  Status CommitChunk(Slot& slot) {
    if (options_.hash) {
      if (options_.hash_whole_disk) {
        for (const auto& p : slot.pieces) {
          if (p.kind == PieceKind::kData) {
            disk_hash_.Update({slot.buffer.get() + (p.offset - slot.offset), p.length});
          } else {
            disk_hash_.UpdateZeros(p.length);
          }
        }
      }
      chunk_hashes_.push_back(slot.hash);
    }
    if (sink_.sequential()) FERRY_TRY(WritePieces(slot));
    return Status::Ok();
  }

  // Due after checkpoint_bytes of data read (the re-copy a crash would cost) or
  // checkpoint_seconds, whichever comes first.
  bool CheckpointDue() {
    if (read_bytes_.load() - last_checkpoint_bytes_ >= options_.checkpoint_bytes) return true;
    double since = NanosToSeconds(options_.clock->NowNanos() - last_checkpoint_ns_);
    return since >= options_.checkpoint_seconds;
  }

  // REQUIRES: no chunk in flight, every dispatched chunk committed.
  Status TakeCheckpoint() {
    FERRY_ASSIGN_OR_RETURN(std::vector<uint8_t> state, sink_.Checkpoint());
    CheckpointRecord rec;
    rec.frontier = std::min(committed_ * chunk_, size_);
    rec.sink_state = std::move(state);
    if (options_.hash) {
      if (options_.hash_whole_disk) rec.hash_state = disk_hash_.SaveState();
      size_t already = options_.journal->chunk_hashes().size();
      rec.chunk_hashes.assign(chunk_hashes_.begin() + static_cast<ptrdiff_t>(already),
                              chunk_hashes_.end());
    }
    FERRY_TRY(options_.journal->Append(std::move(rec)));
    last_checkpoint_bytes_ = read_bytes_.load();
    last_checkpoint_ns_ = options_.clock->NowNanos();
    ++checkpoints_;
    return Status::Ok();
  }

  CopyProgress Snapshot() const {
    CopyProgress p;
    p.virtual_size = size_;
    p.done_bytes = std::min(committed_ * chunk_, size_);
    p.start_bytes = start_bytes_;
    p.read_bytes = read_bytes_.load();
    p.written_bytes = written_bytes_.load();
    p.zero_bytes = zero_bytes_.load();
    p.skipped_bytes = skipped_bytes_.load();
    p.elapsed_seconds = NanosToSeconds(options_.clock->NowNanos() - start_ns_);
    p.checkpoints = checkpoints_;
    return p;
  }

  BlockSource& source_;
  BlockSink& sink_;
  const CopyOptions& options_;
  RateLimiter limiter_;

  uint64_t size_ = 0, gran_ = 0, chunk_ = 0, n_chunks_ = 0;
  int workers_ = 1, window_ = 1;
  std::vector<Slot> slots_;
  ZeroDigests zero_digests_{options_.chunk_hash};

  std::mutex mu_;
  std::condition_variable cv_;
  uint64_t next_dispatch_ = 0;  // GUARDED_BY(mu_)
  uint64_t committed_ = 0;      // GUARDED_BY(mu_)
  int in_flight_ = 0;           // GUARDED_BY(mu_)
  bool pause_ = false;          // GUARDED_BY(mu_)
  bool stop_ = false;           // GUARDED_BY(mu_)
  Status error_;                // GUARDED_BY(mu_)

  // Committer thread only.
  Sha256 disk_hash_;
  std::vector<ChunkDigest> chunk_hashes_;
  uint64_t start_bytes_ = 0, last_checkpoint_bytes_ = 0, checkpoints_ = 0;
  int64_t start_ns_ = 0, last_checkpoint_ns_ = 0;

  std::atomic<uint64_t> read_bytes_{0}, written_bytes_{0}, zero_bytes_{0}, skipped_bytes_{0};
};

bool AllZeroExtents(const std::vector<Extent>& extents) {
  return std::all_of(extents.begin(), extents.end(), [](const Extent& e) {
    return e.kind == ExtentKind::kZero || e.kind == ExtentKind::kHole;
  });
}

}  // namespace

Result<CopyResult> CopyDisk(BlockSource& source, BlockSink& sink, const CopyOptions& options) {
  CopyRun run(source, sink, options);
  return run.Run();
}

Result<CompareResult> CompareDisks(BlockSource& a, BlockSource& b, int workers, bool strict_size) {
  constexpr uint64_t kChunk = 4ull << 20;
  CompareResult result;
  const uint64_t common = std::min(a.size(), b.size());
  if (a.size() != b.size()) {
    result.size_differs = true;
    if (strict_size) {
      result.identical = false;
      result.first_difference = common;
      return result;
    }
  }
  BlockSource& longer = a.size() > b.size() ? a : b;
  const uint64_t n_chunks = DivRoundUp(std::max(a.size(), b.size()), kChunk);
  std::mutex mu;
  uint64_t next = 0;
  uint64_t first_diff = UINT64_MAX;
  Status error;
  auto worker = [&] {
    std::vector<uint8_t> ba(kChunk), bb(kChunk);
    std::vector<Extent> ea, eb;
    for (;;) {
      uint64_t index;
      {
        std::lock_guard<std::mutex> l(mu);
        if (!error.ok() || next >= n_chunks || next * kChunk >= first_diff) return;
        index = next++;
      }
      const uint64_t off = index * kChunk;
      Status s;
      uint64_t diff = UINT64_MAX;
      if (off >= common) {
        // Tail of the longer disk must read as zeros.
        uint64_t len = std::min(kChunk, longer.size() - off);
        ea.clear();
        s = longer.Extents(off, len, &ea);
        if (s.ok() && !AllZeroExtents(ea)) {
          s = longer.Read(off, {ba.data(), len});
          if (s.ok()) {
            for (uint64_t i = 0; i < len; ++i) {
              if (ba[i] != 0) {
                diff = off + i;
                break;
              }
            }
          }
        }
      } else {
        uint64_t len = std::min(kChunk, common - off);
        ea.clear();
        eb.clear();
        s = a.Extents(off, len, &ea);
        if (s.ok()) s = b.Extents(off, len, &eb);
        if (s.ok() && !(AllZeroExtents(ea) && AllZeroExtents(eb))) {
          s = a.Read(off, {ba.data(), len});
          if (s.ok()) s = b.Read(off, {bb.data(), len});
          if (s.ok() && std::memcmp(ba.data(), bb.data(), len) != 0) {
            for (uint64_t i = 0; i < len; ++i) {
              if (ba[i] != bb[i]) {
                diff = off + i;
                break;
              }
            }
          }
        }
      }
      std::lock_guard<std::mutex> l(mu);
      if (!s.ok() && error.ok()) error = s.WithContext("compare at " + Hex(off));
      first_diff = std::min(first_diff, diff);
    }
  };
  std::vector<std::thread> threads;
  for (int i = 0; i < std::max(1, workers); ++i) threads.emplace_back(worker);
  for (auto& t : threads) t.join();
  if (!error.ok()) return error;
  if (first_diff != UINT64_MAX) {
    result.identical = false;
    result.first_difference = first_diff;
  }
  return result;
}

}  // namespace ferry
