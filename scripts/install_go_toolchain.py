#!/usr/bin/env python3
"""Installs a Go toolchain from the Go module proxy.

The Go project publishes every release as the module golang.org/toolchain,
version v0.0.1-go<release>.<os>-<arch>, which is what `go` itself fetches
when GOTOOLCHAIN asks for a newer release. set-up uses it on machines whose
Debian golang-go is too old for the interop tests, because the module proxy
is reachable wherever Go modules are.

Usage: install_go_toolchain.py RELEASE ARCH DEST
  RELEASE  a Go release such as 1.24.13
  ARCH     a Go architecture such as amd64 or arm64
  DEST     directory to create; it receives bin/go and the rest of GOROOT

The proxy is $GOPROXY's first http(s) entry, else https://proxy.golang.org.
The module proxy protocol checks nothing for us, so the archive's SHA-256
is printed for the log.
"""
import hashlib
import os
import shutil
import stat
import sys
import tempfile
import urllib.request
import zipfile


def proxy_base():
    for entry in os.environ.get("GOPROXY", "").replace("|", ",").split(","):
        if entry.startswith(("https://", "http://")):
            return entry.rstrip("/")
    return "https://proxy.golang.org"


def main(argv):
    if len(argv) != 4:
        sys.stderr.write(__doc__)
        return 2
    release, arch, dest = argv[1], argv[2], argv[3]
    if os.path.exists(dest):
        sys.stderr.write(f"install_go_toolchain: {dest} already exists; "
                         f"remove it or pick another directory\n")
        return 1
    version = f"v0.0.1-go{release}.linux-{arch}"
    url = f"{proxy_base()}/golang.org/toolchain/@v/{version}.zip"
    prefix = f"golang.org/toolchain@{version}/"
    print(f"install_go_toolchain: downloading {url}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        archive = os.path.join(tmp, "toolchain.zip")
        try:
            with urllib.request.urlopen(url, timeout=300) as resp, \
                    open(archive, "wb") as out:
                shutil.copyfileobj(resp, out)
        except OSError as exc:
            sys.stderr.write(f"install_go_toolchain: download of {url} "
                             f"failed: {exc}\n")
            return 1
        with open(archive, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
        print(f"install_go_toolchain: sha256 {digest}", flush=True)
        staging = os.path.join(tmp, "go")
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                if not info.filename.startswith(prefix):
                    continue
                rel = info.filename[len(prefix):]
                if not rel or rel.startswith("/") or ".." in rel.split("/"):
                    continue
                target = os.path.join(staging, rel)
                if info.is_dir():
                    os.makedirs(target, exist_ok=True)
                    continue
                os.makedirs(os.path.dirname(target), exist_ok=True)
                with zf.open(info) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst)
        # Module zips carry no file modes, so the programs get theirs back
        # the way the go command does it for toolchain modules.
        for sub in ("bin", "pkg/tool"):
            for root, _, files in os.walk(os.path.join(staging, sub)):
                for name in files:
                    path = os.path.join(root, name)
                    os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR |
                             stat.S_IXGRP | stat.S_IXOTH)
        if not os.path.exists(os.path.join(staging, "bin", "go")):
            sys.stderr.write(f"install_go_toolchain: {url} contains no "
                             f"bin/go\n")
            return 1
        os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
        shutil.move(staging, dest)
    print(f"install_go_toolchain: installed Go {release} in {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
