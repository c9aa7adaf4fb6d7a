// Fuzz target: the checkpoint journal parser (a journal left on disk is untrusted on resume).
#include <cstdint>
#include <vector>

#include "common/file.h"
#include "disk/engine/checkpoint_journal.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<uint8_t> bytes(data, data + size);
  auto journal = ferry::CheckpointJournal::Parse(ferry::NewMemoryFile(std::move(bytes), "fuzz"));
  if (journal.ok() && (*journal)->last() != nullptr) {
    volatile uint64_t f = (*journal)->last()->frontier;
    (void)f;
  }
  return 0;
}
