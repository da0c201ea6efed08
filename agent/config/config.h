#pragma once

// The agent's configuration: YAML file, then environment overrides (what a DaemonSet injects),
// then command-line overrides. Unknown keys and bad values are refused with the key and the reason,
// so a typo never silently falls back to a default.

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <sys/types.h>
#include <vector>

#include <spdlog/common.h>

#include "base/log_format.h"
#include "base/result.h"

namespace datera::config {

using std::chrono::milliseconds;

enum class InitiatorKind { open_iscsi, loop };
enum class MultipathMode { automatic, on, off };
enum class HandoffMode { agent, off };

/// The key's spelling in the config file ("open-iscsi", "auto", ...), for logs and /v1/status.
std::string_view to_string(InitiatorKind kind);
std::string_view to_string(MultipathMode mode);
std::string_view to_string(HandoffMode mode);

/// The enumerated keys as validate() parsed them. Code branches on these, never on the text
/// fields they came from (which stay as written, for messages and the override order).
struct Choices {
  InitiatorKind initiator = InitiatorKind::open_iscsi;
  MultipathMode multipath = MultipathMode::automatic;
  HandoffMode handoff = HandoffMode::agent;
  spdlog::level::level_enum log_level = spdlog::level::info;
  LogFormat log_format = LogFormat::text;
};

struct MetricsConfig {
  std::string listen = "0.0.0.0:9808";
  std::string host = "0.0.0.0";  ///< derived from listen
  uint16_t port = 9808;          ///< derived from listen
  /// A second, loopback-only listener for kubelet's probes (empty: none). Pods cannot reach it, so
  /// no client on the network can hold its connections and fail the liveness probe.
  std::string probe_listen;
  std::string probe_host;   ///< derived from probe_listen
  uint16_t probe_port = 0;  ///< derived from probe_listen
};

struct ApiConfig {
  std::vector<uid_t> allowed_uids{0};
  size_t max_connections =
      256;  ///< > kubelet's default max-pods (110) twice: a storm of mounts fits
  milliseconds read_timeout{10'000};   ///< a client must send its whole request within this
  milliseconds call_timeout{600'000};  ///< bound on one FlexVolume call inside the agent
};

struct DriverConfig {
  std::string vendor = "datera";
  std::string driver = "iscsi";
  std::string shim_source;             ///< empty: datera-flexvolume next to the agent executable
  milliseconds shim_timeout{630'000};  ///< the shim's own bound on one call (connect + reply)
  milliseconds self_test_timeout{10'000};

  std::string driver_dir_name() const { return vendor + "~" + driver; }
  std::string driver_name() const { return vendor + "/" + driver; }
};

/// The default Datera array, for volumes whose options name none. Optional: without a server the
/// agent checks no array and every volume must bring backstoreServer or a secret.
struct BackendConfig {
  std::string server;  ///< host[:port]; port 7717 (HTTP) or 7718 (HTTPS) by default
  std::string username;
  std::string password_file;  ///< the password is never inline in the config file
  std::string password;       ///< filled from password_file or DATERA_AGENT_BACKEND_PASSWORD
  std::string tenant = "/root";
  bool tls = false;
  std::string ca_file;  ///< empty: the system trust store
  bool insecure_skip_verify = false;
  milliseconds request_timeout{30'000};
  milliseconds check_interval{60'000};
  /// Other arrays a volume may name (backstoreServer, a secret's server), "host[:port]"; the
  /// default array is always allowed. Volumes on them must bring their own credentials.
  std::vector<std::string> allowed_servers;
  bool configured() const { return !server.empty(); }
};

/// How this node reaches volumes. `open-iscsi` in production; `loop` only for development and the
/// host test tier (datera-sim's file backend through loop devices; see plugins/initiator/loop.h).
struct InitiatorConfig {
  std::string kind = "open-iscsi";
  std::string
      iqn;  ///< empty: InitiatorName from /etc/iscsi/initiatorname.iscsi (required for loop)
  std::string iscsiadm = "/usr/sbin/iscsiadm";
  /// The open-iscsi iface to log in through; its iface.initiatorname must be `iqn` when set.
  std::string iface = "default";
  int replacement_timeout = 120;  ///< seconds; node.session.timeo.replacement_timeout
  int noop_out_interval = 5;      ///< seconds
  int noop_out_timeout = 5;       ///< seconds (defaults measured: docs/benchmarks.md)
  milliseconds login_timeout{120'000};
  milliseconds online_timeout{120'000};       ///< array: the volume becomes available
  milliseconds session_poll_interval{2'000};  ///< the session keeper's safety-net poll
  /// The keeper's poll while a volume stalls (how soon it sees the stall end).
  milliseconds stall_poll_interval{500};
  /// How long a volume's map holds I/O with no usable path (after replacement_timeout took the
  /// disk offline) before failing it; 0: no hold (docs/benchmarks.md has the outage table).
  milliseconds io_hold{30'000};
  /// Mount volumes on per-volume dm-multipath maps so access IP changes move them live:
  /// "auto" (when the kernel has dm_multipath and dm_round_robin), "on" (required: start-up
  /// fails without), "off" (the raw session disk; portal changes wait for the pods to leave).
  std::string multipath = "auto";
  std::string dmsetup = "/sbin/dmsetup";
  /// How often each attached volume's access IPs are checked on the array (also checked at once
  /// when a session fails); 0 = only on failures.
  milliseconds array_poll_interval{60'000};
};

/// Moving volumes between nodes (agent/ownership): one writer at a time.
struct HandoffConfig {
  /// "agent": leases in EDF app instance metadata, handoff requests, fencing of expired owners.
  /// "off": no leases (a single-node cluster, or another system owns fencing).
  std::string mode = "agent";
  milliseconds lease_ttl{30'000};       ///< renewed every ttl/3; expired after ttl unchanged
  milliseconds claim_settle{1'000};     ///< Fischer's delay; must exceed claim_write_bound
  milliseconds claim_write_bound{500};  ///< a claim written slower than this is retried
};

/// The CSI front end (agent/csi), beside FlexVolume: gRPC on a Unix socket kubelet and the CSI
/// sidecars reach. The node DaemonSet's agents serve Node (and Identity); the controller
/// Deployment's agent serves Controller only (no iSCSI, no kubelet: node: false).
struct CsiConfig {
  bool enabled = false;
  std::string endpoint = "/var/lib/kubelet/plugins/agent.iscsi.datera.io/csi.sock";
  std::string driver_name = "agent.iscsi.datera.io";
  bool controller = false;  ///< serve the Controller service (CreateVolume, publish, expand...)
  bool node = true;         ///< serve the Node service (stage, publish, stats...)
  int max_volumes_per_node = 0;  ///< NodeGetInfo's limit; 0: none
};

struct Config {
  std::string node_name;
  std::string socket_path = "/run/datera-agent/agent.sock";
  std::string plugin_dir = "/usr/libexec/kubernetes/kubelet-plugins/volume/exec";
  std::string kubelet_root = "/var/lib/kubelet";
  std::string state_dir = "/var/lib/datera-agent";
  std::string log_level = "info";
  std::string log_format = "text";  ///< text | json (one object per line, with a volume field)
  milliseconds shutdown_grace{20'000};
  /// FlexVolume controller mode: the driver advertises attach=true, kube-controller-manager's
  /// attach-detach controller grants and revokes nodes (through the agent on the control plane),
  /// and kubelet calls waitforattach/mountdevice/unmountdevice. false: agent-coordinated handoff
  /// (agent/ownership). The same on every agent of a cluster; see docs/modes.md.
  bool attach = false;
  std::string attach_text;  ///< DATERA_AGENT_ATTACH, checked and applied by validate()
  MetricsConfig metrics;
  ApiConfig api;
  DriverConfig driver;
  BackendConfig backend;
  InitiatorConfig initiator;
  HandoffConfig handoff;
  CsiConfig csi;
  Choices choices;  ///< set by validate()
};

/// Where environment values come from (injectable so tests need no setenv).
using EnvLookup = std::function<std::optional<std::string>(const std::string&)>;
EnvLookup process_env();

/// An environment variable that overrides a config key (what a DaemonSet injects).
struct EnvOverride {
  std::string variable;
  std::string key;
  std::function<void(Config&, std::string)> apply;
};
/// Environment variables honoured, in the order applied (documented in agent/config/README.md).
const std::vector<EnvOverride>& env_overrides();

/// Parses YAML text (may be empty: all defaults), applies environment overrides and validates.
/// `hostname` fills node_name when neither file nor environment set it.
Result<Config> parse(const std::string& yaml_text, const EnvLookup& env,
                     const std::string& hostname);

/// Reads `path` (empty: no file) and calls parse().
Result<Config> load(const std::string& path, const EnvLookup& env, const std::string& hostname);

/// Checks cross-field rules and value formats and sets `choices`; parse() calls it, and so does
/// any code that edits a Config after loading (command-line overrides).
Status validate(Config& cfg);

/// Every key the config file accepts, dotted ("api.read_timeout"): the schema the parser enforces,
/// for the documentation test (agent/config/README.md must describe each, and only these).
std::vector<std::string> known_keys();

/// Kubernetes node names are RFC 1123 subdomains.
bool is_valid_node_name(const std::string& name);

}  // namespace datera::config
