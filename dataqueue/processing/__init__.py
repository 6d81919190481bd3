"""Job processing: the processor loop, worker threads, handler invocation."""
