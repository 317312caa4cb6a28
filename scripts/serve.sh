#!/usr/bin/env bash
# Start the predictor and the transformer on loopback; Ctrl-C (or SIGTERM) stops both cleanly.
set -euo pipefail
PY=$1 MODEL_DIR=$2 HTTP_PORT=$3 T_GRPC=$4 P_HTTP=$5 P_GRPC=$6

pids=()
stop() {
  trap - INT TERM EXIT
  echo; echo "stopping..."
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  echo "stopped."
}
trap stop INT TERM EXIT

"$PY" -m predictor --model_name yolov3 --model_dir "$MODEL_DIR" \
  --http_port "$P_HTTP" --grpc_port "$P_GRPC" --enable_latency_logging false &
pids+=($!)
for _ in $(seq 1 120); do
  if curl -fsS "http://127.0.0.1:$P_HTTP/v2/models/yolov3/ready" >/dev/null 2>&1; then break; fi
  kill -0 "${pids[0]}" 2>/dev/null || { echo "predictor failed to start" >&2; exit 1; }
  sleep 0.5
done

"$PY" -m transformer --model_name yolov3 --predictor_host "127.0.0.1:$P_GRPC" --predictor_protocol grpc-v2 \
  --enable_predictor_health_check --http_port "$HTTP_PORT" --grpc_port "$T_GRPC" --enable_latency_logging false &
pids+=($!)
for _ in $(seq 1 120); do
  if curl -fsS "http://127.0.0.1:$HTTP_PORT/v2/models/yolov3/ready" >/dev/null 2>&1; then break; fi
  kill -0 "${pids[1]}" 2>/dev/null || { echo "transformer failed to start" >&2; exit 1; }
  sleep 0.5
done

cat <<MSG

yolo-kserve is serving yolov3-tiny (Ctrl-C stops both servers):
  transformer REST  http://127.0.0.1:$HTTP_PORT   (gRPC 127.0.0.1:$T_GRPC)
  predictor         http://127.0.0.1:$P_HTTP   (gRPC 127.0.0.1:$P_GRPC)

Try:
  curl -s -X POST -H "Content-Type: image/jpeg" --data-binary @tests/data/images/dog.jpg \\
       "http://127.0.0.1:$HTTP_PORT/v1/models/yolov3:predict?confidence=0.5"

MSG
wait -n "${pids[@]}"
