"""focaltag.data stage."""
