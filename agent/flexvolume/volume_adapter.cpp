#include "agent/flexvolume/volume_adapter.h"

#include <algorithm>

#include "agent/mount/linux_mounter.h"

namespace datera::flexvolume {

namespace asio = boost::asio;
using volume::Operation;
using volume::Step;
using volume::VolumeError;
using volume::VolumeResult;
using volume::VolumeStatus;

namespace {

std::string opt(const flex::Json& o, const char* key) {
  const auto it = o.find(key);
  return it != o.end() && it->is_string() ? it->get<std::string>() : std::string();
}

}  // namespace

Result<std::vector<std::string>> mount_options_of(const flex::Json& options,
                                                  const std::string& fs_type) {
  std::vector<std::string> out;
  const auto text = opt(options, "mountOptions");
  if (text.empty()) return out;
  size_t start = 0;
  while (start <= text.size()) {
    const size_t comma = std::min(text.find(',', start), text.size());
    if (comma > start) out.push_back(text.substr(start, comma - start));
    start = comma + 1;
  }
  if (auto st = mount::validate_mount_options(fs_type, out, false); !st) {
    return st.error().wrap("option mountOptions");
  }
  return out;
}

template <typename T>
flex::Json VolumeAdapter::answer(Operation op, const VolumeResult<T>& outcome) {
  metrics_.operation(to_string(op), outcome.ok());
  if (!outcome) {
    metrics_.failure(to_string(op), to_string(outcome.error().step));
    return flex::failure(outcome.error().message());
  }
  return flex::success();
}

Result<edf::VolumeOptions> VolumeAdapter::volume_options(const flex::Json& options) const {
  return edf::parse_volume_options(options, core_.options().default_backend,
                                   core_.options().allowed_servers);
}

// ---------------------------------------------------------------------------------------------
// mount, unmount
// ---------------------------------------------------------------------------------------------

VolumeResult<volume::PublishRequest> VolumeAdapter::publish_request(const flex::Request& r) const {
  auto pod = core_.pod_volume_path(r.arg("podVolumeDir").value_or(""));
  if (!pod) return VolumeError{Step::options, pod.error().wrap("mount")};
  auto parsed = volume_options(r.options);
  if (!parsed) return VolumeError{Step::options, parsed.error().wrap("mount " + *pod)};
  volume::PublishRequest p;
  p.volume = parsed->spec.name;
  p.pod_dir = *pod;
  p.read_only = opt(r.options, "kubernetes.io/readwrite") == "ro";
  p.mode = mode();
  if (p.mode == volume::Mode::agent) {
    // Without attach kubelet calls mount only: it stages too.
    auto mount_options = mount_options_of(r.options, parsed->fs_type);
    if (!mount_options) {
      return VolumeError{Step::options, mount_options.error().wrap("mount of volume " + p.volume)};
    }
    p.stage = volume::StageRequest{std::move(*parsed), std::move(*mount_options), "", true,
                                   volume::Mode::agent};
  }
  return p;
}

asio::awaitable<flex::Json> VolumeAdapter::mount(const flex::Request& request) {
  auto req = publish_request(request);
  // Not `?:` around co_await: GCC 12 destroys the result twice.
  VolumeResult<std::string> done = VolumeError{};
  if (req) {
    done = co_await core_.publish(*req);
  } else {
    done = req.error();
  }
  co_return answer(Operation::mount, done);
}

asio::awaitable<flex::Json> VolumeAdapter::unmount(const flex::Request& request) {
  auto pod = core_.pod_volume_path(request.arg("podVolumeDir").value_or(""));
  VolumeStatus done = VolumeError{};
  if (pod) {
    done = co_await core_.unpublish(*pod, mode());
  } else {
    done = VolumeError{Step::checks, pod.error().wrap("unmount")};
  }
  co_return answer(Operation::unmount, done);
}

// ---------------------------------------------------------------------------------------------
// controller mode: waitforattach, mountdevice, unmountdevice
// ---------------------------------------------------------------------------------------------

VolumeResult<volume::StageRequest> VolumeAdapter::stage_request(const flex::Request& r,
                                                                bool filesystem) const {
  const std::string op = filesystem ? "mountdevice" : "waitforattach";
  if (!core_.options().controller_attach) {
    return VolumeError{
        Step::options,
        Error{op + " belongs to controller mode (attach: true); this agent runs without"}};
  }
  std::string path;
  if (filesystem) {
    auto resolved = core_.device_mount_path(r.arg("deviceMountPath").value_or(""));
    if (!resolved) return VolumeError{Step::options, resolved.error().wrap(op)};
    path = *resolved;
  }
  auto parsed = volume_options(r.options);
  if (!parsed) return VolumeError{Step::options, parsed.error().wrap(op)};
  auto mount_options = mount_options_of(r.options, parsed->fs_type);
  if (!mount_options) {
    return VolumeError{Step::options,
                       mount_options.error().wrap(op + " of volume " + parsed->spec.name)};
  }
  return volume::StageRequest{std::move(*parsed), std::move(*mount_options), path, filesystem,
                              volume::Mode::controller};
}

asio::awaitable<flex::Json> VolumeAdapter::waitforattach(const flex::Request& request) {
  auto req = stage_request(request, false);
  VolumeResult<std::string> dev = VolumeError{};
  if (req) {
    dev = co_await core_.stage(*req);
  } else {
    dev = req.error();
  }
  flex::Json reply = answer(Operation::waitforattach, dev);
  if (dev) reply["device"] = *dev;
  co_return reply;
}

asio::awaitable<flex::Json> VolumeAdapter::mountdevice(const flex::Request& request) {
  auto req = stage_request(request, true);
  VolumeResult<std::string> dev = VolumeError{};
  if (req) {
    dev = co_await core_.stage(*req);
  } else {
    dev = req.error();
  }
  co_return answer(Operation::mountdevice, dev);
}

asio::awaitable<flex::Json> VolumeAdapter::unmountdevice(const flex::Request& request) {
  auto path = core_.device_mount_path(request.arg("deviceMountPath").value_or(""));
  VolumeStatus done = VolumeError{};
  if (path) {
    done = co_await core_.unstage(*path, volume::Mode::controller);
  } else {
    done = VolumeError{Step::checks, path.error().wrap("unmountdevice")};
  }
  co_return answer(Operation::unmountdevice, done);
}

// ---------------------------------------------------------------------------------------------
// expandvolume, expandfs
// ---------------------------------------------------------------------------------------------

VolumeResult<volume::ExpandRequest> VolumeAdapter::expand_request(const flex::Request& r) const {
  const std::string& op = r.command;
  auto parsed = volume_options(r.options);
  if (!parsed) return VolumeError{Step::options, parsed.error().wrap(op)};
  const std::string size_text = r.arg("newSize").value_or("");
  int64_t bytes = 0;
  for (const char c : size_text) {
    if (c < '0' || c > '9' || bytes > (int64_t{1} << 50)) {
      return VolumeError{Step::options,
                         Error{op + " of volume " + parsed->spec.name + ": new size '" + size_text +
                               "' is not a byte count"}};
    }
    bytes = bytes * 10 + (c - '0');
  }
  return volume::ExpandRequest{std::move(*parsed), bytes, op == "expandfs"};
}

asio::awaitable<flex::Json> VolumeAdapter::expand(const flex::Request& request) {
  const Operation op =
      request.command == "expandfs" ? Operation::expandfs : Operation::expandvolume;
  auto req = expand_request(request);
  VolumeResult<int64_t> grown = VolumeError{};
  if (req) {
    grown = co_await core_.expand(*req);
  } else {
    grown = req.error();
  }
  flex::Json reply = answer(op, grown);
  if (grown) reply["volumeNewSize"] = *grown;
  co_return reply;
}

}  // namespace datera::flexvolume
