#include "common/bytes.h"

namespace ferry {

bool IsAllZero(const uint8_t* p, size_t len) {
  // Check word by word; the first 16 bytes catch most non-zero data quickly.
  size_t i = 0;
  for (; i < len && i < 16; ++i) {
    if (p[i] != 0) return false;
  }
  if (i >= len) return true;
  const uint8_t* q = p + i;
  size_t n = len - i;
  while (n >= 64) {
    uint64_t w[8];
    std::memcpy(w, q, 64);
    if ((w[0] | w[1] | w[2] | w[3] | w[4] | w[5] | w[6] | w[7]) != 0) return false;
    q += 64;
    n -= 64;
  }
  for (; n > 0; --n, ++q) {
    if (*q != 0) return false;
  }
  return true;
}

}  // namespace ferry
