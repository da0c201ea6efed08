#include "plugins/flex/unix_http_client.h"

#include <cstring>
#include <sys/socket.h>
#include <sys/un.h>
#include <thread>
#include <unistd.h>

#include <gtest/gtest.h>

#include "tests/testing/temp_dir.h"

namespace datera::flex {
namespace {

TEST(ParseHttpReply, ContentLengthAndCaseInsensitiveHeaders) {
  auto r = parse_http_reply("HTTP/1.1 200 OK\r\ncontent-length: 5\r\nX: y\r\n\r\nhello-extra");
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->status, 200u);
  EXPECT_EQ(r->body, "hello");
}

TEST(ParseHttpReply, ReadToCloseBody) {
  auto r = parse_http_reply("HTTP/1.0 403 Forbidden\r\n\r\n{\"a\":1}");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->status, 403u);
  EXPECT_EQ(r->body, "{\"a\":1}");
}

TEST(ParseHttpReply, RejectsBrokenReplies) {
  EXPECT_FALSE(parse_http_reply("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n").ok());
  EXPECT_FALSE(parse_http_reply("SMTP 200\r\n\r\n").ok());
  EXPECT_FALSE(parse_http_reply("HTTP/1.1 2x0 OK\r\n\r\n").ok());
  EXPECT_FALSE(parse_http_reply("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort").ok());
  EXPECT_FALSE(
      parse_http_reply("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n").ok());
}

class ClientSocketTest : public ::testing::Test {
 protected:
  int listen_socket() {
    const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::strcpy(a.sun_path, path_.c_str());
    EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    EXPECT_EQ(::listen(fd, 4), 0);
    return fd;
  }
  testing::TempDir dir_{"dt-cli"};
  std::string path_ = dir_ / "s.sock";
};

TEST_F(ClientSocketTest, MissingSocketIsConnectError) {
  auto r = post_json(path_, "/v1/flexvolume", "{}", "t", std::chrono::seconds(1),
                     std::chrono::seconds(1));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ClientErrc::connect);
}

TEST_F(ClientSocketTest, SilentServerIsTimeout) {
  const int fd = listen_socket();
  const auto start = std::chrono::steady_clock::now();
  auto r = post_json(path_, "/v1/flexvolume", "{}", "t", std::chrono::seconds(1),
                     std::chrono::milliseconds(300));
  const auto took = std::chrono::steady_clock::now() - start;
  ::close(fd);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ClientErrc::timeout);
  EXPECT_LT(took, std::chrono::seconds(2));
}

TEST_F(ClientSocketTest, SendsRequestAndReadsReply) {
  const int fd = listen_socket();
  std::string received;
  std::thread server([&] {
    const int c = ::accept(fd, nullptr, nullptr);
    char buf[4096];
    while (received.find("\r\n\r\n{\"x\":1}") == std::string::npos) {
      const ssize_t n = ::read(c, buf, sizeof buf);
      if (n <= 0) break;
      received.append(buf, static_cast<size_t>(n));
    }
    const std::string reply =
        "HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\n{\"status\":\"Success\"}";
    EXPECT_EQ(::write(c, reply.data(), reply.size()), static_cast<ssize_t>(reply.size()));
    ::close(c);
  });
  auto r = post_json(path_, "/v1/flexvolume", "{\"x\":1}", "ua/1", std::chrono::seconds(1),
                     std::chrono::seconds(5));
  server.join();
  ::close(fd);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->body, "{\"status\":\"Success\"}");
  EXPECT_NE(received.find("POST /v1/flexvolume HTTP/1.1\r\n"), std::string::npos);
  EXPECT_NE(received.find("User-Agent: ua/1\r\n"), std::string::npos);
  EXPECT_NE(received.find("Content-Length: 7\r\n"), std::string::npos);
}

}  // namespace
}  // namespace datera::flex
