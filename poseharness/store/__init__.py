"""The results store: one validated JSON record per run, folded by ``collect`` into one table.

Writing a record imports neither torch nor pandas, so every job can afford to write one.
"""
from .collect import CollectReport, collect, load_table, metric_columns
from .record import KINDS, SCHEMA_VERSION, RunRecord, comparable_to_paper, derived_labels
from .store import (iter_record_paths, iter_records, read_record, record_path, temp_files,
                    write_record)

__all__ = [
    "CollectReport", "KINDS", "RunRecord", "SCHEMA_VERSION", "collect", "comparable_to_paper",
    "derived_labels", "iter_record_paths", "iter_records", "load_table", "metric_columns",
    "read_record", "record_path", "temp_files", "write_record",
]
