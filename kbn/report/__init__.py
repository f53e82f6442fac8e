"""`kbn reproduce`: the four studies of the report (DD2424 assignment 3) as one command."""

from kbn.report.reproduction import default_out, reproduce

__all__ = ["default_out", "reproduce"]
