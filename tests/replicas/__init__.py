"""Several processes on one database: ``serve`` replicas and ``run`` processes, killed, stopped
and cut off from PostgreSQL, with the simulator in a process of its own counting every job."""
