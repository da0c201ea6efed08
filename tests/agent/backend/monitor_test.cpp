#include "agent/backend/monitor.h"

#include <sstream>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>

#include "tests/testing/run_async.h"
#include "tests/testing/scripted_transport.h"

namespace datera::backend {
namespace {

using namespace std::chrono_literals;
using edf::HttpRequest;
using edf::HttpResponse;
using edf::Json;

class MonitorTest : public ::testing::Test {
 protected:
  MonitorTest() {
    logger_->set_level(spdlog::level::info);
    edf::ClientOptions o;
    o.server = "edf.test:7717";
    o.credentials = {"admin", "pw-Secret1"};
    o.retry = edf::RetryPolicy{2, 1ms, 1ms};
    client_ =
        std::make_unique<edf::Client>(ioc_.get_executor(), transport_, o, edf_probe_, logger_);
    monitor_ = std::make_unique<Monitor>(ioc_.get_executor(), *client_, "edf.test:7717", 20ms,
                                         metrics_, logger_);
    transport_.handler = [this](const HttpRequest& r) -> Result<HttpResponse> {
      if (r.target == "/api_versions") return HttpResponse{200, R"({"api_versions":["v2.2"]})"};
      if (r.target == "/v2.2/login") {
        if (!password_ok_)
          return HttpResponse{401, R"({"name":"AuthFailedError","message":"bad credentials"})"};
        return HttpResponse{200, R"({"key":"k"})"};
      }
      return HttpResponse{200, R"({"data":{"name":"edf-1","sw_version":"3.3.0.0"}})"};
    };
  }
  double gauge_up() {
    for (const auto& f : registry_.Collect()) {
      if (f.name == "datera_agent_backend_up") return f.metric.at(0).gauge.value;
    }
    return -1;
  }

  boost::asio::io_context ioc_;
  testing::ScriptedTransport transport_;
  prometheus::Registry registry_;
  edf::Metrics edf_probe_{registry_};
  Metrics metrics_{registry_, "edf.test:7717"};
  std::ostringstream log_text_;
  LoggerPtr logger_ = std::make_shared<spdlog::logger>(
      "backend", std::make_shared<spdlog::sinks::ostream_sink_mt>(log_text_));
  std::unique_ptr<edf::Client> client_;
  std::unique_ptr<Monitor> monitor_;
  bool password_ok_ = true;
};

TEST_F(MonitorTest, ReportsArrayAndVersions) {
  ASSERT_TRUE(testing::run_async(ioc_, monitor_->check()).ok());
  std::vector<std::pair<bool, std::string>> states;
  boost::asio::co_spawn(
      ioc_, monitor_->run([&](bool up, const std::string& d) { states.emplace_back(up, d); }),
      boost::asio::detached);
  ioc_.restart();
  ioc_.run_for(10ms);
  ASSERT_FALSE(states.empty());
  EXPECT_TRUE(states[0].first);
  const auto st = monitor_->state();
  EXPECT_EQ(st["up"], true);
  EXPECT_EQ(st["array"], "edf-1");
  EXPECT_EQ(st["sw_version"], "3.3.0.0");
  EXPECT_EQ(st["api_version"], "v2.2");
  EXPECT_EQ(gauge_up(), 1);
  monitor_->stop();
  ioc_.run_for(50ms);
}

TEST_F(MonitorTest, RefusedLoginMakesItDownAndIsLoggedOncePerTransition) {
  password_ok_ = false;
  std::vector<std::pair<bool, std::string>> states;
  boost::asio::co_spawn(
      ioc_, monitor_->run([&](bool up, const std::string& d) { states.emplace_back(up, d); }),
      boost::asio::detached);
  const auto end = std::chrono::steady_clock::now() + 2s;
  while (states.size() < 3 && std::chrono::steady_clock::now() < end) ioc_.run_for(10ms);
  ASSERT_GE(states.size(), 3u);
  EXPECT_FALSE(states[0].first);
  EXPECT_NE(states[0].second.find("check the credentials"), std::string::npos) << states[0].second;
  EXPECT_EQ(gauge_up(), 0);
  password_ok_ = true;  // the operator fixes the secret
  while (!monitor_->up() && std::chrono::steady_clock::now() < end + 2s) ioc_.run_for(10ms);
  EXPECT_TRUE(monitor_->up());
  monitor_->stop();
  ioc_.run_for(50ms);
  const auto text = log_text_.str();
  size_t warnings = 0;
  for (size_t p = 0; (p = text.find("not usable", p)) != std::string::npos; ++p) ++warnings;
  EXPECT_EQ(warnings, 1u) << text;
  EXPECT_NE(text.find("reachable: edf-1"), std::string::npos);
  EXPECT_EQ(text.find("pw-Secret1"), std::string::npos);
}

}  // namespace
}  // namespace datera::backend
