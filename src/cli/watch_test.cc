// PollPacer: the watch loops' polling policy (cli/watch.h).
#include "cli/watch.h"

#include <gtest/gtest.h>

#include <vector>

namespace ferry::cli {
namespace {

TEST(PollPacerTest, QuietMigrationsArePolledEveryPollMs) {
  PollPacer p(200);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(p.Next(false, -1), 200);
  EXPECT_EQ(p.Next(false, 60'000), 200);  // an ETA far away changes nothing
}

TEST(PollPacerTest, AChangeIsFollowedAfter25ThenDoublingUpToPollMs) {
  PollPacer p(200);
  std::vector<int64_t> delays;
  delays.push_back(p.Next(true, -1));
  for (int i = 0; i < 5; ++i) delays.push_back(p.Next(false, -1));
  EXPECT_EQ(delays, (std::vector<int64_t>{25, 50, 100, 200, 200, 200}));
  // Each new change starts again from 25 ms.
  EXPECT_EQ(p.Next(false, -1), 200);
  EXPECT_EQ(p.Next(true, -1), 25);
  EXPECT_EQ(p.Next(true, -1), 25);
}

TEST(PollPacerTest, ACopyAboutToEndIsPolledEvery25Ms) {
  PollPacer p(200);
  EXPECT_EQ(p.Next(false, 801), 200);
  EXPECT_EQ(p.Next(false, 800), 25);  // under four polls
  EXPECT_EQ(p.Next(false, 120), 25);
  EXPECT_EQ(p.Next(false, 0), 25);
  EXPECT_EQ(p.Next(false, -1), 50);  // the ETA is gone: back off again
}

TEST(PollPacerTest, ShortPollMsIsNeverExceeded) {
  PollPacer p(10);
  EXPECT_EQ(p.Next(true, -1), 10);
  EXPECT_EQ(p.Next(false, -1), 10);
}

}  // namespace
}  // namespace ferry::cli
