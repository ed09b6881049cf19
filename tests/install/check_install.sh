#!/usr/bin/env bash
# Installs the build into a temporary staging directory, then compiles and
# runs a small program against it through pkg-config, as a user of the
# installed library would: `pkg-config --cflags --libs casynq`.
set -euo pipefail

build_dir=$1
# The build's sanitizers ("none" or a list such as "address,undefined"):
# a program linked with a sanitized library needs the same flags.
sanitize=${2:-none}
sanitize_flags=()
if [[ $sanitize != none ]]; then
  sanitize_flags=("-fsanitize=$sanitize")
fi
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT

meson install -C "$build_dir" --destdir "$stage" --no-rebuild --quiet

pc_file=$(find "$stage" -name casynq.pc -print -quit)
if [[ -z $pc_file ]]; then
  echo "check_install: casynq.pc was not installed under $stage" >&2
  exit 1
fi
header=$(find "$stage" -path '*/include/casynq.h' -print -quit)
version_header=$(find "$stage" -path '*/include/casynq/version.h' -print -quit)
if [[ -z $header || -z $version_header ]]; then
  echo "check_install: casynq.h or casynq/version.h is missing" >&2
  exit 1
fi
for lib in libcasynq.so libcasynq.a; do
  if [[ -z $(find "$stage" -name "$lib" -print -quit) ]]; then
    echo "check_install: $lib was not installed" >&2
    exit 1
  fi
done

export PKG_CONFIG_PATH
PKG_CONFIG_PATH=$(dirname "$pc_file")
export PKG_CONFIG_SYSROOT_DIR=$stage
cat > "$stage/probe.c" <<'PROBE'
#include <stdio.h>
#include <string.h>

#include <casynq.h>

int main(void)
{
    struct casynq_task *task = NULL;

    if (casynq_task_create("probe:install", "x", 1, &task) != 0) {
        return 1;
    }
    printf("casynq %s %s\n", casynq_version(), casynq_task_type(task));
    casynq_task_destroy(task);
    return strcmp(casynq_strerror(CASYNQ_EINVAL), "invalid argument") != 0;
}
PROBE
# shellcheck disable=SC2046
cc -std=c11 -Wall -Werror "${sanitize_flags[@]}" -o "$stage/probe" \
  "$stage/probe.c" \
  $(pkg-config --cflags --libs casynq)
libdir=$(dirname "$(find "$stage" -name libcasynq.so -print -quit)")
LD_LIBRARY_PATH=$libdir "$stage/probe"
