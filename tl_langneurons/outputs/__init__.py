"""What results become on disk: tables and summaries (:mod:`.tables` for a neuron set,
:mod:`.measurements` for ppl / steer / lss runs), figures (:mod:`.plot`, which computes nothing),
and the one-page ``report.md`` of a pipeline folder (:mod:`.report`)."""

from .._io import atomic_write_text, jsonable, write_csv, write_json

__all__ = ["atomic_write_text", "jsonable", "write_csv", "write_json"]
