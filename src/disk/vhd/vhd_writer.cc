// The VHD writer: fixed and dynamic disks (CreateVhd, ResumeVhd).
//
// Layouts, the creator fields and the checkpoint blob are described in docs/formats/vhd.md.
// Ownership: a sink owns its file. Thread-safety: Write/WriteZeroes may run concurrently for
// distinct ranges; a dynamic sink allocates blocks under a short mutex and writes data
// outside it. Checkpoint/Finalize run with no write in progress (BlockSink contract).
#include <chrono>
#include <mutex>
#include <random>

#include "common/bytes.h"
#include "common/checksum.h"
#include "disk/vhd/vhd.h"
#include "disk/vhd/vhd_format.h"

namespace ferry {
namespace {

using vhd::DiskType;
using vhd::Footer;
using vhd::kFooterSize;
using vhd::kSectorSize;

constexpr uint32_t kDefaultBlockSize = 2u << 20;  // what Hyper-V and QEMU use
constexpr uint32_t kMinBlockSize = 512u << 10;
constexpr uint32_t kMaxBlockSize = 256u << 20;
constexpr uint32_t kFixedGranularity = 64u << 10;
// Azure accepts only fixed VHDs whose virtual size is a whole number of MiB.
constexpr uint64_t kFixedSizeAlign = 1u << 20;
// Dynamic layout: footer copy at 0, header at 512, BAT at 1536, blocks from a 4 KiB boundary.
constexpr uint64_t kHeaderOffset = 512;
constexpr uint64_t kBatOffset = kHeaderOffset + vhd::kDynamicHeaderSize;
constexpr uint64_t kDataAlign = 4096;
// QEMU (7.2) trusts the footer's current size only for some creators ("win ", "qem2",
// "d2v ", "CTXS", "tap\0") and otherwise truncates to the CHS geometry: "win " makes QEMU,
// Hyper-V, Azure, VirtualBox and libvhdi agree on our exact size.
constexpr std::array<char, 4> kCreatorApp = {'w', 'i', 'n', ' '};
constexpr uint32_t kCreatorVersion = 0x000A0000;
constexpr std::array<char, 4> kCreatorOs = {'W', 'i', '2', 'k'};

// Checkpoint blob (docs/formats/vhd.md "Checkpoint blob"), little-endian.
constexpr uint32_t kBlobMagic = 0x44485646;  // "FVHD"
constexpr uint16_t kBlobVersion = 1;
constexpr size_t kBlobCrcAt = 48;
constexpr size_t kBlobSize = 52;
enum class BlobKind : uint8_t { kFixed = 1, kDynamic = 2 };

struct Identity {
  uint32_t timestamp = 0;
  vhd::Uuid unique_id{};
};

Identity NewIdentity() {
  Identity id;
  const auto now = std::chrono::duration_cast<std::chrono::seconds>(
                       std::chrono::system_clock::now().time_since_epoch())
                       .count();
  id.timestamp = now > static_cast<int64_t>(vhd::kVhdEpoch)
                     ? static_cast<uint32_t>(now - static_cast<int64_t>(vhd::kVhdEpoch))
                     : 0;
  std::random_device rd;
  for (size_t i = 0; i < id.unique_id.size(); i += 4) {
    uint32_t r = rd();
    std::memcpy(id.unique_id.data() + i, &r, 4);
  }
  id.unique_id[6] = static_cast<uint8_t>((id.unique_id[6] & 0x0F) | 0x40);  // RFC 4122 v4
  id.unique_id[8] = static_cast<uint8_t>((id.unique_id[8] & 0x3F) | 0x80);
  return id;
}

std::array<uint8_t, kFooterSize> MakeFooter(DiskType type, uint64_t size, const Identity& id) {
  Footer f;
  f.data_offset = type == DiskType::kFixed ? vhd::kNoDataOffset : kHeaderOffset;
  f.timestamp = id.timestamp;
  f.creator_app = kCreatorApp;
  f.creator_version = kCreatorVersion;
  f.creator_os = kCreatorOs;
  f.original_size = size;
  f.current_size = size;
  const vhd::Geometry g = vhd::ComputeGeometry(size / kSectorSize);
  f.cylinders = g.cylinders;
  f.heads = g.heads;
  f.sectors_per_track = g.sectors_per_track;
  f.disk_type = static_cast<uint32_t>(type);
  f.unique_id = id.unique_id;
  return vhd::SerializeFooter(f);
}

// What CreateOptions ask for, checked.
struct Plan {
  DiskType type = DiskType::kDynamic;
  uint64_t size = 0;
  uint32_t block_size = 0;  // dynamic only
};

Result<Plan> MakePlan(const std::string& path, const CreateOptions& options) {
  Plan plan;
  if (options.subformat.empty() || options.subformat == "dynamic") {
    plan.type = DiskType::kDynamic;
  } else if (options.subformat == "fixed") {
    plan.type = DiskType::kFixed;
  } else {
    return Status::InvalidArgument(path + ": unknown vhd subformat '" + options.subformat +
                                   "' (known: dynamic, fixed)");
  }
  plan.size = plan.type == DiskType::kFixed ? RoundUp(options.size, kFixedSizeAlign)
                                            : RoundUp(options.size, kSectorSize);
  if (plan.size < options.size || plan.size / kSectorSize > vhd::kMaxDiskSectors) {
    return Status::TooLarge(path + ": " + std::to_string(options.size) +
                            " bytes is over the VHD maximum of " +
                            std::to_string(vhd::kMaxDiskSectors * kSectorSize) + " bytes");
  }
  if (plan.type == DiskType::kDynamic) {
    plan.block_size = options.cluster_size == 0 ? kDefaultBlockSize : options.cluster_size;
    if (!IsPowerOfTwo(plan.block_size) || plan.block_size < kMinBlockSize ||
        plan.block_size > kMaxBlockSize) {
      return Status::InvalidArgument(path + ": vhd block size " + std::to_string(plan.block_size) +
                                     " must be a power of two from 512 KiB to 256 MiB");
    }
  }
  return plan;
}

std::vector<uint8_t> MakeBlob(BlobKind kind, const Plan& plan, const Identity& id,
                              uint64_t file_end) {
  std::vector<uint8_t> b(kBlobSize, 0);
  StoreLE32(b.data(), kBlobMagic);
  StoreLE16(b.data() + 4, kBlobVersion);
  b[6] = static_cast<uint8_t>(kind);
  StoreLE64(b.data() + 8, plan.size);
  StoreLE32(b.data() + 16, plan.block_size);
  StoreLE32(b.data() + 20, id.timestamp);
  std::memcpy(b.data() + 24, id.unique_id.data(), 16);
  StoreLE64(b.data() + 40, file_end);
  StoreLE32(b.data() + kBlobCrcAt, Crc32(std::span<const uint8_t>(b.data(), kBlobCrcAt)));
  return b;
}

struct Blob {
  BlobKind kind;
  uint64_t size;
  uint32_t block_size;
  Identity id;
  uint64_t file_end;
};

Result<Blob> ParseBlob(const std::string& path, std::span<const uint8_t> b) {
  if (b.size() != kBlobSize || LoadLE32(b.data()) != kBlobMagic) {
    return Status::Corrupt(path + ": not a VHD checkpoint state (" + std::to_string(b.size()) +
                           " bytes)");
  }
  if (LoadLE16(b.data() + 4) != kBlobVersion) {
    return Status::Unsupported(path + ": VHD checkpoint state version " +
                               std::to_string(LoadLE16(b.data() + 4)));
  }
  if (Crc32(b.first(kBlobCrcAt)) != LoadLE32(b.data() + kBlobCrcAt)) {
    return Status::Corrupt(path + ": VHD checkpoint state has a bad CRC");
  }
  Blob blob;
  blob.kind = static_cast<BlobKind>(b[6]);
  if (blob.kind != BlobKind::kFixed && blob.kind != BlobKind::kDynamic) {
    return Status::Corrupt(path + ": VHD checkpoint state has unknown kind " +
                           std::to_string(b[6]));
  }
  blob.size = LoadLE64(b.data() + 8);
  blob.block_size = LoadLE32(b.data() + 16);
  blob.id.timestamp = LoadLE32(b.data() + 20);
  std::memcpy(blob.id.unique_id.data(), b.data() + 24, 16);
  blob.file_end = LoadLE64(b.data() + 40);
  return blob;
}

// ---------------------------------------------------------------------------------------------

class FixedVhdSink final : public BlockSink {
 public:
  FixedVhdSink(std::unique_ptr<File> file, Plan plan, Identity id, bool zero_initialized)
      : file_(std::move(file)),
        write_behind_(file_.get()),
        plan_(plan),
        id_(id),
        zero_initialized_(zero_initialized) {}

  uint64_t size() const override { return plan_.size; }
  uint32_t granularity() const override { return kFixedGranularity; }
  bool zero_initialized() const override { return zero_initialized_; }

  Status Write(uint64_t offset, std::span<const uint8_t> data) override {
    FERRY_TRY(CheckRange(offset, data.size()));
    FERRY_TRY(file_->WriteAt(offset, data));
    write_behind_.Wrote(offset, data.size());
    return Status::Ok();
  }
  Status WriteZeroes(uint64_t offset, uint64_t length) override {
    FERRY_TRY(CheckRange(offset, length));
    return file_->PunchHole(offset, length);
  }
  Result<std::vector<uint8_t>> Checkpoint() override {
    FERRY_TRY(file_->Sync());
    return MakeBlob(BlobKind::kFixed, plan_, id_, plan_.size);
  }
  Status Finalize() override {
    // The footer is written last, so an unfinished fixed VHD has none.
    const auto footer = MakeFooter(DiskType::kFixed, plan_.size, id_);
    FERRY_TRY(file_->WriteAt(plan_.size, footer));
    FERRY_TRY(file_->Truncate(plan_.size + kFooterSize));
    return file_->Sync();
  }

 private:
  Status CheckRange(uint64_t offset, uint64_t length) const {
    uint64_t end;
    if (!CheckedAdd(offset, length, &end) || end > plan_.size) {
      return Status::InvalidArgument(file_->path() + ": write at " + Hex(offset) + " (" +
                                     std::to_string(length) + " bytes) past the disk size " +
                                     std::to_string(plan_.size));
    }
    return Status::Ok();
  }

  std::unique_ptr<File> file_;
  WriteBehind write_behind_;
  const Plan plan_;
  const Identity id_;
  const bool zero_initialized_;
};

// ---------------------------------------------------------------------------------------------

// Where blocks go in a dynamic VHD written by Ferry. Each block takes a slot: padding, the
// sector bitmap, then the block's data starting on a 4 KiB boundary.
struct DynamicLayout {
  uint64_t blocks = 0;
  uint32_t bitmap_size = 0;
  uint64_t bat_bytes = 0;   // BAT padded to a sector
  uint64_t first_slot = 0;  // 4 KiB aligned
  uint64_t slot_size = 0;
  uint64_t bitmap_in_slot = 0;

  static DynamicLayout For(const Plan& plan) {
    DynamicLayout l;
    l.blocks = DivRoundUp(plan.size, plan.block_size);
    l.bitmap_size =
        static_cast<uint32_t>(RoundUp(DivRoundUp(plan.block_size / kSectorSize, 8), kSectorSize));
    l.bat_bytes = RoundUp(l.blocks * 4, kSectorSize);
    l.first_slot = RoundUp(kBatOffset + l.bat_bytes, kDataAlign);
    l.slot_size = RoundUp(l.bitmap_size, kDataAlign) + plan.block_size;
    l.bitmap_in_slot = RoundUp(l.bitmap_size, kDataAlign) - l.bitmap_size;
    // BAT entries are 32-bit sector numbers: drop the alignment if it would not fit.
    if (l.first_slot + l.blocks * l.slot_size > uint64_t(vhd::kUnallocated) * kSectorSize) {
      l.slot_size = l.bitmap_size + uint64_t(plan.block_size);
      l.bitmap_in_slot = 0;
    }
    return l;
  }
};

class DynamicVhdSink final : public BlockSink {
 public:
  DynamicVhdSink(std::unique_ptr<File> file, Plan plan, Identity id, std::vector<uint32_t> bat,
                 uint64_t next_free, bool zero_initialized)
      : file_(std::move(file)),
        write_behind_(file_.get()),
        plan_(plan),
        layout_(DynamicLayout::For(plan)),
        id_(id),
        zero_initialized_(zero_initialized),
        full_bitmap_(layout_.bitmap_size, 0xFF),
        bat_(std::move(bat)),
        next_free_(next_free) {}

  uint64_t size() const override { return plan_.size; }
  uint32_t granularity() const override { return plan_.block_size; }
  bool zero_initialized() const override { return zero_initialized_; }

  Status Write(uint64_t offset, std::span<const uint8_t> data) override {
    FERRY_TRY(CheckRange(offset, data.size()));
    const uint64_t bs = plan_.block_size;
    uint64_t pos = offset;
    const uint64_t end = offset + data.size();
    while (pos < end) {
      const uint64_t block = pos / bs;
      const uint64_t block_start = block * bs;
      const uint64_t stop = std::min(end, block_start + bs);
      std::span<const uint8_t> piece = data.subspan(pos - offset, stop - pos);
      const bool zero = IsAllZero(piece.data(), piece.size());
      uint64_t bitmap_offset = 0;
      bool fresh = false;
      {
        std::lock_guard<std::mutex> lock(mu_);
        uint32_t entry = bat_[block];
        if (entry == vhd::kUnallocated) {
          if (zero) {  // zero ranges stay unallocated
            pos = stop;
            continue;
          }
          entry = static_cast<uint32_t>((next_free_ + layout_.bitmap_in_slot) / kSectorSize);
          next_free_ += layout_.slot_size;
          bat_[block] = entry;
          fresh = true;
        }
        bitmap_offset = uint64_t(entry) * kSectorSize;
      }
      if (fresh) FERRY_TRY(file_->WriteAt(bitmap_offset, full_bitmap_));
      const uint64_t data_offset = bitmap_offset + layout_.bitmap_size + (pos - block_start);
      FERRY_TRY(file_->WriteAt(data_offset, piece));
      write_behind_.Wrote(data_offset, piece.size());
      pos = stop;
    }
    return Status::Ok();
  }

  Status WriteZeroes(uint64_t offset, uint64_t length) override {
    FERRY_TRY(CheckRange(offset, length));
    const uint64_t bs = plan_.block_size;
    uint64_t pos = offset;
    const uint64_t end = offset + length;
    while (pos < end) {
      const uint64_t block = pos / bs;
      const uint64_t block_start = block * bs;
      const uint64_t stop = std::min(end, block_start + bs);
      uint32_t entry;
      {
        std::lock_guard<std::mutex> lock(mu_);
        entry = bat_[block];
      }
      // An unallocated block reads as zeros already; an allocated one keeps its slot (its
      // bitmap says "present") and gets its data deallocated.
      if (entry != vhd::kUnallocated) {
        const uint64_t data = uint64_t(entry) * kSectorSize + layout_.bitmap_size;
        FERRY_TRY(file_->PunchHole(data + (pos - block_start), stop - pos));
      }
      pos = stop;
    }
    return Status::Ok();
  }

  Result<std::vector<uint8_t>> Checkpoint() override {
    FERRY_TRY(file_->Sync());  // data before the BAT that points at it
    uint64_t next_free;
    FERRY_TRY(WriteBat(&next_free));
    FERRY_TRY(file_->Sync());
    return MakeBlob(BlobKind::kDynamic, plan_, id_, next_free);
  }

  Status Finalize() override {
    FERRY_TRY(file_->Sync());
    uint64_t next_free;
    FERRY_TRY(WriteBat(&next_free));
    const auto footer = MakeFooter(DiskType::kDynamic, plan_.size, id_);
    FERRY_TRY(file_->WriteAt(next_free, footer));
    FERRY_TRY(file_->Truncate(next_free + kFooterSize));
    FERRY_TRY(file_->Sync());
    // The copy at offset 0 goes last: readers (QEMU) look there first, so until now the file
    // is not a valid VHD.
    FERRY_TRY(file_->WriteAt(0, footer));
    return file_->Sync();
  }

 private:
  Status CheckRange(uint64_t offset, uint64_t length) const {
    uint64_t end;
    if (!CheckedAdd(offset, length, &end) || end > plan_.size) {
      return Status::InvalidArgument(file_->path() + ": write at " + Hex(offset) + " (" +
                                     std::to_string(length) + " bytes) past the disk size " +
                                     std::to_string(plan_.size));
    }
    return Status::Ok();
  }

  Status WriteBat(uint64_t* next_free) {
    std::vector<uint8_t> raw(layout_.bat_bytes, 0xFF);
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (uint64_t i = 0; i < bat_.size(); ++i) StoreBE32(raw.data() + 4 * i, bat_[i]);
      *next_free = next_free_;
    }
    return file_->WriteAt(kBatOffset, raw);
  }

  std::unique_ptr<File> file_;
  WriteBehind write_behind_;
  const Plan plan_;
  const DynamicLayout layout_;
  const Identity id_;
  const bool zero_initialized_;
  const std::vector<uint8_t> full_bitmap_;

  std::mutex mu_;
  std::vector<uint32_t> bat_;  // GUARDED_BY(mu_)
  uint64_t next_free_;         // GUARDED_BY(mu_): where the next slot (or the footer) goes
};

std::array<uint8_t, vhd::kDynamicHeaderSize> MakeDynamicHeader(const Plan& plan,
                                                               const DynamicLayout& layout) {
  vhd::DynamicHeader h;
  h.table_offset = kBatOffset;
  h.max_table_entries = static_cast<uint32_t>(layout.blocks);
  h.block_size = plan.block_size;
  return vhd::SerializeDynamicHeader(h);
}

}  // namespace

Result<std::unique_ptr<BlockSink>> CreateVhd(const std::string& path,
                                             const CreateOptions& options) {
  FERRY_ASSIGN_OR_RETURN(const Plan plan, MakePlan(path, options));
  FERRY_ASSIGN_OR_RETURN(auto file, options.env->Open(path, OpenMode::kCreateTruncate));
  const Identity id = NewIdentity();
  if (plan.type == DiskType::kFixed) {
    FERRY_TRY(file->Truncate(plan.size));
    return std::unique_ptr<BlockSink>(
        std::make_unique<FixedVhdSink>(std::move(file), plan, id, /*zero_initialized=*/true));
  }
  const DynamicLayout layout = DynamicLayout::For(plan);
  FERRY_TRY(file->WriteAt(kHeaderOffset, MakeDynamicHeader(plan, layout)));
  FERRY_TRY(file->WriteAt(kBatOffset, std::vector<uint8_t>(layout.bat_bytes, 0xFF)));
  FERRY_TRY(file->Truncate(layout.first_slot));
  std::vector<uint32_t> bat(layout.blocks, vhd::kUnallocated);
  return std::unique_ptr<BlockSink>(std::make_unique<DynamicVhdSink>(
      std::move(file), plan, id, std::move(bat), layout.first_slot, /*zero_initialized=*/true));
}

Result<std::unique_ptr<BlockSink>> ResumeVhd(const std::string& path, const CreateOptions& options,
                                             std::span<const uint8_t> state) {
  FERRY_ASSIGN_OR_RETURN(const Plan plan, MakePlan(path, options));
  FERRY_ASSIGN_OR_RETURN(const Blob blob, ParseBlob(path, state));
  const BlobKind want = plan.type == DiskType::kFixed ? BlobKind::kFixed : BlobKind::kDynamic;
  if (blob.kind != want || blob.size != plan.size || blob.block_size != plan.block_size) {
    return Status::Mismatch(path + ": the checkpoint was taken for a different VHD (" +
                            std::string(blob.kind == BlobKind::kFixed ? "fixed" : "dynamic") +
                            ", " + std::to_string(blob.size) + " bytes, block size " +
                            std::to_string(blob.block_size) + ") than the options ask for");
  }
  FERRY_ASSIGN_OR_RETURN(auto file, options.env->Open(path, OpenMode::kReadWrite));
  if (plan.type == DiskType::kFixed) {
    // Drops a footer an interrupted Finalize may have written.
    FERRY_TRY(file->Truncate(plan.size));
    return std::unique_ptr<BlockSink>(
        std::make_unique<FixedVhdSink>(std::move(file), plan, blob.id, /*zero_initialized=*/false));
  }
  const DynamicLayout layout = DynamicLayout::For(plan);
  if (blob.file_end < layout.first_slot || (blob.file_end - layout.first_slot) % layout.slot_size) {
    return Status::Corrupt(path + ": VHD checkpoint state has file end " + Hex(blob.file_end) +
                           ", not on a block slot boundary");
  }
  std::array<uint8_t, vhd::kDynamicHeaderSize> header;
  FERRY_TRY(file->ReadAt(kHeaderOffset, header));
  if (header != MakeDynamicHeader(plan, layout)) {
    return Status::Mismatch(path + ": the dynamic disk header at " + Hex(kHeaderOffset) +
                            " is not the one Ferry wrote for this checkpoint");
  }
  std::vector<uint8_t> raw(layout.blocks * 4);
  FERRY_TRY(file->ReadAt(kBatOffset, raw));
  std::vector<uint32_t> bat(layout.blocks);
  for (uint64_t i = 0; i < layout.blocks; ++i) {
    uint32_t entry = LoadBE32(raw.data() + 4 * i);
    // Blocks allocated after the checkpoint (a later, unrecorded BAT write) are dropped.
    const uint64_t slot = uint64_t(entry) * kSectorSize - layout.bitmap_in_slot;
    if (entry != vhd::kUnallocated &&
        (uint64_t(entry) * kSectorSize < layout.first_slot + layout.bitmap_in_slot ||
         slot + layout.slot_size > blob.file_end ||
         (slot - layout.first_slot) % layout.slot_size)) {
      entry = vhd::kUnallocated;
    }
    bat[i] = entry;
  }
  FERRY_TRY(file->Truncate(blob.file_end));
  // An interrupted Finalize may have written the footer copy at 0: unfinished again.
  FERRY_TRY(file->WriteAt(0, std::vector<uint8_t>(kFooterSize, 0)));
  return std::unique_ptr<BlockSink>(std::make_unique<DynamicVhdSink>(std::move(file), plan, blob.id,
                                                                     std::move(bat), blob.file_end,
                                                                     /*zero_initialized=*/false));
}

}  // namespace ferry
