"""Beyond one machine on existing engines: Ray Data batch classification (`ray_engine`, imports ray lazily) and
tf.distribute multi-worker training helpers (in `leuk_edge.train.distribute`). Nothing here is imported by the
edge runtime; `ray` is only needed with `classify --engine ray` (`pip install 'leuk-edge[ray]'`)."""
