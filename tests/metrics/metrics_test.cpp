#include <unistd.h>

#include <gtest/gtest.h>
#include <prometheus/counter.h>

#include "metrics/endpoints.h"
#include "metrics/handler.h"
#include "metrics/process_collector.h"
#include "metrics/readiness.h"
#include "tests/testing/run_async.h"

namespace datera::metrics {
namespace {

using testing::run_async;

TEST(Readiness, ReadyOnlyWhenEveryConditionHolds) {
  Readiness r;
  EXPECT_FALSE(r.ready()) << "nothing registered yet means not started";
  r.add("driver");
  r.add("backend");
  EXPECT_FALSE(r.ready());
  r.set("driver", true, "installed");
  EXPECT_FALSE(r.ready());
  r.set("backend", true, "ok");
  EXPECT_TRUE(r.ready());
  r.set("driver", false, "removed by someone");
  EXPECT_FALSE(r.ready());
  EXPECT_EQ(r.to_json()["conditions"]["driver"]["detail"], "removed by someone");
  r.add("driver");  // add never resets an existing condition
  EXPECT_EQ(r.to_json()["conditions"]["driver"]["detail"], "removed by someone");
}

TEST(ProcStat, ParsesFieldsAfterCommandWithSpaces) {
  // pid (comm) state ... field 14 utime=300, 15 stime=100, 22 starttime=500, 23 vsize, 24 rss=10
  const std::string stat =
      "42 (datera agent) S 1 42 42 0 -1 4194560 100 0 0 0 300 100 0 0 20 0 3 0 500 123456789 10 "
      "18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
  ProcSample s;
  ASSERT_TRUE(parse_proc_stat(stat, 1000.0, 100, 4096, s));
  EXPECT_DOUBLE_EQ(s.cpu_seconds, 4.0);
  EXPECT_DOUBLE_EQ(s.start_time_seconds, 1005.0);
  EXPECT_DOUBLE_EQ(s.virtual_bytes, 123456789.0);
  EXPECT_DOUBLE_EQ(s.resident_bytes, 40960.0);
  EXPECT_FALSE(parse_proc_stat("garbage", 0, 100, 4096, s));
}

TEST(ProcessCollector, ReadsThisProcess) {
  ProcessCollector c;
  const auto s = c.sample();
  EXPECT_GT(s.resident_bytes, 1e5);
  EXPECT_GT(s.open_fds, 2);
  EXPECT_GT(s.max_fds, s.open_fds);
  const double now = static_cast<double>(::time(nullptr));
  EXPECT_GT(s.start_time_seconds, now - 3600);
  EXPECT_LE(s.start_time_seconds, now + 1);
}

class HandlerTest : public ::testing::Test {
 protected:
  http::Response get(const std::string& path) {
    http::Request r;
    r.method = "GET";
    r.target = path;
    return run_async(handler_.handle(r));
  }
  std::shared_ptr<prometheus::Registry> registry_ = std::make_shared<prometheus::Registry>();
  Readiness readiness_;
  Handler handler_{{registry_, std::make_shared<ProcessCollector>()}, readiness_};
};

TEST_F(HandlerTest, MetricsExposeRegistryBuildInfoAndProcess) {
  register_build_info(*registry_);
  prometheus::BuildCounter()
      .Name("datera_agent_test_total")
      .Help("t")
      .Register(*registry_)
      .Add({})
      .Increment(3);
  auto r = get(kMetricsPath);
  EXPECT_EQ(r.status, 200u);
  EXPECT_NE(r.content_type.find("text/plain; version=0.0.4"), std::string::npos);
  EXPECT_NE(r.body.find("datera_agent_test_total 3"), std::string::npos) << r.body;
  EXPECT_NE(r.body.find("datera_agent_build_info{"), std::string::npos);
  // The Prometheus client libraries' standard process metrics, under their standard names, so
  // stock dashboards and alerts (node, process exporters) work on the agent too.
  for (const char* line :
       {"\nprocess_resident_memory_bytes ", "\nprocess_virtual_memory_bytes ",
        "\nprocess_cpu_seconds_total ", "\nprocess_start_time_seconds ", "\nprocess_open_fds ",
        "\nprocess_max_fds ", "# TYPE process_cpu_seconds_total counter",
        "# TYPE process_resident_memory_bytes gauge"}) {
    EXPECT_NE(r.body.find(line), std::string::npos) << line;
  }
  EXPECT_EQ(r.body.find("datera_agent_process_"), std::string::npos) << r.body;
}

TEST_F(HandlerTest, HealthAndReadiness) {
  EXPECT_EQ(get(kHealthPath).status, 200u);
  readiness_.add("driver", "not installed yet");
  auto r = get(kReadyPath);
  EXPECT_EQ(r.status, 503u);
  EXPECT_NE(r.body.find("not installed yet"), std::string::npos);
  readiness_.set("driver", true, "ok");
  EXPECT_EQ(get(kReadyPath).status, 200u);
  EXPECT_EQ(get("/nope").status, 404u);
  http::Request post;
  post.method = "POST";
  post.target = kMetricsPath;
  EXPECT_EQ(run_async(handler_.handle(post)).status, 405u);
}

}  // namespace
}  // namespace datera::metrics
