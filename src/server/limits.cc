#include "server/limits.h"

#include <map>
#include <set>

namespace ferry::server {
namespace {

bool UsesLive(const std::string& type) {
  return type == "live" || type == "live-vsm" || type == "quick";
}
bool UsesStorage(const std::string& type) { return type == "live-storage" || type == "live-vsm"; }
bool UsesCopies(const std::string& type) { return type == "cold" || type == "stage"; }

// Whether `use` holds any slot now.
bool HoldsSlots(const SlotUse& use) { return !UsesCopies(use.type) || use.copying; }

// The hosts whose slots of each kind `use` takes.
std::set<std::string> LiveHosts(const SlotUse& use) {
  if (!UsesLive(use.type)) return {};
  return {use.source, use.target};
}
std::set<std::string> StorageHosts(const SlotUse& use) {
  if (!UsesStorage(use.type)) return {};
  return {use.source, use.target};
}

// Disks needed (or used) per pool.
std::map<std::string, int> PoolCopies(const SlotUse& use) {
  std::map<std::string, int> out;
  if (!UsesCopies(use.type)) return out;
  for (const std::string& p : use.copy_pools) ++out[p];
  return out;
}

// May `need` more copies join `used` under `limit`? One migration alone always may.
bool CopiesFit(int used, int need, int limit) {
  return limit <= 0 || used == 0 || used + need <= limit;
}

}  // namespace

bool CopiesInPhase(const std::string& phase) {
  return phase != "awaiting-deploy" && phase != "defining" && phase != "booting" &&
         phase != "finalizing" && phase != "done";
}

std::optional<std::string> BlockedBy(const SlotUse& candidate, const std::vector<SlotUse>& running,
                                     const Limits& limits) {
  std::vector<const SlotUse*> holding;
  for (const SlotUse& r : running) {
    if (HoldsSlots(r)) holding.push_back(&r);
  }
  if (limits.total > 0 && static_cast<int>(holding.size()) >= limits.total) {
    return std::to_string(holding.size()) + " migrations running, limit " +
           std::to_string(limits.total) + " in total";
  }
  std::map<std::string, int> live;
  std::map<std::string, int> storage;
  std::map<std::string, int> source_copies;
  std::map<std::string, int> pool_copies;
  for (const SlotUse* r : holding) {
    for (const std::string& h : LiveHosts(*r)) ++live[h];
    for (const std::string& h : StorageHosts(*r)) ++storage[h];
    if (UsesCopies(r->type)) source_copies[r->source] += static_cast<int>(r->copy_pools.size());
    for (const auto& [pool, n] : PoolCopies(*r)) pool_copies[pool] += n;
  }
  if (limits.live_per_host > 0) {
    for (const std::string& h : LiveHosts(candidate)) {
      if (live[h] >= limits.live_per_host) {
        return h + ": " + std::to_string(live[h]) + " live migration(s) running, limit " +
               std::to_string(limits.live_per_host) + " per host";
      }
    }
  }
  if (limits.storage_per_host > 0) {
    for (const std::string& h : StorageHosts(candidate)) {
      if (storage[h] >= limits.storage_per_host) {
        return h + ": " + std::to_string(storage[h]) + " storage migration(s) running, limit " +
               std::to_string(limits.storage_per_host) + " per host";
      }
    }
  }
  if (UsesCopies(candidate.type)) {
    int need = static_cast<int>(candidate.copy_pools.size());
    int used = source_copies[candidate.source];
    if (!CopiesFit(used, need, limits.copies_per_source_host)) {
      return candidate.source + ": " + std::to_string(used) +
             " disk(s) being copied out, this migration needs " + std::to_string(need) +
             ", limit " + std::to_string(limits.copies_per_source_host) + " per source host";
    }
    for (const auto& [pool, n] : PoolCopies(candidate)) {
      int in_pool = pool_copies[pool];
      if (!CopiesFit(in_pool, n, limits.copies_per_target_pool)) {
        return "pool " + pool + ": " + std::to_string(in_pool) +
               " disk(s) being copied in, this migration needs " + std::to_string(n) + ", limit " +
               std::to_string(limits.copies_per_target_pool) + " per target pool";
      }
    }
  }
  return std::nullopt;
}

}  // namespace ferry::server
