#!/usr/bin/env bash
# Load runs for docs/performance.md, all in one script so that ratios are measured side by side on the same
# machine: a no-op ext_authz server (the floor), keygate authz verifying the bearer JWT, keygate authz taking
# the identity from jwt_authn metadata, and a stock opa-envoy-plugin (../shared/tools) serving keygate's own
# bundle (path keygate/envoy/response, identity from metadata), driven by ghz (a go.mod tool) with a mix of
# different CheckRequests like production traffic (bench/loadsetup: many users and orgs, 54% allowed, denials
# for no grant, unknown routes, no identity, no org, malformed paths), sent round-robin.
#
# Runs: the mix unbounded (-c 50) and at a fixed 5,000 rps on each server; the allowed-only and denied-only
# subsets unbounded on keygate; an honest client at 1,000 rps alone and beside a hostile client (30,000-segment
# paths, 60 KB headers, malformed paths, unbounded -c 8). Reports client rps and p50/p99/p99.9, server CPU per
# Check (/proc/PID/stat), the status mix, and each server's RSS after the runs.
# Usage: bench/ghz.sh [users] [seconds]
set -euo pipefail
cd "$(dirname "$0")/.."
USERS=${1:-100000}
SECS=${2:-15}
OUT=bench/out/$USERS
PLUGIN=${OPA_ENVOY_PLUGIN:-../shared/tools/opa-envoy-plugin}
mkdir -p "$OUT"
echo "building keygate, the no-op server and ghz; generating $USERS users and the request mix (this takes a while)" >&2
go build -o "$OUT/keygate" ./cmd/keygate
go build -o "$OUT/noopauthz" ./bench/noopauthz
go tool ghz --version >/dev/null   # builds it once
GHZ=$(go tool -n ghz)
go run ./bench/loadsetup -users "$USERS" -mix 2000 -dir "$OUT" >&2
[ -x "$PLUGIN" ] || { echo "no stock opa-envoy-plugin at $PLUGIN (see ../shared/tools/README.md)"; exit 1; }

for port in 19191 18181 19193 18183 19195 18185 19292; do
  if (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; then echo "port $port is in use: stop what holds it"; exit 1; fi
done
"$OUT/keygate" authz --bundle-file "$OUT/bundle.tar.gz" --jwks-file "$OUT/dev-jwks.json" \
  --grpc-addr 127.0.0.1:19191 --http-addr 127.0.0.1:18181 --no-decision-logs 2>"$OUT/authz-jwt.log" &
KGJ=$!
"$OUT/keygate" authz --bundle-file "$OUT/bundle.tar.gz" --identity-from-metadata \
  --grpc-addr 127.0.0.1:19193 --http-addr 127.0.0.1:18183 --no-decision-logs 2>"$OUT/authz-md.log" &
KGM=$!
cat > "$OUT/plugin.yaml" <<YAML
plugins:
  envoy_ext_authz_grpc:
    addr: 127.0.0.1:19195
    path: keygate/envoy/response
    enable-reflection: true
decision_logs:
  console: false
YAML
"$PLUGIN" run --server --addr 127.0.0.1:18185 --config-file "$OUT/plugin.yaml" -b "$OUT/bundle.tar.gz" \
  --log-level error >"$OUT/plugin.log" 2>&1 &
STOCK=$!
"$OUT/noopauthz" --addr 127.0.0.1:19292 &
NOOP=$!
trap 'kill $KGJ $KGM $STOCK $NOOP 2>/dev/null || true' EXIT
for url in "http://127.0.0.1:18181/health?bundles" "http://127.0.0.1:18183/health?bundles" "http://127.0.0.1:18185/health?bundles"; do
  for _ in $(seq 1 600); do curl -sf "$url" >/dev/null && break; sleep 0.2; done
  curl -sf "$url" >/dev/null || { echo "$url never became ready"; tail -5 "$OUT"/*.log; exit 1; }
done

# allowed_share PORT: the share of allowed decisions a keygate server made since the last call (its
# keygate_decisions_total counters; the last totals are kept in files, since run() calls this in a subshell).
allowed_share() {
  local m a t last_a=0 last_t=0
  m=$(curl -s "http://127.0.0.1:$1/metrics")
  a=$(awk '/^keygate_decisions_total\{.*result="allow"/ {s+=$2} END {printf "%d", s}' <<<"$m")
  t=$(awk '/^keygate_decisions_total\{/ {s+=$2} END {printf "%d", s}' <<<"$m")
  [ -f "$OUT/share.$1" ] && read -r last_a last_t < "$OUT/share.$1"
  echo "$a $t" > "$OUT/share.$1"
  python3 -c "print(f'{100 * ($a - $last_a) / max($t - $last_t, 1):.0f}% allowed of $((t - last_t))')"
}

cpu() { awk '{print $14+$15}' "/proc/$1/stat"; }   # utime+stime in clock ticks
rm -f "$OUT"/share.*; allowed_share 18181 >/dev/null; allowed_share 18183 >/dev/null
rss() { awk '/VmRSS/ {printf "%.0f", $2/1024}' "/proc/$1/status"; }
TCK=$(getconf CLK_TCK)

# run NAME PID ADDR DATA GHZ-ARGS...: one ghz run, one table row.
run() {
  local name=$1 pid=$2 addr=$3 data=$4; shift 4
  local before after
  before=$(cpu "$pid")
  "$GHZ" --insecure --call envoy.service.auth.v3.Authorization.Check -D "$OUT/$data" \
    -z "${SECS}s" --connections 4 "$@" -O json "$addr" > "$OUT/ghz.json"
  after=$(cpu "$pid")
  local share=""
  case "$addr" in *:19191) share=$(allowed_share 18181);; *:19193) share=$(allowed_share 18183);; esac
  python3 - "$name" "$data" "$*" "$before" "$after" "$TCK" "$OUT/ghz.json" "$share" <<'PY'
import json, sys
name, data, args, before, after, tck, path, share = sys.argv[1:]
g = json.load(open(path))
ds = sorted(d["latency"] for d in g.get("details") or [] if d.get("error", "") == "")
lat = {p: ds[min(len(ds) - 1, int(len(ds) * p / 100))] / 1e6 for p in (50, 99, 99.9)} if ds else {}
codes = g["statusCodeDistribution"]
n = sum(codes.values())
cpu = (float(after) - float(before)) / float(tck)
mix = ", ".join(f"{k} {100 * v / n:.0f}%" for k, v in sorted(codes.items())) + (f"; decisions: {share}" if share else "")
print(f"| {name} | {data} | {args} | {g['rps']:.0f} | {lat.get(50, 0):.2f} | {lat.get(99, 0):.2f} | {lat.get(99.9, 0):.2f} | {cpu / max(n, 1) * 1e6:.1f} | {mix} |")
PY
}

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r); $USERS users; ${SECS}s per run"
echo
echo "| server | requests | ghz | rps | p50 ms | p99 ms | p99.9 ms | server CPU µs/Check | gRPC status mix; keygate's decisions |"
echo "|---|---|---|---|---|---|---|---|---|"
for load in "-c 50" "--rps 5000 -c 50"; do
  # shellcheck disable=SC2086
  run noop $NOOP 127.0.0.1:19292 mix-jwt.json $load
  # shellcheck disable=SC2086
  run keygate-jwt $KGJ 127.0.0.1:19191 mix-jwt.json $load
  # shellcheck disable=SC2086
  run keygate-metadata $KGM 127.0.0.1:19193 mix-metadata.json $load
  # shellcheck disable=SC2086
  run opa-envoy-plugin $STOCK 127.0.0.1:19195 mix-metadata.json $load
done
for data in allow-jwt.json deny-jwt.json; do run keygate-jwt $KGJ 127.0.0.1:19191 $data -c 50; done
for data in allow-metadata.json deny-metadata.json; do run keygate-metadata $KGM 127.0.0.1:19193 $data -c 50; done
for data in allow-metadata.json deny-metadata.json; do run opa-envoy-plugin $STOCK 127.0.0.1:19195 $data -c 50; done

echo
echo "Honest client (the mix, 1,000 rps) alone, then beside a hostile client (hostile.json, unbounded -c 8):"
echo
echo "| server | requests | ghz | rps | p50 ms | p99 ms | p99.9 ms | server CPU µs/Check | gRPC status mix; keygate's decisions |"
echo "|---|---|---|---|---|---|---|---|---|"
run keygate-jwt $KGJ 127.0.0.1:19191 mix-jwt.json --rps 1000 -c 20
"$GHZ" --insecure --call envoy.service.auth.v3.Authorization.Check -D "$OUT/hostile.json" -z "$((SECS + 2))s" \
  --connections 2 -c 8 -O json 127.0.0.1:19191 > "$OUT/hostile-ghz.json" &
HOSTILE=$!
sleep 1
run "keygate-jwt beside hostile" $KGJ 127.0.0.1:19191 mix-jwt.json --rps 1000 -c 20
wait $HOSTILE || true
python3 -c "import json; g=json.load(open('$OUT/hostile-ghz.json')); print(f\"hostile client: {g['rps']:.0f} rps, statuses {g['statusCodeDistribution']}\")"

echo
echo "RSS after the runs: keygate-jwt $(rss $KGJ) MiB, keygate-metadata $(rss $KGM) MiB, opa-envoy-plugin $(rss $STOCK) MiB, no-op $(rss $NOOP) MiB"
