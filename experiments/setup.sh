#!/usr/bin/env bash
# Set up this project on a Debian 12 machine, installing only what is missing, then run the
# main command or the fast tests (README "Quick start"):
#
#   bash experiments/setup.sh run     # set up, then: python -m experiments run s1-mlp [ARGS]
#   bash experiments/setup.sh test    # set up, then: python -m pytest [ARGS]
#   bash experiments/setup.sh         # set up only
#   bash experiments/setup.sh --check # say what is missing, install nothing (exit 1 if any)
#
# It needs bash and root or sudo (for apt-get). Everything is checked before it is installed:
# the Debian packages (dpkg), the virtual environment .venv, the pinned torch and torchvision,
# and the project with its extras (installed from this folder, every requirement of
# pyproject.toml present at its version floor). A second run installs nothing.
#
# Options (before `run`/`test`; anything after them goes to the command):
#   --full    also the optional Debian packages and extras of the whole test suite (CI)
#   --system  install into $PYTHON itself instead of .venv (CI; not Debian's own python3,
#             which refuses pip installs)
# Environment: PYTHON (default python3), EXTRAS (the project's pip extras, default dev).
set -euo pipefail

# -- what gets installed: edit here ---------------------------------------------------------
APT_PACKAGES="dataset-fashion-mnist"                     # the real Fashion-MNIST, offline
APT_OPTIONAL="postgresql chromium chromium-driver"       # --full: PostgreSQL and browser tests
TORCH_PINS="torch==2.14.1 torchvision==0.29.1"
DEFAULT_EXTRAS="dev"
FULL_EXTRAS="dev,postgres,auth,dashboard"                               # --full (what CI installs)
# --------------------------------------------------------------------------------------------

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
full=0 system=0 check=0 action=""
while [ $# -gt 0 ]; do
    case "$1" in
        --full) full=1 ;;
        --system) system=1 ;;
        --check) check=1 ;;
        run | test) action="$1"; shift; break ;;
        -h | --help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "setup: unknown argument '$1' (see bash experiments/setup.sh --help)" >&2; exit 2 ;;
    esac
    shift
done
PYTHON="${PYTHON:-python3}"
if [ "$full" = 1 ]; then
    EXTRAS="${EXTRAS:-$FULL_EXTRAS}"
    APT_PACKAGES="$APT_PACKAGES $APT_OPTIONAL"
else
    EXTRAS="${EXTRAS:-$DEFAULT_EXTRAS}"
fi
missing=0
say() { echo "setup: $*"; }
todo() { # what is missing: installed now, or only reported with --check
    missing=1
    if [ "$check" = 1 ]; then say "to do: $1"; return 1; fi
    say "$1"
}

# -- Debian packages ------------------------------------------------------------------------
if command -v dpkg-query >/dev/null; then
    wanted="$APT_PACKAGES"
    command -v "$PYTHON" >/dev/null || wanted="python3 $wanted"
    if [ "$system" = 0 ] && ! "$PYTHON" -c "import ensurepip, venv" 2>/dev/null; then
        wanted="python3-venv $wanted"   # Debian's python3 has no venv/ensurepip without it
    fi
    absent=""
    for pkg in $wanted; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
            || absent="$absent $pkg"
    done
    if [ -n "$absent" ] && todo "installing Debian packages:$absent"; then
        SUDO=""
        if [ "$(id -u)" != 0 ]; then
            command -v sudo >/dev/null || { say "not root and no sudo: run as root" >&2; exit 1; }
            SUDO="sudo"
        fi
        $SUDO apt-get update -qq
        $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $absent >/dev/null
    fi
else
    say "no dpkg (not Debian): install Python >= 3.11 with venv yourself; Fashion-MNIST is"
    say "downloaded by torchvision on the first run (README 'Setup, step by step')"
fi

# -- Python: .venv, or $PYTHON itself with --system -----------------------------------------
if ! "$PYTHON" -c "import sys; sys.exit(sys.version_info < (3, 11))" 2>/dev/null; then
    [ "$check" = 1 ] && ! command -v "$PYTHON" >/dev/null && { say "$PYTHON is missing"; exit 1; }
    say "$PYTHON is not Python >= 3.11: set PYTHON=/path/to/python3.11" >&2
    exit 1
fi
if [ "$system" = 1 ]; then
    PY="$(command -v "$PYTHON")"
else
    PY="$ROOT/.venv/bin/python"
    if [ ! -x "$PY" ] && todo "creating the virtual environment .venv ($PYTHON -m venv .venv)"; then
        "$PYTHON" -m venv .venv
    fi
fi

# -- torch, pinned, before the project (pip would otherwise pick its own) ---------------------
have_pins() {
    "$PY" -P - $TORCH_PINS <<'EOF' 2>/dev/null
import importlib.metadata as md, sys
for pin in sys.argv[1:]:
    name, version = pin.split("==")
    try:
        installed = md.version(name).split("+")[0]  # 2.14.1+cpu is 2.14.1
    except md.PackageNotFoundError:
        sys.exit(1)
    if installed != version:
        sys.exit(1)
EOF
}
if [ ! -x "$PY" ] || ! have_pins; then
    if todo "installing $TORCH_PINS (about 2 min and 6 GB here: a CUDA build)"; then
        "$PY" -m pip install -q $TORCH_PINS
    fi
fi

# -- the project, from this folder, with its extras -------------------------------------------
# Prints one line per thing missing: the project not installed (editable) from this folder,
# or a requirement of pyproject.toml (dependencies + the extras) absent or below its floor.
project_gaps() {
    "$PY" -P - "$ROOT" "$EXTRAS" <<'EOF'
import importlib.metadata as md, json, re, sys, tomllib
from pathlib import Path

root, extras = Path(sys.argv[1]), [e for e in sys.argv[2].split(",") if e]
project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
try:
    url = json.loads(md.distribution(project["name"]).read_text("direct_url.json") or "{}")
    if url.get("url") != root.as_uri() or not url.get("dir_info", {}).get("editable"):
        print(f"{project['name']} is installed, but not editable from {root}")
except md.PackageNotFoundError:
    print(f"{project['name']} is not installed")
reqs = list(project["dependencies"])
for extra in extras:
    if extra not in project.get("optional-dependencies", {}):
        sys.exit(f"unknown extra {extra!r} (pyproject.toml)")
    reqs += project["optional-dependencies"][extra]

def release(version):
    return tuple(int(p) for p in re.match(r"\d+(?:\.\d+)*", version).group().split("."))

for req in reqs:
    if ";" in req:  # an environment marker: left to pip
        continue
    m = re.match(r"\s*([A-Za-z0-9._-]+)\s*(?:\[([^\]]*)\])?\s*(?:>=\s*([\w.]+))?", req)
    name, dep_extras, floor = m.groups()
    try:
        have = md.version(name)
    except md.PackageNotFoundError:
        print(f"{req}: not installed")
        continue
    if floor and release(have) < release(floor):
        print(f"{req}: {have} installed")
    for extra in filter(None, (dep_extras or "").replace(" ", "").split(",")):
        for sub in md.requires(name) or []:  # what the dependency's own extra adds
            if re.search(rf"extra\s*==\s*['\"]{re.escape(extra)}['\"]", sub):
                sub_name = re.match(r"[A-Za-z0-9._-]+", sub).group()
                try:
                    md.version(sub_name)
                except md.PackageNotFoundError:
                    print(f"{req}: {sub_name} (for [{extra}]) not installed")
EOF
}
if [ -x "$PY" ]; then
    gaps="$(project_gaps)"
else
    gaps="the Python environment does not exist yet"
fi
if [ -n "$gaps" ]; then
    count="$(echo "$gaps" | wc -l)"
    shown="$(echo "$gaps" | head -n 4 | sed 's/^/         /')"
    [ "$count" -gt 4 ] && shown="$shown
         ... and $((count - 4)) more"
    if todo "installing the project: pip install -e \".[$EXTRAS]\", because:"; then
        echo "$shown"
        "$PY" -m pip install -q -e ".[$EXTRAS]"
        project_gaps | sed 's/^/setup: still missing: /' | grep . >&2 && exit 1
    else
        echo "$shown"
    fi
fi

if [ "$check" = 1 ]; then
    [ "$missing" = 0 ] && say "everything is installed ($PY, extras $EXTRAS)"
    exit "$missing"
fi
[ "$missing" = 0 ] && say "everything was installed already ($PY, extras $EXTRAS)"
case "$action" in
    run) say "running: python -m experiments run s1-mlp $*"
         exec "$PY" -m experiments run s1-mlp "$@" ;;
    test) say "running: python -m pytest $*"
          exec "$PY" -m pytest "$@" ;;
    *) say "ready: $PY (activate with . .venv/bin/activate, unless --system)" ;;
esac
