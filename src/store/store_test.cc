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
  for (auto st : {MigrationState::kCompleted, MigrationState::kFailed, MigrationState::kCancelled}) {
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
  ASSERT_TRUE((*store)->UpdateMigration(&a, EventRecord{0, "", 2000, "state", "validating", ""}).ok());
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
