#include "plugins/flex/unix_http_client.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <fcntl.h>
#include <optional>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

namespace datera::flex {

const std::error_category& client_category() {
  struct Category : std::error_category {
    const char* name() const noexcept override { return "agent client"; }
    std::string message(int c) const override {
      switch (static_cast<ClientErrc>(c)) {
        case ClientErrc::connect:
          return "cannot connect to the agent";
        case ClientErrc::timeout:
          return "timed out";
        case ClientErrc::io:
          return "connection broke";
        case ClientErrc::protocol:
          return "bad reply";
      }
      return "client error " + std::to_string(c);
    }
  };
  static const Category category;
  return category;
}

namespace {

using Clock = std::chrono::steady_clock;

Error client_error(ClientErrc c, std::string msg) {
  return Error{std::move(msg), c};
}

int remaining_ms(Clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  return static_cast<int>(std::max<long long>(0, left.count()));
}

Status wait_fd(int fd, short events, Clock::time_point deadline, const char* what) {
  for (;;) {
    pollfd p{fd, events, 0};
    const int rc = ::poll(&p, 1, remaining_ms(deadline));
    if (rc > 0) return ok_status();
    if (rc == 0) return client_error(ClientErrc::timeout, std::string("timed out ") + what);
    if (errno != EINTR)
      return client_error(ClientErrc::io, std::string("poll: ") + std::strerror(errno));
  }
}

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

}  // namespace

Result<HttpReply> parse_http_reply(std::string_view raw) {
  const auto head_end = raw.find("\r\n\r\n");
  if (head_end == std::string_view::npos) {
    return client_error(ClientErrc::protocol, "incomplete HTTP reply (no end of headers)");
  }
  const auto head = raw.substr(0, head_end);
  const auto line_end = head.find("\r\n");
  const auto status_line = head.substr(0, line_end);
  if (!status_line.starts_with("HTTP/1.") || status_line.size() < 12) {
    return client_error(ClientErrc::protocol, "not an HTTP/1.x status line");
  }
  HttpReply reply;
  auto [p, ec] = std::from_chars(status_line.data() + 9, status_line.data() + 12, reply.status);
  if (ec != std::errc{} || reply.status < 100 || reply.status > 599) {
    return client_error(ClientErrc::protocol, "bad HTTP status code");
  }
  std::optional<size_t> content_length;
  size_t pos = line_end == std::string_view::npos ? head.size() : line_end + 2;
  while (pos < head.size()) {
    auto eol = head.find("\r\n", pos);
    if (eol == std::string_view::npos) eol = head.size();
    const auto line = head.substr(pos, eol - pos);
    pos = eol + 2;
    const auto colon = line.find(':');
    if (colon == std::string_view::npos) continue;
    const auto name = line.substr(0, colon);
    auto value = line.substr(colon + 1);
    while (!value.empty() && value.front() == ' ') value.remove_prefix(1);
    if (iequals(name, "Content-Length")) {
      size_t n = 0;
      auto [vp, vec] = std::from_chars(value.data(), value.data() + value.size(), n);
      if (vec != std::errc{}) return client_error(ClientErrc::protocol, "bad Content-Length");
      content_length = n;
    } else if (iequals(name, "Transfer-Encoding")) {
      return client_error(ClientErrc::protocol, "chunked replies are not supported");
    }
  }
  const auto body = raw.substr(head_end + 4);
  if (content_length) {
    if (body.size() < *content_length)
      return client_error(ClientErrc::protocol, "truncated HTTP body");
    reply.body = std::string(body.substr(0, *content_length));
  } else {
    reply.body = std::string(body);
  }
  return reply;
}

Result<HttpReply> post_json(const std::string& socket_path, const std::string& path,
                            const std::string& body, const std::string& user_agent,
                            std::chrono::milliseconds connect_timeout,
                            std::chrono::milliseconds total_timeout) {
  return http_request(socket_path, "POST", path, body, user_agent, connect_timeout, total_timeout);
}

Result<HttpReply> http_request(const std::string& socket_path, const std::string& method,
                               const std::string& path, const std::string& body,
                               const std::string& user_agent,
                               std::chrono::milliseconds connect_timeout,
                               std::chrono::milliseconds total_timeout) {
  const auto start = Clock::now();
  const auto deadline = start + total_timeout;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (socket_path.size() >= sizeof addr.sun_path) {
    return client_error(ClientErrc::connect, "socket path too long: " + socket_path);
  }
  std::memcpy(addr.sun_path, socket_path.c_str(), socket_path.size() + 1);

  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return client_error(ClientErrc::io, std::string("socket: ") + std::strerror(errno));
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};

  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    if (errno != EAGAIN && errno != EINPROGRESS) {
      return client_error(ClientErrc::connect, std::strerror(errno));
    }
    // A full backlog makes Unix connect return EAGAIN; wait for it within the connect bound.
    const auto connect_deadline = std::min(deadline, start + connect_timeout);
    if (auto st = wait_fd(fd, POLLOUT, connect_deadline, "connecting"); !st) {
      return client_error(ClientErrc::connect, st.error().message);
    }
    int err = 0;
    socklen_t len = sizeof err;
    ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0) return client_error(ClientErrc::connect, std::strerror(err));
  }

  std::string request =
      method + " " + path + " HTTP/1.1\r\nHost: datera-agent\r\nUser-Agent: " + user_agent + "\r\n";
  if (method != "GET") {
    request +=
        "Content-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) + "\r\n";
  }
  request += "Connection: close\r\n\r\n" + body;
  size_t sent = 0;
  while (sent < request.size()) {
    const ssize_t n = ::send(fd, request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n >= 0) {
      sent += static_cast<size_t>(n);
      continue;
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN)
      return client_error(ClientErrc::io, std::string("send: ") + std::strerror(errno));
    if (auto st = wait_fd(fd, POLLOUT, deadline, "sending the request"); !st) return st.error();
  }

  std::string raw;
  char buf[16384];
  for (;;) {
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n > 0) {
      raw.append(buf, static_cast<size_t>(n));
      if (raw.size() > (8u << 20))
        return client_error(ClientErrc::protocol, "reply larger than 8 MiB");
      continue;
    }
    if (n == 0) break;
    if (errno == EINTR) continue;
    if (errno == ECONNRESET && !raw.empty()) break;
    if (errno != EAGAIN)
      return client_error(ClientErrc::io, std::string("recv: ") + std::strerror(errno));
    if (auto st = wait_fd(fd, POLLIN, deadline, "waiting for the reply"); !st) return st.error();
  }
  if (raw.empty()) return client_error(ClientErrc::io, "connection closed without a reply");
  return parse_http_reply(raw);
}

}  // namespace datera::flex
