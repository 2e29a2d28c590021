"""Optional libraries (libs.py): the module or None, and one way to say what to install (no server needed)."""
from __future__ import annotations

import pytest

from ansible_collections.doctorq.backup.plugins.module_utils import pg, s3
from ansible_collections.doctorq.backup.plugins.module_utils.errors import PgError, StorageError
from ansible_collections.doctorq.backup.plugins.module_utils.libs import optional


def test_a_missing_library_is_none_and_its_require_names_what_to_install():
    module, library = optional("doctorq_no_such_library", "doctorq-no-such-package", "sub")
    assert module is None and not library.present and isinstance(library.error, ImportError)
    with pytest.raises(StorageError, match=r"^doctorq_no_such_library is required for S3 but cannot be imported "
                                           r"\(.*\): pip install doctorq-no-such-package on the host\.$"):
        library.require(StorageError, " for S3")


def test_a_present_library_and_its_submodules_are_imported():
    module, library = optional("json", "json", "decoder")
    assert module is not None and module.decoder.JSONDecodeError and library.present
    library.require(PgError)  # nothing to say
    # the engine's own: the test environment has both
    assert pg.PSYCOPG2.present and pg.psycopg2.extensions is not None
    assert s3.BOTO3.present and s3.botocore.exceptions.ClientError and s3.BOTO3.pip == "boto3"
