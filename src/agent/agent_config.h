// ferry-agent's configuration file (docs/control-plane.md, "Agent API"):
//   {"listen": "127.0.0.11:7801", "token": "secret", "libvirt_uri": "qemu+tcp://127.0.0.11/system",
//    "migration_uri": "tcp://127.0.0.11", "host_id": "host1", "state_dir": "/var/lib/ferry-agent",
//    "shares": {"exports": "/srv/exports"}, "data_address": "127.0.0.11",
//    "default_domain_type": "kvm", "copy_workers": 4}
// Every field up to state_dir is required; the rest are optional. An unknown
// field is an error (a typo must not silently fall back to a default). Errors are
// kInvalidArgument naming the file and the field.
//
// Thread-safety: pure functions over values.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/status.h"

namespace ferry::agent {

struct AgentConfig {
  std::string listen;         // "HOST:PORT" the API is served on (port 1-65535)
  std::string token;          // the bearer token every request must carry
  std::string libvirt_uri;    // this host's libvirtd
  std::string migration_uri;  // QEMU migration streams to this host: "tcp://127.0.0.11"
  std::string host_id;        // [A-Za-z0-9._-]{1,64}
  std::string state_dir;      // absolute path; jobs are kept in state_dir/jobs
  // Export shares (docs/plans.md, "Sources"): name ([A-Za-z0-9._-]{1,64}) -> absolute folder,
  // in the file's order.
  std::vector<std::pair<std::string, std::string>> shares;
  // The host cold-migration NBD exports listen on (port 0); ParseAgentConfig defaults it to
  // the host part of `listen`. "" (a config made in code): the service uses ListenHost(listen).
  std::string data_address;
  // Cold jobs on this host (the target side): the libvirt domain type of the VMs they define
  // when the job does not say ("kvm", or "qemu" for TCG hosts), and the copy threads per disk.
  std::string default_domain_type = "kvm";
  int copy_workers = 4;
};

bool IsValidShareName(std::string_view name);
// "127.0.0.11:7801" -> "127.0.0.11", "[::1]:7801" -> "::1".
std::string ListenHost(const std::string& listen);

Result<AgentConfig> ParseAgentConfig(std::string_view json);
// Reads and parses the file at `path` (at most 1 MiB); errors start with the path.
Result<AgentConfig> LoadAgentConfig(const std::string& path);

}  // namespace ferry::agent
