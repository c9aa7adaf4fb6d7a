// The scheduler's admission rule: may one more migration start next to those running now?
// A migration's cost is counted where it really loads: a live, live-vsm or quick move uses a
// live slot on its source and on its target host; a live-storage move uses a storage slot on
// its host, a live-vsm move a storage slot on both; every migration uses one global slot.
//
// Thread-safety: pure function.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "server/config.h"

namespace ferry::server {

struct SlotUse {
  std::string type;
  std::string source;
  std::string target;
};

// nullopt if `candidate` fits; else why not ("host1: 1 live migration running, limit 1").
std::optional<std::string> BlockedBy(const SlotUse& candidate,
                                     const std::vector<SlotUse>& running, const Limits& limits);

}  // namespace ferry::server
