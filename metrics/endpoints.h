#pragma once

// The HTTP paths the metrics server answers. Deployment manifests and tests refer to these.

namespace datera::metrics {
inline constexpr const char* kMetricsPath = "/metrics";
inline constexpr const char* kHealthPath = "/healthz";  ///< 200 while the event loop turns
inline constexpr const char* kReadyPath = "/readyz";  ///< 200 once every readiness condition holds
inline constexpr unsigned short kDefaultPort = 9808;
}  // namespace datera::metrics
