# Copyright (c) doctorq.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Docs of every backup job's policy options; edit together with module_utils/policy.py:policy_argument_spec."""

from __future__ import annotations


class ModuleDocFragment:  # pylint: disable=too-few-public-methods
    DOCUMENTATION = r"""
options:
  compression:
    description:
      - Compression of the backup stream (a database's dump, a file set's tar). V(zstd) is fastest for its ratio;
        V(gzip) uses C(pigz) when present.
      - A database dump is in C(pg_dump)'s custom format without its own compression, so the compressor runs on all
        cores.
      - Not given, V(zstd); a directory backup (C(pg_backup) with C(jobs) other than 1), which C(pg_dump) compresses itself,
        then uses V(zstd) where C(pg_dump) can (client tools 16 or newer) and V(gzip) otherwise. The manifest records
        what was used.
    type: str
    choices: [zstd, gzip, none]
  compression_level:
    description: Compression level (zstd 1-19, default 3; gzip 1-9, default 6).
    type: int
  compression_threads:
    description: Compressor threads; V(0) means one per core.
    type: int
    default: 0
  weekly:
    description:
      - When to keep this backup as a weekly copy too. V(auto) does it on O(weekly_day) (local time of the host).
    type: str
    choices: [auto, always, never]
    default: auto
  weekly_day:
    description: Day of the weekly copy.
    type: str
    choices: [monday, tuesday, wednesday, thursday, friday, saturday, sunday]
    default: sunday
  retention_daily_days:
    description: Days to keep daily backups; V(0) keeps them forever. The newest O(retention_min_count) are always kept.
    type: int
    default: 30
  retention_weekly_days:
    description: Days to keep weekly copies; V(0) keeps them forever. The newest O(retention_min_count) are always kept.
    type: int
    default: 365
  retention_min_count:
    description:
      - Complete backups of each kind (daily, weekly) kept in each place (disk, S3) whatever their dates, like Barman's
        C(minimum_redundancy); V(1) keeps only the newest. A clock far ahead, or a schedule that stopped, never thins
        the backups below this.
      - Whatever this is, retention deletes nothing (and warns) while a backup is dated after the host's clock (the
        clock went back, or that backup was made while the clock was ahead).
    type: int
    default: 3
  prune:
    description: Apply retention after a successful backup.
    type: bool
    default: true
  log_dir:
    description:
      - Directory of the run logs (C(backup_<name>_<timestamp>.log), C(backup_<name>_files_<timestamp>.log) for a file
        set); defaults to O(backup_dir).
      - With O(prune), logs older than the longest retention window (O(retention_weekly_days)) are removed with the backups.
    type: path
"""
