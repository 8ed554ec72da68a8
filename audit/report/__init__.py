"""What people and CI read about a scan: SARIF for code scanning and the ``--fail-on`` gate."""
