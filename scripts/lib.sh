# Shell helpers shared by the scripts in this directory. Source it from bash
# after setting LOG_PREFIX to the script's name.

# Prints a progress or error line on stderr, so that stdout carries only the
# data a script produces (a port number, a summary line).
log()
{
    printf '%s: %s\n' "${LOG_PREFIX:-casynq}" "$*" >&2
}

die()
{
    log "$*"
    exit 1
}

# Prints the absolute path of the repository root, the parent of scripts/.
repo_root()
{
    (cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
}

# Prints the path of the go binary: the one on PATH, else the usual tarball
# install at /usr/local/go/bin/go. Prints nothing when neither exists.
find_go()
{
    if command -v go >/dev/null 2>&1; then
        command -v go
    elif [[ -x /usr/local/go/bin/go ]]; then
        printf '%s\n' /usr/local/go/bin/go
    fi
}

# Prints the MAJOR.MINOR version of the go binary $1, e.g. "1.26" for
# "go version go1.26.8 linux/amd64". Prints nothing when the output has no
# version.
go_version_of()
{
    local output

    output=$("$1" version 2>/dev/null) || return 0
    if [[ $output =~ go([0-9]+)\.([0-9]+) ]]; then
        printf '%s.%s\n' "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}"
    fi
}

# Succeeds when MAJOR.MINOR version $1 is at least MAJOR.MINOR version $2.
version_at_least()
{
    local have_major=${1%%.*} have_minor=${1#*.}
    local need_major=${2%%.*} need_minor=${2#*.}

    if ((have_major != need_major)); then
        ((have_major > need_major))
    else
        ((have_minor >= need_minor))
    fi
}

# Puts /usr/local/go/bin on PATH when no go is on PATH yet, so that meson and
# the interop tests find the same go that set-up checked.
add_go_to_path()
{
    if ! command -v go >/dev/null 2>&1 && [[ -x /usr/local/go/bin/go ]]; then
        PATH="/usr/local/go/bin:$PATH"
        export PATH
    fi
}
