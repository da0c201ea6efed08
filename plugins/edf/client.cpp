#include "plugins/edf/client.h"

#include <algorithm>
#include <cctype>

#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "base/json.h"
#include "base/utf8.h"
#include "base/version.h"

namespace datera::edf {

namespace asio = boost::asio;
using Clock = std::chrono::steady_clock;

namespace {

// Replies are read defensively: nlohmann's value() throws on a non-object or a mistyped field, and
// an exception from a hostile reply would end the loop (renewal, access check) that made the call.

/// `j[key]` when `j` is an object holding a string there, else "".
std::string string_at(const Json& j, const char* key) {
  if (!j.is_object()) return {};
  const auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

/// `j[key]` when `j` is an object holding an array there, else an empty array.
const Json& array_at(const Json& j, const char* key) {
  static const Json kEmpty = Json::array();
  if (!j.is_object()) return kEmpty;
  const auto it = j.find(key);
  return it != j.end() && it->is_array() ? *it : kEmpty;
}

/// `j[key]` when `j` is an object holding an integer there, else `fallback`.
int64_t int_at(const Json& j, const char* key, int64_t fallback) {
  if (!j.is_object()) return fallback;
  const auto it = j.find(key);
  return it != j.end() && it->is_number_integer() ? it->get<int64_t>() : fallback;
}

/// An ACL entry: "/initiators/<iqn>" or {"path": "/initiators/<iqn>", ...}.
std::string entry_path(const Json& e) {
  return e.is_string() ? e.get<std::string>() : string_at(e, "path");
}

/// EDF error names are identifiers ("NotFoundError"); anything else is not echoed.
bool is_error_name(const Json& j) {
  const auto& s = j.get_ref<const std::string&>();
  if (s.empty() || s.size() > 64) return false;
  return std::all_of(s.begin(), s.end(), [](char ch) {
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           ch == '_';
  });
}

bool is_unavailable(unsigned status, const std::string& body) {
  // PYSDK treats a 500 "REST server is still initializing" like a 503.
  return status == 503 || (status == 500 && body.find("still initializing") != std::string::npos);
}

}  // namespace

std::string safe_excerpt(const std::string& text, size_t max) {
  // Decoded one UTF-8 sequence at a time: a malformed byte becomes '?', a control character
  // (C0, DEL, C1, line/paragraph separators, bidi overrides) a space, and the cut falls only
  // between whole characters, leaving room for the "..." that says something was cut.
  constexpr std::string_view kCut = "...";
  std::string out;
  const size_t limit = max > kCut.size() ? max - kCut.size() : 0;
  size_t fits = 0;  // the length of `out` at the last character boundary within `limit`
  for (size_t i = 0; i < text.size() && out.size() <= max;) {
    const auto c = static_cast<unsigned char>(text[i]);
    size_t n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xe ? 3 : (c >> 3) == 0x1e ? 4 : 0;
    uint32_t cp = n == 1 ? c : n == 2 ? (c & 0x1f) : n == 3 ? (c & 0x0f) : (c & 0x07);
    bool valid = n != 0 && i + n <= text.size();
    for (size_t k = 1; valid && k < n; ++k) {
      const auto cc = static_cast<unsigned char>(text[i + k]);
      valid = (cc & 0xc0) == 0x80;
      cp = (cp << 6) | (cc & 0x3f);
    }
    // Overlong forms, surrogates and values past U+10FFFF are not characters either.
    if (valid && ((n == 2 && cp < 0x80) || (n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) ||
                  (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)) {
      valid = false;
    }
    std::string piece;
    if (!valid) {
      piece = "?";
      n = 1;
    } else if (cp < 0x20 || cp == 0x7f || (cp >= 0x80 && cp <= 0x9f) || cp == 0x2028 ||
               cp == 0x2029 || (cp >= 0x202a && cp <= 0x202e) || (cp >= 0x2066 && cp <= 0x2069)) {
      piece = " ";
    } else {
      piece = text.substr(i, n);
    }
    out += piece;
    if (out.size() <= limit) fits = out.size();
    i += n;
  }
  if (out.size() <= max) return out;
  out.resize(fits);
  return out + std::string(kCut);
}

Client::Client(asio::any_io_executor executor, Transport& transport, ClientOptions options,
               Metrics& probe, LoggerPtr log)
    : executor_(std::move(executor)),
      transport_(transport),
      options_(std::move(options)),
      metrics_(probe),
      log_(std::move(log)),
      rng_(options_.seed) {}

const std::error_category& edf_category() {
  struct Category : std::error_category {
    const char* name() const noexcept override { return "edf"; }
    std::string message(int c) const override {
      switch (static_cast<Errc>(c)) {
        case Errc::transport:
          return "no reply from the array";
        case Errc::lost_reply:
          return "the reply was lost";
        case Errc::bad_reply:
          return "unparseable reply";
        case Errc::not_ready:
          return "not ready in time";
        case Errc::invalid_arg:
          return "invalid argument";
        case Errc::unsupported:
          return "no common API version";
      }
      return "edf error " + std::to_string(c);
    }
  };
  static const Category category;
  return category;
}

std::string Client::si_path(const std::string& name) {
  return "/app_instances/" + name + "/storage_instances/" + kStorageInstance;
}

Error Client::wrap(const Call& c, const std::string& msg, std::error_code code) const {
  std::string head = c.what;
  if (!c.volume.empty()) head += " for volume " + c.volume;
  return Error{head + " failed: " + msg, code};
}

Error Client::api_error(const Call& c, unsigned status, const std::string& body) const {
  // The message goes to kubelet's pod events: only a short, clean excerpt of an EDF error's
  // `message` is echoed; any other body (an HTML page from whatever answered) is not shown at all.
  const auto parsed = json::parse_bounded(body);
  const Json j = parsed ? *parsed : Json();
  std::string name = "HTTP " + std::to_string(status);
  std::string message;
  if (j.is_object()) {
    if (auto it = j.find("name"); it != j.end() && it->is_string() && is_error_name(*it))
      name = it->get<std::string>();
    if (auto it = j.find("message"); it != j.end() && it->is_string())
      message = safe_excerpt(it->get<std::string>());
  }
  if (message.empty()) message = "the reply is not an EDF error (its body is not shown)";
  return wrap(
      c,
      name + " (HTTP " + std::to_string(status) + ") from EDF " + options_.server + ": " + message,
      http_status(status));
}

asio::awaitable<void> Client::backoff(int attempt, const std::string& reason, const Call& c) {
  metrics_.retry(reason);
  const auto exp = options_.retry.base * (1LL << std::min(attempt - 1, 16));
  const auto ceiling = std::min<std::chrono::milliseconds>(options_.retry.cap, exp);
  // "Equal jitter": at least half the step, so retries never stampede at zero delay.
  std::uniform_int_distribution<long long> jitter(0, std::max<long long>(0, ceiling.count() / 2));
  const auto delay = std::chrono::milliseconds(ceiling.count() / 2 + jitter(rng_));
  log_->debug("EDF request retry {} in {} ms ({}; {} volume={})", attempt, delay.count(), reason,
              c.what, c.volume.empty() ? "-" : c.volume);
  asio::steady_timer timer(executor_, delay);
  boost::system::error_code ec;
  co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
}

asio::awaitable<Result<HttpResponse>> Client::exchange(const HttpRequest& req, bool repeatable,
                                                       const Call& c) {
  const std::string endpoint = endpoint_class(req.target);
  for (int attempt = 1;; ++attempt) {
    const auto t0 = Clock::now();
    auto res = co_await transport_.send(req);
    metrics_.request(req.method, endpoint, res ? std::to_string(res->status) : "error",
                     Clock::now() - t0);
    if (res) {
      if (!is_unavailable(res->status, res->body) || attempt >= options_.retry.max_attempts)
        co_return res;
      co_await backoff(attempt, "unavailable", c);
      continue;
    }
    const std::error_code code = res.error().code;
    if (code == TransportErrc::tls) {
      co_return wrap(c, res.error().message, Errc::transport);  // a certificate does not fix itself
    }
    const bool nothing_sent = sent_nothing(res.error());
    if (!nothing_sent && !repeatable) {
      co_return wrap(
          c, "the reply was lost (" + res.error().message + "); the request may have taken effect",
          Errc::lost_reply);
    }
    if (attempt >= options_.retry.max_attempts) {
      co_return wrap(c,
                     "no reply from EDF at " + options_.server + " after " +
                         std::to_string(attempt) + " attempts: " + res.error().message,
                     Errc::transport);
    }
    const char* reason = nothing_sent                     ? "connect"
                         : code == TransportErrc::timeout ? "timeout"
                                                          : "io";
    co_await backoff(attempt, reason, c);
  }
}

asio::awaitable<Result<std::string>> Client::version() {
  if (!version_.empty()) co_return version_;
  if (!options_.api_version.empty()) {
    version_ = options_.api_version;
    co_return version_;
  }
  const Call c{"GET", "/api_versions", std::nullopt, "discovering the EDF API version", "", true};
  const HttpRequest req{
      "GET", "/api_versions", {{"Accept", "application/json"}}, "", options_.request_timeout};
  auto res = co_await exchange(req, true, c);
  if (!res) co_return res.error();
  if (res->status == 400 || res->status == 404) {
    // Older firmware has no discovery endpoint; every such array speaks v2.2 or v2.1.
    log_->info("EDF at {} has no /api_versions (HTTP {}); using v2.2", options_.server,
               res->status);
    version_ = "v2.2";
    co_return version_;
  }
  if (res->status != 200) co_return api_error(c, res->status, res->body);
  const auto parsed = json::parse_bounded(res->body);
  const Json j = parsed ? *parsed : Json();
  const auto list = j.is_object() ? j.value("api_versions", Json::array()) : Json::array();
  for (const char* want : {"v2.2", "v2.1"}) {
    if (std::find(list.begin(), list.end(), want) != list.end()) {
      version_ = want;
      co_return version_;
    }
  }
  co_return wrap(c,
                 "EDF at " + options_.server + " offers " + safe_excerpt(json::dump(list)) +
                     "; this agent speaks v2.2 and v2.1",
                 Errc::unsupported);
}

asio::awaitable<Status> Client::login() {
  const Call c{"PUT", "/login", std::nullopt, "logging in to EDF", "", true};
  if (options_.credentials.empty()) {
    co_return wrap(
        c,
        "no credentials: give the volume a secretRef (username, password) or set them in the agent "
        "configuration",
        Errc::invalid_arg);
  }
  // EDF's login is JSON, which carries any printable character (quotes, backslash, non-ASCII)
  // escaped as needed, but only in UTF-8: other bytes would make dump() throw.
  if (!utf8::valid(options_.credentials.user) || !utf8::valid(options_.credentials.password)) {
    co_return wrap(c,
                   "the user name or password is not valid UTF-8 and cannot be sent to EDF; check "
                   "the credentials' encoding",
                   Errc::invalid_arg);
  }
  const std::string body =
      Json{{"name", options_.credentials.user}, {"password", options_.credentials.password}}.dump();
  const HttpRequest req{
      "PUT",
      "/" + version_ + "/login",
      {{"Content-Type", "application/json; charset=utf-8"}, {"tenant", options_.tenant}},
      body,
      options_.request_timeout};
  auto res = co_await exchange(req, true, c);
  if (!res) co_return res.error();
  if (res->status == 401 || res->status == 403) {
    auto e = api_error(c, res->status, res->body);
    co_return Error{
        e.message + " (user '" + options_.credentials.user + "'; check the credentials)", e.code};
  }
  if (res->status != 200) co_return api_error(c, res->status, res->body);
  const auto parsed = json::parse_bounded(res->body);
  const Json j = parsed ? *parsed : Json();
  if (!j.is_object() || !j.contains("key") || !j["key"].is_string()) {
    co_return wrap(c, "the login reply has no key", Errc::bad_reply);
  }
  key_ = j["key"].get<std::string>();
  log_->debug("logged in to EDF at {} ({})", options_.server, version_);
  co_return ok_status();
}

asio::awaitable<Result<Json>> Client::call(Call c) {
  co_return co_await call_full(std::move(c), nullptr);
}

asio::awaitable<Result<Json>> Client::call_full(Call c, Json* metadata_out) {
  auto ver = co_await version();
  if (!ver) co_return wrap(c, ver.error().message, ver.error().code);
  const std::string target = "/" + version_ + c.path;
  const std::string body = c.body ? c.body->dump() : std::string();
  for (bool relogged = false;;) {
    if (key_.empty()) {
      auto st = co_await login();
      if (!st) co_return wrap(c, st.error().message, st.error().code);
    }
    const HttpRequest req{c.method,
                          target,
                          {{"Auth-Token", key_},
                           {"tenant", options_.tenant},
                           {"Content-Type", "application/json; charset=utf-8"},
                           {"Datera-Driver", std::string("datera-agent-") + version::kVersion}},
                          body,
                          options_.request_timeout};
    auto res = co_await exchange(req, c.repeatable, c);
    if (!res) co_return res.error();
    const unsigned status = res->status;
    if (status == 401 && !relogged) {
      // Keys live 15 minutes; an array restart forgets them all. Log in again, repeat once.
      relogged = true;
      key_.clear();
      metrics_.relogin();
      log_->info("EDF at {} refused the session key; logging in again", options_.server);
      continue;
    }
    if (status < 200 || status >= 300) co_return api_error(c, status, res->body);
    if (res->body.empty()) co_return Json::object();
    auto parsed = json::parse_bounded(res->body);
    if (!parsed) {
      co_return wrap(c,
                     "EDF at " + options_.server + " sent an unusable reply (HTTP " +
                         std::to_string(status) + ", " + parsed.error().message +
                         "; its body is not shown)",
                     Errc::bad_reply);
    }
    Json j = std::move(*parsed);
    if (j.is_object() && j.contains("data")) {
      if (metadata_out != nullptr && j.contains("metadata")) *metadata_out = j["metadata"];
      co_return std::move(j["data"]);
    }
    co_return j;
  }
}

asio::awaitable<Result<Json>> Client::system() {
  // Named first: GCC 12 double-destroys a braced aggregate passed straight into a coroutine.
  Call c{"GET", "/system", std::nullopt, "reading the array's system info", "", true};
  co_return co_await call(std::move(c));
}

asio::awaitable<Result<AppInstance>> Client::get_app_instance(const std::string& name) {
  Call c{"GET", "/app_instances/" + name, std::nullopt, "getting app instance", name, true};
  co_return co_await app_instance_call(std::move(c));
}

asio::awaitable<Result<AppInstance>> Client::app_instance_call(Call c) {
  if (!is_valid_name(c.volume))
    co_return wrap(c, "'" + c.volume + "' is not a valid EDF name", Errc::invalid_arg);
  auto j = co_await call(c);
  if (!j) co_return j.error();
  auto ai = AppInstance::from_json(*j);
  if (!ai) co_return wrap(c, ai.error().message, Errc::bad_reply);
  co_return ai;
}

namespace {

Json create_body(const VolumeSpec& s) {
  // A clone takes its storage (size, replicas, placement) from its source: no storage_instances.
  if (!s.clone_snapshot_src.empty() || !s.clone_volume_src.empty()) {
    const bool snap = !s.clone_snapshot_src.empty();
    return Json{{"name", s.name},
                {"create_mode", "kubernetes"},
                {"access_control_mode", "deny_all"},
                {snap ? "clone_snapshot_src" : "clone_volume_src",
                 {{"path", snap ? s.clone_snapshot_src : s.clone_volume_src}}}};
  }
  if (!s.template_name.empty()) {
    return Json{{"name", s.name},
                {"create_mode", "kubernetes"},
                {"app_template", {{"path", "/app_templates/" + s.template_name}}},
                {"template_override",
                 {{"storage_instances",
                   {{kStorageInstance,
                     {{"volumes", {{kVolume, {{"size", std::to_string(s.size_gib)}}}}}}}}}}}};
  }
  Json volume{{"name", kVolume},
              {"size", s.size_gib},
              {"replica_count", s.replica_count},
              {"placement_mode", s.placement_mode},
              {"snapshot_policies", Json::array()}};
  if (s.max_iops != 0 || s.max_bandwidth != 0) {
    Json qos = Json::object();
    if (s.max_iops != 0) qos["total_iops_max"] = s.max_iops;
    if (s.max_bandwidth != 0) qos["total_bandwidth_max"] = s.max_bandwidth;
    volume["performance_policy"] = qos;
  }
  return Json{{"name", s.name},
              {"create_mode", "kubernetes"},
              {"access_control_mode", "deny_all"},
              {"storage_instances",
               Json::array({Json{{"name", kStorageInstance},
                                 {"ip_pool", {{"path", "/access_network_ip_pools/" + s.ip_pool}}},
                                 {"volumes", Json::array({volume})}}})}};
}

bool is_uuid(const std::string& s) {
  if (s.size() != 36) return false;
  for (size_t i = 0; i < s.size(); ++i) {
    const bool dash = i == 8 || i == 13 || i == 18 || i == 23;
    if (dash ? s[i] != '-' : !std::isxdigit(static_cast<unsigned char>(s[i]))) return false;
  }
  return true;
}

/// A clone source as this client builds them: volume_path(ai) or snapshot_path(ai, ts) of a
/// valid name and timestamp, nothing else (the path goes into the body verbatim).
bool is_valid_clone_source(const std::string& path, bool snapshot) {
  const std::string head = "/app_instances/";
  if (path.rfind(head, 0) != 0) return false;
  const auto end = path.find('/', head.size());
  if (end == std::string::npos) return false;
  const std::string ai = path.substr(head.size(), end - head.size());
  if (!is_valid_name(ai)) return false;
  if (!snapshot) return path == volume_path(ai);
  const std::string prefix = volume_path(ai) + "/snapshots/";
  return path.rfind(prefix, 0) == 0 && is_valid_snapshot_timestamp(path.substr(prefix.size())) &&
         path == snapshot_path(ai, path.substr(prefix.size()));
}

/// Oldest first: utc_ts compared as numbers (integer part by length, then digits).
bool older(const Snapshot& a, const Snapshot& b) {
  const auto split = [](const std::string& ts) {
    const auto dot = ts.find('.');
    return std::pair{ts.substr(0, dot), dot == std::string::npos ? "" : ts.substr(dot + 1)};
  };
  auto [ai, af] = split(a.timestamp);
  auto [bi, bf] = split(b.timestamp);
  ai.erase(0, std::min(ai.find_first_not_of('0'), ai.size()));
  bi.erase(0, std::min(bi.find_first_not_of('0'), bi.size()));
  if (ai.size() != bi.size()) return ai.size() < bi.size();
  if (ai != bi) return ai < bi;
  const size_t n = std::max(af.size(), bf.size());
  af.resize(n, '0');
  bf.resize(n, '0');
  return af < bf;
}

Status validate_spec(const VolumeSpec& s) {
  if (!is_valid_name(s.name))
    return Error{"'" + s.name + "' is not a valid EDF name", Errc::invalid_arg};
  if (!s.clone_snapshot_src.empty() && !s.clone_volume_src.empty()) {
    return Error{"a volume has one content source, not a snapshot and a volume", Errc::invalid_arg};
  }
  if (!s.clone_snapshot_src.empty() && !is_valid_clone_source(s.clone_snapshot_src, true)) {
    return Error{"clone source '" + safe_excerpt(s.clone_snapshot_src) +
                     "' is not a snapshot path (/app_instances/<name>/.../snapshots/<utc_ts>)",
                 Errc::invalid_arg};
  }
  if (!s.clone_volume_src.empty() && !is_valid_clone_source(s.clone_volume_src, false)) {
    return Error{"clone source '" + safe_excerpt(s.clone_volume_src) +
                     "' is not a volume path (/app_instances/<name>/storage_instances/storage-1/"
                     "volumes/volume-1)",
                 Errc::invalid_arg};
  }
  if (s.size_gib < 1 || s.size_gib > 32768) {
    return Error{"size " + std::to_string(s.size_gib) + " GiB is outside 1..32768",
                 Errc::invalid_arg};
  }
  if (s.replica_count < 1 || s.replica_count > 5) {
    return Error{"replica count " + std::to_string(s.replica_count) + " is outside 1..5",
                 Errc::invalid_arg};
  }
  if (s.placement_mode != "hybrid" && s.placement_mode != "single_flash" &&
      s.placement_mode != "all_flash") {
    return Error{
        "placement mode '" + s.placement_mode + "' is not hybrid, single_flash or all_flash",
        Errc::invalid_arg};
  }
  if (!is_valid_name(s.ip_pool))
    return Error{"ip pool '" + s.ip_pool + "' is not a valid EDF name", Errc::invalid_arg};
  if (!s.template_name.empty() && !is_valid_name(s.template_name)) {
    return Error{"template '" + s.template_name + "' is not a valid EDF name", Errc::invalid_arg};
  }
  return ok_status();
}

}  // namespace

asio::awaitable<Result<AppInstance>> Client::create_app_instance(const VolumeSpec& spec) {
  const Call c{"POST", "/app_instances", create_body(spec), "creating app instance", spec.name,
               false};
  if (auto st = validate_spec(spec); !st) co_return wrap(c, st.error().message, st.error().code);
  auto created = co_await call(c);
  if (!created && created.error().code == Errc::lost_reply) {
    // The array may have created it. Repeat the POST once: 409 then means it did.
    log_->warn("volume {}: the reply to creating its app instance was lost; repeating the request",
               spec.name);
    metrics_.retry("lost_reply");
    created = co_await call(c);
    if (!created && (created.error().code == HttpStatus::conflict ||
                     created.error().code == Errc::lost_reply)) {
      log_->info("volume {}: its app instance exists after a lost reply; reading it back",
                 spec.name);
      co_return co_await get_app_instance(spec.name);
    }
  }
  if (!created) co_return created.error();
  auto ai = AppInstance::from_json(*created);
  if (!ai) co_return wrap(c, ai.error().message, Errc::bad_reply);
  if (!spec.clone_snapshot_src.empty() || !spec.clone_volume_src.empty()) {
    log_->info("volume {}: app instance created as a clone of {} ({} GiB)", spec.name,
               spec.clone_snapshot_src.empty() ? spec.clone_volume_src : spec.clone_snapshot_src,
               ai->size_gib);
  } else {
    log_->info("volume {}: app instance created ({} GiB, {} replicas)", spec.name, spec.size_gib,
               spec.replica_count);
  }
  co_return ai;
}

asio::awaitable<Result<AppInstance>> Client::ensure_app_instance(const VolumeSpec& spec) {
  auto found = co_await get_app_instance(spec.name);
  if (found || found.error().code != HttpStatus::not_found) co_return found;
  auto created = co_await create_app_instance(spec);
  if (!created && created.error().code == HttpStatus::conflict) {
    // A concurrent creator won; but a 409 about the request itself (a clone of a snapshot that is
    // not available yet) leaves nothing to read back: then the 409 is the answer.
    auto found_now = co_await get_app_instance(spec.name);
    if (!found_now && found_now.error().code == HttpStatus::not_found) co_return created;
    co_return found_now;
  }
  co_return created;
}

asio::awaitable<Result<AppInstance>> Client::set_online(const std::string& name, bool online) {
  Json body{{"admin_state", online ? "online" : "offline"}};
  if (!online) body["force"] = true;  // what every client sends: skip the array's warnings
  const Call c{"PUT", "/app_instances/" + name,
               body,  online ? "onlining app instance" : "offlining app instance",
               name,  true};
  co_return co_await app_instance_call(c);
}

asio::awaitable<Result<AppInstance>> Client::wait_available(const std::string& name,
                                                            std::chrono::milliseconds timeout,
                                                            std::chrono::milliseconds interval) {
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    auto ai = co_await get_app_instance(name);
    if (!ai || ai->op_state == "available") co_return ai;
    if (Clock::now() + interval > deadline) {
      co_return Error{"waiting for volume " + name + " failed: storage-1 is still '" +
                          ai->op_state + "' after " + std::to_string(timeout.count()) +
                          " ms; check the app instance on the array",
                      Errc::not_ready};
    }
    asio::steady_timer timer(executor_, interval);
    boost::system::error_code ec;
    co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
}

asio::awaitable<Status> Client::resize(const std::string& name, int64_t size_gib) {
  const Call c{
      "PUT", si_path(name) + "/volumes/" + kVolume, Json{{"size", size_gib}}, "resizing", name,
      true};
  if (!is_valid_name(name))
    co_return wrap(c, "'" + name + "' is not a valid EDF name", Errc::invalid_arg);
  if (size_gib < 1 || size_gib > 32768) {
    co_return wrap(c, "size " + std::to_string(size_gib) + " GiB is outside 1..32768",
                   Errc::invalid_arg);
  }
  auto r = co_await call(c);
  if (!r) co_return r.error();
  co_return ok_status();
}

asio::awaitable<Status> Client::delete_app_instance(const std::string& name) {
  auto off = co_await set_online(name, false);
  if (!off) {
    if (off.error().code == HttpStatus::not_found) co_return ok_status();  // already gone
    co_return off.error();
  }
  const Call c{"DELETE", "/app_instances/" + name, std::nullopt, "deleting app instance", name,
               true};
  auto r = co_await call(c);
  if (!r && r.error().code != HttpStatus::not_found) co_return r.error();
  log_->info("volume {}: app instance deleted", name);
  co_return ok_status();
}

asio::awaitable<Result<std::vector<AppInstance>>> Client::list_app_instances() {
  std::vector<AppInstance> out;
  constexpr int kPage = static_cast<int>(kListPage);
  for (int offset = 0;;) {
    const Call c{
        "GET",
        "/app_instances?limit=" + std::to_string(kPage) + "&offset=" + std::to_string(offset),
        std::nullopt,
        "listing app instances",
        "",
        true};
    Json meta;
    auto page = co_await call_full(c, &meta);
    if (!page) co_return page.error();
    if (!page->is_array()) co_return wrap(c, "the list is not an array", Errc::bad_reply);
    for (const auto& e : *page) {
      if (auto ai = AppInstance::from_json(e)) out.push_back(std::move(*ai));
    }
    offset += static_cast<int>(page->size());
    // v2.2 reports total_count, v2.1 total; without either a short page is the last one.
    const int64_t total = int_at(meta, "total_count", int_at(meta, "total", -1));
    if (page->empty() || (total >= 0 && offset >= total) || (total < 0 && page->size() < kPage))
      break;
  }
  co_return out;
}

asio::awaitable<Result<Snapshot>> Client::create_snapshot(const std::string& name,
                                                          const std::string& uuid) {
  const Call c{
      "POST", volume_path(name) + "/snapshots", Json{{"uuid", uuid}}, "taking a snapshot", name,
      false};
  if (!is_valid_name(name))
    co_return wrap(c, "'" + name + "' is not a valid EDF name", Errc::invalid_arg);
  if (!is_uuid(uuid)) {
    co_return wrap(c, "snapshot uuid '" + safe_excerpt(uuid, 64) + "' is not a UUID",
                   Errc::invalid_arg);
  }
  auto created = co_await call(c);
  if (!created && created.error().code == Errc::lost_reply) {
    // Taken or not: repeat the POST once; if the first took effect, this one meets the uuid.
    log_->warn("volume {}: the reply to taking snapshot {} was lost; repeating the request", name,
               uuid);
    metrics_.retry("lost_reply");
    created = co_await call(c);
  }
  if (!created) {
    const std::error_code code = created.error().code;
    // 400 is EDF's duplicate uuid (code 15) among others; any 400 without a snapshot of that uuid
    // stays the array's refusal. A lost reply may have taken the snapshot: look it up the same way.
    if (code != HttpStatus::bad_request && code != Errc::lost_reply) co_return created.error();
    auto found = co_await find_snapshot(name, uuid);
    if (found && *found) {
      log_->info("volume {}: snapshot {} with uuid {} exists already", name, (*found)->timestamp,
                 uuid);
      co_return std::move(**found);
    }
    co_return created.error();
  }
  auto snap = Snapshot::from_json(*created, name);
  if (!snap) co_return wrap(c, snap.error().message, Errc::bad_reply);
  log_->info("volume {}: snapshot {} taken (uuid {}, {})", name, snap->timestamp, uuid,
             snap->op_state);
  co_return snap;
}

asio::awaitable<Result<std::optional<Snapshot>>> Client::find_snapshot(const std::string& name,
                                                                       const std::string& uuid) {
  auto all = co_await list_snapshots(name);
  if (!all) co_return all.error();
  for (auto& s : *all) {
    if (s.uuid == uuid) co_return std::optional<Snapshot>(std::move(s));
  }
  co_return std::optional<Snapshot>();
}

asio::awaitable<Result<std::vector<Snapshot>>> Client::list_snapshots(const std::string& name) {
  if (!is_valid_name(name)) {
    const Call c{"GET", "", std::nullopt, "listing snapshots", name, true};
    co_return wrap(c, "'" + name + "' is not a valid EDF name", Errc::invalid_arg);
  }
  std::vector<Snapshot> out;
  constexpr int kPage = static_cast<int>(kListPage);
  for (int offset = 0;;) {
    const Call c{"GET",
                 volume_path(name) + "/snapshots?limit=" + std::to_string(kPage) +
                     "&offset=" + std::to_string(offset),
                 std::nullopt,
                 "listing snapshots",
                 name,
                 true};
    Json meta;
    auto page = co_await call_full(c, &meta);
    if (!page) co_return page.error();
    // v2.1+ answer an array; older firmware an object keyed by timestamp (and no pages).
    if (!page->is_array() && !page->is_object())
      co_return wrap(c, "the list is neither an array nor an object", Errc::bad_reply);
    for (const auto& e : *page) {
      if (auto s = Snapshot::from_json(e, name)) out.push_back(std::move(*s));
    }
    if (page->is_object()) break;
    offset += static_cast<int>(page->size());
    const int64_t total = int_at(meta, "total_count", int_at(meta, "total", -1));
    if (page->empty() || (total >= 0 && offset >= total) || (total < 0 && page->size() < kPage))
      break;
  }
  std::stable_sort(out.begin(), out.end(), older);
  co_return out;
}

asio::awaitable<Status> Client::delete_snapshot(const std::string& name,
                                                const std::string& timestamp) {
  const Call c{"DELETE",     volume_path(name) + "/snapshots/" + timestamp,
               std::nullopt, "deleting snapshot " + safe_excerpt(timestamp, 40),
               name,         true};
  if (!is_valid_name(name))
    co_return wrap(c, "'" + name + "' is not a valid EDF name", Errc::invalid_arg);
  if (!is_valid_snapshot_timestamp(timestamp)) {
    co_return wrap(
        c, "'" + safe_excerpt(timestamp, 40) + "' is not a snapshot timestamp (digits and one dot)",
        Errc::invalid_arg);
  }
  auto r = co_await call(c);
  if (!r && r.error().code != HttpStatus::not_found) co_return r.error();
  log_->info("volume {}: snapshot {} deleted{}", name, timestamp, r ? "" : " (already gone)");
  co_return ok_status();
}

asio::awaitable<Status> Client::ensure_initiator(const std::string& iqn, const std::string& label) {
  const Call get{"GET", "/initiators/" + iqn, std::nullopt, "looking up initiator " + iqn, "",
                 true};
  if (!is_valid_iqn(iqn))
    co_return wrap(get, "'" + iqn + "' is not a valid IQN", Errc::invalid_arg);
  auto found = co_await call(get);
  if (found) co_return ok_status();
  if (found.error().code != HttpStatus::not_found) co_return found.error();
  // force works around DAT-15931 (as Cinder and CSI do); 409 means another node's agent won.
  const Call post{"POST",
                  "/initiators",
                  Json{{"id", iqn}, {"name", label}, {"force", true}},
                  "registering initiator " + iqn,
                  "",
                  false};
  auto created = co_await call(post);
  if (created || created.error().code == HttpStatus::conflict) co_return ok_status();
  if (created.error().code == Errc::lost_reply) {
    auto again = co_await call(get);
    if (again) co_return ok_status();
  }
  co_return created.error();
}

asio::awaitable<Result<std::vector<InitiatorInfo>>> Client::list_initiators() {
  const Call c{"GET", "/initiators", std::nullopt, "listing initiators", "", true};
  auto j = co_await call(c);
  if (!j) co_return j.error();
  if (!j->is_array() && !j->is_object()) {
    co_return wrap(c, "the list is neither an array nor an object", Errc::bad_reply);
  }
  std::vector<InitiatorInfo> out;
  for (const auto& e : *j) {
    if (!e.is_object()) continue;
    InitiatorInfo i{string_at(e, "id"), string_at(e, "name")};
    if (!i.iqn.empty()) out.push_back(std::move(i));
  }
  co_return out;
}

asio::awaitable<Status> Client::acl_change(const std::string& name, const std::string& iqn,
                                           bool add) {
  const std::string what =
      std::string(add ? "adding " : "removing ") + iqn + (add ? " to" : " from") + " the ACL";
  const Call op{"PUT",
                si_path(name) + "/acl_policy/initiators",
                Json{{"op", add ? "add" : "remove"}, {"path", "/initiators/" + iqn}},
                what,
                name,
                true};
  if (!is_valid_name(name))
    co_return wrap(op, "'" + name + "' is not a valid EDF name", Errc::invalid_arg);
  if (!is_valid_iqn(iqn)) co_return wrap(op, "'" + iqn + "' is not a valid IQN", Errc::invalid_arg);
  auto r = co_await call(op);
  if (r) co_return ok_status();
  const std::error_code code = r.error().code;
  if (code != HttpStatus::not_found && code != HttpStatus::method_not_allowed &&
      code != HttpStatus::bad_request)
    co_return r.error();
  // Arrays without the atomic op endpoint: read, modify, write the whole ACL (last writer wins).
  const Call get{"GET", si_path(name) + "/acl_policy", std::nullopt, what, name, true};
  auto acl = co_await call(get);
  if (!acl) co_return acl.error();
  Json inits = Json::array();
  bool present = false;
  const std::string path = "/initiators/" + iqn;
  for (const auto& e : array_at(*acl, "initiators")) {
    const std::string p = entry_path(e);
    if (p.empty()) continue;
    if (p == path) {
      present = true;
      if (!add) continue;
    }
    inits.push_back(Json{{"path", p}});
  }
  if (add == present) co_return ok_status();
  if (add) inits.push_back(Json{{"path", path}});
  Json groups = Json::array();
  for (const auto& g : array_at(*acl, "initiator_groups")) {
    if (auto p = entry_path(g); !p.empty()) groups.push_back(Json{{"path", p}});
  }
  const Call put{"PUT",
                 si_path(name) + "/acl_policy",
                 Json{{"initiators", inits}, {"initiator_groups", groups}},
                 what,
                 name,
                 true};
  auto w = co_await call(put);
  if (!w) co_return w.error();
  co_return ok_status();
}

asio::awaitable<Status> Client::acl_add(const std::string& name, const std::string& iqn) {
  co_return co_await acl_change(name, iqn, true);
}

asio::awaitable<Status> Client::acl_remove(const std::string& name, const std::string& iqn) {
  co_return co_await acl_change(name, iqn, false);
}

asio::awaitable<Result<std::vector<std::string>>> Client::get_acl(const std::string& name) {
  const Call c{"GET", si_path(name) + "/acl_policy", std::nullopt, "reading the ACL", name, true};
  if (!is_valid_name(name))
    co_return wrap(c, "'" + name + "' is not a valid EDF name", Errc::invalid_arg);
  auto acl = co_await call(c);
  if (!acl) co_return acl.error();
  std::vector<std::string> out;
  for (const auto& e : array_at(*acl, "initiators")) {
    const std::string p = entry_path(e);
    if (p.empty()) continue;
    const auto slash = p.rfind('/');
    out.push_back(slash == std::string::npos ? p : p.substr(slash + 1));
  }
  co_return out;
}

asio::awaitable<Result<Metadata>> Client::get_metadata(const std::string& name) {
  const Call c{
      "GET", "/app_instances/" + name + "/metadata", std::nullopt, "reading metadata", name, true};
  if (!is_valid_name(name))
    co_return wrap(c, "'" + name + "' is not a valid EDF name", Errc::invalid_arg);
  auto j = co_await call(c);
  if (!j) co_return j.error();
  if (!j->is_object()) co_return wrap(c, "metadata is not an object", Errc::bad_reply);
  Metadata out;
  for (const auto& [k, v] : j->items())
    out[k] = v.is_string() ? v.get<std::string>() : json::dump(v);
  co_return out;
}

asio::awaitable<Status> Client::put_metadata(const std::string& name, const Metadata& changes) {
  const Json body(changes);
  const Call c{"PUT", "/app_instances/" + name + "/metadata", body, "writing metadata", name, true};
  if (!is_valid_name(name))
    co_return wrap(c, "'" + name + "' is not a valid EDF name", Errc::invalid_arg);
  const auto size = body.dump().size();
  if (size > kMetadataLimit) {
    co_return wrap(c,
                   "the change is " + std::to_string(size) + " bytes, above EDF's " +
                       std::to_string(kMetadataLimit) + "-byte metadata limit",
                   Errc::invalid_arg);
  }
  auto r = co_await call(c);
  if (!r) co_return r.error();
  co_return ok_status();
}

}  // namespace datera::edf
