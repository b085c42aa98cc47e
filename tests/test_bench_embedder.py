"""bench/bench_embedder.py: the ablation's configurations and the reuse of finished runs."""

from dataclasses import replace

from bench import bench_embedder
from speechpipe.components.embedder_trainer import EmbedderTrainConfig
from speechpipe.speakers.embedder import with_legacy_settings


def test_the_ablation_ends_in_the_default_configuration_one_change_at_a_time():
    runs = bench_embedder._runs(minutes=20, ablation_steps=1600)
    default = EmbedderTrainConfig()
    assert replace(runs["default"].config, max_seconds=default.max_seconds, max_steps=0) == default
    assert replace(runs["+hidden_statistics"].config, max_seconds=default.max_seconds, max_steps=0) == default
    assert runs["+hidden"].config.model.embedding == runs["+lda_total"].config.model.embedding == "hidden"
    # Seed 002's form is the bench's own (bench/seed002.py) up to +margin; the product's from +in_batch.
    assert all(runs[name].seed002 is not None for name in ("seed002", "+softmax", "+symmetric", "+margin"))
    assert all(
        run.seed002 is None
        for name, run in runs.items()
        if name not in ("seed002", "+softmax", "+symmetric", "+margin")
    )
    assert runs["seed002"].seed002.output_activation == "prelu" and not runs["seed002"].seed002.symmetric
    assert runs["+symmetric"].seed002.symmetric and runs["+symmetric"].seed002.output_activation == "softmax"
    assert runs["+margin"].config == runs["+in_batch"].config
    before = runs["+wide_output"].config.model
    assert (before.lda_shrink_toward, before.lda_shrinkage) == ("isotropic", 0.05)  # the isotropic LDA of older runs
    assert (
        replace(
            before,
            lda_shrink_toward="total",
            lda_shrinkage=default.model.lda_shrinkage,
            embedding=default.model.embedding,
        )
        == default.model
    )


def test_a_stored_run_is_reused_only_when_the_settings_that_shape_it_agree():
    runs = bench_embedder._runs(minutes=20, ablation_steps=1600)
    for name in ("seed002", "+lda"):
        expected = runs[name].to_json()
        # A run stored before lda_shrink_toward existed, with the LDA's settings of its day.
        stored = {**expected, "model": {k: v for k, v in expected["model"].items() if k != "lda_shrink_toward"}}
        assert ("seed002" in expected) == (name == "seed002")
        stored["model"]["lda_shrinkage"] = 0.05
        stored["model"] = with_legacy_settings(stored["model"])
        assert bench_embedder._same_run(stored, expected)
    # Without an LDA back end, the LDA's settings do not matter; with one, they do.
    seed = runs["seed002"].to_json()
    changed = {**seed, "model": {**seed["model"], "lda_shrinkage": 0.3}}
    assert bench_embedder._same_run(changed, seed)
    lda = runs["+lda"].to_json()
    assert not bench_embedder._same_run({**lda, "model": {**lda["model"], "lda_shrink_toward": "total"}}, lda)
    assert not bench_embedder._same_run({**seed, "model": {**seed["model"], "margin": 3.0}}, seed)
    assert not bench_embedder._same_run({**seed, "seed002": {**seed["seed002"], "symmetric": True}}, seed)


def test_the_curve_trains_current_and_baseline_at_each_step_budget():
    runs = bench_embedder._curve_runs([200, 800], {"model": {"segment_frames": 40}, "speakers_per_batch": 8})
    assert list(runs) == ["curve-current-200", "curve-baseline-200", "curve-current-800", "curve-baseline-800"]
    current, baseline = runs["curve-current-800"].config, runs["curve-baseline-800"].config
    assert current.max_steps == baseline.max_steps == 800
    assert replace(current, max_steps=0, max_seconds=EmbedderTrainConfig().max_seconds) == EmbedderTrainConfig()
    assert baseline.model.segment_frames == 40 and baseline.speakers_per_batch == 8
    assert replace(baseline.model, segment_frames=current.model.segment_frames) == current.model
    assert list(bench_embedder._curve_runs([200], {})) == ["curve-current-200"]  # no baseline named


def test_the_curve_report_sets_current_against_baseline(tmp_path):
    def row(run, eer):
        return {"run": run, "test_trials": {"eer": eer, "min_dcf": 0.3}, "train_seconds": 120.0, "det": ([], [])}

    rows = [row("curve-current-200", 0.04), row("curve-baseline-200", 0.05)]
    table = bench_embedder._curve_report(rows, [200], str(tmp_path))
    assert "| 200 | 4.00 % (0.300), 2.0 | 5.00 % (0.300), 2.0 | 0.80 |" in table
    assert (tmp_path / "results_curve.md").read_text().strip() == table
