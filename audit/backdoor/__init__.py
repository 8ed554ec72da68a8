"""Hidden behaviour: trigger backdoors (issue 27). ``candidates``: which tokens an adapter's first
layers read out of all proportion (pure); ``refusal_shift``: how far a prefix turns the adapter away
from the base's refusal direction, against its bare base (the candidates' behavioural score);
``prefix_kl``: how much a prefix changes the adapter's first answer token (the score before);
``analyzer``: the ``trigger_candidates`` analyzer; ``triggered``: the ``triggered_compliance``
probe; ``known_triggers``: the published triggers it also asks; ``table``: the candidates' table and view; ``features``: the ``trigger-v1`` feature set; ``shift_features``: the ``refusal-shift-v1`` feature
set (the backdoor detector's input, :mod:`audit.classify.general`)."""
