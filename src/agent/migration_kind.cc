// MigrationKind names (migration_job.h): the wire names of the agent API.
#include "agent/migration_job.h"

namespace ferry::agent {

std::string_view MigrationKindName(MigrationKind kind) {
  switch (kind) {
    case MigrationKind::kLive: return "live";
    case MigrationKind::kLiveStorage: return "live-storage";
    case MigrationKind::kLiveVsm: return "live-vsm";
    case MigrationKind::kQuick: return "quick";
    case MigrationKind::kReregister: return "reregister";
    case MigrationKind::kCold: return "cold";
  }
  return "?";
}

Result<MigrationKind> ParseMigrationKind(std::string_view name) {
  for (MigrationKind k :
       {MigrationKind::kLive, MigrationKind::kLiveStorage, MigrationKind::kLiveVsm,
        MigrationKind::kQuick, MigrationKind::kReregister, MigrationKind::kCold}) {
    if (name == MigrationKindName(k)) return k;
  }
  return Status::InvalidArgument("migration kind \"" + std::string(name.substr(0, 64)) +
                                 "\": expected live, live-storage, live-vsm, quick, "
                                 "reregister or cold");
}

}  // namespace ferry::agent
