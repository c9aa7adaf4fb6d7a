// A small HTTP+JSON server and client for Ferry's REST APIs (ferryd's /api/v1 and the
// agent's /agent/v1), over cpp-httplib, which stays inside http.cc.
//
// Server: routes are "METHOD /path/{param}/..." patterns; every request must carry
// "Authorization: Bearer <token>" (401 otherwise) unless the route is registered public.
// Handlers return an HttpResponse; HttpResponse::Error(status) makes the standard error body
// (api/errors.h). A handler that returns a non-OK Status through Reply() gets the same.
// Request bodies are capped (kMaxBodyBytes).
//
// Client: one base URL and token; each call returns the body of a 2xx answer, or the Status
// the server's error body carries (same ErrorCode), or kIo when the server cannot be reached
// (naming the URL).
//
// Thread-safety: HttpServer runs handlers on its own thread pool, concurrently; Route() must
// be called before Start(). HttpClient is thread-safe (each call opens its own connection).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"

namespace ferry::api {

constexpr size_t kMaxBodyBytes = 4 << 20;

struct HttpRequest {
  std::string method;
  std::string path;
  std::map<std::string, std::string> path_params;  // {name} parts of the route
  std::map<std::string, std::string> query;
  std::string body;
  std::string content_type;  // the request's Content-Type header ("" if none)

  // The path parameter (must exist in the route) / a query parameter or `fallback`.
  const std::string& Param(const std::string& name) const;
  std::string Query(const std::string& name, const std::string& fallback = "") const;
};

struct HttpResponse {
  int status = 200;
  std::string body;
  std::string content_type = "application/json";

  static HttpResponse Json(std::string body, int status = 200);
  static HttpResponse Error(const Status& status, const std::string& details_json = "");
  static HttpResponse Text(std::string body, std::string content_type = "text/plain");
  static HttpResponse NoContent();
};

using HttpHandler = std::function<HttpResponse(const HttpRequest&)>;

class HttpServer {
 public:
  explicit HttpServer(std::string token);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // pattern: "GET /api/v1/migrations/{id}".
  void Route(const std::string& pattern, HttpHandler handler, bool requires_token = true);

  // Binds `listen` ("127.0.0.1:7800"; port 0 = any free port) and serves on a background
  // thread. kIo if the address cannot be bound.
  Status Start(const std::string& listen);
  int port() const;
  // Stops accepting and waits for the serving thread.
  void Stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

struct HttpClientOptions {
  int64_t connect_timeout_ms = 3000;
  int64_t read_timeout_ms = 30000;
};

class HttpClient {
 public:
  // base_url: "http://127.0.0.1:7800".
  HttpClient(std::string base_url, std::string token, HttpClientOptions options = {});
  ~HttpClient();

  const std::string& base_url() const { return base_url_; }

  Result<std::string> Get(const std::string& path) const;
  Result<std::string> Post(const std::string& path, const std::string& body) const;
  Result<std::string> Delete(const std::string& path) const;

  // Like the calls above but also returns the error details object (JSON) of a failure.
  // content_type: the request body's (POST, PUT), e.g. "application/yaml" for a plan.
  Result<std::string> Send(const std::string& method, const std::string& path,
                           const std::string& body, std::string* error_details,
                           const std::string& content_type = "application/json") const;

 private:
  std::string base_url_;
  std::string token_;
  HttpClientOptions options_;
};

// "a b/c" -> "a%20b%2Fc" for a path segment or query value.
std::string UrlEncode(const std::string& text);

}  // namespace ferry::api
