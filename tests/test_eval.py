"""The eval (zoo/eval/): llama.cpp's figures against a hand-computed case, window cutting, each kind's eval of a
small variant against transformers, the recipe's bounds as a gate, and one line per bad input."""

from __future__ import annotations

import csv
import json
import math
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from zoo import golden, pipeline
from zoo.checkpoint.tokenizer import tokenizer_from
from zoo.errors import EvalError, EvalFailed
from zoo.eval import eval_line
from zoo.eval.metrics import score, summarize
from zoo.eval.stage import eval_failures
from zoo.eval.text import load_text, sentences, windows
from zoo.kinds import kind_of
from zoo.schema import EvalBounds, EvalConfig

from conftest import ROOT, compose_cfg
from small_runtime import tiny_tokenizer

pytestmark = pytest.mark.slow  # exports and evals on text

SMALL = [
    "export.prefill_lens=[8,32]",
    "export.kv_cache_max=128",
    "export.check_steps=8",
    "export.prefill_logits=all",
    "eval.ctx=64",
    "eval.max_windows=3",
]


# The recipes' eval bounds are SmolLM2's (real weights); a tiny random model's near-flat logits flip their argmax
# under int8 far more often, so the small-variant runs of quantized recipes here measure without them.
NO_RECIPE_BOUNDS = ["quant.eval.max_kld=null", "quant.eval.max_dppl_ratio=null", "quant.eval.min_same_top=null"]


def test_metrics_of_a_hand_computed_case():
    """Two positions over a vocabulary of two. 1: reference p = (3/4, 1/4), flatbuffer q = (1/4, 3/4), target 0:
    KL = 3/4 ln 3 + 1/4 ln(1/3) = ln(3)/2, argmaxes differ, Δp = -1/2. 2: both (4/5, 1/5), target 1: KL 0, same."""
    ref = np.array([[math.log(3), 0.0], [math.log(4), 0.0]])
    got = np.array([[0.0, math.log(3)], [math.log(4), 0.0]])
    s = summarize(score(ref, got, np.array([0, 1])))
    assert s["tokens"] == 2
    assert s["ppl_ref"] == pytest.approx(math.sqrt(4 / 3 * 5))  # exp(mean(ln(4/3), ln 5))
    assert s["ppl"] == pytest.approx(math.sqrt(4 * 5))
    assert s["ppl_ratio"] == pytest.approx(math.sqrt(3))
    assert s["dppl"] == pytest.approx(math.sqrt(20) - math.sqrt(20 / 3))
    assert s["ppl_se"] == pytest.approx(math.sqrt(20) * math.log(5 / 4) / 2)  # std of (ln 4, ln 5) / sqrt(n - 1)
    assert s["kld_mean"] == pytest.approx(math.log(3) / 4)
    assert s["kld_max"] == pytest.approx(math.log(3) / 2)
    assert s["kld_median"] == pytest.approx(math.log(3) / 4)
    assert s["same_top"] == 0.5
    assert s["rms_dp"] == pytest.approx(math.sqrt(0.25 / 2))


def test_identical_logits_score_zero_divergence():
    logits = np.random.default_rng(0).normal(size=(50, 30)) * 4
    s = summarize(score(logits, logits.copy(), np.arange(50) % 30))
    assert s["kld_max"] < 1e-12 and s["same_top"] == 1.0 and s["ppl_ratio"] == pytest.approx(1.0)
    assert s["dppl"] == pytest.approx(0.0) and s["rms_dp"] == 0.0


def test_window_cutting():
    assert windows(10, 4) == [(0, 4), (4, 8)]  # the tail of 2 is left out
    assert windows(12, 4, max_windows=2) == [(0, 4), (4, 8)]
    assert windows(512, 512) == [(0, 512)]
    with pytest.raises(EvalError, match="the text has 511 tokens, shorter than one window of eval.ctx=512"):
        windows(511, 512)


def test_text_byte_range_and_sentences(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("Skip this. To be, or not to be. That is the question!\n\nWhat a piece of work is a man.")
    text = load_text(EvalConfig(text=str(path), start=11, end=None))
    assert text.startswith("To be")
    assert sentences(text) == ["To be, or not to be.", "That is the question!", "What a piece of work is a man."]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is empty"),
        (b"  \n\n ", "is empty"),
        (b"abc\0\x01\x02def", "is a binary file"),
        (b"caf\xe9 au lait", "is not UTF-8 text"),
    ],
)
def test_bad_text_is_refused(tmp_path, content, message):
    path = tmp_path / "t.txt"
    path.write_bytes(content)
    with pytest.raises(EvalError, match=message):
        load_text(EvalConfig(text=str(path), start=0, end=None))


def test_the_shipped_text_is_hamlet():
    text = load_text(EvalConfig())
    assert text.startswith("ACT I.") and "Francisco" in text and len(text.encode()) == 41739 - 779


def test_bounds_name_the_figure_and_the_margin():
    section = {"kld_mean": 0.012, "same_top": 0.95, "ppl_ratio": 1.01}
    assert eval_failures(section, EvalBounds(max_kld=0.01, min_same_top=0.96, max_dppl_ratio=1.02)) == [
        "mean KLD 0.012 above bound 0.01 by 0.002 (20.0%)",
        "same top 0.95 below bound 0.96 by 0.01 (1.0%)",
    ]
    assert eval_failures(section, EvalBounds(min_cosine=0.99)) == []  # an encoder figure: not measured here


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """tinyllama's small variant (tiny real tokenizer) exported with logits at every prefill position and run with
    the eval stage; the run folder, config and report."""
    root = tmp_path_factory.mktemp("eval")
    cfg = compose_cfg(
        [
            "model=tinyllama",
            "variant=small",
            f"model.tokenizer.source={tiny_tokenizer(root / 'tok')}",
            *SMALL,
            "eval.enabled=true",
        ]
    )
    run = root / "run"
    report = pipeline.run(cfg, run)
    return cfg, run, report


def test_decoder_eval_matches_transformers_on_the_same_windows(small):
    """The stage's figures: the reference side recomputed here from transformers on the same windows (second halves
    scored), and the fp32 flatbuffer as close to it as float rounding."""
    cfg, _run, report = small
    section = report["eval"]
    assert report["status"] == "ok" and section["passed"] and section["windows"] == 3
    assert section["tokens"] == 3 * (64 // 2 - 1) and section["peak_rss_bytes"] > 0
    loaded = pipeline.load_model(cfg, kind_of(cfg), pipeline.resolve_checkpoint(cfg).checkpoint)
    hf = golden.reference_model(cfg.model.reference, loaded.checkpoint)
    ids = loaded.tokenizer(load_text(cfg.eval), add_special_tokens=False)["input_ids"]
    nll = []
    for w in range(3):
        window = ids[64 * w : 64 * (w + 1)]
        with torch.no_grad():
            logp = torch.log_softmax(hf(torch.tensor([window[:-1]])).logits[0].double(), -1)
        nll += [-float(logp[i, window[i + 1]]) for i in range(32, 63)]
    assert section["ppl_ref"] == pytest.approx(math.exp(np.mean(nll)), rel=1e-6)
    assert section["ppl"] == pytest.approx(section["ppl_ref"], rel=1e-4)
    assert section["kld_max"] < 1e-6 and section["same_top"] == 1.0
    assert eval_line(section).startswith(f"eval PASS: PPL {section['ppl']:.3f} ± ")


def eval_cli(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "zoo.eval", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )


def copy_run(run, dest):
    shutil.copytree(run, dest, ignore=shutil.ignore_patterns("x.json"))
    return dest / "tinyllama_none_kv128.tflite"


def test_cli_records_the_eval_and_a_missed_bound_fails(small, tmp_path):
    """`python -m zoo.eval FILE` reads the entry from the report next to the file, prints the line and records
    `eval`; an override of the recipe's bound that the figures miss says which and by how much, exit 2."""
    _, run, _ = small
    path = copy_run(run, tmp_path / "run")
    result = eval_cli(path, "eval.max_windows=2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("eval PASS: PPL ") and "62 tokens in 2 windows of 64" in result.stdout
    assert json.loads((path.parent / "report.json").read_text())["eval"]["windows"] == 2
    result = eval_cli(path, "eval.max_windows=1", "quant.eval.min_same_top=1.5", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stdout.startswith("eval FAIL: PPL ")
    assert result.stderr.strip().splitlines()[-1] == (
        "zoo.eval: error [eval_bounds]: eval of tinyllama_none_kv128.tflite (none) "
        "failed: same top 1 below bound 1.5 by 0.5 (33.3%)"
    )


def test_stage_failure_is_a_run_failure(small, tmp_path):
    """In the pipeline, a missed eval bound fails the run like a failed check."""
    _cfg, run, _ = small
    bounded = compose_cfg(
        [
            "model=tinyllama",
            "variant=small",
            f"model.tokenizer.source={run.parent / 'tok'}",
            *SMALL,
            "eval.enabled=true",
            "eval.max_windows=1",
            "quant.eval.max_kld=-1",
        ]
    )
    with pytest.raises(EvalFailed, match=r"failed: mean KLD .* above bound -1 by "):
        pipeline.run(bounded, tmp_path)
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["status"] == "failed" and report["eval"]["passed"] is False


@pytest.fixture(scope="module")
def last_only(small, tmp_path_factory):
    """The same small variant exported with logits of the last prefill position only (the default)."""
    _cfg, run, _ = small
    root = tmp_path_factory.mktemp("last")
    overrides = [o for o in SMALL if o != "export.prefill_logits=all"]
    pipeline.run(
        compose_cfg(["model=tinyllama", "variant=small", f"model.tokenizer.source={run.parent / 'tok'}", *overrides]),
        root,
    )
    return root / "tinyllama_none_kv128.tflite"


def bad_inputs(tmp_path, small, last_only):
    _, run, _ = small
    short, empty, binary = tmp_path / "short.txt", tmp_path / "empty.txt", tmp_path / "bin.txt"
    short.write_text("To be, or not to be.")
    empty.write_text("")
    binary.write_bytes(bytes(range(256)) * 4)
    other = copy_run(run, tmp_path / "other")  # the report of an entry with another vocabulary
    report = json.loads((other.parent / "report.json").read_text())
    report["config"]["model"]["arch"]["vocab_size"] = 384
    (other.parent / "report.json").write_text(json.dumps(report))
    file = copy_run(run, tmp_path / "run")
    return {
        "short": (
            [file, f"eval.text={short}", "eval.start=0"],
            "zoo.eval: error [eval]: the text has {n} tokens, shorter than one window of eval.ctx=64",
        ),
        "empty": (
            [file, f"eval.text={empty}", "eval.start=0"],
            f"zoo.eval: error [eval]: eval.text={empty} (bytes 0..end) is empty",
        ),
        "binary": (
            [file, f"eval.text={binary}", "eval.start=0"],
            f"zoo.eval: error [eval]: eval.text={binary} (bytes 0..end) is a binary file (NUL bytes), not text",
        ),
        "window": (
            [file, "eval.ctx=256"],
            "zoo.eval: error [eval]: eval.ctx=256 is larger than the kv_cache_max=128 of tinyllama_none_kv128.tflite",
        ),
        "last": (
            [last_only],
            "zoo.eval: error [eval]: tinyllama_none_kv128.tflite: prefill_8 returns logits for 1 of its 8 "
            "positions; the eval scores every position: export with export.prefill_logits=all",
        ),
        "vocab": (
            [other],
            "zoo.eval: error [eval]: tinyllama_none_kv128.tflite has 512 logits per position but entry tinyllama "
            "has a vocabulary of 384: a flatbuffer of another entry?",
        ),
    }


@pytest.mark.parametrize("case", ["short", "empty", "binary", "window", "last", "vocab"])
def test_bad_input_is_one_line_and_no_report(small, last_only, tmp_path, case):
    args, line = bad_inputs(tmp_path, small, last_only)[case]
    tokenizer = tokenizer_from(small[0].model.tokenizer, None)  # the short text's own token count
    line = line.format(n=len(tokenizer("To be, or not to be.", add_special_tokens=False)["input_ids"]))
    before = (args[0].parent / "report.json").read_text()
    result = eval_cli(*args, "eval.max_windows=1", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == line
    assert result.stdout == ""
    assert (args[0].parent / "report.json").read_text() == before  # no partial eval recorded


@pytest.mark.parametrize("entry", ["t5_small", "minilm_l6"])
def test_encoder_kinds_have_an_eval(entry, tmp_path):
    """T5: teacher-forced decoder perplexity with the text as source and target; MiniLM: cosine of pooled
    sentence embeddings. fp32 flatbuffers of the small variants against transformers."""
    cfg = compose_cfg(
        [
            f"model={entry}",
            "variant=small",
            f"model.tokenizer.source={tiny_tokenizer(tmp_path / 'tok')}",
            "export.encoder_len=40",
            "export.kv_cache_max=64",
            "export.check_steps=8",
            "eval.enabled=true",
            "eval.max_windows=2",
        ]
    )
    section = pipeline.run(cfg, tmp_path / "run")["eval"]
    if entry == "minilm_l6":
        assert section["sentences"] == 2 and section["cosine_mean"] > 0.99999 and section["cosine_std"] < 1e-5
        assert eval_line(section).startswith("eval PASS over 2 sentences: embedding cosine vs transformers mean 1.0")
    else:
        assert section["windows"] == 2 and section["ctx"] == 40 and section["tokens"] == 80
        assert section["kld_max"] < 1e-6 and section["ppl"] == pytest.approx(section["ppl_ref"], rel=1e-4)
        assert section["ppl_ref"] > 1


def test_sweep_with_eval_writes_a_scoreboard(small, tmp_path):
    """`-m quant=none,int8_dynamic eval.enabled=true`: summary.csv gets the eval figures, scoreboard.md one row per
    recipe (smaller file first) and kld_vs_size.png the plot."""
    _, run, _ = small
    out = tmp_path / "sweep"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "zoo",
            "-m",
            "model=tinyllama",
            "variant=small",
            "quant=none,int8_dynamic",
            f"model.tokenizer.source={run.parent / 'tok'}",
            *SMALL,
            "eval.enabled=true",
            "eval.max_windows=2",
            *NO_RECIPE_BOUNDS,
            f"hydra.sweep.dir={out}",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("eval PASS: PPL ") == 2  # each job's eval line
    with open(out / "summary.csv") as f:
        rows = {r["quant"]: r for r in csv.DictReader(f)}
    assert {q: r["status"] for q, r in rows.items()} == {"none": "ok", "int8_dynamic": "ok"}
    reports = {q: json.loads((out / r["job"] / "report.json").read_text()) for q, r in rows.items()}
    for quant, row in rows.items():
        assert float(row["eval_kld_mean"]) == pytest.approx(reports[quant]["eval"]["kld_mean"])
        assert int(row["eval_tokens"]) == 62 and float(row["bits_per_weight"]) > 0
    assert float(rows["none"]["eval_kld_mean"]) < 1e-6 < float(rows["int8_dynamic"]["eval_kld_mean"])
    board = (out / "scoreboard.md").read_text().splitlines()
    table = [ln for ln in board if ln.startswith("| tinyllama |")]
    assert [ln.split(" | ")[1] for ln in table] == ["int8_dynamic", "none"]  # by file size
    assert (out / "kld_vs_size.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_quant_auto_picks_the_smallest_recipe_within_the_bound(small, tmp_path):
    """Candidates none / int8_dynamic / int4_block32 on the small variant. With no real bound the smallest file
    wins; with a bound of half its measured KLD it is rejected (the report says by how much) and the next smallest
    within the bound wins. The second search exports nothing (cache by config hash); the chosen recipe file
    composes back into the same recipe."""
    _, run, _ = small
    tok = run.parent / "tok"

    def search(max_kld: float, out):
        cfg = compose_cfg(
            [
                "model=tinyllama",
                "variant=small",
                f"model.tokenizer.source={tok}",
                *SMALL,
                "quant=auto",
                "quant.candidates=[{recipe:none},{recipe:int8_dynamic},{recipe:int4_block32}]",
                f"quant.max_kld={max_kld}",
                "quant.auto_windows=2",
                f"cache_dir={tmp_path / 'a'}",
            ]
        )
        return cfg, pipeline.run(cfg, out)

    _, first = search(1e9, tmp_path / "r1")
    sizes = {p.parent.name: p.stat().st_size for p in (tmp_path / "a").glob("*/*.tflite")}
    assert len(sizes) == 3 and first["auto"]["chosen"] == "int4_block32" and len(first["auto"]["candidates"]) == 1
    int4 = first["auto"]["candidates"][0]
    assert int4["size_bytes"] == min(sizes.values()) and int4["kld_mean"] > 0
    mtimes = {p: p.stat().st_mtime_ns for p in (tmp_path / "a").glob("*/*.tflite")}

    bound = int4["kld_mean"] / 2
    _cfg, second = search(bound, tmp_path / "r2")
    auto = second["auto"]
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "a").glob("*/*.tflite")} == mtimes  # nothing re-exported
    tried = auto["candidates"]
    assert tried[0]["name"] == "int4_block32" and not tried[0]["passed"]
    assert tried[0]["failures"][0].startswith(f"mean KLD {int4['kld_mean']:.6g} above bound {bound:g} by ")
    assert [t["size_bytes"] for t in tried] == sorted(t["size_bytes"] for t in tried)
    winner = tried[-1]
    assert winner["passed"] and winner["kld_mean"] <= bound and auto["chosen"] == winner["name"] != "int4_block32"
    assert second["eval"]["passed"] and second["eval"]["windows"] == 3  # the winner's full eval (max_windows=3)
    assert second["export"]["path"].endswith(f"tinyllama_{winner['name']}_kv128.tflite")
    assert auto["why"].startswith(f"{winner['name']} is the smallest file") and "int4_block32" in auto["why"]
    again = compose_cfg(
        ["model=tinyllama", "variant=small", f"quant=auto_{winner['name']}"], search_path=tmp_path / "r2"
    )
    assert again.quant.name == winner["name"] and again.quant.eval.max_kld == bound
    assert again.quant.mode == compose_cfg([f"quant={winner['name']}"]).quant.mode


@pytest.mark.parametrize("entry", ["gemma3_270m", "mistral_7b"])
@pytest.mark.parametrize(
    "layout", [[], ["export.kv_layout=transposed", "export.mask_as_input=true"]], ids=["btnh", "transposed_mask"]
)
def test_sliding_window_entries_match_transformers_past_their_window(entry, layout, tmp_path):
    """Small variants (attention window 8) over eval windows of 64 tokens, so local layers must drop old slots: the
    flatbuffer equals transformers with the mask computed in the graph and with the one `mask` input LiteRT-LM
    feeds (the causal mask; local layers add their window from input_pos, as litert-torch's Gemma 3 does)."""
    cfg = compose_cfg(
        [
            f"model={entry}",
            "variant=small",
            f"model.tokenizer.source={tiny_tokenizer(tmp_path / 'tok')}",
            *SMALL,
            *layout,
            "eval.enabled=true",
            "eval.max_windows=2",
        ]
    )
    assert cfg.model.arch.attention.sliding_window == 8 < cfg.eval.ctx
    section = pipeline.run(cfg, tmp_path / "run")["eval"]
    assert section["kld_max"] < 1e-5 and section["same_top"] == 1.0, section
    assert section["ppl"] == pytest.approx(section["ppl_ref"], rel=1e-4)


def test_cli_scores_a_file_without_a_report_by_the_entry_named(small, tmp_path):
    """A flatbuffer alone (no report.json beside it): `model=` and the other overrides say what it is, as for
    `python -m zoo`; the eval line is printed and nothing is written next to the file."""
    cfg, run, report = small
    alone = tmp_path / "alone" / "model.tflite"
    alone.parent.mkdir()
    shutil.copy(run / "tinyllama_none_kv128.tflite", alone)
    overrides = ["model=tinyllama", "variant=small", f"model.tokenizer.source={cfg.model.tokenizer.source}", *SMALL]
    result = eval_cli(alone, *overrides, "eval.max_windows=3", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("eval PASS: PPL ") and "93 tokens in 3 windows of 64" in result.stdout
    assert f"PPL {report['eval']['ppl']:.3f}" in result.stdout  # the run's own eval of the same file
    assert sorted(p.name for p in alone.parent.iterdir()) == ["model.tflite"]


def test_a_text_you_give_is_read_whole_and_hamlets_span_stays_hamlets(tmp_path):
    """The default byte range belongs to the default text: a 50 kB file of your own is read from its first byte to
    its last (not cut at Hamlet's 779..41739), unless eval.start / eval.end say otherwise."""
    path = tmp_path / "mine.txt"
    path.write_text("".join(f"Line {i} of my own text.\n" for i in range(2000)))
    assert load_text(EvalConfig(text=str(path))) == path.read_text()
    assert load_text(EvalConfig(text=str(path), start=5, end=25)) == path.read_text()[5:25]
    hamlet = load_text(EvalConfig())
    assert hamlet.startswith("ACT I.") and len(hamlet.encode()) == 41739 - 779
