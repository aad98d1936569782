"""focaltag.training stage."""
