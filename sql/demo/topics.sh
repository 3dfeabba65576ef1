#!/usr/bin/env bash
# Run by docker/compose.yaml's `topics` service (in the Kafka image): the
# demo's topics, and a few clicks to read.
set -euo pipefail
for topic in clicks revenue; do
  /opt/kafka/bin/kafka-topics.sh --bootstrap-server kafka:9092 --create --if-not-exists --topic "$topic" --partitions 3
done
for n in $(seq 1 200); do
  echo "{\"customer\": \"customer$((n % 20))\", \"url\": \"/p/$n\", \"ts\": \"2026-01-01T00:00:00\"}"
done | /opt/kafka/bin/kafka-console-producer.sh --bootstrap-server kafka:9092 --topic clicks
