"""The `embedcurate` command line; the work itself lives in pipeline/, flows/ and model/."""
