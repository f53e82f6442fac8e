"""KerasTuner on top of kbn: the report's coarse-to-fine search of eta and lambda.

`hypermodel` describes the space, `oracle` narrows it round by round,
`search` runs the trials as kbn training runs (in one process or with
workers) and writes the results; `worker` is one worker process.
"""
