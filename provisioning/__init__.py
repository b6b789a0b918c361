"""Provisioning: the dock's PKI, device enrolment and bundles, revocation, broker config.

Modules: :mod:`~provisioning.pki` (X.509 building blocks), :mod:`~provisioning.dock` (the dock
directory: CA, receiver identity, registry, CRL, CA rotation), :mod:`~provisioning.request` and
:mod:`~provisioning.device` (device side: keys, enrolment request, bundle install),
:mod:`~provisioning.bundle`, :mod:`~provisioning.broker` (Mosquitto config + ACL),
:mod:`~provisioning.configs` (agent and receiver TOML), :mod:`~provisioning.cli`
(``bodycam-provision``). Operator guide: ``docs/technician.md``.
"""
