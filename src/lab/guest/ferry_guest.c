/* ferry_guest: the workload of the Ferry lab's guests (docs/lab.md, "The guest").
 *
 * It is /init of the guest initramfs (PID 1): it mounts /proc, /sys and /dev, loads the
 * modules listed in /etc/ferry/modules (virtio, SATA/IDE disks, the ACPI power button), then
 * starts the workloads the kernel command line asks for, each in its own process, and reaps
 * children until the power button is pressed (PID 1 must not exit):
 *
 *   ferry.heartbeat=MS       "FERRY-HB <counter> <guest CLOCK_MONOTONIC ms>" every MS ms (10)
 *   ferry.dirty_mib=N        memory dirtier working set in MiB (0: off)
 *   ferry.dirty_rate_mib=R   MiB/s of pages it dirties (0: as fast as it can)
 *   ferry.disk=DEV[,DEV...]  block device (or file) for the disk writer (unset: off); of a
 *                            list, the first that exists (waiting up to 10 s for one: a
 *                            disk's partitions appear after its driver probed it)
 *   ferry.disk_wait_ms=N     how long to wait for one of them (10000)
 *   ferry.disk_mode=M        write (default): verify what is there, then append from the
 *                            highest sequence on; verify: verify only
 *   ferry.disk_mib=N         area of the disk used, in MiB (16; capped to the device size)
 *   ferry.disk_iops=N        blocks written per second (100; 0: as fast as it can)
 *   ferry.disk_count=N       stop writing after N blocks (0: never)
 *   ferry.power_button=M     off (default): the power button powers the guest off gracefully;
 *                            ignore: it is reported and ignored, as by a guest whose OS hangs
 *                            or has no ACPI support (what a forced shutdown is for)
 *
 * Console protocol (one line each, on the serial console):
 *   FERRY-READY                      user space is up, workloads are starting
 *   FERRY-HB <n> <ms>                heartbeat
 *   FERRY-DIRTY-READY <mib>          working set allocated and touched once
 *   FERRY-DEVICE <path> <bytes>      the disk writer's device (of ferry.disk's list) and size
 *   FERRY-DISK-OK <seq>              every block verified; <seq> is the highest sequence (-1:
 *                                    none written yet)
 *   FERRY-DISK-BAD <offset> <why>    first block that fails verification
 *   FERRY-DISK-SEQ <seq>             every block up to <seq> is durable (written O_DSYNC);
 *                                    also the writer's last line when it is stopped at power-off
 *   FERRY-DISK-DONE <seq>            disk_count reached
 *   FERRY-ERROR <what>               a workload could not start
 *   FERRY-POWER-IGNORED              the power button was pressed and ferry.power_button=ignore
 *   FERRY-POWEROFF                   the ACPI power button was pressed (virsh shutdown): the
 *                                    workloads are stopped, the disks synced; the guest powers off
 *
 * Graceful shutdown, as a real OS does it: the ACPI button driver (button.ko) turns the power
 * button event into KEY_POWER on an input device; evdev (evdev.ko) exposes it as
 * /dev/input/eventN; a watcher process reads those and exits with kPowerButtonExit, which
 * PID 1 answers by stopping the workloads (the disk writer finishes its block), sync(),
 * FERRY-POWEROFF, reboot(RB_POWER_OFF).
 *
 * Disk block layout (4096 bytes, little-endian as the guest's CPU): block k of the area
 * holds the most recent sequence number s with s % nblocks == k:
 *   0   8  magic "FERRYBLK"
 *   8   8  sequence s
 *   16  8  byte offset of the block in the device (s % nblocks * 4096)
 *   24  4068 payload: xorshift64 stream seeded with s
 *   4092 4 CRC-32 (IEEE) of bytes 0..4091
 * Verification requires, for the highest sequence M found, that every block k holds the
 * largest s <= M with s % nblocks == k (or is all zero if no such s exists). The writer
 * writes one block at a time with O_DSYNC, so a lost or torn write shows as a block that
 * breaks this rule.
 *
 * Outside a VM (tests), the same options may be given as arguments instead of the kernel
 * command line: ferry_guest ferry.disk=/tmp/f ferry.disk_mode=verify ... ; then it does not
 * mount anything and exits when the disk workload ends.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <linux/input.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

enum { kBlockSize = 4096, kPageSize = 4096, kMaxLine = 256, kCmdlineMax = 4096 };
enum {
  kDiskListMax = 256,
  kDiskWaitMs = 10000,       /* default: for a device of ferry.disk to appear */
  kPowerButtonExit = 64,     /* the watcher's exit status: the button was pressed */
  kInputDevicesMax = 32,
  kInputRescanMs = 1000,     /* input devices may appear after the watcher started */
  kDiskStopGraceMs = 5000,   /* at power-off, for the writer to finish its block */
};
static const char kMagic[8] = {'F', 'E', 'R', 'R', 'Y', 'B', 'L', 'K'};

struct Options {
  long heartbeat_ms;
  long dirty_mib;
  long dirty_rate_mib;
  char disk[kDiskListMax];
  int verify_only;
  long disk_mib;
  long disk_iops;
  long disk_count;
  long disk_wait_ms;
  int ignore_power_button;
};

/* One write() per line so lines from several processes do not interleave. */
static void Say(const char* fmt, ...) {
  char line[kMaxLine];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(line, sizeof(line) - 1, fmt, ap);
  va_end(ap);
  if (n < 0) return;
  if (n > (int)sizeof(line) - 2) n = (int)sizeof(line) - 2;
  line[n++] = '\n';
  ssize_t ignored = write(STDOUT_FILENO, line, (size_t)n);
  (void)ignored;
}

static int64_t NowNs(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void SleepUntilNs(int64_t t) {
  struct timespec ts = {.tv_sec = t / 1000000000, .tv_nsec = t % 1000000000};
  while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
  }
}

static void ParseOption(struct Options* o, const char* word) {
  const char* eq = strchr(word, '=');
  if (strncmp(word, "ferry.", 6) != 0 || eq == NULL) return;
  const char* key = word + 6;
  size_t klen = (size_t)(eq - key);
  const char* val = eq + 1;
#define KEY_IS(k) (klen == strlen(k) && strncmp(key, k, klen) == 0)
  if (KEY_IS("heartbeat")) o->heartbeat_ms = atol(val);
  else if (KEY_IS("dirty_mib")) o->dirty_mib = atol(val);
  else if (KEY_IS("dirty_rate_mib")) o->dirty_rate_mib = atol(val);
  else if (KEY_IS("disk")) snprintf(o->disk, sizeof(o->disk), "%s", val);
  else if (KEY_IS("disk_mode")) o->verify_only = strcmp(val, "verify") == 0;
  else if (KEY_IS("disk_mib")) o->disk_mib = atol(val);
  else if (KEY_IS("disk_iops")) o->disk_iops = atol(val);
  else if (KEY_IS("disk_count")) o->disk_count = atol(val);
  else if (KEY_IS("disk_wait_ms")) o->disk_wait_ms = atol(val);
  else if (KEY_IS("power_button")) o->ignore_power_button = strcmp(val, "ignore") == 0;
#undef KEY_IS
}

static void ParseWords(struct Options* o, char* text) {
  for (char* save = NULL, *w = strtok_r(text, " \t\n", &save); w != NULL;
       w = strtok_r(NULL, " \t\n", &save)) {
    ParseOption(o, w);
  }
}

/* ---- PID 1 duties ---- */

static void MountEarly(void) {
  mkdir("/proc", 0755);
  mkdir("/sys", 0755);
  mkdir("/dev", 0755);
  mkdir("/tmp", 01777);
  mount("proc", "/proc", "proc", 0, NULL);
  mount("sysfs", "/sys", "sysfs", 0, NULL);
  mount("devtmpfs", "/dev", "devtmpfs", 0, NULL);
  mount("tmpfs", "/tmp", "tmpfs", 0, NULL);
  /* The console the kernel gave us may be missing if /dev/console was not in the archive. */
  int fd = open("/dev/console", O_RDWR | O_NOCTTY);
  if (fd >= 0) {
    dup2(fd, STDIN_FILENO);
    dup2(fd, STDOUT_FILENO);
    dup2(fd, STDERR_FILENO);
    if (fd > STDERR_FILENO) close(fd);
  }
}

static void LoadModules(void) {
  FILE* list = fopen("/etc/ferry/modules", "r");
  if (list == NULL) return;
  char path[256];
  while (fgets(path, sizeof(path), list) != NULL) {
    path[strcspn(path, "\r\n")] = '\0';
    if (path[0] == '\0') continue;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      Say("FERRY-ERROR open module %s: %s", path, strerror(errno));
      continue;
    }
    if (syscall(SYS_finit_module, fd, "", 0) != 0 && errno != EEXIST) {
      Say("FERRY-ERROR load module %s: %s", path, strerror(errno));
    }
    close(fd);
  }
  fclose(list);
}

/* ---- heartbeat ---- */

static void Heartbeat(long period_ms) {
  struct sched_param sp = {.sched_priority = 10};
  sched_setscheduler(0, SCHED_FIFO, &sp); /* best effort: beat even when the dirtier spins */
  const int64_t period = (int64_t)period_ms * 1000000;
  int64_t next = NowNs();
  for (uint64_t n = 1;; ++n) {
    int64_t now = NowNs();
    Say("FERRY-HB %llu %lld", (unsigned long long)n, (long long)(now / 1000000));
    next += period;
    if (next < now) next = now + period; /* after a stall, do not burst */
    SleepUntilNs(next);
  }
}

/* ---- memory dirtier ---- */

static void Dirtier(long mib, long rate_mib) {
  setpriority(PRIO_PROCESS, 0, 10);
  size_t bytes = (size_t)mib << 20;
  volatile uint8_t* mem =
      mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) {
    Say("FERRY-ERROR dirtier: mmap %ld MiB: %s", mib, strerror(errno));
    for (;;) pause();
  }
  const size_t pages = bytes / kPageSize;
  for (size_t p = 0; p < pages; ++p) mem[p * kPageSize] = 1;
  Say("FERRY-DIRTY-READY %ld", mib);
  /* Pace in 10 ms slices: pages_per_slice = rate * 256 pages/MiB / 100 slices/s. */
  const int64_t slice = 10 * 1000000;
  const size_t per_slice = rate_mib > 0 ? (size_t)rate_mib * 256 / 100 : pages;
  size_t p = 0;
  uint8_t stamp = 2;
  int64_t next = NowNs();
  for (;;) {
    for (size_t i = 0; i < (per_slice ? per_slice : 1); ++i) {
      mem[p * kPageSize] = stamp;
      if (++p == pages) {
        p = 0;
        ++stamp;
      }
    }
    if (rate_mib > 0) {
      next += slice;
      int64_t now = NowNs();
      if (next < now) next = now;
      SleepUntilNs(next);
    }
  }
}

/* ---- disk writer / verifier ---- */

static uint32_t Crc32(const uint8_t* p, size_t n) {
  uint32_t c = 0xFFFFFFFFu;
  for (size_t i = 0; i < n; ++i) {
    c ^= p[i];
    for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
  }
  return ~c;
}

static void FillBlock(uint8_t* b, uint64_t seq, uint64_t offset) {
  memcpy(b, kMagic, 8);
  memcpy(b + 8, &seq, 8);
  memcpy(b + 16, &offset, 8);
  uint64_t x = seq * 0x9E3779B97F4A7C15ull + 1;
  for (size_t i = 24; i + 8 <= kBlockSize - 4; i += 8) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    memcpy(b + i, &x, 8);
  }
  memcpy(b + kBlockSize - 8, &x, 4); /* 4068 = 508 * 8 + 4: last 4 payload bytes */
  uint32_t crc = Crc32(b, kBlockSize - 4);
  memcpy(b + kBlockSize - 4, &crc, 4);
}

static int IsZero(const uint8_t* b) {
  for (size_t i = 0; i < kBlockSize; ++i) {
    if (b[i] != 0) return 0;
  }
  return 1;
}

/* Verifies the area; returns the highest sequence (-1 if none), or -2 after printing BAD. */
static int64_t Verify(int fd, uint64_t nblocks) {
  static uint8_t b[kBlockSize] __attribute__((aligned(kBlockSize)));
  static uint8_t want[kBlockSize] __attribute__((aligned(kBlockSize)));
  /* Pass 1: every block is zero or well-formed; find the highest sequence. */
  int64_t max_seq = -1;
  for (uint64_t k = 0; k < nblocks; ++k) {
    uint64_t off = k * kBlockSize;
    if (pread(fd, b, kBlockSize, (off_t)off) != kBlockSize) {
      Say("FERRY-DISK-BAD %llu read: %s", (unsigned long long)off, strerror(errno));
      return -2;
    }
    if (IsZero(b)) continue;
    uint64_t seq, boff;
    uint32_t crc;
    memcpy(&seq, b + 8, 8);
    memcpy(&boff, b + 16, 8);
    memcpy(&crc, b + kBlockSize - 4, 4);
    if (memcmp(b, kMagic, 8) != 0 || crc != Crc32(b, kBlockSize - 4) || boff != off ||
        seq % nblocks != k || seq > INT64_MAX) {
      Say("FERRY-DISK-BAD %llu malformed", (unsigned long long)off);
      return -2;
    }
    if ((int64_t)seq > max_seq) max_seq = (int64_t)seq;
  }
  /* Pass 2: each block holds the latest sequence that maps to it. */
  for (uint64_t k = 0; k < nblocks; ++k) {
    uint64_t off = k * kBlockSize;
    if (pread(fd, b, kBlockSize, (off_t)off) != kBlockSize) {
      Say("FERRY-DISK-BAD %llu read: %s", (unsigned long long)off, strerror(errno));
      return -2;
    }
    if (max_seq < 0 || (uint64_t)max_seq < k) {
      if (!IsZero(b)) {
        Say("FERRY-DISK-BAD %llu expected-empty", (unsigned long long)off);
        return -2;
      }
      continue;
    }
    uint64_t m = (uint64_t)max_seq;
    uint64_t expect = m - ((m - k) % nblocks);
    FillBlock(want, expect, off);
    if (memcmp(b, want, kBlockSize) != 0) {
      Say("FERRY-DISK-BAD %llu expected-seq %llu", (unsigned long long)off,
          (unsigned long long)expect);
      return -2;
    }
  }
  return max_seq;
}

static volatile sig_atomic_t disk_stop_requested;

static void OnDiskStop(int sig) {
  (void)sig;
  disk_stop_requested = 1;
}

/* Opens the first device of the comma-separated `list` that exists, waiting up to
 * wait_ms for one to appear (modules probe, then partitions show up). Returns the fd and
 * its path in `path`, or -1 after printing FERRY-ERROR. */
static int OpenDisk(const char* list, long wait_ms, char* path, size_t path_size) {
  char copy[kDiskListMax];
  int last_errno = ENOENT;
  const int64_t deadline = NowNs() + (int64_t)wait_ms * 1000000;
  for (;;) {
    snprintf(copy, sizeof(copy), "%s", list);
    for (char* save = NULL, *dev = strtok_r(copy, ",", &save); dev != NULL;
         dev = strtok_r(NULL, ",", &save)) {
      int fd = open(dev, O_RDWR | O_DSYNC | O_CLOEXEC);
      if (fd >= 0) {
        snprintf(path, path_size, "%s", dev);
        return fd;
      }
      if (errno != ENOENT && errno != ENXIO) { /* there, but unusable: say so */
        Say("FERRY-ERROR disk %s: %s", dev, strerror(errno));
        return -1;
      }
      last_errno = errno;
    }
    if (NowNs() >= deadline) break;
    usleep(10000);
  }
  Say("FERRY-ERROR disk %s: %s", list, strerror(last_errno));
  return -1;
}

/* Returns a process exit status. */
static int Disk(const struct Options* o) {
  setpriority(PRIO_PROCESS, 0, 5);
  /* SIGTERM (PID 1 at power-off) stops the writer between two blocks. */
  struct sigaction sa = {.sa_handler = OnDiskStop};
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, NULL);
  char dev[kDiskListMax];
  int fd = OpenDisk(o->disk, o->disk_wait_ms, dev, sizeof(dev));
  if (fd < 0) return 1;
  uint64_t size = 0;
  struct stat st;
  if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) {
    size = (uint64_t)st.st_size;
  } else if (ioctl(fd, BLKGETSIZE64, &size) != 0) {
    Say("FERRY-ERROR disk %s: size: %s", dev, strerror(errno));
    return 1;
  }
  Say("FERRY-DEVICE %s %llu", dev, (unsigned long long)size);
  uint64_t area = (uint64_t)(o->disk_mib > 0 ? o->disk_mib : 16) << 20;
  if (area > size) area = size;
  uint64_t nblocks = area / kBlockSize;
  if (nblocks == 0) {
    Say("FERRY-ERROR disk %s: too small", dev);
    return 1;
  }
  int64_t max_seq = Verify(fd, nblocks);
  if (max_seq == -2) return 2;
  Say("FERRY-DISK-OK %lld", (long long)max_seq);
  if (o->verify_only) return 0;

  static uint8_t b[kBlockSize] __attribute__((aligned(kBlockSize)));
  const int64_t period = o->disk_iops > 0 ? 1000000000 / o->disk_iops : 0;
  const int64_t report_every = 1000000000; /* one FERRY-DISK-SEQ line a second at most */
  int64_t next = NowNs(), last_report = next;
  long written = 0;
  uint64_t seq = (uint64_t)(max_seq + 1);
  for (;; ++seq) {
    if (disk_stop_requested) {
      if (written > 0) Say("FERRY-DISK-SEQ %llu", (unsigned long long)(seq - 1));
      return 0;
    }
    uint64_t off = (seq % nblocks) * kBlockSize;
    FillBlock(b, seq, off);
    if (pwrite(fd, b, kBlockSize, (off_t)off) != kBlockSize) {
      Say("FERRY-ERROR disk write at %llu: %s", (unsigned long long)off, strerror(errno));
      return 1;
    }
    ++written;
    int64_t now = NowNs();
    if (o->disk_count > 0 && written >= o->disk_count) {
      Say("FERRY-DISK-DONE %llu", (unsigned long long)seq);
      return 0;
    }
    if (now - last_report >= report_every) {
      Say("FERRY-DISK-SEQ %llu", (unsigned long long)seq);
      last_report = now;
    }
    if (period > 0) {
      next += period;
      if (next < now) next = now;
      SleepUntilNs(next);
    }
  }
}

/* ---- power button ---- */

static int HasPowerKey(int fd) {
  unsigned long keys[KEY_MAX / (8 * sizeof(unsigned long)) + 1];
  memset(keys, 0, sizeof(keys));
  if (ioctl(fd, EVIOCGBIT(EV_KEY, sizeof(keys)), keys) < 0) return 0;
  const size_t bits = 8 * sizeof(unsigned long);
  return (keys[KEY_POWER / bits] >> (KEY_POWER % bits)) & 1;
}

/* Watches every /dev/input/event* that can report KEY_POWER (the ACPI button driver's
 * "Power Button" devices) and exits with kPowerButtonExit on a press. Rescans the folder
 * every kInputRescanMs: the devices appear when button.ko binds, possibly after we start. */
static void PowerButtonWatcher(void) {
  struct pollfd fds[kInputDevicesMax];
  char seen[kInputDevicesMax][32];
  int nfds = 0, nseen = 0;
  for (;;) {
    DIR* dir = opendir("/dev/input");
    for (struct dirent* e = dir != NULL ? readdir(dir) : NULL; e != NULL; e = readdir(dir)) {
      if (strncmp(e->d_name, "event", 5) != 0 || strlen(e->d_name) >= sizeof(seen[0]) ||
          nseen == kInputDevicesMax) {
        continue;
      }
      int known = 0;
      for (int i = 0; i < nseen && !known; ++i) known = strcmp(seen[i], e->d_name) == 0;
      if (known) continue;
      char path[sizeof("/dev/input/") + sizeof(seen[0])];
      snprintf(path, sizeof(path), "/dev/input/%.31s", e->d_name);
      int fd = open(path, O_RDONLY | O_CLOEXEC);
      if (fd < 0) continue; /* not ready yet: try again at the next scan */
      snprintf(seen[nseen++], sizeof(seen[0]), "%.31s", e->d_name);
      if (HasPowerKey(fd)) {
        fds[nfds].fd = fd;
        fds[nfds].events = POLLIN;
        ++nfds;
      } else {
        close(fd);
      }
    }
    if (dir != NULL) closedir(dir);
    int ready = poll(fds, (nfds_t)nfds, kInputRescanMs);
    for (int i = 0; ready > 0 && i < nfds; ++i) {
      if (!(fds[i].revents & POLLIN)) continue;
      struct input_event ev[16];
      ssize_t n = read(fds[i].fd, ev, sizeof(ev));
      for (ssize_t k = 0; n > 0 && k < n / (ssize_t)sizeof(ev[0]); ++k) {
        if (ev[k].type == EV_KEY && ev[k].code == KEY_POWER && ev[k].value == 1) {
          _exit(kPowerButtonExit);
        }
      }
    }
  }
}

struct Workloads {
  pid_t heartbeat, dirtier, disk, power;
};

static void SleepMs(long ms) { SleepUntilNs(NowNs() + (int64_t)ms * 1000000); }

/* PID 1's answer to the power button: what an OS's shutdown does, then ACPI power-off. */
static void PowerOff(const struct Workloads* w) {
  if (w->heartbeat > 0) kill(w->heartbeat, SIGKILL);
  if (w->dirtier > 0) kill(w->dirtier, SIGKILL);
  if (w->disk > 0 && kill(w->disk, SIGTERM) == 0) {
    /* The writer finishes its block and prints its last durable sequence. */
    for (long waited = 0; waited < kDiskStopGraceMs; waited += 10) {
      if (waitpid(w->disk, NULL, WNOHANG) == w->disk) break;
      SleepMs(10);
    }
    kill(w->disk, SIGKILL);
  }
  while (waitpid(-1, NULL, 0) > 0 || errno == EINTR) {
  }
  sync();
  Say("FERRY-POWEROFF");
  tcdrain(STDOUT_FILENO); /* the line must leave the UART before the machine goes */
  reboot(RB_POWER_OFF);
  for (;;) pause();
}

/* Forks `fn`-style workloads; the child never returns. */
static pid_t Spawn(int which, const struct Options* o) {
  pid_t pid = fork();
  if (pid != 0) return pid;
  switch (which) {
    case 0: Heartbeat(o->heartbeat_ms); break;
    case 1: Dirtier(o->dirty_mib, o->dirty_rate_mib); break;
    case 2: _exit(Disk(o));
    default: PowerButtonWatcher();
  }
  _exit(0);
}

int main(int argc, char** argv) {
  struct Options o = {
      .heartbeat_ms = 10, .disk_mib = 16, .disk_iops = 100, .disk_wait_ms = kDiskWaitMs};
  const int as_init = getpid() == 1;
  if (as_init) {
    MountEarly();
    LoadModules();
    static char cmdline[kCmdlineMax];
    int fd = open("/proc/cmdline", O_RDONLY);
    if (fd >= 0) {
      ssize_t n = read(fd, cmdline, sizeof(cmdline) - 1);
      cmdline[n > 0 ? n : 0] = '\0';
      close(fd);
    }
    ParseWords(&o, cmdline);
    Say("FERRY-READY");
  } else {
    o.heartbeat_ms = 0; /* outside a VM: only what the arguments ask for */
    for (int i = 1; i < argc; ++i) ParseOption(&o, argv[i]);
    if (o.disk[0] != '\0' && o.heartbeat_ms == 0 && o.dirty_mib == 0) return Disk(&o);
  }
  struct Workloads w = {-1, -1, -1, -1};
  if (as_init) w.power = Spawn(3, &o);
  if (o.heartbeat_ms > 0) w.heartbeat = Spawn(0, &o);
  if (o.dirty_mib > 0) w.dirtier = Spawn(1, &o);
  if (o.disk[0] != '\0') w.disk = Spawn(2, &o);
  for (;;) {
    int status;
    pid_t pid = wait(&status);
    if (pid < 0) {
      if (errno == ECHILD && !as_init) return 0;
      if (errno == ECHILD) pause();
      continue;
    }
    if (pid == w.power && WIFEXITED(status) && WEXITSTATUS(status) == kPowerButtonExit) {
      if (!o.ignore_power_button) PowerOff(&w);
      Say("FERRY-POWER-IGNORED");
      w.power = Spawn(3, &o); /* keep watching: every press is reported */
    }
    if (pid == w.disk) {
      if (!as_init) return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
      w.disk = -1; /* done (verify only, disk_count, or failed): nothing to stop later */
    }
  }
}
