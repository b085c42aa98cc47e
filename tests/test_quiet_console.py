"""A quiet console (issue #26): Beam's worker warnings and MLflow's INFO lines go to the run's log
file, not the terminal, with `speechpipe run`'s own logging set-up (pipeline/local_runner.py,
run_logging); and the workers' start-up warning is not emitted at all by any Beam job
(speechpipe.jobs.beam_options.WORKER_LOG_OVERRIDES), without running a pipeline."""

import io
import json
import logging
import os

from speechpipe.jobs.beam_options import WORKER_LOG_OVERRIDES, with_quiet_workers
from speechpipe.pipeline.local_runner import run_logging

SEMI_PERSISTENT = "No semi_persistent_directory found: Functions defined in __main__ (interactive session) may fail."


def test_beam_worker_and_mlflow_lines_reach_the_log_file_not_the_console(tmp_path, capfd):
    import mlflow  # noqa: F401 - MLflow installs its own console handler on import

    console = io.StringIO()
    path = str(tmp_path / "logs" / "run.log")
    with run_logging(path, console):
        # As Beam's runner logs what an SDK worker sent it, and as MLflow logs opening a store.
        logging.getLogger("apache_beam.runners.portability.local_job_service").warning(
            "Worker: severity: WARN message: %r", SEMI_PERSISTENT
        )
        logging.getLogger("mlflow.store.db.utils").info("Creating initial MLflow database tables...")
        logging.getLogger("absl").info("Running driver for SpeakerTrainer")
        logging.getLogger("speechpipe.components.embedder_trainer").info("step 10: loss 0.5")
    captured = capfd.readouterr()
    terminal = console.getvalue() + captured.out + captured.err
    with open(path, encoding="utf-8") as f:
        logged = f.read()
    for line in ("No semi_persistent_directory found", "Creating initial MLflow database tables", "Running driver"):
        assert line in logged, (line, logged)
        assert line not in terminal, (line, terminal)
    # speechpipe's own progress lines: on the terminal and in the file.
    assert "[run]   step 10: loss 0.5" in console.getvalue() and "step 10: loss 0.5" in logged
    # Afterwards the loggers are as they were: MLflow's console handler is back.
    assert logging.getLogger("mlflow").handlers and logging.getLogger("apache_beam").propagate


def test_worker_start_up_warnings_are_overridden_where_the_worker_logs_them():
    overrides = json.loads(WORKER_LOG_OVERRIDES.split("=", 1)[1])
    # A worker runs `python -m apache_beam.runners.worker.sdk_worker_main`: its logger is __main__.
    assert overrides["__main__"] == "ERROR"
    assert WORKER_LOG_OVERRIDES in with_quiet_workers(["--direct_running_mode=multi_processing"])


def test_a_multi_processing_feature_job_prints_no_worker_warning(tmp_path, capfd):
    """A real multi-processing Beam job (its workers are subprocesses) under the run's logging."""
    from apache_beam.options.pipeline_options import PipelineOptions

    from speechpipe.audio.sources import make_spec
    from speechpipe.config import FeatureConfig
    from speechpipe.jobs import features_job
    from speechpipe.jobs.beam_options import direct_runner_defaults
    from tests.audio_inputs import write_wav

    for i, speaker in enumerate(("spk1", "spk1", "spk2")):
        write_wav(str(tmp_path / "vox" / speaker / "s" / f"{i}.wav"), seconds=0.5, seed=i)
    path = str(tmp_path / "logs" / "run.log")
    options = with_quiet_workers(direct_runner_defaults(["--direct_num_workers=1"]))
    with run_logging(path, io.StringIO()):
        summary = features_job.run_job(
            make_spec(str(tmp_path / "vox")), FeatureConfig(), str(tmp_path / "out"), PipelineOptions(options)
        )
    assert sum(summary["good"].values()) == 3
    captured = capfd.readouterr()
    assert "semi_persistent_directory" not in captured.out + captured.err, captured.err
    assert os.path.exists(path)
