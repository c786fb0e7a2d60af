"""The clinical merge: from per-tube counts and the lab's sheets to per-patient endpoints.

``sheets`` reads and validates the lab's sheets; ``counts`` and ``chimerism`` turn them into
absolute counts and donor fractions; ``endpoints`` builds visits and day-14 verdicts;
``uncertainty``, ``kinetics`` and ``exports`` derive the readout from those tables. Nothing here
opens an FCS file or gates events.
"""
