// Status and Result<T>: Ferry's one error idiom.
//
// A Status is either OK or carries an ErrorCode and a message. Messages read as a chain of
// contexts from the outside in, e.g. "convert vm-42.vmdk: read grain table at 0x30000: short
// read". Functions that can fail return Status or Result<T>; exceptions thrown by third-party
// code are caught at the edge of the wrapper that calls it and turned into a Status.
//
// Thread-safety: Status and Result are values; distinct objects may be used from different
// threads without synchronization.
#pragma once

#include <cassert>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace ferry {

// Stable error categories. They map to CLI exit codes (see ExitCodeFor) and, later, to HTTP
// statuses in the REST API. Append only: values are persisted in logs and journals.
enum class ErrorCode : int {
  kOk = 0,
  kInvalidArgument = 1,  // the caller asked for something malformed or contradictory
  kNotFound = 2,         // a named file, export, VM or record does not exist
  kCorrupt = 3,          // untrusted input (an image, a journal, a peer) is malformed
  kUnsupported = 4,      // well-formed but a feature Ferry does not handle
  kIo = 5,               // the OS or a peer failed an operation
  kTooLarge = 6,         // a size or count over a safety cap
  kPermissionDenied = 7, // a policy refuses it (e.g. a backing file outside the image folder)
  kAlreadyExists = 8,
  kCancelled = 9,
  kMismatch = 10,        // two things that must agree do not (compare, verify, resume identity)
  kInternal = 11,        // a bug: an invariant did not hold
  kFailedPrecondition = 12,  // checks before an operation failed (validation); nothing changed
};

std::string_view ErrorCodeName(ErrorCode code);

// Process exit status for a failed command with this code (0 for kOk).
int ExitCodeFor(ErrorCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;  // OK
  Status(ErrorCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status Ok() { return Status(); }
  static Status InvalidArgument(std::string m) { return {ErrorCode::kInvalidArgument, std::move(m)}; }
  static Status NotFound(std::string m) { return {ErrorCode::kNotFound, std::move(m)}; }
  static Status Corrupt(std::string m) { return {ErrorCode::kCorrupt, std::move(m)}; }
  static Status Unsupported(std::string m) { return {ErrorCode::kUnsupported, std::move(m)}; }
  static Status Io(std::string m) { return {ErrorCode::kIo, std::move(m)}; }
  static Status TooLarge(std::string m) { return {ErrorCode::kTooLarge, std::move(m)}; }
  static Status PermissionDenied(std::string m) { return {ErrorCode::kPermissionDenied, std::move(m)}; }
  static Status AlreadyExists(std::string m) { return {ErrorCode::kAlreadyExists, std::move(m)}; }
  static Status Cancelled(std::string m) { return {ErrorCode::kCancelled, std::move(m)}; }
  static Status Mismatch(std::string m) { return {ErrorCode::kMismatch, std::move(m)}; }
  static Status Internal(std::string m) { return {ErrorCode::kInternal, std::move(m)}; }
  static Status FailedPrecondition(std::string m) {
    return {ErrorCode::kFailedPrecondition, std::move(m)};
  }

  bool ok() const { return code_ == ErrorCode::kOk; }
  ErrorCode code() const { return code_; }
  const std::string& message() const { return message_; }

  // Returns a copy whose message is prefixed with "context: ". OK stays OK.
  Status WithContext(std::string_view context) const;

  // "corrupt: file.qcow2: L1 table at 0x30000 ..." or "ok".
  std::string ToString() const;

  bool operator==(const Status& other) const = default;

 private:
  ErrorCode code_ = ErrorCode::kOk;
  std::string message_;
};

// Either a T or a non-OK Status.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}  // NOLINT(google-explicit-constructor)
  Result(Status status) : v_(std::move(status)) {  // NOLINT(google-explicit-constructor)
    assert(!std::get<Status>(v_).ok() && "Result constructed from an OK Status");
  }

  bool ok() const { return std::holds_alternative<T>(v_); }
  // REQUIRES: !ok()
  const Status& status() const& { return std::get<Status>(v_); }
  Status status() && { return ok() ? Status() : std::get<Status>(std::move(v_)); }

  // REQUIRES: ok()
  T& value() & { return std::get<T>(v_); }
  const T& value() const& { return std::get<T>(v_); }
  T&& value() && { return std::get<T>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

  Result WithContext(std::string_view context) && {
    if (ok()) return std::move(*this);
    return Result(std::get<Status>(v_).WithContext(context));
  }

 private:
  std::variant<T, Status> v_;
};

// Hex rendering for offsets in messages: "0x30000".
std::string Hex(uint64_t value);

}  // namespace ferry

#define FERRY_CONCAT_INNER(a, b) a##b
#define FERRY_CONCAT(a, b) FERRY_CONCAT_INNER(a, b)

// Returns the Status from the enclosing function if `expr` (a Status) is not OK.
#define FERRY_TRY(expr)                                 \
  do {                                                  \
    ::ferry::Status ferry_try_status_ = (expr);         \
    if (!ferry_try_status_.ok()) return ferry_try_status_; \
  } while (0)

// Like FERRY_TRY, adding context to the error.
#define FERRY_TRY_CTX(expr, ctx)                                      \
  do {                                                                \
    ::ferry::Status ferry_try_status_ = (expr);                       \
    if (!ferry_try_status_.ok()) return ferry_try_status_.WithContext(ctx); \
  } while (0)

// Declares/assigns `lhs` from a Result expression, or returns its Status.
#define FERRY_ASSIGN_OR_RETURN(lhs, expr) \
  FERRY_ASSIGN_OR_RETURN_IMPL(FERRY_CONCAT(ferry_result_, __LINE__), lhs, expr)
#define FERRY_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                                \
  if (!tmp.ok()) return std::move(tmp).status();    \
  lhs = std::move(tmp).value()
