// Small helpers that ferryd's .cc files share (ferryd.cc, ferryd_plans.cc); not an interface
// of the server module.
//
// Thread-safety: pure functions (NewRecordId reads the clock and getrandom).
#pragma once

#include <cstdint>
#include <string>

#include "store/store.h"

namespace ferry::server {

int64_t NowMs();

// PREFIX + "-" + 11 hex of time + 6 random hex: unique across restarts and ferryd instances
// ("m-..." migrations, "p-..." plans).
std::string NewRecordId(const char* prefix);

EventRecord MakeEvent(std::string kind, std::string message, std::string data = "{}");

}  // namespace ferry::server
