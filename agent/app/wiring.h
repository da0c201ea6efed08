#pragma once

// What the composition root derives from the config before it builds anything: each derived value
// is computed here once, so every service that needs it gets the same one.

#include "agent/config/config.h"
#include "base/result.h"
#include "plugins/edf/options.h"
#include "plugins/edf/transport.h"

namespace datera::app {

/// The default array (backend.server) with the agent's credentials: port 7717, or 7718 with
/// backend.tls, unless the server names one. Only valid when backend.server is set; its error
/// names the key.
Result<edf::BackendTarget> backend_target(const config::Config& cfg);

/// HTTPS to the default array (backend.tls, ca_file, insecure_skip_verify).
edf::TlsOptions tls_options(const config::Config& cfg);

}  // namespace datera::app
