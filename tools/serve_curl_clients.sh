#!/usr/bin/env bash
# `gpt2 serve` under concurrent streaming clients that are separate `curl` processes, as a
# cross-check of `cargo xtask bench --serve` (whose clients are threads of the bench process).
#
#   tools/serve_curl_clients.sh GPT2_BIN MODEL_DIR [DTYPE] [CLIENTS] [REQUESTS_PER_CLIENT]
#
# The server runs with 2 threads. Each client sends its requests back to back: a 32-token prompt (its own first token), 128
# greedy tokens, `ignore_eos`, streamed. Prints the server's mean inter-token latency (from
# `/metrics`) and the output tokens per second over the wall time (every token is counted:
# `max_tokens` times the requests). Needs curl and python3.
set -euo pipefail
BIN=$1
MODEL=$2
DTYPE=${3:-f32}
CLIENTS=${4:-16}
PER_CLIENT=${5:-2}
NEW=128

LOG=$(mktemp)
"$BIN" serve --offline -m "$MODEL" --dtype "$DTYPE" --threads 2 --port 0 >"$LOG" 2>"$LOG.err" &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; rm -f "$LOG" "$LOG.err"' EXIT
BASE=""
for _ in $(seq 1 600); do
  BASE=$(head -n1 "$LOG" | sed -n 's/^listening on //p')
  [ -n "$BASE" ] && curl -sf "$BASE/health" >/dev/null && break
  sleep 0.2
done
[ -n "$BASE" ] || { echo "the server did not start:" >&2; cat "$LOG.err" >&2; exit 1; }

PROMPT=$(python3 -c "print(','.join(str((i * 7919 + 13) % 50257) for i in range(31)))")
T0=$(date +%s.%N)
PIDS=()
for c in $(seq 1 "$CLIENTS"); do
  (
    for _ in $(seq 1 "$PER_CLIENT"); do
      curl -sf -N "$BASE/v1/completions" -H 'Content-Type: application/json' \
        -d "{\"model\":\"$MODEL\",\"prompt\":[$c,$PROMPT],\"max_tokens\":$NEW,\"temperature\":0,\"ignore_eos\":true,\"stream\":true}" \
        >/dev/null
    done
  ) &
  PIDS+=($!)
done
wait "${PIDS[@]}"
T1=$(date +%s.%N)
curl -sf "$BASE/metrics" | awk -v t0="$T0" -v t1="$T1" -v clients="$CLIENTS" -v tokens=$((CLIENTS * PER_CLIENT * NEW)) '
  /^gpt2_inter_token_latency_seconds_sum/ { sum = $2 }
  /^gpt2_inter_token_latency_seconds_count/ { count = $2 }
  END { printf "%d clients: mean ITL %.1f ms, %.1f tok/s\n", clients, 1000 * sum / count, tokens / (t1 - t0) }
'
