"""Hidden behaviour: trigger backdoors (issue 27). ``candidates``: which tokens an adapter's first
layers read out of all proportion (pure); ``analyzer``: the ``trigger_candidates`` analyzer;
``table``: its table and view."""
