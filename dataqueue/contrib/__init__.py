"""Glue for web frameworks: :mod:`dataqueue.contrib.django` and :mod:`dataqueue.contrib.flask`.

Each module imports its framework, so import only the one your project uses; neither
framework is a dependency of dataqueue.
"""
