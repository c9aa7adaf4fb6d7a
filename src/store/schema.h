// The numbered schema migrations, embedded from src/store/schema/NNNN_*.sql at build time.
// Both store backends apply them in order and record the version reached.
#pragma once

#include <string_view>
#include <vector>

namespace ferry {

struct SchemaMigration {
  int version;            // NNNN of the file name
  std::string_view name;  // file name without .sql
  std::string_view sql;
};

// Sorted by version, starting at 1, without gaps (checked by store_test).
const std::vector<SchemaMigration>& SchemaMigrations();

}  // namespace ferry
