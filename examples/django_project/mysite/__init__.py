"""A minimal Django project that enqueues dataqueue jobs in its own transactions.

export DATAQUEUE_DATABASE_URL=postgresql://app:secret@localhost/app
dataqueue migrate                      # the dataqueue tables (not Django models)
python manage.py migrate               # the project's tables
python manage.py runserver             # POST /signup/ email=...  (?fail=1 rolls back)
python manage.py dataqueue_worker --concurrency 2
"""
