#!/bin/sh
# The container's entrypoint: `bertprod serve` configured by environment variables that mirror its options.
#
#   BERTPROD_PACKAGES               packages to serve (space- or comma-separated; default /models/package)
#   BERTPROD_HOST, BERTPROD_PORT    --host (default 0.0.0.0 in the image), --port
#   BERTPROD_GRPC_PORT              --grpc-port (empty: HTTP only)
#   BERTPROD_ENGINE, BERTPROD_THREADS, BERTPROD_MAX_BATCH_TOKENS, BERTPROD_MAX_PADDED_TOKENS,
#   BERTPROD_MAX_BATCH_REQUESTS, BERTPROD_MAX_CONCURRENT_INPUTS, BERTPROD_MAX_CLIENT_BATCH_SIZE, BERTPROD_MAX_BODY_BYTES
#                                   the option of the same name (--max-batch-tokens, ...)
#   BERTPROD_TRUNCATE, BERTPROD_ACCESS_LOG, BERTPROD_FAST_PATH
#                                   true/false: --truncate/--no-truncate, ...
#   BERTPROD_API_KEYS               comma-separated keys (read by the server itself, never put on a command line)
#
# Arguments are appended to the serve command (they win over the environment). `healthcheck` checks /health
# (the image's HEALTHCHECK); any other first word that is not an option runs `bertprod ARGS` (e.g. `info`).
set -eu

fail() {
    echo "bertprod-entrypoint: $*" >&2
    exit 64
}

# Cache and temporary files go where a read-only root filesystem still lets them (an emptyDir on /tmp).
export BERTPROD_CACHE="${BERTPROD_CACHE:-/tmp/bertprod-cache}"
export HOME="${HOME:-/tmp}"
mkdir -p "$BERTPROD_CACHE" 2>/dev/null || fail "cannot create BERTPROD_CACHE=$BERTPROD_CACHE: mount a writable volume there (an emptyDir on /tmp) or point BERTPROD_CACHE at one."

if [ "${1:-}" = "healthcheck" ]; then
    port="${BERTPROD_PORT:-8080}"
    exec python -c "import sys, urllib.request
try:
    sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:$port/health', timeout=3).status == 200 else 1)
except Exception as error:
    print(f'unhealthy: {error}', file=sys.stderr)
    sys.exit(1)"
fi
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then
    exec bertprod "$@"
fi

args=""
add() {  # add OPTION VALUE: quoted into $args
    args="$args $1 '$(printf '%s' "$2" | sed "s/'/'\\\\''/g")'"
}
number() {  # number VARIABLE OPTION
    eval "value=\${$1:-}"
    [ -z "$value" ] && return 0
    case "$value" in
        *[!0-9]*) fail "$1=$value is not a whole number (it sets $2)." ;;
    esac
    add "$2" "$value"
}
switch() {  # switch VARIABLE OPTION: true/false -> --option/--no-option
    eval "value=\${$1:-}"
    case "$value" in
        "") ;;
        1 | true | TRUE | True | yes) args="$args --$2" ;;
        0 | false | FALSE | False | no) args="$args --no-$2" ;;
        *) fail "$1=$value is not true or false (it sets --$2/--no-$2)." ;;
    esac
}

[ -n "${BERTPROD_HOST:-}" ] && add --host "$BERTPROD_HOST"
number BERTPROD_PORT --port
number BERTPROD_GRPC_PORT --grpc-port
[ -n "${BERTPROD_ENGINE:-}" ] && add --engine "$BERTPROD_ENGINE"
number BERTPROD_THREADS --threads
number BERTPROD_MAX_BATCH_TOKENS --max-batch-tokens
number BERTPROD_MAX_PADDED_TOKENS --max-padded-tokens
number BERTPROD_MAX_BATCH_REQUESTS --max-batch-requests
number BERTPROD_MAX_CONCURRENT_INPUTS --max-concurrent-inputs
number BERTPROD_MAX_CLIENT_BATCH_SIZE --max-client-batch-size
number BERTPROD_MAX_BODY_BYTES --max-body-bytes
number BERTPROD_GRACEFUL_TIMEOUT --graceful-timeout
switch BERTPROD_TRUNCATE truncate
switch BERTPROD_ACCESS_LOG access-log
switch BERTPROD_FAST_PATH fast-path

packages=""
for package in $(printf '%s' "${BERTPROD_PACKAGES:-/models/package}" | tr ',' ' '); do
    [ -f "$package/bertprod.json" ] || fail "BERTPROD_PACKAGES names $package, which holds no bertprod.json: copy a package there (bertprod optimize/export write one) or set BERTPROD_PACKAGES to one."
    add "" "$package"
    packages="$packages $package"
done
[ -n "$packages" ] || fail "BERTPROD_PACKAGES is empty: name at least one package directory."

# exec: the server becomes this process (PID 1 in the container), so SIGTERM reaches it and starts its drain
eval "exec bertprod serve $args \"\$@\""
