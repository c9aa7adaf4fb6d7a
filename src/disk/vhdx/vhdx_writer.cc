// The VHDX writer: a dynamic VHDX (512-byte logical sectors, no parent, empty log) whose
// payload blocks are appended in the order they are first written. Layout and checkpoint blob
// are documented in docs/formats/vhdx.md.
//
// The two headers are written only by Finalize(): until then the file has the file
// identifier, region tables, metadata and (after a checkpoint) a BAT, but no valid header, so
// no VHDX reader (Ferry's, qemu's, Hyper-V's) accepts an unfinished image.
//
// Thread-safety: Write/WriteZeroes may run concurrently on distinct ranges; the BAT and the
// end-of-file cursor are guarded by mu_, data is written outside the lock.
#include <algorithm>
#include <cstring>
#include <mutex>

#include "common/bytes.h"
#include "common/checksum.h"
#include "disk/vhdx/vhdx.h"
#include "disk/vhdx/vhdx_format.h"

namespace ferry {
namespace {

constexpr uint32_t kWriteUnit = 1u << 20;  // see VhdxSink::granularity()

using namespace vhdx;  // NOLINT(google-build-using-namespace): the format's own constants

// Hyper-V's default block size for dynamic VHDX (New-VHD). Zero blocks are never allocated
// and all-zero 64 KiB runs inside new blocks are left as host-file holes, so the large block
// costs little space on the host; see docs/formats/vhdx.md.
constexpr uint32_t kDefaultBlockSize = 32 * kMiB;
constexpr uint32_t kLogicalSector = 512;
constexpr uint32_t kPhysicalSector = 4096;  // Hyper-V's default for new VHDX files
// Writer layout: log at 1 MiB (1 MiB, empty), metadata at 2 MiB (1 MiB), BAT at 3 MiB.
constexpr uint64_t kLogOffset = 1 * kMiB;
constexpr uint32_t kLogLength = 1 * kMiB;
constexpr uint64_t kMetadataOffset = 2 * kMiB;
constexpr uint32_t kMetadataLength = 1 * kMiB;
constexpr uint64_t kBatOffset = 3 * kMiB;
constexpr uint64_t kZeroSkipUnit = 64 * kKiB;

// Checkpoint blob v1 (32 bytes, little-endian): magic "FVXC", version, file_end,
// virtual_size, block_size, CRC-32C of bytes [0, 28).
constexpr uint32_t kBlobMagic = 0x43585646;  // "FVXC"
constexpr uint32_t kBlobVersion = 1;
constexpr size_t kBlobSize = 32;

struct Layout {
  uint64_t virtual_size = 0;
  uint32_t block_size = 0;
  uint64_t chunk_ratio = 0;
  uint64_t bat_entries = 0;
  uint64_t bat_length = 0;     // region length, 1 MiB multiple
  uint64_t first_payload = 0;  // end of the BAT region
};

Result<Layout> MakeLayout(const std::string& path, uint64_t size, uint32_t block_size) {
  if (size == 0 || size % kLogicalSector != 0 || size > kMaxVirtualSize) {
    return Status::InvalidArgument(path + ": VHDX virtual size " + std::to_string(size) +
                                   " must be a non-zero multiple of 512 up to 64 TiB");
  }
  if (block_size == 0) block_size = kDefaultBlockSize;
  if (!IsPowerOfTwo(block_size) || block_size < kMinBlockSize || block_size > kMaxBlockSize) {
    return Status::InvalidArgument(path + ": VHDX block size " + std::to_string(block_size) +
                                   " must be a power of two between 1 MiB and 256 MiB");
  }
  Layout l;
  l.virtual_size = size;
  l.block_size = block_size;
  l.chunk_ratio = ChunkRatio(kLogicalSector, block_size);
  l.bat_entries = BatEntryCount(size, block_size, kLogicalSector, false);
  l.bat_length = RoundUp(l.bat_entries * 8, kObjectAlignment);
  l.first_payload = kBatOffset + l.bat_length;
  return l;
}

std::vector<uint8_t> RegionTableFor(const Layout& l) {
  return EncodeRegionTable(
      {{BatRegionGuid(), kBatOffset, static_cast<uint32_t>(l.bat_length), true},
       {MetadataRegionGuid(), kMetadataOffset, kMetadataLength, true}});
}

std::vector<uint8_t> FileIdentifier() {
  std::vector<uint8_t> b(64 * kKiB, 0);
  std::memcpy(b.data(), kFileSignature.data(), kFileSignature.size());
  auto creator = Utf8ToUtf16Le("Ferry");
  std::memcpy(b.data() + 8, creator.data(), creator.size());
  return b;
}

class VhdxSink final : public BlockSink {
 public:
  VhdxSink(std::unique_ptr<File> file, Layout layout, std::vector<uint64_t> bat, uint64_t file_end,
           bool zero_initialized)
      : file_(std::move(file)),
        write_behind_(file_.get()),
        l_(layout),
        bat_(std::move(bat)),
        file_end_(file_end),
        fresh_from_(file_end),
        zero_initialized_(zero_initialized) {}

  uint64_t size() const override { return l_.virtual_size; }
  // Writes may cover part of a block: the first write to a block allocates all of it, and the
  // parts never written stay holes in the host file, reading as zeros. So the engine can copy
  // in 1 MiB units whatever the block size (32 MiB blocks would otherwise make 32 MiB chunks).
  uint32_t granularity() const override { return std::min<uint32_t>(l_.block_size, kWriteUnit); }
  bool zero_initialized() const override { return zero_initialized_; }

  Status Write(uint64_t offset, std::span<const uint8_t> data) override {
    FERRY_TRY(CheckRange(offset, data.size()));
    uint64_t pos = offset;
    while (pos < offset + data.size()) {
      uint64_t block = pos / l_.block_size;
      uint64_t within = pos % l_.block_size;
      uint64_t n = std::min<uint64_t>(l_.block_size - within, offset + data.size() - pos);
      std::span<const uint8_t> piece = data.subspan(pos - offset, n);
      uint64_t block_off;
      {
        std::lock_guard<std::mutex> lock(mu_);
        uint64_t& entry = bat_[BatIndexOfBlock(block, l_.chunk_ratio)];
        if (BatState(entry) != uint8_t(PayloadState::kFullyPresent)) {
          entry = MakeBatEntry(uint8_t(PayloadState::kFullyPresent), file_end_);
          file_end_ += l_.block_size;
        }
        block_off = BatOffset(entry);
      }
      FERRY_TRY(WriteBlockData(block_off + within, piece, block_off >= fresh_from_));
      pos += n;
    }
    return Status::Ok();
  }

  Status WriteZeroes(uint64_t offset, uint64_t length) override {
    FERRY_TRY(CheckRange(offset, length));
    uint64_t pos = offset;
    while (pos < offset + length) {
      uint64_t block = pos / l_.block_size;
      uint64_t within = pos % l_.block_size;
      uint64_t n = std::min<uint64_t>(l_.block_size - within, offset + length - pos);
      uint64_t entry;
      {
        std::lock_guard<std::mutex> lock(mu_);
        entry = bat_[BatIndexOfBlock(block, l_.chunk_ratio)];
      }
      // Unallocated blocks read as zeros already; allocated ones (only after a Resume) keep
      // their mapping and get the range deallocated in the host file.
      if (BatState(entry) == uint8_t(PayloadState::kFullyPresent)) {
        FERRY_TRY(file_->PunchHole(BatOffset(entry) + within, n));
      }
      pos += n;
    }
    return Status::Ok();
  }

  Result<std::vector<uint8_t>> Checkpoint() override {
    FERRY_TRY(file_->Sync());
    uint64_t file_end;
    FERRY_TRY(WriteBat(&file_end));
    // Zero runs at the end of the last block are skipped, not written: extend the file to
    // the end the blob records so Resume finds every block it names.
    FERRY_ASSIGN_OR_RETURN(uint64_t size, file_->Size());
    if (size < file_end) FERRY_TRY(file_->Truncate(file_end));
    FERRY_TRY(file_->Sync());
    std::vector<uint8_t> blob(kBlobSize, 0);
    StoreLE32(blob.data(), kBlobMagic);
    StoreLE32(blob.data() + 4, kBlobVersion);
    StoreLE64(blob.data() + 8, file_end);
    StoreLE64(blob.data() + 16, l_.virtual_size);
    StoreLE32(blob.data() + 24, l_.block_size);
    StoreLE32(blob.data() + 28, Crc32c(std::span<const uint8_t>(blob).first(28)));
    return blob;
  }

  Status Finalize() override {
    FERRY_TRY(file_->Sync());
    uint64_t file_end;
    FERRY_TRY(WriteBat(&file_end));
    FERRY_TRY(file_->Truncate(file_end));
    FERRY_TRY(file_->Sync());
    // [MS-VHDX] 2.2.2: both headers valid, the second current (higher sequence number).
    Header h;
    h.file_write_guid = Guid::Random();
    h.data_write_guid = Guid::Random();
    h.log_length = kLogLength;
    h.log_offset = kLogOffset;
    for (int i = 0; i < 2; ++i) {
      h.sequence_number = i + 1;
      FERRY_TRY(file_->WriteAt(i == 0 ? kHeader1Offset : kHeader2Offset, EncodeHeader(h)));
    }
    return file_->Sync();
  }

 private:
  Status CheckRange(uint64_t offset, uint64_t length) const {
    uint64_t end;
    if (!CheckedAdd(offset, length, &end) || end > l_.virtual_size) {
      return Status::InvalidArgument(file_->path() + ": write of " + std::to_string(length) +
                                     " bytes at " + Hex(offset) + " past the virtual size " +
                                     Hex(l_.virtual_size));
    }
    return Status::Ok();
  }

  // Writes into a block. Blocks allocated since Create/Resume lie past the old end of file
  // and read as zeros, so all-zero runs there are skipped (left as host-file holes).
  Status WriteBlockData(uint64_t file_offset, std::span<const uint8_t> data, bool fresh) {
    if (!fresh) {
      FERRY_TRY(file_->WriteAt(file_offset, data));
      write_behind_.Wrote(file_offset, data.size());
      return Status::Ok();
    }
    size_t i = 0;
    while (i < data.size()) {
      size_t n = std::min<size_t>(kZeroSkipUnit, data.size() - i);
      if (IsAllZero(data.data() + i, n)) {
        i += n;
        continue;
      }
      size_t j = i + n;
      while (j < data.size()) {
        size_t m = std::min<size_t>(kZeroSkipUnit, data.size() - j);
        if (IsAllZero(data.data() + j, m)) break;
        j += m;
      }
      FERRY_TRY(file_->WriteAt(file_offset + i, data.subspan(i, j - i)));
      write_behind_.Wrote(file_offset + i, j - i);
      i = j;
    }
    return Status::Ok();
  }

  Status WriteBat(uint64_t* file_end) {
    std::vector<uint8_t> bytes;
    {
      std::lock_guard<std::mutex> lock(mu_);
      bytes.resize(bat_.size() * 8);
      for (size_t i = 0; i < bat_.size(); ++i) StoreLE64(bytes.data() + 8 * i, bat_[i]);
      *file_end = file_end_;
    }
    return file_->WriteAt(kBatOffset, bytes);
  }

  std::unique_ptr<File> file_;
  WriteBehind write_behind_;
  const Layout l_;
  std::mutex mu_;
  std::vector<uint64_t> bat_;  // GUARDED_BY(mu_)
  uint64_t file_end_;          // GUARDED_BY(mu_): where the next block goes
  const uint64_t fresh_from_;  // blocks at or past this offset were allocated by this sink
  const bool zero_initialized_;
};

}  // namespace

Result<std::unique_ptr<BlockSink>> CreateVhdx(const std::string& path,
                                              const CreateOptions& options) {
  if (!options.subformat.empty() && options.subformat != "dynamic") {
    return Status::Unsupported(path + ": Ferry writes dynamic VHDX only (asked for '" +
                               options.subformat + "')");
  }
  FERRY_ASSIGN_OR_RETURN(Layout l, MakeLayout(path, options.size, options.cluster_size));
  FERRY_ASSIGN_OR_RETURN(auto file, options.env->Open(path, OpenMode::kCreateTruncate));
  FERRY_TRY(file->WriteAt(kFileIdentifierOffset, FileIdentifier()));
  auto rt = RegionTableFor(l);
  FERRY_TRY(file->WriteAt(kRegionTable1Offset, rt));
  FERRY_TRY(file->WriteAt(kRegionTable2Offset, rt));
  auto meta = EncodeMetadataRegion(StandardMetadata(l.block_size, 0, l.virtual_size, kLogicalSector,
                                                    kPhysicalSector, Guid::Random()),
                                   kMetadataLength);
  FERRY_TRY(file->WriteAt(kMetadataOffset, meta));
  FERRY_TRY(file->Truncate(l.first_payload));  // log and BAT regions read as zeros
  std::vector<uint64_t> bat(l.bat_entries, 0);
  return std::unique_ptr<BlockSink>(
      std::make_unique<VhdxSink>(std::move(file), l, std::move(bat), l.first_payload, true));
}

Result<std::unique_ptr<BlockSink>> ResumeVhdx(const std::string& path, const CreateOptions& options,
                                              std::span<const uint8_t> state) {
  if (state.size() != kBlobSize || LoadLE32(state.data()) != kBlobMagic ||
      LoadLE32(state.data() + 28) != Crc32c(state.first(28))) {
    return Status::Corrupt(path + ": VHDX checkpoint state is not a Ferry VHDX checkpoint");
  }
  if (LoadLE32(state.data() + 4) != kBlobVersion) {
    return Status::Unsupported(path + ": VHDX checkpoint version " +
                               std::to_string(LoadLE32(state.data() + 4)));
  }
  uint64_t file_end = LoadLE64(state.data() + 8);
  uint64_t virtual_size = LoadLE64(state.data() + 16);
  uint32_t block_size = LoadLE32(state.data() + 24);
  if (virtual_size != options.size ||
      (options.cluster_size != 0 && options.cluster_size != block_size)) {
    return Status::Mismatch(path + ": checkpoint is for a " + std::to_string(virtual_size) +
                            "-byte disk with " + std::to_string(block_size) +
                            "-byte blocks, not what the options ask for");
  }
  FERRY_ASSIGN_OR_RETURN(Layout l, MakeLayout(path, virtual_size, block_size));
  if (file_end < l.first_payload || (file_end - l.first_payload) % l.block_size != 0) {
    return Status::Corrupt(path + ": checkpoint end of file " + Hex(file_end) +
                           " is not on a block boundary after the BAT");
  }
  FERRY_ASSIGN_OR_RETURN(auto file, options.env->Open(path, OpenMode::kReadWrite));
  FERRY_ASSIGN_OR_RETURN(uint64_t size, file->Size());
  if (size < file_end) {
    return Status::Corrupt(path + ": file is " + Hex(size) + " bytes, shorter than the " +
                           Hex(file_end) + " recorded at the checkpoint");
  }
  std::vector<uint8_t> id(8);
  FERRY_TRY(file->ReadAt(kFileIdentifierOffset, id));
  std::vector<uint8_t> rt(kRegionTableSize);
  FERRY_TRY(file->ReadAt(kRegionTable1Offset, rt));
  if (std::memcmp(id.data(), kFileSignature.data(), 8) != 0 || rt != RegionTableFor(l)) {
    return Status::Mismatch(path + ": not the VHDX image this checkpoint was taken from");
  }
  std::vector<uint8_t> bat_bytes(l.bat_entries * 8);
  FERRY_TRY(file->ReadAt(kBatOffset, bat_bytes));
  std::vector<uint64_t> bat(l.bat_entries);
  std::vector<bool> used((file_end - l.first_payload) / l.block_size, false);
  for (uint64_t i = 0; i < l.bat_entries; ++i) {
    uint64_t e = LoadLE64(bat_bytes.data() + 8 * i);
    uint64_t off = BatOffset(e), end;
    // Mappings written by a later checkpoint than this one point past its end of file.
    if (BatState(e) != uint8_t(PayloadState::kFullyPresent) || off < l.first_payload ||
        !CheckedAdd(off, l.block_size, &end) || end > file_end) {
      continue;
    }
    uint64_t slot = (off - l.first_payload) / l.block_size;
    if ((off - l.first_payload) % l.block_size != 0 || used[slot]) {
      return Status::Corrupt(path + ": BAT entry " + std::to_string(i) + " maps block data at " +
                             Hex(off) + ", misaligned or shared with another block");
    }
    used[slot] = true;
    bat[i] = e;
  }
  FERRY_TRY(file->Truncate(file_end));
  // A previous Finalize may have written headers; the image is unfinished again until ours.
  std::vector<uint8_t> zeros(kHeaderSize, 0);
  FERRY_TRY(file->WriteAt(kHeader1Offset, zeros));
  FERRY_TRY(file->WriteAt(kHeader2Offset, zeros));
  FERRY_TRY(file->Sync());
  return std::unique_ptr<BlockSink>(
      std::make_unique<VhdxSink>(std::move(file), l, std::move(bat), file_end, false));
}

}  // namespace ferry
