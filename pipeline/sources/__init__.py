"""Sources: public and local datasets into the pairs and corpus tables.

`stage` is the sources stage (`run_sources`); `rows` turns records into pairs rows per task
type; `readers`, `beir` and `hub` read files, BEIR folders and the Hugging Face hub;
`budgets` decides which rows enter under per-source caps and per-stage row budgets.
"""
