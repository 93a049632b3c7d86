#!/usr/bin/env bash
# Load runs for docs/performance.md: keygate authz (100k synthetic users) and a no-op ext_authz server, each
# driven by ghz (a go.mod tool) at fixed 1k and 5k rps and unbounded (-c 50). Reports per run: client
# p50/p99/p99.9 and rps (ghz), server CPU per Check (/proc/PID/stat), and for keygate the server-side Check
# latency quantiles from its own histogram (/metrics). Usage: bench/ghz.sh [users] [seconds]
set -euo pipefail
cd "$(dirname "$0")/.."
USERS=${1:-100000}
SECS=${2:-15}
OUT=bench/out
mkdir -p "$OUT"
go build -o "$OUT/keygate" ./cmd/keygate
go build -o "$OUT/noopauthz" ./bench/noopauthz
go tool ghz --version >/dev/null   # builds it once
GHZ=$(go tool -n ghz)
go run ./bench/loadsetup -users "$USERS" -dir "$OUT"

"$OUT/keygate" authz --bundle-file "$OUT/bundle.tar.gz" --jwks-file "$OUT/dev-jwks.json" \
  --grpc-addr 127.0.0.1:19191 --http-addr 127.0.0.1:18181 --no-decision-logs 2>"$OUT/authz.log" &
KG=$!
"$OUT/noopauthz" --addr 127.0.0.1:19292 &
NOOP=$!
trap 'kill $KG $NOOP 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:18181/health?bundles" >/dev/null && break; sleep 0.2; done
curl -sf "http://127.0.0.1:18181/health?bundles" >/dev/null || { echo "keygate authz did not become ready:"; cat "$OUT/authz.log"; exit 1; }

cpu() { awk '{print $14+$15}' "/proc/$1/stat"; }   # utime+stime in clock ticks
TCK=$(getconf CLK_TCK)

run() { # name pid addr ghz-args...
  local name=$1 pid=$2 addr=$3; shift 3
  local before after m0
  [ "$name" = keygate ] && curl -s http://127.0.0.1:18181/metrics > "$OUT/m0.txt"
  before=$(cpu "$pid")
  "$GHZ" --insecure --call envoy.service.auth.v3.Authorization.Check -D "$OUT/request.json" \
    -z "${SECS}s" --connections 4 "$@" -O json "$addr" > "$OUT/ghz.json"
  after=$(cpu "$pid")
  [ "$name" = keygate ] && curl -s http://127.0.0.1:18181/metrics > "$OUT/m1.txt"
  python3 - "$name" "$*" "$before" "$after" "$TCK" "$OUT" <<'PY'
import json, sys, re
name, args, before, after, tck, out = sys.argv[1:]
g = json.load(open(out + "/ghz.json"))
ds = sorted(d["latency"] for d in g.get("details") or [] if d.get("status") == "OK")
lat = {p: ds[min(len(ds) - 1, int(len(ds) * p / 100))] / 1e6 for p in (50, 99, 99.9)} if ds else {}
ok = g["statusCodeDistribution"].get("OK", 0)
cpu = (float(after) - float(before)) / float(tck)
line = f"| {name} | {args} | {g['rps']:.0f} | {lat.get(50, 0):.2f} | {lat.get(99, 0):.2f} | {lat.get(99.9, 0):.2f} | {cpu / max(ok, 1) * 1e6:.1f} |"
if name == "keygate":
    def buckets(path):
        b = {}
        for l in open(path):
            m = re.match(r'keygate_check_duration_seconds_bucket\{(.*)\} (\S+)', l)
            if m and 'result="allow"' in m.group(1):
                b[re.search(r'le="([^"]+)"', m.group(1)).group(1)] = float(m.group(2))
        return b
    b0, b1 = buckets(out + "/m0.txt"), buckets(out + "/m1.txt")
    les = sorted(b1, key=lambda x: float("inf") if x == "+Inf" else float(x))
    total = b1["+Inf"] - b0.get("+Inf", 0)
    def q(p):
        for le in les:
            if b1[le] - b0.get(le, 0) >= p * total:
                return le
    line += f" {q(0.5)} / {q(0.99)} / {q(0.999)} |"
else:
    line += " |"
print(line)
PY
}

echo "| server | ghz | rps | p50 ms | p99 ms | p99.9 ms | server CPU µs/Check | server-side p50 / p99 / p99.9 (bucket le, s) |"
echo "|---|---|---|---|---|---|---|---|"
for load in "--rps 1000 -c 20" "--rps 5000 -c 50" "-c 50"; do
  # shellcheck disable=SC2086
  run noop $NOOP 127.0.0.1:19292 $load
  # shellcheck disable=SC2086
  run keygate $KG 127.0.0.1:19191 $load
done
