// Every readable source format (made by qemu-img) converted by `ferry convert` to every
// writable target format: qemu-img must find the result identical to the truth and
// consistent, and the manifest's disk hash must equal sha256sum of the truth.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "test_util.h"

namespace ferry {
namespace {

using testing::ShellQuote;

struct SourceKind {
  const char* name;         // test-param friendly
  const char* qemu_format;  // -O for qemu-img
  const char* qemu_options; // -o for qemu-img, may be ""
};

struct TargetKind {
  const char* name;
  const char* ferry_args;   // after "ferry convert"
  const char* qemu_format;  // to judge with qemu-img
  bool checkable;           // qemu-img check supports it
};

const SourceKind kSources[] = {
    {"raw", "raw", ""},
    {"qcow2", "qcow2", ""},
    {"qcow2_zstd", "qcow2", "compression_type=zstd"},  // compressed with -c below
    {"vmdk_sparse", "vmdk", "subformat=monolithicSparse"},
    {"vmdk_stream", "vmdk", "subformat=streamOptimized"},
    {"vmdk_flat", "vmdk", "subformat=monolithicFlat"},
    {"vhd_dynamic", "vpc", "subformat=dynamic,force_size=on"},
    {"vhd_fixed", "vpc", "subformat=fixed,force_size=on"},
    {"vhdx_dynamic", "vhdx", "subformat=dynamic"},
};

const TargetKind kTargets[] = {
    {"raw", "-O raw", "raw", false},
    {"qcow2", "-O qcow2", "qcow2", true},
    {"qcow2_zstd", "-O qcow2 --compress zstd", "qcow2", true},
    {"vmdk_sparse", "-O vmdk", "vmdk", true},
    {"vmdk_stream", "-O vmdk --subformat streamOptimized", "vmdk", true},
    {"vhd_dynamic", "-O vhd", "vpc", false},
    {"vhd_fixed", "-O vhd --subformat fixed", "vpc", false},
    {"vhdx", "-O vhdx --cluster-size 2M", "vhdx", true},
};

class ConvertMatrixTest : public ::testing::TestWithParam<SourceKind> {
 protected:
  static void SetUpTestSuite() {
    dir_ = new testing::TempDir();
    testing::PatternSpec spec;
    spec.size = 24ull << 20;  // a whole number of MiB: fixed VHD keeps it exactly
    spec.data_fraction = 0.3;
    ASSERT_TRUE(testing::WritePatternRaw(dir_->Join("truth.raw"), spec));
    auto sum = testing::Run("sha256sum " + ShellQuote(dir_->Join("truth.raw")));
    truth_sha_ = sum.output.substr(0, 64);
  }
  static void TearDownTestSuite() {
    delete dir_;
    dir_ = nullptr;
  }
  static testing::TempDir* dir_;
  static std::string truth_sha_;
};

testing::TempDir* ConvertMatrixTest::dir_ = nullptr;
std::string ConvertMatrixTest::truth_sha_;

TEST_P(ConvertMatrixTest, ToEveryTargetFormat) {
  const SourceKind& src = GetParam();
  std::string src_path = dir_->Join(std::string("src-") + src.name);
  std::string make = std::string("qemu-img convert -f raw -O ") + src.qemu_format +
                     (std::string(src.name) == "qcow2_zstd" ? " -c" : "") +
                     (src.qemu_options[0] ? std::string(" -o ") + src.qemu_options : "") + " " +
                     ShellQuote(dir_->Join("truth.raw")) + " " + ShellQuote(src_path);
  auto made = testing::Run(make);
  ASSERT_EQ(made.exit_code, 0) << made.output;

  for (const TargetKind& dst : kTargets) {
    SCOPED_TRACE(std::string(src.name) + " -> " + dst.name);
    std::string out = dir_->Join(std::string(src.name) + "-to-" + dst.name);
    std::string manifest = out + ".manifest";
    auto r = testing::Run(ShellQuote(testing::FerryBinary()) + " convert " + dst.ferry_args +
                          " --manifest " + ShellQuote(manifest) + " " + ShellQuote(src_path) +
                          " " + ShellQuote(out));
    ASSERT_EQ(r.exit_code, 0) << r.output;
    EXPECT_EQ(testing::QemuImgCompare(dir_->Join("truth.raw"), out, "raw", dst.qemu_format), 0);
    if (dst.checkable) {
      auto check = testing::Run(std::string("qemu-img check -q -f ") + dst.qemu_format + " " +
                                ShellQuote(out));
      EXPECT_EQ(check.exit_code, 0) << check.output;
    }
    auto info = testing::Run(std::string("qemu-img info --output=json -f ") + dst.qemu_format +
                             " " + ShellQuote(out));
    EXPECT_NE(info.output.find("\"virtual-size\": 25165824"), std::string::npos) << info.output;
    auto m = testing::ReadFileBytes(manifest);
    EXPECT_NE(std::string(m.begin(), m.end()).find(truth_sha_), std::string::npos);
    // Ferry reads its own output back identical too.
    auto cmp = testing::Run(ShellQuote(testing::FerryBinary()) + " compare " +
                            ShellQuote(dir_->Join("truth.raw")) + " " + ShellQuote(out));
    EXPECT_EQ(cmp.exit_code, 0) << cmp.output;
    std::remove(out.c_str());
  }
}

INSTANTIATE_TEST_SUITE_P(AllSources, ConvertMatrixTest, ::testing::ValuesIn(kSources),
                         [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace ferry
