# Copyright (c) doctorq.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Give the client role a collection artifact to install on hosts (runs on the controller).

    collection_artifact.py --out DIR (--artifact TARBALL | --root COLLECTION_DIR)

- an artifact given: used as is;
- a collection directory (a source checkout with galaxy.yml, or an installed
  collection with MANIFEST.json): what the scheduled job runs (plugins/, cli/ and
  meta/) is staged in DIR and built with ``ansible-galaxy collection build``.
  Roles, playbooks, tests and docs stay out: hosts do not need them, and a
  change there must not reinstall the collection on every host.

Prints JSON: the artifact's path, its version, and the SHA-256 of its
FILES.json (which holds the SHA-256 of every file). The role compares these
with the MANIFEST.json of the copy installed on a host and reinstalls only on
a difference (artifacts are not byte-reproducible: tar and gzip carry times).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import tarfile

RUNTIME_DIRS = ("plugins", "cli", "meta")
README = "# doctorq.backup (runtime copy)\n\nThe modules and engine of doctorq.backup, installed for the scheduled job.\n"


def _manifest(artifact: str) -> dict:
    with tarfile.open(artifact, "r:gz") as tar:
        member = tar.extractfile("MANIFEST.json")
        if member is None:
            raise SystemExit(f"{artifact} has no MANIFEST.json: not a collection artifact")
        return json.load(member)


def _galaxy_yml(root: str) -> str:
    """galaxy.yml of a source checkout, or one rebuilt from an installed collection's MANIFEST.json."""
    source = os.path.join(root, "galaxy.yml")
    if os.path.isfile(source):
        with open(source, encoding="utf-8") as handle:
            return handle.read()
    manifest = os.path.join(root, "MANIFEST.json")
    if not os.path.isfile(manifest):
        raise SystemExit(f"{root} is neither a collection source tree (galaxy.yml) nor an installed collection "
                         "(MANIFEST.json): set client_collection_artifact")
    with open(manifest, encoding="utf-8") as handle:
        info = json.load(handle)["collection_info"]
    keep = ("namespace", "name", "version", "authors", "description", "license", "tags", "dependencies", "repository")
    # JSON is valid YAML: ansible-galaxy reads it as galaxy.yml.
    return json.dumps({k: info[k] for k in keep if info.get(k) not in (None, [], {})} | {"readme": "README.md"})


def _stage(root: str, stage: str) -> None:
    os.makedirs(stage)
    with open(os.path.join(stage, "galaxy.yml"), "w", encoding="utf-8") as handle:
        handle.write(_galaxy_yml(root))
    with open(os.path.join(stage, "README.md"), "w", encoding="utf-8") as handle:
        handle.write(README)
    for name in RUNTIME_DIRS:
        if os.path.isdir(os.path.join(root, name)):
            shutil.copytree(os.path.join(root, name), os.path.join(stage, name),
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo"))


def _build(stage: str, out: str) -> str:
    cmd = [sys.executable, "-m", "ansible.cli.galaxy", "collection", "build", "--force", "--output-path", out, stage]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"ansible-galaxy collection build failed: {proc.stderr.strip() or proc.stdout.strip()}")
    built = glob.glob(os.path.join(out, "*.tar.gz"))
    if len(built) != 1:
        raise SystemExit(f"ansible-galaxy collection build left {len(built)} artifacts in {out}")
    return built[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--out", required=True, help="an empty work directory")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--artifact", help="an existing collection artifact")
    source.add_argument("--root", help="the collection's directory")
    args = parser.parse_args()

    if args.artifact:
        artifact = os.path.abspath(args.artifact)
        if not os.path.isfile(artifact):
            raise SystemExit(f"collection artifact {artifact} not found on the controller")
    else:
        stage = os.path.join(args.out, "stage")
        _stage(args.root, stage)
        artifact = _build(stage, args.out)
    manifest = _manifest(artifact)
    print(json.dumps({
        "artifact": artifact,
        "version": manifest["collection_info"]["version"],
        "files_sha256": manifest["file_manifest_file"]["chksum_sha256"],
    }))


if __name__ == "__main__":
    main()
