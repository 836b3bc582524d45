-- The results database lives beside Airflow's metadata database, separate from it.
CREATE DATABASE meshbench;
