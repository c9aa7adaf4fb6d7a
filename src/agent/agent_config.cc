// Parsing and validation of ferry-agent's configuration (see agent_config.h).
#include "agent/agent_config.h"

#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>

namespace ferry::agent {

namespace {

using Json = nlohmann::json;

constexpr size_t kMaxConfigBytes = 1 << 20;
constexpr size_t kMaxHostIdLength = 64;
constexpr int kMaxPort = 65535;
constexpr size_t kMaxShares = 256;
constexpr int64_t kMaxCopyWorkers = 64;

Status Bad(std::string_view field, const std::string& what) {
  return Status::InvalidArgument(std::string(field) + ": " + what);
}

Status CheckListen(const std::string& listen) {
  const size_t colon = listen.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == listen.size()) {
    return Bad("listen", "\"" + listen + "\" is not HOST:PORT");
  }
  const std::string port = listen.substr(colon + 1);
  if (port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos ||
      std::stoi(port) < 1 || std::stoi(port) > kMaxPort) {
    return Bad("listen", "port \"" + port + "\" is not a number from 1 to 65535");
  }
  return Status::Ok();
}

Status CheckUri(std::string_view field, const std::string& uri) {
  const size_t scheme = uri.find("://");
  if (scheme == std::string::npos || scheme == 0) {
    return Bad(field, "\"" + uri + "\" is not a URI (SCHEME://...)");
  }
  for (char c : uri) {
    if (static_cast<unsigned char>(c) <= ' ') return Bad(field, "contains a space or control byte");
  }
  return Status::Ok();
}

}  // namespace

Result<AgentConfig> ParseAgentConfig(std::string_view text) {
  Json j = Json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return Status::InvalidArgument("not valid JSON");
  if (!j.is_object()) return Status::InvalidArgument("expected a JSON object");

  AgentConfig c;
  struct Field {
    const char* name;
    std::string* out;
  };
  const Field fields[] = {{"listen", &c.listen},           {"token", &c.token},
                          {"libvirt_uri", &c.libvirt_uri}, {"migration_uri", &c.migration_uri},
                          {"host_id", &c.host_id},         {"state_dir", &c.state_dir}};
  const char* const optional_fields[] = {"shares", "data_address", "default_domain_type",
                                         "copy_workers"};
  for (const auto& [key, value] : j.items()) {
    bool known = false;
    for (const Field& f : fields) known = known || key == f.name;
    for (const char* f : optional_fields) known = known || key == f;
    if (!known) {
      return Status::InvalidArgument("unknown field \"" + key.substr(0, 64) +
                                     "\" (expected listen, token, libvirt_uri, migration_uri, "
                                     "host_id, state_dir, shares, data_address, "
                                     "default_domain_type, copy_workers)");
    }
  }
  for (const Field& f : fields) {
    auto it = j.find(f.name);
    if (it == j.end()) return Bad(f.name, "missing required field");
    if (!it->is_string()) return Bad(f.name, "expected a string");
    *f.out = it->get<std::string>();
    if (f.out->empty()) return Bad(f.name, "must not be empty");
  }

  FERRY_TRY(CheckListen(c.listen));
  for (char ch : c.token) {
    if (static_cast<unsigned char>(ch) <= ' ' || ch == 0x7f) {
      return Bad("token", "contains a space or control byte (it travels in an HTTP header)");
    }
  }
  FERRY_TRY(CheckUri("libvirt_uri", c.libvirt_uri));
  FERRY_TRY(CheckUri("migration_uri", c.migration_uri));
  if (c.host_id.size() > kMaxHostIdLength ||
      c.host_id.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                  "0123456789._-") != std::string::npos) {
    return Bad("host_id", "\"" + c.host_id + "\" must be 1-64 characters of [A-Za-z0-9._-]");
  }
  if (c.state_dir[0] != '/') return Bad("state_dir", "\"" + c.state_dir + "\" is not absolute");

  if (auto it = j.find("shares"); it != j.end()) {
    if (!it->is_object()) return Bad("shares", "expected an object of name: folder");
    if (it->size() > kMaxShares) {
      return Bad("shares", "more than " + std::to_string(kMaxShares) + " shares");
    }
    for (const auto& [name, folder] : it->items()) {
      const std::string field = "shares." + name.substr(0, 64);
      if (!IsValidShareName(name)) {
        return Bad(field, "a share name must be 1-64 characters of [A-Za-z0-9._-]");
      }
      if (!folder.is_string()) return Bad(field, "expected a string (the share's folder)");
      std::string path = folder.get<std::string>();
      if (path.empty() || path[0] != '/') {
        return Bad(field, "\"" + path.substr(0, 256) + "\" is not an absolute path");
      }
      while (path.size() > 1 && path.back() == '/') path.pop_back();
      c.shares.emplace_back(name, std::move(path));
    }
  }
  if (auto it = j.find("data_address"); it != j.end()) {
    if (!it->is_string()) return Bad("data_address", "expected a string");
    c.data_address = it->get<std::string>();
    if (c.data_address.empty()) return Bad("data_address", "must not be empty");
    for (char ch : c.data_address) {
      if (static_cast<unsigned char>(ch) <= ' ' || ch == '/' || ch == '?' || ch == '#') {
        return Bad("data_address", "\"" + c.data_address.substr(0, 64) +
                                       "\" is not a host name or address (no port)");
      }
    }
  }
  if (c.data_address.empty()) c.data_address = ListenHost(c.listen);
  if (auto it = j.find("default_domain_type"); it != j.end()) {
    if (!it->is_string()) return Bad("default_domain_type", "expected a string");
    c.default_domain_type = it->get<std::string>();
    if (c.default_domain_type != "kvm" && c.default_domain_type != "qemu") {
      return Bad("default_domain_type",
                 "\"" + c.default_domain_type.substr(0, 64) + "\": expected kvm or qemu");
    }
  }
  if (auto it = j.find("copy_workers"); it != j.end()) {
    if (!it->is_number_integer() || it->get<int64_t>() < 1 ||
        it->get<int64_t>() > kMaxCopyWorkers) {
      return Bad("copy_workers",
                 "expected an integer from 1 to " + std::to_string(kMaxCopyWorkers));
    }
    c.copy_workers = static_cast<int>(it->get<int64_t>());
  }
  return c;
}

bool IsValidShareName(std::string_view name) {
  return !name.empty() && name.size() <= kMaxHostIdLength &&
         name.find_first_not_of(
             "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
             "0123456789._-") == std::string_view::npos;
}

std::string ListenHost(const std::string& listen) {
  const size_t colon = listen.rfind(':');
  std::string host = colon == std::string::npos ? listen : listen.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  return host;
}

Result<AgentConfig> LoadAgentConfig(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::NotFound(path + ": cannot open the config file");
  std::string text;
  text.resize(kMaxConfigBytes + 1);
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  text.resize(static_cast<size_t>(in.gcount()));
  if (text.size() > kMaxConfigBytes) {
    return Status::TooLarge(path + ": config file larger than 1 MiB");
  }
  return ParseAgentConfig(text).WithContext(path);
}

}  // namespace ferry::agent
