"""KerasTuner on top of kbn: the report's coarse-to-fine search of eta and lambda.

The report: DD2424 assignment 3, k-layer networks with batch normalization.

One module per job: `hypermodel` describes the space, `oracle` narrows it
round by round and stops hopeless trials with a rule of `pruning`, `tuner`
runs each trial as a kbn training run, `workers` serves the oracle to worker
processes (`worker` is one of them), `results` collects and writes what a
search found, and `search` holds the settings and the entry point.
"""
