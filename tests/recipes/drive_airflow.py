"""Run inside the Airflow venv: ``dag.test()`` the example's DAG, one DAG run per scenario.

``python drive_airflow.py DAG_FILE SCENARIOS OUT``: DAG_FILE is the example copied into the DAG
folder (``dag.test()`` writes the folder's DAGs to the metadata database first); SCENARIOS is a
JSON list of DAG run confs; OUT receives, for each run, the DAG run's and the task's state, its
try number and the XComs, read back from the metadata database.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

TASK = "sync_connections"


def main() -> None:
    dag_file, scenarios, out = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
    spec = importlib.util.spec_from_file_location("airflow_dag", dag_file)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    reports: list[dict[str, Any]] = []
    for conf in scenarios:
        run = module.syncs_dag.test(run_conf=conf)
        ti = run.get_task_instance(TASK)
        reports.append(
            {
                "dag_run": str(run.state),
                "task": str(ti.state),
                "try_number": ti.try_number,
                "max_tries": ti.max_tries,
                "xcom": ti.xcom_pull(task_ids=TASK),
                "failure_xcom": ti.xcom_pull(task_ids=TASK, key="airbyte_fleet_run"),
            }
        )
    Path(out).write_text(json.dumps(reports, default=str))


if __name__ == "__main__":
    main()
