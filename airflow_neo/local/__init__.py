"""The local backend's pure parts: job store, input handling, target mapping, the TVM compiler, the runner.

Nothing here imports Airflow at module level; TVM and the frontends are imported only inside the
compile child process.
"""
