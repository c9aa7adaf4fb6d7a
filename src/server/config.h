// ferryd's configuration file (docs/control-plane.md): where it listens, its token, its
// database, the scheduler's limits, the polling periods, and hosts to register at start.
//
// Thread-safety: plain values.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"

namespace ferry::server {

// How many migrations may run at once; 0 = no limit. A live-type migration (live, live-vsm,
// quick) counts against both its source and its target host; a storage move (live-storage,
// live-vsm) counts against its host's storage slots (both hosts for live-vsm). A cold or
// stage migration (docs/plans.md) takes one copy slot per disk on its source host and one
// per disk in the pool (or share) it writes to, only while it copies (limits.h).
struct Limits {
  int live_per_host = 2;
  int storage_per_host = 2;
  int total = 8;
  int copies_per_source_host = 4;  // disks being copied out of one host
  int copies_per_target_pool = 4;  // disks being written into one pool or share
};

struct HostEntry {
  std::string id;
  std::string name;
  std::string cluster;
  std::string agent_url;
  std::string agent_token;
};

struct ServerConfig {
  std::string listen = "127.0.0.1:7800";
  std::string token;
  std::string database = "/var/lib/ferry/ferry.db";
  Limits limits;
  int64_t poll_ms = 500;
  int64_t inventory_refresh_ms = 10000;
  int64_t agent_timeout_ms = 10000;
  // Between the attempts of a cold job that failed with io (docs/plans.md).
  int64_t cold_retry_delay_ms = 5000;
  std::vector<HostEntry> hosts;
};

// Parses the JSON text of a config file; errors name the field ("limits.total: expected a
// non-negative integer").
Result<ServerConfig> ParseServerConfig(const std::string& json_text);
Result<ServerConfig> LoadServerConfig(const std::string& path);

}  // namespace ferry::server
