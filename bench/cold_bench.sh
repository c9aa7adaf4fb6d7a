#!/usr/bin/env bash
# End-to-end cold migration benchmark (docs/plans.md): a shut-off VM whose 4 GiB qcow2 disk is
# about 25% allocated moves from lab host1 to lab host2 as raw, three ways in the same run:
#
#   ferry          ferryd + a ferry-agent per host, `ferry plan apply --wait` of a plan with a
#                  kvm source and target (export over NBD, copy, verify against the source's
#                  chunk hashes, define on host2; not started), once per --verify entry:
#                  stream (the default: xxh3-128 hashes of what the copy wrote), readback (the
#                  copy read back from storage), off, and either with -sha256 (verify_hash)
#   nbdcopy        what a user would script: qemu-nbd exporting the qcow2 on host1's address,
#                  nbdcopy pulling it into host2's pool as raw, `virsh define` on host2
#   qemu-img       qemu-nbd as above, `qemu-img convert -f raw nbd://... -O raw` on host2,
#                  `virsh define`
#
#   bench/cold_bench.sh [--size 4G] [--repeat N] [--copy-workers N]
#                       [--verify "stream readback off stream-sha256 readback-sha256"]
#                                                   (as root; scripts/lab-deps first)
#
# Each run starts with a cold page cache. Wall time from the start of the copy to the VM being
# defined; CPU time = user+sys of every process involved (ferryd and both agents, or qemu-nbd,
# nbdcopy/qemu-img and virsh); bytes over the wire = the loopback interface's bytes between
# the two hosts' addresses are not separable from other loopback traffic, so the benchmark
# counts the lo interface's transmitted bytes while nothing else runs (the HTTP polling of
# ferryd and the agents is included for Ferry). Ferry's copy is durable and verified when the
# plan completes; the scripted paths get a final `sync` of the target, measured separately.
# Every target is compared with the source with qemu-img compare.
set -euo pipefail
cd "$(dirname "$0")/.."
size=4G
repeat=1
copy_workers=4   # the agents' copy_workers (their default)
verify_modes="stream readback"
while [ $# -gt 0 ]; do
  case $1 in
    --size) size=$2; shift 2 ;;
    --repeat) repeat=$2; shift 2 ;;
    --copy-workers) copy_workers=$2; shift 2 ;;
    --verify) verify_modes=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "cold_bench: needs root (the lab)" >&2; exit 1; }
[ -x build/release/src/server/ferryd ] || ./scripts/build release >/dev/null
bin=$PWD/build/release
ferry=$bin/src/cli/ferry
work=$(mktemp -d /var/tmp/ferry-cold-bench.XXXXXX)
root=$work/lab
base=150
h1=127.0.0.$((base + 1)); h2=127.0.0.$((base + 2))
token=cold-bench
pids=(); names_of_pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  pkill -f "qemu-nbd.*$work" 2>/dev/null || true
  "$ferry" lab down --root "$root" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true; }
lo_tx() { awk '$1 == "lo:" { print $10 }' /proc/net/dev; }
# CPU seconds (user+sys, with waited-for children) of a pid.
cpu_of() { awk '{ printf "%.2f\n", ($14 + $15 + $16 + $17) / '"$(getconf CLK_TCK)"' }' "/proc/$1/stat"; }
now() { date +%s.%N; }

echo "cold_bench: lab up in $root ..." >&2
"$ferry" lab up --root "$root" --hosts 2 --address-base $base --accel tcg >/dev/null
pool1=$root/hosts/host1/local
pool2=$root/hosts/host2/local

# The source disk: ~25% allocated in 1..64 MiB runs, one run in eight zero-filled.
python3 bench/make_sparse_disk.py "$work/src.raw" "$(numfmt --from=iec "$size")"
qemu-img convert -f raw -O qcow2 "$work/src.raw" "$pool1/big.qcow2"
allocated=$(qemu-img map --output=json -f raw "$work/src.raw" |
  python3 -c 'import json,sys; print(sum(e["length"] for e in json.load(sys.stdin) if e["data"]))')
virsh -q -c "qemu+tcp://$h1/system" pool-refresh local >/dev/null
"$ferry" lab guest big --root "$root" --host 1 --pool local --volume big.qcow2 --disk-mode none >/dev/null
virsh -q -c "qemu+tcp://$h1/system" destroy big >/dev/null
virsh -q -c "qemu+tcp://$h1/system" dumpxml --inactive big > "$work/big.xml"

for h in 1 2; do
  a=127.0.0.$((base + h))
  cat > "$work/agent$h.json" <<EOF
{"listen": "$a:7801", "token": "$token", "libvirt_uri": "qemu+tcp://$a/system",
 "migration_uri": "tcp://$a", "host_id": "host$h", "state_dir": "$work/agent$h",
 "shares": {}, "default_domain_type": "qemu", "copy_workers": $copy_workers}
EOF
  "$bin/src/agent/ferry-agent" --config "$work/agent$h.json" > "$work/agent$h.log" 2>&1 &
  pids+=($!); names_of_pids+=("agent$h")
done
cat > "$work/ferryd.json" <<EOF
{"listen": "127.0.0.$base:7800", "token": "$token", "database": "$work/ferry.db",
 "poll_ms": 200, "inventory_refresh_ms": 10000,
 "hosts": [{"id": "host1", "agent_url": "http://$h1:7801", "agent_token": "$token"},
           {"id": "host2", "agent_url": "http://$h2:7801", "agent_token": "$token"}]}
EOF
for _ in $(seq 100); do curl -sf -H "Authorization: Bearer $token" "http://$h1:7801/agent/v1/health" >/dev/null &&
  curl -sf -H "Authorization: Bearer $token" "http://$h2:7801/agent/v1/health" >/dev/null && break; sleep 0.1; done
"$bin/src/server/ferryd" --config "$work/ferryd.json" > "$work/ferryd.log" 2>&1 &
ferryd_pid=$!
pids+=($ferryd_pid); names_of_pids+=(ferryd)
export FERRY_SERVER=http://127.0.0.$base:7800 FERRY_TOKEN=$token
for _ in $(seq 300); do "$ferry" hosts >/dev/null 2>&1 && break; sleep 0.2; done

: > "$work/results"
record() { echo "$*" >> "$work/results"; echo "cold_bench: result: $*" >&2; }

run_ferry() {  # run number, verify mode (stream | readback | off, + -sha256 for verify_hash)
  local n=$1 verify=${2%-sha256} hash=xxh3-128 tag=ferry name=big-f$1 k
  [ "$2" = "$verify" ] || hash=sha256
  if [ "$2" != stream ]; then
    k=${2:0:1}${hash:0:1}; tag=ferry-$2; name=big-$k$1; n=$k$1
  fi
  cat > "$work/plan-$n.yaml" <<EOF
name: bench-$n
source: {type: kvm, host: host1}
target: {type: kvm, host: host2}
vms:
  - name: big
    target: {name: $name}
networks:
  - {source: "*", target: lab}
storage:
  - {source: "*", pool: local, format: raw}
target_defaults: {start: false, boot_check: {marker: ""}}
options: {shutdown_source: false, verify: $verify, verify_hash: $hash}
EOF
  drop_caches
  local tx0 t0 t1 tx1 cpu=0 per=() before=() i d
  for p in "${pids[@]}"; do before+=("$(cpu_of "$p")"); done
  tx0=$(lo_tx); t0=$(now)
  /usr/bin/time -f "%U %S" -o "$work/cli.time" "$ferry" plan apply --wait -f "$work/plan-$n.yaml" >/dev/null
  t1=$(now); tx1=$(lo_tx)
  for i in "${!pids[@]}"; do
    d=$(echo "$(cpu_of "${pids[$i]}") - ${before[$i]}" | bc)
    cpu=$(echo "$cpu + $d" | bc); per+=("${names_of_pids[$i]}=$d")
  done
  echo "cold_bench: $tag run $n CPU s by process: ${per[*]}" >&2
  read -r cu cs < "$work/cli.time"
  record "$tag $(echo "$t1 - $t0" | bc) $(echo "$cpu + $cu + $cs" | bc) $((tx1 - tx0)) 0"
  # Where the time went: every event of the migration, relative to the command's start.
  local mid
  mid=$("$ferry" plan status "bench-$n" --output json | python3 -c 'import json,sys; d=json.load(sys.stdin); print((d.get("plan") or d)["vms"][0]["migration"])')
  "$ferry" migration "$mid" --output json | python3 -c '
import json, sys
t0 = float(sys.argv[1]) * 1000
for e in json.load(sys.stdin)["events"]:
    print("  %8.0f ms  %-7s %s" % (e["at_ms"] - t0, e["kind"], e["message"][:110]))' "$t0" > "$work/timeline-$n.txt"
  echo "cold_bench: $tag run $n timeline:" >&2; cat "$work/timeline-$n.txt" >&2
  qemu-img compare -q -f qcow2 -F raw "$pool1/big.qcow2" "$pool2/$name-disk0.raw"
  virsh -q -c "qemu+tcp://$h2/system" undefine "$name" >/dev/null
  rm -f "$pool2/$name-disk0.raw"
  "$ferry" plan delete "bench-$n" >/dev/null
}

# The scripted paths. $1: nbdcopy | qemu-img.
run_script() {
  local tool=$1 n=$2 name=big-$1-$2 out=$pool2/big-$1-$2.raw port=$((20000 + base))
  sed -e "s|<name>big</name>|<name>$name</name>|" -e "/<uuid>/d" -e "/<mac address/d" \
      -e "s|$pool1/big.qcow2|$out|" -e "s|<driver name='qemu' type='qcow2'|<driver name='qemu' type='raw'|" \
      -e "s|<source pool='local' volume='big.qcow2'/>|<source file='$out'/>|" \
      -e "s|<disk type='volume'|<disk type='file'|" "$work/big.xml" > "$work/$name.xml"
  drop_caches
  local tx0 t0 t1 t2 tx1 nbd_pid
  tx0=$(lo_tx); t0=$(now)
  qemu-nbd -r -f qcow2 --bind "$h1" -p "$port" -t "$pool1/big.qcow2" --pid-file "$work/qemu-nbd.pid" &
  nbd_pid=$!
  for _ in $(seq 100); do nbdinfo --size "nbd://$h1:$port" >/dev/null 2>&1 && break; sleep 0.05; done
  if [ "$tool" = nbdcopy ]; then
    /usr/bin/time -f "%U %S" -o "$work/tool.time" nbdcopy "nbd://$h1:$port" "$out"
  else
    /usr/bin/time -f "%U %S" -o "$work/tool.time" \
      qemu-img convert -f raw "nbd://$h1:$port" -O raw "$out"
  fi
  /usr/bin/time -f "%U %S" -o "$work/virsh.time" \
    virsh -q -c "qemu+tcp://$h2/system" define "$work/$name.xml" >/dev/null
  t1=$(now)
  local nbd_cpu; nbd_cpu=$(cpu_of "$nbd_pid")
  kill "$nbd_pid"; wait "$nbd_pid" 2>/dev/null || true
  tx1=$(lo_tx)
  sync "$out"; t2=$(now)
  read -r tu ts < "$work/tool.time"; read -r vu vs < "$work/virsh.time"
  record "$tool $(echo "$t1 - $t0" | bc) $(echo "$tu + $ts + $vu + $vs + $nbd_cpu" | bc) $((tx1 - tx0)) $(echo "$t2 - $t1" | bc)"
  qemu-img compare -q -f qcow2 -F raw "$pool1/big.qcow2" "$out"
  virsh -q -c "qemu+tcp://$h2/system" undefine "$name" >/dev/null
  rm -f "$out"
}

for n in $(seq "$repeat"); do
  echo "cold_bench: run $n/$repeat ..." >&2
  for v in $verify_modes; do run_ferry "$n" "$v"; done
  run_script nbdcopy "$n"
  run_script qemu-img "$n"
done

python3 - "$work/results" "$size" "$allocated" "$repeat" <<'PY'
import sys, statistics, collections
res = collections.OrderedDict()
for line in open(sys.argv[1]):
    tool, wall, cpu, tx, sync = line.split()
    res.setdefault(tool, []).append((float(wall), float(cpu), int(tx), float(sync)))
med = {t: tuple(statistics.median(v[i] for v in vals) for i in range(4)) for t, vals in res.items()}
size, alloc, runs = sys.argv[2], int(sys.argv[3]), sys.argv[4]
print(f"disk: {size} virtual, {alloc / 2**20:.0f} MiB allocated (qcow2 -> raw), cold cache, median of {runs} run(s)\n")
print("| path | wall s | + sync s | CPU s | bytes over lo MiB | wire / allocated | wall vs Ferry | CPU vs Ferry |")
print("|---|---|---|---|---|---|---|---|")
base = "ferry" if "ferry" in med else next(iter(med))
fw, fc = med[base][0], med[base][1]
names = {"ferry": "ferry plan, verify: stream, xxh3-128 (export, copy + hashes, define)",
         "ferry-readback": "ferry plan, verify: readback (export, copy, read back, define)",
         "ferry-off": "ferry plan, verify: off (export, copy, define)",
         "ferry-stream-sha256": "ferry plan, verify: stream, verify_hash: sha256",
         "ferry-readback-sha256": "ferry plan, verify: readback, verify_hash: sha256",
         "nbdcopy": "qemu-nbd + nbdcopy + virsh define",
         "qemu-img": "qemu-nbd + qemu-img convert nbd:// + virsh define"}
for t, (wall, cpu, tx, sync) in med.items():
    print(f"| {names[t]} | {wall:.2f} | {sync:.2f} | {cpu:.2f} | {tx / 2**20:.0f} | {tx / alloc:.2f} | "
          f"{wall / fw:.2f}x | {cpu / fc:.2f}x |")
print("\n'vs Ferry' = path / Ferry with verify: stream (the default): above 1 means Ferry is "
      "faster or cheaper. Ferry's wall time includes its durable write (fdatasync) and its "
      "verification against the source's hashes; the scripted paths verify nothing, and their "
      "final sync is in '+ sync'.")
PY
