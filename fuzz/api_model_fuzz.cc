// Fuzz target: the CLI's parsers of ferryd's answers (src/cli/api_model.h) on arbitrary bytes.
// ferryd's answers are untrusted input: every parser must return a Status, never crash, and
// what it accepts must print as a table without crashing either.
#include <cstdint>
#include <string>

#include "cli/api_format.h"
#include "cli/api_model.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  using namespace ferry::cli;
  if (auto hosts = ParseHostList(text); hosts.ok()) (void)FormatHostsTable(*hosts);
  (void)ParseHost(text);
  if (auto vms = ParseVmList(text); vms.ok()) (void)FormatVmsTable(*vms);
  (void)ParseVmListHosts(text);
  if (auto list = ParseMigrationList(text); list.ok()) (void)FormatMigrationsTable(*list, 0);
  (void)ParseMigration(text);
  (void)ParseEventList(text);
  (void)ParseValidation(text);
  (void)ParseValidationDetails(text);
  return 0;
}
