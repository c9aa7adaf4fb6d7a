// The scheduler's admission rule: may one more migration start next to those running now?
// A migration's cost is counted where it really loads: a live, live-vsm or quick move uses a
// live slot on its source and on its target host; a live-storage move uses a storage slot on
// its host, a live-vsm move a storage slot on both; a cold or stage migration uses one copy
// slot per disk on its source host and one per disk in the pool (or share) it writes to, but
// only while it copies (phases starting, exporting, copying, verifying; a migration waiting
// in awaiting-deploy, defining or booting holds no slot at all, so a plan waiting days for
// its deploy blocks nothing). Every migration that holds slots uses one global slot.
//
// A cold migration with more disks than a copy limit would never fit: it may start when
// nothing else copies on that host or pool (the limit is then exceeded by that one only).
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
  // Cold and stage migrations: the pool each disk is written to, one entry per disk, named
  // "HOST/POOL" (a share target: "HOST/share:NAME").
  std::vector<std::string> copy_pools;
  bool copying = true;  // cold and stage: in a phase that copies (see above)
};

// Whether a cold or stage migration in `phase` holds copy slots.
bool CopiesInPhase(const std::string& phase);

// nullopt if `candidate` fits; else why not ("host1: 1 live migration running, limit 1").
std::optional<std::string> BlockedBy(const SlotUse& candidate, const std::vector<SlotUse>& running,
                                     const Limits& limits);

}  // namespace ferry::server
