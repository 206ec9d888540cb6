#!/usr/bin/env bash
# Installs what the build needs, idempotently:
#  - Debian packages (only those missing),
#  - a Python virtual environment outside the clone, keyed by the hash of requirements.txt,
#    so every clone on this machine reuses it; linked into the clone as .venv.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_pkgs=(cmake ninja-build g++ make libgtest-dev libopenblas-pthread-dev libtcmalloc-minimal4 libgloo-dev ccache zlib1g-dev python3-venv
          dataset-fashion-mnist
          g++-aarch64-linux-gnu qemu-user-static googletest)  # aarch64 kernel tests: cross build, qemu-user
missing=()
for p in "${apt_pkgs[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "[setup] installing Debian packages: ${missing[*]}"
  if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi

python=${LONGATTN_PYTHON:-python3}
key=$( (cat requirements.txt; "$python" -c 'import sys; print(sys.version)') | sha256sum | cut -c1-12)
root=${LONGATTN_ENV_ROOT:-$HOME/.cache/longattn}
venv="$root/venv-$key"
if [ ! -x "$venv/bin/python" ] || [ ! -f "$venv/.complete" ]; then
  echo "[setup] creating Python environment $venv (first time only; torch is a large download)"
  mkdir -p "$root"
  tmp="$venv.tmp.$$"
  rm -rf "$tmp"
  "$python" -m venv "$tmp"
  "$tmp/bin/python" -m pip install -q --upgrade pip
  "$tmp/bin/python" -m pip install -q -r requirements.txt
  touch "$tmp/.complete"
  rm -rf "$venv"
  mv "$tmp" "$venv"
  # venv scripts carry absolute paths; fix them after the move
  grep -rlI "$tmp" "$venv/bin" | xargs -r sed -i "s#$tmp#$venv#g"
fi
# Tools of requirements-tools.txt go into the same environment, re-installed when that file
# changes (a stamp holds its hash): a new test tool costs a small download, not a new torch.
tools_key=$(sha256sum requirements-tools.txt | cut -c1-12)
if [ "$(cat "$venv/.tools" 2>/dev/null)" != "$tools_key" ]; then
  echo "[setup] installing Python tools (requirements-tools.txt)"
  "$venv/bin/python" -m pip install -q -r requirements-tools.txt
  echo "$tools_key" > "$venv/.tools"
fi
# The clone's own .venv is a thin environment (no packages of its own) that sees the shared
# one's packages and this clone's python/ folder, so `import longattn` works from any clone.
site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
pth_want="import site; site.addsitedir('$site')
$PWD/python"
if [ -L .venv ] || [ ! -x .venv/bin/python ]; then
  rm -rf .venv
  "$python" -m venv --without-pip .venv
fi
pth=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/longattn.pth
if [ "$(cat "$pth" 2>/dev/null)" != "$pth_want" ]; then
  printf '%s\n' "$pth_want" > "$pth"
fi
