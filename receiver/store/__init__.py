"""The receiver's storage: the only package that touches SQL or the object store.

``objects`` is the content-addressed, immutable evidence store on disk; ``schema`` opens the
metadata database (SQLite, WAL, ``synchronous=FULL``) and creates its tables. Each further module
here owns the SQL of one subject (records and ingest, cases, custody, access, compliance), so a
PostgreSQL backend can follow by replacing this package alone. Failure posture: see each module.
"""

from receiver.store.objects import EvidenceStore, sha256_file
from receiver.store.schema import connect

__all__ = ["EvidenceStore", "connect", "sha256_file"]
