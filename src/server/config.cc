#include "server/config.h"

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

namespace ferry::server {
namespace {

using nlohmann::json;

Status Expect(bool ok, const std::string& field, const std::string& what) {
  if (ok) return Status::Ok();
  return Status::InvalidArgument(field + ": expected " + what);
}

Status ReadString(const json& j, const char* key, const std::string& path, std::string* out,
                  bool required) {
  if (!j.contains(key)) {
    if (required) return Status::InvalidArgument(path + key + ": missing");
    return Status::Ok();
  }
  FERRY_TRY(Expect(j[key].is_string(), path + key, "a string"));
  *out = j[key].get<std::string>();
  return Status::Ok();
}

Status ReadInt(const json& j, const char* key, const std::string& path, int64_t min, int64_t max,
               int64_t* out) {
  if (!j.contains(key)) return Status::Ok();
  const json& v = j[key];
  FERRY_TRY(Expect(v.is_number_integer() && v.get<int64_t>() >= min && v.get<int64_t>() <= max,
                   path + key,
                   "an integer in [" + std::to_string(min) + ", " + std::to_string(max) + "]"));
  *out = v.get<int64_t>();
  return Status::Ok();
}

}  // namespace

Result<ServerConfig> ParseServerConfig(const std::string& json_text) {
  json j = json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return Status::InvalidArgument("config: not a JSON object");
  }
  ServerConfig c;
  FERRY_TRY(ReadString(j, "listen", "", &c.listen, false));
  FERRY_TRY(ReadString(j, "token", "", &c.token, true));
  if (c.token.size() < 8) return Status::InvalidArgument("token: must be at least 8 characters");
  FERRY_TRY(ReadString(j, "database", "", &c.database, false));
  FERRY_TRY(ReadInt(j, "poll_ms", "", 50, 60000, &c.poll_ms));
  FERRY_TRY(ReadInt(j, "inventory_refresh_ms", "", 500, 3600000, &c.inventory_refresh_ms));
  FERRY_TRY(ReadInt(j, "agent_timeout_ms", "", 100, 600000, &c.agent_timeout_ms));
  FERRY_TRY(ReadInt(j, "cold_retry_delay_ms", "", 0, 600000, &c.cold_retry_delay_ms));
  if (j.contains("limits")) {
    const json& l = j["limits"];
    FERRY_TRY(Expect(l.is_object(), "limits", "an object"));
    int64_t v = c.limits.live_per_host;
    FERRY_TRY(ReadInt(l, "live_per_host", "limits.", 0, 1000, &v));
    c.limits.live_per_host = static_cast<int>(v);
    v = c.limits.storage_per_host;
    FERRY_TRY(ReadInt(l, "storage_per_host", "limits.", 0, 1000, &v));
    c.limits.storage_per_host = static_cast<int>(v);
    v = c.limits.total;
    FERRY_TRY(ReadInt(l, "total", "limits.", 0, 100000, &v));
    c.limits.total = static_cast<int>(v);
    v = c.limits.copies_per_source_host;
    FERRY_TRY(ReadInt(l, "copies_per_source_host", "limits.", 0, 1000, &v));
    c.limits.copies_per_source_host = static_cast<int>(v);
    v = c.limits.copies_per_target_pool;
    FERRY_TRY(ReadInt(l, "copies_per_target_pool", "limits.", 0, 1000, &v));
    c.limits.copies_per_target_pool = static_cast<int>(v);
  }
  if (j.contains("hosts")) {
    FERRY_TRY(Expect(j["hosts"].is_array(), "hosts", "an array"));
    for (size_t i = 0; i < j["hosts"].size(); ++i) {
      const json& h = j["hosts"][i];
      std::string path = "hosts[" + std::to_string(i) + "].";
      FERRY_TRY(Expect(h.is_object(), "hosts[" + std::to_string(i) + "]", "an object"));
      HostEntry e;
      FERRY_TRY(ReadString(h, "id", path, &e.id, true));
      FERRY_TRY(ReadString(h, "name", path, &e.name, false));
      FERRY_TRY(ReadString(h, "cluster", path, &e.cluster, false));
      FERRY_TRY(ReadString(h, "agent_url", path, &e.agent_url, true));
      FERRY_TRY(ReadString(h, "agent_token", path, &e.agent_token, false));
      if (e.name.empty()) e.name = e.id;
      c.hosts.push_back(std::move(e));
    }
  }
  return c;
}

Result<ServerConfig> LoadServerConfig(const std::string& path) {
  std::ifstream in(path);
  if (!in) return Status::NotFound("config file " + path + " cannot be read");
  std::stringstream ss;
  ss << in.rdbuf();
  Result<ServerConfig> c = ParseServerConfig(ss.str());
  if (!c.ok()) return c.status().WithContext(path);
  return c;
}

}  // namespace ferry::server
