#include "agent/volume/array.h"

namespace datera::volume {

namespace asio = boost::asio;

namespace {

class EdfArray : public Array {
 public:
  explicit EdfArray(edf::Client& client) : client_(client) {}

  asio::awaitable<Result<edf::AppInstance>> ensure_volume(const edf::VolumeSpec& spec) override {
    co_return co_await client_.ensure_app_instance(spec);
  }
  asio::awaitable<Result<std::optional<edf::AppInstance>>> find_volume(
      const std::string& name) override {
    auto ai = co_await client_.get_app_instance(name);
    if (!ai) {
      if (is_not_found(ai.error())) co_return std::optional<edf::AppInstance>();
      co_return ai.error();
    }
    co_return std::optional<edf::AppInstance>(std::move(*ai));
  }
  asio::awaitable<Status> ensure_initiator(const std::string& iqn,
                                           const std::string& label) override {
    co_return co_await client_.ensure_initiator(iqn, label);
  }
  asio::awaitable<Result<std::vector<edf::InitiatorInfo>>> initiators() override {
    co_return co_await client_.list_initiators();
  }
  asio::awaitable<Result<std::vector<std::string>>> volume_names() override {
    auto all = co_await client_.list_app_instances();
    if (!all) co_return all.error();
    std::vector<std::string> out;
    for (const auto& ai : *all) out.push_back(ai.name);
    co_return out;
  }
  asio::awaitable<Result<std::vector<edf::AppInstance>>> list_volumes() override {
    co_return co_await client_.list_app_instances();
  }
  asio::awaitable<Status> acl_add(const std::string& name, const std::string& iqn) override {
    co_return co_await client_.acl_add(name, iqn);
  }
  asio::awaitable<Status> acl_remove(const std::string& name, const std::string& iqn) override {
    co_return co_await client_.acl_remove(name, iqn);
  }
  asio::awaitable<Result<std::vector<std::string>>> acl(const std::string& name) override {
    co_return co_await client_.get_acl(name);
  }
  asio::awaitable<Result<edf::Metadata>> metadata(const std::string& name) override {
    co_return co_await client_.get_metadata(name);
  }
  asio::awaitable<Status> put_metadata(const std::string& name,
                                       const edf::Metadata& keys) override {
    co_return co_await client_.put_metadata(name, keys);
  }
  asio::awaitable<Result<edf::AppInstance>> bring_online(
      const std::string& name, std::chrono::milliseconds timeout) override {
    auto on = co_await client_.set_online(name, true);
    if (!on) co_return on.error();
    if (on->op_state == "available") co_return on;
    co_return co_await client_.wait_available(name, timeout, std::chrono::milliseconds(250));
  }
  asio::awaitable<Status> resize(const std::string& name, int64_t size_gib) override {
    co_return co_await client_.resize(name, size_gib);
  }
  asio::awaitable<Status> delete_volume(const std::string& name) override {
    co_return co_await client_.delete_app_instance(name);
  }
  asio::awaitable<Result<edf::Snapshot>> create_snapshot(const std::string& name,
                                                         const std::string& uuid) override {
    co_return co_await client_.create_snapshot(name, uuid);
  }
  asio::awaitable<Result<std::vector<edf::Snapshot>>> snapshots(const std::string& name) override {
    co_return co_await client_.list_snapshots(name);
  }
  asio::awaitable<Status> delete_snapshot(const std::string& name,
                                          const std::string& timestamp) override {
    co_return co_await client_.delete_snapshot(name, timestamp);
  }

 private:
  edf::Client& client_;
};

}  // namespace

struct EdfArrays::Entry {
  std::unique_ptr<edf::Transport> transport;
  std::unique_ptr<edf::Client> client;
  std::unique_ptr<EdfArray> array;
};

EdfArrays::EdfArrays(asio::any_io_executor executor, EdfArraysOptions options, edf::Metrics& probe,
                     LoggerPtr log)
    : executor_(std::move(executor)),
      options_(std::move(options)),
      metrics_(probe),
      log_(std::move(log)) {}

EdfArrays::~EdfArrays() = default;

Result<Array*> EdfArrays::get(const edf::BackendTarget& target) {
  return get(target, false);
}

Result<Array*> EdfArrays::get_for_leases(const edf::BackendTarget& target) {
  return get(target, options_.lease_request_timeout.count() > 0);
}

Result<edf::BackendTarget> EdfArrays::resolve(const edf::BackendTarget& target) const {
  const auto& current = options_.default_backend;
  if (target.is_default) {
    if (current.host.empty()) {
      return Error{"the volume was attached through the agent's default array " + target.server() +
                   ", but backend.server is not set any more: set it back (with backend.username "
                   "and backend.password_file) so the volume can be reached"};
    }
    if (!edf::same_server(target, current)) {
      return Error{"the volume was attached through the agent's default array " + target.server() +
                   ", but backend.server is now " + current.server() +
                   ": the volume is still on the old array; set backend.server back until it is "
                   "released"};
    }
    return current;
  }
  // The agent's own account on its own array always logs in with the agent's current password:
  // records written by earlier versions copied it, and must survive a rotation too.
  if (!current.host.empty() && edf::same_server(target, current) &&
      target.credentials.user == current.credentials.user) {
    return current;
  }
  return target;
}

Result<Array*> EdfArrays::get(const edf::BackendTarget& wanted, bool leases) {
  auto resolved = resolve(wanted);
  if (!resolved) return resolved.error();
  const edf::BackendTarget& target = *resolved;
  if (target.host.empty()) {
    return Error{
        "no Datera array for this volume: set backstoreServer in the volume's options, a "
        "secretRef with 'server', or backend.server in the agent config"};
  }
  if (target.credentials.empty()) {
    return Error{"no credentials for array " + target.server() +
                 ": give a secretRef (username, password), serverUser/serverPasswd, or "
                 "backend.username and backend.password_file in the agent config"};
  }
  // Keyed by what makes a session distinct; the password is part of it so a rotated secret gets
  // a fresh client (the key is never printed).
  const std::string key = std::string(leases ? "leases\n" : "") + edf::server_key(target) + "\n" +
                          target.credentials.user + "\n" + target.credentials.password;
  auto it = entries_.find(key);
  if (it != entries_.end()) return it->second->array.get();
  const edf::Endpoint endpoint{target.host, target.port};
  auto transport = options_.make_transport
                       ? options_.make_transport(endpoint)
                       : edf::make_beast_transport(executor_, endpoint, log_, options_.tls);
  if (!transport) return transport.error().wrap("array " + target.server());
  auto entry = std::make_unique<Entry>();
  entry->transport = std::move(*transport);
  edf::ClientOptions o;
  o.server = target.server();
  o.credentials = target.credentials;
  o.tenant = options_.tenant;
  o.request_timeout = options_.request_timeout;
  if (leases) {
    o.request_timeout = options_.lease_request_timeout;
    o.retry.max_attempts = options_.lease_attempts;
  }
  entry->client = std::make_unique<edf::Client>(executor_, *entry->transport, o, metrics_, log_);
  entry->array = std::make_unique<EdfArray>(*entry->client);
  Array* out = entry->array.get();
  log_->info("array {} (user {}): client created{}", target.server(), target.credentials.user,
             leases ? " for lease renewals" : "");
  entries_.emplace(key, std::move(entry));
  return out;
}

}  // namespace datera::volume
