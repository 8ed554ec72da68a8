"""Hidden behaviour: trigger backdoors (issue 27). ``candidates``: which tokens an adapter's first
layers read out of all proportion (pure); ``prefix_kl``: how much a prefix changes the adapter's
first answer token against its bare base; ``analyzer``: the ``trigger_candidates`` analyzer;
``triggered``: the ``triggered_compliance`` probe; ``table``: the candidates' table and view;
``features``: the ``trigger-v1`` feature set."""
