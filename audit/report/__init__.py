"""What people and CI read about a scan: the overview of what stands out (:mod:`.overview`), the
HTML report (:mod:`.html`, its data :mod:`.data`, its plots :mod:`.plots` and :mod:`.verdict_plots`),
SARIF for code scanning and the ``--fail-on`` gate (:mod:`.sarif`, :mod:`.registry_state`)."""
