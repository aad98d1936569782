"""Past one machine on Ray: tag a catalogue and prepare the training cache across a cluster (``focaltag[ray]``).

* ``focaltag tag SOURCE... -o TAGS.jsonl --ray [ADDRESS]`` and :class:`RayTagger`: the library run of
  :func:`focaltag.library.runs.tag_library` (the same output, resume, failures and lock code) with the files
  tagged by a pool of Ray actors, each holding whole CPUs (or a GPU) of one node and reading, decoding and
  tagging its files within them; the model reaches them through the object store, once; results stream back
  to the driver, which writes the output.
* :func:`tag_dataset`: the same actors over any Ray Dataset with a ``path`` column (or ``bytes`` plus
  ``path``, as ``ray.data.read_binary_files(..., include_paths=True)`` gives for object storage); it returns a
  Dataset of result columns to write anywhere Ray writes.
* ``focaltag data prepare ... --ray [ADDRESS]`` and :func:`ray_batch_runner`: the waveform cache's own batch
  writer (:func:`focaltag.audio._store.prepare_batch`) run in Ray actors, one per CPU, so the cache is the one a
  local prepare writes, track for track.
* :func:`connect` joins a cluster (a loopback one as given) or fails within seconds with one line;
  :func:`plan_pool` and :func:`plan_decoders` size the actor pools from the cluster's resources.

Nothing here imports Ray at module level: without the extra, every entry point fails with the one-line
``pip install 'focaltag[ray]'`` error. Names are re-exported lazily, so a ``data prepare`` actor, which imports
this package to reach its own module, does not import torch. This package sits above ``library/`` in the layer
order (it runs the tagger and the cache writer, and nothing below imports it); ``cli/`` calls it.
"""

from __future__ import annotations

from focaltag._lazy import lazy_exports

# public name -> submodule that defines it
_LAZY: dict[str, str] = {
    "PoolPlan": "focaltag.ray._cluster",
    "connect": "focaltag.ray._cluster",
    "plan_decoders": "focaltag.ray._cluster",
    "plan_pool": "focaltag.ray._cluster",
    "require_ray": "focaltag.ray._cluster",
    "ray_batch_runner": "focaltag.ray._prepare",
    "RayTagger": "focaltag.ray._tag",
    "TagActors": "focaltag.ray._tag",
    "start_tag_actors": "focaltag.ray._tag",
    "tag_dataset": "focaltag.ray._tag",
}

__all__ = list(_LAZY)


__getattr__, __dir__ = lazy_exports(__name__, globals(), _LAZY)
