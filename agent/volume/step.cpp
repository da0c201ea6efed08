#include "agent/volume/step.h"

#include <algorithm>
#include <initializer_list>

namespace datera::volume {

namespace {

struct StepRow {
  Step step;
  const char* name;   ///< metric label and message text
  const char* after;  ///< crash point suffix ("after_<after>"), or nullptr
};

// The names predate the enum: metrics, messages and the host tier's crash points spell them so.
constexpr StepRow kSteps[] = {
    {Step::options, "options", nullptr},     {Step::checks, "checks", nullptr},
    {Step::journal, "journal", nullptr},     {Step::intent, "journal", "intent"},
    {Step::initiator, "initiator", nullptr}, {Step::array, "array", "array"},
    {Step::claim, "claim", nullptr},         {Step::grant, "grant", nullptr},
    {Step::verify, "verify", nullptr},       {Step::target, "journal", "target"},
    {Step::login, "login", "login"},         {Step::map, "map", "map"},
    {Step::probe, "probe", nullptr},         {Step::format, "format", "format"},
    {Step::staging, "mount", "staging"},     {Step::bind, "bind", "bind"},
    {Step::unbind, "unbind", "unbind"},      {Step::unstaging, "unmount", "staging_unmount"},
    {Step::logout, "logout", "logout"},      {Step::release, "array", "array"},
    {Step::rescan, "rescan", nullptr},       {Step::grow, "grow", nullptr},
    {Step::queue, "queue", nullptr},         {Step::prune, "logout", "prune"},
    {Step::swap, "swap", nullptr},
};

constexpr uint32_t bits(std::initializer_list<Step> steps) {
  uint32_t out = 0;
  for (const Step s : steps) out |= uint32_t{1} << static_cast<unsigned>(s);
  return out;
}

// Which steps of each operation have a crash point after them.
constexpr uint32_t kAttach =
    bits({Step::intent, Step::array, Step::target, Step::login, Step::map});
constexpr uint32_t kStage = kAttach | bits({Step::format, Step::staging});
constexpr uint32_t kLeave = bits({Step::unstaging, Step::logout});
constexpr uint32_t kRelease = kLeave | bits({Step::release});

struct OperationRow {
  Operation op;
  const char* name;
  uint32_t crash_points;
};

constexpr OperationRow kOperations[] = {
    {Operation::mount, "mount", kStage | bits({Step::bind}) | kRelease},
    {Operation::unmount, "unmount", bits({Step::unbind}) | kRelease},
    {Operation::waitforattach, "waitforattach", kAttach | kRelease},
    {Operation::mountdevice, "mountdevice", kStage | kRelease},
    {Operation::unmountdevice, "unmountdevice", kRelease},
    {Operation::expandvolume, "expandvolume", 0},
    {Operation::expandfs, "expandfs", 0},
    {Operation::move, "move", bits({Step::login, Step::prune})},
    {Operation::reconcile, "reconcile", kRelease},
    {Operation::release, "release", kRelease},
    // A handoff releases a volume no pod uses while it is attached, which only a race reaches;
    // its release is the last unmount's, crashed as unmount and reconcile.
    {Operation::handoff, "handoff", 0},
    {Operation::detached, "detached", kRelease},
    {Operation::self_fence, "self_fence", kLeave},
};

const StepRow& row(Step s) {
  return kSteps[static_cast<size_t>(s)];
}

const OperationRow& row(Operation op) {
  return kOperations[static_cast<size_t>(op)];
}

}  // namespace

const char* to_string(Operation op) {
  return row(op).name;
}

const char* to_string(Step s) {
  return row(s).name;
}

std::string crash_point_name(Operation op, Step s) {
  const StepRow& step = row(s);
  if (!step.after || !(row(op).crash_points & bits({s}))) return "";
  return std::string(row(op).name) + ":after_" + step.after;
}

const std::vector<std::string>& crash_points() {
  static const std::vector<std::string> all = [] {
    std::vector<std::string> out;
    for (const auto& op : kOperations) {
      for (const auto& step : kSteps) {
        auto name = crash_point_name(op.op, step.step);
        if (!name.empty() && std::find(out.begin(), out.end(), name) == out.end()) {
          out.push_back(std::move(name));
        }
      }
    }
    return out;
  }();
  return all;
}

std::string VolumeError::message() const {
  if (what.empty()) return cause.message;
  return what + " failed at " + to_string(step) + ": " + cause.message;
}

// The tables are indexed by the enums: a row out of place is a compile error, not a wrong label.
static_assert([] {
  for (size_t i = 0; i < std::size(kSteps); ++i) {
    if (static_cast<size_t>(kSteps[i].step) != i) return false;
  }
  for (size_t i = 0; i < std::size(kOperations); ++i) {
    if (static_cast<size_t>(kOperations[i].op) != i) return false;
  }
  return std::size(kSteps) <= 32;
}());

}  // namespace datera::volume
