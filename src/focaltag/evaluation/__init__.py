"""focaltag.evaluation stage."""
