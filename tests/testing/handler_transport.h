#pragma once

// An EDF transport without a socket: each request goes straight to an http::Handler in this
// process (datera-sim's Api), shaped as agent/http's Server hands requests to its handler, and the
// reply comes back as the Beast transport returns it. The real EDF client stack then runs against
// the simulator's protocol layer in the unit tier: no port, no connection, no read timeout.

#include <string>
#include <utility>

#include <boost/asio/awaitable.hpp>

#include "agent/http/types.h"
#include "plugins/edf/transport.h"

namespace datera::testing {

class HandlerTransport : public edf::Transport {
 public:
  /// `host`: what the Host header names, as the Beast transport sends it.
  HandlerTransport(http::Handler& handler, std::string host)
      : handler_(handler), host_(std::move(host)) {}

  boost::asio::awaitable<Result<edf::HttpResponse>> send(edf::HttpRequest request) override {
    ++requests_;
    http::Request req;
    req.method = std::move(request.method);
    req.target = std::move(request.target);
    req.body = std::move(request.body);
    req.user_agent = "datera-agent";
    req.headers = {{"Host", host_}, {"User-Agent", req.user_agent}};
    for (auto& h : request.headers) req.headers.push_back(std::move(h));
    req.content_type = req.header("Content-Type").value_or("");
    const std::string what = req.method + " " + req.target;
    auto res = co_await handler_.handle(std::move(req));
    if (res.drop_connection) {
      // The server closed the connection without a reply: what the Beast transport reports.
      co_return Error{"reading the reply to " + what + " from " + host_ + ": end of stream",
                      edf::TransportErrc::io};
    }
    co_return edf::HttpResponse{res.status, std::move(res.body)};
  }

  /// Requests sent so far (proof that the client went through this transport).
  size_t requests() const { return requests_; }

 private:
  http::Handler& handler_;
  std::string host_;
  size_t requests_ = 0;
};

}  // namespace datera::testing
