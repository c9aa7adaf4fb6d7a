#include "server/limits.h"

#include <map>
#include <set>

namespace ferry::server {
namespace {

bool UsesLive(const std::string& type) {
  return type == "live" || type == "live-vsm" || type == "quick";
}
bool UsesStorage(const std::string& type) { return type == "live-storage" || type == "live-vsm"; }

// The hosts whose slots of each kind `use` takes.
std::set<std::string> LiveHosts(const SlotUse& use) {
  if (!UsesLive(use.type)) return {};
  return {use.source, use.target};
}
std::set<std::string> StorageHosts(const SlotUse& use) {
  if (!UsesStorage(use.type)) return {};
  return {use.source, use.target};
}

}  // namespace

std::optional<std::string> BlockedBy(const SlotUse& candidate,
                                     const std::vector<SlotUse>& running, const Limits& limits) {
  if (limits.total > 0 && static_cast<int>(running.size()) >= limits.total) {
    return std::to_string(running.size()) + " migrations running, limit " +
           std::to_string(limits.total) + " in total";
  }
  std::map<std::string, int> live;
  std::map<std::string, int> storage;
  for (const SlotUse& r : running) {
    for (const std::string& h : LiveHosts(r)) ++live[h];
    for (const std::string& h : StorageHosts(r)) ++storage[h];
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
  return std::nullopt;
}

}  // namespace ferry::server
