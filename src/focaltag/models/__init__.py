"""focaltag.models stage."""
