#include "disk/vhdx/vhdx.h"

#include <gtest/gtest.h>

TEST(VhdxTest, Placeholder) {}
