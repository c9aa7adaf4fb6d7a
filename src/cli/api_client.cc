// ferryd connection settings and calls (see api_client.h).
#include "cli/api_client.h"

#include <cstdlib>

#include "cli/output.h"

namespace ferry::cli {

namespace {

constexpr char kServerHelp[] = "ferryd URL (env FERRY_SERVER; default http://127.0.0.1:7800)";
constexpr char kTokenHelp[] = "ferryd API token (env FERRY_TOKEN)";
constexpr char kOutputHelp[] = "table|json";

std::string FirstSet(const std::string& a, const std::string& b, const char* env,
                     const std::string& fallback) {
  if (!a.empty()) return a;
  if (!b.empty()) return b;
  if (env != nullptr) {
    const char* e = std::getenv(env);
    if (e != nullptr && *e != '\0') return e;
  }
  return fallback;
}

}  // namespace

void AddGlobalServerOptions(CLI::App& app, ServerArgs* args) {
  app.add_option("--server", args->server, kServerHelp);
  app.add_option("--token", args->token, kTokenHelp);
  app.add_option("--output", args->output, kOutputHelp);
}

void AddServerOptions(CLI::App* cmd, ServerArgs* args) {
  cmd->add_option("--server", args->server, kServerHelp);
  cmd->add_option("--token", args->token, kTokenHelp);
  cmd->add_option("--output", args->output, kOutputHelp);
}

Result<Connection> ResolveConnection(const ServerArgs& global, const ServerArgs& local) {
  Connection c;
  FERRY_ASSIGN_OR_RETURN(c.mode,
                         ParseOutputMode(FirstSet(local.output, global.output, nullptr, "table")));
  c.server = FirstSet(local.server, global.server, "FERRY_SERVER", kDefaultServer);
  c.token = FirstSet(local.token, global.token, "FERRY_TOKEN", "");
  const bool http = c.server.rfind("http://", 0) == 0 || c.server.rfind("https://", 0) == 0;
  const size_t host_at = c.server.find("://") + 3;
  if (!http || c.server.size() <= host_at) {
    return Status::InvalidArgument("--server must be http://HOST[:PORT], not '" + c.server + "'");
  }
  return c;
}

ApiClient::ApiClient(const Connection& connection) : client_(connection.server, connection.token) {}

Result<std::string> ApiClient::Get(const std::string& path) const {
  return Call("GET", path, "", nullptr);
}

Result<std::string> ApiClient::Delete(const std::string& path) const {
  return Call("DELETE", path, "", nullptr);
}

Result<std::string> ApiClient::Post(const std::string& path, const std::string& body,
                                    CallFailure* failure, const std::string& content_type) const {
  return Call("POST", path, body, failure, content_type);
}

Result<std::string> ApiClient::Call(const std::string& method, const std::string& path,
                                    const std::string& body, CallFailure* failure,
                                    const std::string& content_type) const {
  std::string details;
  Result<std::string> r = client_.Send(method, path, body, &details, content_type);
  if (r.ok()) return r;
  Status s = r.status();
  if (details.empty()) details = "{}";
  Result<std::vector<CheckRecord>> checks = ParseValidationDetails(details);
  const bool validation = checks.ok() && (s.code() == ErrorCode::kFailedPrecondition ||
                                          s.code() == ErrorCode::kInternal);
  if (validation) s = Status(ErrorCode::kFailedPrecondition, s.message());
  if (failure != nullptr) {
    failure->details_json = details;
    if (validation) failure->checks = std::move(*checks);
  }
  // Transport failures already name the URL; server errors get the call as context.
  if (s.message().rfind(client_.base_url(), 0) == 0) {
    if (s.code() != ErrorCode::kIo) return s;
    return s.WithContext("cannot reach ferryd (--server, FERRY_SERVER)");
  }
  return s.WithContext(method + " " + path);
}

}  // namespace ferry::cli
