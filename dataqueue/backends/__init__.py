"""Storage backends behind the :class:`dataqueue.backends.base.Backend` protocol."""
