// Layer: public API (internal). The thread-local last-error message behind last_error().
#pragma once

#include <string>

#include "flash_sigmoid/flash_sigmoid.hpp"

namespace flash_sigmoid::api {

// Records `message` as this thread's last error and returns `status`.
Status fail(Status status, const std::string& message);
// Clears the last error and returns kSuccess.
Status succeed();
const char* last_error_message();

}  // namespace flash_sigmoid::api
