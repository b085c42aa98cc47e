"""Two runs sharing a fresh home pushed at the same moment: each process's MLflow client created
the embedded SQLite registry's tables (alembic migrations) at once, and one failed with
`sqlite3.OperationalError: table _alembic_tmp_experiments already exists`. The first use of an
embedded registry now creates its tables under a file lock beside the database."""

import multiprocessing
import os

import pytest


def _open_and_list(uri: str, start: "multiprocessing.synchronize.Barrier", errors: "multiprocessing.Queue") -> None:
    from speechpipe.results.registry import Registry

    try:
        start.wait(timeout=120)
        registry = Registry(uri)
        registry.client.search_experiments(max_results=1)
        registry.list()
    except Exception as error:  # the parent asserts on what each process met
        errors.put(f"{type(error).__name__}: {error}"[:500])
    else:
        errors.put("")


@pytest.mark.timeout(600)
@pytest.mark.parametrize("attempt", range(2))
def test_processes_opening_a_fresh_embedded_registry_at_once_all_succeed(tmp_path, attempt):
    uri = "sqlite:///" + os.path.join(str(tmp_path), "mlflow", "mlflow.db")
    processes = 4
    context = multiprocessing.get_context("spawn")  # MLflow and SQLAlchemy state is per process
    start = context.Barrier(processes)
    errors = context.Queue()
    workers = [context.Process(target=_open_and_list, args=(uri, start, errors)) for _ in range(processes)]
    for worker in workers:
        worker.start()
    met = [errors.get(timeout=540) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
    assert [m for m in met if m] == []
    assert all(worker.exitcode == 0 for worker in workers)
