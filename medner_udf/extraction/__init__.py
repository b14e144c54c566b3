"""The extraction layer: the Spark job that turns a notes table into entities and record_status.

One module per job, lightest first:

- ``schemas``: record statuses, planner actions, table names, Arrow schemas and DDL (pyarrow only);
- ``tables``: Delta / Parquet output tables, each changed by one atomic commit;
- ``settings``: ``ExtractSettings``, its loader and every check that runs before Spark starts;
- ``planning``: the driver's pure DataFrame transforms and the run's id;
- ``executor``: what runs in the executors' Python workers (model cache, device, micro-batches,
  tagging, streaming Parquet writer);
- ``shipping``: the model artifact zipped and added to the session;
- ``job``: ``run_extract``, the orchestration;
- ``quality``: the data-quality gate over one run's rows (the Airflow DAG's check; no torch);
- ``sql``: the tables as Spark SQL views (no torch);
- ``session``: building the SparkSession (only entry points call it).
"""
