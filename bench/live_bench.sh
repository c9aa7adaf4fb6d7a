#!/usr/bin/env bash
# Live-migration benchmark: Ferry's live job against `virsh migrate --live` with its defaults
# and against QEMU's defaults (max-bandwidth 128 MiB/s, downtime-limit 300 ms), in the same run,
# on a 2-host lab (address base 130) with a 512 MiB TCG guest dirtying memory at several rates,
# over several bandwidth caps (QEMU's own cap). Needs root and scripts/lab-deps.
#
#   bench/live_bench.sh [--rates 0,16,64,128] [--caps 0,256,64] [--limit 90] [--budget 300]
#                       [--memory 512] [--methods ferry,virsh,qemu] [--repeat 1] [--keep]
#
# For each run: finished or not (each gets --limit seconds, then virsh domjobabort; Ferry gets
# the limit as its job timeout), wall time, guest-observed downtime (the longest gap between
# the guest's 10 ms heartbeat lines on its serial console, seen by the host), QEMU's downtime
# and the bytes sent (the completed job's statistics). Prints a markdown table with ratios
# peer / Ferry; every run is also appended as JSON to $root/runs.jsonl, progress to stderr.
# How it works: bench/live_bench.cc. Results: docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
root=/var/tmp/ferry-live-bench
args=()
while [ $# -gt 0 ]; do
  case $1 in
    --root) root=$2; shift 2 ;;
    --rates|--caps|--limit|--budget|--memory|--methods|--repeat) args+=("$1" "$2"); shift 2 ;;
    --keep) args+=("$1"); shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "live_bench.sh: needs root (the lab runs libvirtd)" >&2; exit 2; }
./scripts/build release >/dev/null
bench=$PWD/build/release/bench/ferry_live_bench
mkdir -p "$root"
rm -f "$root/runs.jsonl"
exec "$bench" --root "$root" --json "$root/runs.jsonl" "${args[@]}"
