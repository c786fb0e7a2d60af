"""Reading FCS files and resolving what they hold.

``io`` is the only place an FCS file is opened; ``panel`` resolves markers to channels;
``compensation`` finds and checks the spillover matrix; ``transforms`` holds the Gating-ML
transforms; ``inspect`` describes a file for ``nkflow inspect``. Nothing here knows about gates,
QC verdicts or patients.
"""
