#include "store/store.h"

#include <gtest/gtest.h>

#include "store/schema.h"
#include "test_util.h"

namespace ferry {
namespace {

MigrationRecord NewMigration(const std::string& id) {
  MigrationRecord m;
  m.id = id;
  m.vm_name = "g1";
  m.source_host = "host1";
  m.target_host = "host2";
  m.type = "live";
  m.created_ms = m.updated_ms = 1000;
  return m;
}

TEST(SchemaTest, MigrationsAreNumberedFromOneWithoutGaps) {
  const auto& all = SchemaMigrations();
  ASSERT_FALSE(all.empty());
  for (size_t i = 0; i < all.size(); ++i) EXPECT_EQ(all[i].version, static_cast<int>(i + 1));
}

TEST(MigrationStateTest, TransitionTable) {
  EXPECT_TRUE(CheckTransition(MigrationState::kQueued, MigrationState::kRunning).ok());
  Status s = CheckTransition(MigrationState::kCompleted, MigrationState::kRunning);
  EXPECT_EQ(s.code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "migration cannot go from completed to running");
  for (auto st :
       {MigrationState::kCompleted, MigrationState::kFailed, MigrationState::kCancelled}) {
    EXPECT_TRUE(IsFinal(st));
    EXPECT_EQ(ParseMigrationState(MigrationStateName(st)), st);
  }
}

TEST(SqliteStoreTest, HostsRoundTripAndSurviveReopen) {
  testing::TempDir dir;
  std::string path = dir.Join("ferry.db");
  {
    auto store = OpenSqliteStore(path);
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    EXPECT_EQ((*store)->SchemaVersion(), static_cast<int>(SchemaMigrations().size()));
    HostRecord h{"host1", "host1", "lab", "http://127.0.0.2:7801", "tok", "{}", 5, 6};
    ASSERT_TRUE((*store)->PutHost(h).ok());
    h.name = "renamed";
    ASSERT_TRUE((*store)->PutHost(h).ok());
  }
  auto store = OpenSqliteStore(path);
  ASSERT_TRUE(store.ok());
  auto h = (*store)->GetHost("host1");
  ASSERT_TRUE(h.ok());
  EXPECT_EQ(h->name, "renamed");
  EXPECT_EQ(h->created_ms, 5);
  EXPECT_EQ((*store)->GetHost("nope").status().code(), ErrorCode::kNotFound);
  EXPECT_EQ((*store)->ListHosts()->size(), 1u);
  EXPECT_TRUE((*store)->DeleteHost("host1").ok());
  EXPECT_EQ((*store)->DeleteHost("host1").code(), ErrorCode::kNotFound);
}

TEST(SqliteStoreTest, MigrationUpdatesCheckVersionAndTransitions) {
  testing::TempDir dir;
  auto store = OpenSqliteStore(dir.Join("ferry.db"));
  ASSERT_TRUE(store.ok());
  MigrationRecord m = NewMigration("m1");
  ASSERT_TRUE((*store)->CreateMigration(&m).ok());
  MigrationRecord dup = NewMigration("m1");
  EXPECT_EQ((*store)->CreateMigration(&dup).code(), ErrorCode::kAlreadyExists);

  MigrationRecord a = *(*store)->GetMigration("m1");
  MigrationRecord b = a;  // a second writer holding the same version
  a.state = MigrationState::kValidating;
  ASSERT_TRUE(
      (*store)->UpdateMigration(&a, EventRecord{0, "", 2000, "state", "validating", ""}).ok());
  EXPECT_EQ(a.version, 2);
  b.state = MigrationState::kCancelled;
  EXPECT_EQ((*store)->UpdateMigration(&b, std::nullopt).code(), ErrorCode::kMismatch);

  a.state = MigrationState::kCompleted;  // validating -> completed is not allowed
  Status s = (*store)->UpdateMigration(&a, EventRecord{0, "", 3000, "state", "x", ""});
  EXPECT_EQ(s.code(), ErrorCode::kInvalidArgument);
  auto stored = (*store)->GetMigration("m1");
  EXPECT_EQ(stored->state, MigrationState::kValidating);
  EXPECT_EQ(stored->version, 2);
  auto events = (*store)->ListEvents("m1", 0);
  ASSERT_TRUE(events.ok());
  ASSERT_EQ(events->size(), 1u);  // the refused update's event was rolled back
  EXPECT_EQ((*events)[0].message, "validating");
}

TEST(SqliteStoreTest, ListsActiveMigrationsInCreationOrder) {
  testing::TempDir dir;
  auto store = OpenSqliteStore(dir.Join("ferry.db"));
  ASSERT_TRUE(store.ok());
  for (const char* id : {"b", "a", "c"}) {
    MigrationRecord m = NewMigration(id);
    ASSERT_TRUE((*store)->CreateMigration(&m).ok());
  }
  MigrationRecord a = *(*store)->GetMigration("a");
  a.state = MigrationState::kCancelled;
  ASSERT_TRUE((*store)->UpdateMigration(&a, std::nullopt).ok());
  auto active = (*store)->ListMigrations(true);
  ASSERT_TRUE(active.ok());
  ASSERT_EQ(active->size(), 2u);
  EXPECT_EQ((*active)[0].id, "b");
  EXPECT_EQ((*active)[1].id, "c");
  EXPECT_EQ((*store)->ListMigrations(false)->size(), 3u);
  EventRecord orphan{0, "zzz", 1, "info", "x", ""};
  EXPECT_EQ((*store)->AppendEvent(&orphan).code(), ErrorCode::kNotFound);
}

PlanRecord NewPlan(const std::string& id, const std::string& name) {
  PlanRecord p;
  p.id = id;
  p.name = name;
  p.document_json = R"({"name":")" + name + R"("})";
  p.created_ms = p.updated_ms = 1000;
  return p;
}

TEST(PlanStateTest, DerivedFromTheMigrations) {
  using M = MigrationState;
  EXPECT_EQ(DerivePlanState({M::kCompleted, M::kRunning}), PlanState::kRunning);
  EXPECT_EQ(DerivePlanState({M::kCompleted, M::kQueued}), PlanState::kRunning);
  EXPECT_EQ(DerivePlanState({M::kCompleted, M::kCompleted}), PlanState::kCompleted);
  EXPECT_EQ(DerivePlanState({M::kCompleted, M::kFailed}), PlanState::kPartial);
  EXPECT_EQ(DerivePlanState({M::kCancelled, M::kCompleted}), PlanState::kPartial);
  EXPECT_EQ(DerivePlanState({M::kCancelled, M::kFailed}), PlanState::kFailed);
  EXPECT_EQ(DerivePlanState({M::kCancelled, M::kCancelled}), PlanState::kCancelled);
  for (PlanState s : {PlanState::kReady, PlanState::kRunning, PlanState::kPartial}) {
    EXPECT_EQ(ParsePlanState(PlanStateName(s)), s);
  }
  EXPECT_FALSE(IsFinal(PlanState::kReady));
  EXPECT_TRUE(IsFinal(PlanState::kPartial));
}

TEST(SqliteStoreTest, PlansAndTheirMigrationsAreCreatedTogether) {
  testing::TempDir dir;
  std::string path = dir.Join("ferry.db");
  {
    auto store = OpenSqliteStore(path);
    ASSERT_TRUE(store.ok());
    PlanRecord p = NewPlan("p1", "wave-1");
    std::vector<MigrationRecord> ms = {NewMigration("m1"), NewMigration("m2")};
    ASSERT_TRUE((*store)->CreatePlan(&p, &ms).ok());
    EXPECT_EQ(p.version, 1);
    EXPECT_EQ(ms[0].plan_id, "p1");

    // Same name, or a migration id that is taken: nothing of it is stored.
    PlanRecord same_name = NewPlan("p2", "wave-1");
    Status s = (*store)->CreatePlan(&same_name, nullptr);
    EXPECT_EQ(s.code(), ErrorCode::kAlreadyExists);
    EXPECT_NE(s.message().find("wave-1"), std::string::npos) << s.message();
    PlanRecord same_id = NewPlan("p1", "other");
    EXPECT_EQ((*store)->CreatePlan(&same_id, nullptr).code(), ErrorCode::kAlreadyExists);
    PlanRecord p3 = NewPlan("p3", "wave-3");
    std::vector<MigrationRecord> clash = {NewMigration("m3"), NewMigration("m1")};
    EXPECT_EQ((*store)->CreatePlan(&p3, &clash).code(), ErrorCode::kAlreadyExists);
    EXPECT_EQ((*store)->GetPlan("p3").status().code(), ErrorCode::kNotFound);
    EXPECT_EQ((*store)->GetMigration("m3").status().code(), ErrorCode::kNotFound);
    EXPECT_EQ((*store)->ListPlans()->size(), 1u);
    EXPECT_EQ((*store)->ListMigrations(false)->size(), 2u);
  }
  // Reopened: by id or by name, and the migrations carry the plan's id.
  auto store = OpenSqliteStore(path);
  ASSERT_TRUE(store.ok());
  auto by_name = (*store)->GetPlan("wave-1");
  ASSERT_TRUE(by_name.ok()) << by_name.status().ToString();
  EXPECT_EQ(by_name->id, "p1");
  EXPECT_EQ(by_name->state, PlanState::kReady);
  EXPECT_EQ((*store)->GetPlan("p1")->name, "wave-1");
  EXPECT_EQ((*store)->GetMigration("m2")->plan_id, "p1");
  auto of_plan = (*store)->ListPlanMigrations("p1");
  ASSERT_TRUE(of_plan.ok());
  ASSERT_EQ(of_plan->size(), 2u);
  EXPECT_EQ((*of_plan)[0].id, "m1");
  EXPECT_TRUE((*store)->ListPlanMigrations("nope")->empty());
}

TEST(SqliteStoreTest, PlanUpdatesCheckTheVersionAndMayStartMigrations) {
  testing::TempDir dir;
  auto store = OpenSqliteStore(dir.Join("ferry.db"));
  ASSERT_TRUE(store.ok());
  PlanRecord p = NewPlan("p1", "wave-1");
  ASSERT_TRUE((*store)->CreatePlan(&p, nullptr).ok());
  PlanRecord stale = p;
  p.state = PlanState::kRunning;
  std::vector<MigrationRecord> ms = {NewMigration("m1")};
  ASSERT_TRUE((*store)->UpdatePlan(&p, &ms).ok());
  EXPECT_EQ(p.version, 2);
  EXPECT_EQ((*store)->GetMigration("m1")->plan_id, "p1");
  stale.state = PlanState::kCancelled;
  EXPECT_EQ((*store)->UpdatePlan(&stale, nullptr).code(), ErrorCode::kMismatch);
  EXPECT_EQ((*store)->GetPlan("p1")->state, PlanState::kRunning);
  PlanRecord ghost = NewPlan("ghost", "ghost");
  EXPECT_EQ((*store)->UpdatePlan(&ghost, nullptr).code(), ErrorCode::kNotFound);
  // A migration of an update that fails is not created either.
  std::vector<MigrationRecord> more = {NewMigration("m9")};
  EXPECT_EQ((*store)->UpdatePlan(&stale, &more).code(), ErrorCode::kMismatch);
  EXPECT_EQ((*store)->GetMigration("m9").status().code(), ErrorCode::kNotFound);
}

TEST(SqliteStoreTest, DeletePlanTakesItsFinishedMigrationsAlong) {
  testing::TempDir dir;
  auto store = OpenSqliteStore(dir.Join("ferry.db"));
  ASSERT_TRUE(store.ok());
  PlanRecord p = NewPlan("p1", "wave-1");
  std::vector<MigrationRecord> ms = {NewMigration("m1")};
  ASSERT_TRUE((*store)->CreatePlan(&p, &ms).ok());
  MigrationRecord other = NewMigration("m2");
  ASSERT_TRUE((*store)->CreateMigration(&other).ok());
  EventRecord e{0, "m1", 1, "info", "x", ""};
  ASSERT_TRUE((*store)->AppendEvent(&e).ok());
  Status s = (*store)->DeletePlan("p1");
  EXPECT_EQ(s.code(), ErrorCode::kFailedPrecondition);  // m1 is pending
  EXPECT_NE(s.message().find("m1"), std::string::npos);
  MigrationRecord m1 = *(*store)->GetMigration("m1");
  m1.state = MigrationState::kCancelled;
  ASSERT_TRUE((*store)->UpdateMigration(&m1, std::nullopt).ok());
  ASSERT_TRUE((*store)->DeletePlan("p1").ok());
  EXPECT_EQ((*store)->GetPlan("p1").status().code(), ErrorCode::kNotFound);
  EXPECT_EQ((*store)->GetMigration("m1").status().code(), ErrorCode::kNotFound);
  EXPECT_TRUE((*store)->ListEvents("m1", 0)->empty());
  EXPECT_TRUE((*store)->GetMigration("m2").ok());  // not the plan's
  EXPECT_EQ((*store)->DeletePlan("p1").code(), ErrorCode::kNotFound);
  // The name is free again.
  PlanRecord again = NewPlan("p5", "wave-1");
  EXPECT_TRUE((*store)->CreatePlan(&again, nullptr).ok());
}

TEST(SqliteStoreTest, UpgradesADatabaseOfSchemaOne) {
  testing::TempDir dir;
  std::string path = dir.Join("ferry.db");
  std::string v1 = testing::SourceDir() + "/src/store/schema/0001_initial.sql";
  auto r = testing::Run(
      "sqlite3 " + testing::ShellQuote(path) + " < " + testing::ShellQuote(v1) + " && sqlite3 " +
      testing::ShellQuote(path) +
      " \"CREATE TABLE schema_version (version INTEGER NOT NULL); "
      "INSERT INTO schema_version VALUES (1); "
      "INSERT INTO migrations(id, vm_name, source_host, target_host, type, state, created_ms, "
      "updated_ms, version, created_order) VALUES ('old', 'g1', 'h1', 'h2', 'live', "
      "'completed', 1, 1, 3, 1)\"");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto store = OpenSqliteStore(path);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  EXPECT_EQ((*store)->SchemaVersion(), static_cast<int>(SchemaMigrations().size()));
  auto old = (*store)->GetMigration("old");
  ASSERT_TRUE(old.ok()) << old.status().ToString();
  EXPECT_EQ(old->plan_id, "");
  EXPECT_EQ(old->version, 3);
  EXPECT_TRUE((*store)->ListPlans()->empty());
}

TEST(SqliteStoreTest, RefusesADatabaseFromANewerFerry) {
  testing::TempDir dir;
  std::string path = dir.Join("ferry.db");
  { ASSERT_TRUE(OpenSqliteStore(path).ok()); }
  auto r = testing::Run("sqlite3 " + testing::ShellQuote(path) +
                        " 'INSERT INTO schema_version(version) VALUES (999)'");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto store = OpenSqliteStore(path);
  EXPECT_EQ(store.status().code(), ErrorCode::kUnsupported);
  EXPECT_NE(store.status().message().find("999"), std::string::npos);
}

}  // namespace
}  // namespace ferry
