// The management commands' connection to ferryd: where it is (--server / FERRY_SERVER,
// default http://127.0.0.1:7800), the bearer token (--token / FERRY_TOKEN), the output mode
// (--output table|json), and calls over api::HttpClient that turn ferryd's error envelope
// back into a Status with the same code (so the exit status is ExitCodeFor(code)).
//
// The three options are accepted before the command (`ferry --server URL hosts`, registered
// by AddGlobalServerOptions on the app) and after it (`ferry hosts --server URL`, registered
// per command by AddServerOptions); the command's own value wins, then the global one, then
// the environment, then the default.
//
// Thread-safety: ServerArgs is plain data written while CLI11 parses; ApiClient is as
// thread-safe as api::HttpClient (each call opens its own connection).
#pragma once

#include <CLI/CLI.hpp>
#include <string>
#include <vector>

#include "api/http.h"
#include "cli/api_model.h"
#include "cli/progress.h"
#include "common/status.h"

namespace ferry::cli {

constexpr char kDefaultServer[] = "http://127.0.0.1:7800";

struct ServerArgs {
  std::string server;
  std::string token;
  std::string output;
};

void AddGlobalServerOptions(CLI::App& app, ServerArgs* args);
void AddServerOptions(CLI::App* cmd, ServerArgs* args);

struct Connection {
  std::string server;
  std::string token;
  OutputMode mode = OutputMode::kText;
};

// local: the command's options; global: the app's. kInvalidArgument for a bad --output or a
// server URL that is not http://HOST[:PORT] or https://....
Result<Connection> ResolveConnection(const ServerArgs& global, const ServerArgs& local);

// What a failed call returns besides its Status: the error's details object (JSON text, "{}"
// when none) and, for a failed validation, the checks it carried.
struct CallFailure {
  std::string details_json = "{}";
  std::vector<CheckRecord> checks;
};

class ApiClient {
 public:
  explicit ApiClient(const Connection& connection);

  const std::string& server() const { return client_.base_url(); }

  Result<std::string> Get(const std::string& path) const;
  Result<std::string> Delete(const std::string& path) const;
  // failure (optional) receives the error details; a 422 whose details carry the check list
  // comes back as kFailedPrecondition whatever wire code the server used for it
  // ("failed_precondition", or "validation_failed" as docs/control-plane.md names it); the
  // checks may come as details.checks, details.plans[].checks or details.vms[].checks.
  // content_type: the body's ("application/yaml" for a plan document).
  Result<std::string> Post(const std::string& path, const std::string& body,
                           CallFailure* failure = nullptr,
                           const std::string& content_type = "application/json") const;

 private:
  Result<std::string> Call(const std::string& method, const std::string& path,
                           const std::string& body, CallFailure* failure,
                           const std::string& content_type = "application/json") const;

  api::HttpClient client_;
};

}  // namespace ferry::cli
