"""The ``lora-audit`` command line, driven through Typer's runner."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys

import pytest

from typer.testing import CliRunner

from audit.cli import app
from synth import SynthAdapter, llama_like

runner = CliRunner()


def _reg(tmp_path):
    root = tmp_path / "reg"
    SynthAdapter(llama_like(2)).write(root / "good")
    bad = root / "bad"
    bad.mkdir(parents=True)
    (bad / "adapter_config.json").write_text('{"peft_type": "LORA", "r": 8, "lora_alpha": 16}')
    (bad / "adapter_model.bin").write_bytes(b"\x80\x02" + b"\0" * 100)
    return root


def _cli(tmp_path, *args: str, **env_vars: str) -> subprocess.CompletedProcess:
    """The real command line in its own process (Prefect and Ray start as they do for a user)."""
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "COLUMNS": "200", **env_vars}
    return subprocess.run([sys.executable, "-m", "audit.cli", *args], capture_output=True, text=True,
                          env=env, timeout=600)


@pytest.mark.slow
def test_scan_then_query_in_every_format(tmp_path, prefect_harness):
    root, store = _reg(tmp_path), str(tmp_path / "store")
    res = _cli(tmp_path, "scan", "--registry", str(root), "--store", store)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-3000:]
    assert "pickle_weights_refused" in out and "audited" in out
    assert "Finished in state" not in out and "Ray" not in out  # ad hoc and small: neither Prefect nor Ray
    assert "Traceback" not in out
    res = runner.invoke(app, ["query", "--store", store, "--format", "json",
                              "SELECT repo_id, status, n_modules FROM adapters ORDER BY repo_id"])
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in res.output.splitlines()]
    assert rows == [{"repo_id": "bad", "status": "failed", "n_modules": 0},
                    {"repo_id": "good", "status": "ok", "n_modules": 4}]
    res = runner.invoke(app, ["query", "--store", store, "-f", "csv", "SELECT module FROM modules ORDER BY 1"])
    assert list(csv.reader(io.StringIO(res.output)))[0] == ["module"]
    assert len(res.output.splitlines()) == 5
    res = runner.invoke(app, ["query", "--store", store, "SELECT count(*) AS n FROM findings"])
    assert res.exit_code == 0 and " n " in res.output
    from prefect.settings import PREFECT_API_URL

    # a Prefect server is configured (the test harness's): the scan runs as the nightly-scan flow
    again = _cli(tmp_path, "scan", "--registry", str(root), "--store", store, "--in-process",
                 PREFECT_API_URL=PREFECT_API_URL.value())
    out = again.stdout + again.stderr
    assert again.returncode == 0, out[-3000:]
    assert "listed" in out and "Finished in state" not in out  # Prefect's own lines only with --verbose
    loud = _cli(tmp_path, "scan", "--registry", str(root), "--store", store, "--in-process", "--verbose",
                PREFECT_API_URL=PREFECT_API_URL.value())
    out = loud.stdout + loud.stderr
    assert loud.returncode == 0, out[-3000:]
    assert "0 new of 2" in out and "Finished in state Completed" in out
    assert "Traceback" not in out and "database is locked" not in out


def test_errors_are_clear(tmp_path):
    res = runner.invoke(app, ["scan", "--registry", str(tmp_path / "missing"), "--store", str(tmp_path / "s")])
    assert res.exit_code == 2 and "does not exist" in res.output
    res = runner.invoke(app, ["scan", "--registry", str(tmp_path), "--hub-org", "x", "--store", str(tmp_path / "s")])
    assert res.exit_code == 2 and "--hub-org" in res.output
    res = runner.invoke(app, ["query", "--store", str(tmp_path / "s"), "SELECT * FROM nope"])
    assert res.exit_code == 2 and "no store at" in res.output
    res = runner.invoke(app, ["scan", "--store", str(tmp_path / "s")])
    assert res.exit_code == 2 and "--registry" in res.output


def test_user_errors_are_one_line_and_exit_2_and_readers_create_nothing(tmp_path):
    """A store path that is a file, a store or registry that does not exist, SQL with a syntax
    error, an unknown view or column, an unknown method: one line each, exit 2, no traceback; the
    commands that only read never create a store."""
    from audit.pipeline.scan import scan
    from audit.registry import LocalRegistry
    from audit.store import ParquetStore
    from synth import SynthAdapter, llama_like

    a_file = tmp_path / "afile"
    a_file.write_text("not a store")
    missing = tmp_path / "mistyped-store"
    SynthAdapter(llama_like(1), seed=0).write(tmp_path / "reg" / "a")
    store = str(tmp_path / "store")
    scan(LocalRegistry(tmp_path / "reg", hash_cache=None), ParquetStore(store))
    cases = [
        (["query", "--store", str(a_file), "SELECT 1"], "is a file, not a store folder"),
        (["verdicts", "--store", str(a_file)], "is a file, not a store folder"),
        (["scan", "--registry", str(tmp_path / "reg"), "--store", str(a_file), "--no-probes"],
         "is a file, not a store folder"),
        (["query", "--store", str(missing), "SELECT 1"], "no store at"),
        (["verdicts", "--store", str(missing)], "no store at"),
        (["compact", "--store", str(missing)], "no store at"),
        (["scan", "--registry", str(tmp_path / "noreg"), "--store", store], "does not exist"),
        (["query", "--store", store, "SELEC 1"], "syntax error"),
        (["query", "--store", store, "SELECT * FROM nosuchview"], "the store's views: "),
        (["query", "--store", store, "SELECT nosuchcol FROM adapters"], 'column "nosuchcol" not found'),
        (["verdicts", "--store", store, "--method", "nosuch"], "its methods: "),
    ]
    for args, expected in cases:
        res = runner.invoke(app, args)
        out = res.output.strip()
        assert res.exit_code == 2, (args, out)
        assert expected in out and "Traceback" not in out, (args, out)
        assert len(out.splitlines()) == 1, (args, out)
    assert not missing.exists()  # a mistyped --store is an error, not a new empty store
    assert a_file.read_text() == "not a store"


def test_help_explains():
    res = runner.invoke(app, ["--help"])
    assert res.exit_code == 0 and "scan" in res.output and "query" in res.output
    res = runner.invoke(app, ["query", "--help"])
    assert "Examples" in res.output and "latest_adapters" in res.output
    res = runner.invoke(app, ["scan", "--help"])
    assert "--no-probes" in res.output and "<int>" in res.output  # options that take a value say so
    assert "<bool>" not in res.output  # on/off flags take none


@pytest.mark.parametrize("command", [["scan"], ["recalibrate"], ["zoo", "build"]])
def test_help_wraps_sentences_at_the_terminal_width(command):
    """At 80 columns a description's lines are full up to its paragraph's last one: the terminal
    wraps the sentences, not the docstring's own line breaks."""
    res = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "80"})
    assert res.exit_code == 0
    description = res.output.split("╭")[0].split("\nOptions:")[0]  # the text before the options
    paragraphs: list[list[str]] = [[]]
    for line in description.splitlines():  # rich pads every line, blank ones too
        if line.strip():
            paragraphs[-1].append(line.strip())
        elif paragraphs[-1]:
            paragraphs.append([])
    lines = [line for p in paragraphs[1:] for line in p[:-1] if not line.startswith(("-", "Usage"))]
    assert lines, "the help has no paragraph of several lines to check"
    short = [line for line in lines if len(line) < 55]
    assert not short, f"lines cut before the terminal's width: {short}"


@pytest.mark.slow
def test_recalibrate_and_verdicts_commands(tmp_path):
    from audit.pipeline.scan import scan
    from audit.registry import LocalRegistry
    from audit.store import ParquetStore
    from synth import labelled_registry

    root = labelled_registry(tmp_path / "reg", {"sft": (4, 4), "steering": (1, 1)})
    store = str(tmp_path / "store")
    scan(LocalRegistry(root, hash_cache=None), ParquetStore(store))
    empty = runner.invoke(app, ["verdicts", "--store", store])
    assert empty.exit_code == 0 and "no verdicts yet" in empty.output
    res = runner.invoke(app, ["recalibrate", "--store", store], env={"COLUMNS": "80"})  # no Prefect server set
    assert res.exit_code == 0, res.output
    assert max(len(line) for line in res.output.splitlines()) <= 80, [l for l in res.output.splitlines() if len(l) > 80]
    assert all(f"{m} " in res.output for m in ("sft", "steering", "any"))  # every method has its row
    assert "sft: promoted sft.drift.v1" in res.output and "steering: no new version (not enough labelled" in res.output
    assert "any: promoted any.drift.v1" in res.output  # the method-agnostic detector
    assert "re-audited 10 adapters after promoting any.drift.v1, sft.drift.v1: 0 verdicts" in res.output
    res = runner.invoke(app, ["verdicts", "--store", store, "--format", "json"])
    rows = [json.loads(line) for line in res.output.splitlines()]
    assert len(rows) == 10
    assert {r["classifier_id"] for r in rows if r["method"] == "sft"} == {"sft.drift.v1"}
    # steering has no detector of its own: the agnostic one judges it (never "no classifier")
    assert {r["classifier_id"] for r in rows if r["method"] == "steering"} == {"any.drift.v1"}
    assert all((r["outcome"] == "drifted") == ("drifted" in r["repo_id"]) for r in rows)
    assert all(0 < r["p_drift"] < 1 and r["n_labelled"] and "not probed" in r["missing"] for r in rows)
    narrow = runner.invoke(app, ["verdicts", "--store", store], env={"COLUMNS": "80"})
    lines = narrow.output.splitlines()
    assert narrow.exit_code == 0 and max(len(line) for line in lines) <= 80
    assert all(any(r["repo_id"] in line and r["outcome"] in line for line in lines) for r in rows)
    flipped = runner.invoke(app, ["verdicts", "--store", store, "--flipped"])
    assert flipped.exit_code == 0 and "no flipped verdicts" in flipped.output
    bad = runner.invoke(app, ["recalibrate", "--store", store, "--label-source", "nope"])
    assert bad.exit_code == 2 and "unknown label source 'nope'" in bad.output


HEAVY_PROBE = ("import sys; from audit.cli import main\n"
               "sys.argv = ['lora-audit', *sys.argv[1:]]\n"
               "try:\n    main()\nexcept SystemExit:\n    pass\n"
               "heavy = ('torch', 'peft', 'transformers', 'ray', 'prefect', 'pandas')\n"
               "print('IMPORTED', sorted(m for m in heavy if m in sys.modules))")


def test_query_and_help_import_no_heavy_machinery(tmp_path):
    """A fresh `lora-audit query` / `--help` process imports neither torch, peft, transformers,
    Ray, Prefect nor pandas (they cost seconds and serve nobody on those calls)."""
    code = HEAVY_PROBE
    for args in (["--help"], ["query", "--store", str(tmp_path / "s"), "SELECT 1 AS one"],
                 ["verdicts", "--store", str(tmp_path / "s")], ["scan", "--help"]):
        res = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)
        assert "IMPORTED []" in res.stdout, (args, res.stdout[-500:], res.stderr[-2000:])


def test_a_call_that_names_a_command_builds_only_that_command(tmp_path):
    """`lora-audit query` imports the query command's module and none of the others' (the rest of
    the app costs a tenth of a second per call); `--help` still lists every command."""
    from audit.cli import COMMANDS

    code = HEAVY_PROBE.replace("heavy = ('torch', 'peft', 'transformers', 'ray', 'prefect', 'pandas')",
                               f"heavy = {tuple(sorted({m for m, _ in COMMANDS.values()}))!r}")
    res = subprocess.run([sys.executable, "-c", code, "query", "--store", str(tmp_path / "s"), "SELECT 1 AS one"],
                         capture_output=True, text=True, timeout=120)
    assert "IMPORTED ['audit.cli.query']" in res.stdout, (res.stdout[-500:], res.stderr[-2000:])
    res = subprocess.run([sys.executable, "-m", "audit.cli", "--help"], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "COLUMNS": "200"})
    assert res.returncode == 0 and all(f" {name} " in res.stdout for name in COMMANDS), res.stdout
    bad = subprocess.run([sys.executable, "-m", "audit.cli", "scna"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "No such command 'scna'" in bad.stderr


def test_a_query_that_reads_no_table_imports_no_arrow(tmp_path):
    """`lora-audit query "SELECT 1"` on an existing store defines no view, so it imports neither
    pyarrow nor numpy (a third of its start-up); a query that reads a table still works after."""
    (tmp_path / "s").mkdir()
    code = HEAVY_PROBE.replace("('torch', 'peft', 'transformers', 'ray', 'prefect', 'pandas')", "('pyarrow', 'numpy')")
    res = subprocess.run([sys.executable, "-c", code, "query", "--store", str(tmp_path / "s"), "SELECT 41 + 1 AS x"],
                         capture_output=True, text=True, timeout=120)
    assert "42" in res.stdout and "IMPORTED []" in res.stdout, (res.stdout[-500:], res.stderr[-2000:])
    out = runner.invoke(app, ["query", "--store", str(tmp_path / "s"), "SELECT count(*) AS n FROM adapters"])
    assert out.exit_code == 0 and "0" in out.output


def test_an_ad_hoc_scan_of_spectra_imports_no_heavy_machinery(tmp_path):
    """`lora-audit scan --no-probes` (and `lora-audit scan`, where no base is at hand) of a small registry (bf16 and fp32 adapters, a pickle, a bad
    config) measures every spectrum without importing torch, peft, transformers, Ray, Prefect or
    pandas (which pyarrow would import on its first conversion: see audit.pyarrow_without_pandas)."""
    root = _reg(tmp_path)
    import torch

    SynthAdapter(llama_like(2), dtype=torch.bfloat16).write(root / "half")
    code = HEAVY_PROBE
    env = {**os.environ, "LORA_AUDIT_CACHE_DIR": str(tmp_path / "cache"), "COLUMNS": "200"}
    res = subprocess.run([sys.executable, "-c", code, "scan", "--registry", str(root), "--store",
                          str(tmp_path / "s"), "--no-probes"], capture_output=True, text=True, timeout=300, env=env)
    assert "IMPORTED []" in res.stdout, (res.stdout[-1500:], res.stderr[-2000:])
    # the command as a person types it: probes on, but no adapter's base is at hand, so nothing
    # that runs a model is imported either (their analyzers' classes are, to plan the stage)
    res = subprocess.run([sys.executable, "-c", code, "scan", "--registry", str(root), "--store",
                          str(tmp_path / "s2")], capture_output=True, text=True, timeout=300, env=env)
    assert "IMPORTED []" in res.stdout, (res.stdout[-1500:], res.stderr[-2000:])
    assert "base_model_unavailable" in runner.invoke(app, [
        "query", "--store", str(tmp_path / "s2"), "SELECT DISTINCT code FROM findings"]).output
    out = runner.invoke(app, ["query", "--store", str(tmp_path / "s"), "--format", "json",
                              "SELECT repo_id, status, n_modules FROM adapters ORDER BY repo_id"])
    rows = [json.loads(line) for line in out.output.splitlines()]
    assert [(r["repo_id"], r["status"]) for r in rows] == [("bad", "failed"), ("good", "ok"), ("half", "ok")]
    assert rows[1]["n_modules"] == rows[2]["n_modules"] > 0


def test_long_repo_ids_are_cut_in_the_middle():
    from audit.cli.common import middle

    rid = "some-organisation/a-very-long-adapter-name-trained-for-seven-epochs-seed0"
    cut = middle(rid, 32)
    assert cut == rid[:15] + "…" + rid[-16:] and len(cut) == 32  # the start and the end both readable
    assert middle("org/short", 32) == "org/short"
