"""focaltag.experiments stage."""
