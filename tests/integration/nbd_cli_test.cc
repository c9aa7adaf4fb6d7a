// NBD end to end through the `ferry` binary: `ferry serve` read by nbdinfo, nbdcopy and
// qemu-img; `ferry convert` from and to qemu-nbd exports; an incremental copy through a
// dirty bitmap.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "test_util.h"

namespace ferry {
namespace {

using testing::ShellQuote;

std::string Ferry() { return ShellQuote(testing::FerryBinary()); }

// A background server process, killed on destruction.
class Server {
 public:
  // Starts `command` (exec'd by sh) and waits until `socket` exists.
  Server(const std::string& command, const std::string& socket) {
    pid_ = ::fork();
    if (pid_ == 0) {
      std::string cmd = "exec " + command + " >/dev/null 2>&1";
      ::execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (::access(socket.c_str(), F_OK) != 0 && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    ready_ = ::access(socket.c_str(), F_OK) == 0;
  }
  ~Server() { Stop(); }
  bool ready() const { return ready_; }
  // SIGTERM, then the exit status (128+signal if it died of one).
  int Stop() {
    if (pid_ <= 0) return status_;
    ::kill(pid_, SIGTERM);
    int st = 0;
    ::waitpid(pid_, &st, 0);
    pid_ = -1;
    status_ = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    return status_;
  }

 private:
  pid_t pid_ = -1;
  bool ready_ = false;
  int status_ = -1;
};

std::string UnixUri(const std::string& socket) { return "nbd+unix:///?socket=" + socket; }

TEST(NbdCliTest, ServeIsReadByNbdinfoNbdcopyAndQemuImg) {
  testing::TempDir dir;
  testing::PatternSpec spec;
  spec.size = 32ull << 20;
  ASSERT_TRUE(testing::WritePatternRaw(dir.Join("truth.raw"), spec));
  // Served through Ferry's own streamOptimized VMDK reader.
  ASSERT_EQ(testing::Run("qemu-img convert -f raw -O vmdk -o subformat=streamOptimized " +
                         ShellQuote(dir.Join("truth.raw")) + " " + ShellQuote(dir.Join("d.vmdk")))
                .exit_code,
            0);
  std::string sock = dir.Join("s.sock");
  Server server(Ferry() + " serve --socket " + ShellQuote(sock) + " " + ShellQuote(dir.Join("d.vmdk")),
                sock);
  ASSERT_TRUE(server.ready());
  std::string uri = ShellQuote(UnixUri(sock));

  auto map = testing::Run("nbdinfo --map " + uri);
  ASSERT_EQ(map.exit_code, 0) << map.output;
  EXPECT_NE(map.output.find("data"), std::string::npos);
  EXPECT_NE(map.output.find("hole"), std::string::npos);

  // Several clients and connections at once.
  std::vector<std::thread> copies;
  std::vector<int> codes(3, -1);
  for (int i = 0; i < 3; ++i) {
    copies.emplace_back([&, i] {
      codes[i] = testing::Run("nbdcopy --connections=4 --requests=16 " + uri + " " +
                              ShellQuote(dir.Join("c" + std::to_string(i) + ".raw")))
                     .exit_code;
    });
  }
  for (auto& t : copies) t.join();
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(codes[i], 0);
    EXPECT_EQ(testing::QemuImgCompare(dir.Join("truth.raw"), dir.Join("c" + std::to_string(i) + ".raw"),
                                      "raw", "raw"),
              0);
  }
  auto conv = testing::Run("qemu-img convert -O qcow2 " + uri + " " + ShellQuote(dir.Join("q.qcow2")));
  ASSERT_EQ(conv.exit_code, 0) << conv.output;
  EXPECT_EQ(testing::QemuImgCompare(dir.Join("truth.raw"), dir.Join("q.qcow2"), "raw", "qcow2"), 0);
  // Writes are refused: the export is read-only.
  auto write = testing::Run("nbdcopy " + ShellQuote(dir.Join("truth.raw")) + " " + uri);
  EXPECT_NE(write.exit_code, 0);
  EXPECT_EQ(server.Stop(), 0);  // SIGTERM is a clean stop
}

TEST(NbdCliTest, ServeRefusesBadArgumentsAndImages) {
  testing::TempDir dir;
  auto r = testing::Run(Ferry() + " serve " + ShellQuote(dir.Join("none.qcow2")) + " --socket " +
                        ShellQuote(dir.Join("s")));
  EXPECT_EQ(r.exit_code, 3) << r.output;
  ASSERT_TRUE(testing::WriteFileBytes(dir.Join("x.raw"), std::vector<uint8_t>(4096, 1)));
  r = testing::Run(Ferry() + " serve " + ShellQuote(dir.Join("x.raw")));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("exactly one of"), std::string::npos);
}

TEST(NbdCliTest, ConvertFromAndToQemuNbdExports) {
  testing::TempDir dir;
  testing::PatternSpec spec;
  spec.size = 24ull << 20;
  ASSERT_TRUE(testing::WritePatternRaw(dir.Join("truth.raw"), spec));
  ASSERT_EQ(testing::Run("qemu-img convert -f raw -O qcow2 " + ShellQuote(dir.Join("truth.raw")) +
                         " " + ShellQuote(dir.Join("src.qcow2")))
                .exit_code,
            0);
  std::string s1 = dir.Join("src.sock");
  Server src("qemu-nbd -r -t -f qcow2 -k " + ShellQuote(s1) + " " + ShellQuote(dir.Join("src.qcow2")),
             s1);
  ASSERT_TRUE(src.ready());
  // NBD -> VHDX file.
  auto r = testing::Run(Ferry() + " convert -O vhdx --manifest " + ShellQuote(dir.Join("m.json")) +
                        " " + ShellQuote(UnixUri(s1)) + " " + ShellQuote(dir.Join("out.vhdx")));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(testing::QemuImgCompare(dir.Join("truth.raw"), dir.Join("out.vhdx"), "raw", "vhdx"), 0);

  // File -> NBD export (a writable qcow2 full of junk: zeros must really be written).
  ASSERT_EQ(testing::Run("qemu-img create -q -f qcow2 " + ShellQuote(dir.Join("dst.qcow2")) + " 24M")
                .exit_code,
            0);
  ASSERT_EQ(testing::Run("qemu-io -f qcow2 -c 'write -P 0x55 0 24M' " +
                         ShellQuote(dir.Join("dst.qcow2")))
                .exit_code,
            0);
  std::string s2 = dir.Join("dst.sock");
  {
    Server dst("qemu-nbd -t -f qcow2 -k " + ShellQuote(s2) + " " + ShellQuote(dir.Join("dst.qcow2")), s2);
    ASSERT_TRUE(dst.ready());
    r = testing::Run(Ferry() + " convert -O raw --verify " + ShellQuote(dir.Join("truth.raw")) +
                     " " + ShellQuote(UnixUri(s2)));
    ASSERT_EQ(r.exit_code, 0) << r.output;
  }
  EXPECT_EQ(testing::QemuImgCompare(dir.Join("truth.raw"), dir.Join("dst.qcow2"), "raw", "qcow2"), 0);
  // An NBD target takes raw bytes only.
  r = testing::Run(Ferry() + " convert -O qcow2 " + ShellQuote(dir.Join("truth.raw")) + " " +
                   ShellQuote(UnixUri(s2)));
  EXPECT_EQ(r.exit_code, 2) << r.output;
}

TEST(NbdCliTest, IncrementalCopyThroughADirtyBitmapReadsOnlyDirtyData) {
  testing::TempDir dir;
  testing::PatternSpec spec;
  spec.size = 32ull << 20;
  spec.data_fraction = 0.5;
  ASSERT_TRUE(testing::WritePatternRaw(dir.Join("truth.raw"), spec));
  std::string disk = dir.Join("vm.qcow2");
  ASSERT_EQ(testing::Run("qemu-img convert -f raw -O qcow2 " + ShellQuote(dir.Join("truth.raw")) +
                         " " + ShellQuote(disk))
                .exit_code,
            0);
  // The first full copy, then the bitmap starts tracking.
  ASSERT_EQ(testing::Run(Ferry() + " convert -O raw " + ShellQuote(disk) + " " +
                         ShellQuote(dir.Join("copy.raw")))
                .exit_code,
            0);
  ASSERT_EQ(testing::Run("qemu-img bitmap --add --enable " + ShellQuote(disk) + " b0").exit_code, 0);
  // The guest writes 3 MiB after the first copy.
  auto w = testing::Run("qemu-io -f qcow2 -c 'write -P 0xAB 1M 1M' -c 'write -P 0xCD 20M 2M' " +
                        ShellQuote(disk));
  ASSERT_EQ(w.exit_code, 0) << w.output;
  std::string sock = dir.Join("b.sock");
  Server server("qemu-nbd -r -t -f qcow2 -B b0 -k " + ShellQuote(sock) + " " + ShellQuote(disk), sock);
  ASSERT_TRUE(server.ready());
  auto r = testing::Run(Ferry() + " convert -O raw --bitmap b0 --output json " +
                        ShellQuote(UnixUri(sock)) + " " + ShellQuote(dir.Join("copy.raw")));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  server.Stop();
  EXPECT_EQ(testing::QemuImgCompare(disk, dir.Join("copy.raw"), "qcow2", "raw"), 0);
  auto pos = r.output.rfind("\"read_bytes\":");  // the result line comes last
  ASSERT_NE(pos, std::string::npos) << r.output;
  SCOPED_TRACE(r.output);
  uint64_t read = std::stoull(r.output.substr(pos + 13));
  EXPECT_GE(read, 3ull << 20);
  EXPECT_LE(read, 4ull << 20);  // the dirty 3 MiB, rounded to the bitmap's granularity
  // --bitmap needs an existing target.
  r = testing::Run(Ferry() + " convert -O raw --bitmap b0 " + ShellQuote(UnixUri(sock)) + " " +
                   ShellQuote(dir.Join("new.raw")));
  EXPECT_EQ(r.exit_code, 2) << r.output;
}

}  // namespace
}  // namespace ferry
