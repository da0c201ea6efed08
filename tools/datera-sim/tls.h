#pragma once

// HTTPS for the simulator, as an EDF array serves it on 7718. With no certificate given, one is
// made at start: a self-signed P-256 certificate for the listen address (plus localhost), written
// next to its key so clients can pass it as their CA file and keep verification on.

#include <memory>
#include <string>
#include <vector>

#include <boost/asio/ssl/context.hpp>

#include "base/result.h"

namespace datera::sim {

/// Writes `cert_path` (0644) and `key_path` (0600): a self-signed certificate valid for a year
/// whose subjectAltName lists `names` (IP addresses become IP entries, the rest DNS entries).
Status make_self_signed(const std::string& cert_path, const std::string& key_path,
                        const std::vector<std::string>& names);

/// A TLS server context (TLS 1.2 and newer) with the certificate chain and key loaded.
Result<std::shared_ptr<boost::asio::ssl::context>> server_tls_context(const std::string& cert_path,
                                                                      const std::string& key_path);

}  // namespace datera::sim
