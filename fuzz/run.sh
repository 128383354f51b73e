#!/usr/bin/env bash
# Run every fuzz target in turn, seeded, and print what each did.
#
#   fuzz/run.sh                 # 600 s per target (the issue's 10 minutes)
#   FUZZ_SECONDS=60 fuzz/run.sh sniff hello
#
# Needs a nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`).
# One fuzzer at a time (the CI machine has 2 cores). Seeds are regenerated
# into seeds/<target>/ (src/bin/seeds.rs; real-client hellos from
# seeds/captured/, see capture-hellos.sh); the growing corpus is
# corpus/<target>/, crashes land in artifacts/<target>/, logs in logs/.
# A single allocation over 64 MB or an RSS over 2 GB counts as a failure.
set -euo pipefail
cd "$(dirname "$0")"
seconds=${FUZZ_SECONDS:-600}
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(sniff hello postgres proxy_protocol config)

declare -A max_len=([sniff]=20000 [hello]=20000 [postgres]=4096 [proxy_protocol]=4096 [config]=8192)

cargo +nightly run --quiet --release --bin seeds
cargo +nightly fuzz build -O
mkdir -p logs
status=0
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t"
    log="logs/$t.log"
    echo "== $t: ${seconds}s"
    if cargo +nightly fuzz run -O "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$seconds" -max_len="${max_len[$t]:-4096}" -timeout=10 \
        -rss_limit_mb=2048 -malloc_limit_mb=64 -print_final_stats=1 >"$log" 2>&1; then
        :
    else
        status=1
        echo "!! $t failed: see $log and artifacts/$t/"
    fi
    grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -1 || true
    grep -E '^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)' "$log" | tr '\n' ' '
    echo
    echo "corpus/$t: $(find "corpus/$t" -type f | wc -l) files"
done
exit $status
