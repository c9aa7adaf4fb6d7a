// HttpServer / HttpClient over cpp-httplib (see http.h).
#include "api/http.h"

#include <httplib.h>

#include <regex>
#include <thread>
#include <utility>

#include "api/errors.h"

namespace ferry::api {

namespace {

constexpr char kJsonType[] = "application/json";

bool SplitHostPort(const std::string& listen, std::string* host, int* port) {
  size_t colon = listen.rfind(':');
  if (colon == std::string::npos || colon == 0) return false;
  *host = listen.substr(0, colon);
  std::string p = listen.substr(colon + 1);
  if (p.empty() || p.size() > 5) return false;
  int value = 0;
  for (char c : p) {
    if (c < '0' || c > '9') return false;
    value = value * 10 + (c - '0');
  }
  if (value > 65535) return false;
  *port = value;
  return true;
}

// True if `header` is "Bearer <token>" (constant time in the token's length).
bool TokenMatches(const std::string& header, const std::string& token) {
  constexpr std::string_view kPrefix = "Bearer ";
  if (header.size() != kPrefix.size() + token.size()) return false;
  if (header.compare(0, kPrefix.size(), kPrefix) != 0) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < token.size(); ++i) {
    diff |= static_cast<unsigned char>(header[kPrefix.size() + i] ^ token[i]);
  }
  return diff == 0;
}

}  // namespace

const std::string& HttpRequest::Param(const std::string& name) const {
  static const std::string kEmpty;
  auto it = path_params.find(name);
  return it == path_params.end() ? kEmpty : it->second;
}

std::string HttpRequest::Query(const std::string& name, const std::string& fallback) const {
  auto it = query.find(name);
  return it == query.end() ? fallback : it->second;
}

HttpResponse HttpResponse::Json(std::string body, int status) {
  HttpResponse r;
  r.status = status;
  r.body = std::move(body);
  return r;
}

HttpResponse HttpResponse::Error(const Status& status, const std::string& details_json) {
  HttpResponse r;
  r.status = HttpStatusFor(status.code());
  r.body = ErrorBody(status, details_json);
  return r;
}

HttpResponse HttpResponse::Text(std::string body, std::string content_type) {
  HttpResponse r;
  r.body = std::move(body);
  r.content_type = std::move(content_type);
  return r;
}

HttpResponse HttpResponse::NoContent() {
  HttpResponse r;
  r.status = 204;
  r.content_type.clear();
  return r;
}

struct HttpServer::Impl {
  struct Route {
    std::string method;
    std::regex regex;
    std::vector<std::string> names;
    HttpHandler handler;
    bool requires_token;
  };

  std::string token;
  httplib::Server server;
  std::vector<Route> routes;
  std::thread thread;
  int port = 0;

  void Dispatch(const httplib::Request& req, httplib::Response& res) const {
    HttpResponse out = Handle(req);
    res.status = out.status;
    if (!out.content_type.empty()) res.set_content(out.body, out.content_type.c_str());
  }

  HttpResponse Handle(const httplib::Request& req) const {
    bool path_matched = false;
    for (const Route& route : routes) {
      std::smatch m;
      if (!std::regex_match(req.path, m, route.regex)) continue;
      path_matched = true;
      if (route.method != req.method) continue;
      if (route.requires_token && !TokenMatches(req.get_header_value("Authorization"), token)) {
        HttpResponse r = HttpResponse::Error(
            Status::PermissionDenied("missing or wrong bearer token"));
        r.status = 401;
        return r;
      }
      HttpRequest in;
      in.method = req.method;
      in.path = req.path;
      in.body = req.body;
      in.content_type = req.get_header_value("Content-Type");
      for (size_t i = 0; i < route.names.size(); ++i) in.path_params[route.names[i]] = m[i + 1];
      for (const auto& [k, v] : req.params) in.query[k] = v;
      return route.handler(in);
    }
    if (path_matched) {
      HttpResponse r = HttpResponse::Error(
          Status::InvalidArgument("method " + req.method + " not allowed on " + req.path));
      r.status = 405;
      return r;
    }
    return HttpResponse::Error(Status::NotFound("no such endpoint: " + req.method + " " +
                                                req.path));
  }
};

HttpServer::HttpServer(std::string token) : impl_(std::make_unique<Impl>()) {
  impl_->token = std::move(token);
}

HttpServer::~HttpServer() { Stop(); }

void HttpServer::Route(const std::string& pattern, HttpHandler handler, bool requires_token) {
  size_t space = pattern.find(' ');
  Impl::Route route;
  route.method = pattern.substr(0, space);
  std::string path = pattern.substr(space + 1);
  std::string regex;
  for (size_t i = 0; i < path.size(); ++i) {
    if (path[i] == '{') {
      size_t end = path.find('}', i);
      route.names.push_back(path.substr(i + 1, end - i - 1));
      regex += "([^/]+)";
      i = end;
    } else if (std::string_view(".+*?()[]^$|\\").find(path[i]) != std::string_view::npos) {
      regex += '\\';
      regex += path[i];
    } else {
      regex += path[i];
    }
  }
  route.regex = std::regex(regex);
  route.handler = std::move(handler);
  route.requires_token = requires_token;
  impl_->routes.push_back(std::move(route));
}

Status HttpServer::Start(const std::string& listen) {
  std::string host;
  int port = 0;
  if (!SplitHostPort(listen, &host, &port)) {
    return Status::InvalidArgument("listen address \"" + listen + "\" is not HOST:PORT");
  }
  httplib::Server& s = impl_->server;
  s.set_payload_max_length(kMaxBodyBytes);
  s.set_keep_alive_max_count(100);
  s.set_exception_handler([](const httplib::Request&, httplib::Response& res,
                             std::exception_ptr) {
    res.status = 500;
    res.set_content(ErrorBody(Status::Internal("unhandled exception in a request handler")),
                    kJsonType);
  });
  auto dispatch = [this](const httplib::Request& req, httplib::Response& res) {
    impl_->Dispatch(req, res);
  };
  const std::string any = ".*";
  s.Get(any, dispatch);
  s.Post(any, dispatch);
  s.Put(any, dispatch);
  s.Delete(any, dispatch);
  s.Patch(any, dispatch);
  if (port == 0) {
    port = s.bind_to_any_port(host);
    if (port <= 0) return Status::Io("cannot bind " + listen);
  } else if (!s.bind_to_port(host, port)) {
    return Status::Io("cannot bind " + listen + " (address in use or not local?)");
  }
  impl_->port = port;
  impl_->thread = std::thread([this] { impl_->server.listen_after_bind(); });
  return Status::Ok();
}

int HttpServer::port() const { return impl_->port; }

void HttpServer::Stop() {
  if (!impl_ || !impl_->thread.joinable()) return;
  impl_->server.stop();
  impl_->thread.join();
}

HttpClient::HttpClient(std::string base_url, std::string token, HttpClientOptions options)
    : base_url_(std::move(base_url)), token_(std::move(token)), options_(options) {
  while (!base_url_.empty() && base_url_.back() == '/') base_url_.pop_back();
}

HttpClient::~HttpClient() = default;

Result<std::string> HttpClient::Get(const std::string& path) const {
  return Send("GET", path, "", nullptr);
}
Result<std::string> HttpClient::Post(const std::string& path, const std::string& body) const {
  return Send("POST", path, body, nullptr);
}
Result<std::string> HttpClient::Delete(const std::string& path) const {
  return Send("DELETE", path, "", nullptr);
}

Result<std::string> HttpClient::Send(const std::string& method, const std::string& path,
                                     const std::string& body, std::string* error_details,
                                     const std::string& content_type) const {
  httplib::Client client(base_url_);
  if (!client.is_valid()) return Status::InvalidArgument("bad server URL \"" + base_url_ + "\"");
  client.set_connection_timeout(std::chrono::milliseconds(options_.connect_timeout_ms));
  client.set_read_timeout(std::chrono::milliseconds(options_.read_timeout_ms));
  client.set_write_timeout(std::chrono::milliseconds(options_.read_timeout_ms));
  httplib::Headers headers = {{"Authorization", "Bearer " + token_}};
  auto call = [&]() -> httplib::Result {
    if (method == "GET") return client.Get(path, headers);
    if (method == "POST") {
      return client.Post(path, headers, body.empty() ? std::string("{}") : body,
                         content_type.c_str());
    }
    if (method == "DELETE") return client.Delete(path, headers);
    return client.Put(path, headers, body, content_type.c_str());
  };
  if (method != "GET" && method != "POST" && method != "DELETE" && method != "PUT") {
    return Status::InvalidArgument("HTTP method " + method + " not supported by the client");
  }
  httplib::Result res = call();
  if (!res) {
    return Status::Io(base_url_ + path + ": " + httplib::to_string(res.error()));
  }
  if (res->status >= 200 && res->status < 300) return res->body;
  if (res->status == 401) {
    return Status::PermissionDenied(base_url_ + path + ": the server refused the token (401)");
  }
  return StatusFromErrorBody(res->status, res->body, error_details);
}

std::string UrlEncode(const std::string& text) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : text) {
    if (isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

}  // namespace ferry::api
