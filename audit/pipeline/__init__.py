"""The scan pipeline: list a registry, diff against the store, run the analyzers where they are
placed (in process, or on Ray actors), and commit their results.

- :mod:`~audit.pipeline.scan`: the scan as a sequence of steps (start the run, list, diff, audit
  the spectra, look up bases, probe, judge, finish the run);
- :mod:`~audit.pipeline.placement`: where a scan's analyzers run;
- :mod:`~audit.pipeline.executors`: how jobs run (in this process, batched);
- :mod:`~audit.pipeline.raypool`: on a pool of long-lived Ray actors;
- :mod:`~audit.pipeline.commit`: committing each result to the store where it was computed.
"""
