"""focaltag.inference stage."""
