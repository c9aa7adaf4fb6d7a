// ConvergencePolicy on fake job-statistics sequences: the start plan (cap lifted, downtime
// below the budget, prediction, refusal), downtime steps when passes stop shrinking, post-copy,
// auto-converge, the time limit, the dirty-rate fallback and cancel. No libvirt.
#include "agent/convergence_policy.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace ferry::agent {
namespace {

using hypervisor::JobStats;

constexpr uint64_t kMiB = 1024 * 1024;

JobStats Sample(uint64_t iteration, uint64_t remaining_mib, uint64_t bps_mib = 100,
                uint64_t dirty_mib = 0, int throttle = 0) {
  JobStats s;
  s.active = true;
  s.type = "unbounded";
  s.memory_total = 512 * kMiB;
  s.memory_iteration = iteration;
  s.memory_remaining = remaining_mib * kMiB;
  s.memory_processed = 512 * kMiB - s.memory_remaining;
  s.memory_bps = bps_mib * kMiB;
  s.memory_dirty_rate = dirty_mib * kMiB;
  s.auto_converge_throttle = throttle;
  return s;
}

std::vector<PolicyActionType> Types(const std::vector<PolicyAction>& actions) {
  std::vector<PolicyActionType> t;
  for (const PolicyAction& a : actions) {
    if (a.type != PolicyActionType::kNote) t.push_back(a.type);
  }
  return t;
}

bool Has(const std::vector<std::string>& notes, const std::string& text) {
  for (const auto& n : notes) {
    if (n.find(text) != std::string::npos) return true;
  }
  return false;
}

ConvergenceBudget Budget(bool auto_converge, bool postcopy, uint64_t cap = 0) {
  ConvergenceBudget b;
  b.max_downtime_ms = 300;
  b.bandwidth_cap = cap;
  b.allow_auto_converge = auto_converge;
  b.allow_postcopy = postcopy;
  return b;
}

TEST(ConvergencePolicy, StartLiftsQemuCapAndStartsBelowBudget) {
  ConvergencePolicy p(Budget(true, false), 512 * kMiB);
  ConvergenceStart s = p.Start(40 * kMiB);
  EXPECT_EQ(s.bandwidth, 0u);
  EXPECT_EQ(s.initial_downtime_ms, 150);
  EXPECT_EQ(p.downtime_limit_ms(), 150);
  EXPECT_TRUE(s.auto_converge);
  EXPECT_FALSE(s.postcopy);
  EXPECT_FALSE(s.refuse);
  EXPECT_EQ(s.prediction.verdict, ConvergenceVerdict::kUnknown);  // no cap: link unknown
  EXPECT_TRUE(Has(s.notes, "128 MiB/s cap lifted"));
  EXPECT_TRUE(Has(s.notes, "measured dirty rate 40 MiB/s"));
}

TEST(ConvergencePolicy, StartKeepsUserCapAndPredicts) {
  ConvergencePolicy p(Budget(false, false, 100 * kMiB), 512 * kMiB);
  ConvergenceStart s = p.Start(20 * kMiB);
  EXPECT_EQ(s.bandwidth, 100 * kMiB);
  EXPECT_FALSE(s.auto_converge);
  EXPECT_EQ(s.prediction.verdict, ConvergenceVerdict::kConverges);
  EXPECT_TRUE(Has(s.notes, "capped at 100 MiB/s"));
  EXPECT_FALSE(s.refuse);
}

TEST(ConvergencePolicy, RefusesWhatCannotMeetTheBudget) {
  ConvergencePolicy p(Budget(false, false, 100 * kMiB), 512 * kMiB);
  ConvergenceStart s = p.Start(180 * kMiB);
  EXPECT_EQ(s.prediction.verdict, ConvergenceVerdict::kImpossible);
  ASSERT_TRUE(s.refuse);
  EXPECT_NE(s.refuse->find("dirty rate 180 MiB/s exceeds the link's 100 MiB/s; would need "
                           "1800 ms downtime, budget 300 ms"),
            std::string::npos)
      << *s.refuse;
  EXPECT_TRUE(p.aborted());
  EXPECT_TRUE(p.OnSample(Sample(2, 50), 1000).empty());
}

TEST(ConvergencePolicy, EscalationAllowedIsNotRefused) {
  ConvergencePolicy p(Budget(true, false, 100 * kMiB), 512 * kMiB);
  ConvergenceStart s = p.Start(180 * kMiB);
  EXPECT_EQ(s.prediction.verdict, ConvergenceVerdict::kNeedsEscalation);
  EXPECT_FALSE(s.refuse);
  EXPECT_NE(s.prediction.message.find("auto-converge"), std::string::npos);
}

TEST(ConvergencePolicy, PredictionTable) {
  const ConvergenceBudget b = Budget(false, false);
  EXPECT_EQ(PredictConvergence(10 * kMiB, 100 * kMiB, b).verdict, ConvergenceVerdict::kConverges);
  EXPECT_EQ(PredictConvergence(90 * kMiB, 100 * kMiB, b).verdict, ConvergenceVerdict::kMarginal);
  EXPECT_EQ(PredictConvergence(200 * kMiB, 100 * kMiB, b).verdict, ConvergenceVerdict::kImpossible);
  EXPECT_EQ(PredictConvergence(200 * kMiB, 100 * kMiB, b).needed_downtime_ms, 2000);
  EXPECT_EQ(PredictConvergence(std::nullopt, 100 * kMiB, b).verdict, ConvergenceVerdict::kUnknown);
  EXPECT_EQ(PredictConvergence(10 * kMiB, 0, b).verdict, ConvergenceVerdict::kUnknown);
  EXPECT_EQ(PredictConvergence(0, 100 * kMiB, b).verdict, ConvergenceVerdict::kConverges);
  ConvergenceBudget generous = b;
  generous.max_downtime_ms = 3000;  // a second of dirtying fits: marginal, not impossible
  EXPECT_EQ(PredictConvergence(200 * kMiB, 100 * kMiB, generous).verdict,
            ConvergenceVerdict::kMarginal);
}

TEST(ConvergencePolicy, ShrinkingPassesNeedNoAction) {
  ConvergencePolicy p(Budget(false, false), 512 * kMiB);
  (void)p.Start(10 * kMiB);
  int64_t t = 0;
  for (uint64_t remaining : {400, 300}) {
    EXPECT_TRUE(Types(p.OnSample(Sample(1, remaining, 1000, 0), t += 200)).empty());
  }
  uint64_t iter = 2;
  for (uint64_t remaining : {100, 40, 15, 6, 2}) {
    EXPECT_TRUE(Types(p.OnSample(Sample(iter++, remaining, 1000, 10), t += 200)).empty());
  }
  EXPECT_EQ(p.downtime_limit_ms(), 150);
  EXPECT_FALSE(p.aborted());
}

TEST(ConvergencePolicy, StallStepsDowntimeToBudgetThenAbortsSayingWhy) {
  ConvergencePolicy p(Budget(false, false), 512 * kMiB);
  (void)p.Start(std::nullopt);
  int64_t t = 0;
  std::vector<PolicyAction> all;
  for (uint64_t iter = 1; iter <= 12 && !p.aborted(); ++iter) {
    // 128 MiB/s link, 64 MiB hot set: ~40 MiB left every pass (LAB.md's case).
    auto a = p.OnSample(Sample(iter, iter == 1 ? 300 : 40, 128, 200), t += 300);
    all.insert(all.end(), a.begin(), a.end());
  }
  ASSERT_TRUE(p.aborted());
  std::vector<int64_t> downtimes;
  std::string abort_message;
  for (const PolicyAction& a : all) {
    if (a.type == PolicyActionType::kSetDowntime) downtimes.push_back(a.downtime_ms);
    if (a.type == PolicyActionType::kAbort) abort_message = a.message;
    EXPECT_NE(a.type, PolicyActionType::kStartPostCopy);
  }
  EXPECT_EQ(downtimes, (std::vector<int64_t>{225, 300}));
  EXPECT_EQ(p.downtime_limit_ms(), 300);
  EXPECT_NE(abort_message.find("dirty rate 200 MiB/s exceeds the link's 128 MiB/s; would need "
                               "313 ms downtime, budget 300 ms"),
            std::string::npos)
      << abort_message;
  EXPECT_NE(abort_message.find("auto-converge not allowed"), std::string::npos);
  EXPECT_NE(abort_message.find("post-copy not allowed"), std::string::npos);
  // A note reported the prediction once the link was measured (no cap, nothing measured).
  bool predicted = false;
  for (const PolicyAction& a : all) {
    predicted |= a.type == PolicyActionType::kNote && a.message.find("prediction at pass") == 0;
  }
  EXPECT_TRUE(predicted);
  EXPECT_TRUE(p.OnSample(Sample(13, 40), t += 300).empty());  // nothing after the abort
}

TEST(ConvergencePolicy, PostCopyAfterDowntimeStepsAndThenNothing) {
  ConvergencePolicy p(Budget(false, true), 512 * kMiB);
  ConvergenceStart s = p.Start(200 * kMiB);
  EXPECT_TRUE(s.postcopy);
  int64_t t = 0;
  std::vector<PolicyActionType> types;
  for (uint64_t iter = 1; iter <= 10 && !p.postcopy_started(); ++iter) {
    auto a = Types(p.OnSample(Sample(iter, 40, 128, 200), t += 300));
    types.insert(types.end(), a.begin(), a.end());
  }
  EXPECT_EQ(types, (std::vector<PolicyActionType>{PolicyActionType::kSetDowntime,
                                                  PolicyActionType::kSetDowntime,
                                                  PolicyActionType::kStartPostCopy}));
  JobStats pc = Sample(11, 40);
  pc.postcopy = true;
  EXPECT_TRUE(p.OnSample(pc, t += 300).empty());
  // Post-copy cannot be cancelled: the guest already runs on the target.
  auto c = p.OnCancel();
  ASSERT_EQ(c.size(), 1u);
  EXPECT_EQ(c[0].type, PolicyActionType::kNote);
  EXPECT_FALSE(p.aborted());
}

TEST(ConvergencePolicy, AutoConvergeGetsTimeWhileThrottleRises) {
  ConvergencePolicy p(Budget(true, false), 512 * kMiB);
  (void)p.Start(200 * kMiB);
  int64_t t = 0;
  int throttle = 0;
  for (uint64_t iter = 1; iter <= 11; ++iter) {  // throttle 10% .. 90%, rising every pass
    if (iter >= 3) throttle += 10;
    for (const PolicyAction& a : p.OnSample(Sample(iter, 40, 128, 200, throttle), t += 300)) {
      EXPECT_NE(a.type, PolicyActionType::kAbort) << "pass " << iter << ": " << a.message;
    }
  }
  EXPECT_EQ(p.downtime_limit_ms(), 300);
  EXPECT_FALSE(p.aborted());
  // The throttle reaches QEMU's 99% maximum and the memory still does not shrink: give up.
  std::string abort_message;
  for (uint64_t iter = 12; iter <= 30 && !p.aborted(); ++iter) {
    for (const PolicyAction& a : p.OnSample(Sample(iter, 40, 128, 200, 99), t += 300)) {
      if (a.type == PolicyActionType::kAbort) abort_message = a.message;
    }
  }
  ASSERT_TRUE(p.aborted());
  EXPECT_NE(abort_message.find("throttle at 99%"), std::string::npos) << abort_message;
}

TEST(ConvergencePolicy, AutoConvergeThatWorksIsLeftAlone) {
  ConvergencePolicy p(Budget(true, false), 512 * kMiB);
  (void)p.Start(100 * kMiB);
  int64_t t = 0;
  const uint64_t remaining[] = {300, 60, 60, 60, 45, 30, 15, 5};
  const int throttle[] = {0, 0, 20, 30, 40, 50, 60, 70};
  for (size_t i = 0; i < std::size(remaining); ++i) {
    auto a = Types(p.OnSample(Sample(i + 1, remaining[i], 128, 100, throttle[i]), t += 300));
    for (PolicyActionType type : a) EXPECT_NE(type, PolicyActionType::kAbort);
  }
  EXPECT_FALSE(p.aborted());
}

// Measured in bench/live_bench.sh: 64 MiB/s dirtied over a 64 MiB/s cap. The throttle rose to
// 30% and stayed; the memory left hovered around 46 MiB for passes, then a pass fitted (plain
// pre-copy finished in 22 s). The policy used to give up after three stalls; it must wait.
TEST(ConvergencePolicy, StuckThrottleBelowMaximumKeepsWaitingUntilAPassFits) {
  ConvergenceBudget b = Budget(true, false, 64 * kMiB);
  b.time_limit_ms = 90000;
  ConvergencePolicy p(b, 512 * kMiB);
  (void)p.Start(64 * kMiB);
  int64_t t = 0;
  uint64_t iter = 1;
  (void)p.OnSample(Sample(iter, 300, 64, 64, 0), t += 300);
  for (++iter; iter <= 30; ++iter) {
    const int throttle = iter < 5 ? 20 : 30;
    for (const PolicyAction& a : p.OnSample(Sample(iter, 46, 64, 64, throttle), t += 700)) {
      EXPECT_NE(a.type, PolicyActionType::kAbort) << "pass " << iter << ": " << a.message;
    }
  }
  EXPECT_FALSE(p.aborted());
  EXPECT_EQ(p.downtime_limit_ms(), 300);
  // The time limit still ends it if no pass ever fits.
  std::string abort_message;
  for (; t <= 95000 && !p.aborted(); t += 700) {
    for (const PolicyAction& a : p.OnSample(Sample(iter++, 46, 64, 64, 30), t)) {
      if (a.type == PolicyActionType::kAbort) abort_message = a.message;
    }
  }
  ASSERT_TRUE(p.aborted());
  EXPECT_NE(abort_message.find("time limit 90000 ms"), std::string::npos) << abort_message;
}

// Without auto-converge, stalled passes of a guest that dirties slower than the link are no
// proof either: only the time limit ends them.
TEST(ConvergencePolicy, StallsBelowTheLinkRateWaitForTheTimeLimit) {
  ConvergenceBudget b = Budget(false, false);
  b.time_limit_ms = 20000;
  ConvergencePolicy p(b, 512 * kMiB);
  (void)p.Start(50 * kMiB);
  int64_t t = 0;
  for (uint64_t iter = 1; iter <= 20; ++iter) {
    for (const PolicyAction& a :
         p.OnSample(Sample(iter, iter == 1 ? 300 : 40, 100, 50), t += 500)) {
      EXPECT_NE(a.type, PolicyActionType::kAbort) << "pass " << iter << ": " << a.message;
    }
  }
  EXPECT_FALSE(p.aborted());
  bool aborted_at_limit = false;
  for (uint64_t iter = 21; t <= 25000 && !p.aborted(); ++iter) {
    for (const PolicyAction& a : p.OnSample(Sample(iter, 40, 100, 50), t += 500)) {
      aborted_at_limit |= a.type == PolicyActionType::kAbort &&
                          a.message.find("time limit 20000 ms") != std::string::npos;
    }
  }
  EXPECT_TRUE(aborted_at_limit);
}

TEST(ConvergencePolicy, TimeLimitAborts) {
  ConvergenceBudget b = Budget(true, true);
  b.time_limit_ms = 5000;
  ConvergencePolicy p(b, 512 * kMiB);
  (void)p.Start(std::nullopt);
  std::string abort_message;
  for (int64_t t = 0; t <= 6000 && !p.aborted(); t += 200) {
    for (const PolicyAction& a : p.OnSample(Sample(1, 400, 16, 0), t)) {
      if (a.type == PolicyActionType::kAbort) abort_message = a.message;
    }
  }
  ASSERT_TRUE(p.aborted());
  EXPECT_NE(abort_message.find("time limit 5000 ms"), std::string::npos) << abort_message;
  EXPECT_NE(abort_message.find("first pass did not finish"), std::string::npos) << abort_message;
}

TEST(ConvergencePolicy, DefaultTimeLimitScalesWithMemoryOverLink) {
  ConvergencePolicy p(Budget(true, false), 64ull * 1024 * kMiB);  // 64 GiB guest
  (void)p.Start(std::nullopt);
  EXPECT_EQ(p.time_limit_ms(), 120000);
  (void)p.OnSample(Sample(1, 60000, 100), 200);  // 100 MiB/s: one copy takes ~655 s
  EXPECT_GT(p.time_limit_ms(), 1900000);
}

TEST(ConvergencePolicy, DirtyRateFallsBackToQemusFigure) {
  ConvergencePolicy p(Budget(true, false, 100 * kMiB), 512 * kMiB);
  ConvergenceStart s = p.Start(std::nullopt);
  EXPECT_EQ(s.prediction.verdict, ConvergenceVerdict::kUnknown);
  EXPECT_TRUE(Has(s.notes, "not measurable"));
  EXPECT_EQ(p.dirty_rate(), 0u);
  auto a = p.OnSample(Sample(2, 100, 100, 30), 400);
  EXPECT_EQ(p.dirty_rate(), 30 * kMiB);
  ASSERT_FALSE(a.empty());
  EXPECT_EQ(a[0].type, PolicyActionType::kNote);
  EXPECT_NE(a[0].message.find("(converges)"), std::string::npos) << a[0].message;
}

TEST(ConvergencePolicy, CancelAbortsOnce) {
  ConvergencePolicy p(Budget(true, false), 512 * kMiB);
  (void)p.Start(10 * kMiB);
  auto a = p.OnCancel();
  ASSERT_EQ(a.size(), 1u);
  EXPECT_EQ(a[0].type, PolicyActionType::kAbort);
  EXPECT_EQ(*p.abort_reason(), "cancelled by the user");
  EXPECT_TRUE(p.OnCancel().empty());
}

TEST(ConvergencePolicy, TinyBudgetStillGetsALimit) {
  ConvergenceBudget b = Budget(false, false);
  b.max_downtime_ms = 4;
  ConvergencePolicy p(b, 512 * kMiB);
  ConvergenceStart s = p.Start(std::nullopt);
  EXPECT_GT(s.initial_downtime_ms, 0);
  EXPECT_LE(s.initial_downtime_ms, 4);
}

}  // namespace
}  // namespace ferry::agent
