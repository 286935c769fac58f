// Layer: public API. Thread-local storage for the last error message.
#include "api/error.hpp"

namespace flash_sigmoid::api {
namespace {
thread_local std::string g_last_error;
}

Status fail(Status status, const std::string& message) {
  g_last_error = message;
  return status;
}

Status succeed() {
  g_last_error.clear();
  return Status::kSuccess;
}

const char* last_error_message() { return g_last_error.c_str(); }

}  // namespace flash_sigmoid::api
