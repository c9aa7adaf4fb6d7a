// Names for the inventory enums (see inventory.h).
#include "hypervisor/inventory.h"

namespace ferry::hypervisor {

std::string_view VmStateName(VmState state) {
  switch (state) {
    case VmState::kNoState: return "nostate";
    case VmState::kRunning: return "running";
    case VmState::kBlocked: return "blocked";
    case VmState::kPaused: return "paused";
    case VmState::kShutdown: return "shutdown";
    case VmState::kShutoff: return "shutoff";
    case VmState::kCrashed: return "crashed";
    case VmState::kPmSuspended: return "pmsuspended";
    case VmState::kUnknown: return "unknown";
  }
  return "unknown";
}

std::string_view FirmwareName(Firmware firmware) {
  return firmware == Firmware::kUefi ? "uefi" : "bios";
}

}  // namespace ferry::hypervisor
