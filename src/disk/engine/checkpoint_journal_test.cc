#include "disk/engine/checkpoint_journal.h"

#include <gtest/gtest.h>

#include "test_util.h"

namespace ferry {
namespace {

CheckpointRecord Rec(uint64_t frontier, uint8_t tag) {
  CheckpointRecord r;
  r.frontier = frontier;
  r.sink_state = {tag, tag};
  r.hash_state = {tag};
  Sha256Digest h{};
  h[0] = tag;
  r.chunk_hashes = {h, h};
  return r;
}

TEST(CheckpointJournalTest, RoundTripsRecords) {
  testing::TempDir dir;
  std::string path = dir.Join("j");
  {
    auto j = CheckpointJournal::Create(PosixEnv(), path, "identity text");
    ASSERT_TRUE(j.ok());
    EXPECT_EQ((*j)->last(), nullptr);
    ASSERT_TRUE((*j)->Append(Rec(100, 1)).ok());
    ASSERT_TRUE((*j)->Append(Rec(300, 2)).ok());
  }
  auto j = CheckpointJournal::Open(PosixEnv(), path);
  ASSERT_TRUE(j.ok()) << j.status().ToString();
  EXPECT_EQ((*j)->identity(), "identity text");
  ASSERT_NE((*j)->last(), nullptr);
  EXPECT_EQ((*j)->last()->sequence, 2u);
  EXPECT_EQ((*j)->last()->frontier, 300u);
  EXPECT_EQ((*j)->last()->sink_state, (std::vector<uint8_t>{2, 2}));
  EXPECT_EQ((*j)->chunk_hashes().size(), 4u);
}

TEST(CheckpointJournalTest, TornTailIsIgnoredAndOverwritten) {
  testing::TempDir dir;
  std::string path = dir.Join("j");
  {
    auto j = CheckpointJournal::Create(PosixEnv(), path, "id");
    ASSERT_TRUE((*j)->Append(Rec(100, 1)).ok());
    ASSERT_TRUE((*j)->Append(Rec(200, 2)).ok());
  }
  auto bytes = testing::ReadFileBytes(path);
  // Cut the last record in half: a crash while appending.
  bytes.resize(bytes.size() - 20);
  ASSERT_TRUE(testing::WriteFileBytes(path, bytes));
  {
    auto j = CheckpointJournal::Open(PosixEnv(), path);
    ASSERT_TRUE(j.ok());
    EXPECT_EQ((*j)->last()->frontier, 100u);
    ASSERT_TRUE((*j)->Append(Rec(250, 3)).ok());
  }
  auto j = CheckpointJournal::Open(PosixEnv(), path);
  ASSERT_TRUE(j.ok());
  EXPECT_EQ((*j)->last()->frontier, 250u);
  EXPECT_EQ((*j)->last()->sequence, 2u);
}

TEST(CheckpointJournalTest, BadHeaderIsCorruptNamingTheFile) {
  testing::TempDir dir;
  std::string path = dir.Join("j");
  ASSERT_TRUE(testing::WriteFileBytes(path, std::vector<uint8_t>(64, 'x')));
  auto j = CheckpointJournal::Open(PosixEnv(), path);
  ASSERT_FALSE(j.ok());
  EXPECT_EQ(j.status().code(), ErrorCode::kCorrupt);
  EXPECT_NE(j.status().message().find(path), std::string::npos);
  EXPECT_NE(j.status().message().find("magic"), std::string::npos);
}

TEST(CheckpointJournalTest, FlippedIdentityByteFailsTheChecksum) {
  testing::TempDir dir;
  std::string path = dir.Join("j");
  { ASSERT_TRUE(CheckpointJournal::Create(PosixEnv(), path, "identity").ok()); }
  auto bytes = testing::ReadFileBytes(path);
  bytes[17] ^= 1;
  ASSERT_TRUE(testing::WriteFileBytes(path, bytes));
  auto j = CheckpointJournal::Open(PosixEnv(), path);
  EXPECT_EQ(j.status().code(), ErrorCode::kCorrupt);
  EXPECT_NE(j.status().message().find("checksum"), std::string::npos);
}

}  // namespace
}  // namespace ferry
