// One mapping from Ferry's ErrorCode to the REST API: the wire name of each code
// ("not_found"), its HTTP status, and back. The error body every server sends is
//   {"error": {"code": "not_found", "message": "...", "details": {...}}}
// (docs/control-plane.md). The CLI turns such a body back into a Status with the same code,
// so its exit status is ExitCodeFor(code) whichever side failed.
//
// Thread-safety: pure functions.
#pragma once

#include <string>
#include <string_view>

#include "common/status.h"

namespace ferry::api {

// "invalid_argument", "not_found", ..., "failed_precondition".
std::string_view ErrorCodeWireName(ErrorCode code);
// The inverse; unknown names map to kInternal.
ErrorCode ErrorCodeFromWireName(std::string_view name);

int HttpStatusFor(ErrorCode code);

// {"error":{"code","message","details"}}; details_json must be a JSON object ("" = {}).
std::string ErrorBody(const Status& status, const std::string& details_json = "");
// Parses an error body back into a Status (code and message) and its details object as JSON
// text. A body that is not an error envelope gives kIo naming the HTTP status and the start
// of the body.
Status StatusFromErrorBody(int http_status, const std::string& body,
                           std::string* details_json = nullptr);

}  // namespace ferry::api
