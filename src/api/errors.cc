#include "api/errors.h"

#include <nlohmann/json.hpp>

namespace ferry::api {

namespace {
struct Entry {
  ErrorCode code;
  std::string_view wire;
  int http;
};
constexpr Entry kTable[] = {
    {ErrorCode::kOk, "ok", 200},
    {ErrorCode::kInvalidArgument, "invalid_argument", 400},
    {ErrorCode::kNotFound, "not_found", 404},
    {ErrorCode::kCorrupt, "corrupt", 422},
    {ErrorCode::kUnsupported, "unsupported", 422},
    {ErrorCode::kIo, "io", 502},
    {ErrorCode::kTooLarge, "too_large", 413},
    {ErrorCode::kPermissionDenied, "permission_denied", 403},
    {ErrorCode::kAlreadyExists, "already_exists", 409},
    {ErrorCode::kCancelled, "cancelled", 409},
    {ErrorCode::kMismatch, "mismatch", 409},
    {ErrorCode::kInternal, "internal", 500},
    {ErrorCode::kFailedPrecondition, "failed_precondition", 422},
};
}  // namespace

std::string_view ErrorCodeWireName(ErrorCode code) {
  for (const Entry& e : kTable) {
    if (e.code == code) return e.wire;
  }
  return "internal";
}

ErrorCode ErrorCodeFromWireName(std::string_view name) {
  for (const Entry& e : kTable) {
    if (e.wire == name) return e.code;
  }
  return ErrorCode::kInternal;
}

int HttpStatusFor(ErrorCode code) {
  for (const Entry& e : kTable) {
    if (e.code == code) return e.http;
  }
  return 500;
}

std::string ErrorBody(const Status& status, const std::string& details_json) {
  nlohmann::json details = nlohmann::json::object();
  if (!details_json.empty()) {
    details = nlohmann::json::parse(details_json, nullptr, /*allow_exceptions=*/false);
    if (!details.is_object()) details = nlohmann::json::object();
  }
  nlohmann::json body = {{"error",
                          {{"code", std::string(ErrorCodeWireName(status.code()))},
                           {"message", status.message()},
                           {"details", details}}}};
  return body.dump();
}

Status StatusFromErrorBody(int http_status, const std::string& body, std::string* details_json) {
  nlohmann::json j = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_object() && j.contains("error") && j["error"].is_object()) {
    const nlohmann::json& e = j["error"];
    std::string code = e.contains("code") && e["code"].is_string() ? e["code"].get<std::string>()
                                                                    : "internal";
    std::string message = e.contains("message") && e["message"].is_string()
                              ? e["message"].get<std::string>()
                              : "HTTP " + std::to_string(http_status);
    if (details_json != nullptr) {
      *details_json = e.contains("details") ? e["details"].dump() : "{}";
    }
    ErrorCode ec = ErrorCodeFromWireName(code);
    if (ec == ErrorCode::kOk) ec = ErrorCode::kInternal;
    return Status(ec, message);
  }
  std::string start = body.substr(0, 200);
  return Status::Io("HTTP " + std::to_string(http_status) + " without an error body: " + start);
}

}  // namespace ferry::api
