"""Airbyte syncs as an Airflow task, run by airbyte-fleet (Airflow 3, TaskFlow).

One DAG, one ``@task`` that calls :func:`airbyte_fleet.run_syncs_blocking`: an Airflow task is a
plain function, and the call returns when every selected sync has ended. The result becomes
Airflow's own terms: the task returns a dict of metadata (counts, rows, bytes, one entry per sync,
the run id), which Airflow keeps as the task's XCom for the tasks downstream and the UI; when a
sync did not succeed the task raises ``AirflowFailException(result.summary)`` and fails.

Which connections: the DAG's params (``tags``, ``connections``, ``names``), set when triggering
(``airflow dags trigger airbyte_syncs -c '{"tags": ["nightly"]}'``); none set means the config
file's ``[selection]``. Where Airbyte is: ``AIRBYTE_BASE_URL``, ``AIRBYTE_CLIENT_ID`` and
``AIRBYTE_CLIENT_SECRET`` in the worker's environment (or the config file's ``[airbyte]``), as for
the ``airbyte-fleet`` command. The library logs through the standard ``logging`` module under
``airbyte_fleet``, so its lines land in the task's log.

Try it without a scheduler, with this file in the DAG folder and after ``airflow db migrate``:
``airflow dags test airbyte_syncs -c '{"tags": ["nightly"]}'``.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from types import FrameType
from typing import Any

import pendulum
from airflow.sdk import Param, dag, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException, AirflowTaskTerminated

from airbyte_fleet import (
    AuthError,
    ConfigError,
    RunOptionsArgs,
    RunResult,
    SelectionArgs,
    run_syncs_blocking,
)

# How long the run may take to cancel its jobs when the task is stopped. Airflow 3 stops a task
# with SIGTERM and follows with SIGKILL 5 s later: the cancels must be sent before that.
CANCEL_GRACE = "4s"


@contextmanager
def cancel_syncs_on_sigterm() -> Iterator[None]:
    """Make Airflow's SIGTERM an exception in the waiting call, which cancels the run's jobs.

    Airflow's own SIGTERM handler only calls the operator's ``on_kill`` (a no-op for ``@task``);
    the process is then killed and the Airbyte jobs would go on without anyone following them.
    An exception raised in the thread waiting in ``run_syncs_blocking`` makes the run cancel its
    jobs (``on_interrupt="cancel"``, the default) and re-raise. (``execution_timeout`` needs no
    help: Airflow raises ``AirflowTaskTimeout`` in the task, with the same effect.)
    """

    if threading.current_thread() is not threading.main_thread():
        # Only the main thread receives signals (Airflow runs a task there; a test may not).
        yield
        return

    def stop(signum: int, frame: FrameType | None) -> None:
        # Airflow's own exception for it: the task fails and is not retried.
        raise AirflowTaskTerminated(f"stopped by signal {signum}")

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_metadata(result: RunResult) -> dict[str, Any]:
    """The result as the task's XCom: plain JSON types only."""
    return {
        "run_id": result.run_id,
        "outcome": result.outcome,
        "summary": result.summary,
        "counts": {outcome: n for outcome, n in result.counts.items() if n},
        "rows_synced": result.totals.rows_synced,
        "bytes_synced": result.totals.bytes_synced,
        "duration_s": result.duration_s,
        "syncs": [
            sync.model_dump(
                mode="json",
                include={
                    "connection_id",
                    "connection_name",
                    "job_id",
                    "outcome",
                    "status",
                    "rows_synced",
                    "bytes_synced",
                    "duration_s",
                    "error",
                },
            )
            for sync in result.syncs
        ],
    }


@dag(
    dag_id="airbyte_syncs",
    schedule="@daily",
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    params={
        "tags": Param([], type="array", description="connections with these tags"),
        "connections": Param([], type="array", description="connection ids"),
        "names": Param([], type="array", description="connection name globs"),
    },
    # Retries are for the errors raised before anything was triggered (Airbyte unreachable):
    # trying again then is safe. See sync_connections for the cases that must not be retried.
    default_args={"retries": 2, "retry_delay": timedelta(minutes=2)},
    tags=["airbyte"],
)
def airbyte_syncs() -> None:
    @task(execution_timeout=timedelta(hours=2))
    def sync_connections() -> dict[str, Any]:
        context = get_current_context()
        params = context["params"]
        # Empty lists select nothing: with none set, the config file's [selection] decides.
        selection = SelectionArgs(
            tags=params["tags"], connections=params["connections"], names=params["names"]
        )
        # The rest comes from AIRBYTE_FLEET_* or the config file's [run], as for the CLI.
        options = RunOptionsArgs(timeout="45m", grace=CANCEL_GRACE)
        try:
            with cancel_syncs_on_sigterm():
                result = run_syncs_blocking(selection, options)
        except (ConfigError, AuthError) as exc:
            # A mistake in the DAG, the config or the credentials: a retry cannot mend it.
            raise AirflowFailException(str(exc)) from exc
        metadata = run_metadata(result)
        if not result.ok:
            # The metadata still reaches the UI and downstream tasks, under a key of its own.
            context["ti"].xcom_push(key="airbyte_fleet_run", value=metadata)
            # Failed, not retried: syncs were triggered and ran, the succeeded ones too, and a
            # retry would run the whole selection again. Run the failed ones on purpose instead
            # (the summary names them; their ids are in the XCom above).
            raise AirflowFailException(result.summary)
        return metadata

    sync_connections()


syncs_dag = airbyte_syncs()

if __name__ == "__main__":
    # `python airflow_dag.py` from the DAG folder: one run in this process, no scheduler, the
    # selection from the config file.
    syncs_dag.test()
