#include "common/status.h"

#include <cstdio>

namespace ferry {

std::string_view ErrorCodeName(ErrorCode code) {
  switch (code) {
    case ErrorCode::kOk: return "ok";
    case ErrorCode::kInvalidArgument: return "invalid argument";
    case ErrorCode::kNotFound: return "not found";
    case ErrorCode::kCorrupt: return "corrupt";
    case ErrorCode::kUnsupported: return "unsupported";
    case ErrorCode::kIo: return "I/O error";
    case ErrorCode::kTooLarge: return "too large";
    case ErrorCode::kPermissionDenied: return "permission denied";
    case ErrorCode::kAlreadyExists: return "already exists";
    case ErrorCode::kCancelled: return "cancelled";
    case ErrorCode::kMismatch: return "mismatch";
    case ErrorCode::kInternal: return "internal error";
    case ErrorCode::kFailedPrecondition: return "failed precondition";
  }
  return "unknown";
}

int ExitCodeFor(ErrorCode code) {
  // 1 is kept for "compare: images differ" style answers; errors start at 2.
  switch (code) {
    case ErrorCode::kOk: return 0;
    case ErrorCode::kInvalidArgument: return 2;
    case ErrorCode::kNotFound: return 3;
    case ErrorCode::kCorrupt: return 4;
    case ErrorCode::kUnsupported: return 5;
    case ErrorCode::kIo: return 6;
    case ErrorCode::kTooLarge: return 4;
    case ErrorCode::kPermissionDenied: return 7;
    case ErrorCode::kAlreadyExists: return 8;
    case ErrorCode::kCancelled: return 9;
    case ErrorCode::kMismatch: return 1;
    case ErrorCode::kInternal: return 70;
    case ErrorCode::kFailedPrecondition: return 10;
  }
  return 70;
}

Status Status::WithContext(std::string_view context) const {
  if (ok()) return *this;
  std::string m(context);
  m += ": ";
  m += message_;
  return Status(code_, std::move(m));
}

std::string Status::ToString() const {
  if (ok()) return "ok";
  std::string s(ErrorCodeName(code_));
  s += ": ";
  s += message_;
  return s;
}

std::string Hex(uint64_t value) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(value));
  return buf;
}

}  // namespace ferry
