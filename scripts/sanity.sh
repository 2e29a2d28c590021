#!/usr/bin/env bash
# ansible-test sanity without Docker and without the internet.
#
# ansible-test only works from a tree laid out as ansible_collections/NS/NAME,
# and resolves symlinks to the physical path, so we sync the files git knows
# (tracked + untracked-not-ignored) into .build/sanity/ansible_collections/doctorq/backup
# and run there. Results land in that tree's tests/output/.
#
# Each sanity venv is bootstrapped with a get-pip script that ansible-test
# downloads from a host these machines cannot reach; it looks in
# ~/.ansible/test/cache/get_pip_<pip version>.py first. We put a stand-in there
# that uses the interpreter's own ensurepip, then installs the exact pip
# version ansible-test asked for from PyPI.
#
# Usage: scripts/sanity.sh [extra ansible-test sanity args, e.g. --test pep8]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
venv="$root/.venv"
py_version=${SANITY_PYTHON:-3.11}
export PATH="$venv/bin:$PATH"

# 1. the get-pip stand-in, named after the pip version this ansible-test wants
pip_version=$("$venv/bin/python" - "$py_version" <<'PY'
import sys
from types import SimpleNamespace
from ansible_test._internal.python_requirements import get_venv_packages
print(get_venv_packages(SimpleNamespace(version=sys.argv[1]))["pip"])
PY
)
cache="$HOME/.ansible/test/cache"
standin="$cache/get_pip_${pip_version//./_}.py"
mkdir -p "$cache"
cat > "$standin.new" <<'PY'
"""Stand-in for get-pip.py (written by doctorq.backup scripts/sanity.sh).

ansible-test runs this inside a fresh virtualenv with pip's arguments, e.g.
`--disable-pip-version-check pip==24.2 --no-setuptools --no-wheel`.
The real script embeds a pip wheel; we bootstrap pip with ensurepip instead
and then install the requested versions from the package index.
"""
import subprocess
import sys

args = sys.argv[1:]
flags = {"--no-setuptools", "--no-wheel"}
subprocess.check_call([sys.executable, "-m", "ensurepip", "--upgrade", "--default-pip"], stdout=subprocess.DEVNULL)
subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", "--upgrade"] + [a for a in args if a not in flags])
if "--no-setuptools" in args:
    subprocess.call([sys.executable, "-m", "pip", "uninstall", "-q", "-y", "setuptools"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
PY
if ! cmp -s "$standin.new" "$standin"; then
  mv "$standin.new" "$standin"
  # venvs bootstrapped with an older stand-in may be broken: start afresh
  rm -rf "$HOME/.ansible/test/venv"
else
  rm -f "$standin.new"
fi

# 2. the collection tree ansible-test wants. It gets a git repository of its
# own: ansible-test walks up to the nearest .git to list files, and the
# checkout's .git would hide everything under the ignored .build/.
tree="$root/.build/sanity/ansible_collections/doctorq/backup"
mkdir -p "$tree"
[ -d "$tree/.git" ] || git -C "$tree" init -q
# shellcheck disable=SC2016  # $f expands in the inner sh, not here
git -C "$root" ls-files -z --cached --others --exclude-standard \
  | (cd "$root" && xargs -0 -r sh -c 'for f; do [ -e "$f" ] && printf "%s\0" "$f"; done' _) \
  > "$root/.build/sanity/files.lst"
rsync -a --from0 --files-from="$root/.build/sanity/files.lst" "$root/" "$tree/"
# rsync --files-from does not delete files that vanished from the list; prune them
(cd "$tree" && find . \( -path ./tests/output -o -path ./.git \) -prune -o \( -type f -o -type l \) -print0) \
  | while IFS= read -r -d '' f; do
      [ -e "$root/${f#./}" ] || rm -f "$tree/${f#./}"
    done

# 3. run
cd "$tree"
exec "$venv/bin/ansible-test" sanity --venv --python "$py_version" --color no "$@"
