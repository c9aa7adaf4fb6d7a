// ferry-agent's configuration file (docs/control-plane.md, "Agent API"):
//   {"listen": "127.0.0.11:7801", "token": "secret", "libvirt_uri": "qemu+tcp://127.0.0.11/system",
//    "migration_uri": "tcp://127.0.0.11", "host_id": "host1", "state_dir": "/var/lib/ferry-agent"}
// Every field is required; an unknown field is an error (a typo must not silently fall back to
// a default). Errors are kInvalidArgument naming the file and the field.
//
// Thread-safety: pure functions over values.
#pragma once

#include <string>
#include <string_view>

#include "common/status.h"

namespace ferry::agent {

struct AgentConfig {
  std::string listen;         // "HOST:PORT" the API is served on (port 1-65535)
  std::string token;          // the bearer token every request must carry
  std::string libvirt_uri;    // this host's libvirtd
  std::string migration_uri;  // QEMU migration streams to this host: "tcp://127.0.0.11"
  std::string host_id;        // [A-Za-z0-9._-]{1,64}
  std::string state_dir;      // absolute path; jobs are kept in state_dir/jobs
};

Result<AgentConfig> ParseAgentConfig(std::string_view json);
// Reads and parses the file at `path` (at most 1 MiB); errors start with the path.
Result<AgentConfig> LoadAgentConfig(const std::string& path);

}  // namespace ferry::agent
