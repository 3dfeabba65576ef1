# Freshet: the two commands.
#   make run   - build and start the server (psql -h 127.0.0.1 -p 5488 -U freshet)
#   make test  - run the whole test suite
# Both install what they need (idempotently) on a fresh Debian machine with Rust.

export CARGO_TARGET_DIR ?= $(HOME)/.cache/freshet-target
LISTEN ?= 127.0.0.1:5488
DATA_DIR ?= ./freshet-data

.PHONY: run test deps bench bench-state bench-nexmark bench-nexmark-stream bench-kafka bench-connectors bench-frontend check

deps:
	@scripts/install-deps.sh

run: deps
	cargo run --release --bin freshet -- serve --listen $(LISTEN) --data-dir $(DATA_DIR)

# First the house rules: no import cycle between files and no module
# importing one above it (scripts/check-imports.py), then clippy (the crate
# denies unwrap, expect, indexing and string slicing: src/lib.rs).
test: deps
	python3 scripts/check-imports.py src --tests > /dev/null || python3 scripts/check-imports.py src --tests
	cargo clippy --lib
	cargo test --no-fail-fast

check:
	cargo check --all-targets

bench: deps
	cargo bench --bench ingest

# Load, re-hit beyond the memory budget, and kill -9 recovery time (release binary).
bench-state: deps
	cargo test --release --no-run
	benches/state.sh $(ARGS)

bench-nexmark: deps
	cargo test --release --no-run
	benches/nexmark.sh $(ARGS)

# Nexmark through nexmark sources, 1 and all workers, vs DataFusion batch.
bench-nexmark-stream: deps
	cargo build --release --bin freshet
	benches/nexmark_stream.sh $(ARGS)

# Kafka JSON ingest into an aggregate view, one partition and several.
bench-kafka: deps
	cargo bench --bench kafka_ingest -- $(ARGS)

# Round trips/s, connections/s and SUBSCRIBE latency, next to a local PostgreSQL.
bench-frontend: deps
	cargo bench --bench frontend -- $(ARGS)

# CDC freshness and Kafka -> view -> Postgres sink latency at 10,000 rows/s.
bench-connectors: deps
	cargo bench --bench connector_latency -- $(ARGS)
