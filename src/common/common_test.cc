#include <gtest/gtest.h>

#include <vector>

#include "common/bytes.h"
#include "common/checksum.h"
#include "common/status.h"
#include "common/units.h"

namespace ferry {
namespace {

TEST(StatusTest, ContextChainsFromOutsideIn) {
  Status s = Status::Corrupt("short read").WithContext("L2 table at 0x30000").WithContext("a.qcow2");
  EXPECT_EQ(s.code(), ErrorCode::kCorrupt);
  EXPECT_EQ(s.message(), "a.qcow2: L2 table at 0x30000: short read");
  EXPECT_EQ(s.ToString(), "corrupt: a.qcow2: L2 table at 0x30000: short read");
  EXPECT_TRUE(Status::Ok().WithContext("x").ok());
}

Result<int> Half(int v) {
  if (v % 2) return Status::InvalidArgument("odd");
  return v / 2;
}

Result<int> Quarter(int v) {
  FERRY_ASSIGN_OR_RETURN(int h, Half(v));
  FERRY_ASSIGN_OR_RETURN(int q, Half(h));
  return q;
}

TEST(StatusTest, AssignOrReturnPropagates) {
  EXPECT_EQ(*Quarter(8), 2);
  EXPECT_EQ(Quarter(6).status().code(), ErrorCode::kInvalidArgument);
}

TEST(ChecksumTest, Crc32cKnownVectors) {
  const std::string s = "123456789";
  EXPECT_EQ(Crc32c({reinterpret_cast<const uint8_t*>(s.data()), s.size()}), 0xE3069283u);
  std::vector<uint8_t> zeros(32, 0);
  EXPECT_EQ(Crc32c(zeros), 0x8A9136AAu);  // RFC 3720 B.4
  EXPECT_EQ(Crc32({reinterpret_cast<const uint8_t*>(s.data()), s.size()}), 0xCBF43926u);
}

TEST(ChecksumTest, Sha256StateSurvivesSaveRestore) {
  std::vector<uint8_t> data(100000);
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>(i * 7);
  Sha256Digest whole = Sha256::Of(data);
  Sha256 a;
  a.Update(std::span(data).first(12345));
  auto state = a.SaveState();
  Sha256 b;
  ASSERT_TRUE(b.RestoreState(state).ok());
  b.Update(std::span(data).subspan(12345));
  EXPECT_EQ(b.Finish(), whole);
  EXPECT_EQ(ToHex(Sha256::Of({})),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  state[4 + 8 * 4 + 8 + 64 + 0] ^= 0;  // untouched: still valid
  EXPECT_FALSE(b.RestoreState(std::span(state).first(10)).ok());
}

TEST(ChecksumTest, UpdateZerosEqualsZeroBuffer) {
  std::vector<uint8_t> zeros(200000, 0);
  Sha256 a;
  a.UpdateZeros(zeros.size());
  EXPECT_EQ(a.Finish(), Sha256::Of(zeros));
}

TEST(BytesTest, IsAllZero) {
  std::vector<uint8_t> v(4096, 0);
  EXPECT_TRUE(IsAllZero(v.data(), v.size()));
  for (size_t pos : {0ul, 15ul, 16ul, 100ul, 4095ul}) {
    v[pos] = 1;
    EXPECT_FALSE(IsAllZero(v.data(), v.size())) << pos;
    v[pos] = 0;
  }
  EXPECT_TRUE(IsAllZero(v.data(), 0));
}

TEST(BytesTest, EndianRoundTrip) {
  uint8_t b[8];
  StoreBE64(b, 0x0102030405060708ull);
  EXPECT_EQ(b[0], 1);
  EXPECT_EQ(LoadBE64(b), 0x0102030405060708ull);
  StoreLE32(b, 0xAABBCCDD);
  EXPECT_EQ(b[0], 0xDD);
  EXPECT_EQ(LoadLE32(b), 0xAABBCCDDu);
}

TEST(UnitsTest, ParseSize) {
  EXPECT_EQ(*ParseSize("4096"), 4096u);
  EXPECT_EQ(*ParseSize("64K"), 65536u);
  EXPECT_EQ(*ParseSize("1.5G"), 1610612736u);
  EXPECT_EQ(*ParseSize("100MiB/s"), 104857600u);
  EXPECT_FALSE(ParseSize("12X").ok());
  EXPECT_FALSE(ParseSize("").ok());
  EXPECT_FALSE(ParseSize("-1").ok());
  EXPECT_EQ(FormatBytes(1536), "1.50 KiB");
}

}  // namespace
}  // namespace ferry
