"""The "Compilation jobs" pages of the Airflow 3 UI: an Airflow plugin with a FastAPI app.

``airflow api-server`` mounts the app at ``/neo`` (:mod:`airflow_neo.ui.plugin`): ``/neo/api/...``
answers JSON (:mod:`airflow_neo.ui.routes`), ``/neo/ui/`` serves one static page (``static/``)
that Airflow shows in its navigation and on task instances.

Invariants:

- every API route resolves the caller through Airflow's JWT (cookie or bearer token) and asks
  the auth manager (:mod:`airflow_neo.ui.access`) before it reads or stops a job: Airflow does
  not protect plugin routes by itself;
- jobs are read and stopped only through the hook contract (:mod:`airflow_neo.hooks.base`), so
  both backends behave the same; filters and paging are ListCompilationJobs' own;
- nothing here is imported by operators, sensors or hooks (the layer above them), and importing
  the plugin loads no TVM, boto3 or compiler module.
"""
