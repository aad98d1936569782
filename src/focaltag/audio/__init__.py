"""focaltag.audio stage."""
