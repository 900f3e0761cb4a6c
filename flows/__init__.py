"""Prefect orchestration of the pipeline stages: flows, tasks, caching, schedules, runners.

Only this package imports prefect. Tasks are thin wrappers over `pipeline` stage functions
and pass paths, never tables.
"""
