"""Compliance: working days, deadlines (Art. 14, 21), enforcement rules (Art. 8, 9, 18, 20),
findings and the accountability report (Art. 25).

``calendar`` and ``deadlines`` are pure; ``rules`` is data; ``findings`` computes every finding
from typed facts (``facts``) with no I/O; ``report`` assembles facts read by
:mod:`receiver.store.compliance` into a :class:`~receiver.compliance.report.Report`, and
``render`` turns it into text, JSON or a self-contained HTML page. Failure posture: bad
administrator or clerk input raises :class:`~receiver.compliance.errors.ComplianceInputError`
(a :class:`receiver.errors.ReceiverError`) naming the file and line or the field; a year no
calendar knows never fails, it is counted on weekends only and every deadline says so.
"""
