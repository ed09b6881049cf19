#!/usr/bin/env bash
# Installs what building and testing casynq needs on Debian 12 (bookworm): the
# Debian packages below, a Go toolchain, and the Go modules of tests/interop.
# Safe to rerun, because it installs only what is missing.
set -euo pipefail

# Debian packages that the build and the tests need. Add new ones here.
PACKAGES=(
    build-essential
    pkg-config
    meson
    ninja-build
    python3
    libhiredis-dev
    libev-dev
    libprotobuf-c-dev
    protobuf-c-compiler
    libcjson-dev
    libcmocka-dev
    redis-server
    uuid-dev
    libmd-dev
    # The server's metrics endpoint.
    libmicrohttpd-dev
    # promtool and prometheus, which the monitoring tests run.
    prometheus
)

# Oldest Go that builds tests/interop, because github.com/hibiken/asynq
# v0.26.0 declares "go 1.24.0" in its go.mod.
GO_MIN_VERSION=1.24
# Debian package tried when no go of at least GO_MIN_VERSION is found.
GO_PACKAGE=golang-go
# bookworm's golang-go is Go 1.19, which is too old. Then set-up installs
# this Go release into /usr/local/go from the Go module proxy, where every
# release is published as the module golang.org/toolchain.
GO_TOOLCHAIN_RELEASE=1.24.13
GO_INSTALL_DIR=/usr/local/go

LOG_PREFIX=setup
# shellcheck source=scripts/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

usage()
{
    cat <<EOF
Usage: $0 [--dry-run]

Installs the missing Debian packages (apt-get), a Go toolchain when no
go >= $GO_MIN_VERSION is found, and the Go modules of tests/interop.

  --dry-run   print the apt-get and go commands without running them
  -h, --help  show this help
EOF
}

DRY_RUN=0
ROOT_PREFIX=()

# Runs a command, or only prints it under --dry-run.
run()
{
    if ((DRY_RUN)); then
        log "would run: $*"
        return 0
    fi
    log "running: $*"
    "$@"
}

# Chooses how to run apt-get: directly as root, else through sudo.
require_root()
{
    if (($(id -u) == 0)); then
        ROOT_PREFIX=()
    elif command -v sudo >/dev/null 2>&1; then
        ROOT_PREFIX=(sudo)
    elif ((DRY_RUN)); then
        log "not root and sudo is missing, so a real run would fail"
        ROOT_PREFIX=()
    else
        die "installing packages needs root, but this is uid $(id -u) and" \
            "sudo is missing; rerun ./scripts/setup.sh as root"
    fi
}

package_installed()
{
    local status

    status=$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null) || return 1
    [[ $status == "install ok installed" ]]
}

# Prints the MAJOR.MINOR upstream version of the apt candidate for package $1,
# e.g. "1.19" for "2:1.19~1". Prints nothing when apt has no candidate.
candidate_version()
{
    local candidate

    candidate=$(apt-cache policy "$1" 2>/dev/null |
        sed -n 's/^ *Candidate: *//p')
    candidate=${candidate#*:}
    if [[ $candidate =~ ^([0-9]+)\.([0-9]+) ]]; then
        printf '%s.%s\n' "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}"
    fi
}

# Sets GO_BIN and GO_FOUND_VERSION to the go that set-up would use.
# Returns 0 when it is at least GO_MIN_VERSION.
check_go()
{
    GO_BIN=$(find_go)
    GO_FOUND_VERSION=
    if [[ -z $GO_BIN ]]; then
        return 1
    fi
    GO_FOUND_VERSION=$(go_version_of "$GO_BIN")
    [[ -n $GO_FOUND_VERSION ]] &&
        version_at_least "$GO_FOUND_VERSION" "$GO_MIN_VERSION"
}

go_install_hint()
{
    local url=https://go.dev/dl/

    printf 'install Go %s or later from %s into /usr/local/go, %s' \
        "$GO_MIN_VERSION" "$url" "then rerun ./scripts/setup.sh"
}

install_packages()
{
    local missing=("$@")
    local still_missing=()
    local package

    if ! run "${ROOT_PREFIX[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y --no-install-recommends "${missing[@]}"; then
        die "apt-get install failed for: ${missing[*]}; read the apt" \
            "output above, fix the cause, then rerun ./scripts/setup.sh"
    fi
    if ((DRY_RUN)); then
        return 0
    fi
    for package in "${missing[@]}"; do
        if ! package_installed "$package"; then
            still_missing+=("$package")
        fi
    done
    if ((${#still_missing[@]})); then
        die "packages still not installed after apt-get install:" \
            "${still_missing[*]}; install them by hand and rerun"
    fi
}

download_go_modules()
{
    local root=$1

    if [[ ! -f $root/tests/interop/go.mod ]]; then
        log "tests/interop/go.mod not found, no Go modules to download"
        return 0
    fi
    log "downloading the Go modules of tests/interop"
    # GOTOOLCHAIN=local stops go from fetching a newer toolchain on its own,
    # so a too old go fails here instead of at test time.
    if ! (cd "$root/tests/interop" &&
        run env GOTOOLCHAIN=local "$GO_BIN" mod download); then
        die "go mod download failed in tests/interop; check access to the" \
            "Go module proxy ($("$GO_BIN" env GOPROXY 2>/dev/null || true))" \
            "and rerun ./scripts/setup.sh"
    fi
}

main()
{
    local root missing=() package go_error= go_candidate

    while (($#)); do
        case $1 in
        --dry-run) DRY_RUN=1 ;;
        -h | --help)
            usage
            exit 0
            ;;
        *)
            usage >&2
            die "unknown option: $1"
            ;;
        esac
        shift
    done
    root=$(repo_root)

    command -v dpkg-query >/dev/null 2>&1 ||
        die "dpkg-query not found: this script supports Debian 12 only;" \
            "install the packages listed in PACKAGES in $0 by hand"

    log "checking ${#PACKAGES[@]} Debian packages"
    for package in "${PACKAGES[@]}"; do
        if ! package_installed "$package"; then
            missing+=("$package")
        fi
    done
    if ((${#missing[@]})); then
        log "missing packages: ${missing[*]}"
    else
        log "all ${#PACKAGES[@]} Debian packages are installed"
    fi

    log "checking for go >= $GO_MIN_VERSION"
    if check_go; then
        log "found go $GO_FOUND_VERSION at $GO_BIN"
    else
        log "no go >= $GO_MIN_VERSION found (found: ${GO_BIN:-none}" \
            "${GO_FOUND_VERSION:+version $GO_FOUND_VERSION})"
    fi

    # The apt lists are refreshed once, and only when something is missing.
    if ((${#missing[@]})) || ! check_go; then
        require_root
        run "${ROOT_PREFIX[@]}" apt-get update ||
            die "apt-get update failed; check the apt sources and the" \
                "network, then rerun ./scripts/setup.sh"
    fi

    # Installing golang-go helps only where its version is new enough, which
    # bookworm's is not; then the toolchain comes from the Go module proxy.
    local go_from_proxy=0
    if ! check_go; then
        go_candidate=$(candidate_version "$GO_PACKAGE")
        if [[ -n $go_candidate ]] &&
            version_at_least "$go_candidate" "$GO_MIN_VERSION"; then
            missing+=("$GO_PACKAGE")
        elif [[ ! -e $GO_INSTALL_DIR ]]; then
            go_from_proxy=1
        else
            go_error="apt offers $GO_PACKAGE ${go_candidate:-(none)}, older"
            go_error+=" than the required Go $GO_MIN_VERSION, and"
            go_error+=" $GO_INSTALL_DIR already exists;"
            go_error+=" $(go_install_hint)"
        fi
    fi

    if ((${#missing[@]})); then
        install_packages "${missing[@]}"
    fi
    if ((go_from_proxy)); then
        run "${ROOT_PREFIX[@]}" python3 "$root/scripts/install_go_toolchain.py" \
            "$GO_TOOLCHAIN_RELEASE" "$(dpkg --print-architecture)" \
            "$GO_INSTALL_DIR" ||
            die "installing Go $GO_TOOLCHAIN_RELEASE from the Go module" \
                "proxy failed; $(go_install_hint)"
        add_go_to_path
    fi

    if [[ -n $go_error ]]; then
        die "$go_error"
    fi
    if ! check_go && ((DRY_RUN == 0)); then
        die "go ${GO_FOUND_VERSION:-(none)} at ${GO_BIN:-(none)} is older" \
            "than the required $GO_MIN_VERSION; $(go_install_hint)"
    fi
    if [[ -n $GO_BIN ]]; then
        download_go_modules "$root"
    fi

    log "done"
}

main "$@"
