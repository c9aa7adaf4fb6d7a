#!/usr/bin/env bash
# Disk conversion benchmark: ferry convert against qemu-img convert (default and -m 16 -W)
# and qemu-nbd + nbdcopy, on the same images in the same run.
#
#   bench/convert_bench.sh [--size 4G] [--full-size 2G] [--rows "raw:raw qcow2:raw ..."]
#                          [--repeat N]   (each measurement N times; the table shows medians)
#
# Two source images: a sparse one (about 25% allocated, in 1 MiB..64 MiB runs, some
# allocated-but-zero) and a fully allocated one. Page cache is dropped before every run
# (cold source) when /proc/sys/vm/drop_caches is writable. Prints a markdown table with
# wall time, CPU time (user+sys of the whole process tree) and peak RSS, and the ratio of
# each peer to Ferry (>1 means Ferry is faster / cheaper). Every output is checked with
# qemu-img compare.
#
# Ferry's copy is durable when it exits (fdatasync at checkpoints and at the end, then the
# rename); qemu-img convert's default is not (its writes may still be in the page cache).
# "qemu-img + fsync" (qemu-img convert, then sync of the target) is the like-for-like peer.
set -euo pipefail
cd "$(dirname "$0")/.."
size=4G
full_size=2G
rows="raw:raw qcow2:raw vmdk:qcow2 vhdx:qcow2 raw:vhdx"
repeat=1
while [ $# -gt 0 ]; do
  case $1 in
    --size) size=$2; shift 2 ;;
    --full-size) full_size=$2; shift 2 ;;
    --rows) rows=$2; shift 2 ;;
    --repeat) repeat=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
ferry=$PWD/build/release/src/cli/ferry
[ -x "$ferry" ] || ./scripts/build release >/dev/null
work=$(mktemp -d /var/tmp/ferry-bench.XXXXXX)
trap 'pkill -f "qemu-nbd.*$work" 2>/dev/null || true; rm -rf "$work"' EXIT

qfmt() { case $1 in vhd) echo vpc ;; *) echo "$1" ;; esac; }

make_sparse() {  # path size: ~25% allocated in runs of 1..64 MiB, 1/8 of them zero-filled
  python3 bench/make_sparse_disk.py "$1" "$(numfmt --from=iec "$2")"
}

make_full() {
  head -c "$(numfmt --from=iec "$1")" /dev/urandom > "$2"
}

drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true; }

# measure LABEL CMD...: appends "label wall cpu rss_kib" to $work/results, $repeat times
# (the output file is removed between repeats)
measure() {
  local i
  for i in $(seq "$repeat"); do
    [ "$i" = 1 ] || rm -f "$work"/out.*
    measure_once "$@"
  done
}

measure_once() {
  local label=$1; shift
  drop_caches
  /usr/bin/time -f "%e %U %S %M" -o "$work/time.out" "$@" >/dev/null 2>"$work/err.out" || {
    echo "FAILED: $label: $*" >&2; cat "$work/err.out" >&2; return 1; }
  read -r wall user sys rss < "$work/time.out"
  echo "$label $wall $(echo "$user + $sys" | bc) $rss" >> "$work/results"
}

nbdcopy_convert() {  # src srcfmt dst dstfmt
  local src=$1 sf=$2 dst=$3 df=$4 s1=$work/s1.sock s2=$work/s2.sock
  qemu-nbd -r -f "$(qfmt "$sf")" -k "$s1" --cache=none --aio=threads "$src" &
  local p1=$!
  local dst_uri=$dst
  if [ "$df" != raw ]; then
    local vsize
    vsize=$(qemu-img info --output=json -f "$(qfmt "$sf")" "$src" | python3 -c 'import json,sys;print(json.load(sys.stdin)["virtual-size"])')
    qemu-img create -q -f "$(qfmt "$df")" "$dst" "$vsize"
    qemu-nbd -f "$(qfmt "$df")" -k "$s2" --cache=writeback "$dst" &
    local p2=$!
    dst_uri="nbd+unix:///?socket=$s2"
  fi
  for _ in $(seq 100); do [ -S "$s1" ] && { [ "$df" = raw ] || [ -S "$s2" ]; } && break; sleep 0.05; done
  nbdcopy "nbd+unix:///?socket=$s1" "$dst_uri"
  kill $p1; wait $p1 2>/dev/null || true
  if [ "$df" != raw ]; then kill $p2; wait $p2 2>/dev/null || true; fi
}
export -f nbdcopy_convert qfmt
export work

echo "preparing images in $work ..." >&2
make_sparse "$work/sparse.raw" "$size"
make_full "$full_size" "$work/full.raw"
: > "$work/results"
for image in sparse full; do
  for row in $rows; do
    sf=${row%%:*}; df=${row##*:}
    src=$work/$image.$sf
    [ -e "$src" ] || qemu-img convert -f raw -O "$(qfmt "$sf")" "$work/$image.raw" "$src"
    out=$work/out.$df
    rm -f "$out"*
    measure "$image $row ferry" "$ferry" convert -f "$sf" -O "$df" "$src" "$out"
    qemu-img compare -q -f "$(qfmt "$sf")" -F "$(qfmt "$df")" "$src" "$out"; rm -f "$out"
    measure "$image $row qemu-img" qemu-img convert -f "$(qfmt "$sf")" -O "$(qfmt "$df")" "$src" "$out"
    rm -f "$out"
    measure "$image $row qemu-img+fsync" sh -c "qemu-img convert -f $(qfmt "$sf") -O $(qfmt "$df") '$src' '$out' && sync '$out'"
    rm -f "$out"
    measure "$image $row qemu-img-m16W" qemu-img convert -m 16 -W -f "$(qfmt "$sf")" -O "$(qfmt "$df")" "$src" "$out"
    rm -f "$out"
    measure "$image $row qemu-nbd+nbdcopy" bash -c "nbdcopy_convert '$src' $sf '$out' $df"
    qemu-img compare -q -f "$(qfmt "$sf")" -F "$(qfmt "$df")" "$src" "$out"; rm -f "$out"
  done
done

python3 - "$work/results" "$size" "$full_size" <<'PY'
import sys, collections
import statistics
samples = collections.OrderedDict()
for line in open(sys.argv[1]):
    image, conv, tool, wall, cpu, rss = line.split()
    samples.setdefault((image, conv), {}).setdefault(tool, []).append((float(wall), float(cpu), int(rss)))
rows = collections.OrderedDict()
for key, tools in samples.items():
    rows[key] = {t: (statistics.median(v[0] for v in vals), statistics.median(v[1] for v in vals),
                     max(v[2] for v in vals)) for t, vals in tools.items()}
runs = max(len(v) for tools in samples.values() for v in tools.values())
print(f"sparse image: {sys.argv[2]} (~25% allocated), full image: {sys.argv[3]}; cold cache; median of {runs} run(s)\n")
peers = ("qemu-img", "qemu-img+fsync", "qemu-img-m16W", "qemu-nbd+nbdcopy")
print("| image | conversion | ferry wall s | ferry CPU s | ferry RSS MiB | qemu-img wall (x) | qemu-img + fsync wall (x) | qemu-img -m16 -W wall (x) | qemu-nbd+nbdcopy wall (x) | peer CPU / ferry CPU (qemu-img / +fsync / -m16 -W / nbdcopy) | peer RSS MiB |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for (image, conv), t in rows.items():
    fw, fc, fr = t["ferry"]
    def r(tool, i):
        v = t[tool][i]; base = (fw, fc)[i]
        return f"{v:.2f} ({v / base:.2f}x)" if base > 0 else f"{v:.2f}"
    cpu = " / ".join(f"{t[k][1] / fc:.2f}x" if fc > 0 else "-" for k in peers)
    peer_rss = "/".join(str(t[k][2] // 1024) for k in peers)
    walls = " | ".join(r(k, 0) for k in peers)
    print(f"| {image} | {conv.replace(':', '→')} | {fw:.2f} | {fc:.2f} | {fr // 1024} | {walls} | {cpu} | {peer_rss} |")
print("\n(x) = peer time / Ferry time: above 1 means Ferry is faster.")
PY
