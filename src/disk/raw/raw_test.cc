#include "disk/raw/raw.h"

#include <gtest/gtest.h>

#include "test_util.h"

namespace ferry {
namespace {

using testing::TempDir;

TEST(RawTest, ExtentsFollowHostHoles) {
  TempDir dir;
  std::string path = dir.Join("a.raw");
  std::vector<uint8_t> data(1 << 20, 0);
  data[0] = 1;
  ASSERT_TRUE(testing::WriteFileBytes(path, {}));
  {
    CreateOptions opts;
    opts.size = 8 << 20;
    auto sink = CreateRaw(path, opts);
    ASSERT_TRUE(sink.ok()) << sink.status().ToString();
    ASSERT_TRUE((*sink)->Write(2 << 20, data).ok());
    ASSERT_TRUE((*sink)->Finalize().ok());
  }
  auto src = OpenImage(path);
  ASSERT_TRUE(src.ok()) << src.status().ToString();
  EXPECT_EQ((*src)->size(), 8u << 20);
  std::vector<Extent> extents;
  ASSERT_TRUE((*src)->Extents(0, 8 << 20, &extents).ok());
  uint64_t data_bytes = 0, covered = 0;
  for (auto& e : extents) {
    EXPECT_EQ(e.offset, covered);
    covered += e.length;
    if (e.kind == ExtentKind::kData) data_bytes += e.length;
  }
  EXPECT_EQ(covered, 8u << 20);
  EXPECT_GE(data_bytes, 1u << 20);
  EXPECT_LT(data_bytes, 8u << 20);
  std::vector<uint8_t> back(1 << 20);
  ASSERT_TRUE((*src)->Read(2 << 20, back).ok());
  EXPECT_EQ(back, data);
}

TEST(RawTest, ReadPastEndIsAnErrorNamingTheFile) {
  TempDir dir;
  std::string path = dir.Join("small.raw");
  ASSERT_TRUE(testing::WriteFileBytes(path, std::vector<uint8_t>(100, 7)));
  auto file = PosixEnv()->Open(path, OpenMode::kRead);
  ASSERT_TRUE(file.ok());
  std::vector<uint8_t> buf(200);
  Status s = (*file)->ReadAt(0, buf);
  EXPECT_EQ(s.code(), ErrorCode::kCorrupt);
  EXPECT_NE(s.message().find("small.raw"), std::string::npos);
  EXPECT_NE(s.message().find("short read"), std::string::npos);
}

}  // namespace
}  // namespace ferry
