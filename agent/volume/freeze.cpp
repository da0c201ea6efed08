#include "agent/volume/freeze.h"

#include <algorithm>
#include <charconv>
#include <vector>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "agent/volume/manager.h"

namespace datera::volume {
namespace {

/// Space-separated words of printable ASCII, at most `max` of them; nullopt otherwise.
std::optional<std::vector<std::string>> words(const std::string& text, size_t max) {
  if (text.empty() || text.size() > 400) return std::nullopt;
  if (!std::all_of(text.begin(), text.end(), [](char c) { return c >= ' ' && c < 0x7f; })) {
    return std::nullopt;
  }
  std::vector<std::string> out;
  size_t at = 0;
  while (at < text.size()) {
    const size_t end = std::min(text.find(' ', at), text.size());
    if (end > at) out.push_back(text.substr(at, end - at));
    if (out.size() > max) return std::nullopt;
    at = end + 1;
  }
  return out;
}

const std::string* find(const edf::Metadata& md, const char* key) {
  const auto it = md.find(key);
  return it == md.end() ? nullptr : &it->second;
}

}  // namespace

int64_t unix_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string encode(const FreezeRequest& r) {
  return r.id + " " + r.node + " " + std::to_string(r.expires_ms);
}

std::string encode(const FreezeReply& r) {
  return r.id + " " + r.state;
}

std::optional<FreezeRequest> freeze_request(const edf::Metadata& md) {
  const std::string* text = find(md, kFreezeKey);
  if (text == nullptr) return std::nullopt;
  auto w = words(*text, 3);
  if (!w || w->size() != 3) return std::nullopt;
  FreezeRequest r{(*w)[0], (*w)[1], 0};
  const std::string& n = (*w)[2];
  const auto [end, ec] = std::from_chars(n.data(), n.data() + n.size(), r.expires_ms);
  if (ec != std::errc() || end != n.data() + n.size() || r.expires_ms <= 0) return std::nullopt;
  return r;
}

std::optional<FreezeReply> freeze_reply(const edf::Metadata& md) {
  const std::string* text = find(md, kFrozenKey);
  if (text == nullptr) return std::nullopt;
  auto w = words(*text, 2);
  if (!w || w->size() != 2) return std::nullopt;
  return FreezeReply{(*w)[0], (*w)[1]};
}

// ---------------------------------------------------------------------------------------------
// The node's side: Manager
// ---------------------------------------------------------------------------------------------

namespace asio = boost::asio;

void Manager::maybe_freeze(asio::any_io_executor executor, const std::string& name,
                           const edf::Metadata& md) {
  auto req = freeze_request(md);
  if (!req || req->node != options_.node_name || freezes_ended_) return;
  std::string& served = freeze_served_[name];
  if (served == req->id) return;  // answered at an earlier check; the controller clears it
  served = req->id;
  asio::co_spawn(executor, hold_frozen(name, std::move(*req)),
                 [log = log_, name](const std::exception_ptr& e) {
                   if (!e) return;
                   try {
                     std::rethrow_exception(e);
                   } catch (const std::exception& ex) {
                     log->critical("volume {}: freezing it for a snapshot threw: {}", name,
                                   ex.what());
                   }
                 });
}

asio::awaitable<Status> Manager::answer_freeze(Record& rec, const FreezeRequest& req,
                                               const std::string& state) {
  auto array = arrays_.get_for_leases(rec.backend);
  if (!array) co_return array.error();
  edf::Metadata keys;
  keys[kFrozenKey] = encode(FreezeReply{req.id, state});
  co_return co_await (*array)->put_metadata(rec.volume, keys);
}

asio::awaitable<void> Manager::hold_frozen(std::string name, FreezeRequest req) {
  ++freezes_held_;
  struct Held {
    int& n;
    ~Held() { --n; }
  } held{freezes_held_};
  auto guard = co_await locks_.lock(name);
  auto it = records_.find(name);
  if (it == records_.end() || freezes_ended_) co_return;
  Record& rec = it->second;
  const int64_t left_ms = req.expires_ms - unix_ms();
  if (left_ms <= 0) {
    log_->info("volume {}: a snapshot's freeze request ({}) expired before it was seen; ignored",
               name, req.id);
    metrics_.freeze("stale", -1);
    co_return;
  }
  if (rec.block || rec.phase != Phase::attached || !staged(rec)) {
    // Nothing of it is mounted here, so nothing here has unwritten data: the snapshot needs no
    // freeze. Said so, so the controller need not wait.
    (void)co_await answer_freeze(rec, req, "unstaged");
    metrics_.freeze("unstaged", -1);
    co_return;
  }
  rec.frozen = req.id;
  if (auto st = co_await journal_.save(rec); !st) {
    rec.frozen.clear();
    log_->warn("volume {}: not freezing it for a snapshot: the journal cannot record it: {}", name,
               st.error().message);
    (void)co_await answer_freeze(rec, req, "failed");
    metrics_.freeze("failed", -1);
    co_return;
  }
  const auto start = std::chrono::steady_clock::now();
  if (auto st = co_await mounter_.freeze(rec.staging); !st) {
    log_->warn(
        "volume {}: not frozen for snapshot request {}: {}; the snapshot is "
        "crash-consistent only",
        name, req.id, st.error().message);
    rec.frozen.clear();
    (void)co_await journal_.save(rec);
    (void)co_await answer_freeze(rec, req, "failed");
    metrics_.freeze("failed", -1);
    co_return;
  }
  log_->info("volume {}: filesystem at {} frozen for snapshot request {}", name, rec.staging,
             req.id);
  // No answer on the array means the controller would wait in vain: thaw at once then.
  const auto answered = co_await answer_freeze(rec, req, "frozen");
  if (!answered) {
    log_->warn("volume {}: cannot tell the controller it is frozen ({}); thawing", name,
               answered.error().message);
  }
  const auto hold = std::min<std::chrono::milliseconds>(options_.freeze_max_hold,
                                                        std::chrono::milliseconds(left_ms));
  asio::steady_timer timer(co_await asio::this_coro::executor);
  while (answered && !freezes_ended_ && std::chrono::steady_clock::now() - start < hold) {
    timer.expires_after(options_.freeze_poll);
    boost::system::error_code ec;
    co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    auto array = arrays_.get_for_leases(rec.backend);
    if (!array) continue;
    auto md = co_await (*array)->metadata(name);
    if (!md) continue;  // the array is unreachable: the controller cannot snapshot either
    const auto now = freeze_request(*md);
    if (!now || now->id != req.id) break;  // done (or superseded): thaw
  }
  Status thawed = ok_status();
  for (int attempt = 0; attempt < 3; ++attempt) {
    thawed = co_await mounter_.thaw(rec.staging);
    if (thawed) break;
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (!thawed) {
    // The record keeps `frozen`: the next start thaws it too.
    log_->error(
        "volume {}: the filesystem at {} is STILL FROZEN after snapshot request {}: {}; "
        "writes to it wait until it is thawed (fsfreeze -u {})",
        name, rec.staging, req.id, thawed.error().message, rec.staging);
    metrics_.freeze("thaw_failed", seconds);
    co_return;
  }
  rec.frozen.clear();
  (void)co_await journal_.save(rec);
  log_->info("volume {}: thawed after {:.3f} s (snapshot request {})", name, seconds, req.id);
  metrics_.freeze("frozen", seconds);
}

asio::awaitable<void> Manager::end_freezes() {
  freezes_ended_ = true;
  asio::steady_timer timer(co_await asio::this_coro::executor);
  // Each holder looks at the flag every freeze_poll, then thaws.
  const auto deadline =
      std::chrono::steady_clock::now() + options_.freeze_poll * 5 + std::chrono::seconds(2);
  while (freezes_held_ > 0 && std::chrono::steady_clock::now() < deadline) {
    timer.expires_after(std::chrono::milliseconds(20));
    boost::system::error_code ec;
    co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
  if (freezes_held_ > 0) {
    log_->error("{} snapshot freeze(s) still held at shutdown; the next start thaws them",
                freezes_held_);
  }
}

}  // namespace datera::volume
