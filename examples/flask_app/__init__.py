"""A Flask + SQLAlchemy Core app that enqueues a welcome email in the signup's transaction.

    dataqueue migrate                                      # DATAQUEUE_DATABASE_URL
    flask --app 'examples.flask_app.app:create_app()' run  # the web app
    dataqueue worker examples.flask_app.jobs:HANDLERS      # processes the jobs
    # or both in one: gunicorn -c examples/gunicorn.conf.py

    curl -X POST -d email=ada@example.com localhost:5000/signup          # row + job
    curl -X POST -d email=bob@example.com 'localhost:5000/signup?fail=1' # neither

Modules: ``database`` (tables and the process's queue), ``app`` (the views), ``jobs``
(the handlers, as ``HANDLERS``).
"""
