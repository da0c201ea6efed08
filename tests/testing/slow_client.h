#pragma once

// A client that holds a connection open the way a hostile one would: checks that the server ends
// it (idle connections, one byte at a time) on a Unix or a TCP socket.

#include <cerrno>
#include <chrono>
#include <poll.h>
#include <string>
#include <sys/socket.h>

namespace datera::testing {

/// Whether the server has closed `fd` (EOF or a reset, after whatever it sent) within `limit`.
inline bool closed_within(int fd, std::chrono::milliseconds limit) {
  const auto end = std::chrono::steady_clock::now() + limit;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        end - std::chrono::steady_clock::now());
    pollfd p{fd, POLLIN, 0};
    if (left.count() <= 0 || ::poll(&p, 1, static_cast<int>(left.count())) != 1) return false;
    char buf[4096];
    if (::recv(fd, buf, sizeof buf, MSG_DONTWAIT) <= 0) return true;
  }
}

/// Sends `text` one byte at a time, waiting up to `gap` after each for the server to close the
/// connection; true when it did (after any byte, the last one included).
inline bool closed_while_trickling(int fd, const std::string& text, std::chrono::milliseconds gap) {
  for (size_t i = 0; i < text.size(); ++i) {
    if (::send(fd, &text[i], 1, MSG_NOSIGNAL) != 1) return false;
    if (closed_within(fd, gap)) return true;
  }
  return false;
}

}  // namespace datera::testing
