// Fuzz target: ParseColdOptions (src/server/cold_migration.h), the reader of what ferryd stores
// in a cold migration's options_json. The store is ferryd's own, but its text is read back as
// untrusted anyway (a hand-edited or damaged database): it must return a Status, never crash,
// and whatever parses must serialize and parse back to the same options.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "server/cold_migration.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  ferry::Result<ferry::server::ColdOptions> o = ferry::server::ParseColdOptions(text);
  if (!o.ok()) return 0;
  ferry::Result<ferry::server::ColdOptions> again =
      ferry::server::ParseColdOptions(ferry::server::ToJson(*o));
  if (!again.ok() || !(again->vm == o->vm) || again->copy_pools != o->copy_pools) std::abort();
  return 0;
}
