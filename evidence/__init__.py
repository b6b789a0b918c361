"""The shared evidence format: records, canonical encoding, signing, the device hash chain,
media digests and the offline verifier.

This package depends only on the standard library, ``cryptography`` and ``rfc8785``; it never
imports ``agent`` or ``receiver``, so a third party can verify evidence with it alone.
"""

FORMAT_VERSION = 1
