"""Runs of the book, cached: teachers (`teacher`), a run's inputs and key (`setting`), NetGraft and student runs
(`netgraft`, `students`, front door `experiments`), sweeps (`sweep`, on Ray: `cluster`), tuning and reports."""
