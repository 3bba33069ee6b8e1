"""The example configs (``ml_collections``); importable as ``configs`` from an editable checkout."""
