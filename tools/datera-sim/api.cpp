#include "tools/datera-sim/api.h"

#include <algorithm>
#include <cctype>
#include <ctime>

#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace datera::sim {

namespace asio = boost::asio;
using nlohmann::json;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

std::string url_decode(const std::string& text, bool plus_is_space) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (c == '%' && i + 2 < text.size() && std::isxdigit(static_cast<unsigned char>(text[i + 1])) &&
        std::isxdigit(static_cast<unsigned char>(text[i + 2]))) {
      out.push_back(static_cast<char>(std::stoi(text.substr(i + 1, 2), nullptr, 16)));
      i += 2;
    } else if (c == '+' && plus_is_space) {
      out.push_back(' ');
    } else {
      out.push_back(c);
    }
  }
  return out;
}

std::vector<std::pair<std::string, std::string>> parse_form(const std::string& text) {
  std::vector<std::pair<std::string, std::string>> out;
  size_t start = 0;
  while (start <= text.size()) {
    size_t end = text.find('&', start);
    if (end == std::string::npos) end = text.size();
    const std::string part = text.substr(start, end - start);
    if (!part.empty()) {
      const auto eq = part.find('=');
      out.emplace_back(url_decode(part.substr(0, eq), true),
                       eq == std::string::npos ? "" : url_decode(part.substr(eq + 1), true));
    }
    start = end + 1;
  }
  return out;
}

namespace {

std::vector<std::string> split_path(const std::string& path) {
  std::vector<std::string> segs;
  size_t start = 0;
  while (start < path.size()) {
    size_t end = path.find('/', start);
    if (end == std::string::npos) end = path.size();
    if (end > start) segs.push_back(url_decode(path.substr(start, end - start)));
    start = end + 1;
  }
  return segs;
}

std::string iso_time(TimePoint t) {
  const std::time_t s = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
  gmtime_r(&s, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

http::Response json_response(unsigned status, const json& body, const char* route) {
  http::Response r;
  r.status = status;
  r.body = body.dump();
  r.route = route;
  return r;
}

/// The body of a write; empty means null. Error 400 when it is not JSON.
Result<json> parse_body(const http::Request& req) {
  if (req.body.empty()) return json(nullptr);
  try {
    return json::parse(req.body);
  } catch (const json::exception&) {
    return edf_error(400, "the request body is not valid JSON");
  }
}

/// Passwords never leave the simulator, not even in the debug dump.
void hide_passwords(json& j) {
  if (j.is_object()) {
    for (auto& [key, value] : j.items()) {
      if (key.find("pswd") != std::string::npos || key.find("password") != std::string::npos) {
        if (value.is_string() && !value.get<std::string>().empty()) value = "(hidden)";
      } else {
        hide_passwords(value);
      }
    }
  } else if (j.is_array()) {
    for (auto& v : j) hide_passwords(v);
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Faults
// ---------------------------------------------------------------------------------------------

json Faults::to_json() const {
  json j = {{"latency_ms", latency_ms},
            {"error_rate", error_rate},
            {"drop_rate", drop_rate},
            {"lost_reply_rate", lost_reply_rate}};
  j["seed"] = seed ? json(*seed) : json(nullptr);
  return j;
}

Result<Faults> Faults::parse(const json& body) {
  if (!body.is_object()) return edf_error(400, "faults: the body must be a JSON object");
  Faults f;
  for (const auto& [key, value] : body.items()) {
    if (key == "latency_ms") {
      if (!value.is_number_integer() || value.get<int64_t>() < 0 || value.get<int64_t>() > 600000) {
        return edf_error(400, "faults: latency_ms must be an integer 0..600000");
      }
      f.latency_ms = value.get<int64_t>();
    } else if (key == "error_rate" || key == "drop_rate" || key == "lost_reply_rate") {
      if (!value.is_number() || value.get<double>() < 0 || value.get<double>() > 1) {
        return edf_error(400, "faults: " + key + " must be a number 0..1");
      }
      (key == "error_rate"  ? f.error_rate
       : key == "drop_rate" ? f.drop_rate
                            : f.lost_reply_rate) = value.get<double>();
    } else if (key == "seed") {
      if (!value.is_number_unsigned())
        return edf_error(400, "faults: seed must be an unsigned integer");
      f.seed = value.get<uint64_t>();
    } else {
      return edf_error(400, "faults: unknown field '" + key +
                                "' (latency_ms, error_rate, drop_rate, lost_reply_rate, seed)");
    }
  }
  return f;
}

// ---------------------------------------------------------------------------------------------
// Api
// ---------------------------------------------------------------------------------------------

struct Api::Ctx {
  const http::Request& req;
  std::string method;
  std::string version;  ///< "v2.1" | "v2.2"
  std::string tenant = "/root";
  std::string path;  ///< without the version prefix
  json body;
  std::vector<std::pair<std::string, std::string>> query;
  uint64_t req_id = 0;

  std::optional<std::string> param(const std::string& name) const {
    for (const auto& [k, v] : query) {
      if (k == name) return v;
    }
    return std::nullopt;
  }
  bool v22() const { return version == "v2.2"; }
};

Api::Api(Model& model, Sessions& sessions, LoggerPtr log, ApiOptions options)
    : model_(model), sessions_(sessions), log_(std::move(log)), options_(std::move(options)) {
  fault_rng_.seed(std::random_device{}());
}

void Api::set_faults(const Faults& f) {
  faults_ = f;
  if (f.seed) fault_rng_.seed(*f.seed);
}

bool Api::roll(double rate) {
  if (rate <= 0) return false;
  if (rate >= 1) return true;
  return std::uniform_real_distribution<double>(0, 1)(fault_rng_) < rate;
}

asio::awaitable<http::Response> Api::handle(http::Request request) {
  const std::string path = request.path();
  if (path.rfind("/_sim/", 0) == 0) {
    // Failover and rebalance change the model too: persist them and move the real portals
    // (lio backend) before answering, like any other change.
    const uint64_t before = model_.generation();
    http::Response response = control(request, path);
    if (model_.generation() != before && options_.commit) co_await options_.commit();
    co_return response;
  }

  if (faults_.latency_ms > 0) {
    asio::steady_timer timer(co_await asio::this_coro::executor);
    timer.expires_after(std::chrono::milliseconds(faults_.latency_ms));
    boost::system::error_code ec;
    co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
  if (roll(faults_.drop_rate)) {
    log_->debug("fault: dropping {} {} before handling it", request.method, path);
    http::Response r;
    r.route = "fault_drop";
    r.drop_connection = true;
    co_return r;
  }
  if (roll(faults_.error_rate)) {
    log_->debug("fault: 503 for {} {}", request.method, path);
    co_return json_response(503, json{{"message", "overloaded"}}, "fault_503");
  }
  const uint64_t before = model_.generation();
  http::Response response = dispatch(request, path);
  if (model_.generation() != before && options_.commit) co_await options_.commit();
  if (roll(faults_.lost_reply_rate)) {
    log_->debug("fault: {} {} handled ({}), reply lost", request.method, path, response.status);
    response.drop_connection = true;
    response.route = "fault_lost_reply";
  }
  co_return response;
}

http::Response Api::dispatch(const http::Request& req, const std::string& path) {
  if (path == "/api_versions") {
    if (req.method != "GET")
      return json_response(
          405, {{"name", "InvalidRequestError"}, {"http", 405}, {"message", "GET only"}}, "edf");
    return json_response(200, {{"api_versions", {"v2.1", "v2.2"}}}, "edf");
  }
  Ctx ctx{req, req.method, "", "/root", "", nullptr, parse_form(req.query()), next_req_id_++};
  for (const char* v : {"/v2.1", "/v2.2"}) {
    const std::string prefix = v;
    if (path == prefix || path.rfind(prefix + "/", 0) == 0) {
      ctx.version = prefix.substr(1);
      ctx.path = path.substr(prefix.size());
    }
  }
  if (ctx.version.empty()) {
    ctx.version = "v2.2";
    ctx.path = path;
    if (path.rfind("/v", 0) == 0) {
      http::Response r = fail(ctx, 400, "API version not supported by datera-sim (v2.1, v2.2)");
      auto body = json::parse(r.body);
      body["name"] = "UnsupportedVersionError";
      r.body = body.dump();
      return r;
    }
    return fail(ctx, 404, "no such endpoint: " + path);
  }
  if (auto t = req.header("tenant")) {
    if (*t == "all" && req.method == "GET") {
      ctx.tenant = "all";
    } else {
      auto nt = Model::normalize_tenant(*t);
      if (!nt) return fail(ctx, nt.error());
      ctx.tenant = *nt;
    }
  }
  if (ctx.path == "/login") return login(ctx);  // JSON or form: it reads the body itself
  if (req.method != "GET") {
    auto body = parse_body(req);
    if (!body) return fail(ctx, body.error());
    ctx.body = std::move(*body);
  }
  const auto key = req.header("auth-token");
  if (!key || !sessions_.valid(*key)) {
    return fail(ctx, 401,
                "The key provided with the request does not correspond to a valid session.");
  }
  if (ctx.path == "/logout") {
    if (ctx.method != "PUT") return fail(ctx, 405, "PUT /logout");
    sessions_.logout(*key);
    return ok(ctx, json::object());
  }
  return edf(ctx);
}

http::Response Api::login(Ctx& ctx) {
  ++login_requests_;
  if (ctx.method != "PUT") return fail(ctx, 405, "log in with PUT /" + ctx.version + "/login");
  std::string name, password;
  const auto& raw = ctx.req.body;
  const bool form = ctx.req.content_type.find("x-www-form-urlencoded") != std::string::npos ||
                    (!raw.empty() && raw.front() != '{');
  if (form) {
    for (const auto& [k, v] : parse_form(raw)) {
      if (k == "name") name = v;
      if (k == "password") password = v;
    }
  } else {
    auto body = json::parse(raw.empty() ? "null" : raw, nullptr, false);
    if (!body.is_object()) return fail(ctx, 400, "login: the body must be a JSON object");
    if (body.contains("name") && body["name"].is_string()) name = body["name"].get<std::string>();
    if (body.contains("password") && body["password"].is_string()) {
      password = body["password"].get<std::string>();
    }
  }
  if (name.empty() || password.empty())
    return fail(ctx, 400, "login: name and password are required");
  auto key = sessions_.login(name, password);
  auto& counted = logins_[name.substr(0, 64)];
  ++(key ? counted.first : counted.second);
  if (!key) {
    log_->info("login refused for user '{}'", name);
    return fail(ctx, key.error());
  }
  log_->debug("login for user '{}'", name);
  const auto secs =
      std::chrono::duration_cast<std::chrono::seconds>(model_.now().time_since_epoch()).count();
  return json_response(200, {{"key", *key}, {"version", ctx.version}, {"request_time", secs}},
                       "edf_login");
}

http::Response Api::edf(Ctx& ctx) {
  const auto segs = split_path(ctx.path);
  const bool get = ctx.method == "GET";
  if (segs.empty()) return fail(ctx, 404, "no such endpoint: /" + ctx.version);
  if (ctx.tenant == "all" && !(get && segs.size() == 1)) {
    return fail(ctx, 400, "tenant 'all' is only for listing collections");
  }
  if (segs[0] == "app_instances") return app_instances(ctx, segs);
  if (segs[0] == "initiators") return initiators(ctx, segs);
  if (segs[0] == "system" && segs.size() == 1) {
    if (!get) return fail(ctx, 405, "GET only");
    return ok(ctx, {{"path", "/system"},
                    {"name", options_.system_name},
                    {"sw_version", options_.sw_version},
                    {"op_state", "running"},
                    {"health", "ok"},
                    {"uuid", "00000000-0000-4000-8000-00000000d5e1"}});
  }
  if (segs[0] == "access_network_ip_pools" && segs.size() <= 2) {
    if (!get) return fail(ctx, 405, "GET only");
    json paths = json::array();
    int n = 1;
    for (const auto& pool : model_.options().ip_pools) {
      paths.push_back({{"name", "Access VIP " + std::to_string(n++)},
                       {"network", pool.to_string()},
                       {"start_ip", pool.host(0)},
                       {"end_ip", pool.host(pool.host_count() - 1)},
                       {"netmask", pool.prefix},
                       {"mtu", 1500}});
    }
    json pool = {{"path", "/access_network_ip_pools/default"},
                 {"name", "default"},
                 {"network_paths", paths}};
    if (segs.size() == 1) return list(ctx, {pool});
    if (segs[1] != "default")
      return fail(ctx, 404, "access network ip pool '" + segs[1] + "' not found");
    return ok(ctx, pool);
  }
  if (segs[0] == "app_templates" && segs.size() <= 2) {
    if (!get) return fail(ctx, 405, "GET only (templates are built in)");
    json basic = {{"path", "/app_templates/basic"}, {"name", "basic"}};
    if (segs.size() == 1) return list(ctx, {basic});
    if (segs[1] != "basic") return fail(ctx, 404, "app template '" + segs[1] + "' not found");
    return ok(ctx, basic);
  }
  return fail(ctx, 404, "no such endpoint: " + ctx.path);
}

http::Response Api::app_instances(Ctx& ctx, const std::vector<std::string>& segs) {
  const auto& m = ctx.method;
  const auto& t = ctx.tenant;
  auto method_not_allowed = [&](const char* allowed) {
    return fail(ctx, 405, m + " is not allowed on " + ctx.path + " (" + allowed + ")");
  };
  if (segs.size() == 1) {
    if (m == "GET") {
      std::vector<json> items;
      for (const auto& ai : model_.list_app_instances(t)) items.push_back(render_ai(ai, ctx));
      return list(ctx, std::move(items));
    }
    if (m == "POST") {
      auto ai = model_.create_app_instance(t, ctx.body);
      if (!ai) return fail(ctx, ai.error());
      log_->info("{}: created app instance {} ({})", t, ai->name, ai->id);
      return ok(ctx, render_ai(*ai, ctx));
    }
    return method_not_allowed("GET, POST");
  }
  const std::string& id = segs[1];
  if (segs.size() == 2) {
    if (m == "GET") {
      auto ai = model_.get_app_instance(t, id);
      return ai ? ok(ctx, render_ai(*ai, ctx)) : fail(ctx, ai.error());
    }
    if (m == "PUT") {
      auto ai = model_.update_app_instance(t, id, ctx.body);
      return ai ? ok(ctx, render_ai(*ai, ctx)) : fail(ctx, ai.error());
    }
    if (m == "DELETE") {
      auto ai = model_.get_app_instance(t, id);
      if (!ai) return fail(ctx, ai.error());
      if (auto st = model_.delete_app_instance(t, id, ctx.body); !st) return fail(ctx, st.error());
      log_->info("{}: deleted app instance {} ({})", t, ai->name, ai->id);
      return ok(ctx, render_ai(*ai, ctx));
    }
    return method_not_allowed("GET, PUT, DELETE");
  }
  if (segs.size() == 3 && segs[2] == "metadata") {
    if (m == "GET") {
      auto md = model_.get_metadata(t, id);
      return md ? ok(ctx, json(*md)) : fail(ctx, md.error());
    }
    if (m == "PUT") {
      auto md = model_.put_metadata(t, id, ctx.body);
      return md ? ok(ctx, json(*md)) : fail(ctx, md.error());
    }
    return method_not_allowed("GET, PUT");
  }
  if (segs[2] != "storage_instances") return fail(ctx, 404, "no such endpoint: " + ctx.path);
  auto ai = model_.get_app_instance(t, id);
  if (!ai) return fail(ctx, ai.error());
  if (segs.size() == 3) {
    if (m != "GET") return method_not_allowed("GET");
    std::vector<json> items;
    for (const auto& si : ai->storage_instances) items.push_back(render_si(*ai, si, ctx));
    return list(ctx, std::move(items));
  }
  const std::string& si_name = segs[3];
  auto si = model_.get_storage_instance(t, id, si_name);
  if (!si) return fail(ctx, si.error());
  // Re-reads after a change so the reply shows the new state.
  auto reread = [&]() -> Result<std::pair<AppInstance, StorageInstance>> {
    auto a = model_.get_app_instance(t, id);
    if (!a) return a.error();
    auto s = model_.get_storage_instance(t, id, si_name);
    if (!s) return s.error();
    return std::make_pair(std::move(*a), std::move(*s));
  };
  auto si_reply = [&](const Result<StorageInstance>& r, auto render) -> http::Response {
    if (!r) return fail(ctx, r.error());
    auto both = reread();
    if (!both) return fail(ctx, both.error());
    return ok(ctx, render(both->first, both->second));
  };
  auto whole_si = [&](const AppInstance& a, const StorageInstance& s) {
    return render_si(a, s, ctx);
  };
  auto acl_only = [&](const AppInstance& a, const StorageInstance& s) {
    return render_acl(a, s, ctx);
  };
  if (segs.size() == 4) {
    if (m == "GET") return ok(ctx, render_si(*ai, *si, ctx));
    if (m == "PUT")
      return si_reply(model_.update_storage_instance(t, id, si_name, ctx.body), whole_si);
    return method_not_allowed("GET, PUT");
  }
  const std::string& sub = segs[4];
  if (sub == "acl_policy" && segs.size() == 5) {
    if (m == "GET") return ok(ctx, render_acl(*ai, *si, ctx));
    if (m == "PUT") return si_reply(model_.replace_acl(t, id, si_name, ctx.body), acl_only);
    return method_not_allowed("GET, PUT");
  }
  if (sub == "acl_policy" && segs.size() == 6 &&
      (segs[5] == "initiators" || segs[5] == "initiator_groups")) {
    if (m == "GET") return ok(ctx, render_acl(*ai, *si, ctx)[segs[5]]);
    if (m == "PUT") return si_reply(model_.acl_op(t, id, si_name, segs[5], ctx.body), acl_only);
    return method_not_allowed("GET, PUT");
  }
  if (sub == "auth" && segs.size() == 5) {
    auto auth_only = [&](const AppInstance& a, const StorageInstance& s) {
      return render_si(a, s, ctx)["auth"];
    };
    if (m == "GET") return ok(ctx, auth_only(*ai, *si));
    if (m == "PUT") return si_reply(model_.set_auth(t, id, si_name, ctx.body), auth_only);
    return method_not_allowed("GET, PUT");
  }
  if (sub == "access" && segs.size() == 5) {
    if (m != "GET") return method_not_allowed("GET");
    return ok(ctx, render_si(*ai, *si, ctx)["access"]);
  }
  if (sub == "metadata" && segs.size() == 5) {
    if (m == "GET") {
      auto md = model_.get_metadata(t, id, si_name);
      return md ? ok(ctx, json(*md)) : fail(ctx, md.error());
    }
    if (m == "PUT") {
      auto md = model_.put_metadata(t, id, ctx.body, si_name);
      return md ? ok(ctx, json(*md)) : fail(ctx, md.error());
    }
    return method_not_allowed("GET, PUT");
  }
  if (sub != "volumes") return fail(ctx, 404, "no such endpoint: " + ctx.path);
  const std::string op_state = model_.op_state(*ai);
  if (segs.size() == 5) {
    if (m != "GET") return method_not_allowed("GET");
    std::vector<json> items;
    for (const auto& v : si->volumes) items.push_back(render_volume(*ai, *si, v, op_state));
    return list(ctx, std::move(items));
  }
  const std::string& vol = segs[5];
  if (segs.size() >= 7 && segs[6] == "snapshots") {
    auto volume = model_.get_volume(t, id, si_name, vol);
    if (!volume) return fail(ctx, volume.error());
    if (segs.size() == 7) {
      if (m == "GET") {
        std::vector<json> items;
        for (const auto& s : volume->snapshots)
          items.push_back(render_snapshot(*ai, *si, *volume, s));
        return list(ctx, std::move(items));
      }
      if (m == "POST") {
        auto s = model_.create_snapshot(t, id, si_name, vol, ctx.body);
        if (!s) return fail(ctx, s.error());
        log_->info("{}: snapshot {} of {}/{}/{} (uuid {})", t, s->utc_ts, ai->name, si_name,
                   volume->name, s->uuid);
        return ok(ctx, render_snapshot(*ai, *si, *volume, *s));
      }
      return method_not_allowed("GET, POST");
    }
    if (segs.size() == 8) {
      auto s = model_.get_snapshot(t, id, si_name, vol, segs[7]);
      if (!s) return fail(ctx, s.error());
      if (m == "GET") return ok(ctx, render_snapshot(*ai, *si, *volume, *s));
      if (m == "DELETE") {
        if (auto st = model_.delete_snapshot(t, id, si_name, vol, segs[7]); !st)
          return fail(ctx, st.error());
        log_->info("{}: deleted snapshot {} of {}/{}/{}", t, s->utc_ts, ai->name, si_name,
                   volume->name);
        return ok(ctx, render_snapshot(*ai, *si, *volume, *s));
      }
      return method_not_allowed("GET, DELETE");
    }
    return fail(ctx, 404, "no such endpoint: " + ctx.path);
  }
  if (segs.size() == 6) {
    if (m == "GET") {
      auto v = model_.get_volume(t, id, si_name, vol);
      return v ? ok(ctx, render_volume(*ai, *si, *v, op_state)) : fail(ctx, v.error());
    }
    if (m == "PUT") {
      auto v = model_.update_volume(t, id, si_name, vol, ctx.body);
      if (v) log_->info("{}: volume {}/{}/{} is {} GiB", t, ai->name, si_name, v->name, v->size);
      return v ? ok(ctx, render_volume(*ai, *si, *v, op_state)) : fail(ctx, v.error());
    }
    return method_not_allowed("GET, PUT");
  }
  if (segs.size() == 7 && segs[6] == "performance_policy") {
    if (m == "GET") {
      auto v = model_.get_volume(t, id, si_name, vol);
      return v ? ok(ctx, render_volume(*ai, *si, *v, op_state)["performance_policy"])
               : fail(ctx, v.error());
    }
    if (m == "PUT" || m == "POST") {
      auto v = model_.set_performance_policy(t, id, si_name, vol, ctx.body);
      return v ? ok(ctx, render_volume(*ai, *si, *v, op_state)["performance_policy"])
               : fail(ctx, v.error());
    }
    return method_not_allowed("GET, PUT, POST");
  }
  return fail(ctx, 404, "no such endpoint: " + ctx.path);
}

http::Response Api::initiators(Ctx& ctx, const std::vector<std::string>& segs) {
  const auto& m = ctx.method;
  if (segs.size() == 1) {
    if (m == "GET") {
      std::vector<json> items;
      for (const auto& i : model_.list_initiators(ctx.tenant)) items.push_back(render_initiator(i));
      return list(ctx, std::move(items));
    }
    if (m == "POST") {
      auto i = model_.create_initiator(ctx.tenant, ctx.body);
      return i ? ok(ctx, render_initiator(*i)) : fail(ctx, i.error());
    }
    return fail(ctx, 405, m + " is not allowed on /initiators (GET, POST)");
  }
  if (segs.size() != 2) return fail(ctx, 404, "no such endpoint: " + ctx.path);
  auto i = model_.get_initiator(ctx.tenant, segs[1]);
  if (!i) return fail(ctx, i.error());
  if (m == "GET") return ok(ctx, render_initiator(*i));
  if (m == "DELETE") {
    if (auto st = model_.delete_initiator(ctx.tenant, segs[1]); !st) return fail(ctx, st.error());
    return ok(ctx, render_initiator(*i));
  }
  return fail(ctx, 405, m + " is not allowed on an initiator (GET, DELETE)");
}

// --- rendering ---

json Api::render_ai(const AppInstance& ai, const Ctx& ctx) const {
  json sis = json::array();
  for (const auto& si : ai.storage_instances) sis.push_back(render_si(ai, si, ctx));
  return {{"path", "/app_instances/" + ai.id},
          {"id", ai.id},
          {"name", ai.name},
          {"uuid", ai.id},
          {"tenant", ai.tenant},
          {"descr", ai.descr ? json(*ai.descr) : json(nullptr)},
          {"admin_state", ai.admin_state},
          {"health", "ok"},
          {"deployment_state", "deployed"},
          {"create_mode", ai.create_mode},
          {"access_control_mode", ai.access_control_mode},
          {"app_template", {{"path", ai.app_template}}},
          {"snapshots", json::array()},
          {"snapshot_policies", json::array()},
          {"storage_instances", sis}};
}

json Api::render_acl(const AppInstance& ai, const StorageInstance& si, const Ctx& ctx) const {
  const std::string path = "/app_instances/" + ai.id + "/storage_instances/" + si.name;
  auto refs = [&](const std::vector<AclRef>& list) {
    json out = json::array();
    for (const auto& r : list) {
      // v2.2 answers {path, tenant} (the CSI driver strips the tenant before writing back).
      out.push_back(ctx.v22() ? json{{"path", r.path}, {"tenant", r.tenant}}
                              : json{{"path", r.path}});
    }
    return out;
  };
  return {{"path", path + "/acl_policy"},
          {"initiators", refs(si.acl_initiators)},
          {"initiator_groups", refs(si.acl_initiator_groups)}};
}

json Api::render_si(const AppInstance& ai, const StorageInstance& si, const Ctx& ctx) const {
  const std::string path = "/app_instances/" + ai.id + "/storage_instances/" + si.name;
  const std::string op_state = model_.op_state(ai);
  json vols = json::array();
  for (const auto& v : si.volumes) vols.push_back(render_volume(ai, si, v, op_state));
  auto hidden = [](const std::string& s) { return s.empty() ? json("") : json("(hidden)"); };
  json auth = {{"path", path + "/auth"},
               {"type", si.auth.type},
               {"target_user_name", si.auth.target_user_name},
               {"target_pswd", hidden(si.auth.target_pswd)},
               {"initiator_user_name", si.auth.initiator_user_name},
               {"initiator_pswd", hidden(si.auth.initiator_pswd)}};
  return {{"path", path},
          {"name", si.name},
          {"uuid", si.uuid},
          {"admin_state", ai.admin_state},
          {"op_state", op_state},
          {"deployment_state", "deployed"},
          {"health", "ok"},
          {"access_control_mode", ai.access_control_mode},
          {"acl_policy", render_acl(ai, si, ctx)},
          {"ip_pool",
           {{"path", si.ip_pool}, {"resolved_path", si.ip_pool}, {"resolved_tenant", "/root"}}},
          {"access", {{"path", path + "/access"}, {"ips", si.ips}, {"iqn", si.iqn}}},
          {"auth", auth},
          {"active_initiators", si.active_initiators},
          {"volumes", vols}};
}

json Api::render_volume(const AppInstance& ai, const StorageInstance& si, const Volume& v,
                        const std::string& op_state) const {
  const std::string path =
      "/app_instances/" + ai.id + "/storage_instances/" + si.name + "/volumes/" + v.name;
  json qos = {{"path", path + "/performance_policy"}};
  for (const auto& [k, n] : v.performance_policy) qos[k] = n;
  // Whole snapshot objects, so one listing of app instances shows every snapshot.
  json snaps = json::array();
  for (const auto& s : v.snapshots) snaps.push_back(render_snapshot(ai, si, v, s));
  return {{"path", path},
          {"name", v.name},
          {"uuid", v.uuid},
          {"size", v.size},
          {"replica_count", v.replica_count},
          {"placement_mode", v.placement_mode},
          {"capacity_in_use", 0},
          {"op_state", op_state},
          {"availability_state", op_state == "available" ? "available" : "unavailable"},
          {"snapshots", snaps},
          {"snapshot_policies", json::array()},
          {"performance_policy", qos}};
}

json Api::render_snapshot(const AppInstance& ai, const StorageInstance& si, const Volume& v,
                          const Snapshot& s) const {
  // utc_ts is the id; `timestamp` carries the same text (older firmware keyed snapshots by it).
  return {{"path", "/app_instances/" + ai.id + "/storage_instances/" + si.name + "/volumes/" +
                       v.name + "/snapshots/" + s.utc_ts},
          {"timestamp", s.utc_ts},
          {"utc_ts", s.utc_ts},
          {"uuid", s.uuid},
          {"op_state", model_.op_state(s)},
          {"size", s.size}};
}

json Api::render_initiator(const Initiator& i) const {
  return {{"path", "/initiators/" + i.id}, {"id", i.id}, {"name", i.name}, {"tenant", i.tenant}};
}

// --- envelopes ---

http::Response Api::ok(const Ctx& ctx, json data, json metadata) const {
  const auto secs =
      std::chrono::duration_cast<std::chrono::seconds>(model_.now().time_since_epoch()).count();
  json body = {{"tenant", ctx.tenant},
               {"path", ctx.path},
               {"version", ctx.version},
               {"data", std::move(data)},
               {"metadata", metadata.is_null() ? json::object() : std::move(metadata)},
               {"request_time", secs}};
  return json_response(200, body, "edf");
}

http::Response Api::list(const Ctx& ctx, std::vector<json> items) const {
  // filter=attr=value on a top-level string attribute (the only form clients use: name=foo).
  if (auto filter = ctx.param("filter"); filter && !filter->empty()) {
    const auto eq = filter->find('=');
    if (eq == std::string::npos || eq == 0) {
      return fail(ctx, 400, "filter '" + *filter + "' is not supported (use attribute=value)");
    }
    const std::string attr = filter->substr(0, eq);
    const std::string value = filter->substr(eq + 1);
    std::erase_if(items, [&](const json& item) {
      auto it = item.find(attr);
      return it == item.end() || !it->is_string() || it->get<std::string>() != value;
    });
  }
  auto number = [&](const char* name, int64_t max) -> Result<std::optional<int64_t>> {
    auto v = ctx.param(name);
    if (!v) return std::optional<int64_t>{};
    if (v->empty() || v->size() > 9 || !std::all_of(v->begin(), v->end(), ::isdigit) ||
        std::stoll(*v) > max) {
      return edf_error(400, std::string(name) + " must be an integer 0.." + std::to_string(max));
    }
    return std::optional<int64_t>{std::stoll(*v)};
  };
  auto limit = number("limit", 1000);
  if (!limit) return fail(ctx, limit.error());
  auto offset = number("offset", 100'000'000);
  if (!offset) return fail(ctx, offset.error());
  const auto total = static_cast<int64_t>(items.size());
  const int64_t off = std::min(offset->value_or(0), total);
  // limit=0 or absent: everything from offset on.
  const int64_t lim = limit->value_or(0);
  const int64_t end = lim > 0 ? std::min(total, off + lim) : total;
  json page = json::array();
  for (int64_t i = off; i < end; ++i) page.push_back(std::move(items[static_cast<size_t>(i)]));
  json metadata;
  if (ctx.v22()) {
    metadata = {{"total_count", total},
                {"request_count", end - off},
                {"limit", lim > 0 ? lim : end - off},
                {"offset", off}};
  } else {
    metadata = {{"total", total}};
  }
  return ok(ctx, std::move(page), std::move(metadata));
}

http::Response Api::fail(const Ctx& ctx, const Error& error) const {
  return fail(ctx, error_status(error), error.message, error_edf_code(error));
}

http::Response Api::fail(const Ctx& ctx, unsigned status, const std::string& message,
                         int code) const {
  json params = json::object();
  for (const auto& [k, v] : ctx.query) params[k] = v;
  json body = {{"name", edf_error_name(status)},
               {"code", code},
               {"http", status},
               {"message", message},
               {"ts", iso_time(model_.now())},
               {"version", ctx.version},
               {"op", ctx.method},
               {"tenant", ctx.tenant},
               {"path", ctx.path},
               {"params", params},
               {"api_req_id", ctx.req_id},
               {"errors", json::array()}};
  if (status >= 500) {
    log_->warn("{} {}: {} {}", ctx.method, ctx.path, status, message);
  } else {
    log_->debug("{} {}: {} {}", ctx.method, ctx.path, status, message);
  }
  return json_response(status, body, "edf");
}

// ---------------------------------------------------------------------------------------------
// /_sim/ control endpoints
// ---------------------------------------------------------------------------------------------

http::Response Api::control(const http::Request& req, const std::string& path) {
  auto error = [](unsigned status, const std::string& message) {
    return json_response(
        status, {{"name", edf_error_name(status)}, {"http", status}, {"message", message}}, "sim");
  };
  auto body = parse_body(req);
  if (req.method != "GET" && !body) return error(400, body.error().message);
  const json in = req.method == "GET" || !body ? json(nullptr) : *body;
  auto target = [&](const json& b) -> Result<std::pair<std::string, std::string>> {
    if (!b.is_object() || !b.contains("app_instance") || !b["app_instance"].is_string()) {
      return edf_error(400, "the body needs \"app_instance\": id or name");
    }
    auto tenant = Model::normalize_tenant(b.value("tenant", ""));
    if (!tenant) return tenant.error();
    return std::make_pair(*tenant, b["app_instance"].get<std::string>());
  };
  const std::string& m = req.method;
  if (path == "/_sim/faults") {
    if (m == "GET") return json_response(200, faults_.to_json(), "sim");
    if (m == "DELETE") {
      set_faults(Faults{});
      return json_response(200, faults_.to_json(), "sim");
    }
    if (m == "POST" || m == "PUT") {
      auto f = Faults::parse(in);
      if (!f) return error(400, f.error().message);
      set_faults(*f);
      log_->info("faults set: {}", faults_.to_json().dump());
      return json_response(200, faults_.to_json(), "sim");
    }
    return error(405, "GET, POST or DELETE");
  }
  if (path == "/_sim/expire_tokens") {
    if (m != "POST") return error(405, "POST");
    const size_t n = sessions_.active();
    sessions_.expire_all();
    log_->info("expired {} session key(s) on request", n);
    return json_response(200, {{"expired", n}}, "sim");
  }
  if (path == "/_sim/logins") {
    if (m != "GET") return error(405, "GET");
    json users = json::object();
    for (const auto& [name, n] : logins_)
      users[name] = {{"accepted", n.first}, {"refused", n.second}};
    return json_response(200, {{"requests", login_requests_}, {"users", users}}, "sim");
  }
  if (path == "/_sim/password") {
    // A password rotation on the array: {name, password}; every session key is revoked.
    if (m != "POST") return error(405, "POST");
    if (!in.is_object() || !in.contains("name") || !in["name"].is_string() ||
        !in.contains("password") || !in["password"].is_string() ||
        in["password"].get_ref<const std::string&>().empty()) {
      return error(400, "the body needs \"name\" and \"password\" (strings)");
    }
    const std::string name = in["name"].get<std::string>();
    if (!sessions_.set_password(name, in["password"].get<std::string>())) {
      return error(404, "no account '" + name.substr(0, 64) + "'");
    }
    log_->info("password of user '{}' changed on request; every session key revoked", name);
    return json_response(200, {{"name", name}, {"revoked", true}}, "sim");
  }
  if (path == "/_sim/failover" || path == "/_sim/rebalance") {
    if (m != "POST") return error(405, "POST");
    auto t = target(in);
    if (!t) return error(http_status_of(t.error().code), t.error().message);
    const std::string si = in.value("storage_instance", "storage-1");
    if (path == "/_sim/failover") {
      if (in.contains("to_node") && !in["to_node"].is_string())
        return error(400, "to_node must be a string");
      auto ev = model_.failover(t->first, t->second, si, in.value("to_node", ""));
      if (!ev) return error(http_status_of(ev.error().code), ev.error().message);
      log_->info("failover: {} {} VIPs moved {} -> {}", ev->tenant, ev->app_instance, ev->from_node,
                 ev->to_node);
      return json_response(200, to_json_value(*ev), "sim");
    }
    if (!in.contains("ips") || !in["ips"].is_array()) return error(400, "\"ips\" must be an array");
    std::vector<std::string> ips;
    for (const auto& ip : in["ips"]) {
      if (!ip.is_string()) return error(400, "\"ips\" must hold strings");
      ips.push_back(ip.get<std::string>());
    }
    auto ev = model_.rebalance(t->first, t->second, si, ips);
    if (!ev) return error(http_status_of(ev.error().code), ev.error().message);
    log_->info("rebalance: {} {} access IPs now {}", ev->tenant, ev->app_instance,
               json(ips).dump());
    return json_response(200, to_json_value(*ev), "sim");
  }
  if (path == "/_sim/acl_log") {
    if (m != "GET") return error(405, "GET");
    json entries = json::array();
    for (const auto& c : model_.acl_log()) entries.push_back(to_json_value(c));
    return json_response(200, {{"entries", entries}}, "sim");
  }
  if (path == "/_sim/state") {
    if (m != "GET") return error(405, "GET");
    json state = model_.to_json();
    hide_passwords(state);
    state["faults"] = faults_.to_json();
    state["sessions"] = sessions_.active();
    state["backend"] = options_.backend;
    return json_response(200, state, "sim");
  }
  if (path == "/_sim/misroute") {
    // A broken array: the export of one volume serves another volume's data. The agent must
    // notice from the device itself and refuse it.
    if (m == "DELETE") {
      misroute_.clear();
      return json_response(200, {{"misroute", misroute_}}, "sim");
    }
    if (m != "POST") return error(405, "POST or DELETE");
    if (!in.is_object() || !in.contains("app_instance") || !in.contains("to_app_instance") ||
        !in["app_instance"].is_string() || !in["to_app_instance"].is_string()) {
      return error(400, "the body needs \"app_instance\" and \"to_app_instance\" (names)");
    }
    misroute_[in["app_instance"].get<std::string>()] = in["to_app_instance"].get<std::string>();
    log_->warn("misroute: export of {} now serves {}'s data", in["app_instance"].get<std::string>(),
               in["to_app_instance"].get<std::string>());
    return json_response(200, {{"misroute", misroute_}}, "sim");
  }
  if (path == "/_sim/exports") {
    if (m != "GET") return error(405, "GET");
    // ?initiator=<iqn>: only what that host may attach (online, and in the ACL unless allow_all).
    std::optional<std::string> initiator;
    for (const auto& [k, v] : parse_form(req.query())) {
      if (k == "initiator") initiator = v;
    }
    const auto all = model_.exports();
    auto data_path_of = [&](const ExportView& e) -> std::string {
      if (!options_.data_path) return "";
      if (auto mr = misroute_.find(e.app_instance); mr != misroute_.end()) {
        for (const auto& other : all) {
          if (other.app_instance == mr->second) return options_.data_path(other);
        }
      }
      return options_.data_path(e);
    };
    json out = json::array();
    for (const auto& e : all) {
      const bool in_acl = std::find(e.acl_iqns.begin(), e.acl_iqns.end(), initiator.value_or("")) !=
                          e.acl_iqns.end();
      if (initiator && !(e.online && (in_acl || e.access_control_mode == "allow_all"))) continue;
      out.push_back({{"tenant", e.tenant},
                     {"app_instance", e.app_instance},
                     {"app_instance_id", e.app_instance_id},
                     {"storage_instance", e.storage_instance},
                     {"volume", e.volume},
                     {"uuid", e.uuid},
                     {"size_gib", e.size},
                     {"online", e.online},
                     {"access_control_mode", e.access_control_mode},
                     {"acl", e.acl_iqns},
                     {"iqn", e.iqn},
                     {"ips", e.ips},
                     {"path", data_path_of(e)}});
    }
    return json_response(200, {{"backend", options_.backend}, {"exports", out}}, "sim");
  }
  return error(
      404, "no such control endpoint: " + path +
               " (faults, expire_tokens, failover, rebalance, acl_log, state, exports, misroute)");
}

}  // namespace datera::sim
