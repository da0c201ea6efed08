#pragma once

// The agent's start phases, in order: Application::start() runs one step per name (it checks the
// names at compile time), and agent/app/README.md, docs/architecture.md and application.h quote
// this list (tests/agent/app/phases_test.cpp holds them to it). Shutdown undoes them in reverse.

#include <array>
#include <string_view>

namespace datera::app {

inline constexpr std::array<std::string_view, 8> kStartPhases = {
    "bind",       // API socket, metrics port, probe port: fatal if taken
    "data_path",  // dm-multipath modules and detection, the initiator's IQN
    "reconcile",  // the journal against sessions and mounts; then volume calls are served
    "serve",      // accept on the API, metrics and probe sockets
    "watch",      // kernel log, session keeper, lease renewal, initiator registration, memory trim
    "signals",    // SIGTERM/SIGINT drain, SIGHUP log level, the systemd watchdog
    "driver",     // install and self-test the driver through the socket; READY=1
    "backend",    // the default array's monitor
};

}  // namespace datera::app
