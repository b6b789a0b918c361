"""The receiver's ingest: wire messages in, replies out, without MQTT (see :mod:`.core`).

``messages`` parses each incoming message once into a typed, bounded value; ``reassembly``
holds transfers and their temp files; ``admission`` decides accept / quarantine / later;
``limits`` has the per-device budgets; ``core.Ingest`` ties them together; ``worker`` runs it
off the MQTT network thread with bounded, fair per-device queues. All SQL is in
:mod:`receiver.store`. Failure posture: see each module; :meth:`Ingest.handle` never raises.
"""

from receiver.ingest.admission import Outgoing
from receiver.ingest.core import NEED_LATER, Ingest, IngestStats
from receiver.ingest.limits import Limits
from receiver.ingest.reassembly import Transfer

__all__ = ["NEED_LATER", "Ingest", "IngestStats", "Limits", "Outgoing", "Transfer"]
