#include "agent/app/wiring.h"

namespace datera::app {

Result<edf::BackendTarget> backend_target(const config::Config& cfg) {
  const auto& b = cfg.backend;
  edf::BackendTarget base;
  base.port = b.tls ? 7718 : 7717;
  auto target = edf::parse_server(b.server, base);
  if (!target) return target.error().wrap("config key 'backend.server'");
  target->credentials = {b.username, b.password};
  target->is_default = true;
  return target;
}

edf::TlsOptions tls_options(const config::Config& cfg) {
  return edf::TlsOptions{cfg.backend.tls, cfg.backend.ca_file, cfg.backend.insecure_skip_verify};
}

}  // namespace datera::app
