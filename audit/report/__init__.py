"""What people and CI read about a scan: the overview of what stands out (:mod:`.standout`), SARIF
for code scanning and the ``--fail-on`` gate (:mod:`.sarif`, :mod:`.current`)."""
