"""A minimal Django project on pgqd: a signup view that enqueues inside ``transaction.atomic()``, and tasks of
Django's Tasks framework that the example daemon runs (config/example.toml names these settings).

    scripts/run-example                                               # the daemon, in one terminal
    .venv/bin/python examples/django_app/manage.py migrate
    .venv/bin/python examples/django_app/manage.py runserver 8000
    curl -d email=ada@example.com http://127.0.0.1:8000/signup      # {"signup": 1, "task": "4:examples...", ...}
    curl http://127.0.0.1:8000/tasks/4:examples.django_app.tasks.send_welcome
    curl -X POST http://127.0.0.1:8000/count                         # the async task
"""
