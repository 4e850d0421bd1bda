#!/usr/bin/env bash
# The game server under bots: tick duration p50/p99 (and its phases) and
# bytes per client per tick at 50, 500 and 1,000 bots, with ecsdb embedded
# in the game server and with ecsdb remote (`ecsdb serve` on loopback).
# Bots run on the same machine, so they compete with the server for CPU.
#
#   bash benches/game/run.sh            # all of it
#   COUNTS="50 500" MODES=embedded bash benches/game/run.sh
#
# Figures go to stdout as a Markdown table (see docs/PERFORMANCE.md).
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release -q -p ecsdb-game-server -p ecsdb-cli
BIN=target/release
COUNTS=${COUNTS:-"50 500 1000"}
MODES=${MODES:-"embedded remote"}
PLAY=${PLAY:-20}
WORK=$(mktemp -d)
trap 'pkill -P $$ 2>/dev/null || true; rm -rf "$WORK"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

echo "| mode | bots (connected) | tick p50 ms | tick p99 ms | systems p50/p99 | commit p50/p99 | subscriptions p50/p99 | bytes/client/tick | ticks/s seen |"
echo "|---|---|---|---|---|---|---|---|---|"
for mode in $MODES; do
  for n in $COUNTS; do
    dir="$WORK/$mode-$n"; mkdir -p "$dir"
    env=(RATE_LIMIT_MAX=1000000 GAME_MAX_PLAYERS=$((n + 10)) SERVER_MAX_CONNECTIONS_PER_IP=100000 LOG_LEVEL=warn JWT_SECRET=bench-secret-0123456789abcdef0123456789)
    if [ "$mode" = remote ]; then
      dbport=$(free_port)
      ECSDB_ADMIN_PASSWORD=admin-password-1 ECSDB_JWT_SECRET=bench-secret-0123456789abcdef0123456789ab ECSDB_LOG_LEVEL=warn \
        $BIN/ecsdb serve --data-dir "$dir/ecsdb" --schema crates/game-server/game.toml --bind 127.0.0.1:$dbport >"$dir/ecsdb.log" 2>&1 &
      for _ in $(seq 50); do curl -sf localhost:$dbport/health >/dev/null && break; sleep 0.2; done
      tok=$(curl -s -X POST localhost:$dbport/v1/auth/login -H 'content-type: application/json' -d '{"username":"admin","password":"admin-password-1"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
      key=$(curl -s -X POST localhost:$dbport/v1/admin/api-keys -H "authorization: Bearer $tok" -H 'content-type: application/json' -d '{"name":"game","permissions":["read","write"]}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')
      env+=(ECSDB_URL=http://127.0.0.1:$dbport ECSDB_API_KEY=$key)
    fi
    port=$(free_port)
    env "${env[@]}" $BIN/game-server serve --data-dir "$dir/game" --host 127.0.0.1 --port $port --ws-port 0 >"$dir/game.log" 2>&1 &
    for _ in $(seq 50); do curl -sf localhost:$port/health >/dev/null && break; sleep 0.2; done
    bots=$($BIN/game-server bots --count "$n" --url http://127.0.0.1:$port --duration "$PLAY" --json)
    health=$(curl -s localhost:$port/health)
    python3 - "$mode" "$n" "$bots" "$health" "$PLAY" <<'PY'
import json, sys
mode, n, bots, health, play = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4]), float(sys.argv[5])
t = health["tick_ms"]
f = lambda x: f"{x:.1f}"
ticks_per_s = bots["server_ticks_seen"] / play
print(f"| {mode} | {n} ({bots['connected']}) | {f(t['p50'])} | {f(t['p99'])} | {f(t['systems']['p50'])} / {f(t['systems']['p99'])} | "
      f"{f(t['commit']['p50'])} / {f(t['commit']['p99'])} | {f(t['subscriptions']['p50'])} / {f(t['subscriptions']['p99'])} | "
      f"{bots['bytes_per_bot_per_tick']:.0f} | {ticks_per_s:.1f} |")
PY
    pkill -f "game-server serve --data-dir $dir" || true
    pkill -f "ecsdb serve --data-dir $dir" || true
    sleep 1
  done
done
