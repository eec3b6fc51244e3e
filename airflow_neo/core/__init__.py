"""Pure logic shared by every layer of airflow-neo: nothing here imports Airflow."""
