"""Review and sign-off: gate overrides, users, electronic signatures and the audit trail.

Contract
--------
Everything a reviewer does lives outside the run's results, in the paths of the ``review:``
block of the configuration (:class:`ReviewSettings`):

* ``users`` -- the users file (:mod:`nkflow.review.users`): id, printed name, role and a salted
  scrypt password hash;
* ``audit_log`` -- an append-only JSONL hash chain (:mod:`nkflow.review.audit`) of every event:
  ``run``, ``override``, ``signature``, ``void``, ``user``;
* ``overrides`` -- one YAML file per tube and gate (:mod:`nkflow.gating.override_files`), read by the
  tube jobs as inputs.

A signature (:mod:`nkflow.review.signing`) records who (id and printed name), when (UTC, with
the signer's local time), what it means (``reviewed`` or ``approved``) and what was signed: the
patient's endpoint row and the sha256 of every input and output it rests on
(:mod:`nkflow.review.basis`). When any of those changes, the signature is void; the endpoints
step states each patient's review status in ``endpoints.tsv`` (``review_status``,
``review_note``) from the log and the current results, and never writes the log itself.
"""

from __future__ import annotations

from nkflow.review.settings import ReviewSettings, review_settings

__all__ = ["ReviewSettings", "review_settings"]
