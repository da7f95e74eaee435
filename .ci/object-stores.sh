#!/usr/bin/env bash
# Real object-store servers on loopback for StrataKV's remote tests:
#   moto 5.2.5 (S3 protocol, from PyPI) and Azurite 3.35.0 (Azure Blob protocol, from npm).
#
# Usage
#   source .ci/object-stores.sh start      # install (cached), start both servers, export the env below
#   trap '.ci/object-stores.sh stop' EXIT  # stop them by PID when the caller exits
#   cargo test --test remote_backends
#
#   eval "$(.ci/object-stores.sh start)"   # the same without `source`: prints `export` lines
#   .ci/object-stores.sh stop              # stops the servers named by $STRATAKV_OBJECT_STORES_STATE
#   .ci/object-stores.sh install           # only install into the cache
#
# Exported by `start`
#   STRATAKV_S3_ENDPOINT       http://127.0.0.1:PORT              (moto; path-style, any credentials)
#   STRATAKV_S3_BUCKET         the bucket, already created
#   STRATAKV_AZURE_ENDPOINT    http://127.0.0.1:PORT/devstoreaccount1  (Azurite, well-known dev account)
#   STRATAKV_AZURE_CONTAINER   the container, already created (SharedKey-signed PUT from python3)
#   STRATAKV_OBJECT_STORES_STATE  the folder holding this run's PIDs and logs; `stop` reads it
#   NO_PROXY / no_proxy        127.0.0.1,localhost (reqwest honours proxy variables)
#
# Everything installed lives under .ci/cache/ (git-ignored) and is reused by later runs:
#   .ci/cache/venv-moto-5.2.5/   python3 -m venv with moto[s3]==5.2.5, flask, flask-cors
#   .ci/cache/node_modules/      azurite@3.35.0 (3.36+ needs Node >= 21)
# Each `start` gets its own state folder .ci/cache/servers.XXXXXX/ (pids, logs, env), so two runs
# on one machine do not stop each other's servers. Ports are picked free at start.
#
# When sourced, the caller's shell options are left alone: the work runs in a subshell that writes
# an env file, and only that file is sourced. `start` fails (non-zero) if a server does not come up.

_osx_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
_osx_cache="$_osx_root/.ci/cache"
_osx_moto_version="5.2.5"
_osx_azurite_version="3.35.0"
_osx_venv="$_osx_cache/venv-moto-$_osx_moto_version"

_osx_log() { printf '[object-stores] %s\n' "$*" >&2; }

_osx_now_ms() { date +%s%3N; }

# Installs moto and Azurite into the cache unless they are there already. Serialised by a lock
# so that concurrent runs do not install over each other.
_osx_install() (
    set -euo pipefail
    mkdir -p "$_osx_cache"
    exec 9>"$_osx_cache/install.lock"
    flock 9
    local t0
    t0=$(_osx_now_ms)
    if [[ ! -f "$_osx_venv/.installed" ]]; then
        _osx_log "installing moto[s3]==$_osx_moto_version into $_osx_venv"
        rm -rf "$_osx_venv"
        python3 -m venv "$_osx_venv"
        "$_osx_venv/bin/pip" install --quiet --disable-pip-version-check \
            "moto[s3]==$_osx_moto_version" flask flask-cors >&2
        touch "$_osx_venv/.installed"
        _osx_log "moto installed in $(( ($(_osx_now_ms) - t0) ))ms"
    fi
    local t1 have=""
    t1=$(_osx_now_ms)
    if [[ -f "$_osx_cache/node_modules/azurite/package.json" ]]; then
        have=$(node -p "require('$_osx_cache/node_modules/azurite/package.json').version" 2>/dev/null || true)
    fi
    if [[ "$have" != "$_osx_azurite_version" ]]; then
        _osx_log "installing azurite@$_osx_azurite_version into $_osx_cache/node_modules"
        npm install --prefix "$_osx_cache" --no-audit --no-fund --loglevel=error \
            "azurite@$_osx_azurite_version" >&2
        _osx_log "azurite installed in $(( ($(_osx_now_ms) - t1) ))ms"
    fi
)

# Prints a TCP port that was free a moment ago on 127.0.0.1.
_osx_free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# Waits until something answers HTTP on the port (any status: Azurite answers GET / with 400).
# Fails if the process dies or 30 s pass.
_osx_wait_port() {
    local port=$1 pid=$2 i
    for ((i = 0; i < 300; i++)); do
        if curl -s -o /dev/null --noproxy '*' --max-time 1 "http://127.0.0.1:$port/"; then
            return 0
        fi
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

# Starts one server: `_osx_spawn NAME LOG CMD...` with PORT in CMD replaced; retries on a port race.
# Prints the port; records "PID NAME" in the state folder.
_osx_spawn() {
    local name=$1 state=$2
    shift 2
    local attempt port pid args a
    for attempt in 1 2 3; do
        port=$(_osx_free_port)
        args=()
        for a in "$@"; do args+=("${a//@PORT@/$port}"); done
        "${args[@]}" >"$state/$name.log" 2>&1 </dev/null &
        pid=$!
        echo "$pid $name" >>"$state/pids"
        if _osx_wait_port "$port" "$pid"; then
            echo "$port"
            return 0
        fi
        _osx_log "$name did not come up on port $port (attempt $attempt); log:"
        tail -n 20 "$state/$name.log" >&2 || true
        kill "$pid" 2>/dev/null || true
    done
    return 1
}

# Creates an Azure Blob container with a SharedKey-signed request (object_store cannot create
# containers). Uses only python3's standard library.
_osx_azure_create_container() {
    NO_PROXY='*' python3 - "$1" "$2" <<'PY'
import base64, hashlib, hmac, sys, urllib.request, urllib.error
from email.utils import formatdate
endpoint, container = sys.argv[1].rstrip("/"), sys.argv[2]
account = "devstoreaccount1"
key = base64.b64decode("Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==")
date, version = formatdate(usegmt=True), "2021-08-06"
url = f"{endpoint}/{container}?restype=container"
path = url.split("//", 1)[1].split("/", 1)[1].split("?", 1)[0]
ctype = "application/octet-stream"  # urllib would add a form content type otherwise; it is signed
to_sign = "PUT" + "\n" * 5 + ctype + "\n" * 7 + f"x-ms-date:{date}\nx-ms-version:{version}\n" + f"/{account}/{path}\nrestype:container"
sig = base64.b64encode(hmac.new(key, to_sign.encode(), hashlib.sha256).digest()).decode()
req = urllib.request.Request(url, method="PUT", data=b"", headers={
    "Content-Type": ctype, "x-ms-date": date, "x-ms-version": version, "Authorization": f"SharedKey {account}:{sig}"})
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
try:
    opener.open(req, timeout=10)
except urllib.error.HTTPError as e:
    if e.code != 409:  # 409: the container exists already
        sys.exit(f"creating container {container}: HTTP {e.code}: {e.read()[:300]!r}")
PY
}

# Installs, starts both servers, creates the bucket and the container, writes $state/env.
_osx_start() (
    set -euo pipefail
    export NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost
    local t0 t1 t2 state s3_port az_port bucket=stratakv-test container=stratakv-test
    t0=$(_osx_now_ms)
    _osx_install
    t1=$(_osx_now_ms)
    state=$(mktemp -d "$_osx_cache/servers.XXXXXX")
    : >"$state/pids"
    # If anything below fails, stop what was started.
    trap 'rc=$?; if [[ $rc -ne 0 ]]; then STRATAKV_OBJECT_STORES_STATE="$state" _osx_stop; fi' EXIT

    # Both start at once; each is waited for.
    _osx_spawn moto "$state" "$_osx_venv/bin/moto_server" -H 127.0.0.1 -p @PORT@ >"$state/moto.port" &
    local moto_waiter=$!
    _osx_spawn azurite "$state" "$_osx_cache/node_modules/.bin/azurite-blob" \
        --blobHost 127.0.0.1 --blobPort @PORT@ --inMemoryPersistence --disableTelemetry --silent \
        >"$state/azurite.port" &
    local azurite_waiter=$!
    wait "$moto_waiter" || { _osx_log "moto did not start"; exit 1; }
    wait "$azurite_waiter" || { _osx_log "azurite did not start"; exit 1; }
    s3_port=$(<"$state/moto.port")
    az_port=$(<"$state/azurite.port")

    curl -sf --noproxy '*' -o /dev/null -X PUT "http://127.0.0.1:$s3_port/$bucket" ||
        { _osx_log "creating S3 bucket $bucket failed"; exit 1; }
    _osx_azure_create_container "http://127.0.0.1:$az_port/devstoreaccount1" "$container"
    t2=$(_osx_now_ms)

    cat >"$state/env" <<EOF
export STRATAKV_S3_ENDPOINT=http://127.0.0.1:$s3_port
export STRATAKV_S3_BUCKET=$bucket
export STRATAKV_AZURE_ENDPOINT=http://127.0.0.1:$az_port/devstoreaccount1
export STRATAKV_AZURE_CONTAINER=$container
export STRATAKV_OBJECT_STORES_STATE=$state
export NO_PROXY=127.0.0.1,localhost
export no_proxy=127.0.0.1,localhost
EOF
    _osx_log "install check $((t1 - t0))ms, start $((t2 - t1))ms: moto on $s3_port, azurite on $az_port ($state)"
    echo "$state"
)

# Stops the servers of $STRATAKV_OBJECT_STORES_STATE by PID (only PIDs whose command line is still
# the server this script started), then removes the state folder.
_osx_stop() {
    local state=${STRATAKV_OBJECT_STORES_STATE:-}
    if [[ -z "$state" || ! -f "$state/pids" ]]; then
        _osx_log "stop: no state folder (STRATAKV_OBJECT_STORES_STATE is unset or gone); nothing to stop"
        return 0
    fi
    local pid name i alive
    while read -r pid name; do
        if [[ -r /proc/$pid/cmdline ]] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -e moto_server -e azurite; then
            kill "$pid" 2>/dev/null || true
        fi
    done <"$state/pids"
    for ((i = 0; i < 50; i++)); do
        alive=0
        while read -r pid name; do
            if kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -e moto_server -e azurite; then
                alive=1
            fi
        done <"$state/pids"
        [[ $alive -eq 0 ]] && break
        sleep 0.1
    done
    if [[ $alive -ne 0 ]]; then
        while read -r pid name; do
            if kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -e moto_server -e azurite; then
                kill -9 "$pid" 2>/dev/null || true
            fi
        done <"$state/pids"
    fi
    rm -rf "$state"
    _osx_log "stopped servers of $state"
}

_osx_main() {
    local sourced=$1
    shift
    case "${1:-}" in
    start)
        local state rc
        # Not `state=$(_osx_start) || ...`: that would switch off `set -e` inside _osx_start.
        state=$(_osx_start)
        rc=$?
        [[ $rc -eq 0 ]] || return "$rc"
        if [[ $sourced -eq 1 ]]; then
            # shellcheck disable=SC1091
            . "$state/env"
        else
            cat "$state/env"
        fi
        ;;
    stop) _osx_stop ;;
    install) _osx_install ;;
    *)
        sed -n '2,/^$/p' "$_osx_root/.ci/object-stores.sh" | sed 's/^# \{0,1\}//' >&2
        return 2
        ;;
    esac
}

if [[ "${BASH_SOURCE[0]}" != "$0" ]]; then
    _osx_main 1 "${@:-start}"
else
    _osx_main 0 "$@"
    exit $?
fi
