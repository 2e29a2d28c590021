# Copyright (c) doctorq.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pack a wheelhouse directory into one reproducible tar (runs on the controller).

    wheelhouse_bundle.py WHEELHOUSE_DIR OUT.tar

One file to copy instead of one transfer per wheel; the same wheels always
give the same bytes (sorted names, fixed times and owners), so the role's
copy of it is idempotent. Wheels are zip files already: no compression.
"""

from __future__ import annotations

import os
import sys
import tarfile


def main() -> None:
    source, out = sys.argv[1:]
    wheels = sorted(n for n in os.listdir(source) if n.endswith(".whl"))
    if not wheels:
        raise SystemExit(f"no wheel (*.whl) in {source}: make it with `pip download -d {source} <packages>`")
    with tarfile.open(out, "w", format=tarfile.GNU_FORMAT) as tar:
        for name in wheels:
            info = tar.gettarinfo(os.path.join(source, name), arcname=name)
            info.mtime, info.mode = 0, 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            with open(os.path.join(source, name), "rb") as handle:
                tar.addfile(info, handle)
    print(out)


if __name__ == "__main__":
    main()
